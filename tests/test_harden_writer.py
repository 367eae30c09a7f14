"""The writer never trusts the database; bounded import input; key names.

* The writer's anchor (ledger/ops/anchor.py): an edited ``contracts`` balance,
  or a log whose newest entries and every checkpoint were deleted, is
  refused before anything is signed (exit 1, one line, nothing written),
  where an unanchored writer signs an entry the verifier refuses.
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

from ledger.ops import api
from ledger.format import records
from ledger.tlog import merkle
from ledger.cli import cli
from ledger.errors import LimitError, VerificationError
from ledger.ops.keys import load_key_file
from ledger.store.schema import Reader
from ledger.store.store import Store
from ledger.verify.run import verify_path

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

    def anchored_ids(self):
        """The anchor's count of liquidation ids, checked against its .ids file."""
        n = json.loads(Path(self.anchor).read_bytes())["ids"]
        assert os.path.getsize(self.anchor + ".ids") >= 8 * n
        return n


# a 1000.00 shortfall (long 100 closed 10 under its bankruptcy price)
SHORTFALL = {"kind": "liquidation", "contract": "XBTUSDTM", "id": "L-big", "side": "long", "qty": "100",
             "bankruptcy_price": "100", "fill_price": "90", "time": "2026-11-23T19:00:00Z"}


def make_writer(tmp_path, liquidations=5) -> Writer:
    w = Writer(tmp_path)
    w.ok("init", "--format", "1", ORIGIN)  # the sizes these tests count are of format 1
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


# --- an edited contracts balance ---------------------------------------------------------------


def test_an_edited_balance_is_refused_before_signing(tmp_path):
    w = make_writer(tmp_path / "w")
    w.ok("checkpoint")
    with sqlite3.connect(w.db) as c:  # the fund holds 50.00; the table now says 100000.00
        c.execute("UPDATE contracts SET balance = '100000.00', balance_usd = '100000.00'")
    before = fingerprint(w.db)
    r = w.liquidation(99, qty="100", bankruptcy="100", fill="90")  # a 1000.00 shortfall
    one_line_failure(r, 1, "refusing to sign", "contracts table", "balance", "'100000.00'", "'50.00'")
    assert fingerprint(w.db) == before
    assert w.anchored_size() == 6
    # the import and the checkpoint refuse it too
    jsonl = json.dumps(dict(SHORTFALL, id="L-imp")) + "\n"
    one_line_failure(w.run("import", "-", input=jsonl), 1, "refusing to sign", "contracts table")
    one_line_failure(w.run("checkpoint"), 1, "refusing to sign", "contracts table")
    assert fingerprint(w.db) == before
    # what a writer trusting the table signs: a payout of 1000.00 from a
    # fund of 50.00, which the verifier refuses at that very entry
    seq = unanchored_append(w, tmp_path / "unanchored", SHORTFALL)
    with pytest.raises(VerificationError) as e:
        verify_path(str(tmp_path / "unanchored" / "fund.db"))
    assert e.value.seq == seq and "paid" in e.value.reason


def test_an_edited_fund_row_field_is_named(tmp_path):
    w = make_writer(tmp_path, liquidations=2)
    for col, value in (("liquidations", 7), ("multiplier", "1000"), ("scale", 8)):
        with sqlite3.connect(w.db) as c:
            good = c.execute(f"SELECT {col} FROM contracts").fetchone()[0]
            c.execute(f"UPDATE contracts SET {col} = ?", (value,))
        one_line_failure(w.liquidation(50), 1, "refusing to sign", f"XBTUSDTM {col}")
        with sqlite3.connect(w.db) as c:
            c.execute(f"UPDATE contracts SET {col} = ?", (good,))
    with sqlite3.connect(w.db) as c:
        c.execute("DELETE FROM contracts")
    one_line_failure(w.liquidation(50), 1, "refusing to sign", "lacks 'XBTUSDTM'")
    assert len(w.rows("entries")) == 3


# --- a liquidation id the database lost ------------------------------------------------------------


