"""The hash tiles and older partial tiles and bundles of a file source,
recomputed from the leaf hashes as they stream by and compared with the
published ones (C2SP tlog-tiles)."""

from __future__ import annotations

import os
from typing import Sequence

from ledger.errors import FundledgerError, VerificationError
from ledger.format import note
from ledger.tlog import merkle
from ledger.tlog.tiles import TILE_HEIGHT, TILE_WIDTH, entries_path, parse_tile_path, tile_path
from ledger.verify.sources import MAX_BUNDLE_BYTES, MAX_TILE_BYTES, DirSource, Source, split_bundle


def implied_partial_tiles(tree_size: int) -> list[tuple[int, int, int]]:
    """The partial tiles ``(level, index, width)`` a tree of ``tree_size``
    publishes (one per level at its right edge, at most), and its partial
    entry bundle as level -1: what a reader of that tree's checkpoint fetches."""
    w = TILE_WIDTH
    out = []
    level = 0
    while tree_size >> (TILE_HEIGHT * level):
        count = tree_size >> (TILE_HEIGHT * level)
        if count % w:
            out.append((level, count // w, count % w))
        level += 1
    if tree_size % w:
        out.append((-1, tree_size // w, tree_size % w))
    return out


def listed_partial_tiles(root: str) -> list[tuple[int, int, int]]:
    """Every partial tile and entry bundle file in an export directory:
    files ``tile/.../<N>.p/<W>`` whose path :func:`parse_tile_path`
    accepts (W 1..255 without leading zero). Any other name (``.p/256``,
    ``.p/007``) is not a tile and is not looked at."""
    out = []
    for dirpath, _, files in os.walk(os.path.join(root, "tile")):
        if not dirpath.endswith(".p"):
            continue
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        for name in files:
            try:
                out.append(parse_tile_path(f"{rel}/{name}"))
            except FundledgerError:
                continue
    return out


def tile_checker(source: Source, trusted_cp: note.Checkpoint | None) -> "TileChecker":
    """The tile checks of a file source, with the older partial tiles it
    knows of: a directory's own, and those of the trusted checkpoint's size."""
    partials = [] if trusted_cp is None else implied_partial_tiles(trusted_cp.tree_size)
    if isinstance(source, DirSource):
        partials += listed_partial_tiles(source.root)
    return TileChecker(source, partials)


class TileChecker:
    """Recomputes every hash tile from the leaf hashes as they stream by and
    compares it with the published one. Level L tiles hold the hashes of
    subtrees of 2**(8L) leaves.

    ``partials`` are the older partial tiles ``(level, index, width)`` to
    check too (level -1: an entry bundle), each when tile ``(level, index)``
    of the tree being checked is complete: a partial tile of width W must
    hold the first W hashes of that tile (an older bundle, entries whose
    leaf hashes are those). A partial tile as wide as or wider than the
    tree's own tile there is not an older one and is skipped; one that is
    missing is skipped too (an export need not keep them)."""

    def __init__(self, source: Source, partials: Sequence[tuple[int, int, int]] = ()):
        self.source = source
        self.levels: list[list[bytes]] = [[]]
        self.index: list[int] = [0]
        self.partials: dict[tuple[int, int], set[int]] = {}
        for level, index, width in partials:
            self.partials.setdefault((level, index), set()).add(width)

    def add_built(self, hashes: list[bytes]) -> None:
        """Add a leaf given as the hashes :meth:`merkle.TreeBuilder.append`
        returned for it: ``hashes[8 * L]``, when present, is the root of the
        2**(8L)-leaf subtree the leaf completes, the next entry of a level-L
        tile (so no subtree root is hashed twice)."""
        self._add(0, hashes)

    def add_run(self, first: int, leaves: Sequence[bytes], stored: Sequence[bytes]) -> None:
        """:meth:`add_built` for the leaves ``first, first + 1, ...``, given as
        their leaf hashes and the stored hashes
        :meth:`merkle.TreeBuilder.extend` returned for them."""
        base = merkle.leaf_stored_index(first)
        i, n = 0, len(leaves)
        while i < n:
            buf = self.levels[0]
            take = min(n - i, TILE_WIDTH - len(buf))
            buf.extend(leaves[i : i + take])
            i += take
            if len(buf) < TILE_WIDTH:
                return
            # leaf ``seq`` filled the level-0 tile: what add_built does with
            # its hashes (the leaf hash, then one per trailing 1 bit of seq)
            seq = first + i - 1
            start = merkle.leaf_stored_index(seq) - base
            count = merkle.stored_hashes_added(seq)
            self._compare(0, self.index[0], buf)
            self.levels[0] = []
            self.index[0] += 1
            self._add(1, stored[start : start + count])

    def _add(self, level: int, hashes: Sequence[bytes]) -> None:
        while True:
            if level == len(self.levels):
                self.levels.append([])
                self.index.append(0)
            buf = self.levels[level]
            buf.append(hashes[level * TILE_HEIGHT])
            if len(buf) < TILE_WIDTH:
                return
            self._compare(level, self.index[level], buf)
            self.levels[level] = []
            self.index[level] += 1
            level += 1

    def _compare(self, level: int, index: int, hashes: list[bytes]) -> None:
        """Compare a published tile with the recomputed one; a mismatch names
        the first leaf under the first wrong hash."""
        path = tile_path(level, index, len(hashes))
        first_leaf = (index * TILE_WIDTH) << (TILE_HEIGHT * level)
        try:
            got = self.source.read_tile(level, index, len(hashes))
        except VerificationError as e:
            raise VerificationError(e.reason, seq=first_leaf) from None
        want = b"".join(hashes)
        if got == want:
            if self.partials:
                self._compare_partials(level, index, hashes)
            return
        h = merkle.HASH_SIZE
        bad = next((i for i in range(len(hashes)) if got[i * h : (i + 1) * h] != hashes[i]), len(hashes) - 1)
        raise VerificationError(
            f"hash tile {path} does not match the entries",
            seq=(index * TILE_WIDTH + bad) << (TILE_HEIGHT * level),
        )

    def _compare_partials(self, level: int, index: int, hashes: list[bytes]) -> None:
        """The older partial tiles of tile ``(level, index)`` (and, at level
        0, its older partial entry bundles) against ``hashes``, its complete
        contents; a mismatch names the first leaf under the first wrong hash."""
        h = merkle.HASH_SIZE
        first_seq = index * TILE_WIDTH
        for width in sorted(w for w in self.partials.get((level, index), ()) if w < len(hashes)):
            path = tile_path(level, index, width)
            got = self.source.fetch(path, MAX_TILE_BYTES)
            if got is None or got == b"".join(hashes[:width]):
                continue
            bad = next((i for i in range(width) if got[i * h : (i + 1) * h] != hashes[i]), width - 1)
            raise VerificationError(f"hash tile {path} does not match the entries",
                                    seq=(first_seq + bad) << (TILE_HEIGHT * level))
        if level != 0:
            return
        for width in sorted(w for w in self.partials.get((-1, index), ()) if w < len(hashes)):
            path = entries_path(index, width)
            data = self.source.fetch(path, MAX_BUNDLE_BYTES)
            if data is None:
                continue
            try:
                entries = split_bundle(data, width, first_seq)
            except VerificationError as e:
                raise VerificationError(f"{path}: {e.reason}", seq=e.seq) from None
            for i, entry in enumerate(entries):
                if merkle.leaf_hash(entry) != hashes[i]:
                    raise VerificationError(f"entry bundle {path} does not match the entries", seq=first_seq + i)

    def finish(self) -> None:
        for level, buf in enumerate(self.levels):
            if buf:
                self._compare(level, self.index[level], buf)

