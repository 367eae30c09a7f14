"""Receipts: a C2SP tlog-proof@v1 for an entry, then one per key entry
after a rotation (docs/FORMAT.md, "Receipts")."""

from __future__ import annotations

from ledger.errors import FormatError, LimitError
from ledger.format import note
from ledger.tlog import merkle
from ledger.verify.reference import MAX_KEY_PROOFS


RECEIPT_SIG_PREFIX = "\u2014 ".encode()


def parse_receipts(data: bytes) -> list[note.Receipt]:
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
        blocks.append(note.parse_receipt(data[pos:end]))
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
        note.format_receipt(note.Receipt(i, tuple(merkle.prove_inclusion(tree_size, i, reader)), checkpoint, d))
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
    while data.startswith(RECEIPT_SIG_PREFIX, p):
        nl = data.find(b"\n", p)
        if nl < 0:
            return len(data)
        p = nl + 1
    return p

