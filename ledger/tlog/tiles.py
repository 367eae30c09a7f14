"""C2SP tlog-tiles: tile paths, the tiles of a tree, tile data and a reader over tiles.

A port of golang.org/x/mod ``sumdb/tlog``'s ``tile.go``
(https://c2sp.org/tlog-tiles). A tile at tile level T, index N, width W
(1..256) holds the W stored hashes at tree level 8*T, positions
N*256 .. N*256+W-1, concatenated. The hashes at tree levels 8*T+1 .. 8*T+7
are not published; a reader recomputes them from the tile below.

Errors: a malformed tile path or tile raises :class:`FormatError`; tiles
that do not hash up to the trusted root raise :class:`ProofError`; a call
that breaks a precondition raises :class:`InvariantError`.
"""

from __future__ import annotations

import re
from typing import Protocol, Sequence

from ledger.errors import FormatError, InvariantError, ProofError
from ledger.tlog.merkle import (
    HASH_SIZE,
    MAX_TREE_SIZE,
    HashReader,
    _fold,
    _is_int,
    _need_hash,
    _need_size,
    _read,
    compact_range_indexes,
    node_hash,
    split_stored_hash_index,
    stored_hash_count,
    stored_hash_index,
)

__all__ = [
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "tile_path",
    "entries_path",
    "parse_tile_path",
    "tiles_for_size",
    "new_tiles",
    "tile_hash_indexes",
    "hashes_from_tile",
    "tile_data",
    "TileReader",
    "TileHashReader",
]

TILE_HEIGHT = 8  # C2SP tlog-tiles: 256 hashes per full tile
TILE_WIDTH = 1 << TILE_HEIGHT
_MAX_TILE_LEVEL = 63  # C2SP tlog-tiles: <L> is 0..63
_MAX_INDEX_GROUPS = 7  # 2**64 - 1 has 20 decimal digits


def _tile_index_path(index: int) -> str:
    """C2SP tlog-tiles index encoding: zero-padded 3-digit groups, every group
    but the last prefixed by "x": 1234067 -> "x001/x234/067", 0 -> "000"."""
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(groups))


def _check_tile(level: int, index: int, width: int) -> None:
    if not (_is_int(level) and _is_int(index) and _is_int(width)):
        raise InvariantError(f"bad tile ({level!r}, {index!r}, {width!r})")
    if not -1 <= level <= _MAX_TILE_LEVEL or not 0 <= index <= MAX_TREE_SIZE or not 1 <= width <= TILE_WIDTH:
        raise InvariantError(f"bad tile ({level}, {index}, {width})")


def tile_path(level: int, index: int, width: int) -> str:
    """The C2SP tlog-tiles path of a hash tile: ``tile/<L>/<N>`` for a full
    tile (width 256), ``tile/<L>/<N>.p/<W>`` for a partial one, with N in
    3-digit groups (``tile/0/x001/x234/067.p/8``). Level -1 gives the
    entry-bundle path of :func:`entries_path`, so that
    ``tile_path(*parse_tile_path(p)) == p``."""
    _check_tile(level, index, width)
    head = "tile/entries/" if level == -1 else f"tile/{level}/"
    tail = "" if width == TILE_WIDTH else f".p/{width}"
    return head + _tile_index_path(index) + tail


def entries_path(index: int, width: int) -> str:
    """The C2SP tlog-tiles path of an entry bundle: ``tile/entries/<N>[.p/<W>]``."""
    return tile_path(-1, index, width)


def chain_path(name: str, index: int, width: int) -> str:
    """Where bundle ``index`` of chain ``name`` is published (docs/FORMAT.md,
    "Publication of chains and heads"): ``chain/<name>/<N>[.p/<W>]``, N
    spelled as in tile paths. ``name`` is a contract symbol or ``_key``."""
    _check_tile(0, index, width)
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise InvariantError(f"bad chain name {name!r}")
    tail = "" if width == TILE_WIDTH else f".p/{width}"
    return f"chain/{name}/{_tile_index_path(index)}{tail}"


PATH_SUFFIX = ".paths"
PATH_HASHES = TILE_HEIGHT  # a leaf's path inside its level-0 tile: one sibling a level
PATH_BYTES = PATH_HASHES * HASH_SIZE


