"""The ADL pages of the site (publish/adlviews.py, docs/SITE.md,
"Auto-deleveraging"): the contract page's section, every event paged, one
event's positions and adl.json, all against ``fundledger adl``'s report
(publish/adl.py); the trader lookup in a real browser (publish/static/
adl.js): by commitment and by account id and salt, an unknown account,
nothing typed ever in a request, the commitments as ledger/rules/adl.py
computes them; axe-core's WCAG 2 A/AA rules on the new pages."""

from __future__ import annotations

import asyncio
import base64
import re
from urllib.parse import quote, unquote

import pytest
from test_adl import LOT, event, shortfall, surplus
from test_browser import browser, page  # noqa: F401 (fixtures; skips without chromium)

from ledger.ops import api
from ledger.rules import adl
from ledger.store.schema import Reader
from publish import adl as adl_report
from publish.site import BackgroundServer, make_datasette, wait_verified

PLAIN = {"kind": "contract", "symbol": "PLAIN", "currency": "USDT", "scale": 2, "type": "linear", "multiplier": "1"}
EXTRA_EVENTS = 53  # small events from an empty fund: 55 in all, more than a page


def small_event(store, i: int) -> list[dict]:
    return event(store, shortfall(f"E{i}", "1"), 3)


@pytest.fixture(scope="module")
def adl_db(tmp_path_factory):
    """A format-2 log: a lot contract with two large events (one spares
    part of its queue, one closes the whole queue) and 53 small ones, a
    checkpoint, then one more event it does not cover; a contract without
    a lot whose shortfall went to ADL as one amount."""
    d = tmp_path_factory.mktemp("site-adl")
    db = str(d / "fund.db")
    store, signer = api.init_ledger(db, str(d / "fund.key"), "example.com/adl-fund", log_format=2)
    store.append([LOT, PLAIN], [signer])
    store.append([surplus(i) for i in range(20)], [signer])
    store.append([{"kind": "liquidation", "contract": "PLAIN", "id": "P1", "side": "long", "qty": "5",
                   "bankruptcy_price": "100", "fill_price": "90"}], [signer])
    store.add_checkpoint([signer])
    store.append(event(store, shortfall("L1", "100"), 60, per_entry=4), [signer])  # 26 of 60 closed
    store.append([surplus(i) for i in range(20, 23)], [signer])
    store.append(event(store, shortfall("L2", "9", side="short"), 3), [signer])  # the whole queue
    for i in range(EXTRA_EVENTS):
        store.append(small_event(store, i), [signer])
    store.add_checkpoint([signer])
    store.append(small_event(store, EXTRA_EVENTS), [signer])  # not in a checkpoint
    store.close()
    return db


def report(db: str, account: bytes | None = None) -> dict:
    reader = Reader.open(db)
    try:
        return adl_report.adl_events(reader, "XBTLOT", account, receipts=lambda seq: seq)
    finally:
        reader.close()


@pytest.fixture(scope="module")
def ds(adl_db):
    d = make_datasette(adl_db)
    wait_verified(d)
    yield d
    for db in d.databases.values():
        db.close()


def get(ds, *paths):
    async def fetch():
        return [await ds.client.get(p) for p in paths]

    return asyncio.run(fetch())


def rows(html: str) -> list[int]:
    return [int(s) for s in re.findall(r'<tr class="check-\w+" data-seq="(\d+)"', html)]


