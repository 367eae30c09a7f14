"""The command line end to end (ledger/cli/), in-process through click's
CliRunner and, where a real process matters (stdin pipes, file bytes,
tracebacks), through a subprocess."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
import sqlite3
from fractions import Fraction

import pytest
from click.testing import CliRunner
from conftest import ORIGIN, run_fundledger

from ledger.ops import keys
from ledger.tlog.proof import verify_consistency
from ledger.format import note
from ledger.format import consistency
from ledger.format import receipt as receipt_mod
from ledger.cli import cli

LIQ = ["liquidation", "XBTUSDTM", "--side", "long", "--qty", "1", "--bankruptcy-price", "39000"]


# --- helpers ---------------------------------------------------------------------------------


def invoke(ledger, *args, input=None, env=None):
    """Run the CLI in-process; unexpected exceptions are caught and kept in
    ``result.exception`` (a traceback in real life)."""
    e = {"FUNDLEDGER_DB": ledger.db, "FUNDLEDGER_KEY": ledger.key}
    e.update(env or {})
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, env=e, catch_exceptions=True)


def ok(result):
    assert result.exception is None or (isinstance(result.exception, SystemExit) and result.exit_code == 0), (
        result.exception, result.output)
    assert result.exit_code == 0, result.output
    return result


def dump(db: str) -> list[str]:
    c = sqlite3.connect(db)
    try:
        return list(c.iterdump())
    finally:
        c.close()


def size(db: str) -> int:
    c = sqlite3.connect(db)
    try:
        return c.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    finally:
        c.close()


def assert_bad_input(ledger, *args, input=None, env=None, match=None):
    """Exit 2, one line on stderr, no traceback, nothing written."""
    before = dump(ledger.db)
    r = invoke(ledger, *args, input=input, env=env)
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert isinstance(r.exception, SystemExit), repr(r.exception)  # no unhandled exception
    err = r.stderr
    assert "Traceback" not in r.output
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert err.startswith("fundledger: ")
    assert r.stdout == ""
    if match is not None:
        assert match in err, err
    assert dump(ledger.db) == before
    return err


@pytest.fixture
def xbt(ledger):
    """A ledger with XBTUSDTM (linear, USDT, scale 8, multiplier 1)."""
    ok(invoke(ledger, "contract", "add", "XBTUSDTM", "--currency", "USDT", "--scale", "8"))
    return ledger


def jsonl(records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def liq_record(i, contract="XBTUSDTM", side="long", qty="1", bankruptcy="39000", fill="39100", **kw):
    r = {"kind": "liquidation", "contract": contract, "id": f"L-{i}", "side": side, "qty": qty,
         "bankruptcy_price": bankruptcy, "fill_price": fill}
    r.update(kw)
    return r


# --- init -----------------------------------------------------------------------------------------


def test_init_creates_ledger_and_key(tmp_path):
    db, key = tmp_path / "fund.db", tmp_path / "fund.key"
    r = CliRunner().invoke(cli, ["init", ORIGIN, "--db", str(db), "--key", str(key)], catch_exceptions=False)
    assert r.exit_code == 0
    assert db.exists() and key.exists()
    assert os.stat(key).st_mode & 0o777 == 0o600
    signer = keys.load_key_file(str(key))
    assert f"verifier key: {signer.verifier().vkey()}" in r.stdout
    vkey = tmp_path / "fund.vkey"  # the public key beside the private one
    assert vkey.read_text().strip() == signer.verifier().vkey()
    assert signer.seed.hex() not in vkey.read_text()


def test_init_refuses_existing_vkey(tmp_path):
    db, key, vkey = tmp_path / "fund.db", tmp_path / "fund.key", tmp_path / "fund.vkey"
    vkey.write_text("keep\n")
    r = CliRunner().invoke(cli, ["init", ORIGIN, "--db", str(db), "--key", str(key)])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert vkey.read_text() == "keep\n" and not db.exists() and not key.exists()


def test_init_refuses_overwrite(ledger):
    db_bytes = open(ledger.db, "rb").read()
    key_bytes = open(ledger.key, "rb").read()
    before = dump(ledger.db)
    r = invoke(ledger, "init", ORIGIN)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "already exists" in r.stderr
    assert "Traceback" not in r.output
    assert dump(ledger.db) == before
    assert open(ledger.key, "rb").read() == key_bytes
    assert len(open(ledger.db, "rb").read()) == len(db_bytes)


def test_init_refuses_existing_key_and_creates_no_db(tmp_path):
    key = tmp_path / "fund.key"
    key.write_text("precious\n")
    key.chmod(0o600)
    db = tmp_path / "fund.db"
    r = CliRunner().invoke(cli, ["init", ORIGIN, "--db", str(db), "--key", str(key)])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert key.read_text() == "precious\n"
    assert not db.exists()


@pytest.mark.parametrize("origin", ["has space", "a+b", ""])
def test_init_bad_origin(tmp_path, origin):
    db, key = tmp_path / "fund.db", tmp_path / "fund.key"
    r = CliRunner().invoke(cli, ["init", origin, "--db", str(db), "--key", str(key)])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.output
    assert not db.exists() and not key.exists()


# --- contract add / liquidation -------------------------------------------------------------------------


def test_contract_add(ledger):
    r = ok(invoke(ledger, "contract", "add", "XBTUSDTM", "--currency", "USDT", "--scale", "8",
                  "--multiplier", "0.001"))
    assert r.stdout == "appended seq 0\n"
    r = ok(invoke(ledger, "contract", "add", "XBTUSDM", "--currency", "XBT", "--scale", "8", "--type", "inverse",
                  "--multiplier", "100"))
    assert r.stdout == "appended seq 1\n"
    rows = {c["contract"]: c for c in json.loads(ok(invoke(ledger, "balance", "--json")).stdout)["contracts"]}
    assert rows["XBTUSDTM"]["multiplier"] == "0.001" and rows["XBTUSDTM"]["type"] == "linear"
    assert rows["XBTUSDM"]["type"] == "inverse" and rows["XBTUSDM"]["currency"] == "XBT"
    assert rows["XBTUSDM"]["balance"] == "0.00000000"


def test_contract_add_again(xbt):
    before = dump(xbt.db)
    r = ok(invoke(xbt, "contract", "add", "XBTUSDTM", "--currency", "USDT", "--scale", "8"))
    assert "duplicate" in r.stdout and "appended" not in r.stdout
    assert dump(xbt.db) == before
    assert_bad_input(xbt, "contract", "add", "XBTUSDTM", "--currency", "USDC", "--scale", "8",
                     match="other terms")


@pytest.mark.parametrize(
    "args",
    [
        ["ethusdtm", "--currency", "USDT", "--scale", "8"],
        ["ETHUSDTM", "--currency", "usdt", "--scale", "8"],
        ["ETHUSDTM", "--currency", "USDT", "--scale", "8", "--multiplier", "0"],
        ["ETHUSDTM", "--currency", "USDT", "--scale", "8", "--multiplier", "1e-3"],
        ["ETHUSDTM", "--currency", "USDT", "--scale", "8", "--multiplier", "NaN"],
        ["ETHUSDTM", "--currency", "USDT", "--scale", "8", "--multiplier", "-1"],
        ["E" * 33, "--currency", "USDT", "--scale", "8"],
    ],
)
def test_contract_add_bad_input(xbt, args):
    assert_bad_input(xbt, "contract", "add", *args)


def test_liquidation_worked_example(xbt):
    r = ok(invoke(xbt, *LIQ, "--id", "L-1", "--fill-price", "39100"))
    assert r.stdout == ("appended seq 1\n"
                        "XBTUSDTM: delta 100.00000000, paid 0.00000000, adl 0.00000000, balance 100.00000000\n")
    r = ok(invoke(xbt, *LIQ, "--id", "L-2", "--fill-price", "38850"))
    assert r.stdout == ("appended seq 2\n"
                        "XBTUSDTM: delta -150.00000000, paid 100.00000000, adl 50.00000000, balance 0.00000000\n")
    b = json.loads(ok(invoke(xbt, "balance", "--json")).stdout)
    c = b["contracts"][0]
    assert (c["balance"], c["credited"], c["paid"], c["adl"], c["liquidations"]) == (
        "0.00000000", "100.00000000", "100.00000000", "50.00000000", 2)


def test_liquidation_options(xbt):
    r = ok(invoke(xbt, "liquidation", "XBTUSDTM", "--id", "L-7", "--side", "short", "--qty", "2.5",
                  "--bankruptcy-price", "39000", "--fill-price", "38990.5", "--mark-price", "38995",
                  "--time", "2026-11-23T20:59:07.120+02:00"))
    assert "delta 23.75000000" in r.stdout
    h = json.loads(ok(invoke(xbt, "history", "XBTUSDTM", "--json")).stdout)["entries"][-1]
    assert h["time"] == "2026-11-23T18:59:07.12Z"
    assert h["mark_price"] == "38995" and h["qty"] == "2.5" and h["side"] == "short"


def test_duplicate_liquidation(xbt):
    ok(invoke(xbt, *LIQ, "--id", "L-1", "--fill-price", "39100"))
    before = dump(xbt.db)
    r = ok(invoke(xbt, *LIQ, "--id", "L-1", "--fill-price", "38000"))
    assert "duplicate" in r.stdout and "L-1" in r.stdout
    assert "appended" not in r.stdout and "delta" not in r.stdout
    assert dump(xbt.db) == before


@pytest.mark.parametrize(
    "args, match",
    [
        (["liquidation", "ETHUSDTM", "--id", "x", "--side", "long", "--qty", "1", "--bankruptcy-price", "1",
          "--fill-price", "2"], "unknown contract"),
        (LIQ[:5] + ["-1"] + LIQ[6:] + ["--id", "x", "--fill-price", "2"], "qty"),
        ([*LIQ[:5], "0", *LIQ[6:], "--id", "x", "--fill-price", "2"], "qty"),
        ([*LIQ[:5], "abc", *LIQ[6:], "--id", "x", "--fill-price", "2"], "qty"),
        ([*LIQ[:5], "NaN", *LIQ[6:], "--id", "x", "--fill-price", "2"], "qty"),
        ([*LIQ[:5], "1e400", *LIQ[6:], "--id", "x", "--fill-price", "2"], "qty"),
        ([*LIQ[:5], "1.5.1", *LIQ[6:], "--id", "x", "--fill-price", "2"], "qty"),
        ([*LIQ[:5], " 1", *LIQ[6:], "--id", "x", "--fill-price", "2"], "qty"),
        ([*LIQ, "--id", "x", "--fill-price", "0"], "fill_price"),
        ([*LIQ, "--id", "x", "--fill-price", "-39100"], "fill_price"),
        ([*LIQ, "--id", "x", "--fill-price", "Infinity"], "fill_price"),
        ([*LIQ, "--id", "x", "--fill-price", "39100", "--mark-price", "abc"], "mark_price"),
        ([*LIQ, "--id", "x", "--fill-price", "39100", "--time", "yesterday"], "time"),
        ([*LIQ, "--id", "x", "--fill-price", "39100", "--time", "2016-12-31T23:59:60Z"], "time"),
        ([*LIQ, "--id", " x", "--fill-price", "39100"], "id"),
        ([*LIQ, "--id", "x" * 129, "--fill-price", "39100"], "id"),
        ([*LIQ, "--id", "caf\u00e9", "--fill-price", "39100"], "id"),
        (["liquidation", "XBTUSDTM", "--id", "x", "--side", "long", "--qty", "1", "--bankruptcy-price", "0",
          "--fill-price", "1"], "bankruptcy_price"),
    ],
)
def test_liquidation_bad_input(xbt, args, match):
    assert_bad_input(xbt, *args, match=match)


@pytest.mark.parametrize(
    "args",
    [
        [*LIQ[:2], "--side", "sideways", "--qty", "1", "--bankruptcy-price", "1", "--fill-price", "2", "--id", "x"],
        ["contract", "add", "ETHUSDTM", "--currency", "USDT", "--scale", "19"],
        ["liquidation", "XBTUSDTM", "--id", "x"],
        [*LIQ, "--id", "x", "--fill-price", "39100", "--key", "."],  # a directory
    ],
)
def test_usage_errors_are_one_line(xbt, args):
    assert_bad_input(xbt, *args)


@pytest.mark.parametrize("t", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_liquidation_time_overflow_is_bad_input(xbt, t):
    assert_bad_input(xbt, *LIQ, "--id", "x", "--fill-price", "39100", "--time", t)


def test_liquidation_time_before_year_1000_keeps_ledger_verifiable(xbt):
    r = invoke(xbt, *LIQ, "--id", "x", "--fill-price", "39100", "--time", "0999-12-31T23:59:59Z")
    if r.exit_code == 2:  # refusing it is fine too
        return
    ok(r)
    ok(invoke(xbt, "checkpoint"))
    ok(invoke(xbt, "verify"))


# --- key problems ------------------------------------------------------------------------------------------


@pytest.fixture(params=["liquidation", "contract", "import", "checkpoint"])
def writing_command(request, tmp_path):
    f = tmp_path / "one.jsonl"
    f.write_bytes(jsonl([liq_record(99)]))
    return {
        "liquidation": [*LIQ, "--id", "x", "--fill-price", "39100"],
        "contract": ["contract", "add", "ETHUSDTM", "--currency", "USDT", "--scale", "8"],
        "import": ["import", str(f)],
        "checkpoint": ["checkpoint"],
    }[request.param]


def test_missing_key_file(xbt, writing_command):
    assert_bad_input(xbt, *writing_command, "--key", str(xbt.dir / "nope.key"), match="no such key file")


@pytest.mark.parametrize("cmd", [
    [*LIQ, "--id", "x", "--fill-price", "39100"],
    ["contract", "add", "ETHUSDTM", "--currency", "USDT", "--scale", "8"],
    ["checkpoint"],
])
def test_wrong_key_file(xbt, cmd):
    other = xbt.dir / "other.key"
    keys.create_key_file(str(other), ORIGIN)
    assert_bad_input(xbt, *cmd, "--key", str(other), match="key does not match")


def test_import_wrong_key_file(xbt):
    other = xbt.dir / "other.key"
    keys.create_key_file(str(other), ORIGIN)
    f = xbt.dir / "one.jsonl"
    f.write_bytes(jsonl([liq_record(99)]))
    err = assert_bad_input(xbt, "import", f, "--key", str(other), match="key does not match")
    assert "line" not in err


@pytest.mark.parametrize("perm", [0o644, 0o640])
def test_key_readable_by_others(xbt, writing_command, perm):
    os.chmod(xbt.key, perm)
    try:
        assert_bad_input(xbt, *writing_command, match="chmod 600")
    finally:
        os.chmod(xbt.key, 0o600)


@pytest.mark.parametrize("content", [b"", b"garbage\n", b"PRIVATE+KEY+x+00000000+AAAA\n"])
def test_malformed_key_file(xbt, content):
    p = xbt.dir / "bad.key"
    p.write_bytes(content)
    p.chmod(0o600)
    assert_bad_input(xbt, *LIQ, "--id", "x", "--fill-price", "39100", "--key", str(p))


@pytest.mark.parametrize("cmd", [["balance"], ["history", "XBTUSDTM"], ["checkpoint"], ["prove", "0"],
                                 [*LIQ, "--id", "x", "--fill-price", "1"]])
def test_missing_database(tmp_path, ledger, cmd):
    r = invoke(ledger, *cmd, env={"FUNDLEDGER_DB": str(tmp_path / "nope.db")})
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and isinstance(r.exception, SystemExit)
    assert not (tmp_path / "nope.db").exists()


# --- reading: balance / history ------------------------------------------------------------------------------------


def test_balance_and_history(xbt):
    ok(invoke(xbt, "contract", "add", "XBTUSDM", "--currency", "XBT", "--scale", "8", "--type", "inverse"))
    ok(invoke(xbt, *LIQ, "--id", "L-1", "--fill-price", "39100"))
    ok(invoke(xbt, "liquidation", "XBTUSDM", "--id", "L-1", "--side", "long", "--qty", "1000",
              "--bankruptcy-price", "40000", "--fill-price", "40100", "--mark-price", "40050.5"))
    b = json.loads(ok(invoke(xbt, "balance", "--json")).stdout)
    assert b["tree_size"] == 4 and b["origin"] == ORIGIN
    assert [c["contract"] for c in b["contracts"]] == ["XBTUSDM", "XBTUSDTM"]
    for c in b["contracts"]:
        assert {"contract", "currency", "balance", "balance_usd", "scale", "type", "adl", "paid", "credited",
                "liquidations"} <= set(c)
    usdt = b["contracts"][1]
    assert (usdt["currency"], usdt["balance"], usdt["balance_usd"]) == ("USDT", "100.00000000", "100.00")
    inv = b["contracts"][0]
    assert (inv["currency"], inv["balance"], inv["balance_usd"]) == ("XBT", "0.00006234", "2.49")
    one = json.loads(ok(invoke(xbt, "balance", "XBTUSDTM", "--json")).stdout)
    assert [c["contract"] for c in one["contracts"]] == ["XBTUSDTM"]
    text = ok(invoke(xbt, "balance")).stdout
    assert "XBTUSDTM" in text and "100.00000000" in text and "100.00 USD" in text
    assert_bad_input(xbt, "balance", "NOPE", match="unknown contract")

    h = json.loads(ok(invoke(xbt, "history", "XBTUSDTM", "--json")).stdout)
    assert h["contract"] == "XBTUSDTM"
    assert [e["seq"] for e in h["entries"]] == [0, 2]
    assert h["entries"][0]["kind"] == "contract"
    e = h["entries"][1]
    assert (e["kind"], e["liquidation_id"], e["delta"], e["paid"], e["adl"], e["balance"]) == (
        "liquidation", "L-1", "100.00000000", "0.00000000", "0.00000000", "100.00000000")
    text = ok(invoke(xbt, "history", "XBTUSDTM")).stdout.splitlines()
    assert len(text) == 2 and "contract registered" in text[0] and "L-1" in text[1] and "100.00000000" in text[1]
    assert_bad_input(xbt, "history", "NOPE", match="unknown contract")


# --- checkpoint / verify / prove / consistency / export -------------------------------------------------------------


def _vkey(ledger) -> str:
    return ledger.signer.verifier().vkey()


def test_checkpoint_and_verify(xbt):
    ok(invoke(xbt, *LIQ, "--id", "L-1", "--fill-price", "39100"))
    r = ok(invoke(xbt, "checkpoint"))
    text, _ = note.open_note(r.stdout.encode(), [xbt.signer.verifier()])
    cp = note.parse_checkpoint(text)
    assert cp.origin == ORIGIN and cp.tree_size == 2
    r2 = ok(invoke(xbt, "checkpoint"))
    assert r2.stdout == r.stdout and "already exists" in r2.stderr
    v = json.loads(ok(invoke(xbt, "verify", "--json")).stdout)
    assert v["ok"] is True and v["size"] == 2 and base64.b64decode(v["root"]) == cp.root_hash
    assert v["contracts"][0]["contract"] == "XBTUSDTM" and v["contracts"][0]["balance"] == "100.00000000"
    assert v["contracts"] == json.loads(ok(invoke(xbt, "balance", "--json")).stdout)["contracts"]
    text = ok(invoke(xbt, "verify", "--vkey", _vkey(xbt))).stdout
    assert "verified 2 entries" in text


def test_verify_detects_tampering(xbt):
    ok(invoke(xbt, *LIQ, "--id", "L-1", "--fill-price", "39100"))
    ok(invoke(xbt, *LIQ, "--id", "L-2", "--fill-price", "39200"))
    ok(invoke(xbt, "checkpoint"))
    c = sqlite3.connect(xbt.db, isolation_level=None)
    for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        c.execute(f"DROP TRIGGER {name}")
    data = c.execute("SELECT data FROM entries WHERE seq = 1").fetchone()[0]
    c.execute("UPDATE entries SET data = ? WHERE seq = 1", (data.replace(b'"100.00000000"', b'"900.00000000"', 1),))
    c.close()
    r = invoke(xbt, "verify", "--json")
    assert r.exit_code == 1
    j = json.loads(r.stdout)
    assert j["ok"] is False and j["seq"] == 1 and j["reason"]
    r = invoke(xbt, "verify")
    assert r.exit_code == 1 and "seq 1" in r.stderr and r.stderr.count("\n") == 1


def test_verify_bad_source_is_bad_input(xbt):
    r = invoke(xbt, "verify", str(xbt.dir / "nope"))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1


def test_prove_and_check_receipt(xbt):
    for i in range(6):
        ok(invoke(xbt, *LIQ, "--id", f"L-{i}", "--fill-price", str(39000 + i)))
    assert_bad_input(xbt, "prove", "1", match="checkpoint")
    ok(invoke(xbt, "checkpoint"))
    out = xbt.dir / "r3.proof"
    ok(invoke(xbt, "prove", "3", "--out", out))
    data = out.read_bytes()
    assert data.startswith(b"c2sp.org/tlog-proof@v1\n")
    receipt = receipt_mod.parse_receipt(data)
    assert receipt.leaf_index == 3
    c = sqlite3.connect(xbt.db)
    entry = c.execute("SELECT data FROM entries WHERE seq = 3").fetchone()[0]
    c.close()
    assert receipt.extra == entry
    vkey_file = xbt.dir / "fund.vkey"
    vkey_file.write_text(_vkey(xbt) + "\n")
    r = ok(invoke(xbt, "check-receipt", out, "--vkey", vkey_file))
    assert "entry 3" in r.stdout and "size 7" in r.stdout
    j = json.loads(ok(invoke(xbt, "check-receipt", out, "--vkey", _vkey(xbt), "--json")).stdout)
    assert j["ok"] is True and j["seq"] == 3 and j["entry"]["id"] == "L-2"
    # stdout receipt is the same bytes
    assert ok(invoke(xbt, "prove", "3")).stdout_bytes == data
    # a receipt checked against another key fails (exit 1)
    other = note.generate_signer(ORIGIN).verifier().vkey()
    r = invoke(xbt, "check-receipt", out, "--vkey", other)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    # a tampered receipt fails
    bad = xbt.dir / "bad.proof"
    lines = data.split(b"\n")
    lines[3] = base64.b64encode(bytes(32))  # first proof hash
    bad.write_bytes(b"\n".join(lines))
    r = invoke(xbt, "check-receipt", bad, "--vkey", _vkey(xbt))
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert_bad_input(xbt, "prove", "7", match="not covered")


def test_consistency(xbt):
    for i in range(3):
        ok(invoke(xbt, *LIQ, "--id", f"L-{i}", "--fill-price", "39100"))
    old = xbt.dir / "old.checkpoint"
    old.write_bytes(ok(invoke(xbt, "checkpoint")).stdout_bytes)
    for i in range(3, 11):
        ok(invoke(xbt, *LIQ, "--id", f"L-{i}", "--fill-price", "38000"))
    new = ok(invoke(xbt, "checkpoint")).stdout_bytes
    out = xbt.dir / "c.proof"
    ok(invoke(xbt, "consistency", old, "--out", out))
    body = out.read_bytes()
    assert body.startswith(b"old 4\n")
    proof = consistency.parse_consistency(body)
    assert proof.old_size == 4 and proof.checkpoint == new
    old_cp = note.parse_checkpoint(note.open_note(old.read_bytes(), [xbt.signer.verifier()])[0])
    new_cp = note.parse_checkpoint(note.open_note(new, [xbt.signer.verifier()])[0])
    verify_consistency(4, 12, list(proof.proof), old_cp.root_hash, new_cp.root_hash)
    # verify --trusted accepts the old checkpoint
    ok(invoke(xbt, "verify", "--trusted", old))
    # a checkpoint from another log is refused
    foreign = note.sign_note(note.Checkpoint(ORIGIN, 4, bytes(32)).text(), [note.generate_signer(ORIGIN)])
    f = xbt.dir / "foreign.checkpoint"
    f.write_bytes(foreign)
    r = invoke(xbt, "consistency", f)
    assert r.exit_code in (1, 2) and r.stderr.count("\n") == 1 and "Traceback" not in r.output


def test_export_and_verify_directory(xbt):
    src = xbt.dir / "in.jsonl"
    src.write_bytes(jsonl([liq_record(i, fill=str(38900 + i)) for i in range(300)]))
    ok(invoke(xbt, "import", src))
    ok(invoke(xbt, "checkpoint"))
    out = xbt.dir / "public"
    r = ok(invoke(xbt, "export", out))
    assert "exported tree size 301" in r.stdout
    assert (out / "checkpoint").exists() and (out / "vkey").exists()
    assert (out / "tile" / "0" / "000").exists() and (out / "tile" / "entries" / "000").exists()
    assert (out / "tile" / "entries" / "001.p" / "45").exists()
    db_report = json.loads(ok(invoke(xbt, "verify", "--json")).stdout)
    dir_report = json.loads(ok(invoke(xbt, "verify", out, "--json", "--vkey", _vkey(xbt))).stdout)
    assert dir_report["size"] == db_report["size"] == 301
    assert dir_report["root"] == db_report["root"]
    assert dir_report["contracts"] == db_report["contracts"]
    # the bundle holds the exact entries
    bundle = (out / "tile" / "entries" / "000").read_bytes()
    first_len = int.from_bytes(bundle[:2], "big")
    c = sqlite3.connect(xbt.db)
    assert bundle[2 : 2 + first_len] == c.execute("SELECT data FROM entries WHERE seq = 0").fetchone()[0]
    c.close()
    # incremental
    ok(invoke(xbt, *LIQ, "--id", "L-new", "--fill-price", "39100"))
    ok(invoke(xbt, "checkpoint"))
    r = ok(invoke(xbt, "export", out))
    assert "exported tree size 302 (was 301)" in r.stdout
    assert json.loads(ok(invoke(xbt, "verify", out, "--json")).stdout)["size"] == 302


# run one command in a fresh interpreter, then print the sqlite modules it loaded
SQLITE_PROBE = (
    "import sys; from ledger.cli import cli; "
    "code = cli.main(sys.argv[1:], prog_name='fundledger', standalone_mode=False); "
    "assert code in (0, None), code; "
    "print(sorted(m for m in sys.modules if 'sqlite' in m))"
)


def _served(directory):
    """A plain static HTTP server for ``directory``, in a thread; its URL."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def test_verify_of_an_export_loads_no_sqlite(xbt):
    """`fundledger verify` of an export or a URL runs without the writer: no
    store, no sqlite3 (the command line imports them only for the commands
    that read a database)."""
    import subprocess
    import sys

    ok(invoke(xbt, *LIQ, "--id", "L-1", "--fill-price", "39100"))
    ok(invoke(xbt, "checkpoint"))
    out = xbt.dir / "public"
    ok(invoke(xbt, "export", out))
    server, url = _served(out)
    try:
        for source in (out, url):
            p = subprocess.run([sys.executable, "-c", SQLITE_PROBE, "verify", str(source), "--vkey", _vkey(xbt)],
                               capture_output=True, text=True, timeout=120)
            assert p.returncode == 0, p.stderr
            assert p.stdout.startswith("verified 2 entries"), p.stdout
            assert p.stdout.splitlines()[-1] == "[]", p.stdout
    finally:
        server.shutdown()
        server.server_close()


