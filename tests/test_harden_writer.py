"""Hardening of the writer: bounded import input; key names.

* ``fundledger import -`` refuses an over-long line as soon as it arrives
  and caps what it spools (``--max-input-bytes``).
* ``fundledger init`` refuses an origin its key file could not hold.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import run_fundledger

from ledger import api, merkle
from ledger.cli import cli
from ledger.errors import LimitError, VerificationError
from ledger.keys import load_key_file
from ledger.store import Store
from ledger.verify import verify_path

ORIGIN = "example.com/harden-fund"


# --- helpers ---------------------------------------------------------------------------------------


class Writer:
    """A ledger in ``dir`` driven through the CLI, as an operator does."""

    def __init__(self, dir: Path):
        dir.mkdir(exist_ok=True)
        self.dir = dir
        self.db, self.key = str(dir / "fund.db"), str(dir / "fund.key")
        self.anchor = self.key + ".anchor"

    def run(self, *args, input=None):
        env = {"FUNDLEDGER_DB": self.db, "FUNDLEDGER_KEY": self.key}
        return CliRunner().invoke(cli, [str(a) for a in args], input=input, env=env, catch_exceptions=False)

    def ok(self, *args, input=None):
        r = self.run(*args, input=input)
        assert r.exit_code == 0, (args, r.output)
        return r.output

    def liquidation(self, i, side="long", qty="10", bankruptcy="100", fill="101"):
        return self.run("liquidation", "XBTUSDTM", "--id", f"L-{i}", "--side", side, "--qty", qty,
                        "--bankruptcy-price", bankruptcy, "--fill-price", fill,
                        "--time", f"2026-11-23T18:{i // 60:02d}:{i % 60:02d}Z")

    def rows(self, table):
        with sqlite3.connect(self.db) as c:
            return c.execute(f"SELECT * FROM {table}").fetchall()

    def anchored_size(self):
        return json.loads(Path(self.anchor).read_bytes())["tree_size"]


# a 1000.00 shortfall (long 100 closed 10 under its bankruptcy price)
SHORTFALL = {"kind": "liquidation", "contract": "XBTUSDTM", "id": "L-big", "side": "long", "qty": "100",
             "bankruptcy_price": "100", "fill_price": "90", "time": "2026-11-23T19:00:00Z"}


def make_writer(tmp_path, liquidations=5) -> Writer:
    w = Writer(tmp_path)
    w.ok("init", ORIGIN)
    w.ok("contract", "add", "XBTUSDTM", "--currency", "USDT", "--scale", "2")
    for i in range(1, liquidations + 1):
        assert w.liquidation(i).exit_code == 0
    return w


def fingerprint(db):
    with sqlite3.connect(db) as c:
        return [c.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                for t in ("entries", "tree", "contracts", "checkpoints")]


def one_line_failure(r, code, *words):
    assert r.exit_code == code, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def truncate(db, keep, contracts_rows):
    """What an attacker with the database does: drop the append-only
    triggers, delete every entry from ``keep`` on with its stored hashes,
    every checkpoint, and put back the summary rows of that younger log."""
    c = sqlite3.connect(db, isolation_level=None)
    for t in ("entries_no_delete", "tree_no_delete", "checkpoints_no_delete"):
        c.execute(f"DROP TRIGGER {t}")
    c.execute("DELETE FROM entries WHERE seq >= ?", (keep,))
    c.execute("DELETE FROM tree WHERE id >= ?", (merkle.stored_hash_count(keep),))
    c.execute("DELETE FROM cosignatures")
    c.execute("DELETE FROM checkpoints")
    c.execute("DELETE FROM contracts")
    c.executemany(f"INSERT INTO contracts VALUES ({','.join('?' * len(contracts_rows[0]))})", contracts_rows)
    c.close()


def unanchored_append(w: Writer, dest: Path, record: dict) -> int:
    """What a writer that trusts the database signs: the library's append
    without an anchor, on a copy. Returns the seq it signed."""
    dest.mkdir()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(w.db + suffix):
            shutil.copy(w.db + suffix, str(dest / "fund.db") + suffix)
    store = Store.open(str(dest / "fund.db"))
    try:
        r = store.append([record], [load_key_file(w.key)])
        store.add_checkpoint([load_key_file(w.key)])
    finally:
        store.close()
    assert len(r.appended) == 1
    return r.appended[0]


# --- bounded import input ----------------------------------------------------------------------


def _pipe_into_import(w: Writer, first: bytes, chunk: bytes, limit: int, *extra):
    """Stream ``first`` then ``chunk`` repeatedly (at most ``limit`` bytes)
    into a real ``fundledger import -``; ``(exit code, stderr, bytes it took)``."""
    e = dict(os.environ, FUNDLEDGER_DB=w.db, FUNDLEDGER_KEY=w.key)
    p = subprocess.Popen([sys.executable, "-m", "ledger.cli", "import", "-", *extra], stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=e)
    sent = 0
    try:
        p.stdin.write(first)
        sent += len(first)
        while sent < limit:
            p.stdin.write(chunk)
            sent += len(chunk)
        p.stdin.close()
    except BrokenPipeError:
        pass
    err = p.stderr.read().decode()
    return p.wait(), err, sent


def test_an_endless_line_on_stdin_is_refused_as_it_arrives(tmp_path):
    w = make_writer(tmp_path, liquidations=1)
    before = fingerprint(w.db)
    rc, err, sent = _pipe_into_import(w, b'{"kind":"', b"x" * 65536, 100 << 20)
    assert rc == 2 and len(err.splitlines()) == 1 and "line 1: longer than 65536 bytes" in err, err
    assert sent < 16 << 20, f"{sent} bytes were read before the refusal"
    assert fingerprint(w.db) == before


def test_stdin_over_max_input_bytes_is_refused_as_it_arrives(tmp_path):
    w = make_writer(tmp_path, liquidations=1)
    before = fingerprint(w.db)
    line = (json.dumps(dict(SHORTFALL, qty="1", fill_price="101")) + "\n").encode()
    rc, err, sent = _pipe_into_import(w, b"", line * 500, 100 << 20, "--max-input-bytes", "1000000")
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "over 1000000 bytes (--max-input-bytes)" in err and "nothing imported" in err, err
    assert sent < 16 << 20, f"{sent} bytes were read before the refusal"
    assert fingerprint(w.db) == before


def test_stdin_within_max_input_bytes_is_imported(tmp_path):
    w = make_writer(tmp_path, liquidations=1)
    lines = "".join(json.dumps(dict(SHORTFALL, id=f"S-{i}", qty="1", fill_price="101")) + "\n" for i in range(50))
    env = {"FUNDLEDGER_DB": w.db, "FUNDLEDGER_KEY": w.key}
    before = fingerprint(w.db)
    r = run_fundledger("import", "-", "--max-input-bytes", len(lines) - 1, input=lines.encode(), env=env)
    err = r.stderr.decode()
    assert r.returncode == 2 and len(err.splitlines()) == 1, err
    assert "over 2999 bytes" not in err and "(--max-input-bytes) at line 50" in err, err
    assert fingerprint(w.db) == before
    r = run_fundledger("import", "-", "--max-input-bytes", len(lines), input=lines.encode(), env=env)
    assert r.returncode == 0 and b"50 appended" in r.stdout, r.stderr


@pytest.mark.parametrize("chunk", [1000, 65535, 65536, 65537, 1 << 20])
def test_spool_counts_lines_as_the_import_does(monkeypatch, chunk):
    """A line may hold 65,536 bytes with its newline (as ``api._records``
    reads it), wherever the chunks of the copy fall."""
    monkeypatch.setattr(api, "SPOOL_CHUNK", chunk)
    most = api.MAX_IMPORT_LINE_BYTES
    ok = b"{}\n" + b"x" * (most - 1) + b"\n" + b"y" * most
    assert api.spool(io.BytesIO(ok)).read() == ok
    for bad, line in ((b"x" * most + b"\n", 1), (b"{}\n" * 3 + b"x" * (most + 1), 4),
                      (b"{}\n" + b"x" * most + b"\n{}\n", 2), (b"{}\n" * 2 + b"x" * 3 * most, 3)):
        with pytest.raises(LimitError, match=f"^line {line}: longer than 65536 bytes; nothing imported$"):
            api.spool(io.BytesIO(bad))
    with pytest.raises(LimitError, match="over 5 bytes .* at line 2;"):
        api.spool(io.BytesIO(b"{}\n{}\n"), max_bytes=5)
    assert api.spool(io.BytesIO(b"{}\n{}\n"), max_bytes=6).read() == b"{}\n{}\n"


# --- init refuses an origin its key file cannot hold -------------------------------------------


@pytest.mark.parametrize("origin", ["exämple.com/fund", "example.com/fünd", "例え.jp/fund", "example.com/fund\u00a0x",
                                    "example.com/ｆund", "a+b", "a b", ""])
def test_init_refuses_an_origin_the_key_file_cannot_hold(tmp_path, origin):
    w = Writer(tmp_path)
    line = one_line_failure(w.run("init", origin), 2, "not a valid key name", "printable ASCII", "no spaces",
                            "no '+'")
    assert "Traceback" not in line
    assert os.listdir(tmp_path) == []


def test_an_ascii_origin_reads_back(tmp_path):
    w = Writer(tmp_path)
    w.ok("init", "fund.example.com:8443/futures_v2~x")
    w.ok("contract", "add", "XBTUSDTM", "--currency", "USDT", "--scale", "2")
    assert load_key_file(w.key).name == "fund.example.com:8443/futures_v2~x"
