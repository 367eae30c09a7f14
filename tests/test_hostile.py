"""Hostile input: fuzzing and oversize input against every reader.

* the import line parser (``records.iter_records`` and ``api.check_import``) over
  random bytes and random JSON objects of random types: only typed errors
  (exit 2, "line N: ..."), never a write;
* the CLI options (random strings for quantities, prices, ids, symbols,
  times, sides, currencies, scales) through click's CliRunner: exit 0 or 2,
  exactly one stderr line on 2, never a traceback, the database unchanged
  on 2;
* malformed signed notes, checkpoints, receipts and consistency proofs fed
  to the verifier, to check-receipt and to a witness: random mutations,
  every truncation, oversize, wrong lengths, bad base64, unknown and excess
  signatures, a thousand signature lines, a 100 MB line (sparse files and
  lazily generated): always exit 1 or 2 with one line, never a traceback,
  never a write, and memory bounded (ru_maxrss of the very process) because
  every reader stops at its size limit;
* the key file: created 0600 by the real ``fundledger init`` even under
  umask 000, refused by the real process when group-readable, and never
  written anywhere else: not in the database, the export directory, its
  tiles, receipts, consistency proofs or the witness's files (raw, hex and
  base64 at every alignment). tests/test_keys.py covers the key file API.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ledger.ops import api
from ledger.format import records as records_mod
from ledger.format import note
from ledger.format import consistency
from ledger.format import receipt as receipt_mod
from ledger.verify import run as verify
from ledger.verify.checkpoint import open_checkpoint
from ledger.ops import witness
from ledger.cli import cli
from ledger.errors import FundledgerError
from ledger.store.schema import Reader
from ledger.store.store import Store
from publish.export import export

from conftest import ORIGIN

# The suite runs a fixed, derandomized sample (fast, reproducible);
# FUNDLEDGER_FUZZ=N runs N random examples per fuzz test instead (see
# docs/RELIABILITY.md).
_DEEP = int(os.environ.get("FUNDLEDGER_FUZZ", "0"))


def fuzz(n: int):
    return settings(max_examples=_DEEP or n, deadline=None, suppress_health_check=list(HealthCheck),
                    derandomize=not _DEEP, database=None)


FUZZ = fuzz(150)


# --- a ledger, its export, a receipt, a witness ------------------------------------------------


@dataclass
class World:
    dir: Path
    db: str
    key: str
    vkey: str
    export: Path
    checkpoint: bytes
    receipt: bytes
    body: bytes  # consistency 0 -> latest, for a fresh witness
    wkey: str
    wstate: str
    signer: object

    def env(self) -> dict:
        return {"FUNDLEDGER_DB": self.db, "FUNDLEDGER_KEY": self.key}


def liq(i, contract="XBTUSDTM", side="long", qty="1", bankruptcy="39000", fill="39100"):
    return {"kind": "liquidation", "contract": contract, "id": f"L-{i}", "side": side, "qty": qty,
            "bankruptcy_price": bankruptcy, "fill_price": fill}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    d = tmp_path_factory.mktemp("hostile")
    db, key = str(d / "fund.db"), str(d / "fund.key")
    store, signer = api.init_ledger(db, key, ORIGIN)
    store.append([
        {"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8},
        {"kind": "contract", "symbol": "XBTUSDM", "currency": "XBT", "scale": 8, "type": "inverse", "multiplier": "100"},
    ], [signer])
    store.append([liq(i, fill=str(38990 + i)) for i in range(20)]
                 + [liq(i, "XBTUSDM", "short", "10", "40000", str(39995 + i)) for i in range(10)], [signer])
    _, cp, _ = store.add_checkpoint([signer])
    export(store, str(d / "export"))
    receipt = api.prove(store, 7)
    body = api.consistency(store, old_size=0)
    vkey = store.vkey
    store.close()
    wkey, wstate = str(d / "w.key"), str(d / "w.db")
    witness.init_witness(wkey, wstate, "witness.example")
    witness.add_log(wstate, vkey)
    return World(d, db, key, vkey, d / "export", cp, receipt, body, wkey, wstate, signer)


def fingerprint(db: str) -> str:
    """Everything a write could change, read afresh."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        h = hashlib.sha256()
        for q in ("SELECT COUNT(*), MAX(seq), SUM(LENGTH(data)) FROM entries", "SELECT COUNT(*) FROM tree",
                  "SELECT * FROM contracts ORDER BY symbol", "SELECT id, tree_size FROM checkpoints ORDER BY id",
                  "SELECT * FROM cosignatures", "SELECT * FROM meta ORDER BY key"):
            h.update(repr(conn.execute(q).fetchall()).encode())
        return h.hexdigest()
    finally:
        conn.close()


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def invoke(args, env=None, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, input=input, catch_exceptions=True)


