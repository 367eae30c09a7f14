"""The browser's verifier (publish/static/verify.js) on the cases of
tests/test_harden_format.py where it had its own rules: the order of checks
when one entry breaks two, and a key entry handing the log to a small-order
key (whose "signature" WebCrypto may accept for every message)."""

from __future__ import annotations

import os

import pytest

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

import tamper_util as tu  # noqa: E402
from conftest import ORIGIN  # noqa: E402
from publish.site import BackgroundServer  # noqa: E402
from test_harden_format import _resign_with_bad_signature, forge, rotate_to_identity, small, tu_bump  # noqa: E402,F401

ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VERDICT_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def verdict_of(browser, db: str) -> str:
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        with BackgroundServer(db) as url:
            page.goto(url + "verify")
            page.wait_for_selector("#verify-app[data-verdict]", timeout=VERDICT_TIMEOUT_MS)
            return page.inner_text("#verdict-text")
    finally:
        ctx.close()


def test_the_genuine_small_ledger_verifies(browser, small):
    assert verdict_of(browser, small.db) == "verified"


def test_a_rules_fault_is_named_before_a_bad_signature_of_the_same_entry(browser, small, tmp_path):
    path = tu.copy_ledger(small.db, tmp_path / "two.db")
    conn = tu.open_rw(path)
    obj = tu.entry_obj(tu.entry_data(conn, 4))
    obj["balance"] = tu_bump(obj["balance"])
    tu.set_data(conn, 4, _resign_with_bad_signature(obj, small.signer), sync=True)
    tu.sign_checkpoint(conn, small.signer, ORIGIN)
    conn.close()
    verdict = verdict_of(browser, path)
    assert verdict.startswith("failed: entry 4: balance is "), verdict


def test_a_bad_signature_is_named_before_a_later_entrys_fault(browser, small, tmp_path):
    path = tu.copy_ledger(small.db, tmp_path / "sig.db")
    conn = tu.open_rw(path)
    obj = tu.entry_obj(tu.entry_data(conn, 4))
    tu.set_data(conn, 4, _resign_with_bad_signature(obj, small.signer), sync=True)
    obj = tu.entry_obj(tu.entry_data(conn, 8))
    obj["delta"] = "0"
    tu.set_data(conn, 8, tu.sign(tu.canonical(obj), small.signer), sync=True)
    tu.sign_checkpoint(conn, small.signer, ORIGIN)
    conn.close()
    verdict = verdict_of(browser, path)
    assert verdict == "failed: entry 4: the signature is not valid", verdict


def test_a_key_entry_announcing_a_small_order_key_fails_in_the_browser(browser, small, tmp_path):
    path, seq = rotate_to_identity(small.db, tmp_path / "r.db", small.signer)
    verdict = verdict_of(browser, path)
    assert verdict.startswith(f"failed: entry {seq}: the new key: the public key is a small-order"), verdict


def test_a_wrong_hash_tile_names_the_first_leaf_under_the_wrong_hash(browser, small):
    from publish.site import make_datasette

    ds = make_datasette(small.db)
    inner = ds.app()

    async def flipping(scope, receive, send):
        async def send2(message):
            if message["type"] == "http.response.body" and scope.get("path") == "/tile/0/000.p/12" \
                    and message.get("body"):
                body = bytearray(message["body"])
                body[3 * 32] ^= 1
                message = dict(message, body=bytes(body))
            await send(message)

        await inner(scope, receive, send2)

    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        with BackgroundServer(small.db, datasette=ds, app=flipping) as url:
            page.goto(url + "verify")
            page.wait_for_selector("#verify-app[data-verdict]", timeout=VERDICT_TIMEOUT_MS)
            verdict = page.inner_text("#verdict-text")
    finally:
        ctx.close()
    assert verdict == "failed: entry 3: the hash tile tile/0/000.p/12 does not match the entries", verdict


FORGED = {  # entry seq, the change, what the browser must say (the Python verifier's cases)
    "leap second": (3, {"time": "2016-12-31T23:59:60Z"}, "entry 3: time is not a valid date"),
    "year 0000": (3, {"time": "0000-01-01T00:00:00Z"}, "entry 3: time is not a valid date"),
    "multiplier 10^-19": (0, {"multiplier": "0.0000000000000000001"}, "entry 0: multiplier has too many digits"),
    "mark_price null": (3, {"mark_price": None}, "entry 3: mark_price is not a decimal string"),
    "scale 0 with a point": (7, {"balance": "5.0"}, "entry 7: balance is 5.0 but the rules give 5"),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_the_browser_refuses_what_the_format_refuses(browser, small, tmp_path, case):
    seq, change, said = FORGED[case]
    path = forge(small.db, tmp_path / "f.db", seq, lambda o: o.update(change), small.signer)
    assert verdict_of(browser, path) == "failed: " + said


def test_the_browser_accepts_times_in_any_order(browser, ledger):
    ledger.append({"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8,
                   "time": "2026-06-01T00:00:00Z"})
    ledger.append(*[{"kind": "liquidation", "contract": "XBTUSDTM", "id": f"L-{i}", "side": "long", "qty": "1",
                     "bankruptcy_price": "39000", "fill_price": "39100", "time": t}
                    for i, t in enumerate(["2026-05-01T00:00:00Z", "2020-01-01T00:00:00Z", "9999-12-31T23:59:59Z"])])
    ledger.checkpoint()
    ledger.store.close()
    assert verdict_of(browser, ledger.db) == "verified"
