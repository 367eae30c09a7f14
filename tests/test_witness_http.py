"""`fundledger witness serve`: c2sp.org/tlog-witness over HTTP, tested with
real processes over loopback: every status code with a real ledger's
checkpoints and proofs, forks, conflicts and their retry, races, a key
rotation followed while it serves, the limits, the monitoring GET and the
migration of a JSON state."""

from __future__ import annotations

import base64
import json
import os
import selectors
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from conftest import ORIGIN
from ledger.format import consistency, note
from ledger.ops import api, witness, witness_state
from ledger.store.store import Store
from ledger.tlog import merkle

ROOT = Path(__file__).resolve().parent.parent


def liq(i, qty="1"):
    return {"kind": "liquidation", "contract": "XBTUSDTM", "id": f"L-{i}", "side": "long", "qty": qty,
            "bankruptcy_price": "39000", "fill_price": "39010"}


def submit(url: str, request: bytes, timeout: float = 10.0) -> tuple[int, bytes, str]:
    """POST an add-checkpoint request: (status, body, content type)."""
    r = httpx.post(url + "add-checkpoint", content=request, timeout=timeout)
    return r.status_code, r.content, r.headers.get("content-type", "")


class Server:
    """`fundledger witness serve --port 0` in a subprocess."""

    def __init__(self, key: str, state: str, *extra: str, cwd=None):
        self.log = Path(state).with_name(f"serve-{time.monotonic_ns()}.log")
        self.stderr = open(self.log, "wb")
        self.p = subprocess.Popen([sys.executable, "-m", "ledger.cli", "witness", "serve", "--port", "0",
                                   "--key", key, "--state", state, *extra],
                                  stdout=subprocess.PIPE, stderr=self.stderr, cwd=cwd or ROOT)
        sel = selectors.DefaultSelector()
        sel.register(self.p.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=30):
            self.p.kill()
            raise AssertionError(f"no listening line: {self.log.read_text()}")
        line = self.p.stdout.readline().decode()
        assert line.startswith("witness listening on http://127.0.0.1:") and line.endswith("/\n"), line
        self.url = line.split(" on ", 1)[1].strip()
        self.port = int(self.url.rsplit(":", 1)[1].strip("/"))

    def stop(self) -> str:
        self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(timeout=15)
        self.stderr.close()
        err = self.log.read_text()
        assert rc == 0, err
        assert "Traceback" not in err, err
        return err

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(*extra, key=None, state=None, cwd=None):
        s = Server(key or str(tmp_path / "w.key"), state or str(tmp_path / "w.db"), *extra, cwd=cwd)
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()


@pytest.fixture
def world(ledger, tmp_path):
    """A ledger at a checkpoint of size 6 and a witness of it (not yet cosigned)."""
    ledger.contract()
    ledger.append(*[liq(i) for i in range(5)])
    ledger.checkpoint()
    w = witness.init_witness(str(tmp_path / "w.key"), str(tmp_path / "w.db"), "witness.example")
    witness.add_log(str(tmp_path / "w.db"), ledger.store.vkey)
    ledger.w = w
    return ledger


def grow(ledger, start, n, signer=None):
    ledger.store.append([liq(i) for i in range(start, start + n)], [signer or ledger.signer])
    ledger.store.add_checkpoint([signer or ledger.signer])


def fork_of(ledger, tmp_path, name="fork.db") -> Store:
    """A copy of the ledger as it is now: same key, same origin, to grow apart."""
    a, b = sqlite3.connect(ledger.db), sqlite3.connect(str(tmp_path / name))
    a.backup(b)
    a.close()
    b.close()
    return Store.open(str(tmp_path / name))


def signed(text: bytes, *signers) -> bytes:
    return note.sign_note(text, list(signers))


def request(old: int, cp_note: bytes, proof=()) -> bytes:
    return b"".join([b"old %d\n" % old, *(base64.b64encode(h) + b"\n" for h in proof), b"\n", cp_note])


def cosigner_ok(ledger, body: bytes, cp_note: bytes) -> int:
    text, _ = note.split_note(cp_note)
    return note.verify_cosignature(text, note.parse_signature_lines(body)[0], ledger.w.verifier())


