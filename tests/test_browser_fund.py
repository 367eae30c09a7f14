"""A format-2 log in a real browser (Debian's chromium through Playwright):
the full replay of /verify understands chains and state entries, and the
"Check this fund" button of a contract page checks one fund from its own
files, says what it proves, and fails on a lying site."""

from __future__ import annotations

import os

import pytest
from test_browser import SHOTS, browser, liq, page, tampered_copy  # noqa: F401 (fixtures; skips without chromium)

from ledger.ops import api
from ledger.verify.light import check_fund_path
from publish.site import BackgroundServer

VERDICT_TIMEOUT_MS = 60_000
CONTRACTS = [
    {"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8, "type": "linear", "multiplier": "0.001"},
    {"kind": "contract", "symbol": "XBTUSDM", "currency": "XBT", "scale": 8, "type": "inverse", "multiplier": "1"},
]


def batch(lo: int, hi: int, inverse: bool = True) -> list[dict]:
    out = []
    for i in range(lo, hi):
        if i % 3 == 0 and inverse:
            out.append(liq(i, "XBTUSDM", "long", "39000", "39123.5", str(100 + i), mark_price="39150"))
        elif i % 50 == 7:
            out.append(liq(i, "XBTUSDTM", "long", "39000", "30000", "90"))  # a shortfall passed to ADL
        else:
            out.append(liq(i, "XBTUSDTM", "long", "39000", str(39000 + (i % 97) * 3), str(1 + i % 5)))
    return out


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory):
    """A format-1 log with a key rotation, switched to format 2, with more
    entries, another rotation and three checkpoints."""
    d = tmp_path_factory.mktemp("browser2")
    db, key = str(d / "fund.db"), str(d / "fund.key")
    store, signer = api.init_ledger(db, key, "example.com/browser-fund2")
    store.append(CONTRACTS[:1], [signer])
    store.append(batch(0, 120, inverse=False), [signer])
    store.add_checkpoint([signer])
    _, signer = api.rotate_key(store, signer, str(d / "k2.key"))
    api.upgrade(store, signer)
    store.append(CONTRACTS[1:], [signer])
    store.append(batch(120, 420), [signer])
    store.add_checkpoint([signer])
    _, signer = api.rotate_key(store, signer, str(d / "k3.key"))
    store.append(batch(420, 500), [signer])
    store.add_checkpoint([signer])
    store.close()
    return db


def check_fund_in(page, url: str, symbol: str) -> str:
    page.goto(url + "contract/" + symbol)
    page.click("#fund-check-run")
    page.wait_for_selector("#fund-check[data-verdict=verified], #fund-check[data-verdict=failed]",
                           timeout=VERDICT_TIMEOUT_MS)
    return page.inner_text("#fund-check-verdict")


def test_the_full_replay_understands_format_2(upgraded, page):
    with BackgroundServer(upgraded) as url:
        page.goto(url + "verify?full=1")
        page.wait_for_selector("#verify-app[data-verdict]", timeout=VERDICT_TIMEOUT_MS)
        assert page.inner_text("#verdict-text") == "verified", page.inner_text("#verdict-text")
    assert page.errors == []


def test_check_this_fund(upgraded, page):
    with BackgroundServer(upgraded) as url:
        for symbol in ("XBTUSDTM", "XBTUSDM"):
            expected = check_fund_path(url, symbol)
            text = check_fund_in(page, url, symbol)
            assert text.startswith("checked:"), text
            assert page.get_attribute("#fund-check", "data-checked-balance") == expected.fund["balance"]
            status = page.inner_text("#fund-check-status")
            assert f"All {expected.entries_checked:,} entries of this fund" in status
            assert "following 3 log keys" in status and "This page shows the same balance." in status
            assert "nobody but the operator vouches" in page.inner_text("#fund-check-witnesses")
        page.screenshot(path=f"{SHOTS}/fund-check.png", full_page=True)
    assert page.errors == []


def test_a_site_serving_a_tampered_entry_fails_the_fund_check(upgraded, page, tmp_path):
    """The stored copy of one XBTUSDM liquidation changed: the fund check
    finds it is not the leaf the signed tree holds at its seq."""
    import sqlite3

    conn = sqlite3.connect(upgraded)
    seq, data = conn.execute(
        "SELECT seq, data FROM entries WHERE contract = 'XBTUSDM' AND kind = 'liquidation' ORDER BY seq LIMIT 1 OFFSET 5"
    ).fetchone()
    conn.close()
    bad = bytes(data).replace(b'"qty":"', b'"qty":"1', 1)
    db = tampered_copy(upgraded, str(tmp_path / "bad.db"), ("UPDATE entries SET data = ? WHERE seq = ?", (bad, seq)))
    with BackgroundServer(db, verified_timeout=None) as url:
        text = check_fund_in(page, url, "XBTUSDM")
    assert text == f"failed: entry {seq}: it is not the one the checkpointed tree holds at its seq", text