def assert_clean_exit(r, allowed=(0, 2), echoed=()):
    """No traceback (no unhandled exception), an allowed exit code, and
    exactly one line on stderr unless it succeeded. ``echoed``: arguments an
    error message may quote verbatim (a newline in them is pinned by
    test_an_argument_cannot_forge_a_second_error_line, not here)."""
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        import traceback

        raise AssertionError("".join(traceback.format_exception(r.exception))) from None
    assert r.exit_code in allowed, (r.exit_code, r.output)
    if r.exit_code != 0:
        err = r.stderr
        lines = 1 + sum(s.count("\n") for s in echoed)  # at most: the message may or may not quote them
        assert 1 <= err.count("\n") <= lines and err.endswith("\n") and err.startswith("fundledger: "), repr(err)
        assert "Traceback" not in r.output


# --- the import line parser --------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=3000))
@example(b"\xff\xfe{}\n")
@example(b'{"kind":"liquidation"}' * 3)
@example(b"[" * 5000 + b"]" * 5000)
@example(b'{"kind":"contract","symbol":"X","currency":"USDT","scale":"\xc2\xb2"}\n')
@example(b'{"kind":"liquidation","contract":"XBTUSDTM","id":"a","side":"long","qty":1e5}')
@example(b'{"kind":"liquidation","qty":' + b"9" * 5000 + b"}")
@example(b"\x00\n\r\n\x0b\x0c\x1c\x1d\x1e\x85\n")
def test_import_parser_on_random_bytes(world, data):
    store = Reader.open(world.db)
    try:
        try:
            list(records_mod.iter_records(io.BytesIO(data)))
        except FundledgerError as e:
            assert e.exit_code == 2 and str(e).startswith("line ")
        try:
            api.check_import(store, io.BytesIO(data))
        except FundledgerError as e:
            assert e.exit_code == 2 and str(e).startswith("line ")
    finally:
        store.close()


json_scalars = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**40), max_value=10**40)
    | st.text(max_size=40)
    | st.sampled_from(["0", "1", "-1", "1.5", "1e5", "0x10", " 1", "1 ", "\u0661", "\u00b2", "\uff11", "NaN",
                       "Infinity", "00001", "1.", ".5", "1" * 31, "0." + "1" * 19, "long", "short", "linear",
                       "inverse", "XBTUSDTM", "XBTUSDM", "USDT", "2026-11-23T18:59:07Z",
                       "0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01", "2026-02-30T00:00:00Z",
                       "2026-11-23T24:00:00Z", "2026-11-23T18:59:60Z", "2026-11-23t18:59:07z"])
)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
FIELDS = ["kind", "symbol", "contract", "currency", "scale", "type", "multiplier", "id", "side", "qty",
          "bankruptcy_price", "fill_price", "mark_price", "time"]
record_strategy = st.fixed_dictionaries(
    {"kind": st.sampled_from(["contract", "liquidation"]) | json_values},
    optional={k: json_values for k in FIELDS[1:]} | {"extra": json_values},
)