@pytest.mark.parametrize("how", ["row deleted", "id column edited"])
def test_a_replayed_id_the_database_lost_is_refused(tmp_path, how):
    w = make_writer(tmp_path / "w", liquidations=4)
    w.ok("checkpoint")
    c = sqlite3.connect(w.db, isolation_level=None)
    if how == "row deleted":  # entry 2 (L-2) gone; the stored tree and the summary untouched
        c.execute("DROP TRIGGER entries_no_delete")
        c.execute("DELETE FROM entries WHERE seq = 2")
    else:
        c.execute("DROP TRIGGER entries_no_update")
        c.execute("UPDATE entries SET liquidation_id = 'L-2x' WHERE seq = 2")
    c.close()
    before = fingerprint(w.db)
    replay = dict(SHORTFALL, id="L-2", qty="10", fill_price="101")
    one_line_failure(w.liquidation(2), 1, "refusing to sign", "liquidation 'L-2' of XBTUSDTM was signed by this key")
    one_line_failure(w.run("import", "-", input=json.dumps(replay) + "\n"), 1, "line 1", "'L-2'", "signed by this key")
    assert fingerprint(w.db) == before and w.anchored_ids() == 4
    if how == "id column edited":
        # a writer trusting the index signs the replay; with the column put
        # back, the verifier refuses that very entry as a duplicate
        seq = unanchored_append(w, tmp_path / "unanchored", replay)
        with sqlite3.connect(tmp_path / "unanchored" / "fund.db") as c:
            c.execute("DROP INDEX entries_liquidation")  # (the log holds L-2 twice now)
            c.execute("UPDATE entries SET liquidation_id = 'L-2' WHERE seq = 2")
        with pytest.raises(VerificationError) as e:
            verify_path(str(tmp_path / "unanchored" / "fund.db"))
        assert e.value.seq == seq and "duplicate" in e.value.reason


def test_id_hashes_are_found_in_the_bytes_and_in_sorted_runs():
    from ledger.ops.idhashes import IdHashes

    ids = IdHashes()
    ids.add_packed(b"".join(h.to_bytes(8, "little") for h in (5, 1 << 63, 7 << 8)))
    ids.update([9])
    # (7 << 8 is 7 in the second byte: found only at an 8-byte boundary)
    probes = [5, 1 << 63, 7 << 8, 9, 7, 0, 1 << 55, 6]
    seen = [h in ids for h in probes] + [h in ids for h in probes * 10]  # past SET_AFTER: a sorted run
    assert not ids.packed and len(ids) == 4
    assert seen == [True, True, True, True, False, False, False, False] * 11
    # a run sorted by buckets of its top byte, and runs merged: the same set
    many = IdHashes()
    values = [(i * 0x9E3779B97F4A7C15) % (1 << 64) for i in range(3 * IdHashes.TAIL)]
    many.add_packed(b"".join(h.to_bytes(8, "little") for h in values[:IdHashes.TAIL + 5]))
    many.update(values[IdHashes.TAIL + 5:])
    assert all(h in many for h in values) and not any(h + 1 in many for h in values[:1000])
    assert len(many) == len(values) and all(list(r) == sorted(r) for r in many.runs)


def test_a_large_run_is_sorted_by_buckets(monkeypatch):
    import array

    from ledger.ops import idhashes as anchor

    monkeypatch.setattr(anchor, "_BUCKETED", 1000)  # (a million, else)
    values = [(i * 0x9E3779B97F4A7C15) % (1 << 64) for i in range(5000)]
    for given in (array.array("Q", values), array.array("Q", values).tobytes()):
        assert list(anchor._sorted(given)) == sorted(values)


# --- a truncated log ---------------------------------------------------------------------------


def test_a_truncated_log_is_refused_before_signing(tmp_path):
    w = make_writer(tmp_path / "w", liquidations=2)  # entries 0..2
    young = w.rows("contracts")
    for i in range(3, 6):
        assert w.liquidation(i).exit_code == 0
    w.ok("checkpoint")
    auditor = tmp_path / "auditor.checkpoint"
    auditor.write_bytes(Reader.open(w.db).published_checkpoint())
    assert w.liquidation(6).exit_code == 0  # after the checkpoint: entries 0..6
    truncate(w.db, 3, young)
    before = fingerprint(w.db)
    for r in (w.liquidation(7), w.run("checkpoint"),
              w.run("import", "-", input=json.dumps(dict(SHORTFALL, id="L-imp")) + "\n")):
        one_line_failure(r, 1, "refusing to sign", "3 entries", "has signed 7", "entries were removed")
    assert fingerprint(w.db) == before and w.anchored_size() == 7
    # a writer trusting the database signs the rewritten history, and
    # checkpoints it; an auditor holding the earlier checkpoint refuses it
    unanchored_append(w, tmp_path / "unanchored", SHORTFALL)
    r = CliRunner().invoke(cli, ["verify", str(tmp_path / "unanchored" / "fund.db"), "--trusted", str(auditor)])
    assert r.exit_code == 1 and "rollback" in r.output, r.output


def test_a_rewritten_tree_is_refused(tmp_path):
    """Same size, other stored hashes: the root at the anchor is not the one signed."""
    w = make_writer(tmp_path, liquidations=3)
    c = sqlite3.connect(w.db, isolation_level=None)
    c.execute("DROP TRIGGER tree_no_update")
    c.execute("UPDATE tree SET hash = ? WHERE id = (SELECT MAX(id) FROM tree)", (b"\x07" * 32,))
    c.close()
    before = fingerprint(w.db)
    one_line_failure(w.liquidation(9), 1, "refusing to sign", "stored tree at size 4", "rewritten")
    assert fingerprint(w.db) == before


