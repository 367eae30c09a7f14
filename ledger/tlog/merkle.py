"""RFC 6962 / RFC 9162 Merkle tree hashes, the stored-hash layout and the tree builder.

A port of the design of golang.org/x/mod ``sumdb/tlog`` (``tlog.go``) to
small pure functions. Nothing here touches a database or a file: storage is
behind the one-method :class:`HashReader` interface. Proofs are in
:mod:`ledger.tlog.proof`, C2SP tiles in :mod:`ledger.tlog.tiles`.

Hashes (RFC 6962 section 2.1, RFC 9162 section 2.1.1)::

    MTH({})         = SHA-256()                                   EMPTY_ROOT
    MTH({d(0)})     = SHA-256(0x00 || d(0))                       leaf_hash
    MTH(D[n])       = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])) node_hash
                      where k is the largest power of 2 smaller than n

Stored hashes. The tree of n leaves has, at level L (0 = leaves), the hashes
of the complete subtrees of 2**L leaves: hash (L, i) covers leaves
[i * 2**L, (i+1) * 2**L). Every hash is stored once, in the order in which
appending the leaves completes them (Crosby and Wallach, "Efficient Data
Structures for Tamper-Evident Logging", section 3.3): leaf n is followed by
the subtrees that it completes, smallest first. :func:`stored_hash_index`
gives that dense linear order (x/mod ``StoredHashIndex``); the store keeps
one row per index. Leaf n is at ``2n - popcount(n)``
(:func:`leaf_stored_index`) and its append writes ``1 + trailing_ones(n)``
hashes (:func:`stored_hashes_added`).

Errors: a malformed resume state raises :class:`FormatError`; a call that
breaks a precondition (a negative size, a reader that returns the wrong
number of hashes) raises :class:`InvariantError`, since it is a bug in the
caller.
"""

from __future__ import annotations

import hashlib
from typing import Protocol, Sequence

from ledger.errors import FormatError, InvariantError

__all__ = [
    "HASH_SIZE",
    "MAX_TREE_SIZE",
    "EMPTY_ROOT",
    "leaf_hash",
    "node_hash",
    "HashReader",
    "stored_hash_index",
    "split_stored_hash_index",
    "stored_hash_count",
    "leaf_stored_index",
    "leaf_stored_indexes",
    "stored_hashes_added",
    "leaf_of_stored_index",
    "leaf_at_stored_index",
    "stored_hashes_for_leaf",
    "compact_range_indexes",
    "tree_hash",
    "TreeBuilder",
]

HASH_SIZE = 32
MAX_TREE_SIZE = (1 << 64) - 1  # RFC 9162 sizes are uint64


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the hash of one leaf (RFC 6962 section 2.1,
    RFC 9162 section 2.1.1)."""
    return hashlib.sha256(b"\x00" + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the hash of an interior node
    (RFC 6962 section 2.1, RFC 9162 section 2.1.1)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()
"""``MTH({}) = SHA-256()``, the root of the empty tree (RFC 6962 section 2.1).

Unlike x/mod's ``TreeHash``, which returns 32 zero bytes for n == 0."""


class HashReader(Protocol):
    """Storage of the stored hashes (see :func:`stored_hash_index`)."""

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        """The stored hashes at ``indexes``, in the same order (one per index).

        Callers always pass indexes in increasing order."""
        ...


# -- internal checks -------------------------------------------------------------


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _need_size(x: object, what: str) -> int:
    """A precondition: ``x`` is an int in 0..MAX_TREE_SIZE (else InvariantError)."""
    if not _is_int(x) or not 0 <= x <= MAX_TREE_SIZE:  # type: ignore[operator]
        raise InvariantError(f"{what} must be an int in 0..2**64-1, got {x!r}")
    return x  # type: ignore[return-value]


def _need_hash(h: object, what: str) -> bytes:
    if type(h) is bytes and len(h) == HASH_SIZE:
        return h
    if not isinstance(h, (bytes, bytearray)) or len(h) != HASH_SIZE:
        raise InvariantError(f"{what} is not a {HASH_SIZE}-byte hash")
    return bytes(h)


