"""The reference verifier: what every entry of the log must be, checked from
its bytes alone, one entry after the other.

This module, the fund rules (ledger/rules/fund.py) and the formats
(ledger/format/, docs/FORMAT.md) are what an auditor has to read. The rest of
ledger/verify reads sources, compares published derived data (tiles, a
database's tables) with what the entries give, or goes faster: the
accelerator only ever answers "this entry passed, by these same rules" or
"not sure: ask the reference", so every failure of an entry is decided here.

Entry ``seq`` of the log (docs/FORMAT.md, "Entries"):

1. is a signed note (C2SP signed-note) of at most 65,535 bytes with exactly
   one signature line, by the log key in force at ``seq``; a key entry has
   two, by that key and then by the key it announces;
2. has for text one line of JSON whose ``seq`` is its position and whose
   ``prev`` is the RFC 6962 leaf hash of the entry before it (32 zero bytes
   for seq 0), and a canonical ``time``;
3. rebuilt from its own inputs (contract terms; liquidation side, quantity
   and prices) and the state the entries before it left, is byte for byte
   the entry the rules give (:meth:`ledger.rules.fund.FundBook.build`): a
   wrong figure, field, kind or spelling fails;
4. has a valid signature, and is then applied: a fund moves, or the log key
   rotates; its leaf hash is appended to the RFC 6962 tree.

A checkpoint of size n is then valid when the key in force at n signed it
and its root is the tree's root over entries 0..n-1 (:func:`check_checkpoints`).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Sequence

from ledger.errors import FundledgerError, LimitError, VerificationError
from ledger.format import note
from ledger.format.kinds import FORMAT_2
from ledger.format.entry import MAX_ENTRY_BYTES, ZERO_HASH, entry_text, parse_entry_text
from ledger.format.receipt import MAX_KEY_PROOFS, Receipt
from ledger.rules.fund import FundBook, parse_time
from ledger.tlog import merkle
from ledger.tlog.proof import verify_inclusion
from ledger.verify.checkpoint import open_checkpoint, signed_by_any

class MissingEntries(VerificationError):
    """Fewer entries than the checkpoint claims."""


# --- keys ----------------------------------------------------------------------------


class KeyHistory:
    """The log keys and the entries each may sign. The first key (the trust
    anchor) signs from seq 0; a ``key`` entry at seq r, signed by the
    current key and the new one, hands over: the new key signs every entry
    after r and every checkpoint of a size above r; the old one is retired."""

    def __init__(self, first: note.Verifier, later: Sequence[tuple[int, note.Verifier]] = ()):
        self.keys: list[tuple[int, note.Verifier]] = [(0, first), *later]

    @property
    def current(self) -> note.Verifier:
        return self.keys[-1][1]

    def rotate(self, seq: int, new: note.Verifier) -> None:
        if any(v.key_id == new.key_id and v.public_key == new.public_key for _, v in self.keys):
            raise VerificationError("a key entry may not bring back a key already used", seq=seq)
        if new.name != self.current.name:
            raise VerificationError(f"the new key is named {new.name!r}, not the log's origin", seq=seq)
        self.keys.append((seq + 1, new))

    def at(self, tree_size: int) -> note.Verifier:
        """The key that must sign a checkpoint of ``tree_size``."""
        key = self.keys[0][1]
        for start, v in self.keys:
            if start <= tree_size:
                key = v
        return key

    def upto(self, seq: int) -> "KeyHistory":
        """The history as entry ``seq`` sees it: the rotations before it."""
        return KeyHistory(self.keys[0][1], [(s, v) for s, v in self.keys[1:] if s <= seq])

    def knows(self, start: int, v: note.Verifier) -> bool:
        return any(s == start and k.vkey() == v.vkey() for s, k in self.keys)

    def follow(self, receipts: Sequence[Receipt], cp: note.Checkpoint, first_new: int = 0) -> None:
        """Add the rotations that ``receipts`` prove: key entries with their
        inclusion proofs in ``cp``, in seq order. One this history holds
        already is passed over; a new one must come after the latest known
        one and at a seq of at least ``first_new``."""
        if len(receipts) > MAX_KEY_PROOFS:
            raise LimitError(f"more than {MAX_KEY_PROOFS} key proofs")
        last = -1
        for r in receipts:
            seq = r.leaf_index
            if r.extra is None or seq <= last:
                raise VerificationError("key proofs must each carry a key entry, in seq order")
            last = seq
            verify_inclusion(merkle.leaf_hash(r.extra), seq, cp.tree_size, r.proof, cp.root_hash)
            obj = check_lone_entry(r.extra, seq, self.upto(seq))
            if obj.get("kind") != "key":
                raise VerificationError("a key proof's entry is not a key entry", seq=seq)
            new = note.parse_vkey(obj["vkey"])
            if self.knows(seq + 1, new):
                continue
            if seq + 1 <= self.keys[-1][0] or seq < first_new:
                raise VerificationError("a key entry the known key history does not hold", seq=seq)
            self.rotate(seq, new)

    def open_checkpoint(self, data: bytes, tree_size: int, what: str = "checkpoint") -> note.Checkpoint:
        """The checkpoint of ``tree_size`` signed by the key in force there;
        a signature by any other key of the log does not count (a retired
        key's alone fails, and is named as such)."""
        try:
            return open_checkpoint(data, [self.at(tree_size)], what)
        except VerificationError:
            retired = [v for _, v in self.keys if v is not self.at(tree_size)]
            if retired and signed_by_any(data, retired):
                raise VerificationError(
                    f"{what} of size {tree_size} is signed by a retired log key, not by the key in force at that size"
                ) from None
            raise


def key_entry_fields(vkey: object) -> dict:
    """The fields of a key-rotation entry announcing ``vkey``."""
    if not isinstance(vkey, str):
        raise VerificationError("a key entry needs a vkey string")
    try:
        v = note.parse_vkey(vkey)
    except FundledgerError as e:
        raise VerificationError(f"bad vkey in key entry: {e}") from None
    if v.alg != note.ALG_ED25519:
        raise VerificationError("a log key must be an Ed25519 key")
    return {"kind": "key", "contract": "", "vkey": v.vkey()}


# --- one entry -----------------------------------------------------------------------


def split_entry(data: bytes, seq: int, keys: KeyHistory) -> tuple[dict, bytes, list[tuple[note.Verifier, bytes]]]:
    """An entry's JSON, its text, and the signatures it must carry, each
    with the key that must have made it (not yet checked): exactly one by
    the current log key; for a key entry, that one and then one by the key
    it announces."""
    if len(data) > MAX_ENTRY_BYTES:
        raise VerificationError(f"entry is over {MAX_ENTRY_BYTES} bytes", seq=seq)
    try:
        text, signatures = note.split_note(data, MAX_ENTRY_BYTES)
    except FundledgerError as e:
        raise VerificationError(f"not a signed note: {e}", seq=seq) from None
    try:
        obj = parse_entry_text(text)
    except FundledgerError as e:
        raise VerificationError(f"entry text: {e}", seq=seq) from None
    signers = [keys.current]
    if obj.get("kind") == "key":
        try:
            signers.append(note.parse_vkey(key_entry_fields(obj.get("vkey"))["vkey"]))
        except VerificationError as e:
            raise VerificationError(e.reason, seq=seq) from None
    if len(signatures) != len(signers):
        s = "s" if len(signers) > 1 else ""
        raise VerificationError(f"{len(signatures)} signatures, expected {len(signers)} by the log key{s}", seq=seq)
    for s, k in zip(signatures, signers):
        if s.name != k.name or s.key_id != k.key_id:
            raise VerificationError(f"signed by a key that may not sign here: {s.name}+{s.key_id.hex()}", seq=seq)
        if len(s.signature) != note.ED25519_SIG_SIZE:
            raise VerificationError("malformed signature", seq=seq)
    return obj, text, [(k, s.signature) for s, k in zip(signatures, signers)]


def check_signatures(text: bytes, signatures: list[tuple[note.Verifier, bytes]], seq: int) -> None:
    """Ed25519 (RFC 8032) of each signature over the entry's text."""
    for key, signature in signatures:
        if not key.verify(text, signature):
            raise VerificationError("signature does not verify", seq=seq)


def rebuild(book: FundBook, obj: dict, seq: int) -> dict:
    """The fields the rules give for entry ``seq`` whose JSON is ``obj``: its
    inputs taken from it, everything else computed from ``book`` (in format
    2, the chain fields and a state entry's commitments too)."""
    kind = obj.get("kind")
    if kind == "contract":
        record = {k: obj.get(k) for k in ("currency", "scale", "type", "multiplier")}
        record["symbol"] = obj.get("contract")
        record["kind"] = kind
        if "lot" in obj:
            record["lot"] = obj["lot"]
    elif kind == "liquidation":
        record = {k: obj.get(k) for k in ("kind", "contract", "id", "side", "qty", "bankruptcy_price", "fill_price")}
        for k in ("mark_price", "adl_qty", "queue_root", "queue_size"):
            if k in obj:
                record[k] = obj[k]
    elif kind == "adl":
        record = {k: obj.get(k) for k in ("kind", "contract", "liquidation", "positions")}
        for k in ("next", "queue_proof"):
            if k in obj:
                record[k] = obj[k]
    elif kind == "key":
        return book.key_entry(key_entry_fields(obj.get("vkey"))["vkey"])
    elif kind == "state":
        if obj.get("format") != FORMAT_2:
            raise VerificationError(f"format {str(obj.get('format'))[:20]} is not a format this verifier knows")
        record = None
    else:
        raise VerificationError(f"unknown entry kind {str(kind)[:30]!r}")
    try:
        return book.build(record) if record is not None else book.state_entry(seq)
    except FundledgerError as e:
        raise VerificationError(str(e)) from None


def _chain_fields(obj: dict, seq: int, prev: bytes) -> str:
    """Check an entry's ``seq`` and ``prev``; its canonical ``time``."""
    if obj.get("prev") != base64.b64encode(prev).decode():
        raise VerificationError("prev is not the hash of the entry before", seq=seq)
    if obj.get("seq") != seq:
        raise VerificationError(f"seq is {str(obj.get('seq'))[:20]}, expected {seq}", seq=seq)
    try:
        return parse_time(obj.get("time"))
    except FundledgerError as e:
        raise VerificationError(str(e), seq=seq) from None


@dataclass
class Chain:
    """What the entries checked so far leave: every fund and liquidation id
    (``book``), the key history, the leaf hash of the last entry, the next
    seq and the RFC 6962 tree over them."""

    book: FundBook
    keys: KeyHistory
    tree: merkle.TreeBuilder = field(default_factory=merkle.TreeBuilder)
    prev: bytes = ZERO_HASH
    seq: int = 0

    def check(self, data: bytes) -> tuple[dict, bytes, list[bytes]]:
        """Check the next entry (steps 1 to 4 above) and apply it: its
        fields, its leaf hash, and the stored tree hashes its append adds
        (the leaf hash, then one node hash per trailing 1 bit of its seq)."""
        seq = self.seq
        obj, text, signatures = split_entry(data, seq, self.keys)
        time = _chain_fields(obj, seq, self.prev)
        try:
            expected = rebuild(self.book, obj, seq)
        except VerificationError as e:
            raise VerificationError(e.reason, seq=seq) from None
        if entry_text(expected, seq, self.prev, time) != text:
            full = dict(expected, seq=seq, prev=obj.get("prev"), time=time)
            raise VerificationError(explain_mismatch(obj, full), seq=seq)
        check_signatures(text, signatures, seq)
        expected["seq"], expected["time"] = seq, time
        if expected["kind"] == "key":
            self.keys.rotate(seq, note.parse_vkey(expected["vkey"]))
        self.book.apply(expected)
        leaf = merkle.leaf_hash(data)
        self.book.link(leaf)
        _, stored = self.tree.append(leaf)
        self.prev, self.seq = leaf, seq + 1
        return expected, leaf, stored


def check_checkpoints(keys: KeyHistory, roots: dict[int, bytes], data: bytes, cp: note.Checkpoint,
                      trusted: bytes | None = None, trusted_cp: note.Checkpoint | None = None) -> None:
    """The checkpoint ``data`` (parsed: ``cp``) is signed by the key in force
    at its size and its root is the tree's at that size (``roots``); so is a
    ``trusted`` one, an older checkpoint the reader kept, which the log must
    extend."""
    keys.open_checkpoint(data, cp.tree_size)
    if trusted_cp is not None:
        keys.open_checkpoint(trusted, trusted_cp.tree_size, "trusted checkpoint")
    if roots[cp.tree_size] != cp.root_hash:
        raise VerificationError(f"the checkpoint's root does not match the entries (size {cp.tree_size})",
                                seq=max(cp.tree_size - 1, 0))
    if trusted_cp is not None and roots[trusted_cp.tree_size] != trusted_cp.root_hash:
        raise VerificationError(
            f"the log does not extend the trusted checkpoint: history up to {trusted_cp.tree_size} was rewritten")


def check_lone_entry(data: bytes, seq: int, keys: KeyHistory) -> dict:
    """An entry seen without its log (a receipt's): signed as the verifier
    requires at ``seq`` (``keys.current`` is the key in force there), its
    ``seq`` right, its time canonical and, for a key entry, exactly the
    canonical key entry. A liquidation's figures need the log: not here."""
    obj, text, signatures = split_entry(data, seq, keys)
    if obj.get("seq") != seq:
        raise VerificationError(f"seq is {str(obj.get('seq'))[:20]}, expected {seq}", seq=seq)
    try:
        time = parse_time(obj.get("time"))
        prev = base64.b64decode(obj.get("prev"), validate=True) if isinstance(obj.get("prev"), str) else b""
    except (FundledgerError, binascii.Error):
        raise VerificationError("bad time or prev", seq=seq) from None
    if len(prev) != 32:
        raise VerificationError("bad prev", seq=seq)
    if obj.get("kind") == "key":
        expected = dict(key_entry_fields(obj.get("vkey")), **_lone_chain_fields(obj, seq))
        if entry_text(expected, seq, prev, time) != text:
            raise VerificationError("the key entry is not canonical", seq=seq)
    try:
        check_signatures(text, signatures, seq)
    except VerificationError:
        raise VerificationError("invalid signature", seq=seq) from None
    return obj


def _lone_chain_fields(obj: dict, seq: int) -> dict:
    """A lone format-2 key entry's chain fields, well formed (where they
    point needs the log): both or neither, a seq below its own, a hash."""
    if "chain_seq" not in obj and "chain_prev" not in obj:
        return {}
    cs, cp = obj.get("chain_seq"), obj.get("chain_prev")
    try:
        ok = type(cs) is int and 0 <= cs < seq and len(base64.b64decode(cp, validate=True)) == 32
    except (TypeError, binascii.Error):
        ok = False
    if not ok:
        raise VerificationError("the key entry's chain fields are malformed", seq=seq)
    return {"chain_seq": cs, "chain_prev": cp}


def explain_mismatch(obj: dict, expected: dict) -> str:
    """Why an entry's JSON ``obj`` is not the ``expected`` one, in one line."""
    for k in obj:
        if k not in expected:
            return f"unexpected field {k[:30]!r}"
    for k in expected:
        if k not in obj:
            return f"missing field {k!r}"
    for k in expected:
        if obj[k] != expected[k]:
            got, want = _json_kind(obj[k]), _json_kind(expected[k])
            if got != want:  # "8" for 8 would read "is '8' but the rules give '8'"
                return f"{k} is {got} {json.dumps(obj[k])[:60]} but the rules give {want} {json.dumps(expected[k])[:60]}"
            return f"{k} is {str(obj[k])[:60]!r} but the rules give {str(expected[k])[:60]!r}"
    return "entry is not in canonical encoding"


def _json_kind(value: object) -> str:
    """What kind of JSON value ``value`` is, for a message."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "an array" if isinstance(value, list) else "an object"
