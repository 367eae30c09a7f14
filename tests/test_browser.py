"""The site in a real browser (Debian's chromium through Playwright): the
home and contract pages render, the in-browser verifier (publish/static/
verify.js) says "verified" on a genuine log, across a key rotation, and
"failed: ..." when an entry's bytes, a served tile or a shown balance was
tampered with. Screenshots go to /tmp/site-shots/."""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

from ledger.ops import api  # noqa: E402
from publish.site import BackgroundServer, make_datasette  # noqa: E402

ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = "/tmp/site-shots"
VERDICT_TIMEOUT_MS = 60_000


def liq(i, contract, side, bankruptcy, fill, qty, **extra):
    return {"kind": "liquidation", "contract": contract, "id": f"L-{i}", "side": side, "qty": qty,
            "bankruptcy_price": bankruptcy, "fill_price": fill, **extra}


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    """A ledger of ~330 entries: linear and inverse funds, surpluses,
    shortfalls paid and passed to ADL, a key rotation half way, a checkpoint,
    then two entries after it."""
    d = tmp_path_factory.mktemp("browser")
    db, key = str(d / "fund.db"), str(d / "fund.key")
    store, signer = api.init_ledger(db, key, "example.com/browser-fund")
    contracts = [
        {"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8, "type": "linear", "multiplier": "0.001"},
        {"kind": "contract", "symbol": "ETHUSDTM", "currency": "USDT", "scale": 6, "type": "linear", "multiplier": "0.01"},
        {"kind": "contract", "symbol": "XBTUSDM", "currency": "XBT", "scale": 8, "type": "inverse", "multiplier": "1"},
    ]
    store.append(contracts, [signer])

    def batch(lo, hi):
        out = []
        for i in range(lo, hi):
            k = i % 4
            if k == 0:
                out.append(liq(i, "XBTUSDTM", "long", "39000", str(39000 + (i % 97) * 3), str(1 + i % 5)))
            elif k == 1:
                out.append(liq(i, "ETHUSDTM", "short", "2000", "1999.37", "3", mark_price="1999.5"))
            elif k == 2:
                out.append(liq(i, "XBTUSDM", "long", "39000", "39123.5", str(100 + i), mark_price="39150"))
            elif i % 40 == 3:
                out.append(liq(i, "ETHUSDTM", "long", "2000", "1900", "700"))  # large shortfall: ADL
            else:
                out.append(liq(i, "XBTUSDM", "short", "39000", "39010", "250"))  # small shortfall, covered
        return out

    store.append(batch(0, 160), [signer])
    store.add_checkpoint([signer])
    _, new = api.rotate_key(store, signer, str(d / "new.key"))
    store.append(batch(160, 320), [new])
    store.add_checkpoint([new])
    store.append(batch(320, 322), [new])  # recorded, not yet in a checkpoint
    store.close()
    return db


def tampered_copy(src: str, dst: str, *sql: tuple) -> str:
    """A copy of the ledger with its append-only triggers dropped and
    ``sql`` statements applied: what a dishonest operator could serve."""
    s = sqlite3.connect(src)
    t = sqlite3.connect(dst)
    s.backup(t)
    s.close()
    for (name,) in t.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        t.execute(f"DROP TRIGGER {name}")
    for stmt, args in sql:
        t.execute(stmt, args)
    t.commit()
    t.close()
    return dst


@pytest.fixture(scope="module")
def browser():
    os.makedirs(SHOTS, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.errors = errors
    yield pg
    ctx.close()


def run_verifier(page, url: str) -> str:
    page.goto(url)
    page.wait_for_selector("#verify-app[data-verdict]", timeout=VERDICT_TIMEOUT_MS)
    return page.inner_text("#verdict-text")


def test_pages_and_verification(genuine, page):
    with BackgroundServer(genuine) as url:
        page.goto(url)
        assert page.title().startswith("Insurance funds")
        assert page.locator("table.funds tbody tr").count() == 3
        assert "anyone can check these numbers" in page.inner_text("main")
        page.screenshot(path=f"{SHOTS}/home.png", full_page=True)

        page.click("text=XBTUSDM")
        assert page.url.endswith("/contract/XBTUSDM")
        chart = page.locator("svg.chart")
        assert chart.is_visible()
        box = chart.bounding_box()
        assert box["width"] > 600 and box["height"] > 150
        assert page.locator("svg.chart path.line").count() == 1
        assert "This fund holds" in page.inner_text("main")
        assert page.locator("table.history tbody tr").count() == 50
        page.screenshot(path=f"{SHOTS}/contract.png", full_page=True)

        assert run_verifier(page, url + "verify") == "verified"
        assert page.locator("#page-balances .match .yes").count() == 3
        assert page.locator("#steps li.done").count() == 7
        assert "Replayed all 324 entries" in page.inner_text("#status")
        page.screenshot(path=f"{SHOTS}/verify.png", full_page=True)

        # a large log: what the replay costs first, then the same full replay on request
        assert run_verifier(page, url + "verify?threshold=10").startswith("not checked yet: a log of 324 entries")
        assert page.get_attribute("#verify-app", "data-verdict") == "not-started"
        plan = page.inner_text("#plan-text")
        assert "replays all 324 entries" in plan and "MB" in plan and "signatures a second on" in plan, plan
        assert not page.locator("#plan-desktop").is_visible()
        assert page.locator("#page-balances .match .yes").count() == 0
        page.screenshot(path=f"{SHOTS}/verify-plan.png", full_page=True)
        page.click("#start-full")
        page.wait_for_selector("#verify-app[data-verdict=verified], #verify-app[data-verdict=failed]",
                               timeout=VERDICT_TIMEOUT_MS)
        assert page.inner_text("#verdict-text") == "verified"
        assert page.locator("#page-balances .match .yes").count() == 3
        assert "Replayed all 324 entries" in page.inner_text("#status")
        # above the desktop size: it says so and points to each fund's own check
        run_verifier(page, url + "verify?threshold=10&desktop=100")
        assert page.locator("#plan-desktop").is_visible()
        assert page.locator("#plan-funds a").count() == 3
        assert page.get_attribute("#plan-funds a >> nth=0", "href").endswith("#fund-check")
        page.goto(url + "entry/5")
        assert "Download the receipt" in page.inner_text("main")
        page.screenshot(path=f"{SHOTS}/entry.png", full_page=True)
    assert page.errors == []


def test_tampered_entry_fails(genuine, page, tmp_path):
    # entry 20's bytes changed (its quantity), signature left as it was
    con = sqlite3.connect(genuine)
    data = con.execute("SELECT data FROM entries WHERE seq = 20").fetchone()[0]
    con.close()
    bad = data.replace(b'"qty":"', b'"qty":"1', 1)
    assert bad != data
    db = tampered_copy(genuine, str(tmp_path / "t.db"), ("UPDATE entries SET data = ? WHERE seq = 20", (bad,)))
    with BackgroundServer(db) as url:
        verdict = run_verifier(page, url + "verify")
        page.screenshot(path=f"{SHOTS}/verify-failed.png", full_page=True)
    assert verdict.startswith("failed: entry 20"), verdict
    assert page.locator("#verdict.bad").count() == 1


def test_tampered_tile_fails(genuine, page):
    """A server that flips one byte of the first entry bundle on the way out."""
    ds = make_datasette(genuine)
    inner = ds.app()

    async def flipping(scope, receive, send):
        async def send2(message):
            if message["type"] == "http.response.body" and scope.get("path") == "/tile/entries/000" and message.get("body"):
                body = bytearray(message["body"])
                i = body.index(b'"balance":"') + len(b'"balance":"')
                body[i] = ord("9") if body[i] != ord("9") else ord("8")
                message = dict(message, body=bytes(body))
            await send(message)

        await inner(scope, receive, send2)

    with BackgroundServer(genuine, datasette=ds, app=flipping) as url:
        verdict = run_verifier(page, url + "verify")
    assert verdict.startswith("failed: "), verdict
    assert "entry" in verdict


def test_page_showing_a_wrong_balance_fails(genuine, page):
    """The log is genuine but the host serves a /verify page with a changed
    balance: the browser notices."""
    ds = make_datasette(genuine)
    inner = ds.app()
    con = sqlite3.connect(genuine)
    seq = con.execute("SELECT MAX(seq) FROM entries WHERE contract = 'ETHUSDTM' AND kind = 'liquidation' "
                      "AND seq < (SELECT MAX(tree_size) FROM checkpoints)").fetchone()[0]
    real = con.execute("SELECT balance FROM entries WHERE seq = ?", (seq,)).fetchone()[0]
    con.close()

    async def lying(scope, receive, send):
        async def send2(message):
            if message["type"] == "http.response.body" and scope.get("path") == "/verify" and message.get("body"):
                body = message["body"].replace(f'data-balance="{real}"'.encode(), b'data-balance="999999.000000"')
                message = dict(message, body=body)
            await send(message)

        await inner(scope, receive, send2)

    with BackgroundServer(genuine, datasette=ds, app=lying) as url:
        verdict = run_verifier(page, url + "verify")
        assert page.locator("#page-balances .match .no").count() == 1
    assert verdict == f"failed: this page shows 999999.000000 for ETHUSDTM but the log gives {real}", verdict