def chain_paths_path(name: str, index: int, width: int) -> str:
    """Where the tile paths of chain bundle ``index`` are published:
    ``chain/<name>/<N>[.p/<W>].paths`` (docs/FORMAT.md)."""
    return chain_path(name, index, width) + PATH_SUFFIX


def paths_published(seqs: Sequence[int], tree_size: int) -> bool:
    """Whether a bundle of entries at ``seqs`` has a tile-paths file at
    ``tree_size``: every entry lies in a full level-0 tile there, so each
    path is fixed for good."""
    return bool(seqs) and max(seqs) < tree_size - tree_size % TILE_WIDTH


def tile_path_indexes(leaf_index: int) -> list[int]:
    """The stored-hash indexes of the leaf's siblings inside its level-0
    tile, bottom up: at level l, the subtree ``(leaf_index >> l) ^ 1``
    (RFC 6962 section 2.1.1's audit path, cut at the tile's root)."""
    return [stored_hash_index(level, (leaf_index >> level) ^ 1) for level in range(PATH_HASHES)]


def tile_root_from_path(leaf_index: int, leaf: bytes, path: bytes) -> bytes:
    """The root of the leaf's level-0 tile (stored hash (8, leaf_index >> 8)),
    from its leaf hash and the PATH_BYTES of :func:`tile_path_indexes`."""
    if len(path) != PATH_BYTES:
        raise FormatError(f"a tile path is {PATH_BYTES} bytes, not {len(path)}")
    h = leaf
    for level in range(PATH_HASHES):
        sibling = path[level * HASH_SIZE:(level + 1) * HASH_SIZE]
        h = node_hash(sibling, h) if (leaf_index >> level) & 1 else node_hash(h, sibling)
    return h


_TILE_PATH_RE = re.compile(
    r"tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/)*)([0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?",
    re.ASCII,
)


def parse_tile_path(path: str) -> tuple[int, int, int]:
    """``(level, index, width)`` of a C2SP tlog-tiles path; level is -1 for
    an entry bundle (``tile/entries/...``).

    Accepts exactly the spelling that :func:`tile_path` writes, else
    FormatError: level 0..63 without leading zeros; index in groups of exactly
    3 ASCII digits, all but the last prefixed by "x", with no leading all-zero
    group (so 0 is only "000", 67 only "067", never "x000/067"); the ".p/<W>"
    suffix only with W in 1..255 without leading zeros; no trailing slash or
    other extra text."""
    if not isinstance(path, str):
        raise FormatError("a tile path must be a string")
    m = _TILE_PATH_RE.fullmatch(path)
    if m is None:
        raise FormatError(f"not a tile path: {path!r}")
    lv, groups, last, w = m.groups()
    level = -1 if lv == "entries" else int(lv)
    if level > _MAX_TILE_LEVEL:
        raise FormatError(f"tile level {level} is over {_MAX_TILE_LEVEL}: {path!r}")
    parts = [g[1:] for g in groups.split("/") if g] + [last]
    if len(parts) > _MAX_INDEX_GROUPS:
        raise FormatError(f"tile index too large: {path!r}")
    if len(parts) > 1 and parts[0] == "000":
        raise FormatError(f"tile index with a leading zero group: {path!r}")
    index = int("".join(parts))
    if index > MAX_TREE_SIZE:
        raise FormatError(f"tile index too large: {path!r}")
    width = TILE_WIDTH if w is None else int(w)
    if w is not None and width >= TILE_WIDTH:
        raise FormatError(f"partial tile width must be 1..{TILE_WIDTH - 1}: {path!r}")
    return level, index, width


def _level_tiles(count: int, level: int) -> list[tuple[int, int, int]]:
    """The tiles holding ``count`` hashes at tile level ``level``."""
    full, rest = divmod(count, TILE_WIDTH)
    out = [(level, i, TILE_WIDTH) for i in range(full)]
    if rest:
        out.append((level, full, rest))
    return out


def tiles_for_size(tree_size: int) -> list[tuple[int, int, int]]:
    """Every hash tile ``(level, index, width)`` that a tree of ``tree_size``
    leaves publishes, by level then index: at tile level L there are
    ``c = tree_size >> (8 L)`` hashes, in ``c // 256`` full tiles and, if
    ``w = c % 256`` is not 0, one partial tile of width w; levels go up while
    c > 0. (Listing a tree of 2**32 leaves this way is 16.8 million tuples:
    exports of large trees use :func:`new_tiles`.)"""
    _need_size(tree_size, "tree size")
    out: list[tuple[int, int, int]] = []
    level = 0
    while tree_size >> (TILE_HEIGHT * level):
        out.extend(_level_tiles(tree_size >> (TILE_HEIGHT * level), level))
        level += 1
    return out


