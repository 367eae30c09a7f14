"""The witness's state: one SQLite file, one row per log, changed only by
compare-and-swap.

Each row holds a log's origin, its key history (JSON: each key with the
first tree size it signs), the size and root this witness last cosigned,
that checkpoint as it was submitted and this witness's cosignature line on
it. A cosignature is made from a row read without a lock and recorded with

    UPDATE log SET ... WHERE origin = ? AND size = ? AND root = ? AND keys = ?

inside ``BEGIN IMMEDIATE``: if another request (a server thread, a CLI
command, another process) moved the row in between, no row matches, the
request is a conflict and nothing is cosigned. So two requests from the
same size never both get a cosignature, and the size never goes back.
``synchronous = FULL`` with the rollback journal: a commit is on disk
before the cosignature is handed out, and the file alone is the state.

A state written by an earlier version (JSON, ``witness.json``) is migrated
on first use: under the lock file it was kept under (``<state>.lock``), its
logs are written to a new SQLite file beside it, which is fsynced and then
renamed over the JSON path (atomic: the path names the whole JSON state or
the whole SQLite one, never a mix); the JSON is kept as
``<state>.json-v1`` (a hard link, made before the rename).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import sqlite3
import stat
from contextlib import contextmanager
from dataclasses import dataclass

from ledger.tlog import merkle
from ledger.format import note
from ledger.errors import FundledgerError, InputError

SQLITE_MAGIC = b"SQLite format 3\x00"
FORMAT = "fundledger-witness-1"
FORMAT_AUDIT = "fundledger-witness-audit-1"  # an auditing witness's state: older versions refuse it
MAX_JSON_STATE_BYTES = 16 << 20
BUSY_TIMEOUT_S = 10.0
_SCHEMA = """
CREATE TABLE witness_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE log (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL CHECK (size >= 0),
    root TEXT NOT NULL,   -- base64 of the cosigned root (the empty tree's at first)
    keys TEXT NOT NULL,   -- JSON [{"vkey": ..., "from_size": ...}], the first key first
    checkpoint TEXT,      -- the cosigned checkpoint note as submitted, or NULL
    cosignature TEXT      -- this witness's cosignature line on it, or NULL
) STRICT;
"""
_AUDIT_SCHEMA = """
CREATE TABLE audit (
    origin TEXT PRIMARY KEY REFERENCES log (origin),
    url TEXT NOT NULL     -- where the log publishes its tiles and entry bundles
) STRICT;
"""


class WitnessStateError(InputError):
    """The state file is missing, not a witness state, or cannot be used
    (the CLI: exit 2; the server: 503, it is not the client's fault)."""


@dataclass(frozen=True)
class LogState:
    """One log as this witness holds it."""

    origin: str
    size: int
    root: bytes
    keys: tuple[tuple[int, str], ...]  # (from_size, vkey), the first key from 0
    checkpoint: str | None = None
    cosignature: str | None = None

    def keys_json(self) -> str:
        return json.dumps([{"vkey": v, "from_size": s} for s, v in self.keys], separators=(",", ":"))


def new_log(vkey: note.Verifier) -> LogState:
    return LogState(vkey.name, 0, merkle.EMPTY_ROOT, ((0, vkey.vkey()),))


# --- opening ---------------------------------------------------------------------------


def create(path: str, audit_key: str | None = None) -> None:
    """A new, empty state at ``path``; refuses to replace any file there.
    With ``audit_key`` (the witness's vkey), the state of an auditing
    witness: every log it watches is audited, and only that key cosigns."""
    if os.path.lexists(path):
        raise WitnessStateError(f"{path} already exists: refusing to overwrite it")
    _build(path, [], replace=False, audit_key=audit_key)


def _build(path: str, logs: list[LogState], replace: bool, audit_key: str | None = None) -> None:
    """Write a state holding ``logs`` to a temporary file, fsync it, and
    link it at ``path`` (which must not exist) or, for a migration, rename
    it over ``path``."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.executescript(_SCHEMA + (_AUDIT_SCHEMA if audit_key else ""))
            conn.execute("BEGIN")
            conn.execute("INSERT INTO witness_meta VALUES ('format', ?)", (FORMAT_AUDIT if audit_key else FORMAT,))
            if audit_key:
                conn.execute("INSERT INTO witness_meta VALUES ('audit_key', ?)", (audit_key,))
            for log in logs:
                _insert(conn, log)
            conn.execute("COMMIT")
        finally:
            conn.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        (os.replace if replace else os.link)(tmp, path)
        _fsync_dir(path)
    except OSError as e:
        raise WitnessStateError(f"{path!r}: cannot write the witness state ({e.strerror})") from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _head(path: str) -> bytes:
    """The first bytes of the regular file ``path`` (never blocks on a FIFO)."""
    if not os.path.lexists(path):
        raise WitnessStateError(f"{path!r}: no witness state (run `fundledger witness init`)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise WitnessStateError(f"{path!r}: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise WitnessStateError(f"{path!r}: not a regular file, so not a witness state")
        return os.read(fd, len(SQLITE_MAGIC))
    finally:
        os.close(fd)


class _Connection(sqlite3.Connection):
    path = ""  # named in errors


def connect(path: str) -> sqlite3.Connection:
    """The state at ``path``, open (migrating a JSON state first)."""
    if _head(path) != SQLITE_MAGIC:
        migrate(path)
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S,
                               check_same_thread=False, factory=_Connection)
        conn.path = path
    except sqlite3.Error as e:
        raise WitnessStateError(f"{path!r}: cannot open the witness state ({e})") from None
    try:
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA trusted_schema = OFF")
        row = conn.execute("SELECT value FROM witness_meta WHERE key = 'format'").fetchone()
        cols = [r[1] for r in conn.execute("PRAGMA table_info(log)")]
    except sqlite3.Error as e:
        conn.close()
        raise WitnessStateError(f"{path!r}: not a witness state ({str(e)[:200]})") from None
    if row not in ((FORMAT,), (FORMAT_AUDIT,)) or cols != ["origin", "size", "root", "keys", "checkpoint",
                                                             "cosignature"]:
        conn.close()
        raise WitnessStateError(f"{path!r}: not a witness state (no {FORMAT} tables)")
    return conn


# --- auditing ----------------------------------------------------------------------------


def audit_key(conn: sqlite3.Connection) -> str | None:
    """The vkey of the auditing witness whose state this is (None: a plain witness)."""
    try:
        row = conn.execute("SELECT value FROM witness_meta WHERE key = 'format'").fetchone()
        if row != (FORMAT_AUDIT,):
            return None
        key = conn.execute("SELECT value FROM witness_meta WHERE key = 'audit_key'").fetchone()
        conn.execute("SELECT origin, url FROM audit LIMIT 0")
    except sqlite3.Error as e:
        raise WitnessStateError(f"{getattr(conn, 'path', '')!r}: not an auditing witness's state ({e})") from None
    if key is None or not isinstance(key[0], str):
        raise WitnessStateError(f"{getattr(conn, 'path', '')!r}: an auditing witness's state without its key")
    return key[0]


def audit_url(conn: sqlite3.Connection, origin: str) -> str | None:
    """Where an audited log publishes its tiles (None: not audited)."""
    try:
        row = conn.execute("SELECT url FROM audit WHERE origin = ?", (origin,)).fetchone()
    except sqlite3.OperationalError:  # a plain witness's state has no audit table
        return None
    except sqlite3.Error as e:
        raise WitnessStateError(f"cannot read the witness state ({e})") from None
    return None if row is None else row[0]


def audit_urls(conn: sqlite3.Connection) -> dict[str, str]:
    try:
        return dict(conn.execute("SELECT origin, url FROM audit ORDER BY origin"))
    except sqlite3.OperationalError:
        return {}


@contextmanager
def opened(path: str):
    conn = connect(path)
    try:
        yield conn
    finally:
        conn.close()


# --- rows ------------------------------------------------------------------------------


def _insert(conn: sqlite3.Connection, log: LogState) -> None:
    conn.execute("INSERT INTO log VALUES (?, ?, ?, ?, ?, ?)",
                 (log.origin, log.size, base64.b64encode(log.root).decode(), log.keys_json(), log.checkpoint,
                  log.cosignature))


def insert(conn: sqlite3.Connection, log: LogState, audit_url: str | None = None) -> None:
    """Start witnessing ``log`` (audited, its tiles at ``audit_url``, in an
    auditing witness's state); InputError if it is witnessed already."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            _insert(conn, log)
            if audit_url is not None:
                conn.execute("INSERT INTO audit VALUES (?, ?)", (log.origin, audit_url))
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK")
            raise InputError(f"already witnessing {log.origin}") from None
        conn.execute("COMMIT")
    except sqlite3.Error as e:
        raise WitnessStateError(f"the witness state refused the write ({e})") from None


def get(conn: sqlite3.Connection, origin: str) -> LogState | None:
    try:
        row = conn.execute("SELECT * FROM log WHERE origin = ?", (origin,)).fetchone()
    except sqlite3.Error as e:
        raise WitnessStateError(f"cannot read the witness state ({e})") from None
    return None if row is None else _log_of_row(conn, row)


def all_logs(conn: sqlite3.Connection) -> list[LogState]:
    try:
        rows = conn.execute("SELECT * FROM log ORDER BY origin").fetchall()
    except sqlite3.Error as e:
        raise WitnessStateError(f"cannot read the witness state ({e})") from None
    return [_log_of_row(conn, r) for r in rows]


def _log_of_row(conn, row) -> LogState:
    origin, size, root, keys, cp, cos = row
    try:
        entries = json.loads(keys)
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"log {str(origin)[:80]!r}: no keys")
        log = {"vkey": entries[0].get("vkey") if isinstance(entries[0], dict) else None,
               "size": size, "root": root, "checkpoint": cp, "keys": entries}
        check_log(origin, log)
        if cos is not None and not isinstance(cos, str):
            raise ValueError("cosignature is not a line or null")
        return LogState(origin, size, base64.b64decode(root), _key_rows(entries), cp, cos)
    except (ValueError, TypeError, AttributeError, FundledgerError) as e:
        raise WitnessStateError(f"{getattr(conn, 'path', '')!r}: not a witness state ({str(e)[:200]})") from None


def _key_rows(entries: list) -> tuple[tuple[int, str], ...]:
    out = []
    for r in entries:
        s, v = r["from_size"], r["vkey"]
        if not isinstance(s, int) or isinstance(s, bool) or s < 0 or not isinstance(v, str):
            raise ValueError("bad key history")
        note.parse_vkey(v)  # the first key's name is checked against the origin by check_log
        out.append((s, v))
    if out[0][0] != 0 or any(a[0] >= b[0] for a, b in zip(out, out[1:])):
        raise ValueError("bad key history")
    return tuple(out)


def swap(conn: sqlite3.Connection, old: LogState, new: LogState) -> bool:
    """Replace ``old`` by ``new`` if the row is still ``old`` (origin, size,
    root, keys); True once committed (synchronous=FULL: on disk), False
    if the row moved meanwhile (nothing written)."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        cur = conn.execute(
            "UPDATE log SET size = ?, root = ?, keys = ?, checkpoint = ?, cosignature = ?"
            " WHERE origin = ? AND size = ? AND root = ? AND keys = ?",
            (new.size, base64.b64encode(new.root).decode(), new.keys_json(), new.checkpoint, new.cosignature,
             old.origin, old.size, base64.b64encode(old.root).decode(), old.keys_json()))
        if cur.rowcount != 1:
            conn.execute("ROLLBACK")
            return False
        conn.execute("COMMIT")
        return True
    except sqlite3.Error as e:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise WitnessStateError(f"the witness state refused the write ({e})") from None


# --- the JSON state of earlier versions ---------------------------------------------------


def check_log(origin: str, log: object) -> None:
    """One log's entry of a JSON state: its key (named ``origin``), the
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


def read_json_state(path: str) -> list[LogState]:
    """The logs of a JSON state; WitnessStateError for anything that is
    plainly not one (too large, not JSON, a log of the wrong shape)."""
    from ledger.verify.transport import read_small_file

    try:
        data = read_small_file(path, MAX_JSON_STATE_BYTES, "a witness state")
    except InputError as e:
        raise WitnessStateError(str(e)) from None
    try:
        state = json.loads(data)
        if not isinstance(state, dict) or not isinstance(state.get("logs"), dict):
            raise ValueError("no logs")
        out = []
        for origin, log in state["logs"].items():
            check_log(origin, log)
            keys = log.get("keys") or [{"vkey": log["vkey"], "from_size": 0}]
            out.append(LogState(origin, log["size"], base64.b64decode(log["root"]), _key_rows(keys),
                                log["checkpoint"]))
    except (ValueError, TypeError, KeyError, AttributeError, FundledgerError) as e:
        raise WitnessStateError(f"{path!r}: not a witness state ({str(e)[:200]})") from None
    return out


@contextmanager
def _locked(path: str):
    try:
        lock = open(path + ".lock", "a")
    except OSError as e:  # e.g. no such directory: bad input, not a traceback
        raise WitnessStateError(f"{path!r}: {e.strerror}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def migrate(path: str) -> None:
    """Replace the JSON state at ``path`` by the same logs in SQLite (see
    the module's docstring); nothing is changed if it is not a state."""
    with _locked(path):
        if _head(path) == SQLITE_MAGIC:  # migrated meanwhile
            return
        logs = read_json_state(path)
        backup = f"{path}.json-v1"
        try:
            if os.path.lexists(backup):
                os.unlink(backup)
            os.link(path, backup)
        except OSError as e:
            raise WitnessStateError(f"{path!r}: cannot keep the JSON state as {backup} ({e.strerror})") from None
        _build(path, logs, replace=True)