# --- the anchor's life: crashes, old ledgers, damage ------------------------------------------------


def test_an_anchor_left_behind_by_a_crash_is_caught_up(tmp_path):
    """A crash between the commit and the anchor's update leaves the anchor
    behind the database: the next write checks the entries after it from
    their signed bytes and carries on."""
    w = make_writer(tmp_path, liquidations=2)
    stale = Path(w.anchor).read_bytes()
    for i in range(3, 6):
        assert w.liquidation(i).exit_code == 0
    jsonl = "".join(json.dumps(dict(SHORTFALL, id=f"I-{i}", qty="1", fill_price="101")) + "\n" for i in range(30))
    w.ok("import", "-", input=jsonl)
    Path(w.anchor).write_bytes(stale)  # the updates since were lost
    assert w.liquidation(6).exit_code == 0
    assert w.anchored_size() == len(w.rows("entries")) == 37
    assert w.anchored_ids() == 36
    w.ok("checkpoint")
    verify_path(w.db)


def test_entries_after_a_stale_anchor_are_checked_from_their_bytes(tmp_path):
    w = make_writer(tmp_path, liquidations=2)
    stale = Path(w.anchor).read_bytes()
    assert w.liquidation(3).exit_code == 0
    Path(w.anchor).write_bytes(stale)
    c = sqlite3.connect(w.db, isolation_level=None)  # the entry after the anchor, edited
    c.execute("DROP TRIGGER entries_no_update")
    c.execute("UPDATE entries SET data = CAST(replace(data, '\"qty\":\"10\"', '\"qty\":\"90\"') AS BLOB) "
              "WHERE seq = 3")
    c.close()
    before = fingerprint(w.db)
    one_line_failure(w.liquidation(4), 1, "seq 3", "refusing to sign", "after the anchor does not verify")
    assert fingerprint(w.db) == before


def test_an_import_leaves_the_anchor_at_its_last_batch(tmp_path):
    w = make_writer(tmp_path, liquidations=1)
    jsonl = "".join(json.dumps(dict(SHORTFALL, id=f"I-{i}", qty="1", fill_price="101")) + "\n" for i in range(45))
    w.ok("import", "-", "--batch", "10", input=jsonl)
    assert w.anchored_size() == len(w.rows("entries")) == 47 and w.anchored_ids() == 46
    a = json.loads(Path(w.anchor).read_bytes())
    assert [tuple(r) for r in a["funds"]] == w.rows("contracts")


