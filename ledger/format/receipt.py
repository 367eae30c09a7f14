"""The receipt: c2sp.org/tlog-proof@v1, and fundledger's key proofs after it.

A receipt shows that an entry is in the tree of a signed checkpoint: its
inclusion proof, the checkpoint note, and the entry bytes as ``extra``.
After a key rotation it goes on with one more tlog-proof@v1 block per key
entry in that tree, so that a reader holding only the log's first key can
follow each hand-over (docs/FORMAT.md, "Receipts").

A block holds at most MAX_PROOF_HASHES (63) hashes (a tree below 2**63
leaves never needs more for an inclusion proof); its checkpoint must be a
well-formed signed checkpoint note with the index below its tree size.
Parsers raise FormatError or LimitError only.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.errors import FormatError, LimitError
from ledger.format import note
from ledger.format.strict import (
    b64,
    format_hashes_then_note,
    b64decode,
    check_proof_hashes,
    check_size,
    check_uint63,
    parse_decimal,
    parse_hashes_then_note,
)
from ledger.tlog.proof import prove_inclusion

RECEIPT_HEADER = b"c2sp.org/tlog-proof@v1"
MAX_KEY_PROOFS = 64  # key entries a receipt or a witness request may prove


@dataclass(frozen=True)
class Receipt:
    """A c2sp.org/tlog-proof@v1 proof: the entry at ``leaf_index`` is in the
    tree of the signed ``checkpoint`` note; ``extra`` is the (unauthenticated)
    extra data, here the entry bytes."""

    leaf_index: int
    proof: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None


def format_receipt(r: Receipt) -> bytes:
    """::

        c2sp.org/tlog-proof@v1
        extra <base64 extra>        (only if extra is not None; never empty)
        index <leaf index>
        <base64 hash>               (0 to 63 lines, leaf's sibling first)
                                    (empty line)
        <checkpoint note, verbatim>
    """
    idx = check_uint63(r.leaf_index, "receipt index")
    proof = check_proof_hashes(r.proof, "receipt")
    if not isinstance(r.checkpoint, bytes):
        raise FormatError("receipt checkpoint must be bytes")
    cp = note.parse_signed_checkpoint(r.checkpoint, note.MAX_NOTE_BYTES)
    if idx >= cp.tree_size:
        raise FormatError(f"receipt index {idx} is not below the tree size {cp.tree_size}")
    out = [RECEIPT_HEADER, b"\n"]
    if r.extra is not None:
        if not isinstance(r.extra, bytes) or not r.extra:
            raise FormatError("receipt extra data must be non-empty bytes or None")
        out += [b"extra ", b64(r.extra).encode("ascii"), b"\n"]
    out += [b"index ", str(idx).encode("ascii"), b"\n"]
    return format_hashes_then_note(out, proof, r.checkpoint, note.MAX_NOTE_BYTES, "receipt")


def parse_receipt(data: bytes, max_bytes: int = note.MAX_NOTE_BYTES) -> Receipt:
    """Strict inverse of :func:`format_receipt`. The ``extra`` line, if
    present, must be second and hold non-empty canonical base64; the
    checkpoint must be a well-formed signed checkpoint note (signatures are
    not verified here) with the index below its tree size."""
    check_size(data, max_bytes, "receipt")
    lines = data.split(b"\n")
    if lines[0] != RECEIPT_HEADER or len(lines) < 2:
        raise FormatError("receipt does not start with the line c2sp.org/tlog-proof@v1")
    i = 1
    offset = len(lines[0]) + 1
    extra = None
    if lines[i].startswith(b"extra "):
        extra_b64 = lines[i][len(b"extra ") :]
        extra = b64decode(extra_b64.decode("ascii", "replace"), "receipt extra data")
        if not extra:
            raise FormatError("receipt extra data is empty")
        offset += len(lines[i]) + 1
        i += 1
    if i >= len(lines) - 1 or not lines[i].startswith(b"index "):
        raise FormatError("receipt has no index line")
    idx = parse_decimal(lines[i][len(b"index ") :], "receipt index")
    offset += len(lines[i]) + 1
    proof, signed = parse_hashes_then_note(lines, i + 1, data, offset, "receipt")
    cp = note.parse_signed_checkpoint(signed, max_bytes)
    if idx >= cp.tree_size:
        raise FormatError(f"receipt index {idx} is not below the tree size {cp.tree_size}")
    return Receipt(idx, proof, signed, extra)


def parse_receipts(data: bytes) -> list[Receipt]:
    """A receipt file: one C2SP tlog-proof@v1 for the entry, then, after a
    key rotation, one for each key entry in the same checkpoint (see
    docs/FORMAT.md). Each block ends after its checkpoint's signature lines."""
    if len(data) > note.MAX_NOTE_BYTES:
        raise LimitError(f"receipt of {len(data)} bytes is over the {note.MAX_NOTE_BYTES}-byte limit")
    blocks, pos = [], 0
    while pos < len(data):
        if len(blocks) > MAX_KEY_PROOFS:
            raise LimitError(f"more than {MAX_KEY_PROOFS} key proofs")
        end = _receipt_end(data, pos)
        blocks.append(parse_receipt(data[pos:end]))
        pos = end
    if not blocks:
        raise FormatError("empty receipt")
    if any(b.checkpoint != blocks[0].checkpoint for b in blocks):
        raise FormatError("a key proof is not against the receipt's checkpoint")
    return blocks


def format_receipts(seq: int, tree_size: int, checkpoint: bytes, data: bytes,
                    key_entries: list[tuple[int, bytes]], reader) -> bytes:
    """The receipt of entry ``seq`` (``data``) against ``checkpoint``: its
    tlog-proof@v1, then one for each key entry ``(seq, bytes)`` in that tree,
    so that a reader holding only the log's first key can follow every
    rotation to the key that signed the checkpoint (docs/FORMAT.md). A log
    that never rotated gets the plain tlog-proof@v1."""
    blocks = [(seq, data)] + [(k, d) for k, d in key_entries if k < tree_size]
    return b"".join(
        format_receipt(Receipt(i, tuple(prove_inclusion(tree_size, i, reader)), checkpoint, d))
        for i, d in blocks
    )


def _receipt_end(data: bytes, pos: int) -> int:
    """Where the tlog-proof block starting at ``pos`` ends: after the
    signature lines that follow its proof's and its checkpoint's blank lines."""
    proof_end = data.find(b"\n\n", pos)
    text_end = data.find(b"\n\n", proof_end + 2) if proof_end >= 0 else -1
    if text_end < 0:
        return len(data)
    p = text_end + 2
    while data.startswith(note.SIG_PREFIX, p):
        nl = data.find(b"\n", p)
        if nl < 0:
            return len(data)
        p = nl + 1
    return p