def test_the_contract_page_shows_the_latest_events(ds, adl_db):
    want = report(adl_db)["events"]
    assert len(want) == EXTRA_EVENTS + 3
    (r,) = get(ds, "/contract/XBTLOT")
    assert r.status_code == 200
    html = r.text
    newest = [e["seq"] for e in reversed(want)]
    assert rows(html) == newest[:50]
    assert f'href="/contract/XBTLOT/adl?before={newest[49]}"' in html
    assert 'href="/contract/XBTLOT/adl"' in html and 'id="adl-lookup-form"' in html
    assert '<script src="/static/adl.js"></script>' in html
    for e in want[-50:]:
        assert f'<a href="/entry/{e["seq"]}">{e["seq"]}</a>' in html
        assert f'href="/contract/XBTLOT/adl/{e["seq"]}">{e["liquidation"]}</a>' in html
    assert "equal to the minimum the balance required" in html and "NOT the minimum" not in html
    assert 'data-check="unverified"' in html  # the event after the verified checkpoint
    last = want[-1]
    (r,) = get(ds, f"/contract/XBTLOT?before={last['seq'] + 2}")  # the history: an adl entry, its liquidation
    assert f'<a href="/contract/XBTLOT/adl/{last["seq"]}">ADL of {last["liquidation"]}</a>' in r.text
    entry, liquidation = get(ds, f"/entry/{last['seq'] + 1}", f"/entry/{last['seq']}")
    assert "1 XBTLOT position closed by auto-deleveraging" in entry.text
    for page in (entry, liquidation):
        assert f'<a href="/contract/XBTLOT/adl/{last["seq"]}" id="adl-event-link">' in page.text
    assert f"{last['adl_qty']} contracts were closed by auto-deleveraging" in liquidation.text
    (r,) = get(ds, "/contract/PLAIN")
    assert 'id="adl-no-lot"' in r.text and "recorded as one amount" in r.text and "not allocated" in r.text
    assert "adl-lookup" not in r.text and "adl.js" not in r.text


def test_every_event_paged_once(ds, adl_db):
    want = report(adl_db)["events"]
    by_seq = {e["seq"]: e for e in want}
    seen, url = [], "/contract/XBTLOT/adl"
    while url:
        (r,) = get(ds, url)
        assert r.status_code == 200
        page = rows(r.text)
        assert 0 < len(page) <= 50
        seen += page
        m = re.search(r'href="(/contract/XBTLOT/adl\?before=\d+)">Older', r.text)
        url = m and m.group(1)
    assert seen == sorted(by_seq, reverse=True)
    (r,) = get(ds, "/contract/XBTLOT/adl")
    l1, l2 = want[0], want[1]
    assert l1["closed"] == 26 and l1["queue_size"] == 60 and l2["cutoff"] is None
    (r,) = get(ds, f"/contract/XBTLOT/adl?before={l2['seq'] + 1}")
    html = r.text
    assert f"<td>{l1['closed']} of {l1['queue_size']}</td>" in html
    assert f"score {l1['cutoff']['score']} <span class=\"sub\">the first position spared, rank 26</span>" in html
    assert f"<td>{l2['closed']} of {l2['queue_size']}</td>" in html and "the whole queue was closed" in html
    assert f'<td class="num">{l1["market_qty"]}</td>' in html and f"{l1['adl_qty']} <span" in html
    bad = get(ds, "/contract/XBTLOT/adl?before=x", "/contract/NOPE/adl", "/contract/PLAIN/adl")
    assert [b.status_code for b in bad] == [400, 404, 200]
    assert "recorded as one amount" in bad[2].text


def test_one_events_page_lists_its_positions(ds, adl_db):
    l1 = report(adl_db)["events"][0]
    (r,) = get(ds, f"/contract/XBTLOT/adl/{l1['seq']}")
    assert r.status_code == 200
    html = r.text
    assert l1["queue_root"] in html and f"<td>{l1['queue_size']}</td>" in html
    got = re.findall(r'<tr data-rank="(\d+)">\s*<td class="num">\d+</td>\s*<td><code class="hash">([^<]+)</code></td>'
                     r'\s*<td class="num">([^<]+)</td>\s*<td class="num">([^<]+)</td>\s*<td class="num">([^<]+)</td>'
                     r'\s*<td class="num">([^<]+)</td>\s*<td class="num">([^<]+)</td>\s*<td class="num">([^<]+)</td>'
                     r'\s*<td><a href="/entry/(\d+)">', html)
    assert got == [(str(p["rank"]), p["commitment"], p["size"], p["qty"], p["price"], p["score"], p["pnl_ratio"],
                    p["leverage"], str(p["seq"])) for p in l1["positions"]]
    assert l1["cutoff"]["commitment"] in html and 'class="spared"' in html
    assert f'href="/entry/{l1["positions"][0]["seq"]}/receipt"' in html
    missing = get(ds, f"/contract/XBTLOT/adl/{l1['seq'] + 1}", "/contract/XBTLOT/adl/3", "/contract/PLAIN/adl/3",
                  f"/contract/NOPE/adl/{l1['seq']}", "/contract/XBTLOT/adl/99999999999999999999")
    assert [m.status_code for m in missing] == [404, 404, 404, 404, 404]


