"""A witness (c2sp.org/tlog-witness) for fundledger logs, and the ledger's
side of collecting cosignatures.

A witness keeps its own key, Ed25519 cosignature/v1 (type 0x04, the
default) or ML-DSA-44 subtree/v1 (type 0x06), and, for each log it
watches, the last checkpoint it cosigned and the log's key history (each
key with the first tree size it signs), in an SQLite state
(:mod:`ledger.ops.witness_state`). :func:`decide` is the one place that
decides what an add-checkpoint request gets; the CLI (`fundledger witness
add-checkpoint`, `add-key`) and the HTTP server (`fundledger witness
serve`) both call it, and map its refusals to exit codes and to HTTP status
codes (``http_status``). In the order tlog-witness checks them:

* a malformed request: 400 (InputError, exit 2), as is an old size above
  the checkpoint's size;
* a log it does not witness: 404 (:class:`UnknownLog`, exit 2);
* no signature by the log key in force at the checkpoint's size: 403
  (:class:`NotSigned`, exit 1); a retired key's signature does not count,
  signatures by keys it does not know are ignored. A rotation is learnt
  from the operator with :func:`add_key`;
* ``old`` is not exactly the size it last cosigned: 409
  (:class:`WitnessConflict`, exit 1, with the size it holds: the client
  retries with a proof from that size);
* the checkpoint is not consistent with the one it holds: 422
  (:class:`Inconsistent` or another ProofError, exit 1): a size-zero
  checkpoint whose root is not the empty tree's, a non-empty proof from
  size 0, the same size with another root, or a proof that does not
  verify: a fork or a rollback.

* for an audited log (an auditing witness, ``witness init --audit``), the
  new entries break a fund rule or a format-2 commitment: 422
  (:class:`ledger.ops.witness_audit.AuditFailed`, exit 1, with the seq), or
  they cannot be read from the log's tiles: 503 (``AuditUnavailable``).

It then records the new checkpoint by compare-and-swap and returns one
cosignature line only once that is committed (and then saves the audit
state, which so never runs ahead of what was cosigned).
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import replace
from typing import Sequence

from ledger.tlog import merkle
from ledger.tlog.proof import verify_consistency
from ledger.format import note
from ledger.format.consistency import ConsistencyProof, parse_consistency
from ledger.format.receipt import Receipt, parse_receipts
from ledger.errors import FundledgerError, InputError, ProofError, SignatureError, VerificationError
from ledger.ops import witness_audit, witness_state
from ledger.ops.keys import check_key_name, create_key_file, load_key_file, write_public
from ledger.ops.witness_state import WitnessStateError

MAX_STATE_BYTES = witness_state.MAX_JSON_STATE_BYTES


class UnknownLog(InputError):
    """The checkpoint's origin is not a log this witness watches (404)."""

    http_status = 404


class NotSigned(SignatureError):
    """No signature by the log key in force at the checkpoint's size (403)."""

    http_status = 403


class WitnessConflict(VerificationError):
    """The request's old size is not the witness's (409, with ``size``)."""

    http_status = 409

    def __init__(self, reason: str, size: int):
        super().__init__(reason)
        self.size = size


class Inconsistent(ProofError):
    """The checkpoint does not extend the one the witness holds (422)."""

    http_status = 422


def http_status(e: FundledgerError) -> int:
    """The tlog-witness status code of a refusal by :func:`decide`."""
    if isinstance(e, WitnessStateError):
        return 503  # the witness's own state: not the client's fault
    if hasattr(e, "http_status"):
        return e.http_status
    return 422 if isinstance(e, VerificationError) else 400


WITNESS_ALGORITHMS = {"ed25519": note.ALG_COSIGNATURE_V1, "ml-dsa-44": note.ALG_MLDSA44}
"""The witness key types `witness init --algorithm` makes, by name."""


