"""The c2sp.org/tlog-witness add-checkpoint request body: a consistency proof
from an old tree size to the tree of a signed checkpoint.

At most MAX_PROOF_HASHES (63) hashes, as tlog-witness states; the
checkpoint must be a well-formed signed checkpoint note and the old size at
most its tree size (the spec answers 400 Bad Request to that, like to a
malformed body). Parsers raise FormatError or LimitError only.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.errors import FormatError
from ledger.format import note
from ledger.format.strict import (
    format_hashes_then_note,
    check_proof_hashes,
    check_size,
    check_uint63,
    parse_decimal,
    parse_hashes_then_note,
)


@dataclass(frozen=True)
class ConsistencyProof:
    """A c2sp.org/tlog-witness add-checkpoint request body."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: bytes


def format_consistency(c: ConsistencyProof) -> bytes:
    """``old <size>\\n``, one base64 hash line each (at most 63), an empty
    line, then the signed checkpoint note verbatim."""
    old = check_uint63(c.old_size, "old size")
    proof = check_proof_hashes(c.proof, "consistency proof")
    if not isinstance(c.checkpoint, bytes):
        raise FormatError("checkpoint must be bytes")
    cp = note.parse_signed_checkpoint(c.checkpoint, note.MAX_NOTE_BYTES)
    if old > cp.tree_size:
        raise FormatError(f"old size {old} is over the checkpoint size {cp.tree_size}")
    return format_hashes_then_note([b"old ", str(old).encode("ascii"), b"\n"], proof, c.checkpoint,
                                   note.MAX_NOTE_BYTES, "request")


def parse_consistency(data: bytes, max_bytes: int = note.MAX_NOTE_BYTES) -> ConsistencyProof:
    """Strict inverse of :func:`format_consistency`. The checkpoint must be a
    well-formed signed checkpoint note (not verified here) and the old size
    at most its tree size. Whether a non-empty proof for old size 0 verifies
    is left to the proof checker."""
    check_size(data, max_bytes, "add-checkpoint request")
    lines = data.split(b"\n")
    if len(lines) < 2 or not lines[0].startswith(b"old "):
        raise FormatError("add-checkpoint request does not start with an old size line")
    old = parse_decimal(lines[0][len(b"old ") :], "old size")
    proof, signed = parse_hashes_then_note(lines, 1, data, len(lines[0]) + 1, "add-checkpoint request")
    cp = note.parse_signed_checkpoint(signed, max_bytes)
    if old > cp.tree_size:
        raise FormatError(f"old size {old} is over the checkpoint size {cp.tree_size}")
    return ConsistencyProof(old, proof, signed)