def test_writers_sharing_the_key_keep_one_anchor(tmp_path):
    """Two imports and a stream of single appends at once, all with the one
    key: afterwards the anchor holds the whole log and exactly its ids."""
    w = make_writer(tmp_path, liquidations=1)
    env = dict(os.environ, FUNDLEDGER_DB=w.db, FUNDLEDGER_KEY=w.key)
    procs = []
    for name in ("A", "B"):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(dict(SHORTFALL, id=f"{name}-{i}", qty="1", fill_price="101")) + "\n"
                                for i in range(60)))
        procs.append(subprocess.Popen([sys.executable, "-m", "ledger.cli", "import", str(path), "--batch", "7"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for i in range(4):
        procs.append(subprocess.Popen([sys.executable, "-m", "ledger.cli", "liquidation", "XBTUSDTM", "--id", f"S-{i}",
                                       "--side", "long", "--qty", "1", "--bankruptcy-price", "100",
                                       "--fill-price", "101"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    from ledger.ops.anchor import AnchorState, id_hash

    state = AnchorState.from_json(Path(w.anchor).read_bytes())
    ids = [(c, i) for c, i in sqlite3.connect(w.db).execute(
        "SELECT contract, liquidation_id FROM entries WHERE liquidation_id IS NOT NULL")]
    assert state.tree_size == len(w.rows("entries")) == 2 + 124 and state.ids == len(ids) == 125
    data = Path(w.anchor + ".ids").read_bytes()[: 8 * state.ids]
    held = {int.from_bytes(data[k : k + 8], "little") for k in range(0, len(data), 8)}
    assert held == {id_hash(state.ids_key, c, i) for c, i in ids}
    assert w.liquidation(1).exit_code == 0  # L-1 again: a duplicate, nothing signed
    w.ok("checkpoint")
    verify_path(w.db)


def test_a_ledger_without_an_anchor_is_checked_once_then_anchored(tmp_path):
    w = make_writer(tmp_path, liquidations=3)
    os.unlink(w.anchor)  # a ledger made before anchors
    with sqlite3.connect(w.db) as c:
        c.execute("UPDATE contracts SET balance = '999.00'")
    one_line_failure(w.liquidation(4), 1, "refusing to sign", "balance")
    assert not os.path.exists(w.anchor)
    with sqlite3.connect(w.db) as c:
        c.execute("UPDATE contracts SET balance = '30.00'")
    assert w.liquidation(4).exit_code == 0
    assert w.anchored_size() == 5 and os.stat(w.anchor).st_mode & 0o777 == 0o600
    assert w.anchored_ids() == 4 and os.path.getsize(w.anchor + ".ids") == 32
    w.ok("checkpoint")
    assert json.loads(Path(w.anchor).read_bytes())["checkpoint"].startswith(f"{ORIGIN}\n5\n")


def test_a_damaged_anchor_is_refused(tmp_path):
    w = make_writer(tmp_path, liquidations=1)
    Path(w.anchor).write_bytes(b'{"version":1,')
    before = fingerprint(w.db)
    one_line_failure(w.liquidation(2), 1, "refusing to sign", "anchor file", "damaged")
    assert fingerprint(w.db) == before


def test_an_anchor_of_another_log_is_refused(tmp_path):
    w = make_writer(tmp_path / "a", liquidations=1)
    other = Writer(tmp_path / "b")
    other.ok("init", "example.com/other-fund")
    shutil.copy(other.anchor, w.anchor)
    one_line_failure(w.liquidation(2), 1, "refusing to sign", "example.com/other-fund")


def test_init_creates_the_anchor_and_refuses_an_existing_one(tmp_path):
    w = Writer(tmp_path)
    Path(w.anchor).write_text("x")
    r = w.run("init", ORIGIN)
    one_line_failure(r, 2, "already exists", "anchor")
    assert not os.path.exists(w.db) and not os.path.exists(w.key)
    os.unlink(w.anchor)
    w.ok("init", ORIGIN)
    a = json.loads(Path(w.anchor).read_bytes())
    # a format-2 log starts with its state entry, which the anchor holds
    assert (a["origin"], a["tree_size"], a["funds"], a["checkpoint"]) == (ORIGIN, 1, [], None)
    assert os.stat(w.anchor).st_mode & 0o777 == 0o600


def test_the_anchor_never_moves_back(tmp_path):
    """Two processes finishing in the other order: the smaller size never
    replaces the larger one."""
    w = make_writer(tmp_path, liquidations=3)
    store = Store.open(w.db)
    anchor = api.writer_anchor(w.key)
    anchor.check(store)
    state = anchor.state
    assert w.liquidation(4).exit_code == 0  # another process moves on to 5
    anchor.advance(state.tree_size, state.root, state.prev, [])  # a late update at 4
    assert w.anchored_size() == 5
    store.close()


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
    except BrokenPipeError:
        pass
    finally:
        try:
            p.stdin.close()
        except BrokenPipeError:
            pass
    err = p.stderr.read().decode()
    p.stderr.close()
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
    """A line may hold 65,536 bytes with its newline (as ``records.iter_records``
    reads it), wherever the chunks of the copy fall."""
    monkeypatch.setattr(api, "SPOOL_CHUNK", chunk)
    most = records.MAX_LINE_BYTES
    ok = b"{}\n" + b"x" * (most - 1) + b"\n" + b"y" * most
    with api.spool(io.BytesIO(ok)) as copy:
        assert copy.read() == ok
    for bad, line in ((b"x" * most + b"\n", 1), (b"{}\n" * 3 + b"x" * (most + 1), 4),
                      (b"{}\n" + b"x" * most + b"\n{}\n", 2), (b"{}\n" * 2 + b"x" * 3 * most, 3)):
        with pytest.raises(LimitError, match=f"^line {line}: longer than 65536 bytes; nothing imported$"):
            api.spool(io.BytesIO(bad))
    with pytest.raises(LimitError, match="over 5 bytes .* at line 2;"):
        api.spool(io.BytesIO(b"{}\n{}\n"), max_bytes=5)
    with api.spool(io.BytesIO(b"{}\n{}\n"), max_bytes=6) as copy:
        assert copy.read() == b"{}\n{}\n"


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


@pytest.mark.parametrize("name", ["wïtness.example", "witness\u00a0.example", "a+b", ""])
def test_witness_init_refuses_a_name_its_key_file_cannot_hold(tmp_path, name):
    w = Writer(tmp_path)
    r = w.run("witness", "init", name, "--key", str(tmp_path / "w.key"), "--state", str(tmp_path / "w.db"))
    line = one_line_failure(r, 2, "witness name", "not a valid key name", "printable ASCII")
    assert "Traceback" not in line
    assert os.listdir(tmp_path) == []
