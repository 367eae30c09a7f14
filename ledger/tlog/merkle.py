"""RFC 6962 / RFC 9162 Merkle tree, stored hashes, proofs and C2SP tiles.

A port of the design of golang.org/x/mod ``sumdb/tlog`` (``tlog.go`` and
``tile.go``) to small pure functions. Nothing here touches a database or a
file: storage is behind the one-method :class:`HashReader` interface (and, for
a verifier that only has tiles, :class:`TileReader`).

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
gives that dense linear order; the store keeps one row per index.

Tiles (https://c2sp.org/tlog-tiles). A tile at tile level T, index N, width W
(1..256) holds the W stored hashes at tree level 8*T, positions
N*256 .. N*256+W-1, concatenated. The hashes at tree levels 8*T+1 .. 8*T+7
are not published; a reader recomputes them from the tile below.

Errors: a proof that does not verify raises :class:`ProofError`; a malformed
tile path or tile raises :class:`FormatError`; a call that breaks a
precondition (a negative size, a leaf index past the tree, a reader that
returns the wrong number of hashes) raises :class:`InvariantError`, since it
is a bug in the caller. Callers that take sizes and indexes from users check
them before calling a prover.
"""

from __future__ import annotations

import hashlib
import re
from typing import Protocol, Sequence

from ledger.errors import FormatError, InvariantError, ProofError