# --- import ------------------------------------------------------------------------------------------------


def test_import_file_and_summary(ledger):
    f = ledger.dir / "in.jsonl"
    recs = [{"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8, "type": "linear",
             "multiplier": "0.001"},
            {"kind": "liquidation", "contract": "XBTUSDTM", "id": "L-1", "side": "long", "qty": "3",
             "bankruptcy_price": "39000", "fill_price": "39100", "mark_price": "39120",
             "time": "2026-11-23T18:59:07.123Z"},
            liq_record(2, qty=2, bankruptcy=39000, fill=38900)]
    f.write_bytes(jsonl(recs) + b"\n   \n")  # blank lines are skipped
    r = ok(invoke(ledger, "import", f))
    assert r.stdout.startswith("3 appended, 0 duplicates skipped")
    b = json.loads(ok(invoke(ledger, "balance", "--json")).stdout)["contracts"][0]
    # 3 * 0.001 * 100 = 0.3 credit, then 2 * 0.001 * -100 = -0.2 paid
    assert (b["balance"], b["credited"], b["paid"], b["adl"]) == ("0.10000000", "0.30000000", "0.20000000", "0.00000000")
    before = dump(ledger.db)
    r = ok(invoke(ledger, "import", f))
    assert r.stdout.startswith("0 appended, 3 duplicates skipped")
    assert dump(ledger.db) == before


