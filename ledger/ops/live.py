"""The live demo (``fundledger demo --live``, what ``scripts/run`` shows):
on a demo ledger already built, a local witness (``fundledger witness
serve``), the log service (``fundledger run --policy``) fed by a simulated
risk engine, the public site, and ``fundledger monitor`` following the site
and printing its events. Every part is the real command in its own
process; Ctrl-C or SIGTERM stops them all."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

import httpx

from ledger.errors import InputError
from ledger.ops.market import Simulation

FEED_EVERY_S = (0.5, 2.0)  # the risk engine posts a batch this often
FEED_BATCH = (1, 6)  # of this many liquidations


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ledger.cli", *args]


def _start(args: list[str], tag: str, listening_on: str | None, echo: Callable[[str], None]):
    """A process whose output lines are echoed with ``[tag]``; with
    ``listening_on`` ("stdout" or "stderr"), waits for its "listening on
    http://..." line and returns the URL too."""
    # a session of its own: Ctrl-C reaches this process only, which stops the others in order
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                         start_new_session=True)
    found: list[str] = []
    ready = threading.Event()

    def pump(stream, name):
        for line in stream:
            if name == listening_on and not found and "listening on http://" in line:
                found.append(line.split("listening on ", 1)[1].split()[0])
                ready.set()
            if not _routine(line):
                echo(f"[{tag}] {line.rstrip()}")
        ready.set()

    for stream, name in ((p.stdout, "stdout"), (p.stderr, "stderr")):
        threading.Thread(target=pump, args=(stream, name), daemon=True).start()
    if listening_on is not None:
        ready.wait(60)
        if not found:
            p.kill()
            raise InputError(f"{tag} did not start")
    return p, (found[0] if found else None)


def _routine(line: str) -> bool:
    """Lines not worth showing: the site's access log, each cosignature."""
    return line.startswith("INFO:") or line.rstrip().endswith(" 200 cosigned") or not line.strip()


def _witness(d: str, echo) -> tuple[subprocess.Popen, str, str]:
    wd = os.path.join(d, "witness")
    key, state, vkey = (os.path.join(wd, x) for x in ("witness.key", "witness.db", "witness.vkey"))
    if not os.path.exists(key):
        os.makedirs(wd, exist_ok=True)
        subprocess.run(_cli("witness", "init", "demo-witness.example", "--key", key, "--state", state),
                       check=True, capture_output=True)
        subprocess.run(_cli("witness", "add-log", os.path.join(d, "fund.vkey"), "--key", key, "--state", state),
                       check=True, capture_output=True)
    p, url = _start(_cli("witness", "serve", "--port", "0", "--key", key, "--state", state), "witness", "stdout", echo)
    return p, url, open(vkey).read().strip()


def feed(url: str, token: str, stop: threading.Event, echo, seed: int = 7) -> None:
    """The simulated risk engine: liquidations of the demo market, a few at
    a time, posted to the service and retried until acknowledged."""
    sim, rng = Simulation(seed, 10_000), random.Random(seed)
    i, ms = 5_000_000, 0
    with httpx.Client(timeout=30) as client:
        while not stop.wait(rng.uniform(*FEED_EVERY_S)):
            batch = []
            for _ in range(rng.randint(*FEED_BATCH)):
                ms, records = sim.live_liquidation(i, ms)
                for record in records:  # (an ADL's allocation in the same body)
                    record.pop("time", None)  # now, as the service appends it
                batch.extend(records)
                i += 1
            body = "".join(json.dumps(r) + "\n" for r in batch)
            while not stop.is_set():
                try:
                    r = client.post(url + "add", content=body, headers={"Authorization": f"Bearer {token}"})
                    if r.status_code == 200:
                        break
                    echo(f"[risk engine] {r.status_code} {r.text.strip()[:200]}")
                except httpx.HTTPError as e:
                    echo(f"[risk engine] {type(e).__name__}: retrying")
                time.sleep(1)


def run_live(directory: str, port: int, echo: Callable[[str], None] = print) -> None:
    """Run the live demo on the ledger in ``directory`` until interrupted."""
    d = os.path.abspath(directory)
    db, key = os.path.join(d, "fund.db"), os.path.join(d, "fund.key")
    if not os.path.exists(db):
        raise InputError(f"{db}: no demo ledger (run `fundledger demo --dir {directory}` first)")
    procs: list[subprocess.Popen] = []
    stop = threading.Event()
    try:
        wp, wurl, wvkey = _witness(d, echo)
        procs.append(wp)
        policy = os.path.join(d, "witnesses.policy")
        with open(policy, "w") as f:
            f.write(f"log {open(os.path.join(d, 'fund.vkey')).read().strip()}\n"
                    f"witness demo {wvkey} {wurl}\nquorum demo\n")
        token = os.path.join(d, "run.token")
        with open(os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(secrets.token_hex(16) + "\n")
        rp, rurl = _start(_cli("run", "--db", db, "--key", key, "--listen", "127.0.0.1:0", "--token-file", token,
                               "--policy", policy, "--interval", "2", "--witness-interval", "30",
                               "--export", os.path.join(d, "export")), "run", "stderr", echo)
        procs.append(rp)
        sp, _ = _start(_cli("serve", "--db", db, "--port", str(port), "--witness", wvkey), "site", None, echo)
        procs.append(sp)
        site = f"http://127.0.0.1:{port}/"
        _wait_for(site + "funds.json", 60)
        threading.Thread(target=feed, args=(rurl, open(token).read().strip(), stop, echo), daemon=True).start()
        mp, _ = _start(_cli("monitor", site, "--state", os.path.join(d, "monitor.db"), "--follow", "--interval", "5",
                            "--witness-url", wurl, "--payout-threshold", "5000", "--max-age", "60"),
                       "monitor", None, echo)
        procs.append(mp)
        echo(f"Live: the risk engine feeds {rurl}add; witness {wurl}; the site at {site} (reload for new movements)")
        _wait_for_signal()
    finally:
        stop.set()
        for p in reversed(procs):  # the monitor and the site first, the witness last (the service's last checkpoint)
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _wait_for(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise InputError(f"{url} did not answer")


def _wait_for_signal() -> None:
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1):
        pass
