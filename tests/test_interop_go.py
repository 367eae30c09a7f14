"""Interop with Go's golang.org/x/mod/sumdb/note and sumdb/tlog.

A ledger made with the real CLI (two contracts, 800 liquidations imported
in two batches, two checkpoints, an incremental export, receipts and a
consistency proof) is checked by tests/interop/fundcheck, a Go program built
here against Debian's golang-golang-x-mod-dev; then one byte is flipped in
each kind of published artifact and Go must refuse it; then the other
direction: keys and signed notes made by Go are read by ledger.format.note and
ours by Go. See tests/interop/README.md.

Skipped only when ``go`` or the x/mod sources are missing (scripts/test
installs both); a build failure is a test failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger.format import note
from ledger.errors import SignatureError

HERE = Path(__file__).resolve().parent
FUNDCHECK_SRC = HERE / "interop" / "fundcheck"
GOPATH = Path(os.environ.get("FUNDLEDGER_GOPATH", "/usr/share/gocode"))
XMOD = GOPATH / "src" / "golang.org" / "x" / "mod" / "sumdb"
GO = shutil.which("go")

ORIGIN = "example.com/go-interop-fund"
FIRST_BATCH = 600  # + 2 contracts = 602 entries: tiles 0/000, 0/001, 0/002.p/90, 1/000.p/2
SECOND_BATCH = 200  # 802 entries: 0/002 becomes full, 0/003.p/34, 1/000.p/3
FIRST_RECEIPTS = (0, 1, 255, 256, 511, 601)
SECOND_RECEIPTS = (0, 600, 767, 801)

pytestmark = pytest.mark.skipif(
    GO is None or not (XMOD / "note" / "note.go").is_file() or not (XMOD / "tlog" / "tlog.go").is_file(),
    reason=f"needs `go` on PATH and x/mod sources under {XMOD} "
    "(Debian: golang-go golang-golang-x-mod-dev; scripts/test installs them)",
)


# -- building and running the Go program ----------------------------------------------


def go_env(cache: Path) -> dict:
    """GOPATH mode against Debian's /usr/share/gocode: no go.mod, no module
    proxy, no network; the user's go env file is ignored."""
    env = dict(os.environ)
    env.update(
        GO111MODULE="off",
        GOPATH=str(GOPATH),
        GOCACHE=str(cache),
        GOENV="off",
        GOFLAGS="",
        GOPROXY="off",
        GOTOOLCHAIN="local",
        CGO_ENABLED="0",
    )
    return env


