"""A witness (c2sp.org/tlog-witness) for fundledger logs, and the ledger's
side of collecting cosignatures.

A witness keeps its own cosignature/v1 key (type 0x04) and, for each log it
watches, the last checkpoint it cosigned and the log's key history (each
key with the first tree size it signs). Given an add-checkpoint request
(``old <size>``, a consistency proof, the new signed checkpoint) it cosigns
only if:

* the checkpoint is signed by the log key in force at its size (else:
  refused, exit 1); a retired key's signature does not count. A rotation
  is learnt from the operator with :func:`add_key`;
* ``old`` is exactly the size it last cosigned (else: conflict, exit 1, with
  the size it holds: the client must send a proof from that size);
* the new size is not smaller, and the proof shows the new tree extends the
  old one (else: refused, exit 1: a fork or a rollback).

It then records the new checkpoint and returns one cosignature line. The
state file is replaced atomically under an exclusive lock, so a crash never
leaves it half-written and two requests never race.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import time
from contextlib import contextmanager
from typing import Sequence

from ledger.tlog import merkle
from ledger.tlog.proof import verify_consistency
from ledger.format import note
from ledger.format.consistency import ConsistencyProof, parse_consistency
from ledger.format.receipt import Receipt, parse_receipts
from ledger.errors import FundledgerError, InputError, VerificationError
from ledger.ops.keys import check_key_name, create_key_file, load_key_file, write_public

MAX_STATE_BYTES = 16 << 20


class WitnessConflict(VerificationError):
    """The request's old size is not the witness's (tlog-witness: 409)."""


def init_witness(key_path: str, state_path: str, name: str, vkey_path: str | None = None) -> note.Signer:
    """A new witness key (0600), an empty state file and, given
    ``vkey_path``, a file with the witness's public key."""
    check_key_name(name, "witness name")
    for p in (state_path, vkey_path):
        if p is not None and os.path.exists(p):
            raise InputError(f"{p} already exists: refusing to overwrite it")
    signer = create_key_file(key_path, name, note.ALG_COSIGNATURE_V1)
    _write_state(state_path, {"logs": {}})
    if vkey_path is not None:
        write_public(vkey_path, signer.verifier().vkey())
    return signer


def _read_state(path: str) -> dict:
    """The witness state in ``path``; InputError (exit 2) for anything that
    is plainly not one: missing, not a regular file (a FIFO would block),
    too large, not JSON, or a log whose fields are missing or of the wrong
    type. Fields it does not know are kept."""
    from ledger.verify.transport import read_small_file

    if not os.path.lexists(path):
        raise InputError(f"{path!r}: no witness state (run `fundledger witness init`)")
    data = read_small_file(path, MAX_STATE_BYTES, "a witness state")
    try:
        state = json.loads(data)
        if not isinstance(state, dict) or not isinstance(state.get("logs"), dict):
            raise ValueError("no logs")
        for origin, log in state["logs"].items():
            _check_log_state(origin, log)
    except (ValueError, FundledgerError) as e:
        raise InputError(f"{path!r}: not a witness state ({str(e)[:200]})") from None
    return state


def _check_log_state(origin: str, log: object) -> None:
    """One log's entry of a witness state: its key (named ``origin``), the
    size and root it last cosigned, that checkpoint or null."""
    if not isinstance(log, dict):
        raise ValueError(f"log {origin[:80]!r} is not a JSON object")
    vkey, size, root, cp = (log.get(k) for k in ("vkey", "size", "root", "checkpoint"))
    if not isinstance(vkey, str) or note.parse_vkey(vkey).name != origin:
        raise ValueError(f"log {origin[:80]!r}: vkey is not its key")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= merkle.MAX_TREE_SIZE:
        raise ValueError(f"log {origin[:80]!r}: size is not a tree size")
    if not isinstance(root, str) or len(base64.b64decode(root, validate=True)) != merkle.HASH_SIZE:
        raise ValueError(f"log {origin[:80]!r}: root is not a base64 hash")
    if cp is not None and not isinstance(cp, str):
        raise ValueError(f"log {origin[:80]!r}: checkpoint is not a note or null")


