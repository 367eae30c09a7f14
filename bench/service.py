"""The service figures of ``scripts/bench`` (section ``service``):
``fundledger run`` on a fresh format-2 ledger, a load generator posting
bodies of records at an offered rate, and a poller reading the published
checkpoint's size from the database, all on this host:

* from POST to a published checkpoint covering the record, p50 and p95, at
  1,000 and 10,000 records a second offered (``--interval 0.2``);
* the sustained rate (as fast as 4 clients can post) against the bulk
  import's on the same records.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import httpx

from bench import gen

TOKEN = "bench-token-0123456789abcdef"
BODY = 100  # records a POST
SECONDS = 8  # of offered load per rate


def _start(d: str, interval: float) -> tuple[subprocess.Popen, str]:
    db, key = os.path.join(d, "fund.db"), os.path.join(d, "fund.key")
    with open(os.path.join(d, "token"), "w") as f:
        f.write(TOKEN)
    log = open(os.path.join(d, "run.log"), "w+b")
    p = subprocess.Popen([sys.executable, "-m", "ledger.cli", "run", "--db", db, "--key", key, "--listen", "127.0.0.1:0",
                          "--token-file", os.path.join(d, "token"), "--interval", str(interval)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        log.seek(0)
        text = log.read().decode()
        if "listening on " in text:
            return p, text.split("listening on ", 1)[1].split()[0]
        time.sleep(0.05)
    p.kill()
    raise RuntimeError("fundledger run did not start: " + text[-300:])


def _ledger(work: str, name: str) -> str:
    from ledger.ops import api

    d = os.path.join(work, name)
    os.makedirs(d)
    store, signer = api.init_ledger(os.path.join(d, "fund.db"), os.path.join(d, "fund.key"), gen.ORIGIN, log_format=2)
    store.append(gen.contract_records(), [signer])
    store.close()
    return d


def _records(first: int, n: int) -> list[dict]:
    return [dict(r, id=f"S-{first + i}") for i, r in enumerate(gen.liquidation_records(n))]


class _Published:
    """Polls the published checkpoint's size; when each size was first seen."""

    def __init__(self, db: str):
        self.db, self.seen, self.stop = db, [(0, 0.0)], threading.Event()
        threading.Thread(target=self._poll, daemon=True).start()

    def _poll(self):
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        while not self.stop.is_set():
            (size,) = conn.execute("SELECT COALESCE(MAX(tree_size), 0) FROM checkpoints").fetchone()
            if size > self.seen[-1][0]:
                self.seen.append((size, time.monotonic()))
            time.sleep(0.005)

    def covered_at(self, seq: int) -> float | None:
        return next((t for size, t in self.seen if size > seq), None)


def _offer(url: str, records: list[dict], rate: float) -> list[tuple[float, list[int]]]:
    """Post ``records`` in bodies of BODY at ``rate`` records a second:
    [(send time, seqs)]."""
    sent, lock = [], threading.Lock()
    bodies = [records[i:i + BODY] for i in range(0, len(records), BODY)]
    every = BODY / rate
    t0 = time.monotonic()

    def post(i, b):
        data = "".join(json.dumps(r) + "\n" for r in b)
        at = time.monotonic()
        while True:  # as a client should: on a 503, again after Retry-After
            r = httpx.post(url + "add", content=data, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
            if r.status_code != 503:
                break
            time.sleep(float(r.headers.get("retry-after", "1")))
        r.raise_for_status()
        with lock:
            sent.append((at, [x["seq"] for x in r.json()["results"]]))

    threads = []
    for i, b in enumerate(bodies):
        delay = t0 + i * every - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        th = threading.Thread(target=post, args=(i, b))
        th.start()
        threads.append(th)
    for th in threads:
        th.join()
    return sent


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bench_service(t, work: str) -> None:
    from bench.run import log, run_cli

    for rate in (1_000, 10_000):
        d = _ledger(work, f"service-{rate}")
        p, url = _start(d, 0.2)
        pub = _Published(os.path.join(d, "fund.db"))
        try:
            log(f"service: {rate:,} records/s offered for {SECONDS} s")
            t0 = time.monotonic()
            sent = _offer(url, _records(0, rate * SECONDS), rate)
            took = time.monotonic() - t0
            deadline = time.monotonic() + 30
            last = max(s for _, seqs in sent for s in seqs)
            while pub.covered_at(last) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            lat = [pub.covered_at(max(seqs)) - at for at, seqs in sent if pub.covered_at(max(seqs)) is not None]
        finally:
            pub.stop.set()
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)
        n = sum(len(s) for _, s in sent)
        t.add("service", f"POST to published checkpoint, {rate:,} records/s offered", _pct(lat, 0.5) * 1e3, "ms",
              f"p50 {_pct(lat, 0.5) * 1e3:,.0f} ms, p95 {_pct(lat, 0.95) * 1e3:,.0f} ms",
              f"{n / took:,.0f} records/s achieved",
              note=f"--interval 0.2; bodies of {BODY}; service, load generator and poller on this host")
    d = _ledger(work, "service-max")
    p, url = _start(d, 1.0)
    try:
        recs = _records(0, 40_000)
        t0 = time.monotonic()
        done = []

        def client(part):
            with httpx.Client(timeout=60) as c:
                for i in range(0, len(part), BODY):
                    data = "".join(json.dumps(r) + "\n" for r in part[i:i + BODY])
                    while True:
                        r = c.post(url + "add", content=data, headers={"Authorization": f"Bearer {TOKEN}"})
                        if r.status_code != 503:
                            break
                        time.sleep(float(r.headers.get("retry-after", "1")))
                    r.raise_for_status()
                    done.append(BODY)

        ths = [threading.Thread(target=client, args=(recs[k::4],)) for k in range(4)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        sustained = sum(done) / (time.monotonic() - t0)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
    d2 = _ledger(work, "service-import")
    jsonl = os.path.join(d2, "r.jsonl")
    with open(jsonl, "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
    el = run_cli(["import", "--db", os.path.join(d2, "fund.db"), "--key", os.path.join(d2, "fund.key"), jsonl])
    bulk = len(recs) / el
    t.add("service", "sustained rate of `fundledger run` (4 clients, bodies of 100)", sustained, "/s",
          f"{sustained:,.0f} records/s", f"{sustained / bulk:.2f} × `fundledger import` ({bulk:,.0f}/s)",
          note="40,000 records each")
