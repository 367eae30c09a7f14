"""``fundledger monitor``: follow a log (a URL or an export directory) at a
cost proportional to what is new, keep every checkpoint seen, and raise
events (JSON lines on standard output, and a hook) when something is wrong
or worth knowing. It needs no database of the log: its state is a small
SQLite file of its own (``--state FILE``), with the verifier's incremental
state beside it (``FILE.verify``, ``fundledger verify --state``).

A pass: fetch the checkpoint; verify every new entry from the saved state
(the full rules, ledger/verify); read the new entries once more, checked
against the verified root from the saved tree edge (so events come only
from verified bytes); compare with the checkpoints seen before and with
what witnesses' monitoring endpoints report; record the checkpoint and the
events in one transaction; then deliver them. Each event is delivered at
least once: recorded first, marked delivered only once the hook exited 0,
so undelivered ones are delivered again by the next pass.

Alarms (exit 1): ``verification_failed``, ``rollback``, ``fork``,
``split_view``, ``stale``, ``hook_failed``. Notices (exit 0): ``new_contract``,
``key_rotation``, ``adl`` (a shortfall the fund could not cover), ``large_payout``.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from urllib.parse import quote

import httpx

from ledger.errors import FundledgerError, InputError, VerificationError
from ledger.format import note
from ledger.tlog import merkle

ALARMS = frozenset({"verification_failed", "rollback", "fork", "split_view", "stale", "hook_failed"})
HOOK_TIMEOUT_S = 60
MAX_WITNESS_REPLY = 64 << 10
SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY, tree_size INTEGER NOT NULL, root BLOB NOT NULL, note BLOB NOT NULL,
    seen_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, body TEXT NOT NULL, delivered INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Options:
    source: str
    state_path: str
    vkey: str | None = None
    witness_urls: tuple[str, ...] = ()
    max_age_s: int | None = None
    payout_threshold: Decimal | None = None
    hook: str | None = None


def open_state(path: str) -> sqlite3.Connection:
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise InputError(f"{path!r}: no such directory for the monitor's state")
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=10)
        conn.executescript(SCHEMA)
    except sqlite3.DatabaseError as e:
        raise InputError(f"{path!r} is not a monitor state: {e}") from None
    return conn


def parse_threshold(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InputError(f"--payout-threshold {text[:40]!r} is not a decimal amount") from None
    if not value.is_finite() or value < 0:
        raise InputError("--payout-threshold must be a non-negative amount")
    return value


def _event(kind: str, **fields) -> dict:
    return {"event": kind, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}


def _last_seen(conn) -> tuple[int, bytes, int] | None:
    """(size, root, when first seen) of the largest checkpoint seen."""
    row = conn.execute("SELECT tree_size, root, seen_at FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()
    return None if row is None else (row[0], bytes(row[1]), row[2])


def _seen_root(conn, size: int) -> bytes | None:
    row = conn.execute("SELECT root FROM checkpoints WHERE tree_size = ? ORDER BY id LIMIT 1", (size,)).fetchone()
    return None if row is None else bytes(row[0])


def _old_edge(verify_state: str):
    """The verified tree's right edge at the saved size (None: first pass)."""
    from ledger.verify.state import VerifierState

    if not os.path.exists(verify_state):
        return None
    s = VerifierState.load(verify_state)
    return merkle.TreeBuilder(s.tree_size, [base64.b64decode(h) for h in s.edge])


def _verify(opts: Options, verify_state: str):
    from ledger.verify.run import verify_path

    return verify_path(opts.source, opts.vkey, state_path=verify_state)


def _classify_failure(conn, cp: note.Checkpoint | None, e: VerificationError) -> dict:
    """A failed verification: a rollback or fork against what was seen
    before when the checkpoint says so, else the verifier's reason."""
    last = _last_seen(conn)
    if cp is not None and last is not None:
        if cp.tree_size < last[0]:
            return _event("rollback", tree_size=cp.tree_size, seen_tree_size=last[0], reason=str(e))
        seen = _seen_root(conn, cp.tree_size)
        if seen is not None and seen != cp.root_hash:
            return _event("fork", tree_size=cp.tree_size, root=_b64(cp.root_hash), seen_root=_b64(seen),
                          reason=str(e))
    return _event("verification_failed", seq=e.seq, reason=str(e))


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def _fetch_checkpoint(source: str) -> tuple[bytes | None, note.Checkpoint | None]:
    from ledger.verify.sources import open_source

    src = open_source(source)
    try:
        data = src.checkpoint()
    finally:
        src.close()
    try:
        return data, note.parse_signed_checkpoint(data) if data else None
    except FundledgerError:
        return data, None


def _entry_events(opts: Options, old, size: int, root: bytes) -> list[dict]:
    """Events from the entries ``old.size .. size - 1``, read again and held
    to the verified ``root`` (a source that serves other bytes the second
    time shows two views: ``split_view``)."""
    from ledger.format.entry import parse_entry_text
    from ledger.verify.sources import open_source

    tree = merkle.TreeBuilder() if old is None else old
    start = tree.size
    src, out = open_source(opts.source), []
    try:
        for seq, data in enumerate(src.entries(size, start, size), start):
            tree.append(merkle.leaf_hash(data))
            out.extend(_events_of(seq, parse_entry_text(note.split_note(data)[0]), opts.payout_threshold))
    finally:
        src.close()
    if tree.root() != root:
        return [_event("split_view", reason=f"the entries {start}..{size - 1} read a second time do not give "
                                           "the root just verified: the source serves two versions")]
    return out