def init_witness(key_path: str, state_path: str, name: str, vkey_path: str | None = None,
                 alg: int = note.ALG_COSIGNATURE_V1, audit: bool = False) -> note.Signer:
    """A new witness key (0600) of type ``alg`` (0x04 Ed25519, 0x06
    ML-DSA-44), an empty state and, given ``vkey_path``, a file with the
    witness's public key. With ``audit``, an auditing witness: its state
    records its key, and every log it watches is audited."""
    import os

    check_key_name(name, "witness name")
    if alg not in WITNESS_ALGORITHMS.values():
        raise InputError(f"a witness key is of type 0x04 (Ed25519) or 0x06 (ML-DSA-44), not {alg!r}")
    for p in (state_path, vkey_path):
        if p is not None and os.path.lexists(p):
            raise InputError(f"{p} already exists: refusing to overwrite it")
    if not os.path.isdir(os.path.dirname(os.path.abspath(state_path))):
        raise InputError(f"{state_path!r}: no such directory")
    signer = create_key_file(key_path, name, alg)
    witness_state.create(state_path, audit_key=signer.verifier().vkey() if audit else None)
    if vkey_path is not None:
        write_public(vkey_path, signer.verifier().vkey())
    return signer


def add_log(state_path: str, vkey: str, audit_url: str | None = None) -> str:
    """Start witnessing the log whose key is ``vkey`` (its name is the
    origin). The first checkpoint will be accepted from size 0. An auditing
    witness audits every log it watches (``audit_url``: where the log
    publishes its tiles); a plain witness audits none: one key, one
    statement (c2sp.org/tlog-cosignature, "Additional statements")."""
    try:
        v = note.parse_vkey(vkey.strip())
    except FundledgerError as e:
        raise InputError(f"bad log key: {e}") from None
    if audit_url is not None:
        audit_url = witness_audit.check_url(audit_url)
    with witness_state.opened(state_path) as conn:
        witness_state.all_logs(conn)  # the whole state is one before it is written to
        auditing = witness_state.audit_key(conn) is not None
        if auditing and audit_url is None:
            raise InputError("this is an auditing witness (`witness init --audit`): every log it cosigns is "
                             "audited; give --audit URL, where the log publishes its tiles")
        if not auditing and audit_url is not None:
            raise InputError("this witness cosigns plainly, so its key must not also vouch for audits (one key, "
                             "one statement): make an auditing witness with a key of its own, `fundledger witness "
                             "init --audit NAME --key audit.key --state audit.db`")
        witness_state.insert(conn, witness_state.new_log(v), audit_url)
    return v.name


def load_witness_key(key_path: str) -> note.Signer:
    signer = load_key_file(key_path)
    if signer.alg not in WITNESS_ALGORITHMS.values():
        raise InputError(f"{key_path} is not a witness key (cosignature/v1 or ML-DSA-44)")
    return signer


def add_checkpoint(key_path: str, state_path: str, request: bytes, now: int | None = None) -> bytes:
    """Handle one add-checkpoint request; returns the cosignature line."""
    return decide(load_witness_key(key_path), state_path, request, None, now)


def add_key(key_path: str, state_path: str, request: bytes, key_proofs: bytes, now: int | None = None) -> bytes:
    """Learn a rotation of a log's key, and cosign the checkpoint that shows it.

    An add-checkpoint request has no room for a key entry, so the operator
    hands it over here: ``request`` is an add-checkpoint request whose
    checkpoint the new key signed, ``key_proofs`` the receipt of the key
    entry (``fundledger prove <seq>``: tlog-proof@v1 blocks against that same
    checkpoint). The key entry must lie past the size this witness cosigned
    and be signed by the key in force there and by the new key; from then on
    the new key is in force and the retired one signs nothing it accepts."""
    return decide(load_witness_key(key_path), state_path, request, key_proofs, now)


def cosigned(state_path: str, origin: str) -> witness_state.LogState | None:
    """What this witness holds for ``origin`` (None: not witnessed)."""
    with witness_state.opened(state_path) as conn:
        return witness_state.get(conn, origin)


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


def _log_keys(log: witness_state.LogState):
    """The log's key history as this witness knows it."""
    from ledger.verify.reference import KeyHistory

    first, *later = [(start, note.parse_vkey(v)) for start, v in log.keys]
    return KeyHistory(first[1], later)