def test_import_stdin_in_process(xbt):
    r = ok(invoke(xbt, "import", "-", input=jsonl([liq_record(i) for i in range(5)])))
    assert r.stdout.startswith("5 appended, 0 duplicates skipped")
    assert size(xbt.db) == 6


def test_import_stdin_pipe_subprocess(xbt):
    xbt.store.close()
    env = {"FUNDLEDGER_DB": xbt.db, "FUNDLEDGER_KEY": xbt.key}
    data = jsonl([liq_record(i) for i in range(50)] + [liq_record(3)])
    p = run_fundledger("import", "-", env=env, input=data, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().startswith("50 appended, 1 duplicates skipped")
    assert size(xbt.db) == 51
    p = run_fundledger("import", "-", env=env, input=data, timeout=60)
    assert p.returncode == 0 and p.stdout.decode().startswith("0 appended, 51 duplicates skipped")
    assert size(xbt.db) == 51
    xbt.store = _reopen(xbt)


def _reopen(ledger):
    from ledger.store.store import Store

    return Store.open(ledger.db)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"kind": "withdrawal", "contract": "XBTUSDTM", "amount": "100"}, "unknown kind"),
        ({"kind": "transfer", "contract": "XBTUSDTM", "to": "ETHUSDTM", "amount": "1"}, "unknown kind"),
        ({"kind": "fee", "contract": "XBTUSDTM"}, "unknown kind"),
        ({"kind": "key", "contract": "", "vkey": note.generate_signer(ORIGIN).verifier().vkey()}, "unknown kind"),
        ({"contract": "XBTUSDTM"}, "unknown kind"),
        (liq_record("x", contract="ETHUSDTM"), "unknown contract"),
        (liq_record("x", qty="-1"), "qty"),
        (liq_record("x", qty="0"), "qty"),
        (liq_record("x", qty=0), "qty"),
        (liq_record("x", qty="abc"), "qty"),
        (liq_record("x", qty="NaN"), "qty"),
        (liq_record("x", qty="1e400"), "qty"),
        (liq_record("x", fill="0"), "fill_price"),
        (liq_record("x", side="buy"), "side"),
        (liq_record("x", qty=True), "qty"),
        (liq_record("x", time="2016-12-31T23:59:60Z"), "time"),
        (liq_record("x", id=None), "id"),
        ({"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 2}, "other terms"),
        ({"kind": "contract", "symbol": "ETHUSDTM", "currency": "USDT", "scale": 19}, "scale"),
    ],
)
def test_import_bad_record_at_end_writes_nothing(xbt, bad, match):
    good = [liq_record(i) for i in range(4500)]  # spans several batches
    f = xbt.dir / "in.jsonl"
    f.write_bytes(jsonl(good + [bad]))
    err = assert_bad_input(xbt, "import", f, match=match)
    assert "line 4501" in err
    assert size(xbt.db) == 1