def _events_of(seq: int, e: dict, threshold: Decimal | None) -> list[dict]:
    kind = e.get("kind")
    if kind == "contract":
        return [_event("new_contract", seq=seq, contract=e["contract"], currency=e["currency"])]
    if kind == "key":
        return [_event("key_rotation", seq=seq, vkey=e["vkey"])]
    if kind != "liquidation":
        return []
    out = []
    if Decimal(e["adl"]) > 0:
        out.append(_event("adl", seq=seq, contract=e["contract"], liquidation=e["id"], adl=e["adl"],
                          paid=e["paid"], balance=e["balance"]))
    if threshold is not None and Decimal(e["paid"]) > threshold:
        out.append(_event("large_payout", seq=seq, contract=e["contract"], liquidation=e["id"], paid=e["paid"],
                          threshold=str(threshold), balance=e["balance"]))
    return out


def _witness_events(conn, opts: Options, origin: str) -> list[dict]:
    """What each witness's monitoring endpoint (``GET <url>checkpoint/<origin>``)
    says it cosigned, against the checkpoints seen here: another root at a
    size seen is a split view (shown to this witness, not to this monitor)."""
    out = []
    for url in opts.witness_urls:
        target = url.rstrip("/") + "/checkpoint/" + quote(origin, safe="")
        try:
            with httpx.stream("GET", target, timeout=10) as r:
                body = b"".join(r.iter_bytes())[:MAX_WITNESS_REPLY + 1]
            if r.status_code != 200 or len(body) > MAX_WITNESS_REPLY:
                raise ValueError(f"HTTP {r.status_code}")
            cp = note.parse_signed_checkpoint(body)
        except (httpx.HTTPError, ValueError, FundledgerError) as e:
            out.append(_event("witness_unreachable", witness=url, reason=str(e)[:200]))
            continue
        seen = _seen_root(conn, cp.tree_size)
        if cp.origin == origin and seen is not None and seen != cp.root_hash:
            out.append(_event("split_view", witness=url, tree_size=cp.tree_size, root=_b64(cp.root_hash),
                              seen_root=_b64(seen), reason="the witness cosigned another tree of this size"))
    return out


def _stale(conn, opts: Options, now: int) -> list[dict]:
    """``stale`` once per checkpoint that stayed the newest for longer than ``--max-age``."""
    last = _last_seen(conn)
    if opts.max_age_s is None or last is None or now - last[2] <= opts.max_age_s:
        return []
    done = conn.execute("SELECT value FROM meta WHERE key = 'stale_for'").fetchone()
    if done is not None and int(done[0]) == last[0]:
        return []
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('stale_for', ?)", (str(last[0]),))
    return [_event("stale", tree_size=last[0], age_s=now - last[2], max_age_s=opts.max_age_s)]


def _deliver(conn, hook: str | None, emit) -> list[dict]:
    """Every undelivered event, oldest first: printed, given to the hook (its
    JSON on the hook's stdin, its kind in FUNDLEDGER_EVENT), then marked."""
    failed = []
    for eid, kind, body in conn.execute("SELECT id, kind, body FROM events WHERE delivered = 0 ORDER BY id").fetchall():
        emit(body)
        if hook is not None:
            env = dict(os.environ, FUNDLEDGER_EVENT=kind)
            try:
                r = subprocess.run(shlex.split(hook), input=body.encode() + b"\n", env=env,
                                   stdout=subprocess.DEVNULL, timeout=HOOK_TIMEOUT_S)
                ok = r.returncode == 0
            except (OSError, subprocess.TimeoutExpired) as e:
                ok, r = False, e
            if not ok:
                failed.append(_event("hook_failed", event_id=eid, of=kind, reason=str(r)[:200]))
                break  # keep the order: the rest wait for the next pass
        conn.execute("UPDATE events SET delivered = 1 WHERE id = ?", (eid,))
    return failed


def one_pass(opts: Options, emit=print, now: int | None = None) -> list[dict]:
    """One pass over the log; the events it raised (every one also emitted)."""
    now = int(time.time()) if now is None else now
    conn = open_state(opts.state_path)
    try:
        failed = _deliver(conn, opts.hook, emit)  # what an earlier pass could not deliver
        if failed:
            for e in failed:
                emit(json.dumps(e))
            return failed
        events = _check(conn, opts, now)
        conn.execute("BEGIN IMMEDIATE")
        for e in events:
            conn.execute("INSERT INTO events (kind, body) VALUES (?, ?)", (e["event"], json.dumps(e)))
        conn.execute("COMMIT")
        failed = _deliver(conn, opts.hook, emit)
        for e in failed:
            emit(json.dumps(e))
        return events + failed
    finally:
        conn.close()


def _check(conn, opts: Options, now: int) -> list[dict]:
    verify_state = opts.state_path + ".verify"
    data, cp = _fetch_checkpoint(opts.source)
    old = _old_edge(verify_state)
    try:
        report = _verify(opts, verify_state)
    except VerificationError as e:
        return [_classify_failure(conn, cp, e)] + _stale(conn, opts, now)
    events = []
    if old is None or report.tree_size > old.size:
        events += _entry_events(opts, old, report.tree_size, report.root)
    last = _last_seen(conn)
    if last is None or (report.tree_size, report.root) != last[:2]:
        signed = data if cp is not None and (cp.tree_size, cp.root_hash) == (report.tree_size, report.root) else b""
        conn.execute("INSERT INTO checkpoints (tree_size, root, note, seen_at) VALUES (?, ?, ?, ?)",
                     (report.tree_size, report.root, signed, now))
    origin = cp.origin if cp is not None else ""
    return events + _witness_events(conn, opts, origin) + _stale(conn, opts, now)