@FUZZ
@given(st.lists(record_strategy, min_size=1, max_size=6), st.booleans())
def test_import_check_pass_on_random_records(world, records, ascii_only):
    """check_import over random records of random types: it accepts them or
    raises a typed error naming the line; it never writes."""
    data = b"".join(json.dumps(r, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass") + b"\n"
                    for r in records)
    before = fingerprint(world.db)
    store = Reader.open(world.db)
    try:
        try:
            n, _ = api.check_import(store, io.BytesIO(data))
            assert n == len(records)
        except FundledgerError as e:
            assert e.exit_code == 2 and str(e).startswith("line ")
    finally:
        store.close()
    assert fingerprint(world.db) == before


@fuzz(40)
@given(st.lists(record_strategy, min_size=1, max_size=4))
def test_import_command_on_random_records(world, records):
    """The whole command on random records: exit 0 (something appended) or
    exit 2 with one line and nothing written."""
    data = "".join(json.dumps(r) + "\n" for r in records)
    before = fingerprint(world.db)
    r = invoke(["import", "-", "--batch", "2"], env=world.env(), input=data)
    assert_clean_exit(r)
    if r.exit_code == 2:
        assert fingerprint(world.db) == before and r.stdout == ""


# --- the CLI options --------------------------------------------------------------------------

# A real argv never holds a NUL byte (it ends a C string), so NUL is left
# out. Lone surrogates (what a byte that is not UTF-8 becomes in argv) have
# their own test below: they crash the writer (a bug), and the fuzzing here
# keeps looking for other faults.
hostile_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                       max_size=30) | st.sampled_from([
    "", " ", "-1", "0", "00", "1e3", "1.5e-3", "NaN", "inf", "-inf", "1,000", "١٢", "²", "１", "0x1F", "1_000",
    "1" * 31, "0." + "0" * 18 + "1", "9" * 30 + "." + "9" * 18, "2026-11-23T18:59:07.1234567891Z",
    "0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-23:59", "2026-11-23T18:59:07+24:00",
    "--help", "-h", "--", "XBTUSDTM", "xbtusdtm", "X" * 33, "L-1", "a\nb", "\u200b", "é",
])


@fuzz(150)
@given(symbol=st.sampled_from(["XBTUSDTM", "XBTUSDM"]) | hostile_text, lid=hostile_text,
       side=st.sampled_from(["long", "short"]) | hostile_text,
       qty=st.sampled_from(["1", "2.5"]) | hostile_text, bp=st.sampled_from(["39000"]) | hostile_text,
       fp=st.sampled_from(["39100", "38000"]) | hostile_text, mark=st.none() | hostile_text,
       when=st.none() | hostile_text)
def test_liquidation_options_fuzzed(world, symbol, lid, side, qty, bp, fp, mark, when):
    args = ["liquidation", f"--id={lid}", f"--side={side}", f"--qty={qty}", f"--bankruptcy-price={bp}",
            f"--fill-price={fp}"]
    if mark is not None:
        args.append(f"--mark-price={mark}")
    if when is not None:
        args.append(f"--time={when}")
    args += ["--", symbol]
    before = fingerprint(world.db)
    r = invoke(args, env=world.env())
    assert_clean_exit(r)
    if r.exit_code == 2:
        assert fingerprint(world.db) == before


@fuzz(80)
@given(symbol=hostile_text, currency=st.sampled_from(["USDT", "XBT"]) | hostile_text,
       scale=st.sampled_from(["8", "0", "18"]) | hostile_text,
       ctype=st.sampled_from(["linear", "inverse"]) | hostile_text,
       mult=st.sampled_from(["1", "0.001"]) | hostile_text)
def test_contract_add_options_fuzzed(world, symbol, currency, scale, ctype, mult):
    before = fingerprint(world.db)
    r = invoke(["contract", "add", f"--currency={currency}", f"--scale={scale}", f"--type={ctype}",
                f"--multiplier={mult}", "--", symbol], env=world.env())
    assert_clean_exit(r)
    if r.exit_code == 2:
        assert fingerprint(world.db) == before


@fuzz(60)
@given(cmd=st.sampled_from(["balance", "history", "prove", "verify", "import", "consistency", "export",
                            "check-receipt"]), arg=hostile_text, opt=hostile_text)
def test_other_commands_fuzzed(world, tmp_path_factory, cmd, arg, opt):
    """Random arguments to the other commands (run in a scratch directory:
    a random argument may name a path)."""
    before = fingerprint(world.db)
    cwd = os.getcwd()
    scratch = tempfile.mkdtemp(dir=str(world.dir))
    os.chdir(scratch)
    try:
        args = {
            "balance": ["balance", "--json", "--", arg],
            "history": ["history", "--", arg],
            "prove": ["prove", "--", arg],
            "verify": ["verify", f"--vkey={opt}", "--workers=1", "--", arg] if opt else ["verify", "--workers=1", "--", arg],
            "import": ["import", f"--batch={opt}", "--", arg],
            "consistency": ["consistency", f"--old-size={opt}"],
            "export": ["export", "--", arg or "."],
            "check-receipt": ["check-receipt", f"--vkey={opt}", "--", arg],
        }[cmd]
        r = invoke(args, env=world.env())
    finally:
        os.chdir(cwd)
        shutil.rmtree(scratch, ignore_errors=True)
    assert_clean_exit(r, allowed=(0, 1, 2), echoed=(arg, opt))
    assert fingerprint(world.db) == before