def test_adl_json_pages_carry_every_position(ds, adl_db):
    want = report(adl_db)["events"]
    got, url = [], "/contract/XBTLOT/adl.json"
    while url:
        (r,) = get(ds, url)
        d = r.json()
        assert r.status_code == 200 and d["contract"] == "XBTLOT" and d["lot"] == "1"
        got += d["events"]
        url = d["next"]
    assert [e["seq"] for e in got] == [e["seq"] for e in reversed(want)]
    for g, w in zip(got, reversed(want)):
        assert g["liquidation"] == w["liquidation"] and g["closed"] == w["closed"]
        assert g["positions"] == [{k: p[k] for k in ("rank", "commitment", "size", "qty", "price", "seq")}
                                  for p in w["positions"]]
    (r,) = get(ds, "/contract/PLAIN/adl.json")
    assert r.json()["events"] == [] and r.json()["lot"] is None


def test_an_adl_quantity_not_the_minimum_is_flagged(ds, adl_db, monkeypatch):
    monkeypatch.setattr(adl_report, "_minimum", lambda contract, liq: "1")
    l1 = report(adl_db)["events"][0]
    (r,) = get(ds, f"/contract/XBTLOT/adl/{l1['seq']}")
    assert f'<strong class="unfair" data-unfair="{l1["seq"]}">{l1["adl_qty"]}: NOT the minimum' in r.text
    assert "(1)</strong>" in r.text


def test_a_changed_event_is_flagged(adl_db, tmp_path):
    """The stored copy of an event changed after the site verified the log:
    its liquidation says 81 contracts went to ADL, one of its positions a
    larger quantity. The event's rows say "does not match the signed log",
    and the ADL quantity is flagged as not the minimum."""
    import sqlite3

    from test_browser import tampered_copy

    l1 = report(adl_db)["events"][0]
    db = tampered_copy(adl_db, str(tmp_path / "t.db"))
    d = make_datasette(db)
    wait_verified(d)
    con = sqlite3.connect(db)
    for seq, old, new in ((l1["seq"], b'"adl_qty":"80"', b'"adl_qty":"81"'), (l1["seq"] + 1, b" 1 1 ", b" 1 2 ")):
        (data,) = con.execute("SELECT data FROM entries WHERE seq = ?", (seq,)).fetchone()
        assert old in data
        con.execute("UPDATE entries SET data = ? WHERE seq = ?", (data.replace(old, new, 1), seq))
    con.commit()
    con.close()
    try:
        event_page, listed = get(d, f"/contract/XBTLOT/adl/{l1['seq']}", f"/contract/XBTLOT/adl?before={l1['seq'] + 1}")
        for r in (event_page, listed):
            assert f'data-seq="{l1["seq"]}" data-check="mismatch"' in r.text
            assert f'data-unfair="{l1["seq"]}">81: NOT the minimum the balance required (80)' in r.text
        assert "does not match the signed log" in event_page.text
    finally:
        for db_ in d.databases.values():
            db_.close()


# --- in a real browser -----------------------------------------------------------


@pytest.fixture(scope="module")
def site(adl_db):
    pytest.importorskip("playwright")
    with BackgroundServer(adl_db) as url:
        yield url


def secrets_of(*values: str) -> list[str]:
    """Every spelling of ``values`` a request could carry them in."""
    out = []
    for v in values:
        out += [v, quote(v, safe=""), quote(v), v.replace("+", "-").replace("/", "_")]
    return [s for s in out if s]


def leaks(requests: list[tuple[str, str, str]], typed: list[str]) -> list[tuple[str, str]]:
    """``(secret, url)`` for every request whose URL, body or headers hold one of ``typed``."""
    return [(s, u) for u, body, headers in requests for s in typed if s in u or s in body or s in headers]


def lookup(page, site: str, **fields) -> list[dict]:
    page.goto(site + "contract/XBTLOT")
    page.wait_for_selector("#adl-lookup-form:not([hidden])")
    for name, value in fields.items():
        page.fill(f"#adl-{name}", value)
    page.click("#adl-lookup-run")
    page.wait_for_selector("#adl-lookup[data-result]")
    return page.eval_on_selector_all("#adl-lookup-result tbody tr", """rows => rows.map(r => ({
        seq: +r.dataset.seq, rank: +r.dataset.rank, cells: [...r.cells].map(c => c.textContent),
        receipt: (r.querySelector("a[href$='/receipt']") || {}).href || null}))""")


