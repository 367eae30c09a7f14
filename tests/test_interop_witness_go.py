"""c2sp.org/tlog-witness both ways between fundledger and an independent Go
implementation, with real processes over loopback HTTP.

tests/interop/tlogwitness (Go, on golang.org/x/mod/sumdb/note and
sumdb/tlog only, built here against Debian's golang-golang-x-mod-dev) is a
minimal witness and a minimal log client:

* our witness (`fundledger witness init`, `add-log`, `witness serve`)
  cosigns the Go log's checkpoints as its tree grows, the Go client checks
  each cosignature with note.Open; it refuses the Go log's forks with 422,
  and answers a stale old size with 409 and the size it holds, from which
  the Go client proves again;
* the Go witness cosigns our log's checkpoints, driven by the CLI
  (`fundledger consistency`, `attach-cosignatures`, `verify --witness`);
* both witnesses answer the same requests with the same status codes, the
  C2SP spec's own example request included.

See tests/interop/README.md. Skipped only when ``go`` or the x/mod sources
are missing (scripts/test installs both); a build failure is a failure.
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from ledger.errors import SignatureError
from ledger.format import consistency, note
from ledger.tlog import merkle

HERE = Path(__file__).resolve().parent
SRC = HERE / "interop" / "tlogwitness"
VECTORS = HERE / "vectors" / "c2sp"
GOPATH = Path(os.environ.get("FUNDLEDGER_GOPATH", "/usr/share/gocode"))
XMOD = GOPATH / "src" / "golang.org" / "x" / "mod" / "sumdb"
GO = shutil.which("go")

GO_LOG = "example.com/go-interop-log"
OUR_LOG = "example.com/witness-interop-fund"
GO_WITNESS = "go-witness.example/w1"
OUR_WITNESS = "fundledger-witness.example/w1"
SIZE = "text/x.tlog.size"
TEXT = "text/plain; charset=utf-8"

pytestmark = pytest.mark.skipif(
    GO is None or not (XMOD / "note" / "note.go").is_file() or not (XMOD / "tlog" / "tlog.go").is_file(),
    reason=f"needs `go` on PATH and x/mod sources under {XMOD} "
    "(Debian: golang-go golang-golang-x-mod-dev; scripts/test installs them)",
)


# -- processes ---------------------------------------------------------------------------


def go_env(cache: Path) -> dict:
    """GOPATH mode against Debian's /usr/share/gocode, offline (as test_interop_go.py)."""
    env = dict(os.environ)
    env.update(GO111MODULE="off", GOPATH=str(GOPATH), GOCACHE=str(cache), GOENV="off", GOFLAGS="",
               GOPROXY="off", GOTOOLCHAIN="local", CGO_ENABLED="0")
    return env