@pytest.mark.parametrize("args", [
    ["balance", "X\nfundledger: verified 9 entries"],
    ["history", "X\nfundledger: verified 9 entries"],
    ["verify", "X\nfundledger: verified 9 entries"],
    ["verify", "--trusted", "X\nfundledger: verified 9 entries"],
    ["prove", "0", "--db", "X\nfundledger: verified 9 entries"],
    ["checkpoint", "--key", "X\nfundledger: verified 9 entries"],
], ids=["balance SYMBOL", "history SYMBOL", "verify SOURCE", "verify --trusted", "--db", "--key"])
def test_an_argument_cannot_forge_a_second_error_line(world, args):
    r = invoke(args, env=world.env())
    assert_clean_exit(r, allowed=(1, 2))


@pytest.mark.parametrize("how", ["argv bytes", "import escape"])
def test_a_lone_surrogate_is_bad_input(world, tmp_path, how):
    before = fingerprint(world.db)
    if how == "argv bytes":
        args = [b"liquidation", b"XBTUSDTM", b"--id", b"L\xff", b"--side", b"long", b"--qty", b"1",
                b"--bankruptcy-price", b"39000", b"--fill-price", b"39100"]
    else:
        f = tmp_path / "s.jsonl"
        f.write_bytes(b'{"kind":"liquidation","contract":"XBTUSDTM","id":"\\ud800","side":"long","qty":"1",'
                      b'"bankruptcy_price":"39000","fill_price":"39100"}\n')
        args = [b"import", str(f).encode()]
    p = subprocess.run([sys.executable.encode(), b"-m", b"ledger.cli", *args], env=dict(os.environ, **world.env()),
                       capture_output=True, timeout=60)
    assert b"Traceback" not in p.stderr, p.stderr.decode(errors="replace")[-300:]
    assert p.returncode == 2 and p.stderr.count(b"\n") == 1
    assert fingerprint(world.db) == before


# --- malformed notes, checkpoints, receipts, proofs ----------------------------------------------


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for kind, pos, payload in ops:
        if not b:
            b = bytearray(payload)
            continue
        p = pos % (len(b) + 1)
        if kind == "insert":
            b[p:p] = payload
        elif kind == "delete":
            del b[p : p + max(1, len(payload))]
        elif kind == "replace":
            b[p : p + len(payload)] = payload
        elif kind == "dupline":
            lines = bytes(b).split(b"\n")
            i = pos % len(lines)
            lines.insert(i, lines[i])
            b = bytearray(b"\n".join(lines))
    return bytes(b)


mutations = st.lists(
    st.tuples(st.sampled_from(["insert", "delete", "replace", "dupline"]), st.integers(0, 10**6),
              st.binary(min_size=1, max_size=8) | st.sampled_from([b"\n", b"\n\n", b"=", b"+", b"\xe2\x80\x94 ",
                                                                    b"\xe2\x80\x94 x AAAA\n", b"\x00", b"\r"])),
    min_size=1, max_size=4,
)


@pytest.fixture(scope="module")
def scratch_export(world, tmp_path_factory):
    d = tmp_path_factory.mktemp("scratch-export") / "export"
    shutil.copytree(world.export, d)
    return d


@FUZZ
@given(mutations)
def test_verifier_on_mutated_checkpoints(world, scratch_export, ops):
    """A mutated checkpoint in an export: refused with a typed error, or, if
    accepted, its signed text is the genuine one (an extra line by an unknown
    key is allowed by C2SP signed-note)."""
    data = mutate(world.checkpoint, ops)
    (scratch_export / "checkpoint").write_bytes(data)
    try:
        r = verify.verify_path(str(scratch_export), workers=1)
    except FundledgerError as e:
        assert e.exit_code in (1, 2) and str(e)
        return
    assert note.split_note(data)[0] == note.split_note(world.checkpoint)[0] and r.tree_size == 30 + 2