def test_every_status_code(world, tmp_path, serve):
    ledger = world
    s = serve("--rate", "1000", "--burst", "1000")
    first = api.consistency(ledger.store, old_size=0)
    cp6 = consistency.parse_consistency(first).checkpoint
    # 400: malformed, or old size above the checkpoint's
    for bad in (b"", b"old 01\n\n" + cp6, b"old 7\n\n" + cp6, b"old 0\n%%%%\n\n" + cp6, b"old 0\n\nnot a checkpoint\n",
                b"old 0\n" + b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" * 64 + b"\n" + cp6, b"old -1\n\n" + cp6):
        assert submit(s.url, bad)[0] == 400, bad[:40]
    # 404: a log this witness does not watch
    stranger = note.generate_signer("stranger.example")
    assert submit(s.url, request(0, signed(note.Checkpoint("stranger.example", 0, merkle.EMPTY_ROOT).text(),
                                           stranger)))[0] == 404
    # 403: signed by another key of the same name only
    cp = note.parse_signed_checkpoint(cp6)
    assert submit(s.url, request(0, signed(cp.text(), note.generate_signer(ORIGIN))))[0] == 403
    # 200, with an unknown key's signature beside the log's (ignored)
    extra = signed(cp.text(), note.generate_signer("other.example"), ledger.signer)
    status, body, ctype = submit(s.url, request(0, extra))
    assert (status, ctype) == (200, "text/plain; charset=utf-8") and body.startswith("— witness.example ".encode())
    assert cosigner_ok(ledger, body, cp6) > 0
    # 409: not from the size held; the body is that size; a retry from it succeeds
    grow(ledger, 5, 4)
    status, body, ctype = submit(s.url, api.consistency(ledger.store, old_size=0))
    assert (status, body, ctype) == (409, b"6\n", "text/x.tlog.size")
    retry = api.consistency(ledger.store, old_size=int(body))
    status, body, _ = submit(s.url, retry)
    assert status == 200 and cosigner_ok(ledger, body, consistency.parse_consistency(retry).checkpoint)
    # 422: same size, another root (PR #280: not 409 any more); a proof that does not verify
    held = witness.cosigned(str(tmp_path / "w.db"), ORIGIN)
    assert held.size == 10
    assert submit(s.url, request(10, signed(note.Checkpoint(ORIGIN, 10, bytes(32)).text(), ledger.signer)))[0] == 422
    grow(ledger, 9, 2)
    body = consistency.parse_consistency(api.consistency(ledger.store, old_size=10))
    tampered = consistency.ConsistencyProof(10, (bytes(32),) + body.proof[1:], body.checkpoint)
    assert submit(s.url, consistency.format_consistency(tampered))[0] == 422
    # 405: only POST on add-checkpoint; 404 elsewhere
    assert httpx.get(s.url + "add-checkpoint").status_code == 405
    assert httpx.put(s.url + "add-checkpoint", content=b"x").headers["allow"] == "POST"
    assert httpx.get(s.url + "nothing").status_code == 404
    err = s.stop()
    # every refusal is one line naming method, path, status and reason
    lines = [ln for ln in err.splitlines() if ln.startswith("witness: 127.0.0.1 ")]
    assert any(" POST /add-checkpoint 409 conflict" in ln for ln in lines)
    assert any(" POST /add-checkpoint 403 checkpoint not signed" in ln for ln in lines)
    assert any(" GET /add-checkpoint 405 " in ln for ln in lines)
    assert sum(" 400 " in ln for ln in lines) == 7


def test_size_zero_rules(world, tmp_path, serve):
    """PR #280: a size-0 checkpoint must have the empty tree's root (422
    otherwise); a proof from size 0 must be empty (422)."""
    ledger = world
    s = serve()
    zero = note.Checkpoint(ORIGIN, 0, merkle.EMPTY_ROOT)
    assert submit(s.url, request(0, signed(note.Checkpoint(ORIGIN, 0, bytes(32)).text(), ledger.signer)))[0] == 422
    cp6 = consistency.parse_consistency(api.consistency(ledger.store, old_size=0)).checkpoint
    assert submit(s.url, request(0, cp6, [bytes(32)]))[0] == 422
    status, body, _ = submit(s.url, request(0, signed(zero.text(), ledger.signer)))
    assert status == 200
    assert witness.cosigned(str(tmp_path / "w.db"), ORIGIN).size == 0
    assert submit(s.url, request(0, cp6))[0] == 200  # from the empty tree: no proof needed
    s.stop()


def test_a_fork_is_refused_once_the_first_is_cosigned(world, tmp_path, serve):
    ledger = world
    s = serve()
    assert submit(s.url, api.consistency(ledger.store, old_size=0))[0] == 200
    other = fork_of(ledger, tmp_path)
    grow(ledger, 5, 3)
    other.append([liq(100 + i, qty="7") for i in range(3)], [ledger.signer])
    other.add_checkpoint([ledger.signer])
    main_req, fork_req = api.consistency(ledger.store, old_size=6), api.consistency(other, old_size=6)
    assert submit(s.url, main_req)[0] == 200
    # the fork, same key and origin, same size: a different root (422); from the old size: 409, then 422
    fork_cp = consistency.parse_consistency(fork_req).checkpoint
    assert submit(s.url, request(9, fork_cp))[0] == 422
    assert submit(s.url, fork_req) == (409, b"9\n", "text/x.tlog.size")
    other.append([liq(200)], [ledger.signer])
    other.add_checkpoint([ledger.signer])
    assert submit(s.url, api.consistency(other, old_size=9))[0] == 422
    other.close()
    s.stop()


def test_concurrent_requests_cosign_only_consistent_growth(world, tmp_path, serve):
    """Many requests at once from the same size, to different sizes of the
    log and of a fork of it: exactly one is cosigned, the rest get 409; the
    state then holds the one cosigned, and only consistent growth from it
    is cosigned afterwards."""
    ledger = world
    s = serve("--rate", "1000", "--burst", "1000", "--max-concurrent", "32")
    assert submit(s.url, api.consistency(ledger.store, old_size=0))[0] == 200
    other = fork_of(ledger, tmp_path)
    reqs = []
    for k in range(4):  # the log at 7, 8, 9, 10 and the fork at the same sizes, all proved from 6
        grow(ledger, 5 + k, 1)
        other.append([liq(100 + k, qty="9")], [ledger.signer])
        other.add_checkpoint([ledger.signer])
        reqs += [("main", api.consistency(ledger.store, old_size=6)), ("fork", api.consistency(other, old_size=6))]
    reqs = reqs * 3
    barrier = threading.Barrier(len(reqs))

    def go(req):
        barrier.wait()
        return submit(s.url, req[1], timeout=30)

    with ThreadPoolExecutor(len(reqs)) as pool:
        results = list(pool.map(go, reqs))
    statuses = [r[0] for r in results]
    assert statuses.count(200) == 1, statuses
    assert set(statuses) == {200, 409}, statuses
    winner = reqs[statuses.index(200)]
    held = witness.cosigned(str(tmp_path / "w.db"), ORIGIN)
    assert held.checkpoint.encode() == consistency.parse_consistency(winner[1]).checkpoint
    assert all(body == f"{held.size}\n".encode() for st, body, _ in results if st == 409)
    # the losers retry from the size returned: only the winner's own history grows
    for which, store in (("main", ledger.store), ("fork", other)):
        store.append([liq(300 if which == "main" else 400)], [ledger.signer])
        store.add_checkpoint([ledger.signer])
        now_held = witness.cosigned(str(tmp_path / "w.db"), ORIGIN).size
        status = submit(s.url, api.consistency(store, old_size=now_held))[0]
        assert status == (200 if which == winner[0] else 422), (which, winner[0], status)
    after = witness.cosigned(str(tmp_path / "w.db"), ORIGIN)
    assert after.size > held.size
    other.close()
    s.stop()


def test_a_rotation_followed_while_serving(world, tmp_path, serve):
    """`witness add-key` on the same state while the server runs; afterwards
    the new key's checkpoints are cosigned over HTTP and the retired key's refused (403)."""
    ledger = world
    s = serve()
    assert submit(s.url, api.consistency(ledger.store, old_size=0))[0] == 200
    seq, new = api.rotate_key(ledger.store, ledger.signer, str(tmp_path / "new.key"))
    grow(ledger, 5, 4, signer=new)
    req = api.consistency(ledger.store, old_size=6)
    assert submit(s.url, req)[0] == 403  # not told yet
    (tmp_path / "req").write_bytes(req)
    (tmp_path / "key.proof").write_bytes(api.prove(ledger.store, seq))
    r = subprocess.run([sys.executable, "-m", "ledger.cli", "witness", "add-key", str(tmp_path / "req"),
                        str(tmp_path / "key.proof"), "--key", str(tmp_path / "w.key"), "--state",
                        str(tmp_path / "w.db")], capture_output=True)
    assert r.returncode == 0, r.stderr
    held = witness.cosigned(str(tmp_path / "w.db"), ORIGIN)
    grow(ledger, 9, 1, signer=new)
    assert submit(s.url, api.consistency(ledger.store, old_size=held.size))[0] == 200
    held = witness.cosigned(str(tmp_path / "w.db"), ORIGIN)
    grow(ledger, 10, 1, signer=new)
    body = consistency.parse_consistency(api.consistency(ledger.store, old_size=held.size))
    cp = note.parse_signed_checkpoint(body.checkpoint)
    retired = consistency.ConsistencyProof(body.old_size, body.proof, signed(cp.text(), ledger.signer))
    assert submit(s.url, consistency.format_consistency(retired))[0] == 403
    s.stop()


def test_limits(world, tmp_path, serve):
    ledger = world
    s = serve("--read-timeout", "1", "--rate", "1000", "--burst", "1000")
    # oversize: announced, or sent chunked
    assert submit(s.url, b"old 0\n" + b"A" * (65 << 10))[0] == 413
    chunks = (b"x" * 4096 for _ in range(20))
    assert httpx.post(s.url + "add-checkpoint", content=chunks).status_code == 413
    # a body that never ends: 408 after the read timeout, no hang
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nold 0\n")
        t = time.monotonic()
        reply = c.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408 ") and time.monotonic() - t < 5, reply
    # headers that never end: the connection is closed
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\n")
        t = time.monotonic()
        assert c.recv(4096) == b"" and time.monotonic() - t < 5
    # still serving
    assert submit(s.url, api.consistency(ledger.store, old_size=0))[0] == 200
    s.stop()
    # rate limit per client: 429 with Retry-After
    s = serve("--rate", "0.2", "--burst", "3")
    statuses = [httpx.get(s.url + "checkpoint/" + quote(ORIGIN, safe="")) for _ in range(5)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429]
    assert int(statuses[3].headers["retry-after"]) >= 1
    assert httpx.get(s.url + "health").status_code == 200  # not rate-limited
    assert "429 too many requests" in s.stop()


def test_monitoring_get_and_health(world, tmp_path, serve):
    ledger = world
    s = serve()
    path = "checkpoint/" + quote(ORIGIN, safe="")
    assert httpx.get(s.url + path).status_code == 404  # nothing cosigned yet
    assert httpx.get(s.url + "checkpoint/" + quote("unknown.example/x", safe="")).status_code == 404
    status, line, _ = submit(s.url, api.consistency(ledger.store, old_size=0))
    r = httpx.get(s.url + path)
    assert r.status_code == 200 and r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.content.endswith(line)
    text, sigs = note.split_note(r.content)
    assert note.verify_cosignature(text, sigs[-1], ledger.w.verifier()) > 0
    assert note.open_note(r.content, [note.parse_vkey(ledger.store.vkey)])[0] == text
    assert httpx.post(s.url + path).status_code == 405
    h = httpx.get(s.url + "health")
    assert (h.status_code, h.text) == (200, "ok\n")
    s.stop()


def _legacy_state(ledger, path: Path) -> bytes:
    """A state as earlier versions wrote it (JSON)."""
    root = base64.b64encode(merkle.EMPTY_ROOT).decode()
    obj = {"logs": {ORIGIN: {"vkey": ledger.store.vkey, "size": 0, "root": root, "checkpoint": None,
                             "keys": [{"vkey": ledger.store.vkey, "from_size": 0}]}}}
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    return path.read_bytes()


def test_a_json_state_is_migrated_on_first_use(world, tmp_path, serve):
    ledger = world
    legacy = tmp_path / "old.json"
    before = _legacy_state(ledger, legacy)
    s = serve(state=str(legacy))
    assert legacy.read_bytes().startswith(witness_state.SQLITE_MAGIC)
    assert Path(str(legacy) + ".json-v1").read_bytes() == before
    assert submit(s.url, api.consistency(ledger.store, old_size=0))[0] == 200
    s.stop()
    assert witness.cosigned(str(legacy), ORIGIN).size == 6
    # with the default --state, an old witness.json is used when there is no witness.db
    d = tmp_path / "cwd"
    d.mkdir()
    (d / "w.key").write_bytes((tmp_path / "w.key").read_bytes())
    os.chmod(d / "w.key", 0o600)
    _legacy_state(ledger, d / "witness.json")
    (d / "req").write_bytes(api.consistency(ledger.store, old_size=0))
    r = subprocess.run([sys.executable, "-m", "ledger.cli", "witness", "add-checkpoint", "req", "--key", "w.key"],
                       cwd=d, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert (d / "witness.json").read_bytes().startswith(witness_state.SQLITE_MAGIC)
    assert not (d / "witness.db").exists()
