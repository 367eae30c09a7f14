"""The in-browser verifier against a site that shows what it did not
verify: a host rewriting /funds.json (the numbers of the other pages), a
summary table edited in the database, and a large log, which is never
called "verified" before the full replay of every entry (Debian's chromium through
Playwright, as tests/test_browser.py)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from test_browser import ARGS, CHROMIUM, browser, genuine, page, run_verifier, tampered_copy  # noqa: F401

from publish.site import BackgroundServer, make_datasette


def _balances_at_checkpoint(db: str) -> dict:
    """Each fund's balance after the last entry of the latest checkpoint,
    from the entries' signed text."""
    con = sqlite3.connect(db)
    size = con.execute("SELECT MAX(tree_size) FROM checkpoints").fetchone()[0]
    out = {}
    for (data,) in con.execute("SELECT data FROM entries WHERE seq < ? ORDER BY seq", (size,)):
        obj = json.loads(bytes(data).split(b"\n\n")[0])
        if obj["kind"] == "liquidation":
            out[obj["contract"]] = obj["balance"]
    con.close()
    return out


def test_a_host_rewriting_funds_json_fails(genuine, page):
    real = _balances_at_checkpoint(genuine)["XBTUSDM"]
    ds = make_datasette(genuine)
    inner = ds.app()

    async def lying(scope, receive, send):
        async def send2(message):
            if message["type"] == "http.response.body" and scope.get("path") == "/funds.json" and message.get("body"):
                message = dict(message, body=message["body"].replace(f'"balance": "{real}"'.encode(),
                                                                      b'"balance": "123456.00000000"'))
            await send(message)

        await inner(scope, receive, send2)

    with BackgroundServer(genuine, datasette=ds, app=lying) as url:
        verdict = run_verifier(page, url + "verify")
    assert verdict == f"failed: /funds.json shows 123456.00000000 for XBTUSDM but the log gives {real}", verdict


def test_an_edited_summary_table_is_not_what_the_pages_show(genuine, page, tmp_path):
    """The contracts table says 999999 everywhere: the home page shows the
    verified balances, which /verify then confirms one by one."""
    db = tampered_copy(genuine, str(tmp_path / "s.db"),
                       ("UPDATE contracts SET balance = '999999.00000000', balance_usd = '999999.00'", ()))
    real = _balances_at_checkpoint(genuine)
    with BackgroundServer(db) as url:
        page.goto(url)
        shown = {tr.get_attribute("data-contract"): tr.get_attribute("data-balance")
                 for tr in page.locator("table.funds tbody tr").all()}
        assert "999,999" not in page.inner_text("main")
        assert run_verifier(page, url + "verify") == "verified"
        computed = {tr.get_attribute("data-contract"): tr.locator(".computed").get_attribute("title").split()[0]
                    for tr in page.locator("#page-balances tbody tr").all()}
    assert shown == computed == real


def test_a_large_log_is_never_called_verified_before_its_full_replay(genuine, page, tmp_path):
    """The derived contract column of a fund's latest entry is changed, which
    once made a large-log mode that checked one receipt per fund check an
    older entry and say "verified". A large log now waits for the visitor's
    button, says nothing is checked yet, and then replays every entry."""
    con = sqlite3.connect(genuine)
    seq = con.execute("SELECT MAX(seq) FROM entries WHERE contract = 'XBTUSDTM' AND kind = 'liquidation' "
                      "AND seq < (SELECT MAX(tree_size) FROM checkpoints)").fetchone()[0]
    con.close()
    db = tampered_copy(genuine, str(tmp_path / "l.db"), ("UPDATE entries SET contract = 'ZZZ' WHERE seq = ?", (seq,)))
    real = _balances_at_checkpoint(genuine)
    with BackgroundServer(db) as url:
        waiting = run_verifier(page, url + "verify?threshold=10")
        state = page.get_attribute("#verify-app", "data-verdict")
        computed = page.locator("#page-balances .match .yes").count()
        page.click("#start-full")
        page.wait_for_selector("#verify-app[data-verdict=verified], #verify-app[data-verdict=failed]", timeout=60_000)
        verdict = page.inner_text("#verdict-text")
        rows = {tr.get_attribute("data-contract"): tr.get_attribute("data-balance")
                for tr in page.locator("#page-balances tbody tr").all()}
    assert waiting.startswith("not checked yet") and state == "not-started" and computed == 0, waiting
    assert verdict == "verified" and "Replayed all" in page.inner_text("#status")
    assert rows == real