@FUZZ
@given(mutations)
def test_check_receipt_on_mutated_receipts(world, ops):
    data = mutate(world.receipt, ops)
    try:
        out = api.check_receipt(data, note.parse_vkey(world.vkey))
    except FundledgerError as e:
        assert e.exit_code in (1, 2) and str(e)
        return
    genuine = receipt_mod.parse_receipt(world.receipt)
    got = receipt_mod.parse_receipt(data)
    assert (got.leaf_index, got.extra, got.proof) == (genuine.leaf_index, genuine.extra, genuine.proof)
    assert out["seq"] == 7


@FUZZ
@given(mutations)
def test_witness_on_mutated_requests(world, ops):
    """A fresh witness (size 0) given a mutated 0 -> 32 request: refused
    without touching its state, or cosigns the genuine checkpoint text."""
    data = mutate(world.body, ops)
    before = Path(world.wstate).read_bytes()
    try:
        line = witness.add_checkpoint(world.wkey, world.wstate, data)
    except FundledgerError as e:
        assert e.exit_code in (1, 2) and str(e)
        assert Path(world.wstate).read_bytes() == before
        return
    try:
        req = consistency.parse_consistency(data)
        assert note.split_note(req.checkpoint)[0] == note.split_note(world.checkpoint)[0]
        assert line.startswith("— witness.example ".encode())
    finally:
        Path(world.wstate).write_bytes(before)  # back to size 0 for the next example


def test_every_truncation_of_a_checkpoint_receipt_and_request_is_refused(world):
    v = note.parse_vkey(world.vkey)
    before = Path(world.wstate).read_bytes()
    for n in range(len(world.checkpoint)):
        with pytest.raises(FundledgerError):
            open_checkpoint(world.checkpoint[:n], [v])
    for n in range(len(world.receipt)):
        with pytest.raises(FundledgerError):
            api.check_receipt(world.receipt[:n], v)
    for n in range(len(world.body)):
        with pytest.raises(FundledgerError):
            witness.add_checkpoint(world.wkey, world.wstate, world.body[:n])
    assert Path(world.wstate).read_bytes() == before


def _sig_line(name: str, raw: bytes) -> bytes:
    return "— ".encode() + name.encode() + b" " + base64.b64encode(raw) + b"\n"


def _with_sigs(cp: bytes, extra_lines: bytes, keep_real=True) -> bytes:
    text, sigs = note.split_note(cp)
    real = b"".join(s.line for s in sigs) if keep_real else b""
    return text + b"\n" + real + extra_lines


def _malformed_checkpoints(world):
    cp = world.checkpoint
    text, sigs = note.split_note(cp)
    real = sigs[0]
    kid = real.key_id
    unknown = _sig_line("other.example", b"\x01\x02\x03\x04" + bytes(64))
    return {
        # expected exit code, a word of the one-line reason
        "unknown signatures are ignored": (_with_sigs(cp, unknown * 5), 0, ""),
        "101 signature lines": (_with_sigs(cp, unknown * 100), 1, "over the limit"),
        "a thousand signature lines": (_with_sigs(cp, unknown * 1000), 1, "over the limit"),
        "signature 63 bytes": (_with_sigs(cp, _sig_line(real.name, kid + real.signature[:63]), False), 1, "signature"),
        "signature 65 bytes": (_with_sigs(cp, _sig_line(real.name, kid + real.signature + b"\0"), False), 1, "signature"),
        "signature 4 bytes": (_with_sigs(cp, _sig_line(real.name, kid), False), 1, "too short"),
        "bad base64 in a signature": (_with_sigs(cp, "— x A*==\n".encode()), 1, "base64"),
        "non-canonical base64 padding": (_with_sigs(cp, "— x AB==\n".encode()), 1, "base64"),
        "no signature at all": (text + b"\n", 1, "signature"),
        "no blank line": (text, 1, "blank line"),
        "CRLF line ends": (cp.replace(b"\n", b"\r\n"), 1, "control character"),
        "root 31 bytes": (_with_sigs(cp.replace(text.split(b"\n")[2], base64.b64encode(bytes(31))), b"", True), 1,
                          "root"),
        "size with a leading zero": (cp.replace(b"\n32\n", b"\n032\n"), 1, "size"),
        "size 2**64": (cp.replace(b"\n32\n", b"\n18446744073709551616\n"), 1, "size"),
        "not UTF-8": (cp.replace(b"example", b"ex\xffmple", 1), 1, "UTF-8"),
        "empty": (b"", 1, ""),
        "oversize (1 MiB + 1)": (cp + b"x" * ((1 << 20) + 1 - len(cp)), 1, "larger than"),
        "a signature by the same key id with another name": (
            _with_sigs(cp, _sig_line("other.example", kid + real.signature), False), 1, "no valid signature"),
    }