def test_the_commitments_are_the_rules(site, page):
    page.goto(site + "contract/XBTLOT")
    for account_id, salt in (("acct-1", "salt-1"), ("ünïcode id", "s\u00e4lt ✓"), ("a", "")):
        c = adl.account_commitment(account_id, salt)
        got = page.evaluate("""async ([id, salt, lid]) => {
            const c = await FundledgerADL.accountCommitment(id, salt);
            return [FundledgerADL.b64(c), FundledgerADL.b64(await FundledgerADL.positionCommitment(c, "XBTLOT", lid))];
        }""", [account_id, salt, "L-1/x"])
        assert got == [adl.b64(c), adl.b64(adl.position_commitment(c, "XBTLOT", "L-1/x"))]
    assert page.evaluate("FundledgerADL.parseCommitment('not base64') === null")


def test_the_lookup_finds_the_traders_events_and_sends_nothing_typed(site, adl_db, page):
    requests = []
    page.on("request", lambda req: requests.append((unquote(req.url), req.post_data or "",
                                                    str(req.headers))))
    account_id, salt = "acct-2", "salt-2"
    account = adl.account_commitment(account_id, salt)
    want = report(adl_db, account)["events"]
    assert len(want) == EXTRA_EVENTS + 2  # closed in L2 and in every small event
    expect = sorted((e["seq"], e["positions"][0]["rank"]) for e in want)
    by_c = lookup(page, site, commitment=base64.b64encode(account).decode())
    assert page.get_attribute("#adl-lookup", "data-result") == "found", page.inner_text("#adl-lookup-status")
    assert sorted((r["seq"], r["rank"]) for r in by_c) == expect
    by_id = lookup(page, site, account=account_id, salt=salt)
    assert by_id == by_c
    last = max(want, key=lambda e: e["seq"])
    row = next(r for r in by_c if r["seq"] == last["seq"])
    p = last["positions"][0]
    assert row["cells"][4] == f"{p['rank']} of the {last['queue_size']} in the queue"
    assert row["cells"][5] == f"{p['qty']} of {p['size']}" and row["cells"][6] == p["price"]
    assert row["receipt"] is None and "not yet in a signed checkpoint" in row["cells"][7]  # after the checkpoint
    first = min(want, key=lambda e: e["seq"])
    assert next(r for r in by_c if r["seq"] == first["seq"])["receipt"].endswith(
        f"/entry/{first['positions'][0]['seq']}/receipt")
    none = lookup(page, site, account="nobody", salt="nothing")
    assert none == [] and page.get_attribute("#adl-lookup", "data-result") == "not-found"
    assert "not a proof that your position was never in a queue" in page.inner_text("#adl-not-found")
    bad = lookup(page, site, commitment="AAAA")
    assert bad == [] and page.get_attribute("#adl-lookup", "data-result") == "bad-input"
    assert any("/contract/XBTLOT/adl.json" in u for u, _, _ in requests)
    typed = secrets_of(base64.b64encode(account).decode(), account_id, salt, "nobody", "nothing",
                       base64.b64encode(adl.account_commitment("nobody", "nothing")).decode())
    assert leaks(requests, typed) == [] and page.errors == []
    seen = len(requests)  # the check itself: a request that did carry the salt would be caught
    page.evaluate("fetch('/vkey?x=' + encodeURIComponent('salt-2'))")
    page.wait_for_timeout(200)
    assert {s for s, _ in leaks(requests[seen:], typed)} == {"salt-2"}


def test_the_adl_pages_pass_axe(site, adl_db, page):
    from test_a11y import axe
    from test_a11y import report as axe_report

    l1 = report(adl_db)["events"][0]
    paths = ["contract/XBTLOT", "contract/PLAIN", "contract/XBTLOT/adl", f"contract/XBTLOT/adl?before={l1['seq'] + 1}",
             f"contract/XBTLOT/adl/{l1['seq']}", "contract/PLAIN/adl"]
    for path in paths:
        page.goto(site + path)
        results = axe(page)
        assert not results["violations"], axe_report(results, path)
    for fields in ({"account": "acct-2", "salt": "salt-2"}, {"account": "nobody", "salt": "x"}, {"commitment": "A"}):
        lookup(page, site, **fields)
        results = axe(page)
        assert not results["violations"], axe_report(results, f"lookup {fields}")