def decide(signer: note.Signer, state_path: str, request: bytes, key_proofs: bytes | None = None,
           now: int | None = None, deferred: list | None = None) -> bytes:
    """What an add-checkpoint request (and, for `add-key`, the key entry's
    proof) gets: the cosignature line, once the new state is committed, or
    one of the refusals of the module's docstring. An audited log's
    requests are decided one at a time, each audited before it is cosigned
    (:mod:`ledger.ops.witness_audit`: 422 for entries that break a rule).
    Given ``deferred`` (a list), what follows the commit (saving the audit
    state, then letting the log's next request in) is appended to it as one
    callable instead, for the server to run once the answer is sent."""
    req, text, cp = _parse_request(request)
    receipts = None if key_proofs is None else _parse_key_proofs(key_proofs, text)
    with witness_state.opened(state_path) as conn:
        own = witness_state.audit_key(conn)
        if own is not None and own != signer.verifier().vkey():
            raise WitnessStateError(f"{state_path!r} is the state of the auditing witness {own[:80]}: "
                                    "it cosigns with that key only")
        url = witness_state.audit_url(conn, cp.origin)
        if url is None:
            return _decide(conn, signer, req, text, cp, receipts, now)
        _checked(conn, req, cp, receipts)  # a refusal need not wait for another request's audit
        after = ExitStack()  # run in reverse: save the audit state, close it, release the lock
        after.enter_context(witness_audit.locked(state_path, cp.origin))
        try:
            line = _decide(conn, signer, req, text, cp, receipts, now, (state_path, url), after.callback)
        except BaseException:
            after.close()
            raise
    if deferred is None:
        after.close()
    else:
        deferred.append(after.close)
    return line


def _decide(conn, signer: note.Signer, req: ConsistencyProof, text: bytes, cp: note.Checkpoint,
            receipts: list[Receipt] | None, now: int | None, audit: tuple[str, str] | None = None,
            then=None) -> bytes:
    log, keys = _checked(conn, req, cp, receipts)
    # the audit last: only a signed, consistent checkpoint makes this witness read the log's tiles
    audited = None if audit is None else witness_audit.audit(audit[0], audit[1], log, req.checkpoint)
    if audited is not None:
        then(audited.close)
    line = note.cosign(text, signer, int(time.time()) if now is None else now)
    new = replace(log, size=cp.tree_size, root=cp.root_hash, checkpoint=req.checkpoint.decode(),
                  cosignature=line.decode(), keys=tuple((s, v.vkey()) for s, v in keys.keys))
    if not witness_state.swap(conn, log, new):
        now_held = witness_state.get(conn, cp.origin)
        size = now_held.size if now_held is not None else log.size
        raise WitnessConflict(f"conflict: another request moved this witness to size {size} meanwhile", size)
    if audited is not None:
        then(audited.save)  # after the commit: never ahead of what was cosigned (a crash leaves it behind)
    return line


def _checked(conn, req: ConsistencyProof, cp: note.Checkpoint, receipts: list[Receipt] | None):
    """The row held for the log and its key history, once the request
    passed every check but the audit (404, 403, 409, 422 otherwise)."""
    log = witness_state.get(conn, cp.origin)
    if log is None:
        raise UnknownLog(f"unknown log {cp.origin!r} (add it with `fundledger witness add-log`)")
    keys = _log_keys(log)
    if receipts is not None:
        keys.follow(receipts, cp, first_new=log.size)
    _check_log_signature(req.checkpoint, keys, cp.tree_size)
    if req.old_size != log.size:
        raise WitnessConflict(f"conflict: this witness holds size {log.size}, the request proves from"
                              f" {req.old_size}", log.size)
    _check_consistent(log, req, cp)
    return log, keys


def _check_consistent(log: witness_state.LogState, req: ConsistencyProof, cp: note.Checkpoint) -> None:
    """The checkpoint extends the one held (c2sp.org/tlog-witness as of
    C2SP/C2SP#280: every case is 422)."""
    if cp.tree_size == 0 and cp.root_hash != merkle.EMPTY_ROOT:
        raise Inconsistent("a checkpoint of size 0 must have the empty tree's root, SHA-256 of nothing")
    if req.old_size == 0 and req.proof:
        raise Inconsistent("a consistency proof from size 0 must be empty")
    if cp.tree_size == log.size and cp.root_hash != log.root:
        raise Inconsistent(f"refused: size {cp.tree_size} with another root than the one cosigned: a fork")
    try:
        verify_consistency(log.size, cp.tree_size, req.proof, log.root, cp.root_hash)
    except ProofError as e:
        raise Inconsistent(f"refused: {e}") from None


def _check_log_signature(checkpoint: bytes, keys, tree_size: int) -> None:
    """The checkpoint must be signed by the log key in force at its size."""
    try:
        keys.open_checkpoint(checkpoint, tree_size)
    except FundledgerError as e:
        raise NotSigned(
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