@pytest.fixture
def export_copy(world, tmp_path):
    d = tmp_path / "export"
    shutil.copytree(world.export, d)
    return d


MALFORMED = [
    "unknown signatures are ignored", "101 signature lines", "a thousand signature lines", "signature 63 bytes",
    "signature 65 bytes", "signature 4 bytes", "bad base64 in a signature", "non-canonical base64 padding",
    "no signature at all", "no blank line", "CRLF line ends", "root 31 bytes", "size with a leading zero",
    "size 2**64", "not UTF-8", "empty", "oversize (1 MiB + 1)", "a signature by the same key id with another name",
]


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_checkpoints_in_an_export(world, export_copy, case):
    data, code, word = _malformed_checkpoints(world)[case]
    (export_copy / "checkpoint").write_bytes(data)
    before = tree_digest(export_copy)
    r = invoke(["verify", "--workers=1", str(export_copy)])
    assert_clean_exit(r, allowed=(code,))
    assert word in r.stderr
    assert tree_digest(export_copy) == before  # the verifier never writes


@pytest.mark.parametrize("case", ["a thousand signature lines", "signature 63 bytes", "bad base64 in a signature",
                                  "oversize (1 MiB + 1)", "no blank line"])
def test_malformed_checkpoints_in_a_receipt_and_a_request(world, tmp_path, case):
    """The same malformed notes as the checkpoint of a receipt (check-receipt)
    and of an add-checkpoint request (the witness CLI)."""
    bad, _, _ = _malformed_checkpoints(world)[case]
    receipt = world.receipt.replace(world.checkpoint, bad)
    (tmp_path / "r").write_bytes(receipt)
    r = invoke(["check-receipt", tmp_path / "r", f"--vkey={world.vkey}"])
    assert_clean_exit(r, allowed=(1, 2))
    body = world.body.replace(world.checkpoint, bad)
    (tmp_path / "b").write_bytes(body)
    before = Path(world.wstate).read_bytes()
    r = invoke(["witness", "add-checkpoint", tmp_path / "b", f"--key={world.wkey}", f"--state={world.wstate}"])
    assert_clean_exit(r, allowed=(1, 2))
    assert Path(world.wstate).read_bytes() == before and r.stdout == ""


# --- a 100 MB line, as a sparse file, fed to every reader in a real process ----------------------


def run_measured(args, env=None, cwd=None, timeout=60):
    """Run ``python -m ledger.cli ARGS``; return (exit code, stdout, stderr,
    that process's own max RSS in KiB) via wait4."""
    e = dict(os.environ)
    e.update(env or {})
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen([sys.executable, "-m", "ledger.cli", *map(str, args)], stdout=out, stderr=err,
                             env=e, cwd=cwd)
        try:
            _, status, usage = os.wait4(p.pid, 0)
        finally:
            p.returncode = 0  # reaped by wait4
        out.seek(0)
        err.seek(0)
        return os.waitstatus_to_exitcode(status), out.read(), err.read(), usage.ru_maxrss


def sparse(path: Path, size: int, head: bytes = b"") -> Path:
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)  # the rest reads as NUL bytes, costs no disk
    return path


HUNDRED_MB = 100 << 20


@pytest.fixture(scope="module")
def baseline_rss(world):
    """The max RSS of a real process that verifies the export."""
    code, _, err, rss = run_measured(["verify", "--workers=1", world.export])
    assert code == 0, err
    return rss