def _read(reader: HashReader, indexes: list[int]) -> list[bytes]:
    """One ``read_hashes`` call, checked: as many 32-byte hashes as indexes."""
    if not indexes:
        return []
    hashes = reader.read_hashes(indexes)
    if len(hashes) != len(indexes):
        raise InvariantError(f"read_hashes({len(indexes)} indexes) returned {len(hashes)} hashes")
    return [_need_hash(h, f"stored hash {i}") for i, h in zip(indexes, hashes)]


def _maxpow2_atmost(n: int) -> int:
    """The largest power of 2 that is <= n (n >= 1)."""
    return 1 << (n.bit_length() - 1)


# -- stored hash indexes ---------------------------------------------------------------


def stored_hash_index(level: int, n: int) -> int:
    """The stored-hash index of hash (level, n), as x/mod ``StoredHashIndex``.

    Hash (L, n) is written right after hash (L-1, 2n+1), so it comes right
    after leaf ``m = (n+1) * 2**L - 1``, as the L'th hash that leaf completes.
    Before leaf m there are ``m + m//2 + m//4 + ... = 2m - popcount(m)``
    hashes, so::

        stored_hash_index(L, n) = 2m - popcount(m) + L,  m = ((n+1) << L) - 1
    """
    if not _is_int(level) or not _is_int(n) or level < 0 or n < 0:
        raise InvariantError(f"bad stored hash coordinates ({level!r}, {n!r})")
    return _stored_index(level, n)


def _stored_index(level: int, n: int) -> int:
    """:func:`stored_hash_index` for coordinates this module computed itself."""
    m = ((n + 1) << level) - 1
    return 2 * m - m.bit_count() + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """The inverse of :func:`stored_hash_index`: ``index -> (level, n)``.

    As x/mod ``SplitStoredHashIndex``: leaf m is at ``2m - popcount(m)``,
    which lies in [index - log2(index) - 1, index] for the last leaf m at or
    before ``index``; start at m = index // 2 and walk forward (each leaf m
    adds ``1 + trailing_ones(m)`` hashes). The hash is then the
    ``index - stored_hash_index(0, m)``'th one completed by leaf m, that is
    (level, m >> level)."""
    if not _is_int(index) or index < 0:
        raise InvariantError(f"bad stored hash index {index!r}")
    m = index // 2
    at = stored_hash_index(0, m)
    if at > index:
        raise InvariantError("bad math in split_stored_hash_index")
    while True:
        nxt = at + 1 + _trailing_ones(m)
        if nxt > index:
            break
        m += 1
        at = nxt
    level = index - at
    return level, m >> level


def _trailing_ones(x: int) -> int:
    return (~x & (x + 1)).bit_length() - 1


def stored_hash_count(n: int) -> int:
    """The number of stored hashes of a tree of n leaves (x/mod ``StoredHashCount``).

    It is the index at which leaf n will be stored:
    ``stored_hash_count(n) = leaf_stored_index(n) = 2n - popcount(n)``."""
    _need_size(n, "tree size")
    return 2 * n - n.bit_count()


def leaf_stored_index(leaf_index: int) -> int:
    """Where leaf n = ``leaf_index`` is stored:
    ``stored_hash_index(0, n) = 2n - popcount(n)``, since each leaf m < n
    stored ``1 + trailing_ones(m)`` hashes and those sum to that.

    Unchecked (callers pass indexes they computed), for hot loops: callers
    that take n from outside use :func:`stored_hash_count`."""
    return 2 * leaf_index - leaf_index.bit_count()


def leaf_stored_indexes(first: int, end: int) -> list[int]:
    """:func:`leaf_stored_index` of the leaves ``first .. end - 1``, in
    order: where a run of leaves is stored (a level-0 tile, the leaf rows
    of a whole tree)."""
    return [2 * n - n.bit_count() for n in range(first, end)]


def stored_hashes_added(leaf_index: int) -> int:
    """How many stored hashes appending leaf n writes, from
    :func:`leaf_stored_index` on: its own hash, then one node per subtree
    it completes, one per trailing 1 bit of n, so ``1 + trailing_ones(n)``;
    leaf n + 1 is stored that many indexes after leaf n."""
    return (~leaf_index & (leaf_index + 1)).bit_length()