__all__ = [
    "HASH_SIZE",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "MAX_PROOF_HASHES",
    "MAX_TREE_SIZE",
    "EMPTY_ROOT",
    "leaf_hash",
    "node_hash",
    "HashReader",
    "stored_hash_index",
    "split_stored_hash_index",
    "stored_hash_count",
    "stored_hashes_for_leaf",
    "tree_hash",
    "prove_inclusion",
    "prove_consistency",
    "verify_inclusion",
    "verify_consistency",
    "CompactRange",
    "compact_range_indexes",
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

HASH_SIZE = 32
TILE_HEIGHT = 8  # C2SP tlog-tiles: 256 hashes per full tile
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_PROOF_HASHES = 64  # longest proof the check functions accept
MAX_TREE_SIZE = (1 << 64) - 1  # RFC 9162 sizes are uint64
_MAX_TILE_LEVEL = 63  # C2SP tlog-tiles: <L> is 0..63
_MAX_INDEX_GROUPS = 7  # 2**64 - 1 has 20 decimal digits


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


def _maxpow2_below(n: int) -> int:
    """k, the largest power of 2 with k < n (n >= 2): the RFC 6962 split point."""
    return 1 << ((n - 1).bit_length() - 1)


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
    ``stored_hash_count(n) = stored_hash_index(0, n) = 2n - popcount(n)``."""
    _need_size(n, "tree size")
    return 2 * n - n.bit_count()


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

    They go at consecutive stored-hash indexes from ``stored_hash_index(0, n)``:
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
    :class:`CompactRange` holds, so a store loads one with a single read."""
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


# -- proofs ----------------------------------------------------------------------------


def _inclusion_indexes(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    """Indexes for the audit path of leaf n in D[lo:hi] (x/mod ``leafProofIndex``)."""
    if not lo <= n < hi:
        raise InvariantError("bad math in _inclusion_indexes")
    if lo + 1 == hi:
        return need
    k = _maxpow2_below(hi - lo)
    if n < lo + k:
        _inclusion_indexes(lo, lo + k, n, need)
        _subtree_indexes(lo + k, hi, need)
    else:
        _subtree_indexes(lo, lo + k, need)
        _inclusion_indexes(lo + k, hi, n, need)
    return need


def _inclusion_path(lo: int, hi: int, n: int, hashes: list[bytes], pos: int) -> tuple[list[bytes], int]:
    """PATH(n, D[lo:hi]) of RFC 6962 section 2.1.1 (x/mod ``leafProof``)::

        PATH(0, {d(0)}) = {}
        PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])      for m < k
        PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k])  for m >= k
    """
    if not lo <= n < hi:
        raise InvariantError("bad math in _inclusion_path")
    if lo + 1 == hi:
        return [], pos
    k = _maxpow2_below(hi - lo)
    if n < lo + k:
        p, pos = _inclusion_path(lo, lo + k, n, hashes, pos)
        th, pos = _subtree_hash(lo + k, hi, hashes, pos)
    else:
        th, pos = _subtree_hash(lo, lo + k, hashes, pos)
        p, pos = _inclusion_path(lo + k, hi, n, hashes, pos)
    p.append(th)
    return p, pos


def prove_inclusion(tree_size: int, leaf_index: int, reader: HashReader) -> list[bytes]:
    """The RFC 6962 audit path (section 2.1.1; RFC 9162 section 2.1.3.1) of
    leaf ``leaf_index`` in the tree of ``tree_size`` leaves, leaf side first,
    as x/mod ``ProveRecord``. One read of at most 2*log2(tree_size) hashes.

    InvariantError unless 0 <= leaf_index < tree_size."""
    _need_size(tree_size, "tree size")
    _need_size(leaf_index, "leaf index")
    if leaf_index >= tree_size:
        raise InvariantError(f"leaf {leaf_index} is not in a tree of {tree_size} leaves")
    idx = _inclusion_indexes(0, tree_size, leaf_index, [])
    hashes = _read(reader, idx)
    proof, pos = _inclusion_path(0, tree_size, leaf_index, hashes, 0)
    if pos != len(hashes):
        raise InvariantError("bad index math in prove_inclusion")
    return proof


def _consistency_indexes(lo: int, hi: int, m: int, need: list[int]) -> list[int]:
    """Indexes for SUBPROOF(m, D[lo:hi], lo == 0) (x/mod ``treeProofIndex``)."""
    if not lo < m <= hi:
        raise InvariantError("bad math in _consistency_indexes")
    if m == hi:
        return need if lo == 0 else _subtree_indexes(lo, hi, need)
    k = _maxpow2_below(hi - lo)
    if m <= lo + k:
        _consistency_indexes(lo, lo + k, m, need)
        _subtree_indexes(lo + k, hi, need)
    else:
        _subtree_indexes(lo, lo + k, need)
        _consistency_indexes(lo + k, hi, m, need)
    return need


def _consistency_path(lo: int, hi: int, m: int, hashes: list[bytes], pos: int) -> tuple[list[bytes], int]:
    """SUBPROOF(m, D[lo:hi], b) of RFC 6962 section 2.1.2, b = (lo == 0)
    (x/mod ``treeProof``)::

        SUBPROOF(m, D[m], true)  = {}
        SUBPROOF(m, D[m], false) = {MTH(D[m])}
        SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])        m <= k
        SUBPROOF(m, D[n], b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k]) m > k
    """
    if not lo < m <= hi:
        raise InvariantError("bad math in _consistency_path")
    if m == hi:
        if lo == 0:
            return [], pos
        th, pos = _subtree_hash(lo, hi, hashes, pos)
        return [th], pos
    k = _maxpow2_below(hi - lo)
    if m <= lo + k:
        p, pos = _consistency_path(lo, lo + k, m, hashes, pos)
        th, pos = _subtree_hash(lo + k, hi, hashes, pos)
    else:
        th, pos = _subtree_hash(lo, lo + k, hashes, pos)
        p, pos = _consistency_path(lo + k, hi, m, hashes, pos)
    p.append(th)
    return p, pos


def prove_consistency(new_size: int, old_size: int, reader: HashReader) -> list[bytes]:
    """The RFC 6962 consistency proof PROOF(old_size, D[new_size]) (section
    2.1.2; RFC 9162 section 2.1.4.1), as x/mod ``ProveTree(t=new_size,
    n=old_size)``. Note the argument order: new size first.

    ``[]`` when old_size is 0 or equals new_size (nothing to prove; see
    :func:`verify_consistency`). InvariantError unless
    0 <= old_size <= new_size."""
    _need_size(new_size, "new tree size")
    _need_size(old_size, "old tree size")
    if old_size > new_size:
        raise InvariantError(f"old size {old_size} > new size {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    idx = _consistency_indexes(0, new_size, old_size, [])
    hashes = _read(reader, idx)
    proof, pos = _consistency_path(0, new_size, old_size, hashes, 0)
    if pos != len(hashes):
        raise InvariantError("bad index math in prove_consistency")
    return proof


def _proof_size(x: object, what: str) -> int:
    if not _is_int(x) or not 0 <= x <= MAX_TREE_SIZE:  # type: ignore[operator]
        raise ProofError(f"{what} {x!r} is not an int in 0..2**64-1")
    return x  # type: ignore[return-value]


def _proof_hash(h: object, what: str) -> bytes:
    if not isinstance(h, (bytes, bytearray)) or len(h) != HASH_SIZE:
        raise ProofError(f"{what} is not a {HASH_SIZE}-byte hash")
    return bytes(h)


def _proof_hashes(proof: object) -> list[bytes]:
    if isinstance(proof, (bytes, bytearray, str)) or not isinstance(proof, Sequence):
        raise ProofError("the proof is not a list of hashes")
    if len(proof) > MAX_PROOF_HASHES:
        raise ProofError(f"the proof has {len(proof)} hashes, more than {MAX_PROOF_HASHES}")
    return [_proof_hash(p, f"proof hash {i}") for i, p in enumerate(proof)]


def verify_inclusion(leaf: bytes, leaf_index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``proof`` shows leaf hash ``leaf`` at ``leaf_index`` in the
    tree of ``tree_size`` leaves with root ``root`` (RFC 9162 section 2.1.3.2).

    With ``fn = leaf_index``, ``sn = tree_size - 1``, ``r = leaf``, for each
    proof hash p: fail if sn == 0; if fn is odd or fn == sn, then
    ``r = node_hash(p, r)`` and, if fn is even, shift fn and sn right until
    fn is odd or 0; else ``r = node_hash(r, p)``; then shift both right once.
    At the end require sn == 0 and r == root.

    Raises ProofError on any mismatch, on leaf_index >= tree_size, on a hash
    that is not 32 bytes and on a proof longer than MAX_PROOF_HASHES."""
    leaf = _proof_hash(leaf, "the leaf hash")
    root = _proof_hash(root, "the root")
    leaf_index = _proof_size(leaf_index, "leaf index")
    tree_size = _proof_size(tree_size, "tree size")
    path = _proof_hashes(proof)
    if leaf_index >= tree_size:
        raise ProofError(f"leaf index {leaf_index} is not below tree size {tree_size}")
    fn, sn, r = leaf_index, tree_size - 1, leaf
    for p in path:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if r != root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes) -> None:
    """Check that ``proof`` shows the tree (old_size, old_root) to be a prefix
    of the tree (new_size, new_root) (RFC 9162 section 2.1.4.2).

    For 0 < old_size < new_size, the RFC algorithm: fail on an empty proof;
    if old_size is a power of 2, prepend old_root to the proof; set
    ``fn = old_size - 1``, ``sn = new_size - 1``; while fn is odd shift both
    right; ``fr = sr = proof[0]``; for each further hash c: fail if sn == 0;
    if fn is odd or fn == sn, then ``fr = node_hash(c, fr)``,
    ``sr = node_hash(c, sr)`` and, if fn is even, shift both right until fn
    is odd or 0; else ``sr = node_hash(sr, c)``; then shift both right once.
    At the end require fr == old_root, sr == new_root and sn == 0.

    The cases outside ``0 < old_size < new_size`` (which RFC 6962 section
    2.1.2 leaves undefined) are decided here as follows:

    - old_size == new_size: the proof must be empty and old_root == new_root;
      for size 0 both must also be EMPTY_ROOT.
    - old_size == 0 < new_size: the empty tree is a prefix of every tree, so
      this holds with an empty proof and old_root == EMPTY_ROOT (new_root is
      then only checked to be 32 bytes). :func:`prove_consistency` returns
      ``[]`` for it, so a checkpoint chain may start at size 0. (The
      transparency-dev verifier rejects every size1 == 0 < size2 case.)
    - old_size > new_size: fails.

    Every hash must be exactly 32 bytes, the proof included: this rejects
    the transparency-dev vector "sizes are equal (one) and proof is empty",
    whose roots are 12-byte dummies that that project accepts. Raises
    ProofError on any failure, including a proof longer than
    MAX_PROOF_HASHES (so new_size above 2**63 cannot always be proved)."""
    old_root = _proof_hash(old_root, "the old root")
    new_root = _proof_hash(new_root, "the new root")
    old_size = _proof_size(old_size, "old tree size")
    new_size = _proof_size(new_size, "new tree size")
    path = _proof_hashes(proof)
    if old_size > new_size:
        raise ProofError(f"old tree size {old_size} is larger than new tree size {new_size}")
    if old_size == new_size:
        if path:
            raise ProofError("trees of the same size need an empty consistency proof")
        if old_root != new_root:
            raise ProofError("trees of the same size have different roots")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise ProofError("the root of the empty tree is not SHA-256()")
        return
    if old_size == 0:
        if path:
            raise ProofError("a consistency proof from the empty tree must be empty")
        if old_root != EMPTY_ROOT:
            raise ProofError("the root of the empty tree is not SHA-256()")
        return
    if not path:
        raise ProofError("empty consistency proof")
    if old_size & (old_size - 1) == 0:
        path = [old_root] + path
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root")
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root")


# -- compact range -------------------------------------------------------------------------


class CompactRange:
    """Streaming RFC 6962 root over leaves 0..n-1 in O(log n) memory (the right edge of the tree).

    It keeps the roots of the complete subtrees that make up the tree, one
    per 1 bit of ``size``, largest first (those at
    :func:`compact_range_indexes`). Appending leaf n pushes its hash and
    merges the top two roots once per trailing 1 bit of n, exactly the node
    hashes that :func:`stored_hashes_for_leaf` stores."""

    __slots__ = ("size", "_hashes")

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
        self._hashes: list[bytes] = [bytes(h) for h in hs]

    def append(self, leaf: bytes) -> None:
        """Append one leaf, given as its leaf HASH (see :func:`leaf_hash`)."""
        h = _need_hash(leaf, "leaf hash")
        if self.size >= MAX_TREE_SIZE:
            raise InvariantError("compact range is full")
        s = self.size
        while s & 1:
            h = node_hash(self._hashes.pop(), h)
            s >>= 1
        self._hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        """MTH of the leaves so far; EMPTY_ROOT when size == 0."""
        return _fold(self._hashes)

    def hashes(self) -> list[bytes]:
        """The subtree roots, largest first (a copy)."""
        return list(self._hashes)

    def __repr__(self) -> str:
        return f"CompactRange(size={self.size}, root={self.root().hex()})"


class TreeBuilder:
    """Appends leaves and returns the stored hashes each one adds, in O(1)
    amortized time and O(log n) memory, with no reads: the left siblings a
    new leaf needs are exactly the subtree roots of the tree so far, kept on
    a stack (the :class:`CompactRange` of the tree).

    For leaf n the stored hashes start at index ``2n - popcount(n)``
    (:func:`stored_hash_count`): the leaf hash, then one node hash per
    trailing 1 bit of n, as :func:`stored_hashes_for_leaf` computes them."""

    __slots__ = ("size", "_stack")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()):
        edge = CompactRange(size, hashes)
        self.size = edge.size
        self._stack = edge.hashes()

    def append(self, leaf: bytes) -> tuple[int, list[bytes]]:
        """Append the leaf HASH ``leaf``; returns ``(first stored index, hashes)``."""
        n = self.size
        h = leaf
        out = [h]
        stack = self._stack
        k = n
        while k & 1:
            h = node_hash(stack.pop(), h)
            out.append(h)
            k >>= 1
        stack.append(h)
        self.size = n + 1
        return 2 * n - n.bit_count(), out

    def extend(self, leaves: Sequence[bytes]) -> list[bytes]:
        """:meth:`append` for each leaf HASH of ``leaves`` in turn, in one
        loop; the stored hashes they add, in index order (the first at
        ``2n - popcount(n)`` for the size n before)."""
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
        return _fold(self._stack)

    def hashes(self) -> list[bytes]:
        return list(self._stack)


# -- tiles -----------------------------------------------------------------------------------


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
