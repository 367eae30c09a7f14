"""Return visits in a real browser (Debian's chromium through Playwright),
against real site processes (``fundledger serve``) on one loopback port, so
that a second site is the same origin to the browser as the first and sees
what the first left in localStorage (publish/static/memory.js): a log that
grew is checked from where the visitor left it; a smaller log (a rollback),
another history (a fork) and a fund head older than the one the visitor
verified are warned of, and not shown as verified."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_browser import SHOTS, browser, liq  # noqa: F401 (fixtures; skips without chromium)
from test_light_attacks import heads_at, heads_root, publish
from tamper_util import b64, canonical, entry_obj, leaf

from conftest import ORIGIN, run_fundledger
from ledger.format import note
from ledger.ops import api
from ledger.ops.keys import load_key_file
from ledger.store.schema import Reader
from ledger.verify.light import check_fund_path

XBT, INV = "XBTUSDTM", "XBTUSDM"
TIMEOUT_MS = 60_000
ROOT = Path(__file__).resolve().parent.parent


def records(lo: int, hi: int, prefix: str = "L", only: str | None = None) -> list[dict]:
    out = []
    for i in range(lo, hi):
        if only == INV or (only is None and i % 3 == 0):
            out.append(liq(f"{prefix}{i}", INV, "long", "39000", "39123.5", str(100 + i)))
        else:
            out.append(liq(f"{prefix}{i}", XBT, "long", "39000", str(39000 + (i % 97) * 3), str(1 + i % 5)))
    for r in out:
        r["id"] = r["id"].replace("L-", "")
    return out


def grow(src: Path, dst: Path, recs: list[dict]) -> Path:
    """A copy of the ledger in ``src`` with ``recs`` imported and a checkpoint, by the CLI."""
    shutil.copytree(src, dst)
    env = {"FUNDLEDGER_DB": str(dst / "fund.db"), "FUNDLEDGER_KEY": str(dst / "fund.key")}
    (dst / "more.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    for args in (("import", dst / "more.jsonl"), ("checkpoint",)):
        r = run_fundledger(*args, env=env)
        assert r.returncode == 0, r.stderr
    return dst


def size_of(d: Path) -> int:
    s = Reader.open(str(d / "fund.db"))
    try:
        return s.size()
    finally:
        s.close()


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """v1 (about 300 entries), v2 = v1 and 100 more, fork = v1 and 100 others
    (the same size as v2), forkbig = fork and 50 more, v3 = v2 and 40 more of
    XBTUSDM alone."""
    d = tmp_path_factory.mktemp("return")
    v1 = d / "v1"
    v1.mkdir()
    store, signer = api.init_ledger(str(v1 / "fund.db"), str(v1 / "fund.key"), ORIGIN, log_format=2)
    store.append([{"kind": "contract", "symbol": XBT, "currency": "USDT", "scale": 8, "type": "linear", "multiplier": "0.001"},
                  {"kind": "contract", "symbol": INV, "currency": "XBT", "scale": 8, "type": "inverse", "multiplier": "1"}], [signer])
    store.append(records(0, 300), [signer])
    store.add_checkpoint([signer])
    store.close()
    out = {"v1": v1, "v2": grow(v1, d / "v2", records(300, 400))}
    out["fork"] = grow(v1, d / "fork", records(300, 400, prefix="F-"))
    out["forkbig"] = grow(out["fork"], d / "forkbig", records(400, 450, prefix="F-"))
    out["v3"] = grow(out["v2"], d / "v3", records(400, 440, only=INV))
    assert size_of(out["v2"]) == size_of(out["fork"]) > size_of(v1)
    return out


def stale_export(v1: Path, v3: Path, dst: Path) -> Path:
    """v3's log with its last state entry re-signed by the operator to name
    XBTUSDTM's head as of v1 (older), and the export built to match."""
    store = Reader.open(str(v3 / "fund.db"))
    datas = [d for _, d in store.iter_entries(0, store.size())]
    store.close()
    n1 = size_of(v1)
    old = heads_at(datas, n1 - 1)
    old_xbt = next(json.loads(line) for line in old if json.loads(line)["contract"] == XBT)
    patch = lambda h: dict(old_xbt) if h["contract"] == XBT else h  # noqa: E731
    o = entry_obj(datas[-1])
    o["heads"] = b64(heads_root(heads_at(datas, len(datas) - 1, patch=patch)))
    signer = load_key_file(str(v3 / "fund.key"))
    datas[-1] = note.sign_note(canonical(o), [signer])
    return publish(dst, datas, signer.verifier().vkey(), [signer], patch=patch)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def site(d: Path, port: int, overlay: Path | None = None):
    """The site of ledger ``d`` as a process on ``port``, once it verified its log."""
    cmd = ([sys.executable, str(ROOT / "tests" / "overlay_site.py"), str(d / "fund.db"), str(port), str(overlay)] if overlay
           else [sys.executable, "-m", "ledger.cli", "serve", "--db", str(d / "fund.db"), "--port", str(port)])
    proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "funds.json", timeout=5) as r:
                    if json.load(r)["verified"]["status"] == "verified":
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the site did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def visitor(browser):  # noqa: F811
    """One browser profile for a whole test: its localStorage survives the sites; no HTTP cache."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    cdp = ctx.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    ctx.close()


def verify_page(page, url: str) -> str:
    page.goto(url + "verify")
    page.wait_for_selector("#verify-app[data-verdict]:not([data-verdict=not-started])", timeout=TIMEOUT_MS)
    return page.get_attribute("#verify-app", "data-verdict")


def fund_check(page, url: str, symbol: str = XBT) -> str:
    page.goto(url + "contract/" + symbol)
    page.click("#fund-check-run")
    page.wait_for_selector("#fund-check[data-verdict]:not([data-verdict=running])", timeout=TIMEOUT_MS)
    return page.get_attribute("#fund-check", "data-verdict")


def checkpoint_line(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url + "checkpoint") as r:
        lines = r.read().decode().split("\n")
    return int(lines[1]), lines[2]


def test_a_return_visit_checks_only_what_is_new(logs, visitor):
    port = free_port()
    with site(logs["v1"], port) as url:
        assert fund_check(visitor, url) == "verified"
        assert visitor.inner_text("#fund-check-status").startswith("All ")
        assert "now remembers this checkpoint" in visitor.inner_text("#fund-check-memory")
        s1 = checkpoint_line(url)[0]
        before = check_fund_path(url, XBT).entries_checked
    with site(logs["v2"], port) as url:
        expected = check_fund_path(url, XBT)
        assert fund_check(visitor, url) == "verified"
        status = visitor.inner_text("#fund-check-status")
        new = expected.entries_checked - before
        assert status.startswith(f"Checked {new:,} new entries since your last visit at size {s1:,}"), status
        assert visitor.get_attribute("#fund-check", "data-checked-balance") == expected.fund["balance"]
        visitor.screenshot(path=f"{SHOTS}/fund-check-return.png", full_page=True)
        assert verify_page(visitor, url) == "verified"
        assert "extends that one" in visitor.inner_text("#memory-text")
        # forgotten: everything again
        visitor.goto(url + "contract/" + XBT)
        visitor.click("#fund-check-run")
        visitor.wait_for_selector("#fund-check[data-verdict=verified]", timeout=TIMEOUT_MS)
        visitor.click("#fund-check-forget")
        assert "forgot" in visitor.inner_text("#fund-check-memory")
        assert fund_check(visitor, url) == "verified"
        assert visitor.inner_text("#fund-check-status").startswith(f"All {expected.entries_checked:,} entries")
    assert visitor.errors == []


def test_a_rollback_is_shown_to_a_returning_visitor(logs, visitor):
    port = free_port()
    with site(logs["v2"], port) as url:
        assert verify_page(visitor, url) == "verified"
        big = checkpoint_line(url)
    with site(logs["v1"], port) as url:
        small = checkpoint_line(url)
        assert verify_page(visitor, url) == "rollback"
        text = visitor.inner_text("#memory-text")
        visitor.screenshot(path=f"{SHOTS}/verify-rollback.png", full_page=True)
        assert visitor.inner_text("#verdict-text").startswith("warning: not verified")
        assert "went back (a rollback)" in text
        for size, root in (big, small):
            assert f"{size:,} entries, root {root}" in text, text
        assert fund_check(visitor, url) == "rollback"
        assert "rollback" in visitor.inner_text("#fund-check-memory")
        assert visitor.get_attribute("#fund-check", "data-checked-balance") is None
    assert visitor.errors == []


def test_a_fork_is_shown_to_a_returning_visitor(logs, visitor):
    port = free_port()
    with site(logs["v2"], port) as url:
        assert verify_page(visitor, url) == "verified"
        seen = checkpoint_line(url)
    with site(logs["fork"], port) as url:  # the same size, another root
        other = checkpoint_line(url)
        assert other[0] == seen[0] and other[1] != seen[1]
        assert verify_page(visitor, url) == "fork"
        text = visitor.inner_text("#memory-text")
        assert "(a fork)" in text and seen[1] in text and other[1] in text
    with site(logs["forkbig"], port) as url:  # larger, and not an extension
        assert fund_check(visitor, url) == "fork"
        assert "(a fork)" in visitor.inner_text("#fund-check-memory")
    assert visitor.errors == []


def test_a_stale_fund_head_is_shown_to_a_returning_visitor(logs, visitor, tmp_path, browser):  # noqa: F811
    forged = stale_export(logs["v1"], logs["v3"], tmp_path / "stale")
    port = free_port()
    with site(logs["v2"], port) as url:
        assert fund_check(visitor, url) == "verified"
    with site(logs["v3"], port, overlay=forged) as url:
        assert fund_check(visitor, url) == "stale"
        text = visitor.inner_text("#fund-check-memory")
        assert "is older than the one this browser verified here before" in text, text
        visitor.screenshot(path=f"{SHOTS}/fund-check-stale.png", full_page=True)
        # a first-time visitor has no head to compare with: the light check
        # alone passes the forged files, and only the site's own page disagrees
        ctx = browser.new_context()
        try:
            fresh = ctx.new_page()
            assert fund_check(fresh, url) == "failed"
            assert fresh.inner_text("#fund-check-verdict").startswith("failed: this page shows ")
        finally:
            ctx.close()
    assert visitor.errors == []


def test_damaged_memory_is_ignored_and_said(logs, visitor):
    port = free_port()
    with site(logs["v1"], port) as url:
        visitor.goto(url + "about")
        visitor.evaluate("k => localStorage.setItem(k, '{\"size\": -1}')", f"fundledger/v1/{ORIGIN}/checkpoint")
        assert verify_page(visitor, url) == "verified"
        assert "was damaged: it was ignored and forgotten" in visitor.inner_text("#memory-text")
        assert "now remembers this checkpoint" in visitor.inner_text("#memory-text")
    assert visitor.errors == []


def test_another_log_key_is_shown_to_a_returning_visitor(logs, visitor, tmp_path):
    """The same origin served with another key (a new log under the old
    name, or a key swapped without a key entry): warned of, not verified."""
    other = tmp_path / "other"
    other.mkdir()
    store, signer = api.init_ledger(str(other / "fund.db"), str(other / "fund.key"), ORIGIN, log_format=2)
    store.append([{"kind": "contract", "symbol": XBT, "currency": "USDT", "scale": 8, "type": "linear",
                   "multiplier": "0.001"}], [signer])
    store.append([r for r in records(0, 60) if r["contract"] == XBT], [signer])
    store.add_checkpoint([signer])
    store.close()
    port = free_port()
    with site(logs["v1"], port) as url:
        assert verify_page(visitor, url) == "verified"
    with site(other, port) as url:
        assert verify_page(visitor, url) == "key"
        assert "publishes another log key than the one this browser verified this log with before" in \
            visitor.inner_text("#memory-text")
        assert visitor.inner_text("#verdict-text").startswith("warning: not verified")
        assert fund_check(visitor, url) == "key"
        assert visitor.get_attribute("#fund-check", "data-checked-balance") is None
    assert visitor.errors == []
