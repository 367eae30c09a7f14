"""`fundledger demo --live` (what scripts/run runs after building the demo):
a witness, the service fed by the simulated risk engine, the site and a
monitor, as real processes; the site's log grows, every new checkpoint is
cosigned, the monitor prints events, SIGTERM stops everything cleanly."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from ledger.format import note
from ledger.verify.run import verify_path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_live_demo_grows_cosigned_and_monitored(tmp_path):
    d = tmp_path / "demo"
    subprocess.run([sys.executable, "-m", "ledger.cli", "demo", "--dir", str(d), "--liquidations", "200"],
                   check=True, capture_output=True, cwd=ROOT, timeout=300)
    first = note.parse_signed_checkpoint((d / "export/checkpoint").read_bytes()).tree_size
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "ledger.cli", "demo", "--dir", str(d), "--live", "--port", str(port)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        while True:
            assert p.poll() is None and time.monotonic() < deadline, "".join(lines)
            try:
                size = httpx.get(f"http://127.0.0.1:{port}/funds.json", timeout=5).json()["checkpoint"]["tree_size"]
            except (httpx.HTTPError, ValueError, TypeError, KeyError):
                size = 0
            if size > first + 3 and any(line.startswith("[monitor] {") for line in lines):
                break
            time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=90) == 0, "".join(lines)
    finally:
        if p.poll() is None:
            p.kill()
    out = "".join(lines)
    assert "Traceback" not in out and "[run] run: stopped" in out and "[witness] witness: stopped" in out, out
    events = [json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith("[monitor] {")]
    assert {"new_contract", "adl"} <= {e["event"] for e in events}  # the demo's crash drained a fund
    report = verify_path(str(d / "export"), witnesses=[str(d / "witness/witness.vkey")])
    assert report.tree_size > first + 3 and report.cosignatures == ["demo-witness.example"]
