"""Hostile sources end in one line and exit 1, in bounded time and memory.

Every case runs the real ``fundledger verify`` process and asserts its exit
code and that stderr is exactly one line with no traceback. A generous
subprocess timeout is the hang detector; the bound on wall time is only
the deadline mechanism itself (--request-timeout, --stall-timeout), set
short here so the slow servers cost about a second each.

* malformed HTTP from a raw socket server on loopback: a bad status line,
  bad chunking, 100,000 headers, one 10 MB header, a compressed body, a
  server that drips a byte every 0.2 s (request deadline 1 s), one that
  stalls after its headers (stall deadline 0.5 s), one that hangs up;
* a directory and a FIFO in place of ``checkpoint``, ``vkey``, a hash tile
  and an entry bundle of an export (the FIFO must not block the open), and
  a FIFO as ``--trusted``;
* checkpoints claiming 2**50, 2**63 - 1, 2**63 and 2**64 entries, in an
  export and in a database: nothing is allocated for the claimed size
  before the signature is checked (max RSS of the process, under an
  address-space limit so that a regression fails instead of swapping);
* a tampered database: retyped columns, missing rows, each table dropped,
  each trigger dropped or replaced.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from ledger.errors import VerificationError
from ledger.ops import api
from ledger.verify import run as verify
from ledger.verify.sources import UrlSource, source_from_spec
from publish.export import export

from conftest import ORIGIN

HANG_S = 60  # the hang detector: far above every deadline used here
ADDRESS_SPACE = 3 << 30  # the child's RLIMIT_AS: a claimed size that is allocated fails, never swaps


def fundledger(*args, timeout=HANG_S):
    """The real ``fundledger`` process: (exit code, stdout, stderr, max RSS in KiB)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen([sys.executable, "-m", "ledger.cli", *map(str, args)], stdout=out, stderr=err,
                             preexec_fn=limit)
        end = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > end:
                p.kill()
                os.wait4(p.pid, 0)
                p.returncode = -9
                pytest.fail(f"fundledger {' '.join(map(str, args))} hung for {timeout} s")
            time.sleep(0.02)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return p.returncode, out.read().decode(), err.read().decode(), usage.ru_maxrss


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A ledger of 21 entries with a checkpoint, and its export."""
    d = tmp_path_factory.mktemp("harden")
    db, key = str(d / "fund.db"), str(d / "fund.key")
    store, signer = api.init_ledger(db, key, ORIGIN)
    store.append([{"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8}], [signer])
    store.append([{"kind": "liquidation", "contract": "XBTUSDTM", "id": f"L-{i}", "side": "long", "qty": "1",
                   "bankruptcy_price": "39000", "fill_price": "39100"} for i in range(20)], [signer])
    store.add_checkpoint([signer])
    export(store, str(d / "export"))
    vkey = store.vkey
    store.close()
    return d, db, d / "export", vkey


# --- malformed HTTP, from a raw socket server ------------------------------------------------------


class RawServer:
    """Answers every connection on 127.0.0.1 with ``script(conn)`` after
    reading the request head. Bounded: the accept loop polls a stop flag."""

    def __init__(self, script):
        self.script = script
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/"

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        conn.settimeout(5)
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                part = conn.recv(4096)
                if not part:
                    return
                head += part
            self.script(conn, self.stop)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


def send(data: bytes):
    def script(conn, stop):
        conn.sendall(data)
    return script


def drip(conn, stop):
    """A valid answer, one byte every 0.2 s, for at most 60 s."""
    body = b"x" * 1000
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + body
    for i in range(min(len(data), 300)):
        if stop.wait(0.2):
            return
        conn.sendall(data[i : i + 1])


def stall(conn, stop):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc")
    stop.wait(30)


def hang_up(conn, stop):
    pass  # closes without a byte


OK_HEAD = b"HTTP/1.1 200 OK\r\n"
HTTP_CASES = {
    "a bad status line": (send(b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n"), "malformed HTTP answer"),
    "not HTTP at all": (send(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"), "malformed HTTP answer"),
    "bad chunking": (send(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
                     "malformed HTTP answer"),
    "a chunk longer than it says": (send(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\nabcdef\r\n0\r\n\r\n"),
                                    "malformed HTTP answer"),
    "100,000 headers": (send(OK_HEAD + b"X-A: b\r\n" * 100_000 + b"Content-Length: 0\r\n\r\n"),
                        "malformed HTTP answer"),
    "one 10 MB header": (send(OK_HEAD + b"X-A: " + b"a" * (10 << 20) + b"\r\n\r\n"), "malformed HTTP answer"),
    "a body shorter than its length": (send(OK_HEAD + b"Content-Length: 500\r\n\r\nabc"), "malformed HTTP answer"),
    "a compressed body": (send(OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc"),
                          "compressed"),
    "a hang-up before any answer": (hang_up, "malformed HTTP answer"),
    "a byte every 0.2 s": (drip, "request deadline of 1 s (--request-timeout)"),
    "a stall after the headers": (stall, "nothing received for 0.5 s (--stall-timeout)"),
}


@pytest.mark.parametrize("case", list(HTTP_CASES))
def test_malformed_or_slow_http_is_one_line_and_exit_1(world, case):
    script, reason = HTTP_CASES[case]
    srv = RawServer(script)
    try:
        # only the deadline under test is short (a loaded machine must not trip the other)
        request, stall_s = {"a byte every 0.2 s": ("1", "10"), "a stall after the headers": ("30", "0.5")}.get(
            case, ("30", "10"))
        code, out, err, _ = fundledger("verify", srv.url, "--vkey", world[3], "--workers", "1",
                                       "--request-timeout", request, "--stall-timeout", stall_s)
    finally:
        srv.close()
    line = one_line(err)
    # the first file read is the published vkey (compared with the pinned one)
    assert code == 1 and reason in line and "vkey" in line, line
    assert out == ""


def test_the_deadlines_come_from_the_environment_too(world):
    srv = RawServer(stall)
    try:
        env = dict(os.environ, FUNDLEDGER_STALL_TIMEOUT="0.3")
        p = subprocess.run([sys.executable, "-m", "ledger.cli", "verify", srv.url, "--vkey", world[3]],
                           env=env, capture_output=True, timeout=HANG_S)
    finally:
        srv.close()
    assert p.returncode == 1 and "nothing received for 0.3 s (--stall-timeout)" in one_line(p.stderr.decode())


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "x"])
def test_a_bad_deadline_is_bad_usage(world, value):
    code, _, err, _ = fundledger("verify", world[2], "--request-timeout", value)
    line = one_line(err)
    assert code == 2 and "--request-timeout" in line and "No such option" not in line, line


def test_a_dead_server_stays_bad_input():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    code, _, err, _ = fundledger("verify", f"http://127.0.0.1:{port}/", "--request-timeout", "2")
    assert code == 2 and "cannot connect" in one_line(err)


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999/", "https://", "http://h:x/"])
def test_a_url_that_is_not_one_is_bad_input(url):
    code, _, err, _ = fundledger("verify", url, "--request-timeout", "2")
    assert code == 2 and "not a URL" in one_line(err)


def test_a_worker_gets_the_deadlines_from_the_spec():
    from ledger.verify import transport

    src = UrlSource("http://127.0.0.1:9/x", transport.Deadlines(1.5, 0.25))
    again = source_from_spec(src.spec())
    assert isinstance(again, UrlSource) and again.deadlines == transport.Deadlines(1.5, 0.25)
    assert again.base == "http://127.0.0.1:9/x/"


def test_one_client_serves_every_request_of_a_run(world):
    """The honest export over HTTP, with deadlines: every file through one
    connection (keep-alive), and it verifies."""
    import http.server

    from ledger.verify import transport

    root = world[2]
    peers: set = set()

    class Handler(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            pass

        def handle_one_request(self):
            peers.add(self.client_address)
            super().handle_one_request()

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        r = verify.verify_path(f"http://127.0.0.1:{srv.server_address[1]}/", workers=1,
                               deadlines=transport.Deadlines(10, 5))
    finally:
        srv.shutdown()
        srv.server_close()
    assert r.tree_size == 21 and len(peers) == 1, peers


# --- a directory or a FIFO where a file should be ------------------------------------------------


FILES = ["checkpoint", "vkey", "tile/0/000.p/21", "tile/entries/000.p/21"]


@pytest.mark.parametrize("kind", ["directory", "FIFO"])
@pytest.mark.parametrize("name", FILES)
def test_a_directory_or_fifo_in_place_of_an_export_file(world, tmp_path, name, kind):
    exp = tmp_path / "export"
    shutil.copytree(world[2], exp)
    (exp / name).unlink()
    if kind == "directory":
        (exp / name).mkdir()
    else:
        os.mkfifo(exp / name)
    code, _, err, _ = fundledger("verify", exp, "--workers", "1")
    assert code == 1 and f"{name} is not a regular file" in one_line(err)


def test_a_fifo_as_the_trusted_checkpoint(world, tmp_path):
    os.mkfifo(tmp_path / "cp")
    code, _, err, _ = fundledger("verify", world[2], "--trusted", tmp_path / "cp")
    assert code == 2 and "not a regular file" in one_line(err)


# --- checkpoints that claim a huge log --------------------------------------------------------------


SIZES = [2**50, 2**63 - 1, 2**63, 2**64]


def _with_size(cp: bytes, size: int) -> bytes:
    lines = cp.split(b"\n")
    lines[1] = str(size).encode()
    return b"\n".join(lines)


@pytest.fixture(scope="module")
def baseline_rss(world):
    code, _, err, rss = fundledger("verify", world[2], "--workers", "1")
    assert code == 0, err
    return rss


@pytest.mark.parametrize("size", SIZES, ids=["2**50", "2**63-1", "2**63", "2**64"])
def test_a_huge_size_in_an_exported_checkpoint(world, tmp_path, baseline_rss, size):
    exp = tmp_path / "export"
    shutil.copytree(world[2], exp)
    (exp / "checkpoint").write_bytes(_with_size((exp / "checkpoint").read_bytes(), size))
    code, _, err, rss = fundledger("verify", exp)
    assert code == 1 and one_line(err).startswith("fundledger: checkpoint")
    assert rss - baseline_rss < 40 * 1024, f"max RSS {rss} KiB, a plain verify {baseline_rss} KiB"


@pytest.mark.parametrize("size", SIZES, ids=["2**50", "2**63-1", "2**63", "2**64"])
def test_a_huge_size_in_a_stored_checkpoint(world, tmp_path, baseline_rss, size):
    db = str(tmp_path / "fund.db")
    shutil.copyfile(world[1], db)
    with _rw(db) as c:
        (note,) = c.execute("SELECT note FROM checkpoints").fetchone()
        _without_trigger(c, "checkpoints_no_update", "UPDATE checkpoints SET note = ?", (_with_size(note, size),))
    code, _, err, rss = fundledger("verify", db)
    assert code == 1 and "checkpoint" in one_line(err)
    assert rss - baseline_rss < 40 * 1024, f"max RSS {rss} KiB, a plain verify {baseline_rss} KiB"


# --- a tampered database ------------------------------------------------------------------------------


class _rw:
    def __init__(self, db):
        self.conn = sqlite3.connect(db, isolation_level=None)

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc):
        self.conn.close()


def _without_trigger(c, name: str, sql: str, params=()) -> None:
    """Run ``sql`` with the trigger ``name`` dropped, then put it back as it was."""
    (create,) = c.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    c.execute(f"DROP TRIGGER {name}")
    c.execute(sql, params)
    c.execute(create)


def _recreate(c, table: str, column: str, cast: str) -> None:
    """The table made again with no declared types, ``column`` cast to
    ``cast``, its triggers put back."""
    triggers = [r[0] for r in c.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
                                        (table,))]
    cols = [r[1] for r in c.execute(f"PRAGMA table_info({table})")]
    c.execute(f"ALTER TABLE {table} RENAME TO old")
    c.execute(f"CREATE TABLE {table} ({', '.join(cols)})")
    sel = ", ".join(f"CAST({x} AS {cast})" if x == column else x for x in cols)
    c.execute(f"INSERT INTO {table} SELECT {sel} FROM old")
    c.execute("DROP TABLE old")
    for sql in triggers:
        c.execute(sql)


TRIGGERS = ["entries_no_update", "entries_no_delete", "tree_no_update", "tree_no_delete", "checkpoints_no_update",
            "checkpoints_no_delete", "entries_insert", "tree_insert", "checkpoints_next_only"]
DB_CASES = {
    "entries.data as text": (lambda c: _without_trigger(c, "entries_no_update",
                                                         "UPDATE entries SET data = CAST(data AS TEXT)"),
                             "data is not a blob"),
    "entries.seq as text": (lambda c: _recreate(c, "entries", "seq", "TEXT"), "seq that is not an integer"),
    "tree.hash as text": (lambda c: _recreate(c, "tree", "hash", "TEXT"), "column hash holds text that is not UTF-8"),
    "tree.hash as an integer": (lambda c: _without_trigger(c, "tree_no_update", "UPDATE tree SET hash = 7"),
                                "stored Merkle hash"),
    "checkpoints.tree_size as text": (lambda c: _without_trigger(
        c, "checkpoints_no_update", "UPDATE checkpoints SET tree_size = CAST(tree_size AS BLOB)"), "column"),
    "checkpoints.note as text": (lambda c: _without_trigger(
        c, "checkpoints_no_update", "UPDATE checkpoints SET note = CAST(note AS TEXT)"), "not a blob"),
    "contracts.scale as text": (lambda c: c.execute("UPDATE contracts SET scale = 'eight'"), "contracts summary"),
    "meta.value as a blob": (lambda c: c.execute("UPDATE meta SET value = CAST(value AS BLOB)"),
                             "schema version"),
    "meta without its origin": (lambda c: c.execute("DELETE FROM meta WHERE key = 'origin'"), "origin"),
    "a gap in seq": (lambda c: _without_trigger(c, "entries_no_delete", "DELETE FROM entries WHERE seq = 5"),
                     "seq 5: entry 5 is missing"),
    "the last entries missing": (lambda c: _without_trigger(c, "entries_no_delete",
                                                            "DELETE FROM entries WHERE seq >= 15"),
                                 "entry 15 is missing"),
    "a tree row missing": (lambda c: _without_trigger(c, "tree_no_delete", "DELETE FROM tree WHERE id = 2"),
                           "stored Merkle hash"),
    **{f"table {t} dropped": (lambda c, t=t: c.execute(f"DROP TABLE {t}"), t)
       for t in ("entries", "tree", "checkpoints", "contracts", "cosignatures", "meta")},
    **{f"trigger {t} dropped": (lambda c, t=t: c.execute(f"DROP TRIGGER {t}"), f"lacks its trigger {t}")
       for t in TRIGGERS},
    "a trigger replaced by a no-op": (lambda c: (c.execute("DROP TRIGGER entries_no_update"), c.execute(
        "CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries BEGIN SELECT 1; END")),
        "trigger entries_no_update is not the one"),
    "an index dropped": (lambda c: c.execute("DROP INDEX entries_liquidation"), "index entries_liquidation"),
}


@pytest.mark.parametrize("case", list(DB_CASES))
def test_a_tampered_database_is_one_line_and_exit_1(world, tmp_path, case):
    tamper, reason = DB_CASES[case]
    db = str(tmp_path / "fund.db")
    shutil.copyfile(world[1], db)
    with _rw(db) as c:
        tamper(c)
    code, out, err, _ = fundledger("verify", db)
    line = one_line(err)
    assert code == 1 and reason in line, line


def test_the_tampered_database_cases_run_with_workers_too(world, tmp_path):
    """The same cases through the library with two worker processes, where
    a database error surfaces in a worker first."""
    for case in ("entries.data as text", "table entries dropped", "a gap in seq"):
        tamper, reason = DB_CASES[case]
        db = str(tmp_path / f"{case}.db")
        shutil.copyfile(world[1], db)
        with _rw(db) as c:
            tamper(c)
        with pytest.raises(VerificationError, match=reason):
            verify.verify_path(db, workers=2)


def test_a_file_that_is_plainly_not_a_ledger_stays_exit_2(tmp_path):
    other = tmp_path / "other.db"
    with _rw(str(other)) as c:
        c.execute("CREATE TABLE t (a)")
    code, _, err, _ = fundledger("verify", other)
    assert code == 2 and "not a fundledger database" in one_line(err)