def _huge_cases(world, tmp: Path):
    big_line = sparse(tmp / "big", HUNDRED_MB, b"{" + b'"a":"' + b"x" * 100)
    exp = tmp / "export"
    shutil.copytree(world.export, exp)
    sparse(exp / "checkpoint", HUNDRED_MB, world.checkpoint)
    exp2 = tmp / "export2"
    shutil.copytree(world.export, exp2)
    bundles = [p for p in exp2.joinpath("tile", "entries").rglob("*") if p.is_file()]
    assert bundles
    for p in bundles:
        sparse(p, HUNDRED_MB, p.read_bytes())
    key = sparse(tmp / "big.key", HUNDRED_MB, b"PRIVATE+KEY+")
    os.chmod(key, 0o600)
    return {
        "import a 100 MB line": (["import", big_line], world.env(), 2, "longer than 65536 bytes"),
        "verify an export whose checkpoint is 100 MB": (["verify", "--workers=1", exp], None, 1, "larger than"),
        "verify an export whose entry bundle is 100 MB": (["verify", "--workers=1", exp2], None, 1, "larger than"),
        "check-receipt of 100 MB": (["check-receipt", big_line, f"--vkey={world.vkey}"], None, 1, "receipt"),
        "a 100 MB --trusted checkpoint": (["verify", "--workers=1", world.export, "--trusted", big_line], None, 2,
                                          "trusted checkpoint"),
        "a 100 MB --vkey file": (["verify", "--workers=1", world.export, "--vkey", big_line], None, 2, "verifier key"),
        "a 100 MB witness request": (["witness", "add-checkpoint", big_line, f"--key={world.wkey}",
                                      f"--state={world.wstate}"], None, 2, "request"),
        "a 100 MB key file": (["checkpoint", "--key", key], {"FUNDLEDGER_DB": world.db}, 2, "too large"),
        "a 100 MB database file": (["balance", "--db", big_line], None, 2, "not a fundledger database"),
        "consistency from a 100 MB old checkpoint": (["consistency", big_line], world.env(), 2, "old checkpoint"),
        "attach 100 MB of cosignatures": (["attach-cosignatures", big_line, "--witness", world.vkey], world.env(), 2,
                                          "cosignature"),
    }


HUGE = ["import a 100 MB line", "verify an export whose checkpoint is 100 MB",
        "verify an export whose entry bundle is 100 MB", "check-receipt of 100 MB", "a 100 MB --trusted checkpoint",
        "a 100 MB --vkey file", "a 100 MB witness request", "a 100 MB key file", "a 100 MB database file",
        "consistency from a 100 MB old checkpoint", "attach 100 MB of cosignatures"]


@pytest.mark.parametrize("case", HUGE)
def test_a_100_mb_input_is_cut_at_its_limit(world, tmp_path, baseline_rss, case):
    args, env, code, word = _huge_cases(world, tmp_path)[case]
    before_db = fingerprint(world.db)
    before_w = Path(world.wstate).read_bytes()
    rc, out, err, rss = run_measured(args, env=env)
    text = err.decode("utf-8", "replace")
    assert "Traceback" not in text, text[-2000:]
    assert rc == code, (rc, text)
    assert len(text.splitlines()) == 1 and word in text, text
    # a reader that stops at its limit (16 MiB at most: an entry bundle)
    assert rss - baseline_rss < 40 * 1024, f"max RSS {rss} KiB, {rss - baseline_rss} KiB over a plain verify"
    assert fingerprint(world.db) == before_db and Path(world.wstate).read_bytes() == before_w


