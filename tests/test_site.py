"""The transparency site (publish/site.py, publish/views.py): every page and
JSON endpoint in-process through datasette.client, the C2SP tiles against
publish/export.py, refusals (writes, SQL, downloads, odd paths), liveness,
and `verify_path` against a real server on a loopback port."""

from __future__ import annotations

import asyncio
import base64
import functools
import http.client
import json
import sqlite3
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from urllib.parse import urlsplit

import pytest

from ledger.ops import api
from ledger.tlog import merkle
from ledger.tlog.tiles import tile_data
from ledger.format import note
from ledger.errors import StoreError
from ledger.verify.run import verify_path
from publish import chart, present
from publish.export import export
from publish.site import BackgroundServer, ReadOnlyDatabase, make_datasette, wait_verified

ATOM = "{http://www.w3.org/2005/Atom}"


def run_async(fn):
    """Run an ``async def`` test in its own event loop (no pytest plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


def liq(i, contract="XBTUSDTM", side="long", bankruptcy="39000", fill="39100", qty="1", **extra):
    return {"kind": "liquidation", "contract": contract, "id": f"L-{i}", "side": side, "qty": qty,
            "bankruptcy_price": bankruptcy, "fill_price": fill, **extra}


def verified_at_checkpoint(ledger, tmp) -> dict:
    """Every fund's summary as of the latest checkpoint, by the verifier
    over a static export (independent of the site)."""
    export(ledger.store, str(tmp))
    return {s: f.summary() for s, f in verify_path(str(tmp)).book.funds.items()}


def build(ledger, n=300):
    """Two linear funds and an inverse one; ``n`` liquidations with surpluses,
    a shortfall the fund covers and one it cannot (ADL); a checkpoint; then
    two entries not yet covered by a checkpoint."""
    ledger.contract("XBTUSDTM", "USDT", 8, "linear", "0.001")
    ledger.contract("ETHUSDTM", "USDT", 6, "linear", "0.01")
    ledger.contract("XBTUSDM", "XBT", 8, "inverse", "1")
    recs = []
    for i in range(n):
        c = ("XBTUSDTM", "ETHUSDTM", "XBTUSDM")[i % 3]
        if c == "ETHUSDTM":
            recs.append(liq(i, c, "short", "2000", "1999.5", qty="3", mark_price="1999.7"))
        elif c == "XBTUSDM":
            recs.append(liq(i, c, "long", "39000", "39100", qty="1000", mark_price="39150"))
        else:
            recs.append(liq(i, c, "long", "39000", "39100", qty="2"))
    recs.append(liq(n, "XBTUSDTM", "long", "39000", "38990", qty="1"))  # shortfall, covered
    recs.append(liq(n + 1, "ETHUSDTM", "long", "2000", "1000", qty="1000"))  # shortfall, ADL
    ledger.append(*recs)
    ledger.checkpoint()
    ledger.append(liq(n + 2, "XBTUSDTM", fill="39200"), liq(n + 3, "XBTUSDTM", fill="39300"))
    return ledger


@pytest.fixture
def site(ledger):
    build(ledger)
    ds = make_datasette(ledger.db)
    wait_verified(ds)
    yield ledger, ds
    for db in ds.databases.values():
        db.close()


@pytest.fixture
def small(ledger):
    ledger.contract()
    ledger.liquidation(id="L-1")
    ledger.checkpoint()
    ds = make_datasette(ledger.db)
    wait_verified(ds)
    yield ledger, ds
    for db in ds.databases.values():
        db.close()


async def raw_get(ds, raw_path: bytes, method: str = "GET"):
    """Call the ASGI app with an exact raw path, as a server passes it on
    (httpx would normalize ``..`` away)."""
    path, _, qs = raw_path.partition(b"?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path.decode("latin-1"), "raw_path": path, "query_string": qs, "root_path": "",
        "headers": [(b"host", b"localhost")], "client": ("127.0.0.1", 1), "server": ("localhost", 80),
    }
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await ds.app()(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


# --- pages ---------------------------------------------------------------------------


@run_async
async def test_home_page(site, tmp_path):
    ledger, ds = site
    want = verified_at_checkpoint(ledger, tmp_path / "x")
    r = await ds.client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    cp = ledger.store.latest_checkpoint()
    root = base64.b64encode(cp[2]).decode()
    for row in want.values():  # the balances at the checkpoint, as verified
        assert f'href="/contract/{row["contract"]}"' in html
        assert f'data-balance="{row["balance"]}"' in html
        assert present.amount(row["balance"]) in html
    assert "Verified by this site</strong> up to entry #304" in html
    assert "The 2 newer entries are not yet verified" in html
    assert root in html
    assert "anyone can check these numbers" in html
    assert "2 newer entries will be covered by the next one" in html
    assert ledger.store.origin in html
    assert "$" in html  # USD values


@run_async
async def test_funds_json_is_the_balance_json_shape(site, tmp_path):
    ledger, ds = site
    r = await ds.client.get("/funds.json")
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    d = r.json()
    want = api.balances(ledger.store)
    assert [c["contract"] for c in d["contracts"]] == [c["contract"] for c in want["contracts"]]
    assert d["contracts"] == sorted(verified_at_checkpoint(ledger, tmp_path / "x").values(),
                                    key=lambda c: c["contract"])
    assert set(d["contracts"][0]) == set(want["contracts"][0])
    assert d["verified"]["status"] == "verified" and d["verified"]["tree_size"] == 305
    assert d["verified"]["entries_not_yet_verified"] == 2
    assert d["tree_size"] == want["tree_size"] == 307
    assert d["origin"] == ledger.store.origin
    assert d["checkpoint"]["tree_size"] == 305 and d["entries_after_checkpoint"] == 2
    assert [s["role"] for s in d["checkpoint"]["signatures"]] == ["log"]


@run_async
async def test_contract_page_chart_and_history(site):
    ledger, ds = site
    r = await ds.client.get("/contract/XBTUSDTM")
    assert r.status_code == 200
    html = r.text
    assert '<svg class="chart"' in html and 'class="line"' in html
    assert "This fund holds" in html and "Anyone can check this number" in html
    hist = ledger.store.history("XBTUSDTM")
    newest = hist[-1]
    assert f'href="/entry/{newest["seq"]}"' in html
    assert 'class="pending"' in html  # the entries after the checkpoint are marked
    assert "Older" in html  # more than one page of history
    # the shortfall the fund covered
    assert "shortfall paid" in html
    r = await ds.client.get("/contract/ETHUSDTM")
    assert "shortfall, ADL" in r.text


@run_async
async def test_contract_json_pages(site):
    ledger, ds = site
    hist = ledger.store.history("XBTUSDTM")
    seen = []
    url = "/contract/XBTUSDTM.json?limit=40"
    while url:
        r = await ds.client.get(url)
        assert r.status_code == 200
        d = r.json()
        assert d["contract"]["contract"] == "XBTUSDTM"
        seen += d["entries"]
        url = d["next"]
    assert [e["seq"] for e in seen] == [e["seq"] for e in reversed(hist)]
    assert seen[0]["balance"] == hist[-1]["balance"]
    assert set(seen[0]) == {"seq", "time", "kind", "liquidation_id", "side", "qty", "bankruptcy_price",
                            "fill_price", "mark_price", "delta", "paid", "adl", "balance", "check"}
    assert seen[0]["check"] == "unverified" and seen[2]["check"] == "verified"  # 305 and 306 are newer


@run_async
async def test_contract_unknown_and_bad_params(site):
    _, ds = site
    assert (await ds.client.get("/contract/NOPE")).status_code == 404
    assert (await ds.client.get("/contract/NOPE.json")).status_code == 404
    assert (await ds.client.get("/contract/XBTUSDTM?before=abc")).status_code == 400
    assert (await ds.client.get("/contract/XBTUSDTM.json?limit=100000")).status_code == 400
    assert (await ds.client.get("/contract/XBTUSDTM.json?before=-1")).status_code == 400


@run_async
async def test_entry_page_and_json(site):
    ledger, ds = site
    seq = 304  # the shortfall passed to ADL
    r = await ds.client.get(f"/entry/{seq}")
    assert r.status_code == 200
    html = r.text
    data = ledger.store.entry(seq)
    text, sigs = note.split_note(data)
    assert "auto-deleveraging" in html
    assert f'href="/entry/{seq}/receipt"' in html
    assert sigs[0].line.decode().rstrip("\n") in html
    r = await ds.client.get(f"/entry/{seq}.json")
    d = r.json()
    assert d["fields"] == json.loads(text)
    assert d["signed_note"] == data.decode()
    assert d["in_checkpoint"] is True and d["receipt"] == f"/entry/{seq}/receipt"
    assert d["leaf_hash"] == base64.b64encode(merkle.leaf_hash(data)).decode()
    assert d["fields"]["adl"] != "0.000000"
    # after the checkpoint: no receipt yet
    r = await ds.client.get("/entry/306")
    assert r.status_code == 200 and "Not yet in a signed checkpoint" in r.text
    assert (await ds.client.get("/entry/306.json")).json()["receipt"] is None
    assert (await ds.client.get("/entry/306/receipt")).status_code == 404
    for bad in ("/entry/307", "/entry/99999999999999999999", "/entry/01", "/entry/-1", "/entry/1x"):
        assert (await ds.client.get(bad)).status_code == 404, bad


@run_async
async def test_receipt_is_the_cli_receipt_and_checks(site):
    ledger, ds = site
    for seq in (0, 5, 255, 256, 304):
        r = await ds.client.get(f"/entry/{seq}/receipt")
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert "attachment" in r.headers["content-disposition"]
        assert r.content == api.prove(ledger.store, seq)
        got = api.check_receipt(r.content, note.parse_vkey(ledger.store.vkey))
        assert got["seq"] == seq and got["tree_size"] == 305


@run_async
async def test_raw_entry(site):
    ledger, ds = site
    r = await ds.client.get("/entry/7/raw")
    assert r.content == ledger.store.entry(7)


@run_async
async def test_verify_and_about_pages(site):
    ledger, ds = site
    r = await ds.client.get("/verify")
    assert r.status_code == 200
    html = r.text
    assert '<script src="/static/verify.js"></script>' in html
    assert 'data-size="305"' in html
    # the balances shown are those at the checkpoint (305), not the current ones
    hist = [e for e in ledger.store.history("XBTUSDTM") if e["seq"] < 305 and e["kind"] == "liquidation"]
    assert f'data-contract="XBTUSDTM" data-balance="{hist[-1]["balance"]}"' in html
    assert "XBTUSDTM" in html and "verdict" in html
    js = await ds.client.get("/static/verify.js")
    assert js.status_code == 200 and "crypto.subtle" in js.text
    assert (await ds.client.get("/about")).status_code == 200


@run_async
async def test_atom_feed(site):
    ledger, ds = site
    r = await ds.client.get("/feed.atom")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/atom+xml")
    root = ET.fromstring(r.content)
    entries = root.findall(f"{ATOM}entry")
    assert len(entries) == 50
    # the verified movements only: up to the checkpoint of 305 entries
    assert entries[0].find(f"{ATOM}id").text.endswith("/entry/304")
    assert "ETHUSDTM" in entries[0].find(f"{ATOM}title").text
    r = await ds.client.get("/contract/ETHUSDTM.atom")
    titles = [e.find(f"{ATOM}title").text for e in ET.fromstring(r.content).findall(f"{ATOM}entry")]
    assert titles and all(t.startswith("ETHUSDTM") for t in titles)
    assert "ADL" in titles[0]
    assert (await ds.client.get("/contract/NOPE.atom")).status_code == 404


@run_async
async def test_canned_queries_and_tables(site):
    ledger, ds = site
    r = await ds.client.get("/ledger/fund_balances.json?_shape=array")
    assert r.status_code == 200
    rows = r.json()
    assert {x["contract"]: x["balance"] for x in rows} == {c["symbol"]: c["balance"] for c in ledger.store.contract_rows()}
    r = await ds.client.get("/ledger/fund_history.json?contract=XBTUSDTM&before=10&_shape=array")
    assert [x["seq"] for x in r.json()] == [e["seq"] for e in reversed(ledger.store.history("XBTUSDTM")) if e["seq"] < 10]
    r = await ds.client.get("/ledger/entry_text.json?seq=3&_shape=array")
    assert r.json()[0]["signed_entry"] == ledger.store.entry(3).decode()
    r = await ds.client.get("/ledger/entries.json?contract=ETHUSDTM&_shape=array&_size=5")
    assert r.status_code == 200 and len(r.json()) == 5
    assert (await ds.client.get("/ledger/latest_movements.json")).status_code == 200
    assert (await ds.client.get("/ledger/checkpoint_history.json")).status_code == 200
    # internal tables hidden from the listing
    d = (await ds.client.get("/ledger.json")).json()
    hidden = {t["name"] for t in d["tables"] if t["hidden"]}
    assert {"tree", "meta"} <= hidden
    shown = {t["name"] for t in d["tables"] if not t["hidden"]}
    assert {"entries", "contracts", "checkpoints", "cosignatures"} <= shown
    html = (await ds.client.get("/ledger")).text
    assert 'href="/ledger/tree"' not in html and 'href="/ledger/entries"' in html


@run_async
async def test_settings_chosen(small):
    _, ds = small
    s = (await ds.client.get("/-/settings.json")).json()
    assert s["default_allow_sql"] is False and s["allow_download"] is False and s["allow_csv_stream"] is False
    assert s["sql_time_limit_ms"] == 1000 and s["max_returned_rows"] == 1000
    assert (await ds.client.get("/-/databases.json")).json()[0]["is_mutable"] is True
    assert [d["name"] for d in (await ds.client.get("/-/databases.json")).json()] == ["ledger"]
    r = await ds.client.get("/robots.txt")
    assert "Disallow: /tile/" in r.text and "Disallow: /ledger" in r.text


# --- C2SP tlog-tiles -------------------------------------------------------------------------


@run_async
async def test_checkpoint_and_vkey(site):
    ledger, ds = site
    r = await ds.client.get("/checkpoint")
    assert r.status_code == 200
    assert r.content == ledger.store.published_checkpoint()
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["access-control-allow-origin"] == "*"
    r = await ds.client.get("/vkey")
    assert r.text == ledger.store.vkey + "\n"
    d = (await ds.client.get("/checkpoint.json")).json()
    assert d["tree_size"] == 305 and d["entries_after_checkpoint"] == 2
    assert d["note"] == ledger.store.published_checkpoint().decode()


@run_async
async def test_tiles_equal_the_static_export(site, tmp_path):
    ledger, ds = site
    out = tmp_path / "export"
    export(ledger.store, str(out))
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert "tile/0/000" in files and "tile/entries/000" in files and "tile/entries/001.p/49" in files
    for rel in files:
        r = await ds.client.get("/" + rel)
        assert r.status_code == 200, rel
        assert r.content == (out / rel).read_bytes(), rel
        if rel.startswith("tile/"):
            assert r.headers["content-type"] == "application/octet-stream"
            assert r.headers["access-control-allow-origin"] == "*"
            full = ".p/" not in rel
            assert ("immutable" in r.headers["cache-control"]) == full, rel


@run_async
async def test_tiles_only_within_the_checkpoint(site):
    ledger, ds = site
    # 305 entries in the checkpoint: entry bundles 000 (full) and 001.p/49
    assert (await ds.client.get("/tile/entries/001.p/50")).status_code == 404  # entry 305 is not covered
    assert (await ds.client.get("/tile/entries/001")).status_code == 404
    assert (await ds.client.get("/tile/entries/002.p/1")).status_code == 404
    assert (await ds.client.get("/tile/0/001.p/50")).status_code == 404
    assert (await ds.client.get("/tile/1/000")).status_code == 404
    assert (await ds.client.get("/tile/2/000.p/1")).status_code == 404
    # a narrower partial tile (an older checkpoint's) is a prefix of the current one
    wide = (await ds.client.get("/tile/0/001.p/49")).content
    narrow = await ds.client.get("/tile/0/001.p/20")
    assert narrow.status_code == 200 and narrow.content == wide[: 20 * 32]
    b = await ds.client.get("/tile/entries/001.p/3")
    assert b.content == b"".join(len(d).to_bytes(2, "big") + d for _, d in ledger.store.iter_entries(256, 259))
    r = await ds.client.get("/tile/1/000.p/1")
    assert r.content == tile_data(1, 0, 1, ledger.store)


@run_async
async def test_odd_paths_are_not_found(site):
    _, ds = site
    bad = [
        b"/tile/../checkpoint", b"/tile/%2e%2e/checkpoint", b"/tile/%2E%2E/%2E%2E/fund.db", b"/tile/0/../../fund.db",
        b"/tile//0/000", b"/tile/0//000", b"/tile/0/0000", b"/tile/0/00", b"/tile/0/000/", b"/tile/00/000",
        b"/tile/0/x000/000", b"/tile/0/x001/000/", b"/tile/0/000.p/256", b"/tile/0/000.p/0", b"/tile/0/000.p/01",
        b"/tile/0/000.p/", b"/tile/0/%30%30%30", b"/tile/entries/../../fund.db", b"/tile/entries/000.p/1/",
        b"/tile/64/000", b"/tile/-1/000", b"/tile/0/000%00", b"/tile/", b"/tile",
        b"/static/../site.py", b"/static/%2e%2e/site.py", b"/static/../../ledger/store/store.py",
        b"/entry/1/../../fund.db", b"/ledger.db", b"/fund.db",
    ]
    for path in bad:
        status, body = await raw_get(ds, path)
        assert status in (403, 404), (path, status)
        assert b"SQLite format" not in body and b"import " not in body, path
    # the one accepted spelling works; a query string is ignored
    status, tile = await raw_get(ds, b"/tile/0/000")
    assert status == 200 and len(tile) == 8192
    assert await raw_get(ds, b"/tile/0/000?x=../../fund.db") == (200, tile)


# --- refusals --------------------------------------------------------------------------------


@run_async
async def test_writes_and_sql_are_refused(site):
    ledger, ds = site
    before = ledger.store.size()
    for path in ("/ledger", "/ledger/entries", "/ledger/fund_balances", "/checkpoint", "/", "/tile/0/000",
                 "/ledger/entries/1", "/contract/XBTUSDTM"):
        for method in ("post", "put", "delete", "patch"):
            kw = {"data": {"sql": "DELETE FROM contracts"}} if method in ("post", "put", "patch") else {}
            r = await getattr(ds.client, method)(path, **kw)
            assert r.status_code == 405, (method, path)
    r = await ds.client.options("/tile/0/000")
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"
    for path in ("/ledger?sql=select+1", "/ledger.json?sql=DELETE+FROM+contracts",
                 "/ledger.json?sql=UPDATE+contracts+SET+balance%3D0", "/ledger/-/query?sql=select+1",
                 "/ledger/entries.json?_where=1%3D1"):
        r = await ds.client.get(path)
        assert r.status_code in (400, 403, 404), path
        assert r.status_code != 200
    assert (await ds.client.get("/ledger?sql=select+1")).status_code == 403
    # canned queries take parameters, never SQL
    r = await ds.client.get("/ledger/fund_history.json?contract=X';DELETE FROM contracts;--&before=")
    assert r.status_code == 200 and r.json()["rows"] == []
    # no download of the database, no streaming of whole tables
    assert (await ds.client.get("/ledger.db")).status_code in (403, 404)
    r = await ds.client.get("/ledger/entries.csv?_stream=1")
    assert r.status_code in (200, 400, 403)
    assert r.text.count("\n") <= 60  # one page at most
    # the database object itself cannot write
    db = ds.get_database("ledger")
    assert isinstance(db, ReadOnlyDatabase)
    with pytest.raises(PermissionError):
        await db.execute_write("DELETE FROM contracts")
    with pytest.raises(sqlite3.OperationalError):
        await db.execute("DELETE FROM contracts")  # read-only connection, query_only
    assert ledger.store.size() == before
    assert verify_path(ledger.db).tree_size == before


@run_async
async def test_no_key_material_anywhere(site):
    ledger, ds = site
    secret = open(ledger.key).read().strip()
    seed_b64 = secret.split("+", 4)[4]  # PRIVATE+KEY+<name>+<id>+<base64>: the base64 may hold a "+"
    assert len(seed_b64) == 44
    paths = ["/", "/funds.json", "/contract/XBTUSDTM", "/contract/XBTUSDTM.json", "/entry/5", "/entry/5.json",
             "/checkpoint", "/checkpoint.json", "/vkey", "/verify", "/about", "/feed.atom", "/-/metadata.json",
             "/-/settings.json", "/ledger", "/ledger.json", "/ledger/meta.json", "/ledger/entries.json",
             "/tile/entries/000", "/-/plugins.json", "/-/versions.json"]
    for p in paths:
        r = await ds.client.get(p)
        assert r.status_code == 200, p
        assert seed_b64.encode() not in r.content and b"PRIVATE+KEY" not in r.content, p


@run_async
async def test_empty_ledger(ledger):
    ds = make_datasette(ledger.db)
    r = await ds.client.get("/")
    assert r.status_code == 200 and "No fund has been opened yet" in r.text
    assert (await ds.client.get("/checkpoint")).status_code == 404
    assert (await ds.client.get("/checkpoint.json")).status_code == 404
    assert (await ds.client.get("/tile/0/000.p/1")).status_code == 404
    assert (await ds.client.get("/verify")).status_code == 200
    assert (await ds.client.get("/feed.atom")).status_code == 200
    assert (await ds.client.get("/funds.json")).json()["contracts"] == []


def test_missing_or_foreign_database(tmp_path):
    with pytest.raises(StoreError):
        make_datasette(str(tmp_path / "nope.db"))
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE x (y)").connection.commit()
    with pytest.raises(StoreError):
        make_datasette(str(other))


# --- live --------------------------------------------------------------------------------


@run_async
async def test_live_new_entries_and_checkpoints_appear(small):
    ledger, ds = small
    assert (await ds.client.get("/checkpoint.json")).json()["tree_size"] == 2
    ledger.liquidation(id="L-2", fill_price="39500")
    # recorded, not yet checkpointed: marked not yet verified, not counted, not in the tiles
    d = (await ds.client.get("/funds.json")).json()
    assert d["tree_size"] == 3 and d["contracts"][0]["balance"] == "100.00000000"
    assert d["verified"]["entries_not_yet_verified"] == 1
    assert (await ds.client.get("/tile/entries/000.p/3")).status_code == 404
    ledger.checkpoint()
    wait_verified(ds)
    assert (await ds.client.get("/funds.json")).json()["contracts"][0]["balance"] == "600.00000000"
    assert (await ds.client.get("/checkpoint")).content == ledger.store.published_checkpoint()
    assert (await ds.client.get("/tile/entries/000.p/3")).status_code == 200
    assert (await ds.client.get("/entry/2/receipt")).status_code == 200
    assert (await ds.client.get("/ledger/entries.json?_shape=array")).json()[0]["seq"] == 2


# --- a real server --------------------------------------------------------------------------


def _http(url, method, path, headers=None):
    u = urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)  # path sent exactly as given
        for k, v in (headers or {}).items():
            c.putheader(k, v)
        c.endheaders()
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def test_verify_path_against_a_running_site(site):
    ledger, _ = site
    with BackgroundServer(ledger.db) as url:
        assert url.startswith("http://127.0.0.1:")
        report = verify_path(url)
        assert report.tree_size == 305 and report.checkpoint_size == 305
        assert report.root == ledger.store.latest_checkpoint()[2]
        want = {c["contract"]: c["balance"] for c in api.balances(ledger.store)["contracts"]}
        got = {s: f.summary()["balance"] for s, f in report.book.funds.items()}
        # the two entries after the checkpoint are not in the verified tree
        assert got["ETHUSDTM"] == want["ETHUSDTM"] and got["XBTUSDTM"] != want["XBTUSDTM"]
        # pinned key, live update, verified again
        ledger.checkpoint()
        assert verify_path(url, vkey=ledger.store.vkey).tree_size == 307
        # raw paths reach the server un-normalized and are refused
        for path in ("/tile/../checkpoint", "/tile/%2e%2e/checkpoint", "/tile/0/../../../fund.db", "/static/../site.py"):
            status, _, body = _http(url, "GET", path)
            assert status == 404, path
            assert b"SQLite" not in body
        status, headers, body = _http(url, "HEAD", "/tile/0/000")
        assert status == 200 and body == b""
        status, headers, _ = _http(url, "GET", "/tile/0/000", {"Origin": "https://auditor.example"})
        assert headers["access-control-allow-origin"] == "*"
        status, _, _ = _http(url, "POST", "/checkpoint")
        assert status == 405


def test_verify_path_across_a_key_rotation(ledger):
    ledger.contract()
    ledger.append(*[liq(i) for i in range(3)])
    ledger.checkpoint()
    seq, new = api.rotate_key(ledger.store, ledger.signer, str(ledger.dir / "new.key"))
    ledger.store.append([liq(i) for i in range(3, 6)], [new])
    ledger.store.add_checkpoint([new])
    ds = make_datasette(ledger.db)

    async def pages():
        r = await ds.client.get(f"/entry/{seq}")
        assert r.status_code == 200 and "signing key changed" in r.text
        assert len((await ds.client.get(f"/entry/{seq}.json")).json()["signatures"]) == 2
        assert (await ds.client.get("/")).status_code == 200

    asyncio.run(pages())
    with BackgroundServer(ledger.db) as url:
        assert verify_path(url).tree_size == 8


# --- pure helpers ------------------------------------------------------------------------------


def test_present_amounts():
    assert present.amount("1234567.50000000") == "1,234,567.50"
    assert present.amount("0.00012300") == "0.000123"
    assert present.amount("-21961.45630000", signed=True) == "-21,961.4563"
    assert present.amount("5.00000000", signed=True) == "+5.00"
    assert present.amount("0.00000000", signed=True) == "0.00"
    assert present.amount("12", 0) == "12"
    assert present.usd("369233.03") == "$369,233.03" and present.usd(None) == "\u2014"
    assert present.is_negative("-0.1") and not present.is_negative("-0.000") and present.is_zero("0.000")
    assert present.when("2026-01-05T14:03:07.5Z") == "2026-01-05 14:03:07 UTC"


def test_chart_svg():
    t = lambda h: datetime(2026, 1, 5, h, tzinfo=timezone.utc)  # noqa: E731
    svg = chart.balance_svg([(t(0), 0), (t(1), 150_000_000), (t(2), 90_000_000)], 8, "USDT", "X & Y")
    assert svg.startswith('<svg class="chart"') and svg.endswith("</svg>")
    assert "X &amp; Y" in svg and 'class="line"' in svg and ">USDT<" in svg
    assert "<script" not in svg
    assert "No movements yet" in chart.balance_svg([], 8, "USDT", "empty")
    one = chart.balance_svg([(t(0), 5)], 0, "XBT", "one point")
    assert 'class="last"' in one