def test_a_format_1_site_says_so(tmp_path, page):
    db, key = str(tmp_path / "f1.db"), str(tmp_path / "f1.key")
    store, signer = api.init_ledger(db, key, "example.com/browser-fund1")
    store.append(CONTRACTS[:1] + batch(0, 5, inverse=False), [signer])
    store.add_checkpoint([signer])
    store.close()
    with BackgroundServer(db) as url:
        text = check_fund_in(page, url, "XBTUSDTM")
    assert text.startswith("failed: this log is in format 1"), text


@pytest.fixture(scope="module")
def scattered(tmp_path_factory):
    """A format-2 log of 1,200 liquidations, AAA's in every third: its first
    chain bundle lies in full tiles, so it has tile paths."""
    d = tmp_path_factory.mktemp("paths")
    db, key = str(d / "fund.db"), str(d / "fund.key")
    store, signer = api.init_ledger(db, key, "example.com/browser-paths", log_format=2)
    store.append([dict(CONTRACTS[0], symbol=s) for s in ("AAA", "BBB")], [signer])
    store.append([liq(i, "AAA" if i % 3 == 0 else "BBB", "long", "39000", str(39000 + (i % 97) * 3), "1")
                  for i in range(1200)], [signer])
    store.add_checkpoint([signer])
    store.close()
    return db


def test_the_fund_check_reads_tile_paths_not_level_0_tiles(scattered, page):
    asked = []
    page.on("request", lambda r: asked.append(r.url))
    with BackgroundServer(scattered) as url:
        text = check_fund_in(page, url, "AAA")
        assert text.startswith("checked:"), text
        level0 = {u.split(url)[-1] for u in asked if "/tile/0/" in u}
        assert url + "chain/AAA/000.paths" in asked
        # bundle 0 (seqs up to ~770) through its paths: tiles 1 and 2 never read; tile 0 holds the
        # first state entry, read alone; bundle 1 reaches the partial tile, so tiles 3 and 4 are read
        assert level0 == {"tile/0/000", "tile/0/003", f"tile/0/004.p/{check_fund_path(url, 'AAA').tree_size % 256}"}


def test_a_wrong_tile_path_fails_the_fund_check(scattered, page):
    def flip(route):
        body = bytearray(route.fetch().body())
        body[300] ^= 1  # entry 1's second sibling
        route.fulfill(status=200, body=bytes(body), content_type="application/octet-stream")

    page.route("**/chain/AAA/000.paths", flip)
    with BackgroundServer(scattered) as url:
        text = check_fund_in(page, url, "AAA")
    assert page.get_attribute("#fund-check", "data-verdict") == "failed"
    assert "through chain/AAA/000.paths" in text, text


def test_a_fund_entry_with_a_bad_signature_fails_the_fund_check(scattered, page, tmp_path):
    """An AAA liquidation the operator logged with a broken signature (the
    tree and the checkpoint made to hold it): its signature, checked in the
    workers with its bundle, is named before the next entry's broken link."""
    import tamper_util as tu
    from test_harden_format import _resign_with_bad_signature

    from ledger.ops.keys import load_key_file

    signer = load_key_file(os.path.join(os.path.dirname(scattered), "fund.key"))
    path = tu.copy_ledger(scattered, tmp_path / "sig.db")
    conn = tu.open_rw(path)
    seq = conn.execute("SELECT seq FROM entries WHERE contract = 'AAA' AND kind = 'liquidation' "
                       "ORDER BY seq LIMIT 1 OFFSET 40").fetchone()[0]
    tu.set_data(conn, seq, _resign_with_bad_signature(tu.entry_obj(tu.entry_data(conn, seq)), signer), sync=True)
    tu.sign_checkpoint(conn, signer, "example.com/browser-paths")
    conn.close()
    with BackgroundServer(path, verified_timeout=None) as url:
        text = check_fund_in(page, url, "AAA")
    assert text == f"failed: entry {seq}: the signature is not valid", text
