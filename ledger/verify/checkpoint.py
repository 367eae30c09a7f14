"""Checkpoints and keys: the log's verifier key, a checkpoint signed by it,
the cosigners named on it, a trusted checkpoint given by the reader.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

from ledger.errors import FundledgerError, InputError, SignatureError, VerificationError
from ledger.format import note

if TYPE_CHECKING:
    from ledger.format.policy import Policy


MAX_CHECKPOINT_BYTES = 1 << 20


MAX_VKEY_BYTES = 4096


def load_vkey(value: str) -> note.Verifier:
    """A verifier key given inline or as the path of a file holding one."""
    text = value
    if os.path.isfile(value):
        with open(value, "rb") as f:
            text = f.read(MAX_VKEY_BYTES + 1).decode("utf-8", "replace")
    try:
        return note.parse_vkey(text.strip())
    except FundledgerError as e:
        raise InputError(f"bad verifier key: {e}") from None


def check_published_vkey(published: str | None, pinned: note.Verifier) -> None:
    """A source that publishes a first key other than the pinned one fails
    (exit 1): its readers would be told to trust another key. A source that
    publishes none is judged by the pinned key alone."""
    if published is None:
        return
    try:
        key = note.parse_vkey(published.strip())
    except FundledgerError as e:
        raise VerificationError(f"the source publishes a bad vkey ({e}), not the pinned {_key_label(pinned)}") from None
    if key.vkey() != pinned.vkey():
        raise VerificationError(f"the source publishes the vkey {_key_label(key)}, not the pinned {_key_label(pinned)}")


def _key_label(key: note.Verifier) -> str:
    return f"{key.name}+{key.key_id.hex()}"


def open_checkpoint(data: bytes, verifiers: Sequence[note.Verifier], what: str = "checkpoint") -> note.Checkpoint:
    """A checkpoint note signed by one of ``verifiers``, for their origin."""
    try:
        text, _ = note.open_note(data, verifiers, max_bytes=MAX_CHECKPOINT_BYTES)
        cp = note.parse_checkpoint(text)
    except VerificationError as e:
        raise VerificationError(f"{what}: {e.reason}") from None
    except FundledgerError as e:
        raise VerificationError(f"{what}: {e}") from None
    if cp.origin != verifiers[0].name:
        raise VerificationError(f"{what} is for origin {cp.origin!r}, not {verifiers[0].name!r}")
    return cp


def unverified_checkpoint(data: bytes, origin: str, what: str = "checkpoint") -> note.Checkpoint:
    """A checkpoint's fields, its signature NOT yet checked."""
    try:
        text, _ = note.split_note(data, MAX_CHECKPOINT_BYTES)
        cp = note.parse_checkpoint(text)
    except FundledgerError as e:
        raise VerificationError(f"{what}: {e}") from None
    if cp.origin != origin:
        raise VerificationError(f"{what} is for origin {cp.origin!r}, not {origin!r}")
    return cp


def unverified_cosigners(data: bytes, origin: str, verified: Sequence[str]) -> list[str]:
    """The names on a checkpoint's other signature lines: neither the log's
    own (named the origin, whichever key) nor a cosignature verified against
    a witness key the reader gave. Nobody checked them: never call them
    cosignatures."""
    names: list[str] = []
    for s in note.split_note(data, MAX_CHECKPOINT_BYTES)[1]:
        if s.name != origin and s.name not in verified and s.name not in names:
            names.append(s.name)
    return names


def has_line_by(data: bytes, keys: Sequence[note.Verifier]) -> bool:
    ids = {(k.name, k.key_id) for k in keys}
    return any((s.name, s.key_id) in ids for s in note.split_note(data, MAX_CHECKPOINT_BYTES)[1])


def signed_by_any(data: bytes, keys: Sequence[note.Verifier]) -> bool:
    try:
        note.open_note(data, keys, max_bytes=MAX_CHECKPOINT_BYTES)
    except FundledgerError:
        return False
    return True