def _write_state(path: str, state: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextmanager
def _locked(path: str):
    try:
        lock = open(path + ".lock", "a")
    except OSError as e:  # e.g. no such directory: bad input, not a traceback
        raise InputError(f"{path!r}: {e.strerror}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def add_log(state_path: str, vkey: str) -> str:
    """Start witnessing the log whose key is ``vkey`` (its name is the
    origin). The first checkpoint will be accepted from size 0."""
    try:
        v = note.parse_vkey(vkey.strip())
    except FundledgerError as e:
        raise InputError(f"bad log key: {e}") from None
    with _locked(state_path):
        state = _read_state(state_path)
        if v.name in state["logs"]:
            raise InputError(f"already witnessing {v.name}")
        state["logs"][v.name] = {"vkey": v.vkey(), "size": 0, "root": base64.b64encode(merkle.EMPTY_ROOT).decode(),
                                 "checkpoint": None, "keys": [{"vkey": v.vkey(), "from_size": 0}]}
        _write_state(state_path, state)
    return v.name


def add_checkpoint(key_path: str, state_path: str, request: bytes, now: int | None = None) -> bytes:
    """Handle one add-checkpoint request; returns the cosignature line."""
    return _cosign(key_path, state_path, request, None, now)


def add_key(key_path: str, state_path: str, request: bytes, key_proofs: bytes, now: int | None = None) -> bytes:
    """Learn a rotation of a log's key, and cosign the checkpoint that shows it.

    An add-checkpoint request has no room for a key entry, so the operator
    hands it over here: ``request`` is an add-checkpoint request whose
    checkpoint the new key signed, ``key_proofs`` the receipt of the key
    entry (``fundledger prove <seq>``: tlog-proof@v1 blocks against that same
    checkpoint). The key entry must lie past the size this witness cosigned
    and be signed by the key in force there and by the new key; from then on
    the new key is in force and the retired one signs nothing it accepts."""
    return _cosign(key_path, state_path, request, key_proofs, now)


def _parse_request(request: bytes) -> tuple[ConsistencyProof, bytes, note.Checkpoint]:
    try:
        req = parse_consistency(request)
        text, _sigs = note.split_note(req.checkpoint)
        return req, text, note.parse_checkpoint(text)
    except FundledgerError as e:
        raise InputError(f"bad add-checkpoint request: {e}") from None


def _parse_key_proofs(data: bytes, text: bytes) -> list[Receipt]:

    try:
        receipts = parse_receipts(data)
        same = note.split_note(receipts[0].checkpoint)[0] == text
    except FundledgerError as e:
        raise InputError(f"bad key proof: {e}") from None
    if not same:
        raise InputError("the key proof is not against the request's checkpoint")
    by_seq: dict[int, Receipt] = {}
    for r in receipts:  # `prove <seq>` of a key entry holds it twice
        if by_seq.setdefault(r.leaf_index, r).extra != r.extra:
            raise InputError(f"bad key proof: two entries at seq {r.leaf_index}")
    return [by_seq[i] for i in sorted(by_seq)]


def _log_keys(log: dict):
    """The log's key history as this witness knows it (a state written
    before rotations were followed holds the first key only)."""
    from ledger.verify.reference import KeyHistory

    try:
        rows = log.get("keys") or [{"vkey": log["vkey"], "from_size": 0}]
        first, *later = [(int(r["from_size"]), note.parse_vkey(r["vkey"])) for r in rows]
    except (KeyError, TypeError, ValueError, FundledgerError) as e:
        raise InputError(f"witness state: bad key history for the log ({e})") from None
    return KeyHistory(first[1], later)


def _cosign(key_path: str, state_path: str, request: bytes, key_proofs: bytes | None, now: int | None) -> bytes:
    signer = load_key_file(key_path)
    if signer.alg != note.ALG_COSIGNATURE_V1:
        raise InputError(f"{key_path} is not a cosignature/v1 witness key")
    req, text, cp = _parse_request(request)
    receipts = None if key_proofs is None else _parse_key_proofs(key_proofs, text)
    with _locked(state_path):
        state = _read_state(state_path)
        log = state["logs"].get(cp.origin)
        if log is None:
            raise InputError(f"unknown log {cp.origin!r} (add it with `fundledger witness add-log`)")
        keys = _log_keys(log)
        if receipts is not None:
            keys.follow(receipts, cp, first_new=log["size"])
        _check_log_signature(req.checkpoint, keys, cp.tree_size)
        if req.old_size != log["size"]:
            raise WitnessConflict(f"conflict: this witness holds size {log['size']}, the request proves from {req.old_size}")
        if cp.tree_size < log["size"]:
            raise VerificationError(f"refused: size {cp.tree_size} is older than the cosigned {log['size']}")
        old_root = base64.b64decode(log["root"])
        verify_consistency(log["size"], cp.tree_size, req.proof, old_root, cp.root_hash)
        line = note.cosign(text, signer, int(time.time()) if now is None else now)
        log.update(size=cp.tree_size, root=base64.b64encode(cp.root_hash).decode(), checkpoint=req.checkpoint.decode(),
                   keys=[{"vkey": v.vkey(), "from_size": start} for start, v in keys.keys])
        _write_state(state_path, state)
    return line


def _check_log_signature(checkpoint: bytes, keys, tree_size: int) -> None:
    """The checkpoint must be signed by the log key in force at its size."""
    try:
        keys.open_checkpoint(checkpoint, tree_size)
    except FundledgerError as e:
        raise VerificationError(
            f"checkpoint not signed by the log key in force at size {tree_size} ({e}); after a rotation"
            " of the log's key, give this witness the key entry with `fundledger witness add-key`"
        ) from None


# --- the ledger's side -----------------------------------------------------------


def check_cosignatures(checkpoint_note: bytes, lines: bytes, witnesses: Sequence[note.Verifier]) -> list[tuple[note.Verifier, int, bytes]]:
    """The cosignature lines in ``lines`` by known ``witnesses`` on the
    checkpoint's text, each verified: ``(witness, timestamp, line)``."""
    text, _ = note.split_note(checkpoint_note)
    try:
        sigs = note.parse_signature_lines(lines)
    except FundledgerError as e:
        raise InputError(f"bad cosignature lines: {e}") from None
    out = []
    known = {(w.name, w.key_id): w for w in witnesses}
    for s in sigs:
        w = known.get((s.name, s.key_id))
        if w is None:
            raise InputError(f"cosignature by an unknown witness {s.name}+{s.key_id.hex()}")
        out.append((w, note.verify_cosignature(text, s, w), s.line))
    return out