def leaf_of_stored_index(index: int) -> int:
    """The leaf whose append stores hash ``index``: the largest n with
    ``stored_hash_count(n) <= index`` (``2n - popcount(n)`` grows with n)."""
    _need_size(index, "stored hash index")
    lo, hi = 0, index  # stored_hash_count(index) >= index for every index
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if 2 * mid - mid.bit_count() <= index:
            lo = mid
        else:
            hi = mid - 1
    return lo


def leaf_at_stored_index(index: int) -> int | None:
    """n if ``index`` is the stored-hash index of leaf n (``2n - popcount(n)``),
    else None (a node's). Arithmetic only, for readers that must tell a
    leaf's index from a node's (:func:`split_stored_hash_index` walks).

    The leaf m whose append stores ``index`` is the largest with
    ``2m - popcount(m) <= index``, so ``m ≈ (index + popcount(m)) / 2``, and
    popcount changes little near m: a few rounds of that map from
    ``index // 2`` come within a step or two of m, and the two loops settle
    it exactly (``2m - popcount(m)`` grows with m)."""
    n = index >> 1
    for _ in range(3):
        n = (index + n.bit_count()) >> 1
    while 2 * n - n.bit_count() > index:
        n -= 1
    while 2 * (n + 1) - (n + 1).bit_count() <= index:
        n += 1
    return n if 2 * n - n.bit_count() == index else None


def stored_hashes_for_leaf(n: int, leaf: bytes, reader: HashReader) -> list[bytes]:
    """The hashes to store when leaf number ``n`` (hash ``leaf``) is appended,
    as x/mod ``StoredHashesForRecordHash``.

    They go at consecutive stored-hash indexes from ``leaf_stored_index(n)``:
    first ``leaf`` itself, then one node hash per trailing 1 bit of n, each
    completed subtree ``(i+1, n >> (i+1)) = node_hash((i, (n >> i) - 1),
    previous)``. Reads those ``trailing_ones(n)`` left siblings in one call."""
    _need_size(n, "leaf number")
    h = _need_hash(leaf, "leaf hash")
    m = _trailing_ones(n)
    # Left siblings, in increasing stored-index order (largest subtree first).
    indexes = [stored_hash_index(i, (n >> i) - 1) for i in reversed(range(m))]
    old = _read(reader, indexes)
    out = [h]
    for i in range(m):
        h = node_hash(old[m - 1 - i], h)
        out.append(h)
    return out


# -- tree hashes -----------------------------------------------------------------------


def compact_range_indexes(size: int) -> list[int]:
    """Stored-hash indexes of the roots of the complete subtrees that make up
    a tree of ``size`` leaves, largest (leftmost) first: one per 1 bit of
    ``size`` (the ``subTreeIndex(0, size)`` of x/mod). These are the hashes a
    :class:`TreeBuilder` holds, so a store resumes one with a single read."""
    _need_size(size, "tree size")
    return _subtree_indexes(0, size, [])


def _subtree_indexes(lo: int, hi: int, need: list[int]) -> list[int]:
    """Append to ``need`` the stored indexes needed for MTH(D[lo:hi]): split
    [lo, hi) into complete subtrees, largest first (x/mod ``subTreeIndex``)."""
    while lo < hi:
        k = _maxpow2_atmost(hi - lo)
        level = k.bit_length() - 1
        if lo & (k - 1):
            raise InvariantError("bad math in _subtree_indexes")
        need.append(_stored_index(level, lo >> level))
        lo += k
    return need


def _subtree_hash(lo: int, hi: int, hashes: list[bytes], pos: int) -> tuple[bytes, int]:
    """MTH(D[lo:hi]) from ``hashes[pos:]`` as listed by :func:`_subtree_indexes`;
    returns the hash and the position after the hashes used (x/mod
    ``subTreeHash``). The complete subtrees are folded right to left:
    ``h = node_hash(s[i], h)``, which is the RFC 6962 recursion since each
    left part is the largest power of 2 below the remaining size."""
    count = 0
    while lo < hi:
        k = _maxpow2_atmost(hi - lo)
        if lo & (k - 1):
            raise InvariantError("bad math in _subtree_hash")
        count += 1
        lo += k
    if count == 0 or pos + count > len(hashes):
        raise InvariantError("bad index math in _subtree_hash")
    return _fold(hashes[pos : pos + count]), pos + count