def new_tiles(old_size: int, new_size: int) -> list[tuple[int, int, int]]:
    """The hash tiles of the tree of ``new_size`` leaves that the tree of
    ``old_size`` leaves does not publish with the same contents, by level then
    index (x/mod ``NewTiles``): at each level L where
    ``old_c = old_size >> 8L`` and ``new_c = new_size >> 8L`` differ, the
    tiles from index ``old_c // 256`` (which was partial or absent) up to the
    right edge of ``new_c``. That is
    ``set(tiles_for_size(new_size)) - set(tiles_for_size(old_size))``.

    InvariantError unless 0 <= old_size <= new_size."""
    _need_size(old_size, "old tree size")
    _need_size(new_size, "new tree size")
    if old_size > new_size:
        raise InvariantError(f"old size {old_size} > new size {new_size}")
    out: list[tuple[int, int, int]] = []
    level = 0
    while new_size >> (TILE_HEIGHT * level):
        old_c = old_size >> (TILE_HEIGHT * level)
        new_c = new_size >> (TILE_HEIGHT * level)
        if old_c != new_c:
            first = old_c // TILE_WIDTH
            out.extend(t for t in _level_tiles(new_c, level) if t[1] >= first)
        level += 1
    return out


def tile_hash_indexes(level: int, index: int, width: int) -> list[int]:
    """Stored-hash indexes of the hashes that tile (level, index, width)
    holds: ``stored_hash_index(8 level, 256 index + i)`` for i < width."""
    _check_tile(level, index, width)
    if level < 0:
        raise InvariantError("entry bundles hold no stored hashes")
    base = index * TILE_WIDTH
    return [stored_hash_index(TILE_HEIGHT * level, base + i) for i in range(width)]


def tile_data(level: int, index: int, width: int, reader: HashReader) -> bytes:
    """The bytes of hash tile (level, index, width): its hashes concatenated,
    read in one call."""
    return b"".join(_read(reader, tile_hash_indexes(level, index, width)))


def hashes_from_tile(data: bytes, width: int) -> list[bytes]:
    """Split tile data into its ``width`` hashes; FormatError unless
    ``len(data) == 32 * width`` and 1 <= width <= 256."""
    if not _is_int(width) or not 1 <= width <= TILE_WIDTH:
        raise FormatError(f"tile width {width!r} is not in 1..{TILE_WIDTH}")
    if not isinstance(data, (bytes, bytearray)) or len(data) != HASH_SIZE * width:
        raise FormatError(f"a tile of width {width} must be {HASH_SIZE * width} bytes")
    data = bytes(data)
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


class TileReader(Protocol):
    """Source of (untrusted) tile bytes, e.g. files or HTTP."""

    def read_tile(self, level: int, index: int, width: int) -> bytes:
        """The bytes of hash tile (level, index, width)."""
        ...


def _published_width(tree_size: int, level: int, index: int) -> int:
    """The width of tile (level, index) in the tree of tree_size leaves (0: none)."""
    count = tree_size >> (TILE_HEIGHT * level)
    return max(0, min(TILE_WIDTH, count - index * TILE_WIDTH))