def test_a_100_mb_line_on_stdin_is_cut_at_its_limit(world, baseline_rss):
    """Standard input is spooled to a temporary file first: the 100 MB
    arrive, but memory does not grow with them and nothing is written."""
    before = fingerprint(world.db)
    e = dict(os.environ, **world.env())
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen([sys.executable, "-m", "ledger.cli", "import", "-"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=err, env=e)
        chunk = b"x" * (1 << 20)
        try:
            p.stdin.write(b'{"kind":"')
            for _ in range(100):
                p.stdin.write(chunk)
            p.stdin.close()
        except BrokenPipeError:
            pass
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = 0
        err.seek(0)
        text = err.read().decode()
    assert os.waitstatus_to_exitcode(status) == 2 and "longer than 65536 bytes" in text
    assert len(text.splitlines()) == 1
    assert usage.ru_maxrss - baseline_rss < 40 * 1024
    assert fingerprint(world.db) == before


# --- the writer's open must not change a file that is not a ledger ---------------------------------


@pytest.mark.parametrize("kind", ["another application's database", "an empty file"])
def test_a_writer_leaves_a_foreign_file_untouched(world, tmp_path, kind):
    """A writing command pointed at a file that is not a ledger exits 2 and
    leaves it byte for byte as it was (no journal-mode switch, no -wal/-shm
    files)."""
    other = tmp_path / "other.db"
    if kind == "an empty file":
        other.touch()
    else:
        c = sqlite3.connect(other)
        c.execute("CREATE TABLE t (x)")
        c.execute("INSERT INTO t VALUES (1)")
        c.commit()
        c.close()
    before = other.read_bytes()
    r = invoke(["liquidation", "XBTUSDTM", "--id=X", "--side=long", "--qty=1", "--bankruptcy-price=1",
                "--fill-price=2", "--db", other, "--key", world.key])
    assert_clean_exit(r, allowed=(2,))
    assert "not a fundledger" in r.stderr or "schema" in r.stderr
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


# --- the key file ---------------------------------------------------------------------------------


def test_the_real_init_creates_the_key_0600_under_umask_000(tmp_path):
    p = subprocess.run([sys.executable, "-m", "ledger.cli", "init", ORIGIN, "--db", tmp_path / "f.db", "--key",
                        tmp_path / "f.key"], capture_output=True, preexec_fn=lambda: os.umask(0), timeout=60)
    assert p.returncode == 0, p.stderr
    assert os.stat(tmp_path / "f.key").st_mode & 0o777 == 0o600


def test_the_real_process_refuses_a_group_readable_key(world, tmp_path):
    key = tmp_path / "k"
    shutil.copyfile(world.key, key)
    os.chmod(key, 0o640)
    before = fingerprint(world.db)
    rc, out, err, _ = run_measured(["checkpoint"], env={"FUNDLEDGER_DB": world.db, "FUNDLEDGER_KEY": str(key)})
    assert rc == 2 and b"chmod 600" in err and len(err.splitlines()) == 1 and out == b""
    assert fingerprint(world.db) == before


def needles(signer) -> dict[str, bytes]:
    seed = signer.seed
    out = {"raw seed": seed, "seed hex": seed.hex().encode(), "seed HEX": seed.hex().upper().encode(),
           "skey": signer.skey().encode(), "secret key": signer._sk}
    for secret, what in ((seed, "seed"), (b"\x01" + seed, "alg||seed")):
        for shift in range(3):  # base64 of the secret inside a longer base64 text, at each alignment
            enc = base64.b64encode(b"\0" * shift + secret)
            inner = enc[4 * ((shift + 2) // 3):][: 4 * ((len(secret) - 3) // 3)]
            out[f"{what} base64 at offset {shift}"] = inner
            out[f"{what} urlsafe base64 at offset {shift}"] = inner.replace(b"+", b"-").replace(b"/", b"_")
    return out


def test_the_key_is_in_no_published_file(world, tmp_path):
    """The seed never reaches the database (and its WAL), the export
    directory and every tile, a receipt, a consistency proof, or the
    witness's files: searched raw, hex and base64 at every alignment."""
    from ledger.ops.keys import load_key_file

    signer = load_key_file(world.key)
    ns = needles(signer)
    # the needles work: each is found in a text that does contain the key
    for what, n in ns.items():
        assert len(n) >= 16, what
    assert ns["seed base64 at offset 1"] in base64.b64encode(b"\0" + signer.seed + b"\0\0")
    (tmp_path / "r").write_bytes(world.receipt)
    (tmp_path / "b").write_bytes(world.body)
    files = [Path(world.db + s) for s in ("", "-wal", "-shm") if os.path.exists(world.db + s)]
    files += [p for p in world.export.rglob("*") if p.is_file()]
    files += [tmp_path / "r", tmp_path / "b", Path(world.wstate)]
    assert any("tile/entries" in str(p) for p in files) and any("/tile/0/" in str(p) for p in files)
    for p in files:
        data = p.read_bytes()
        for what, n in ns.items():
            assert n not in data, f"{what} found in {p}"
    # nor in a key file other than its own
    assert signer.skey().encode() not in Path(world.wkey).read_bytes()