def _fold(roots: Sequence[bytes]) -> bytes:
    """The root over complete-subtree roots listed largest first:
    ``node_hash(r0, node_hash(r1, ... node_hash(r[-2], r[-1])))``;
    EMPTY_ROOT for none."""
    if not roots:
        return EMPTY_ROOT
    h = roots[-1]
    for r in reversed(roots[:-1]):
        h = node_hash(r, h)
    return h


def tree_hash(n: int, reader: HashReader) -> bytes:
    """MTH(D[0:n]), the RFC 6962 (section 2.1) root of the first n leaves,
    from the popcount(n) stored subtree roots (one read). ``EMPTY_ROOT`` for
    n == 0, not the zero hash of x/mod ``TreeHash``."""
    idx = compact_range_indexes(n)
    return _fold(_read(reader, idx))




# -- the tree builder ------------------------------------------------------------------


class TreeBuilder:
    """The right edge of an RFC 6962 tree (a compact range over leaves
    0..size-1): appends leaves in O(1) amortized time and O(log n) memory,
    with no reads, and gives the root at any size.

    It keeps the roots of the complete subtrees that make up the tree, one
    per 1 bit of ``size``, largest first (the hashes at
    :func:`compact_range_indexes`, what a state file or a store resumes
    from). Appending leaf n pushes its hash and merges the top two roots
    once per trailing 1 bit of n: the hashes so made are exactly those
    :func:`stored_hashes_for_leaf` stores, from :func:`leaf_stored_index`
    on, so the builder also gives the rows a store writes."""

    __slots__ = ("size", "_stack")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()):
        """Resume from the subtree roots of a tree of ``size`` leaves, largest
        first: exactly popcount(size) 32-byte hashes, else FormatError."""
        if not _is_int(size) or not 0 <= size <= MAX_TREE_SIZE:
            raise FormatError(f"compact range size {size!r} is not an int in 0..2**64-1")
        hs = list(hashes)
        if len(hs) != size.bit_count():
            raise FormatError(f"a compact range of size {size} has {size.bit_count()} hashes, not {len(hs)}")
        for i, h in enumerate(hs):
            if not isinstance(h, (bytes, bytearray)) or len(h) != HASH_SIZE:
                raise FormatError(f"compact range hash {i} is not a {HASH_SIZE}-byte hash")
        self.size: int = size
        self._stack: list[bytes] = [bytes(h) for h in hs]

    def append(self, leaf: bytes) -> tuple[int, list[bytes]]:
        """Append one leaf, given as its leaf HASH (see :func:`leaf_hash`);
        returns ``(leaf_stored_index(n), the stored hashes it adds)``.
        InvariantError for a leaf that is not a 32-byte hash or a full tree."""
        h = leaf if type(leaf) is bytes and len(leaf) == HASH_SIZE else _need_hash(leaf, "leaf hash")
        n = self.size
        if n >= MAX_TREE_SIZE:
            raise InvariantError("the tree is full")
        out = [h]
        stack = self._stack
        k = n
        while k & 1:
            h = node_hash(stack.pop(), h)
            out.append(h)
            k >>= 1
        stack.append(h)
        self.size = n + 1
        return 2 * n - n.bit_count(), out  # leaf_stored_index(n)

    def extend(self, leaves: Sequence[bytes]) -> list[bytes]:
        """:meth:`append` for each leaf HASH of ``leaves`` in turn, in one
        loop and unchecked (the bulk paths hash the leaves themselves); the
        stored hashes they add, in index order, the first at
        ``leaf_stored_index(size)`` for the size before."""
        out: list[bytes] = []
        add = out.append
        stack = self._stack
        push, pop = stack.append, stack.pop
        sha256 = hashlib.sha256
        n = self.size
        for h in leaves:
            add(h)
            k = n
            while k & 1:
                h = sha256(b"\x01" + pop() + h).digest()  # node_hash(left sibling, h)
                add(h)
                k >>= 1
            push(h)
            n += 1
        self.size = n
        return out

    def root(self) -> bytes:
        """MTH of the leaves so far; EMPTY_ROOT when size == 0."""
        return _fold(self._stack)

    def hashes(self) -> list[bytes]:
        """The subtree roots, largest first (a copy): the right edge."""
        return list(self._stack)

    def __repr__(self) -> str:
        return f"TreeBuilder(size={self.size}, root={self.root().hex()})"
