"""The heads tree of format 2 and its content-addressed tiles.

The heads root (docs/FORMAT.md, "state") is the RFC 6962 Merkle tree hash
over the funds' head lines in fund-index order, each leaf
``SHA-256(0x00 || line)``. :class:`HeadsTree` keeps the hashes of every
complete subtree, so that changing k heads of n costs O(k log n) hashes and
the root O(log n), not a rebuild.

Heads tiles cut that tree every eighth level, as C2SP tlog-tiles cuts the
log, but are named by their hash (they never change, and an export writes
only the ones whose heads moved):

- a level-0 tile is the head lines of funds 256k .. 256k+255, concatenated;
  its name is the tree hash over them as leaves;
- a level-L tile (L >= 1) is the 32-byte names of up to 256 consecutive
  level-(L-1) tiles; its name is the tree hash over them as subtree hashes.

A tile is published at ``<L>/<hex name>``: the level is part of the path
because a tile with one child has its child's name.

Since 256 is a power of two, RFC 6962's split of n leaves falls on tile
edges, so the one tile of the top level is named by the heads root itself.
"""

from __future__ import annotations

from typing import Callable, Sequence

from ledger.errors import FormatError, InvariantError, LimitError, ProofError
from ledger.tlog import merkle

HEADS_TILE_WIDTH = 256  # heads per level-0 tile, names per higher tile
MAX_HEAD_LINE_BYTES = 1024  # a head line is about 150 bytes; a symbol is at most 32
MAX_FUNDS = 1 << 24  # contracts one log may register
MAX_HEADS_TILE_BYTES = HEADS_TILE_WIDTH * MAX_HEAD_LINE_BYTES

__all__ = [
    "HEADS_TILE_WIDTH", "MAX_HEAD_LINE_BYTES", "MAX_FUNDS", "MAX_HEADS_TILE_BYTES",
    "HeadsTree", "heads_root", "heads_height", "heads_tiles", "head_from_tiles", "tile_path",
]


class HeadsTree:
    """An RFC 6962 tree over leaf hashes that may change in place.

    ``_levels[L][j]`` is the hash of the complete subtree of 2**L leaves
    starting at leaf j * 2**L. Setting a leaf rehashes its ancestors while
    they are complete (log n hashes); the root folds the complete subtrees of
    the binary decomposition of the size, largest first (RFC 6962 section
    2.1, as :func:`ledger.tlog.merkle.tree_hash` does)."""

    __slots__ = ("_levels",)

    def __init__(self, leaves: Sequence[bytes] = ()):
        self._levels: list[list[bytes]] = [[]]
        for leaf in leaves:
            self.append(leaf)

    def __len__(self) -> int:
        return len(self._levels[0])

    def leaf(self, index: int) -> bytes:
        return self._levels[0][index]

    def leaves(self) -> list[bytes]:
        return list(self._levels[0])

    def copy(self) -> "HeadsTree":
        other = HeadsTree()
        other._levels = [list(level) for level in self._levels]
        return other

    def append(self, leaf: bytes) -> None:
        """Add a leaf hash at the end: it completes one subtree per trailing
        1 bit of its index."""
        _need_hash(leaf)
        if len(self) >= MAX_FUNDS:
            raise LimitError(f"more than {MAX_FUNDS} funds")
        self._levels[0].append(leaf)
        level, index = 0, len(self) - 1
        while index & 1:
            left, right = self._levels[level][index - 1], self._levels[level][index]
            level, index = level + 1, index >> 1
            if len(self._levels) == level:
                self._levels.append([])
            self._levels[level].append(merkle.node_hash(left, right))

    def set(self, index: int, leaf: bytes) -> None:
        """Replace leaf ``index`` and rehash its complete ancestors."""
        _need_hash(leaf)
        if not 0 <= index < len(self):
            raise InvariantError(f"heads tree has no leaf {index}")
        self._levels[0][index] = leaf
        level = 0
        while level + 1 < len(self._levels) and index >> 1 < len(self._levels[level + 1]):
            parent = index >> 1
            row = self._levels[level]
            self._levels[level + 1][parent] = merkle.node_hash(row[2 * parent], row[2 * parent + 1])
            level, index = level + 1, parent

    def root(self) -> bytes:
        """MTH over the leaves; ``SHA-256("")`` for none."""
        n, roots, start = len(self), [], 0
        for level in range(n.bit_length() - 1, -1, -1):
            if n >> level & 1:
                roots.append(self._levels[level][start >> level])
                start += 1 << level
        return merkle._fold(roots)