class TileHashReader:
    """A :class:`HashReader` over tiles, each checked against a trusted
    ``(tree_size, root)`` (x/mod ``TileHashReader``).

    A stored hash (l, n) lives in the tile at tile level ``T = l // 8``: with
    ``j = l - 8T`` it is the root of the 2**j tile entries from position
    ``(n << j) % 256`` of tile ``(n << j) // 256``, recomputed from them
    (j > 0 only inside a tile). Only the tiles published at tree_size are read
    (the right-edge ones partial).

    Soundness: the roots of the complete subtrees of the tree (those at
    :func:`compact_range_indexes`) all lie in the partial right-edge tiles,
    and every entry of those tiles is under one of those roots, so checking
    ``root`` recomputed from them authenticates them entirely. A full tile
    (T, i) hashes (as a 256-leaf subtree of node hashes) to stored hash
    (8T+8, i), entry ``i % 256`` of its parent tile (T+1, i // 256), so each
    full tile is checked against its parent, up to a partial tile. Checked
    tiles are cached for the life of the reader.

    read_hashes raises ProofError if a tile is missing from its parent's
    account, has the wrong length, or does not hash up to the root;
    InvariantError for an index outside the tree."""

    def __init__(self, tree_size: int, root: bytes, tiles: TileReader):
        self.tree_size = _need_size(tree_size, "tree size")
        self.root = _need_hash(root, "root")
        self._tiles = tiles
        self._verified: dict[tuple[int, int], list[bytes]] = {}
        self._edge_checked = False

    # A tile is named by (level, index); its width is the published one.
    def _fetch(self, level: int, index: int) -> list[bytes]:
        width = _published_width(self.tree_size, level, index)
        if width == 0:
            raise InvariantError(f"tile ({level}, {index}) is not in a tree of {self.tree_size}")
        data = self._tiles.read_tile(level, index, width)
        try:
            return hashes_from_tile(data, width)
        except FormatError as e:
            raise ProofError(f"tile {tile_path(level, index, width)}: {e}") from None

    def _locate(self, index: int) -> tuple[int, int, int, int]:
        """(tile level, tile index, first entry, entry count) of a stored hash."""
        level, n = split_stored_hash_index(index)
        t = level // TILE_HEIGHT
        j = level - TILE_HEIGHT * t
        first = n << j
        return t, first // TILE_WIDTH, first % TILE_WIDTH, 1 << j

    def _check_edge(self, pending: dict[tuple[int, int], list[bytes]]) -> None:
        """Recompute the root from the right-edge tiles (fetched into pending)."""
        roots = []
        for idx in compact_range_indexes(self.tree_size):
            t, i, first, count = self._locate(idx)
            key = (t, i)
            if key not in pending and key not in self._verified:
                pending[key] = self._fetch(t, i)
            hs = self._verified.get(key) or pending[key]
            roots.append(_perfect_root(hs[first : first + count]))
        if _fold(roots) != self.root:
            raise ProofError(f"the tiles do not hash up to the root of the tree of size {self.tree_size}")

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        limit = stored_hash_count(self.tree_size)
        locs = []
        for x in indexes:
            if not _is_int(x) or not 0 <= x < limit:
                raise InvariantError(f"stored hash {x!r} is not in a tree of {self.tree_size}")
            locs.append(self._locate(x))
        pending: dict[tuple[int, int], list[bytes]] = {}
        if not self._edge_checked:
            self._check_edge(pending)
        # Every tile needed, then its ancestors up to a partial (edge) one.
        chain: list[tuple[int, int]] = []
        for t, i, _, _ in locs:
            while (t, i) not in self._verified and (t, i) not in pending:
                pending[(t, i)] = self._fetch(t, i)
                if len(pending[(t, i)]) < TILE_WIDTH:
                    # A partial tile is an edge tile: checked by _check_edge.
                    raise InvariantError("bad math in TileHashReader: unchecked partial tile")
                chain.append((t, i))
                t, i = t + 1, i // TILE_WIDTH
        # Full tiles against their parents' entries.
        for t, i in chain:
            parent = self._verified.get((t + 1, i // TILE_WIDTH)) or pending[(t + 1, i // TILE_WIDTH)]
            if _perfect_root(pending[(t, i)]) != parent[i % TILE_WIDTH]:
                raise ProofError(
                    f"tile {tile_path(t, i, TILE_WIDTH)} does not match its parent tile "
                    f"(tree size {self.tree_size})"
                )
        self._verified.update(pending)
        self._edge_checked = True
        out = []
        for t, i, first, count in locs:
            out.append(_perfect_root(self._verified[(t, i)][first : first + count]))
        return out


def _perfect_root(hashes: Sequence[bytes]) -> bytes:
    """The root over 2**j node hashes that form a complete subtree
    (pairwise node_hash, level by level)."""
    level = list(hashes)
    if not level or len(level) & (len(level) - 1):
        raise InvariantError("bad math in _perfect_root")
    while len(level) > 1:
        level = [node_hash(level[k], level[k + 1]) for k in range(0, len(level), 2)]
    return level[0]
