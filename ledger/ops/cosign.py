"""The log's side of witnessing (c2sp.org/tlog-witness): send a signed
checkpoint to every witness of a c2sp.org/tlog-policy file, re-prove from
the size a witness holds when it answers 409, and keep the cosignatures
that verify under that witness's key.

Each witness is asked once, all of them side by side, each request bounded
in time (``timeout``) and in the bytes read back (``MAX_REPLY_BYTES``). A
witness that fails is reported with why; whether the cosignatures gathered
meet the policy's quorum is the caller's question (``Policy.satisfied``):
``fundledger checkpoint --policy`` publishes the checkpoint only then.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import httpx

from ledger.errors import FundledgerError
from ledger.format import note
from ledger.format.consistency import ConsistencyProof, format_consistency
from ledger.format.policy import Policy, Witness

MAX_REPLY_BYTES = 16 << 10  # a reply is a few cosignature lines
MAX_CONFLICTS = 2  # 409s followed before giving up on a witness
_SIZE = re.compile(rb"(0|[1-9][0-9]{0,18})\n")


@dataclass(frozen=True)
class Outcome:
    """What one witness of the policy answered."""

    name: str  # the witness's name in the policy
    cosignature: tuple[str, bytes, int, bytes] | None  # (key name, key id, timestamp, line)
    reason: str  # "cosigned" or why not
    old_size: int  # the size the last request proved from

    @property
    def ok(self) -> bool:
        return self.cosignature is not None


def _read_reply(response: httpx.Response, deadline: float) -> bytes:
    body = b""
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > MAX_REPLY_BYTES:
            raise ValueError(f"a reply of more than {MAX_REPLY_BYTES} bytes")
        if time.monotonic() > deadline:
            raise ValueError("the reply took longer than the timeout")
    return body


def _first_line(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip().split("\n", 1)[0]
    return text[:200] or "(no body)"


def _cosignature(witness: Witness, checkpoint: bytes, body: bytes) -> tuple[str, bytes, int, bytes]:
    """The one line in ``body`` by ``witness`` on ``checkpoint``, verified."""
    text, _ = note.split_note(checkpoint)
    sigs = note.parse_signature_lines(body)
    mine = [s for s in sigs if (s.name, s.key_id) == (witness.verifier.name, witness.verifier.key_id)]
    if len(mine) != 1:
        raise ValueError(f"the reply holds {len(mine)} cosignatures by this witness's key, not 1")
    timestamp = note.verify_cosignature(text, mine[0], witness.verifier)
    return witness.verifier.name, witness.verifier.key_id, timestamp, mine[0].line


def ask(client: httpx.Client, witness: Witness, checkpoint: bytes, old_size: int, proof: list[bytes],
        timeout: float) -> tuple[Outcome | None, int | None]:
    """One add-checkpoint request: ``(outcome, None)``, or ``(None, size)``
    when the witness answers 409 holding ``size`` (ask again from there)."""
    size = note.parse_signed_checkpoint(checkpoint).tree_size
    url = witness.url.rstrip("/") + "/add-checkpoint"

    def failed(reason: str) -> tuple[Outcome, None]:
        return Outcome(witness.name, None, reason, old_size), None

    try:
        body = format_consistency(ConsistencyProof(old_size, tuple(proof), checkpoint))
        with client.stream("POST", url, content=body) as r:
            reply = _read_reply(r, time.monotonic() + timeout)
        if r.status_code == 200:
            return Outcome(witness.name, _cosignature(witness, checkpoint, reply), "cosigned", old_size), None
    except (httpx.HTTPError, ValueError, FundledgerError) as e:
        return failed(f"{type(e).__name__}: {str(e)[:200]}")
    if r.status_code != 409:
        return failed(f"HTTP {r.status_code}: {_first_line(reply)}")
    if r.headers.get("content-type", "").split(";")[0].strip() != "text/x.tlog.size" or not _SIZE.fullmatch(reply):
        return failed(f"HTTP 409 without a size: {_first_line(reply)}")
    held = int(reply)
    if held > size:
        return failed(f"the witness holds size {held}, above this checkpoint's {size}: it saw a larger tree")
    if held == old_size:
        return failed(f"HTTP 409 naming the size proved from ({held})")
    return None, held


def collect(policy: Policy, checkpoint: bytes, old_sizes: dict[str, int], prove: Callable[[int], list[bytes]],
            timeout: float = 10.0) -> list[Outcome]:
    """Every witness of ``policy`` with a URL asked for ``checkpoint`` side
    by side (``old_sizes``: the size each is believed to hold, 0 if
    unknown), asked again from the size it names on a 409, at most
    ``MAX_CONFLICTS`` times; in the policy's order. ``prove(old)`` (the
    consistency proof from ``old``) runs on the calling thread only. A
    witness without a URL is reported, not asked."""
    witnesses = list(policy.witnesses.values())
    done = {w.name: Outcome(w.name, None, "no URL in the policy", 0) for w in witnesses if not w.url}
    todo = {w.name: old_sizes.get(w.name, 0) for w in witnesses if w.url}
    with httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=max(1, len(todo))),
                      follow_redirects=False) as client, \
            ThreadPoolExecutor(max_workers=max(1, min(16, len(todo)))) as pool:
        for _ in range(MAX_CONFLICTS + 1):
            proofs = {old: prove(old) for old in set(todo.values())}
            futures = {name: pool.submit(ask, client, policy.witnesses[name], checkpoint, old, proofs[old], timeout)
                       for name, old in todo.items()}
            again = {}
            for name, f in futures.items():
                outcome, held = f.result()
                if outcome is None:
                    again[name] = held
                else:
                    done[name] = outcome
            todo = again
            if not todo:
                break
    for name, old in todo.items():
        done[name] = Outcome(name, None, f"{MAX_CONFLICTS + 1} conflicts in a row (409)", old)
    return [done[w.name] for w in witnesses]


@dataclass(frozen=True)
class PolicyCheckpoint:
    """What ``fundledger checkpoint --policy`` did."""

    tree_size: int
    published: bool  # the quorum was met and the checkpoint is the published one
    new: bool  # a new checkpoint (not the published one cosigned again)
    outcomes: list[Outcome]
    unmet: list[str]  # why the quorum was not met (empty when it was)


def _held_sizes(store, policy: Policy) -> dict[str, int]:
    """The largest published checkpoint each witness cosigned (its likely
    size; a 409 corrects it)."""
    out = {}
    for name, w in policy.witnesses.items():
        row = store.conn.execute(
            "SELECT MAX(c.tree_size) FROM cosignatures s JOIN checkpoints c ON c.id = s.checkpoint_id "
            "WHERE s.name = ? AND s.key_id = ?", (w.verifier.name, w.verifier.key_id.hex())).fetchone()
        out[name] = row[0] or 0
    return out


def checkpoint_with_policy(store, signer: note.Signer, policy: Policy, anchor=None, timeout: float = 10.0,
                           export_dir: str | None = None, pq_signer: note.Signer | None = None) -> PolicyCheckpoint:
    """Sign a checkpoint at the current size as the pending one, publish
    its tiles to ``export_dir`` (if given; the site serves them from the
    database), ask every witness of ``policy``, and make it the published
    checkpoint, with the cosignatures, only if they meet the quorum. With
    nothing new since the published checkpoint, that one is sent again and
    the fresh cosignatures are attached to it."""
    from ledger.errors import InputError
    from ledger.tlog.proof import prove_consistency
    from ledger.verify.checkpoint import check_policy_log
    from publish import export as export_mod

    try:
        check_policy_log(policy, signer.verifier(), store.size())
    except FundledgerError as e:
        raise InputError(f"the policy does not name this log's key: {e}") from None
    size, signed, new = store.add_checkpoint([signer], anchor=anchor, publish=False)
    if new and export_dir is not None:
        export_mod.export_pending(store, export_dir)
    outcomes = collect(policy, signed, _held_sizes(store, policy),
                       lambda old: prove_consistency(size, old, store), timeout)
    cosigned = {o.name for o in outcomes if o.ok}
    if not policy.satisfied(cosigned):
        return PolicyCheckpoint(size, False, new, outcomes, policy.unmet(cosigned))
    lines = [o.cosignature for o in outcomes if o.ok]
    if new and pq_signer is not None:
        from ledger.ops.api import pq_cosignature

        lines.append(pq_cosignature(signed, pq_signer))
    if new:
        store.publish_checkpoint(signed, lines)
    else:
        cid = store.latest_checkpoint()[0]
        for name, key_id, ts, line in lines:
            store.add_cosignature(cid, name, key_id, ts, line)
    if export_dir is not None:
        export_mod.export(store, export_dir)
    return PolicyCheckpoint(size, True, new, outcomes, [])
