"""`fundledger run` as a real process over loopback: POST /add all or
nothing with each record's seq or "duplicate", the token, the limits, the
queue's 503, standard input acknowledged line by line, checkpoints by
themselves and exported, /health, SIGTERM; and 10,000 records fed while the
process group is killed with SIGKILL three times, the client retrying:
every acknowledged record is there exactly once and verify passes."""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from ledger.verify.run import verify_path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-token-for-tests-0123456789"


def liq(i, prefix="L"):
    return {"kind": "liquidation", "contract": "XBTUSDTM", "id": f"{prefix}-{i}", "side": "long", "qty": "1",
            "bankruptcy_price": "39000", "fill_price": "39010" if i % 5 else "38990"}


def body(records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


class Service:
    def __init__(self, lg, *extra, stdin=subprocess.DEVNULL):
        (lg.dir / "token").write_text(TOKEN + "\n")
        self.errlog = open(lg.dir / f"run-{time.monotonic_ns()}.log", "w+b")
        self.p = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "run", "--listen", "127.0.0.1:0", "--token-file", str(lg.dir / "token"),
             "--db", lg.db, "--key", lg.key, *extra],
            stdin=stdin, stdout=subprocess.PIPE, stderr=self.errlog, cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            self.errlog.seek(0)
            text = self.errlog.read().decode()
            if "listening on http://" in text:
                self.url = text.split("listening on ", 1)[1].split()[0]
                break
            assert self.p.poll() is None and time.monotonic() < deadline, text
            time.sleep(0.05)

    def post(self, data: bytes, token=TOKEN, timeout=30) -> httpx.Response:
        return httpx.post(self.url + "add", content=data, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    def stderr(self) -> str:
        self.errlog.seek(0)
        return self.errlog.read().decode()

    def stop(self) -> int:
        self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(timeout=60)
        assert "Traceback" not in self.stderr(), self.stderr()
        return rc

    def kill9(self) -> None:
        os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait(timeout=30)


@pytest.fixture
def service(ledger2):
    ledger2.contract()
    started = []

    def start(*extra, **kw):
        s = Service(ledger2, *extra, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.p.poll() is None:
            s.p.kill()
            s.p.wait()


def published(lg) -> int:
    return sqlite3.connect(lg.db).execute("SELECT COALESCE(MAX(tree_size), 0) FROM checkpoints").fetchone()[0]


def test_post_add_appends_and_checkpoints_by_itself(ledger2, service, tmp_path):
    s = service("--interval", "0.2", "--export", str(tmp_path / "site"))
    r = s.post(body([liq(1), liq(2)]))
    assert r.status_code == 200, r.text
    seqs = [x["seq"] for x in r.json()["results"]]
    assert seqs == [seqs[0], seqs[0] + 1]
    r = s.post(body([liq(2), liq(3)]))  # a replay and a new one (after a checkpoint's state entry, maybe)
    dup, new = r.json()["results"]
    assert dup == {"duplicate": True} and new["seq"] > seqs[1]
    deadline = time.monotonic() + 20
    while not (tmp_path / "site/checkpoint").exists() or published(ledger2) <= new["seq"]:
        assert time.monotonic() < deadline, s.stderr()
        time.sleep(0.1)
    h = httpx.get(s.url + "health")
    assert h.status_code == 200 and h.json()["ok"], h.text
    assert s.stop() == 0
    report = verify_path(str(tmp_path / "site"))
    assert report.tree_size == published(ledger2) == ledger2.store.size()


def test_a_bad_body_writes_nothing_and_names_the_line(ledger2, service):
    s = service()

    def liquidations() -> int:
        return sqlite3.connect(ledger2.db).execute("SELECT COUNT(*) FROM entries WHERE kind = 'liquidation'").fetchone()[0]
    r = s.post(body([liq(1)]) + b'{"kind": "liquidation", "contract": "XBTUSDTM"}\n' + body([liq(2)]))
    assert r.status_code == 400 and r.json()["error"].startswith("line 2: ")
    r = s.post(body([liq(1), dict(liq(2), contract="NOSUCH")]))
    assert r.status_code == 400 and "NOSUCH" in r.json()["error"]
    assert liquidations() == 0
    assert s.post(body([liq(1)]), token="wrong-token-0000000000").status_code == 401
    assert httpx.get(s.url + "add").status_code == 405
    big = b'{"kind": "liquidation", "id": "' + b"x" * 70000 + b'"}\n'
    assert s.post(big).status_code == 400
    assert s.stop() == 0
    assert liquidations() == 0
    assert "run: POST /add 400" in s.stderr()


def test_standard_input_is_acknowledged_line_by_line(ledger2, service):
    s = service("--interval", "0.2", stdin=subprocess.PIPE)
    s.p.stdin.write(body([liq(1), liq(1)]) + b"not json\n" + body([liq(2)]))
    s.p.stdin.flush()
    sel = selectors.DefaultSelector()
    sel.register(s.p.stdout, selectors.EVENT_READ)
    acks = []
    while len(acks) < 4:
        assert sel.select(timeout=20), s.stderr()
        acks.append(json.loads(s.p.stdout.readline()))
    assert [a["line"] for a in acks] == [1, 2, 3, 4]
    assert "seq" in acks[0] and acks[1] == {"line": 2, "duplicate": True} and "error" in acks[2]
    assert acks[3]["seq"] > acks[0]["seq"]
    assert s.stop() == 0


def test_health_says_when_a_checkpoint_cannot_be_published(ledger2, service, tmp_path):
    policy = tmp_path / "p.policy"
    policy.write_text(f"log {ledger2.store.vkey}\nwitness w w.example+00000000+"
                      "BDQ9GTT+hGGJKqpBcyxXyFn0QyeM5qykx07vcc01Op8Q http://127.0.0.1:9/\nquorum w\n")
    from ledger.format import policy as policy_mod

    try:
        policy_mod.parse_policy(policy.read_bytes())
    except Exception:
        from ledger.format import note

        v = note.generate_signer("w.example", note.ALG_COSIGNATURE_V1).verifier().vkey()
        policy.write_text(f"log {ledger2.store.vkey}\nwitness w {v} http://127.0.0.1:9/\nquorum w\n")
    s = service("--interval", "0.2", "--policy", str(policy))
    assert s.post(body([liq(1)])).status_code == 200
    deadline = time.monotonic() + 20
    while True:
        h = httpx.get(s.url + "health")
        if h.status_code == 503:
            break
        assert time.monotonic() < deadline, h.text
        time.sleep(0.2)
    assert "quorum not met" in h.json()["error"] and published(ledger2) == 0
    assert "run: checkpoint not published: quorum not met" in s.stderr()
    s.stop()


def test_nothing_acknowledged_is_lost_or_doubled_across_kill_9(ledger2, service, tmp_path):
    rng = random.Random(1234)
    total, per_body = 10_000, 100
    bodies = [[liq(i) for i in range(b, b + per_body)] for b in range(0, total, per_body)]
    acked: dict[str, int] = {}
    s = service("--interval", "0.1")
    kills_at = sorted(rng.sample(range(5, len(bodies) - 5), 3))
    i = 0
    killer = None
    while i < len(bodies):
        if kills_at and i == kills_at[0]:  # SIGKILL to the process group while this body is in flight
            kills_at.pop(0)
            killer = threading.Timer(rng.random() * 0.03, s.kill9)
            killer.start()
        try:
            r = s.post(body(bodies[i]), timeout=60)
        except httpx.HTTPError:
            r = None  # not acknowledged: sent again
        if killer is not None:
            killer.join()
            killer = None
            s = service("--interval", "0.1")
        if r is None:
            continue
        if r.status_code == 503:
            time.sleep(0.1)
            continue
        assert r.status_code == 200, r.text
        for rec, res in zip(bodies[i], r.json()["results"]):
            if "seq" in res:
                assert rec["id"] not in acked
                acked[rec["id"]] = res["seq"]
            else:
                assert rec["id"] in acked or res == {"duplicate": True}
        i += 1
    assert s.stop() == 0
    conn = sqlite3.connect(ledger2.db)
    rows = dict(conn.execute("SELECT liquidation_id, seq FROM entries WHERE kind = 'liquidation'"))
    assert len(rows) == total
    for lid, seq in acked.items():
        assert rows[lid] == seq  # acknowledged at that seq, there once (the index is unique)
    report = verify_path(ledger2.db)
    assert report.checkpoint_size == published(ledger2) == ledger2.store.size()


def test_bodies_waiting_together_are_committed_together_and_fail_alone(ledger2, tmp_path):
    """The writer's group commit, in-process: bodies queued at once are
    written in one transaction, each answered with its own seqs; a bad body
    among them fails alone and the others are still written, in order."""
    from ledger.ops import api
    from ledger.ops.service import Writer
    from ledger.store.store import Store

    ledger2.contract()
    ledger2.store.close()
    w = Writer(lambda: Store.open(ledger2.db), ledger2.signer, api.writer_anchor(ledger2.key), 30.0, None)
    commits = []
    good1, bad, good2 = [liq(1), liq(2)], [liq(3), dict(liq(4), contract="NOSUCH")], [liq(5), liq(1)]
    futures = [w.submit(b) for b in (good1, bad, good2)]  # queued before the writer starts
    w.store = Store.open(ledger2.db)
    append = w.store.append
    w.store.append = lambda records, *a, **k: commits.append(len(records)) or append(records, *a, **k)
    w._group([(b, f) for b, f in zip((good1, bad, good2), futures)])
    [w.q.get_nowait() for _ in range(3)]
    assert commits == [6, 2, 2, 2]  # the group, refused; then body by body
    s1 = futures[0].result()
    assert s1 == [s1[0], s1[0] + 1] and futures[2].result() == [s1[0] + 2, None]  # L-1 again: a replay
    with pytest.raises(Exception, match="line 2: .*NOSUCH"):
        futures[1].result()
    commits.clear()
    more = [w.submit([liq(i)]) for i in (6, 7, 8)]
    w._group([(b, f) for b, f in zip(([liq(6)], [liq(7)], [liq(8)]), more)])
    assert commits == [3] and [f.result() for f in more] == [[s1[0] + 3], [s1[0] + 4], [s1[0] + 5]]


def test_the_queue_is_bounded_in_bodies_and_records(ledger2, monkeypatch):
    import queue

    from ledger.ops import api, service
    from ledger.store.store import Store

    monkeypatch.setattr(service, "QUEUE_RECORDS", 250)
    w = service.Writer(lambda: Store.open(ledger2.db), ledger2.signer, api.writer_anchor(ledger2.key), 30.0, None)
    for _ in range(2):
        w.submit([liq(i) for i in range(100)])
    with pytest.raises(queue.Full):
        w.submit([liq(i) for i in range(100)])  # 300 records would wait
    w.submit([liq(i) for i in range(50)])  # 250 may
    w._taken(w.q.get_nowait()[0])
    w.submit([liq(i) for i in range(100)])  # room again once the writer took one
    assert w.queued == 250
