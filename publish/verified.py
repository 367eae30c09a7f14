"""What the site shows as verified: the result of running the verifier
itself, never the database's summary tables.

A background thread watches the ledger's latest checkpoint (one indexed
read, at most every ``poll_s`` seconds, never on a request). When it has
changed, it runs :func:`ledger.verify.run.verify` in a short-lived child process
(its own interpreter, at a lower CPU priority, so that pages stay fast
while it runs; the verifier uses every core for a large round), resuming from the :class:`ledger.verify.state.VerifierState` the last
round left: only the entries the new checkpoint adds are read. The result
is published as an immutable :class:`Snapshot`; the pages take every
balance, total and USD value from it, and mark what lies above its size as
not yet verified.

What the verifier reads: the entries' signed bytes, the checkpoint note
signed by the log key (without the cosignature rows, which the site checks
apart, against the witness keys it was given) and, on the first round, the
stored tree hashes the tiles are served from. Never the derived columns or
the ``contracts`` summary: those are convenience copies that anyone holding
the database file can edit.

A failed verification is sticky: the snapshot says "failed" with the
reason, shows no balance, and stays so until a new checkpoint verifies.
The state lives in this process's memory only; publish/ never writes.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Iterator

from ledger.format import note
from ledger.errors import FundledgerError, VerificationError
from ledger.rules.fund import amount_str
from ledger.verify.database import DbSource
from ledger.verify.run import verify
from ledger.verify.sources import Source

POLL_S = 2.0  # how often the thread looks for a new checkpoint
ROUND_TIMEOUT_S = 24 * 3600.0  # one verification round may take this long (a very large first round)
NICE = 10  # the child's CPU priority offset: pages first
ROOT = str(pathlib.Path(__file__).resolve().parent.parent)  # where the child imports publish and ledger from


@dataclass(frozen=True)
class Snapshot:
    """One verification's outcome, never changed once published.

    ``status``: ``pending`` (no round has finished yet), ``verified`` or
    ``failed``. ``tree_size``, ``root``, ``checkpoint`` (the log-signed
    note) and ``checkpoint_id`` describe the checkpoint verified;
    ``funds`` maps a symbol to its summary (``Fund.summary()`` plus
    ``registered_seq`` and ``last_movement``); ``keys`` are the log keys
    as ``(first seq they sign, Verifier)``. A failed snapshot carries no fund."""

    status: str = "pending"
    tree_size: int = 0
    root: bytes = b""
    checkpoint: bytes = b""
    checkpoint_id: int | None = None
    funds: dict = field(default_factory=dict)
    keys: tuple = ()
    reason: str | None = None
    failed_seq: int | None = None
    verified_at: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "verified"

    def key_at(self, seq: int):
        """The log key that signs entry ``seq`` (None before any round)."""
        key = None
        for start, v in self.keys:
            if start <= seq:
                key = v
        return key

    def total_usd(self) -> str | None:
        """The sum of the funds' USD values (exact cents), None if none has one."""
        cents = [int(f["balance_usd"].replace(".", "")) for f in self.funds.values() if f.get("balance_usd")]
        return amount_str(sum(cents), 2) if cents else None


# --- the child process: one round of the verifier ---------------------------------------------