@pytest.mark.parametrize(
    "line, match",
    [
        (b'{"kind":"liquidation","contract":"XBTUSDTM","id":"f","side":"long","qty":1.5,'
         b'"bankruptcy_price":"39000","fill_price":"39100"}', "float"),
        (b'{"kind":"liquidation","contract":"XBTUSDTM","id":"f","side":"long","qty":1e3,'
         b'"bankruptcy_price":"39000","fill_price":"39100"}', "float"),
        (b'{"kind":"liquidation","contract":"XBTUSDTM","id":"f","side":"long","qty":NaN,'
         b'"bankruptcy_price":"39000","fill_price":"39100"}', "NaN"),
        (b'{"kind":"liquidation","kind":"liquidation"}', "duplicate key"),
        (b'{"kind":"liq', "broken JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"kind":"contract"} {"kind":"contract"}', "extra data"),
        (b'{"id":"\xff"}', "UTF-8"),
        (b"[" * 50_000, "JSON"),
    ],
)
def test_import_bad_json_names_its_line(xbt, line, match):
    f = xbt.dir / "in.jsonl"
    f.write_bytes(jsonl([liq_record(1), liq_record(2)]) + b"\n" + line + b"\n" + jsonl([liq_record(3)]))
    err = assert_bad_input(xbt, "import", f, match=match)
    assert "line 4" in err


def test_import_line_length_boundary(xbt):
    base = json.dumps(liq_record(1)).encode()
    pad = 65536 - 1 - len(base)  # exactly 65,536 bytes with the newline
    line = base[:-1] + b" " * pad + b"}"
    assert len(line) + 1 == 65536
    f = xbt.dir / "in.jsonl"
    f.write_bytes(line + b"\n")
    assert ok(invoke(xbt, "import", f)).stdout.startswith("1 appended")
    long = base[:-1] + b" " * (pad + 1) + b"}"
    f.write_bytes(jsonl([liq_record(2)]) + long + b"\n")
    err = assert_bad_input(xbt, "import", f, match="line 2")
    assert "65536" in err
    # an oversize last line without a newline, and a huge one
    f.write_bytes(jsonl([liq_record(3)]) + b"x" * 200_000)
    assert_bad_input(xbt, "import", f, match="line 2")


def test_import_errors_from_stdin_subprocess(xbt):
    """A real process: bad input at the end of a piped stream; exit 2, one
    line, no traceback, the database file's bytes untouched."""
    xbt.store.close()
    c = sqlite3.connect(xbt.db)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    before = open(xbt.db, "rb").read()
    env = {"FUNDLEDGER_DB": xbt.db, "FUNDLEDGER_KEY": xbt.key}
    data = jsonl([liq_record(i) for i in range(3000)]) + b'{"kind":"liquidation","qty":1.5}\n'
    p = run_fundledger("import", "-", env=env, input=data, timeout=60)
    assert p.returncode == 2
    err = p.stderr.decode()
    assert err.count("\n") == 1 and "Traceback" not in err and "line 3001" in err and "float" in err
    assert open(xbt.db, "rb").read() == before
    p = run_fundledger(*LIQ, "--id", "x", "--fill-price", "NaN", env=env, timeout=60)
    assert p.returncode == 2 and p.stderr.decode().count("\n") == 1 and b"Traceback" not in p.stderr
    assert open(xbt.db, "rb").read() == before
    xbt.store = _reopen(xbt)


def test_import_contract_scale_superscript_is_bad_input(xbt):
    f = xbt.dir / "in.jsonl"
    f.write_bytes(jsonl([{"kind": "contract", "symbol": "ETHUSDTM", "currency": "USDT", "scale": "\u00b2"}]))
    assert_bad_input(xbt, "import", f)


def test_import_time_overflow_is_bad_input(xbt):
    f = xbt.dir / "in.jsonl"
    f.write_bytes(jsonl([liq_record(1, time="9999-12-31T23:59:59-01:00")]))
    assert_bad_input(xbt, "import", f)


def _market(n, seed=7):
    rnd = random.Random(seed)
    contracts = [
        {"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8, "type": "linear", "multiplier": "0.001",
         "time": "2026-11-23T00:00:00Z"},
        {"kind": "contract", "symbol": "XBTUSDM", "currency": "XBT", "scale": 8, "type": "inverse", "multiplier": "1",
         "time": "2026-11-23T00:00:00Z"},
        {"kind": "contract", "symbol": "DOGEUSDTM", "currency": "USDT", "scale": 4, "type": "linear", "multiplier": "100",
         "time": "2026-11-23T00:00:00Z"},
    ]
    base = {"XBTUSDTM": 39000, "XBTUSDM": 39000, "DOGEUSDTM": Fraction(15, 100)}
    recs = list(contracts)
    for i in range(n):
        c = contracts[rnd.randrange(3)]["symbol"]
        p = base[c]
        b = p * (1 + Fraction(rnd.randint(-300, 300), 10000))
        f = b * (1 + Fraction(rnd.randint(-40, 60), 10000))
        q = rnd.randint(1, 5000)
        recs.append({
            "kind": "liquidation", "contract": c, "id": f"L-{i}", "side": rnd.choice(["long", "short"]),
            "qty": str(q) if i % 2 else q,
            "bankruptcy_price": _dec(b, 6), "fill_price": _dec(f, 6),
            "time": f"2026-11-23T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
        })
    return recs


def _dec(x: Fraction, digits: int) -> str:
    n = math.floor(x * 10**digits)
    s = str(n).rjust(digits + 1, "0")
    return s[:-digits] + "." + s[-digits:]


def _model(recs):
    terms = {}
    funds = {}
    seen = set()
    for r in recs:
        if r["kind"] == "contract":
            terms[r["symbol"]] = r
            funds[r["symbol"]] = {"balance": 0, "credited": 0, "paid": 0, "adl": 0, "liquidations": 0}
            continue
        if (r["contract"], r["id"]) in seen:
            continue
        seen.add((r["contract"], r["id"]))
        t = terms[r["contract"]]
        q, m = Fraction(str(r["qty"])), Fraction(t["multiplier"])
        b, f = Fraction(r["bankruptcy_price"]), Fraction(r["fill_price"])
        d = q * m * (f - b) if t["type"] == "linear" else q * m * (1 / b - 1 / f)
        if r["side"] == "short":
            d = -d
        units = math.floor(d * 10 ** t["scale"])
        fd = funds[r["contract"]]
        if units >= 0:
            fd["balance"] += units
            fd["credited"] += units
        else:
            paid = min(-units, fd["balance"])
            fd["balance"] -= paid
            fd["paid"] += paid
            fd["adl"] += -units - paid
        fd["liquidations"] += 1
    out = {}
    for s, fd in funds.items():
        sc = terms[s]["scale"]
        out[s] = {k: (fd[k] if k == "liquidations" else _dec(Fraction(fd[k], 10**sc), sc) if sc else str(fd[k]))
                  for k in fd}
    return out


def _balances(ledger):
    b = json.loads(ok(invoke(ledger, "balance", "--json")).stdout)
    return {c["contract"]: {k: c[k] for k in ("balance", "credited", "paid", "adl", "liquidations")}
            for c in b["contracts"]}, b["tree_size"]


def test_import_10000_liquidations_in_one_command(ledger):
    recs = _market(10_000)
    f = ledger.dir / "market.jsonl"
    f.write_bytes(jsonl(recs))
    r = ok(invoke(ledger, "import", f))
    assert r.stdout.startswith("10003 appended, 0 duplicates skipped")
    got, tree_size = _balances(ledger)
    assert tree_size == 10_003
    assert got == _model(recs)
    assert any(v["adl"] != _dec(Fraction(0), 8) for v in got.values())  # the market reached ADL somewhere
    ok(invoke(ledger, "checkpoint"))
    v = json.loads(ok(invoke(ledger, "verify", "--json")).stdout)
    assert v["ok"] and v["size"] == 10_003
    assert {c["contract"]: {k: c[k] for k in ("balance", "credited", "paid", "adl", "liquidations")}
            for c in v["contracts"]} == got


def test_import_resumes_after_interruption(tmp_path, ledger):
    recs = _market(3000, seed=11)
    whole = ledger.dir / "whole.jsonl"
    whole.write_bytes(jsonl(recs))
    half = ledger.dir / "half.jsonl"
    half.write_bytes(jsonl(recs[:1700]))
    r = ok(invoke(ledger, "import", half, "--batch", "500"))
    assert r.stdout.startswith("1700 appended, 0 duplicates skipped")
    r = ok(invoke(ledger, "import", whole, "--batch", "500"))
    assert r.stdout.startswith(f"{len(recs) - 1700} appended, 1700 duplicates skipped")
    assert size(ledger.db) == len(recs)
    # identical to an uninterrupted import of the whole file
    from ledger.ops import api

    store2, _ = api.init_ledger(str(tmp_path / "two.db"), str(tmp_path / "two.key"), ORIGIN)
    store2.close()
    other = type(ledger)(tmp_path, str(tmp_path / "two.db"), str(tmp_path / "two.key"), None, None)
    ok(invoke(other, "import", whole))
    assert _balances(ledger) == _balances(other)
    for sym in ("XBTUSDTM", "XBTUSDM", "DOGEUSDTM"):
        h1 = json.loads(ok(invoke(ledger, "history", sym, "--json")).stdout)
        h2 = json.loads(ok(invoke(other, "history", sym, "--json")).stdout)
        assert h1 == h2
    assert _balances(ledger)[0] == _model(recs)
    # running it once more appends nothing
    before = dump(ledger.db)
    r = ok(invoke(ledger, "import", whole))
    assert r.stdout.startswith(f"0 appended, {len(recs)} duplicates skipped")
    assert dump(ledger.db) == before


def test_import_duplicates_within_one_file(xbt):
    f = xbt.dir / "in.jsonl"
    f.write_bytes(jsonl([liq_record(1), liq_record(2), liq_record(1, fill="1"), liq_record(2)]))
    r = ok(invoke(xbt, "import", f))
    assert r.stdout.startswith("2 appended, 2 duplicates skipped")
    h = json.loads(ok(invoke(xbt, "history", "XBTUSDTM", "--json")).stdout)["entries"]
    assert [e["fill_price"] for e in h[1:]] == ["39100", "39100"]


def test_import_registers_contract_used_later_in_same_file(ledger):
    f = ledger.dir / "in.jsonl"
    f.write_bytes(jsonl([liq_record(0, contract="ETHUSDTM")]))
    assert_bad_input(ledger, "import", f, match="unknown contract")
    f.write_bytes(jsonl([{"kind": "contract", "symbol": "ETHUSDTM", "currency": "USDT", "scale": 2},
                         liq_record(0, contract="ETHUSDTM", bankruptcy="2000", fill="2000.555")]))
    ok(invoke(ledger, "import", f))
    got, _ = _balances(ledger)
    assert got["ETHUSDTM"]["balance"] == "0.55"  # floor of 0.555 at scale 2


def test_import_missing_file(xbt):
    r = invoke(xbt, "import", xbt.dir / "nope.jsonl")
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_import_empty_input(xbt):
    f = xbt.dir / "empty.jsonl"
    f.write_bytes(b"\n\n")
    before = dump(xbt.db)
    r = ok(invoke(xbt, "import", f))
    assert r.stdout.startswith("0 appended, 0 duplicates skipped")
    assert dump(xbt.db) == before


def test_import_identical_contract_line_is_a_duplicate(xbt):
    f = xbt.dir / "in.jsonl"
    f.write_bytes(jsonl([{"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": "8",
                          "multiplier": "1.000"}, liq_record(1)]))
    r = ok(invoke(xbt, "import", f))
    assert r.stdout.startswith("1 appended, 1 duplicates skipped")


def test_verify_and_receipt_bad_arguments(xbt):
    ok(invoke(xbt, "checkpoint"))
    r = invoke(xbt, "verify", "--trusted", xbt.dir / "nope.checkpoint")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.output
    r = invoke(xbt, "verify", "--vkey", "garbage")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.output
    junk = xbt.dir / "junk.proof"
    junk.write_bytes(b"not a receipt\n")
    r = invoke(xbt, "check-receipt", junk, "--vkey", _vkey(xbt))
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.output
    r = invoke(xbt, "check-receipt", junk, "--vkey", "garbage")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1


def test_reading_commands_write_nothing(xbt):
    ok(invoke(xbt, *LIQ, "--id", "L-1", "--fill-price", "39100"))
    ok(invoke(xbt, "checkpoint"))
    before = dump(xbt.db)
    for cmd in (["balance"], ["balance", "--json"], ["history", "XBTUSDTM"], ["verify"], ["prove", "1"],
                ["export", xbt.dir / "pub"]):
        ok(invoke(xbt, *cmd))
    assert dump(xbt.db) == before


def test_key_rotate(xbt):
    ok(invoke(xbt, *LIQ, "--id", "L-1", "--fill-price", "39100"))
    ok(invoke(xbt, "checkpoint"))
    new = xbt.dir / "new.key"
    r = ok(invoke(xbt, "key", "rotate", "--new-key", new))
    assert "appended seq 2" in r.stdout
    assert os.stat(new).st_mode & 0o777 == 0o600
    new_vkey = keys.load_key_file(str(new)).verifier().vkey()
    assert new_vkey in r.stdout
    # the retired key is refused, the new one signs
    assert_bad_input(xbt, *LIQ, "--id", "L-2", "--fill-price", "39100", match="key does not match")
    ok(invoke(xbt, *LIQ, "--id", "L-2", "--fill-price", "39100", "--key", new))
    ok(invoke(xbt, "checkpoint", "--key", new))
    v = json.loads(ok(invoke(xbt, "verify", "--json", "--vkey", _vkey(xbt))).stdout)
    assert v["ok"] and v["size"] == 4 and v["contracts"][0]["balance"] == "200.00000000"
    # rotating onto an existing file refuses and keeps it
    before = new.read_bytes()
    assert_bad_input(xbt, "key", "rotate", "--new-key", new, "--key", new)
    assert new.read_bytes() == before
    # rotating with the retired key refuses and creates no key file
    other = xbt.dir / "other.key"
    assert_bad_input(xbt, "key", "rotate", "--new-key", other)
    assert not other.exists()
