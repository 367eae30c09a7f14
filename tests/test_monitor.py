"""`fundledger monitor`: one pass over an export directory or a URL, with
its own state: events from verified entries only, a fork and a rollback
served to it, a stale log, a witness that cosigned another tree, a hook
delivered at least once, and --follow stopped by SIGTERM."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from ledger.ops import monitor as m
from ledger.store.store import Store
from publish.export import export


def liq(i, fill="39010", qty="1", prefix="L"):
    return {"kind": "liquidation", "contract": "XBTUSDTM", "id": f"{prefix}-{i}", "side": "long", "qty": qty,
            "bankruptcy_price": "39000", "fill_price": fill}


@pytest.fixture
def watched(ledger2, tmp_path):
    ledger2.contract(scale=2)
    ledger2.append(*[liq(i) for i in range(10)])
    ledger2.checkpoint()
    ledger2.out = tmp_path / "public"
    export(ledger2.store, str(ledger2.out))
    ledger2.state = str(tmp_path / "monitor.db")
    return ledger2


def run(lg, *extra, source=None):
    """The real command in a subprocess: (exit code, events, stderr)."""
    p = subprocess.run([sys.executable, "-m", "ledger.cli", "monitor", str(source or lg.out), "--state", lg.state,
                        *extra], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode, [json.loads(line) for line in p.stdout.splitlines()], p.stderr


def kinds(events) -> list[str]:
    return [e["event"] for e in events]


def republish(lg, store: Store) -> None:
    """Serve ``store``'s export where the monitor looks (the operator swapped what it publishes)."""
    shutil.rmtree(lg.out)
    export(store, str(lg.out))


def fork_of(lg, name: str) -> Store:
    a, b = sqlite3.connect(lg.db), sqlite3.connect(str(lg.dir / name))
    a.backup(b)
    a.close()
    b.close()
    return Store.open(str(lg.dir / name))


def test_a_first_pass_then_only_what_is_new(watched):
    code, events, _ = run(watched)
    assert code == 0 and kinds(events) == ["new_contract"] and events[0]["contract"] == "XBTUSDTM"
    assert run(watched)[:2] == (0, [])  # nothing new: nothing said
    watched.append(liq(10), liq(11, fill="38000", qty="1000"), liq(12, fill="39001"))  # 110 in the fund, then ADL
    watched.checkpoint()
    export(watched.store, str(watched.out))
    code, events, _ = run(watched, "--payout-threshold", "100")
    assert code == 0, events
    assert kinds(events) == ["adl", "large_payout"]
    adl, payout = events
    assert (adl["seq"], adl["liquidation"], adl["paid"], adl["balance"]) == (14, "L-11", "110.00", "0.00")
    assert (payout["liquidation"], payout["paid"], payout["threshold"]) == ("L-11", "110.00", "100")
    conn = sqlite3.connect(watched.state)
    assert [r[0] for r in conn.execute("SELECT tree_size FROM checkpoints ORDER BY id")] == [13, 17]
    assert conn.execute("SELECT COUNT(*) FROM events WHERE delivered = 0").fetchone()[0] == 0


def test_a_fork_served_to_it_is_an_alarm(watched):
    assert run(watched)[0] == 0
    fork = fork_of(watched, "fork.db")
    watched.append(*[liq(i) for i in range(10, 15)])
    watched.checkpoint()
    fork.append([liq(i, prefix="F") for i in range(10, 15)], [watched.signer])
    fork.add_checkpoint([watched.signer])
    export(watched.store, str(watched.out))
    assert run(watched)[0] == 0
    republish(watched, fork)  # the same size, signed with the real key, another history
    code, events, _ = run(watched)
    assert code == 1 and kinds(events) == ["fork"], events
    assert events[0]["tree_size"] == watched.store.size() and events[0]["root"] != events[0]["seen_root"]
    code, events, _ = run(watched)  # still wrong: said again
    assert code == 1 and kinds(events) == ["fork"]


def test_a_rollback_is_an_alarm(watched):
    old = fork_of(watched, "old.db")
    watched.append(*[liq(i) for i in range(10, 15)])
    watched.checkpoint()
    export(watched.store, str(watched.out))
    assert run(watched)[0] == 0
    republish(watched, old)
    code, events, _ = run(watched)
    assert code == 1 and kinds(events) == ["rollback"], events
    assert events[0]["seen_tree_size"] > events[0]["tree_size"]


