"""The witness figures of ``scripts/bench`` (section ``witness``).

A format-2 log of ``n`` records (at least 100,000), exported and served by
a static HTTP server on loopback (Python's http.server, in this process),
and two real `fundledger witness serve` processes: a plain witness and an
auditing one (`witness init --audit`, `add-log --audit URL`). Both first
cosign the whole log (the auditing one replays all of it: that figure is
the one-off cost of starting to audit a log). Then, round after round, the
operator appends 1,000 entries, checkpoints, exports, and asks each witness
for its cosignature over HTTP: the figures are the client's wall time per
request (a keep-alive connection), and the bytes the auditing witness
fetched from the log's server. Then the request rate: 4 clients at once
resubmitting the latest checkpoint (a cosignature each: signature check,
consistency, for the auditing witness an audit of nothing new, the
compare-and-swap commit and the cosigning), for a few seconds.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bench import gen, raw

ROUNDS = 5
NEW = 1000
CLIENTS = 4
RATE_SECONDS = 3.0


class _Tiles:
    """The export over HTTP, counting the bytes it serves."""

    def __init__(self, root: str):
        self.bytes = self.files = 0
        me = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as any web server in front of tiles

            def log_message(self, *args):
                pass

            def copyfile(self, source, outputfile):
                data = source.read()
                me.bytes += len(data)
                me.files += 1
                outputfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=root))
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def take(self) -> tuple[int, int]:
        out = (self.files, self.bytes)
        self.files = self.bytes = 0
        return out


def _serve(key: str, state: str) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, "-m", "ledger.cli", "witness", "serve", "--port", "0", "--key", key,
                          "--state", state, "--rate", "10000", "--burst", "100000", "--max-concurrent", "8"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = p.stdout.readline().decode()
    if not line.startswith("witness listening on "):
        p.kill()
        raise RuntimeError(f"witness serve did not start: {line!r}")
    return p, line.split(" on ", 1)[1].strip()


def _ledger(d: str, n: int) -> tuple[str, str]:
    from ledger.ops import api

    db, key, jsonl = os.path.join(d, "fund.db"), os.path.join(d, "fund.key"), os.path.join(d, "in.jsonl")
    store, signer = api.init_ledger(db, key, gen.ORIGIN, log_format=2)
    gen.write_jsonl(jsonl, n)
    with open(jsonl, "rb") as f:
        api.import_records(store, signer, f)
    os.unlink(jsonl)
    api.checkpoint(store, signer)
    store.close()
    return db, key


def _post(client, url: str, body: bytes) -> float:
    t0 = time.perf_counter()
    r = client.post(url + "add-checkpoint", content=body)
    el = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"{url}: HTTP {r.status_code}: {r.text[:300]}")
    return el


def _rate(url: str, body: bytes) -> float:
    """Cosignatures per second, CLIENTS clients at once for RATE_SECONDS."""
    import httpx

    stop = time.perf_counter() + RATE_SECONDS

    def client(_):
        done = 0
        with httpx.Client(timeout=30) as c:
            while time.perf_counter() < stop:
                r = c.post(url + "add-checkpoint", content=body)
                if r.status_code == 200:
                    done += 1
                elif r.status_code not in (409, 503):
                    raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
        return done

    t0 = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        total = sum(pool.map(client, range(CLIENTS)))
    return total / (time.perf_counter() - t0)


def bench_witness(t, work: str, n: int) -> None:
    import httpx

    from bench.run import fmt_ms, fmt_rate, fmt_s, human, log
    from ledger.ops import api, witness
    from ledger.ops.keys import load_key_file
    from ledger.store.store import Store
    from publish.export import export

    d = os.path.join(work, "witness")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    log(f"witness: a format-2 log of {n:,} records, a plain and an auditing witness over HTTP")
    db, key = _ledger(d, n)
    site = os.path.join(d, "site")
    store, signer = Store.open(db), load_key_file(key)
    export(store, site, full=True)
    tiles = _Tiles(site)
    ws = {}
    for kind in ("plain", "auditing"):
        wkey, wstate = os.path.join(d, f"{kind}.key"), os.path.join(d, f"{kind}.db")
        witness.init_witness(wkey, wstate, f"{kind}.witness.example", audit=kind == "auditing")
        witness.add_log(wstate, store.vkey, tiles.url if kind == "auditing" else None)
        ws[kind] = _serve(wkey, wstate)
    try:
        client = httpx.Client(timeout=600)
        first = api.consistency(store, old_size=0)
        _post(client, ws["plain"][1], first)
        tiles.take()
        el = _post(client, ws["auditing"][1], first)
        files, size = tiles.take()
        t.add("witness", f"auditing witness: first cosignature, the whole log audited ({human(store.size())} entries)",
              el, "s", fmt_s(el), f"{store.size() / el:,.0f} entries/s",
              note=f"{files} files, {size / 1e6:,.1f} MB fetched; one process, one core")
        lat = {"plain": [], "auditing": []}
        fetched, raws = [], []
        first_id = n + 1_000_000
        for _ in range(ROUNDS):
            old = store.size()
            api.import_records(store, signer, _jsonl(d, first_id))
            first_id += NEW
            api.checkpoint(store, signer)
            export(store, site)
            body = api.consistency(store, old_size=old)
            raws.append(raw.pynacl_rate("verify", 5000))  # the floor: 1,000 signatures, in the same minute
            for kind in ("plain", "auditing"):
                lat[kind].append(_post(client, ws[kind][1], body))
            fetched.append(tiles.take())
        for kind in ("plain", "auditing"):
            xs = lat[kind]
            aim = {"aim": "≤ 0.2 s", "ok": min(xs) <= 0.2} if kind == "auditing" else {}
            floor = f"; {NEW:,} raw Ed25519 verifies took {fmt_ms(NEW / max(raws) * 1e3)} to " \
                    f"{fmt_ms(NEW / min(raws) * 1e3)} in the same minutes" if kind == "auditing" else ""
            t.add("witness", f"{kind} witness: cosign latency, {NEW:,} new entries (log of {human(n)})",
                  min(xs) * 1e3, "ms", fmt_ms(min(xs) * 1e3),
                  note=f"best of {ROUNDS}; median {fmt_ms(statistics.median(xs) * 1e3)}, all "
                  + ", ".join(fmt_ms(x * 1e3) for x in xs) + "; HTTP round trip over loopback" + floor, **aim)
        files = [f for f, _ in fetched]
        mb = [b / 1e6 for _, b in fetched]
        t.add("witness", f"auditing witness: fetched per round of {NEW:,} entries", statistics.median(mb), "MB",
              f"{statistics.median(mb):.2f} MB", note=f"{min(files)} to {max(files)} entry bundles; the whole "
              f"export's bundles: {_bundle_bytes(site) / 1e6:,.0f} MB")
        same = api.consistency(store, old_size=store.size())
        for kind in ("plain", "auditing"):
            rate = _rate(ws[kind][1], same)
            t.add("witness", f"{kind} witness: request rate, {CLIENTS} clients (a cosignature each)", rate, "/s",
                  fmt_rate(rate), note=f"{RATE_SECONDS:g} s; the latest checkpoint resubmitted; each 200 is a "
                  "synced commit; 409s from a lost compare-and-swap are not counted")
        client.close()
    finally:
        for p, _ in ws.values():
            p.terminate()
            p.wait(timeout=15)
        tiles.httpd.shutdown()
        store.close()
    shutil.rmtree(d, ignore_errors=True)


def _jsonl(d: str, first_id: int):
    import io

    path = os.path.join(d, "new.jsonl")
    gen.write_jsonl(path, NEW, with_contracts=False, first_id=first_id)
    with open(path, "rb") as f:
        data = f.read()
    os.unlink(path)
    return io.BytesIO(data)


def _bundle_bytes(site: str) -> int:
    total = 0
    for dirpath, _, names in os.walk(os.path.join(site, "tile", "entries")):
        total += sum(os.path.getsize(os.path.join(dirpath, x)) for x in names)
    return total
