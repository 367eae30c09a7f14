"""Accessibility in a real browser (Debian's chromium through Playwright):
every page of the site's own (publish/templates/fl_*.html) passes axe-core's
WCAG 2.0 and 2.1 A and AA rules, in each colour scheme its stylesheet has,
also once the in-browser checks have written their verdicts into the page
and when the site's own verification failed; Datasette's pages (tables,
rows, queries, its error page) at least say which language they are in.

axe-core is the copy bundled by the axe-playwright-python package (the `test`
extra). It is evaluated through Playwright, which the page's
Content-Security-Policy does not govern, so the site's CSP stays on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from test_browser import browser, liq, tampered_copy  # noqa: F401 (fixtures; skips without chromium)
from test_browser_fund import CONTRACTS, batch

from axe_playwright_python.base import AXE_SCRIPT
from ledger.ops import api
from publish.site import BackgroundServer

TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
PUBLISH = Path(__file__).resolve().parent.parent / "publish"
# the dark scheme too, as soon as the site's stylesheet or its pages have one (today they do not)
STYLED = [*PUBLISH.glob("static/*.css"), *PUBLISH.glob("templates/fl_*.html")]
SCHEMES = ["light"] + (["dark"] if any("color-scheme" in f.read_text() for f in STYLED) else [])
VERDICT_TIMEOUT_MS = 60_000
MAX_NODES = 8  # offending elements listed per rule

# every page of the site's own, in the states a request can put it in
PAGES = {
    "home": "",
    "contract": "contract/XBTUSDTM",
    "contract-older": "contract/XBTUSDTM?before=60",
    "contract-inverse": "contract/XBTUSDM",
    "entry-opened": "entry/0",
    "entry": "entry/5",
    "entry-not-in-checkpoint": "entry/{last}",
    "about": "about",
    "search-several": "search?id=L-SAME",
    "search-not-found": "search?id=L-NONE",
    "search-bad-id": "search?id=",
    "error-not-found": "contract/NOPE",
}
DATASETTE_PAGES = ["ledger", "ledger/entries", "ledger/entries/5", "ledger/contracts", "ledger/checkpoints",
                   "ledger/fund_balances", "ledger/fund_history?contract=XBTUSDTM", "ledger/no-such-table"]


@pytest.fixture(scope="module")
def site_db(tmp_path_factory):
    """A format-2 log (so "Check this fund" can run): a linear and an
    inverse fund, surpluses, a shortfall passed to ADL, one liquidation id
    recorded by both funds, a checkpoint, then two entries after it."""
    d = tmp_path_factory.mktemp("a11y")
    db, key = str(d / "fund.db"), str(d / "fund.key")
    store, signer = api.init_ledger(db, key, "example.com/a11y-fund", log_format=2)
    store.append(CONTRACTS, [signer])
    store.append(batch(0, 120), [signer])
    same = [dict(liq(0, symbol, "long", "39000", "39050", "2"), id="L-SAME") for symbol in ("XBTUSDTM", "XBTUSDM")]
    store.append(same, [signer])
    store.add_checkpoint([signer])
    store.append(batch(120, 122), [signer])
    store.close()
    return db


@pytest.fixture(scope="module")
def site(site_db):
    with BackgroundServer(site_db) as url:
        yield url


@pytest.fixture(params=SCHEMES)
def page(request, browser):  # noqa: F811 (the browser fixture of test_browser)
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme=request.param)
    pg = ctx.new_page()
    pg.scheme = request.param
    yield pg
    ctx.close()


def axe(page, options: dict | None = None) -> dict:
    """Run axe-core on the page as it is now; its results."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(AXE_SCRIPT)
    options = options or {"runOnly": {"type": "tag", "values": TAGS}}
    return page.evaluate("(options) => axe.run(document, options)", {**options, "resultTypes": ["violations"]})


def report(results: dict, where: str) -> str:
    """The violations of one axe run: rule, impact and the offending elements."""
    lines = [f"{where}: {len(results['violations'])} axe-core {results['testEngine']['version']} violation(s)"]
    for v in results["violations"]:
        lines.append(f"  {v['id']} ({v['impact']}): {v['help']}")
        for node in v["nodes"][:MAX_NODES]:
            why = (node.get("failureSummary") or "").replace("\n", " ")
            lines.append(f"    - {' '.join(node['target'])}: {why}")
        if len(v["nodes"]) > MAX_NODES:
            lines.append(f"    - and {len(v['nodes']) - MAX_NODES} more")
    return "\n".join(lines)


def assert_accessible(page, what: str) -> None:
    results = axe(page)
    if results["violations"]:
        pytest.fail(report(results, f"{what} ({page.scheme} scheme, {page.url})"), pytrace=False)


def last_seq(db: str) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT MAX(seq) FROM entries").fetchone()[0]
    finally:
        con.close()


@pytest.mark.parametrize("name", PAGES)
def test_site_page_passes_axe(site, site_db, page, name):
    response = page.goto(site + PAGES[name].format(last=last_seq(site_db)))
    assert response.status < 500
    assert_accessible(page, name)