@pytest.fixture(scope="session")
def tlogwitness(tmp_path_factory) -> Path:
    """The Go program, built once per session."""
    tmp = tmp_path_factory.mktemp("tlogwitness-build")
    exe = tmp / "tlogwitness"
    r = subprocess.run([GO, "build", "-o", str(exe), "."], cwd=SRC, env=go_env(tmp / "cache"),
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.fail(f"go build of {SRC} failed:\n{r.stdout}{r.stderr}")
    return exe


def fundledger(*args, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ledger.cli", *map(str, args)], cwd=cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, f"{r.args}: exit {r.returncode}\n{r.stdout}{r.stderr}"
    return r.stdout


class Served:
    """A witness process that prints `... listening on http://HOST:PORT/`
    once its socket is bound; killed by whoever started it."""

    def __init__(self, argv: list, logfile: Path, prefix: str, cwd: Path):
        self.logfile = logfile
        self.err = open(logfile, "wb")
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.err, cwd=cwd)
        try:
            sel = selectors.DefaultSelector()
            sel.register(self.p.stdout, selectors.EVENT_READ)
            line = self.p.stdout.readline().decode() if sel.select(timeout=30) else ""
            assert line.startswith(prefix + " listening on http://127.0.0.1:") and line.endswith("/\n"), (
                f"{argv[0]}: no listening line ({line!r}): {logfile.read_text()}")
        except BaseException:
            self.kill()
            raise
        self.url = line.split(" on ", 1)[1].strip()

    def stop(self) -> str:
        """SIGTERM, then what it logged."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.err.close()
        return self.logfile.read_text()

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(timeout=15)
        self.err.close()


@dataclass
class Witness:
    """A running witness: its URL (ending in /), its cosignature/v1 vkey and
    the file holding it, the process."""

    url: str
    vkey: str
    vkey_file: Path
    proc: Served

    @property
    def verifier(self) -> note.Verifier:
        return note.parse_vkey(self.vkey)

    def post(self, body: bytes) -> httpx.Response:
        return httpx.post(self.url + "add-checkpoint", content=body, timeout=15)


def start_go_witness(exe: Path, workdir: Path, *log_vkey_files: Path, name: str = GO_WITNESS) -> Witness:
    """`tlogwitness witness` on a free port, witnessing the logs whose note
    vkey files are given; returns once it listens."""
    workdir.mkdir(parents=True, exist_ok=True)
    vkey_file = workdir / "go-witness.vkey"
    argv = [str(exe), "witness", "-name", name, "-vkey-out", str(vkey_file), "-lifetime", "5m"]
    for v in log_vkey_files:
        argv += ["-log", str(v)]
    proc = Served(argv, workdir / "go-witness.log", "tlogwitness", workdir)
    return Witness(proc.url, vkey_file.read_text().strip(), vkey_file, proc)


def start_our_witness(workdir: Path, *log_vkey_files: Path, name: str = OUR_WITNESS) -> Witness:
    """`fundledger witness init` + `add-log` + `witness serve --port 0`."""
    workdir.mkdir(parents=True, exist_ok=True)
    key, state = workdir / "witness.key", workdir / "witness.db"
    ok(fundledger("witness", "init", name, "--key", key, "--state", state, cwd=workdir))
    for v in log_vkey_files:
        ok(fundledger("witness", "add-log", v, "--key", key, "--state", state, cwd=workdir))
    argv = [sys.executable, "-m", "ledger.cli", "witness", "serve", "--port", "0", "--key", str(key),
            "--state", str(state), "--rate", "1000", "--burst", "1000"]
    proc = Served(argv, workdir / "serve.log", "witness", workdir)
    vkey_file = workdir / "witness.vkey"
    return Witness(proc.url, vkey_file.read_text().strip(), vkey_file, proc)


@pytest.fixture
def go_witness(tlogwitness, tmp_path):
    """Start the Go witness: ``go_witness(*log_vkey_files, name=...)`` ->
    :class:`Witness` (``url``, ``vkey``, ``vkey_file``). Each is stopped at
    the end of the test."""
    started: list[Witness] = []

    def start(*log_vkey_files: Path, name: str = GO_WITNESS) -> Witness:
        w = start_go_witness(tlogwitness, tmp_path / f"go-witness-{len(started)}", *log_vkey_files, name=name)
        started.append(w)
        return w

    yield start
    for w in started:
        w.proc.kill()


@pytest.fixture
def our_witness(tmp_path):
    """Start fundledger's witness: ``our_witness(*log_vkey_files, name=...)``."""
    started: list[Witness] = []

    def start(*log_vkey_files: Path, name: str = OUR_WITNESS) -> Witness:
        w = start_our_witness(tmp_path / f"our-witness-{len(started)}", *log_vkey_files, name=name)
        started.append(w)
        return w

    yield start
    for w in started:
        w.proc.kill()


@dataclass
class GoLog:
    dir: Path
    skey: Path
    vkey: Path


def go_log_key(exe: Path, d: Path, name: str = GO_LOG) -> GoLog:
    """An Ed25519 note key made by x/mod's note.GenerateKey."""
    d.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([str(exe), "keygen", "-name", name, "-out", str(d)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return GoLog(d, d / "skey", d / "vkey")


def go_client(exe: Path, log: GoLog, w: Witness, *commands: str) -> list[dict]:
    """Run the Go log client on ``commands``; its JSON answers, one per
    command (the first, "keys", is x/mod's view of the witness key)."""
    r = subprocess.run([str(exe), "client", "-skey", str(log.skey), "-log-vkey", str(log.vkey),
                        "-witness", w.url, "-witness-vkey", str(w.vkey_file)],
                       input="".join(c + "\n" for c in commands), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["cmd"] for o in out] == ["keys"] + [c.split()[0] for c in commands], r.stdout
    return out


def statuses(result: dict) -> list[tuple[int, int]]:
    """(old size, status) of each attempt of a Go client's submit."""
    return [(a["old"], a["status"]) for a in result["attempts"]]


def our_cosignature_check(result: dict, w: Witness) -> int:
    """The timestamp ledger.format.note reads from the cosignature the Go
    client accepted, on the Go client's checkpoint."""
    text, _ = note.split_note(result["checkpoint"].encode())
    (sig,) = note.parse_signature_lines(result["cosignature"].encode())
    return note.verify_cosignature(text, sig, w.verifier)


# -- our witness, the Go log ---------------------------------------------------------


def test_our_witness_cosigns_the_go_logs_growth(tlogwitness, our_witness, tmp_path):
    log = go_log_key(tlogwitness, tmp_path / "go-log")
    w = our_witness(log.vkey)
    start = int(time.time())
    out = go_client(tlogwitness, log, w,
                    "submit 0",  # the empty tree: SHA-256 of nothing (x/mod 0.7.0's TreeHash(0) is zeros)
                    "append 5", "submit 0",
                    "append 3", "submit 5",
                    "append 250", "submit 8",  # across a full 256-leaf tile
                    "append 1", "submit 0",  # stale: 409, then from the size held
                    "submit 259")  # the same checkpoint again, from its own size
    # x/mod's note.NewVerifier knows only Ed25519 note keys (type 0x01): the
    # Go client checks the cosignature/v1 (0x04) key with its own note.Verifier.
    assert out[0]["xmod_newverifier_error"] == "unknown verifier algorithm"
    subs = [o for o in out if o["cmd"] == "submit"]
    assert [s["size"] for s in subs] == [0, 5, 8, 258, 259, 259]
    assert subs[0]["root"] == base64.b64encode(merkle.EMPTY_ROOT).decode()
    assert [statuses(s) for s in subs] == [[(0, 200)], [(0, 200)], [(5, 200)], [(8, 200)], [(0, 409), (258, 200)],
                                           [(259, 200)]]
    conflict = subs[4]["attempts"][0]
    assert (conflict["content_type"], conflict["body"]) == (SIZE, "258\n")
    assert [a["proof_hashes"] > 0 for s in subs[2:5] for a in s["attempts"] if a["status"] == 200] == [True] * 3
    for s in subs:
        assert s["cosigned"] and not s.get("error"), s
        assert s["cosignature"].startswith(f"\u2014 {OUR_WITNESS} ")
        assert s["attempts"][-1]["content_type"] == TEXT
        # the same cosignature, read by ledger.format.note: same timestamp, now
        assert our_cosignature_check(s, w) == s["timestamp"]
        assert start - 5 <= s["timestamp"] <= time.time() + 5
    # What monitors read: the last checkpoint, with the cosignature.
    r = httpx.get(w.url + "checkpoint/" + quote(GO_LOG, safe=""), timeout=15)
    assert r.status_code == 200 and r.content == (subs[-1]["checkpoint"] + subs[-1]["cosignature"]).encode()
    err = w.proc.stop()
    assert "Traceback" not in err
    assert sum(" POST /add-checkpoint 409 " in ln for ln in err.splitlines()) == 1


def test_our_witness_refuses_the_go_logs_forks(tlogwitness, our_witness, tmp_path):
    log = go_log_key(tlogwitness, tmp_path / "go-log")
    w = our_witness(log.vkey)
    (_, _, honest) = go_client(tlogwitness, log, w, "append 259", "submit 0")
    assert statuses(honest) == [(0, 200)] and honest["cosigned"]
    # Same key, same size, another last leaf: 422 (tlog-witness after
    # C2SP/C2SP#280; 409 before it).
    (_, _, _, same_size) = go_client(tlogwitness, log, w, "append 258", "append 1 fork", "submit 259")
    assert same_size["size"] == 259 and same_size["root"] != honest["root"]
    assert statuses(same_size) == [(259, 422)] and not same_size["cosigned"]
    # A larger tree that does not extend the cosigned one: its own proof
    # from 259 (valid for its own tree) does not verify against the root
    # the witness holds.
    (_, _, _, larger) = go_client(tlogwitness, log, w, "append 100", "append 200 fork", "submit 259")
    assert larger["size"] == 300
    assert statuses(larger) == [(259, 422)] and larger["attempts"][0]["proof_hashes"] > 0
    # The same fork from a stale size: 409 with the size held, then 422.
    (_, _, _, stale) = go_client(tlogwitness, log, w, "append 100", "append 200 fork", "submit 0")
    assert statuses(stale) == [(0, 409), (259, 422)] and stale["attempts"][0]["body"] == "259\n"
    # Another key of the log's name: 403. Another log: 404.
    impostor = go_log_key(tlogwitness, tmp_path / "impostor", GO_LOG)
    (_, _, forged) = go_client(tlogwitness, impostor, w, "append 259", "submit 259")
    assert statuses(forged) == [(259, 403)]
    stranger = go_log_key(tlogwitness, tmp_path / "stranger", "example.com/not-witnessed")
    (_, _, unknown) = go_client(tlogwitness, stranger, w, "append 3", "submit 0")
    assert statuses(unknown) == [(0, 404)]
    # The honest log goes on from the size the witness held all along.
    (_, _, _, on) = go_client(tlogwitness, log, w, "append 259", "append 41", "submit 259")
    assert statuses(on) == [(259, 200)] and on["cosigned"] and on["size"] == 300
    err = w.proc.stop()
    assert "Traceback" not in err
    assert sum(" POST /add-checkpoint 422 " in ln for ln in err.splitlines()) == 3


def go_open(exe: Path, log_vkey: Path, witness_vkey: Path, msg: bytes, tmp: Path) -> tuple[int, dict]:
    """`tlogwitness open`: note.Open of a cosigned checkpoint in Go."""
    f = tmp / f"note-{time.monotonic_ns()}.txt"
    f.write_bytes(msg)
    r = subprocess.run([str(exe), "open", "-log-vkey", str(log_vkey), "-witness-vkey", str(witness_vkey), str(f)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    return r.returncode, json.loads(r.stdout)


def flip_cosignature(line: bytes, offset: int) -> bytes:
    """The cosignature line with one bit flipped at ``offset`` of its
    decoded bytes (after the 4-byte key id: 0-7 the timestamp, 8- the
    Ed25519 signature)."""
    head, b64 = line.rstrip(b"\n").rsplit(b" ", 1)
    raw = bytearray(base64.b64decode(b64))
    raw[4 + offset] ^= 0x01
    return head + b" " + base64.b64encode(bytes(raw)) + b"\n"


def test_go_verifies_our_cosignatures_and_refuses_bad_ones(tlogwitness, our_witness, tmp_path):
    log = go_log_key(tlogwitness, tmp_path / "go-log")
    w = our_witness(log.vkey)
    (_, _, sub) = go_client(tlogwitness, log, w, "append 3", "submit 0")
    cp, line = sub["checkpoint"].encode(), sub["cosignature"].encode()
    assert go_open(tlogwitness, log.vkey, w.vkey_file, cp + line, tmp_path) == (
        0, {"verified": [GO_LOG, OUR_WITNESS], "timestamp": sub["timestamp"]})
    text, _ = note.split_note(cp)
    for offset, what in ((7, "timestamp"), (8, "R"), (40, "S"), (71, "S")):
        bad = flip_cosignature(line, offset)
        rc, res = go_open(tlogwitness, log.vkey, w.vkey_file, cp + bad, tmp_path)
        assert rc == 1 and res["error"].startswith("note.Open: invalid signature for key " + OUR_WITNESS), what
        with pytest.raises(SignatureError):
            note.verify_cosignature(text, note.parse_signature_lines(bad)[0], w.verifier)
    # Under another key of the witness's name, the line is unknown: not cosigned.
    other = tmp_path / "other.vkey"
    other.write_text(note.generate_signer(OUR_WITNESS, note.ALG_COSIGNATURE_V1).verifier().vkey() + "\n")
    assert go_open(tlogwitness, log.vkey, other, cp + line, tmp_path) == (
        1, {"verified": [GO_LOG], "error": "not signed by both the log and the witness"})
    # A cosignature made by ledger.format.note.cosign at the spec example's
    # timestamp (1679315147): Go reads that timestamp back.
    signer = note.parse_skey((Path(w.vkey_file).with_suffix(".key")).read_text())
    ours = note.cosign(text, signer, 1679315147)
    assert go_open(tlogwitness, log.vkey, w.vkey_file, cp + ours, tmp_path) == (
        0, {"verified": [GO_LOG, OUR_WITNESS], "timestamp": 1679315147})


# -- the Go witness, our log -----------------------------------------------------------


def liquidations(first: int, count: int) -> str:
    return "".join(json.dumps({
        "kind": "liquidation", "contract": "XBTUSDTM", "id": f"L-{i}", "side": "long" if i % 2 else "short",
        "qty": 1 + i % 5, "bankruptcy_price": str(39000 + i), "fill_price": str(39010 + i % 40 - 20),
    }) + "\n" for i in range(first, first + count))


class CliLog:
    """A fundledger log driven through the real CLI in ``dir``."""

    def __init__(self, d: Path, origin: str = OUR_LOG):
        self.dir = d
        d.mkdir(parents=True, exist_ok=True)
        self.env = {"FUNDLEDGER_DB": str(d / "fund.db"), "FUNDLEDGER_KEY": str(d / "fund.key")}
        self.imported = 0
        ok(self.cli("init", origin))
        ok(self.cli("contract", "add", "XBTUSDTM", "--currency", "USDT", "--scale", "8"))
        self.vkey = d / "fund.vkey"

    def cli(self, *args) -> subprocess.CompletedProcess:
        return fundledger(*args, cwd=self.dir, env=self.env)

    def grow(self, n: int) -> int:
        """Import ``n`` liquidations, sign a checkpoint; the new tree size."""
        batch = self.dir / f"batch-{self.imported}.jsonl"
        batch.write_text(liquidations(self.imported, n))
        ok(self.cli("import", batch))
        self.imported += n
        return note.parse_signed_checkpoint(ok(self.cli("checkpoint")).encode()).tree_size

    def checkpoint(self) -> bytes:
        """The latest checkpoint as published (with the cosignatures attached)."""
        return consistency.parse_consistency(self.request(0, "latest.txt")).checkpoint

    def request(self, old_size: int, name: str = "request.txt") -> bytes:
        """`fundledger consistency --old-size N --out FILE`."""
        ok(self.cli("consistency", "--old-size", old_size, "--out", self.dir / name))
        return (self.dir / name).read_bytes()

    def cosign_with(self, w: Witness, old_size: int) -> httpx.Response:
        """Post the request from ``old_size``; on a 200, attach the reply and
        check that `verify --witness` accepts it."""
        r = w.post(self.request(old_size))
        if r.status_code == 200:
            (self.dir / "reply.txt").write_bytes(r.content)
            out = ok(self.cli("attach-cosignatures", self.dir / "reply.txt", "--witness", w.vkey_file))
            assert out.startswith("attached cosignatures by ")
            ok(self.cli("verify", "--witness", w.vkey_file))
        return r


def test_the_go_witness_cosigns_our_log(go_witness, tmp_path):
    log = CliLog(tmp_path / "log")
    first = log.grow(40)
    w = go_witness(log.vkey)
    assert note.parse_vkey(w.vkey).alg == note.ALG_COSIGNATURE_V1  # our parser reads the Go witness's vkey

    r = log.cosign_with(w, 0)
    assert (r.status_code, r.headers["content-type"]) == (200, TEXT), r.text
    assert r.content.startswith(f"\u2014 {GO_WITNESS} ".encode())
    text, _ = note.split_note(log.checkpoint())
    (sig,) = note.parse_signature_lines(r.content)
    assert abs(note.verify_cosignature(text, sig, w.verifier) - time.time()) < 60

    # Only the Go witness's key verifies it: the same name, another key, fails.
    other = note.generate_signer(GO_WITNESS, note.ALG_COSIGNATURE_V1).verifier()
    (tmp_path / "other.vkey").write_text(other.vkey() + "\n")
    bad = log.cli("verify", "--witness", tmp_path / "other.vkey")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "cosign" in (bad.stdout + bad.stderr).lower()
    assert log.cli("attach-cosignatures", log.dir / "reply.txt", "--witness", tmp_path / "other.vkey").returncode != 0

    # The log grows: a proof from the size the witness holds.
    second = log.grow(300)  # past a full 256-entry tile
    assert second > first
    r = log.cosign_with(w, first)
    assert r.status_code == 200, r.text
    assert consistency.parse_consistency(log.request(first)).proof  # a real proof, not an empty one

    # The request from the old size again: the Go witness holds `second` now.
    r = w.post(log.request(first))
    assert (r.status_code, r.headers["content-type"], r.text) == (409, SIZE, f"{second}\n")
    # A log that lost track asks from 0, learns the size from the 409, proves from there.
    third = log.grow(7)
    r = w.post(log.request(0))
    assert (r.status_code, r.text) == (409, f"{second}\n")
    r = log.cosign_with(w, int(r.text))
    assert r.status_code == 200, r.text
    ok(log.cli("verify", "--witness", w.vkey_file, "--json"))
    assert note.parse_signed_checkpoint(log.checkpoint()).tree_size == third
    # The request now carries the Go witness's own cosignature (`consistency`
    # sends the checkpoint as published): a key it does not check, ignored.
    again = log.request(third)
    assert again.count(f"\u2014 {GO_WITNESS} ".encode()) == 1
    assert w.post(again).status_code == 200
    err = w.proc.stop()
    assert [ln.split()[3] for ln in err.splitlines() if "/add-checkpoint" in ln] == ["200", "200", "409", "409", "200",
                                                                                     "200"]


def test_checkpoint_policy_is_cosigned_by_the_go_witness_and_ours(go_witness, our_witness, tmp_path):
    """`fundledger checkpoint --policy`: our log asks both implementations
    itself, and publishes only with both cosignatures (quorum all)."""
    log = CliLog(tmp_path / "log")
    log.grow(30)
    go, ours = go_witness(log.vkey), our_witness(log.vkey)
    policy = log.dir / "witnesses.policy"
    policy.write_text(f"log {log.vkey.read_text().strip()}\n"
                      f"witness go {go.vkey} {go.url}\nwitness ours {ours.vkey} {ours.url}\n"
                      "group both all go ours\nquorum both\n")
    for grow in (0, 300):
        if grow:
            log.grow(grow)
        r = log.cli("checkpoint", "--policy", policy)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "go: cosigned" in r.stderr and "ours: cosigned" in r.stderr
    ok(log.cli("verify", "--policy", policy))
    names = {s.name for s in note.split_note(log.checkpoint())[1]}
    assert {GO_WITNESS, OUR_WITNESS} <= names
    go.proc.kill()
    log.grow(5)
    r = log.cli("checkpoint", "--policy", policy)  # the Go witness is gone: not published
    assert r.returncode == 1 and "go: ConnectError" in r.stderr and "both (1 of 2 witnessed, 2 needed)" in r.stderr


# -- the same requests to both witnesses -------------------------------------------------------


def test_both_witnesses_answer_alike(our_witness, go_witness, tmp_path):
    """One fundledger log, both witnesses watching it: every request, good or
    bad, gets the same status code from each, and every 200 a cosignature
    that ledger.format.note verifies."""
    log = CliLog(tmp_path / "log")
    n = log.grow(5)
    signer = note.parse_skey((log.dir / "fund.key").read_text())
    cp_n = log.checkpoint()
    cp = note.parse_signed_checkpoint(cp_n)

    def req(old: int, cp_note: bytes, proof=()) -> bytes:
        return b"".join([b"old %d\n" % old, *(base64.b64encode(h) + b"\n" for h in proof), b"\n", cp_note])

    def signed(c: note.Checkpoint, *signers) -> bytes:
        return note.sign_note(c.text(), list(signers) or [signer])

    stranger = note.generate_signer("example.com/stranger")
    steps = [
        ("empty body", b"", 400),
        ("leading zero", b"old 01\n\n" + cp_n, 400),
        ("old above size", b"old %d\n\n" % (n + 1) + cp_n, 400),
        ("bad base64", b"old 0\n%%%%\n\n" + cp_n, 400),
        ("64 proof lines", b"old 0\n" + (b"A" * 43 + b"=\n") * 64 + b"\n" + cp_n, 400),
        ("not a checkpoint", b"old 0\n\nnot a checkpoint\n", 400),
        ("unknown origin", req(0, signed(note.Checkpoint(stranger.name, 0, merkle.EMPTY_ROOT), stranger)), 404),
        ("another key of the name", req(0, signed(cp, note.generate_signer(OUR_LOG))), 403),
        ("size 0, a root not the empty tree's", req(0, signed(note.Checkpoint(OUR_LOG, 0, bytes(32)))), 422),
        ("a proof from size 0", req(0, cp_n, [bytes(32)]), 422),
        ("first", log.request(0), 200),
        ("again from 0", log.request(0), 409),
        ("same size, another root", req(n, signed(note.Checkpoint(OUR_LOG, n, bytes(32)))), 422),
        ("an unknown key's signature beside the log's", req(n, signed(cp, stranger, signer)), 200),
    ]
    size = log.grow(250)
    good = consistency.parse_consistency(log.request(n))
    tampered = consistency.ConsistencyProof(n, (bytes(32),) + good.proof[1:], good.checkpoint)
    steps += [
        ("a tampered proof", consistency.format_consistency(tampered), 422),
        ("a proof one hash short", consistency.format_consistency(
            consistency.ConsistencyProof(n, good.proof[:-1], good.checkpoint)), 422),
        ("grown", log.request(n), 200),
        ("stale", log.request(n), 409),
    ]
    ours, go = our_witness(log.vkey), go_witness(log.vkey)
    for w in (ours, go):
        got = []
        for what, body, _ in steps:
            r = w.post(body)
            got.append((what, r.status_code))
            if r.status_code == 409:
                held = n if what == "again from 0" else size
                assert (r.headers["content-type"], r.text) == (SIZE, f"{held}\n")
            if r.status_code == 200:
                assert r.headers["content-type"] == TEXT
                text, _ = note.split_note(consistency.parse_consistency(body).checkpoint)
                (sig,) = note.parse_signature_lines(r.content)
                note.verify_cosignature(text, sig, w.verifier)
        assert got == [(what, status) for what, _, status in steps], w.url
        assert httpx.get(w.url + "add-checkpoint", timeout=15).status_code == 405


def test_both_witnesses_parse_the_spec_example_request(our_witness, go_witness, tmp_path):
    """The tlog-witness spec's example request (tests/vectors/c2sp, verbatim).
    C2SP publishes no key for its examples, so neither witness can cosign
    it: both parse it and answer 404 (unknown origin), then, watching a key
    of ours named after its origin, 403 (neither signature is by that key)."""
    spec = json.loads((VECTORS / "c2sp-spec-examples.json").read_text("utf-8"))
    body = spec["witness_request"].encode()
    parsed = consistency.parse_consistency(body)
    assert parsed.old_size == spec["witness_request_old_size"] and len(parsed.proof) == 4
    origin = spec["checkpoint_origin"]
    unrelated, sofa = tmp_path / "unrelated.vkey", tmp_path / "sofa.vkey"
    unrelated.write_text(note.generate_signer("example.com/unrelated").verifier().vkey() + "\n")
    sofa.write_text(note.generate_signer(origin).verifier().vkey() + "\n")
    for w in (our_witness(unrelated), go_witness(unrelated)):
        assert w.post(body).status_code == 404
    for w in (our_witness(sofa), go_witness(sofa)):
        r = w.post(body)
        assert r.status_code == 403, r.text
