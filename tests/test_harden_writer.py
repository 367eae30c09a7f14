"""Hardening of the writer: key names.

* ``fundledger init`` refuses an origin its key file could not hold.
"""

from __future__ import annotations

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