def _need_hash(h: object) -> None:
    if type(h) is not bytes or len(h) != merkle.HASH_SIZE:
        raise InvariantError("a heads tree leaf must be a 32-byte hash")


def _mth(hashes: Sequence[bytes]) -> bytes:
    return HeadsTree(hashes).root()


def heads_root(lines: Sequence[bytes]) -> bytes:
    """The heads root over head lines (each with its newline)."""
    return _mth([merkle.leaf_hash(line) for line in lines])


def heads_height(count: int) -> int:
    """The level of the top heads tile for ``count`` funds: the least h with
    256**(h+1) >= count (0 for up to 256 funds, and for none)."""
    height = 0
    while HEADS_TILE_WIDTH ** (height + 1) < count:
        height += 1
    return height


def tile_path(level: int, name: bytes) -> str:
    """Where a heads tile is published, below ``heads/``."""
    return f"{level}/{name.hex()}"


def heads_tiles(lines: Sequence[bytes]) -> dict[str, bytes]:
    """Every heads tile of the heads tree over ``lines``: {path: content}
    (:func:`tile_path`). The top tile's name is the heads root."""
    tiles: dict[str, bytes] = {}
    w = HEADS_TILE_WIDTH
    names = []
    for k in range(0, max(len(lines), 1), w):
        chunk = lines[k:k + w]
        name = heads_root(chunk)
        tiles[tile_path(0, name)] = b"".join(chunk)
        names.append(name)
    level = 0
    while len(names) > 1:
        level += 1
        upper = []
        for k in range(0, len(names), w):
            chunk = names[k:k + w]
            name = _mth(chunk)
            tiles[tile_path(level, name)] = b"".join(chunk)
            upper.append(name)
        names = upper
    return tiles


def _children(count: int, level: int, tile: int) -> int:
    """How many entries the heads tile ``tile`` of ``level`` holds, for a
    tree of ``count`` funds (lines at level 0, names above)."""
    below = count  # items at level - 1 (funds for level 0)
    for _ in range(level):
        below = -(-below // HEADS_TILE_WIDTH)
    return max(0, min(HEADS_TILE_WIDTH, below - tile * HEADS_TILE_WIDTH))


def _split_lines(data: bytes, expected: int) -> list[bytes]:
    if data and not data.endswith(b"\n"):
        raise ProofError("a heads tile does not end with a newline")
    lines = [line + b"\n" for line in data.split(b"\n")[:-1]]
    if len(lines) != expected:
        raise ProofError(f"a heads tile holds {len(lines)} heads, not {expected}")
    for line in lines:
        if len(line) > MAX_HEAD_LINE_BYTES:
            raise ProofError(f"a head line is over {MAX_HEAD_LINE_BYTES} bytes")
    return lines


def head_from_tiles(root: bytes, count: int, index: int, fetch: Callable[[str], bytes]) -> bytes:
    """The head line of fund ``index`` of ``count``, read from heads tiles
    by ``fetch(tile path) -> content`` from the top tile (named ``root``)
    down, each checked against its name and its expected size. The index
    and the count fix the path, so the line is at that position of that
    tree. ProofError for a tile that does not match, FormatError for an
    index or count out of range."""
    if not 0 <= count <= MAX_FUNDS:
        raise FormatError(f"a heads tree of {count} funds is out of range")
    if not 0 <= index < count:
        raise FormatError(f"fund index {index} is not below the {count} funds")
    name = root
    for level in range(heads_height(count), -1, -1):
        tile = index >> (8 * (level + 1))
        expected = _children(count, level, tile)
        data = fetch(tile_path(level, name))
        if type(data) is not bytes or len(data) > MAX_HEADS_TILE_BYTES:
            raise ProofError(f"heads tile {name.hex()} is not bytes within {MAX_HEADS_TILE_BYTES}")
        slot = (index >> (8 * level)) & (HEADS_TILE_WIDTH - 1)
        if level == 0:
            lines = _split_lines(data, expected)
            if heads_root(lines) != name:
                raise ProofError(f"heads tile {name.hex()} does not hash to its name")
            return lines[slot]
        if len(data) != merkle.HASH_SIZE * expected:
            raise ProofError(f"heads tile {name.hex()} holds {len(data)} bytes, not {32 * expected}")
        names = [data[i:i + 32] for i in range(0, len(data), 32)]
        if _mth(names) != name:
            raise ProofError(f"heads tile {name.hex()} does not hash to its name")
        name = names[slot]
    raise InvariantError("head_from_tiles fell off the tree")
