"""RFC 6962 / RFC 9162 inclusion and consistency proofs over the stored hashes.

Proving (RFC 6962 section 2.1.1 and 2.1.2, RFC 9162 section 2.1.3.1 and
2.1.4.1) reads the hashes a proof needs from a :class:`merkle.HashReader` in
one call, as x/mod ``sumdb/tlog``'s ``ProveRecord`` and ``ProveTree``;
checking (RFC 9162 section 2.1.3.2 and 2.1.4.2) needs only the proof and
the roots.

Errors: a proof that does not verify raises :class:`ProofError`; a call that
breaks a precondition (a negative size, a leaf index past the tree) raises
:class:`InvariantError`, since it is a bug in the caller. Callers that take
sizes and indexes from users check them before calling a prover.
"""

from __future__ import annotations

from typing import Sequence

from ledger.errors import InvariantError, ProofError
from ledger.tlog.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    MAX_TREE_SIZE,
    HashReader,
    _is_int,
    _need_size,
    _read,
    _subtree_hash,
    _subtree_indexes,
    node_hash,
)

__all__ = [
    "MAX_PROOF_HASHES",
    "prove_inclusion",
    "prove_consistency",
    "verify_inclusion",
    "verify_consistency",
]

MAX_PROOF_HASHES = 64  # longest proof the check functions accept


def _maxpow2_below(n: int) -> int:
    """k, the largest power of 2 with k < n (n >= 2): the RFC 6962 split point."""
    return 1 << ((n - 1).bit_length() - 1)


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


def _check_trivial_consistency(old_size: int, new_size: int, path: list[bytes], old_root: bytes,
                               new_root: bytes) -> None:
    """:func:`verify_consistency` of equal sizes, or from the empty tree."""
    if old_size == new_size:
        if path:
            raise ProofError("trees of the same size need an empty consistency proof")
        if old_root != new_root:
            raise ProofError("trees of the same size have different roots")
    elif path:
        raise ProofError("a consistency proof from the empty tree must be empty")
    if old_size == 0 and old_root != EMPTY_ROOT:
        raise ProofError("the root of the empty tree is not SHA-256()")


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
    if old_size == new_size or old_size == 0:
        _check_trivial_consistency(old_size, new_size, path, old_root, new_root)
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