def test_a_stale_log_is_an_alarm_once(watched):
    opts = m.Options(str(watched.out), watched.state, max_age_s=3600)
    now = int(time.time())
    assert kinds(m.one_pass(opts, emit=lambda _: None, now=now)) == ["new_contract"]
    assert m.one_pass(opts, emit=lambda _: None, now=now + 3000) == []
    stale = m.one_pass(opts, emit=lambda _: None, now=now + 3700)
    assert kinds(stale) == ["stale"] and stale[0]["age_s"] == 3700
    assert m.one_pass(opts, emit=lambda _: None, now=now + 4000) == []  # said once per checkpoint
    watched.append(liq(10))
    watched.checkpoint()
    export(watched.store, str(watched.out))
    assert m.one_pass(opts, emit=lambda _: None, now=now + 5000) == []  # a new checkpoint: fresh again
    assert kinds(m.one_pass(opts, emit=lambda _: None, now=now + 8700)) == ["stale"]


def test_events_come_from_verified_entries_only(watched):
    """A source that fails verification raises no notices from its entries."""
    watched.append(liq(10, fill="38000", qty="1000"))
    watched.checkpoint()
    export(watched.store, str(watched.out))
    bundle = watched.out / "tile/entries/000.p/13"
    data = bytearray(bundle.read_bytes())
    data[-5] ^= 1  # one byte of the last entry's signature
    bundle.write_bytes(bytes(data))
    code, events, _ = run(watched, "--payout-threshold", "1")
    assert code == 1 and kinds(events) == ["verification_failed"] and events[0]["seq"] == 12


class _Witness(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_a_witness_that_cosigned_another_tree_is_a_split_view(watched):
    fork = fork_of(watched, "fork.db")
    fork.append([liq(99, prefix="F")], [watched.signer])
    watched.append(liq(99))
    watched.checkpoint()
    export(watched.store, str(watched.out))
    fork.add_checkpoint([watched.signer])
    _Witness.body = fork.published_checkpoint()  # what the fork's witness holds, of the same size
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Witness)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        code, events, _ = run(watched, "--witness-url", url)
    finally:
        server.shutdown()
    assert code == 1 and "split_view" in kinds(events), events
    split = next(e for e in events if e["event"] == "split_view")
    assert split["witness"] == url and split["tree_size"] == watched.store.size()


def test_the_hook_is_delivered_at_least_once(watched, tmp_path):
    got = tmp_path / "got.jsonl"
    hook = tmp_path / "hook.py"
    hook.write_text("import os, sys\n"
                    "if os.path.exists(sys.argv[2]): sys.exit(3)\n"
                    "open(sys.argv[1], 'a').write(os.environ['FUNDLEDGER_EVENT'] + ' ' + sys.stdin.read())\n")
    broken = tmp_path / "broken"
    broken.write_text("")
    cmd = f"{sys.executable} {hook} {got} {broken}"
    code, events, _ = run(watched, "--hook", cmd)
    assert code == 1 and kinds(events) == ["new_contract", "hook_failed"]
    assert not got.exists()
    os.unlink(broken)
    code, events, _ = run(watched, "--hook", cmd)  # the next pass delivers it
    assert code == 0 and kinds(events) == ["new_contract"]
    kind, body = got.read_text().split(" ", 1)
    assert kind == "new_contract" and json.loads(body)["contract"] == "XBTUSDTM"
    assert run(watched, "--hook", cmd)[:2] == (0, [])  # and only once it succeeded


def test_follow_stops_on_sigterm(watched):
    p = subprocess.Popen([sys.executable, "-m", "ledger.cli", "monitor", str(watched.out), "--state", watched.state,
                          "--follow", "--interval", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert json.loads(line)["event"] == "new_contract"
        watched.append(liq(10, fill="38000", qty="1000"))
        watched.checkpoint()
        export(watched.store, str(watched.out))
        assert json.loads(p.stdout.readline())["event"] == "adl"
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()


def test_bad_input_is_exit_2(watched, tmp_path):
    code, _, err = run(watched, "--payout-threshold", "lots")
    assert code == 2 and "is not a decimal amount" in err
    code, _, err = run(watched, source=tmp_path / "nowhere")
    assert code == 2, err