@pytest.fixture(scope="module")
def fundcheck(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("go-build")
    exe = tmp / "fundcheck"
    r = subprocess.run(
        [GO, "build", "-o", str(exe), "."],
        cwd=FUNDCHECK_SRC, env=go_env(tmp / "cache"), capture_output=True, text=True, timeout=300,
    )
    if r.returncode != 0:
        pytest.fail(f"go build of {FUNDCHECK_SRC} failed:\n{r.stdout}{r.stderr}")
    return exe


def run_go(exe: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=120)


def lines(r: subprocess.CompletedProcess, prefix: str) -> list[str]:
    return [line for line in r.stdout.splitlines() if line.startswith(prefix)]


# -- a ledger made with the real CLI --------------------------------------------------


def fundledger_cmd() -> list[str]:
    script = Path(sys.executable).parent / "fundledger"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ledger.cli"]


@dataclass
class Published:
    dir: Path
    key: Path
    export: Path  # exported at the first checkpoint, then again (incrementally) at the second
    old_checkpoint: Path  # the first checkpoint, as the CLI printed it
    first_receipts: list[Path]  # against the first checkpoint
    receipts: list[Path]  # against the second
    consistency: Path  # first -> second checkpoint


def liquidations(first: int, count: int) -> str:
    """JSON Lines of liquidations on both contracts, surpluses and shortfalls."""
    out = []
    for i in range(first, first + count):
        inverse = i % 3 == 0
        bankruptcy = 39000 + (i * 13) % 400
        fill = bankruptcy + (i * 37) % 300 - 100  # better or worse than bankruptcy
        out.append(json.dumps({
            "kind": "liquidation",
            "contract": "XBTUSDM" if inverse else "XBTUSDTM",
            "id": f"L-{i}",
            "side": "long" if i % 2 else "short",
            "qty": str(1 + i % 9) if inverse else 1 + i % 9,
            "bankruptcy_price": str(bankruptcy),
            "fill_price": str(fill),
            "mark_price": str(fill + 5),
            "time": f"2026-11-23T{18 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}.123Z",
        }))
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Published:
    d = tmp_path_factory.mktemp("go-interop-ledger")
    env = dict(os.environ, FUNDLEDGER_DB=str(d / "fund.db"), FUNDLEDGER_KEY=str(d / "fund.key"))

    def cli(*args) -> bytes:
        r = subprocess.run([*fundledger_cmd(), *map(str, args)], cwd=d, env=env, capture_output=True, timeout=300)
        assert r.returncode == 0, f"fundledger {' '.join(map(str, args))}: {r.stderr.decode()}"
        return r.stdout

    cli("init", "--format", "1", ORIGIN)  # the tile layout below is that of format 1
    cli("contract", "add", "XBTUSDTM", "--currency", "USDT", "--scale", "8", "--type", "linear", "--multiplier", "0.001")
    cli("contract", "add", "XBTUSDM", "--currency", "XBT", "--scale", "8", "--type", "inverse", "--multiplier", "1")
    (d / "batch1.jsonl").write_text(liquidations(0, FIRST_BATCH))
    cli("import", d / "batch1.jsonl")
    old = d / "old.checkpoint"
    old.write_bytes(cli("checkpoint"))
    export = d / "public"
    cli("export", export)
    assert (export / "checkpoint").read_bytes() == old.read_bytes()
    first = []
    for seq in FIRST_RECEIPTS:
        first.append(d / f"first-{seq}.proof")
        cli("prove", seq, "--out", first[-1])

    (d / "batch2.jsonl").write_text(liquidations(FIRST_BATCH, SECOND_BATCH))
    cli("import", d / "batch2.jsonl")
    cli("checkpoint")
    cli("export", export)
    receipts = []
    for seq in SECOND_RECEIPTS:
        receipts.append(d / f"second-{seq}.proof")
        cli("prove", seq, "--out", receipts[-1])
    cons = d / "first-to-second.consistency"
    cli("consistency", old, "--out", cons)
    return Published(d, d / "fund.key", export, old, first, receipts, cons)


def log_args(p: Published, export: Path | None = None, receipts=None, consistency: Path | None = None) -> list:
    args = ["log", "-dir", export or p.export]
    for r in p.first_receipts + p.receipts if receipts is None else receipts:
        args += ["-receipt", r]
    args += ["-consistency", consistency or p.consistency, "-old", p.old_checkpoint]
    return args


# -- Go verifies what we publish --------------------------------------------------------


def test_go_verifies_the_export_receipts_and_consistency_proof(fundcheck, published):
    r = run_go(fundcheck, *log_args(published))
    assert r.returncode == 0, r.stdout + r.stderr
    assert not lines(r, "FAIL")
    oks = "\n".join(lines(r, "ok"))
    size = 2 + FIRST_BATCH + SECOND_BATCH
    assert f"checkpoint: note.Open verifies the signature by {ORIGIN}; origin {ORIGIN}, size {size}," in oks
    for bundle in ("000", "001", "002", "003.p/34"):
        assert f"ok   tile/entries/{bundle}: " in oks
    assert f"tree: tlog.RecordHash/StoredHashes/TreeHash over the {size} entries give the checkpoint root" in oks
    for tile in ("0/000", "0/001", "0/002", "0/003.p/34", "1/000.p/3"):
        assert f"ok   tile/{tile}: equals tlog.ReadTileData(tile/8/{tile}) over the entries" in oks
    assert "tiles: tlog.TreeHash through tlog.TileHashReader gives the checkpoint root" in oks
    assert f"tiles: all {size} leaf hashes read through tlog.TileHashReader (5 tiles read)" in oks
    assert "tiles: each of the 3 full tiles hashes (tlog.NodeHash) to its hash in its parent tile" in oks
    receipts = lines(r, "ok   receipt ")
    assert len(receipts) == len(FIRST_RECEIPTS) + len(SECOND_RECEIPTS)
    assert all("tlog.CheckRecord" in x and "proof = tlog.ProveRecord" in x for x in receipts)
    assert sum(f"in the tree of size {2 + FIRST_BATCH};" in x for x in receipts) == len(FIRST_RECEIPTS)
    (cons,) = lines(r, "ok   consistency ")
    assert f"tlog.CheckTree proves size {2 + FIRST_BATCH} -> {size}" in cons and "proof = tlog.ProveTree" in cons


def test_go_verifies_the_old_checkpoint_against_the_incremental_export(fundcheck, published):
    """The export keeps the old partial tiles: a reader holding the first
    checkpoint can still check the tree (and its entries) at that size."""
    r = run_go(fundcheck, "log", "-dir", published.export, "-checkpoint", published.old_checkpoint,
               *[a for x in published.first_receipts for a in ("-receipt", x)])
    assert r.returncode == 0, r.stdout + r.stderr
    oks = "\n".join(lines(r, "ok"))
    assert f"size {2 + FIRST_BATCH}," in oks
    for path in ("tile/entries/002.p/90", "tile/0/002.p/90", "tile/1/000.p/2"):
        assert f"ok   {path}: " in oks
    assert "tlog.TreeHash through tlog.TileHashReader gives the checkpoint root" in oks
    assert len(lines(r, "ok   receipt ")) == len(FIRST_RECEIPTS)


# -- and refuses any flipped byte ------------------------------------------------------


def flip_char(line: bytes, pos: int) -> bytes:
    """Replace the base64 character at ``pos`` by another one."""
    c = line[pos : pos + 1]
    return line[:pos] + (b"B" if c == b"A" else b"A") + line[pos + 1 :]


def flip_proof_line(data: bytes, first_hash_line: int) -> bytes:
    ls = data.split(b"\n")
    assert len(ls[first_hash_line]) == 44, ls[first_hash_line]  # a base64 hash
    ls[first_hash_line] = flip_char(ls[first_hash_line], 10)
    return b"\n".join(ls)


@pytest.mark.parametrize(
    "tile, offset, expect",
    [
        ("tile/0/000", 100, "tile/0/000: differs from tlog.ReadTileData"),
        ("tile/0/002", 32 * 255, "tile/0/002: differs from tlog.ReadTileData"),
        ("tile/1/000.p/3", 40, "tile/1/000.p/3: differs from tlog.ReadTileData"),
        ("tile/entries/001", 12, "tile/entries/001: entry 256: note.Open"),
    ],
)
def test_go_refuses_a_flipped_tile_byte(fundcheck, published, tmp_path, tile, offset, expect):
    export = tmp_path / "public"
    shutil.copytree(published.export, export)
    data = bytearray((export / tile).read_bytes())
    data[offset] ^= 0x01
    (export / tile).write_bytes(bytes(data))
    r = run_go(fundcheck, "log", "-dir", export)
    assert r.returncode == 1, r.stdout + r.stderr
    fails = "\n".join(lines(r, "FAIL"))
    assert expect in fails, r.stdout
    if not tile.startswith("tile/entries/"):
        # The tiles alone (without the entries) are refused too: through
        # tlog.TileHashReader or, for a full tile x/mod < v0.40.0 does not
        # authenticate (go.dev/issue/80744), against its parent tile.
        assert "FAIL tiles: " in fails, r.stdout


def test_go_refuses_a_flipped_receipt_proof_line(fundcheck, published, tmp_path):
    good = published.receipts[1]
    data = good.read_bytes()
    assert data.split(b"\n")[1].startswith(b"extra ") and data.split(b"\n")[2].startswith(b"index ")
    bad = tmp_path / "bad.proof"
    bad.write_bytes(flip_proof_line(data, 3))
    r = run_go(fundcheck, "log", "-dir", published.export, "-receipt", good, "-receipt", bad)
    assert r.returncode == 1, r.stdout + r.stderr
    (fail,) = lines(r, "FAIL")
    assert fail.startswith("FAIL receipt bad.proof: tlog.CheckRecord(") and "invalid transparency proof" in fail
    assert len(lines(r, "ok   receipt ")) == 1


def test_go_refuses_a_flipped_consistency_proof_line(fundcheck, published, tmp_path):
    bad = tmp_path / "bad.consistency"
    bad.write_bytes(flip_proof_line(published.consistency.read_bytes(), 1))
    r = run_go(fundcheck, *log_args(published, consistency=bad))
    assert r.returncode == 1, r.stdout + r.stderr
    (fail,) = lines(r, "FAIL")
    assert fail.startswith("FAIL consistency bad.consistency: tlog.CheckTree(") and "invalid transparency proof" in fail
    assert not lines(r, "ok   consistency ")


def test_go_refuses_a_flipped_checkpoint_signature(fundcheck, published, tmp_path):
    export = tmp_path / "public"
    shutil.copytree(published.export, export)
    data = (export / "checkpoint").read_bytes()
    sig_start = data.rindex("\u2014 ".encode())
    line_end = data.index(b"\n", sig_start)
    pos = line_end - 20  # inside the Ed25519 signature, after the key id
    (export / "checkpoint").write_bytes(data[:pos] + flip_char(data, pos)[pos:])
    assert (export / "checkpoint").read_bytes() != data
    r = run_go(fundcheck, "log", "-dir", export)
    assert r.returncode == 1, r.stdout + r.stderr
    (fail,) = lines(r, "FAIL")
    assert fail.startswith("FAIL checkpoint ") and "invalid signature for key" in fail
    # The same signature, flipped the same way, in a receipt's checkpoint.
    rec = published.receipts[0].read_bytes()
    i = rec.rindex("\u2014 ".encode())
    pos = rec.index(b"\n", i) - 20
    bad = tmp_path / "badsig.proof"
    bad.write_bytes(flip_char(rec, pos))
    r = run_go(fundcheck, "log", "-dir", published.export, "-receipt", bad)
    assert r.returncode == 1
    (fail,) = lines(r, "FAIL")
    assert fail.startswith("FAIL receipt badsig.proof: checkpoint: note.Open") and "invalid signature" in fail


# -- the other way: Go's keys and notes in ledger.format.note, ours in Go ----------------------

NOTE_TEXT = "fundledger \u21c4 golang.org/x/mod/sumdb/note\nsecond line: \u00e9t\u00e9 \u2713\n"


@pytest.fixture(scope="module")
def go_key(fundcheck, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("go-key")
    (d / "text").write_text(NOTE_TEXT, encoding="utf-8")
    r = run_go(fundcheck, "keygen", "-name", "example.com/go-made-key", "-text", d / "text", "-out", d)
    assert r.returncode == 0, r.stdout + r.stderr
    return d


def test_go_keys_and_signature_are_accepted_by_ledger_note(go_key):
    vkey = (go_key / "vkey").read_text()
    skey = (go_key / "skey").read_text()
    go_note = (go_key / "note").read_bytes()
    v = note.parse_vkey(vkey)
    s = note.parse_skey(skey)
    assert v.name == s.name == "example.com/go-made-key"
    assert s.verifier() == v
    assert v.vkey() == vkey.rstrip("\n") and s.skey() == skey.rstrip("\n")  # same spelling both ways
    text, good = note.open_note(go_note, [v])
    assert text == NOTE_TEXT.encode() and good == [v]
    # Ed25519 is deterministic: our signature with Go's key is Go's, byte for byte.
    assert note.sign_note(NOTE_TEXT.encode(), [s]) == go_note
    # A flipped bit in Go's signature is refused by us.
    i = go_note.rindex(b" ") + 30
    with pytest.raises(SignatureError):
        note.open_note(go_note[:i] + flip_char(go_note, i)[i:], [v])


def test_our_signatures_verify_in_go(fundcheck, go_key, tmp_path):
    ours = note.generate_signer("example.com/python-made-key")
    (tmp_path / "our.vkey").write_text(ours.verifier().vkey() + "\n")
    (tmp_path / "ours.note").write_bytes(note.sign_note(NOTE_TEXT.encode(), [ours]))
    # With Go's key, parsed by us, over the same text.
    go_signer = note.parse_skey((go_key / "skey").read_text())
    (tmp_path / "ours-with-go-key.note").write_bytes(note.sign_note(NOTE_TEXT.encode(), [go_signer]))
    # Both keys on one note (Go reports it by the key it knows).
    (tmp_path / "both.note").write_bytes(note.sign_note(NOTE_TEXT.encode(), [ours, go_signer]))

    r = run_go(fundcheck, "open", "-vkey", tmp_path / "our.vkey", tmp_path / "ours.note", tmp_path / "both.note")
    assert r.returncode == 0, r.stdout + r.stderr
    go_quoted = '"' + NOTE_TEXT.replace("\n", "\\n") + '"'  # Go's %q keeps printable Unicode
    assert [x.endswith(f"text {go_quoted}") for x in lines(r, "ok   open ")] == [True, True], r.stdout
    r = run_go(fundcheck, "open", "-vkey", go_key / "vkey", tmp_path / "ours-with-go-key.note", tmp_path / "both.note")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(lines(r, "ok   open ")) == 2
    # Go refuses our note under a key that did not sign it.
    r = run_go(fundcheck, "open", "-vkey", go_key / "vkey", tmp_path / "ours.note")
    assert r.returncode == 1
    assert "note has no verifiable signatures" in r.stdout


def test_go_signs_with_our_key_file(fundcheck, published, tmp_path):
    """fund.key is an x/mod skey: Go's note.NewSigner reads it, and Go's
    signature of the checkpoint text is the one our ledger published."""
    signed = published.old_checkpoint.read_bytes()
    text, sigs = note.split_note(signed)
    assert len(sigs) == 1  # no cosignatures on this log
    (tmp_path / "text").write_bytes(text)
    r = subprocess.run([str(fundcheck), "sign", "-skey", str(published.key), "-text", str(tmp_path / "text")],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == signed