def test_the_verdicts_pass_axe(site, page):
    """The pages once verify.js has written into them: the fund check's and
    the full replay's verdicts, "verified", "failed", and the cost shown
    before a large replay starts (for a desktop, or not)."""
    page.goto(site + "contract/XBTUSDTM")
    page.click("#fund-check-run")
    page.wait_for_selector("#fund-check[data-verdict=verified]", timeout=VERDICT_TIMEOUT_MS)
    assert_accessible(page, "contract, fund checked")
    for query, verdict in (("verify", "verified"), ("verify?threshold=10", "not-started"),
                           ("verify?threshold=10&desktop=100", "not-started")):
        page.goto(site + query)
        page.wait_for_selector(f"#verify-app[data-verdict={verdict}]", timeout=VERDICT_TIMEOUT_MS)
        assert_accessible(page, f"verify, {verdict}")
    page.route("**/vkey", lambda route: route.fulfill(status=200, body="not a key\n", content_type="text/plain"))
    page.goto(site + "verify")
    page.wait_for_selector("#verify-app[data-verdict=failed]", timeout=VERDICT_TIMEOUT_MS)
    assert_accessible(page, "verify, failed")
    page.goto(site + "contract/XBTUSDTM")
    page.click("#fund-check-run")
    page.wait_for_selector("#fund-check[data-verdict=failed]", timeout=VERDICT_TIMEOUT_MS)
    assert_accessible(page, "contract, fund check failed")


def test_verify_before_its_script_runs_passes_axe(site, page):
    """/verify as a visitor sees it whose browser does not run the script."""
    page.route("**/static/verify.js", lambda route: route.abort())
    page.goto(site + "verify")
    assert page.inner_text("#status") == "Waiting for the script…"
    assert_accessible(page, "verify, no script")


def changed_entry(db: str, seq: int) -> bytes:
    """Entry ``seq``'s bytes with its quantity changed, signature left as it was."""
    con = sqlite3.connect(db)
    data = bytes(con.execute("SELECT data FROM entries WHERE seq = ?", (seq,)).fetchone()[0])
    con.close()
    return data.replace(b'"qty":"', b'"qty":"1', 1)


def test_an_entry_that_does_not_match_passes_axe(site_db, page, tmp_path):
    """An entry's stored bytes changed after the site verified the log: its
    page and its row say "does not match the signed log"."""
    db = tampered_copy(site_db, str(tmp_path / "t.db"))
    with BackgroundServer(db) as url:
        con = sqlite3.connect(db)
        con.execute("UPDATE entries SET data = ? WHERE seq = 20", (changed_entry(db, 20),))
        con.commit()
        con.close()
        for path, mark in (("entry/20", "#verification[data-check=mismatch]"),
                           ("contract/XBTUSDTM?before=22", "tr.check-mismatch")):
            page.goto(url + path)
            assert page.locator(mark).count() == 1, path
            assert_accessible(page, f"entry 20 changed, /{path}")


def test_a_failed_site_passes_axe(site_db, page, tmp_path):
    """The site's own verification failed: the alarms pass too."""
    db = tampered_copy(site_db, str(tmp_path / "t.db"),
                       ("UPDATE entries SET data = ? WHERE seq = 20", (changed_entry(site_db, 20),)))
    with BackgroundServer(db) as url:
        for path, mark in (("", "[data-status=failed]"), ("contract/XBTUSDTM", "[data-status=failed]"),
                           ("verify", "[data-site-status=failed]")):
            page.goto(url + path)
            assert page.locator(mark).count() == 1, path
            assert_accessible(page, f"failed site, /{path}")


def test_datasette_pages_say_their_language(site, browser):  # noqa: F811
    """Datasette's own pages need not pass every rule, but they say which
    language they are in (publish/templates/base.html)."""
    rules = {"runOnly": {"type": "rule", "values": ["html-has-lang", "html-lang-valid"]}}
    ctx = browser.new_context()
    try:
        pg = ctx.new_page()
        for path in DATASETTE_PAGES:
            pg.goto(site + path)
            results = axe(pg, rules)
            if results["violations"]:
                pytest.fail(report(results, f"Datasette's /{path}"), pytrace=False)
            assert pg.evaluate("document.documentElement.lang") == "en", path
    finally:
        ctx.close()


def test_a_violation_is_reported_with_its_rule_impact_and_nodes(page):
    """The check itself: a link told apart by colour alone, on a page
    without lang, fails, and the message names the rule, its impact and
    the element."""
    page.set_content('<title>t</title><main><p style="color:#333">Some text with '
                     '<a id="bad" href="#x" style="color:#444;text-decoration:none">a link</a> in it.</p></main>')
    results = axe(page)
    text = report(results, "a bad page")
    assert {"link-in-text-block", "html-has-lang"} <= {v["id"] for v in results["violations"]}, text
    assert "link-in-text-block (serious)" in text and "- #bad:" in text, text