class SignedSource(Source):
    """A verifier source over the ledger database that offers only what is
    signed or committed to: entries, the log-signed checkpoint note, the key
    and the stored tree hashes. It is not a ``DbSource``, so the verifier
    checks exactly what a reader of the tiles would, and keeps its state
    (the derived tables are the database's own business)."""

    def __init__(self, path: str):
        self.db = DbSource(path)
        self.description = f"database {path}"

    def vkey(self):
        return self.db.vkey()

    def checkpoint(self):
        row = self.db.store.latest_checkpoint()  # the note alone: cosignatures are checked apart
        return None if row is None else bytes(row[4])

    def checkpoint_id(self):
        row = self.db.store.latest_checkpoint()
        return None if row is None else row[0]

    def entries(self, tree_size: int, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        return self.db.entries(tree_size, start, end)

    def read_tile(self, level: int, index: int, width: int) -> bytes:
        return self.db.read_tile(level, index, width)

    def spec(self):
        return self.db.spec()

    def close(self):
        self.db.close()


def _entry_fields(data: bytes) -> dict:
    text, _ = note.split_note(bytes(data))
    return json.loads(text)


def _movements(src, report, start: int) -> dict:
    """The last liquidation of every fund that moved at or after ``start``,
    read from the very snapshot the verifier just checked."""
    out = {}
    for symbol, f in report.book.funds.items():
        if f.liquidations == 0 or f.last_seq < start:
            continue
        obj = _entry_fields(next(iter(src.entries(report.tree_size, f.last_seq, f.last_seq + 1))))
        out[symbol] = {k: obj.get(k) for k in ("seq", "time", "delta", "paid", "adl")}
    return out


def _child_main() -> None:
    """``python -m publish.verified``: one round, arguments pickled on stdin
    (from the site process that started it), the outcome pickled on stdout."""
    try:
        os.nice(NICE)
    except OSError:
        pass
    db_path, vkey, state = pickle.loads(sys.stdin.buffer.read())
    out = pickle.dumps(verify_round(db_path, vkey, state))
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()


def verify_round(db_path: str, vkey: str, state) -> dict:
    """One round, run in the child: verify the ledger at ``db_path`` against
    the log key ``vkey``, resuming from ``state`` (or from entry 0). Returns
    plain data: ``{"ok": True, ...}`` or ``{"ok": False, "reason", "seq",
    "alarm"}`` (``alarm``: the verification failed, as opposed to the file
    being unreadable)."""
    try:
        src = SignedSource(db_path)
    except FundledgerError as e:
        return {"ok": False, "reason": str(e), "seq": None, "alarm": False}
    try:
        cp_id = src.checkpoint_id()
        report = verify(src, [note.parse_vkey(vkey)], resume=state, keep_state=True)
        start = state.tree_size if state is not None else 0
        moves = _movements(src, report, start)
    except VerificationError as e:
        return {"ok": False, "reason": e.reason, "seq": e.seq, "alarm": True}
    except (FundledgerError, sqlite3.Error, OSError, ValueError, StopIteration) as e:
        return {"ok": False, "reason": f"could not read the ledger: {e}", "seq": None, "alarm": False}
    finally:
        src.close()
    funds = {}
    for symbol, f in report.book.funds.items():
        funds[symbol] = dict(f.summary(), registered_seq=f.contract.seq)
    st = report.state
    return {"ok": True, "tree_size": report.tree_size, "root": report.root, "checkpoint": st.checkpoint.encode(),
            "checkpoint_id": cp_id, "funds": funds, "movements": moves, "state": st, "keys": st.keys}


# --- the site's side ------------------------------------------------------------------------


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class SiteVerifier:
    """Keeps :attr:`snapshot` up to date with the ledger's latest checkpoint.

    ``start()`` runs the watch thread (a daemon); ``stop()`` ends it.
    ``refresh(timeout)`` asks for a check now and waits until the checkpoint
    in the database at call time has been verified (or failed): tests and
    embedders. ``snapshot`` is a plain attribute read: pages never wait."""

    def __init__(self, db_path: str, vkey: str, poll_s: float = POLL_S, round_timeout_s: float = ROUND_TIMEOUT_S):
        self.db_path = db_path
        self.vkey = vkey
        self.poll_s = poll_s
        self.round_timeout_s = round_timeout_s
        self.snapshot = Snapshot()
        self.last_error: str | None = None  # the latest round that could not read the file
        self._state = None
        self._seen: tuple | None = None  # the checkpoint (id, size, root, note) of the latest round
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self) -> "SiteVerifier":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="fundledger-site-verifier", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def refresh(self, timeout: float = 60.0) -> Snapshot:
        """Verify the checkpoint the database holds now, if not done yet;
        wait for it up to ``timeout`` seconds and return the snapshot."""
        want = self._latest()
        deadline = time.monotonic() + timeout
        self.start()
        with self._done:
            while self._seen != want and time.monotonic() < deadline:
                self._wake.set()
                self._done.wait(min(0.2, max(0.0, deadline - time.monotonic())))
        return self.snapshot

    def _latest(self) -> tuple | None:
        """The latest checkpoint's ``(id, tree_size, root, note)``: one
        indexed read. A note changed in place is a change too."""
        uri = "file:" + urllib.request.pathname2url(os.path.abspath(self.db_path)) + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=5)
            try:
                row = conn.execute(
                    "SELECT id, tree_size, root, note FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            return ("unreadable",)
        return None if row is None else (row[0], row[1], bytes(row[2]), bytes(row[3]))

    def _loop(self) -> None:
        while not self._stop.is_set():
            latest = self._latest()
            if latest != self._seen:
                self._round(latest)
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _round(self, latest: tuple | None) -> None:
        """Verify up to ``latest``. A round that could not read the file is
        tried again on the next poll; a verified or failed one is not."""
        if latest == ("unreadable",):
            return
        outcome = None if latest is None else self._run_child()
        with self._done:
            if outcome is not None and not outcome["ok"] and not outcome["alarm"]:
                self.last_error = outcome["reason"]
                return
            if outcome is not None:
                self._publish(outcome)
            self._seen = latest
            self._done.notify_all()

    def _run_child(self) -> dict:
        """Run :func:`verify_round` in a fresh ``python -m publish.verified``
        (no fork of this threaded server, no re-import of its main module);
        its arguments and result travel as pickles over its stdin and stdout."""
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
        try:
            p = subprocess.run([sys.executable, "-m", "publish.verified"], env=env, capture_output=True,
                               input=pickle.dumps((self.db_path, self.vkey, self._state)),
                               timeout=self.round_timeout_s)
            if p.returncode == 0:
                return pickle.loads(p.stdout)
            why = p.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit {p.returncode}"]
        except (OSError, subprocess.SubprocessError, pickle.UnpicklingError, EOFError) as e:
            why = [f"{type(e).__name__}: {e}"]
        return {"ok": False, "reason": f"the verifier did not finish: {why[0][:200]}", "seq": None, "alarm": False}

    def _publish(self, r: dict) -> None:
        """Turn a round's outcome into the new snapshot."""
        old = self.snapshot
        if not r["ok"]:
            self.snapshot = Snapshot("failed", old.tree_size, old.root, reason=r["reason"], failed_seq=r["seq"],
                                     verified_at=_now(), keys=old.keys)
            return
        self._state, self.last_error = r["state"], None
        funds = {}
        for symbol, f in r["funds"].items():
            prev = old.funds.get(symbol, {}).get("last_movement") if old.ok else None
            funds[symbol] = dict(f, last_movement=r["movements"].get(symbol, prev))
        keys = tuple((int(start), note.parse_vkey(v)) for start, v in r["keys"])
        self.snapshot = Snapshot("verified", r["tree_size"], r["root"], r["checkpoint"], r["checkpoint_id"],
                                 dict(sorted(funds.items())), keys, verified_at=_now())


if __name__ == "__main__":
    _child_main()