def check_trusted_file(data: bytes, path: str, vkeys: Sequence[note.Verifier]) -> None:
    """Refuse a --trusted file that is plainly not a checkpoint of this log
    (exit 2): not a checkpoint note at all, or, when the log key is pinned
    with --vkey, one for another origin. A checkpoint of this log that the
    log does not extend, or that its key did not sign, fails verification
    later (exit 1); so does an origin other than that of a key the source
    itself published, since the source may be an impostor."""
    try:
        text, _ = note.split_note(data, MAX_CHECKPOINT_BYTES)
        cp = note.parse_checkpoint(text)
    except FundledgerError as e:
        raise InputError(f"{path!r}: not a trusted checkpoint ({e})") from None
    if vkeys and cp.origin != vkeys[0].name:
        raise InputError(f"{path!r}: a trusted checkpoint of the log {cp.origin[:80]!r}, not of {vkeys[0].name!r} (--vkey)")


# --- witnesses -------------------------------------------------------------------


def distinct_witnesses(keys: Sequence[note.Verifier]) -> list[note.Verifier]:
    """``keys``, refusing one given twice (inline and as a file, or under
    two names): a quorum counts witnesses, and one witness's cosignature
    must never count twice."""
    seen: set = set()
    for k in keys:
        if k.public_key in seen or (k.name, k.key_id) in seen:
            raise InputError(f"--witness {k.name}+{k.key_id.hex()} is given twice: each witness counts once")
        seen.update((k.public_key, (k.name, k.key_id)))
    return list(keys)


def require_cosignatures(checkpoint_note: bytes, witnesses: Sequence[note.Verifier], quorum: int | None) -> list[str]:
    """The names of the witnesses whose cosignature on the checkpoint
    verifies; VerificationError unless ``quorum`` of them (default: all)
    did. A key given twice, or a quorum above the number of keys, is bad
    usage (InputError)."""
    distinct = distinct_witnesses(witnesses)
    need = len(distinct) if quorum is None else quorum
    if need > len(distinct):
        raise InputError(f"--quorum {need} is more than the {len(distinct)} --witness keys given")
    good = count_cosignatures(checkpoint_note, distinct)
    if len(good) < need:
        raise VerificationError(f"the checkpoint has {len(good)} valid cosignatures of the named witnesses, {need} required")
    return good


def count_cosignatures(checkpoint_note: bytes, witnesses: Sequence[note.Verifier]) -> list[str]:
    """Names of the ``witnesses`` with a valid cosignature on the note. As
    for any signed note (:func:`ledger.format.note.open_note`), the first line by a
    named witness must verify, else SignatureError, whatever the quorum; a
    later line by the same witness is ignored. The caller gives each witness
    once (:func:`distinct_witnesses`)."""
    text, sigs = note.split_note(checkpoint_note)
    good = []
    for w in witnesses:
        for s in sigs:
            if (s.name, s.key_id) == (w.name, w.key_id):
                try:
                    note.verify_cosignature(text, s, w)
                except FundledgerError:
                    raise SignatureError(f"checkpoint: invalid cosignature by {s.name}+{s.key_id.hex()}") from None
                good.append(w.name)
                break
    return good


def load_policy(path: str) -> "Policy":
    """The c2sp.org/tlog-policy file at ``path`` (InputError if it is not one)."""
    from ledger.format.policy import MAX_POLICY_BYTES, parse_policy
    from ledger.verify.transport import read_small_file

    data = read_small_file(path, MAX_POLICY_BYTES, "a policy")
    try:
        return parse_policy(data)
    except FundledgerError as e:
        raise InputError(f"{path!r}: {e}") from None


def policy_cosigners(checkpoint_note: bytes, policy: "Policy") -> list[str]:
    """The key names of the policy's witnesses whose cosignature on the
    checkpoint verifies; VerificationError, naming what is missing, unless
    they meet the policy's quorum."""
    cosigned, names = set(), []
    for name, w in policy.witnesses.items():
        if count_cosignatures(checkpoint_note, [w.verifier]):
            cosigned.add(name)
            names.append(w.verifier.name)
    if not policy.satisfied(cosigned):
        raise VerificationError("the checkpoint does not meet the policy's quorum: "
                                + "; ".join(policy.unmet(cosigned)))
    return names


def check_policy_log(policy: "Policy", key: note.Verifier, tree_size: int) -> None:
    """The log key in force at ``tree_size`` (from the log's own key
    history: a policy cannot say which key signs which size) must be one of
    the policy's logs, when it lists any."""
    if policy.logs and not any((v.alg, v.public_key, v.name) == (key.alg, key.public_key, key.name)
                               for v, _ in policy.logs):
        raise VerificationError(f"the log key in force at size {tree_size} ({key.vkey()[:80]}) "
                                "is not among the policy's logs")
