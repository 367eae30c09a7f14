"""Every query the site runs for a request is bounded: none walks the whole
``entries`` or ``tree`` table or one of their indexes (a request must cost
the same on a 10M-entry log as on this one; Datasette's time limit is a
safety net, not the plan). The query plans are SQLite's own, read with
EXPLAIN QUERY PLAN over every statement the site's connections ran; with no
ANALYZE statistics the planner chooses the same plan whatever the size.

Also: chain bundles read through the kept bundle starts (publish/tlog.py)
are byte for byte the export's, in any order of requests."""

from __future__ import annotations

import asyncio
import re
import sqlite3

import pytest

from publish import tlog
from publish.export import export
from publish.site import ReadOnlyDatabase, make_datasette, wait_verified

PATHS = [
    "/", "/contract/AAA", "/contract/AAA.json", "/contract/AAA.atom", "/entry/5", "/entry/5.json",
    "/entry/5/receipt", "/entry/5/raw", "/checkpoint", "/checkpoint.json", "/funds", "/since",
    "/chain/AAA/000", "/chain/AAA/001", "/chain/AAA/002.p/33", "/chain/AAA/000.paths", "/chain/BBB/000.p/140",
    "/search?id=L-5", "/search?id=nobody", "/feed.atom", "/verify", "/tile/0/000", "/tile/1/000.p/2", "/vkey",
]
BIG_TABLES = ("entries", "tree")


def contract(symbol: str) -> dict:
    return {"kind": "contract", "symbol": symbol, "currency": "USDT", "scale": 2, "multiplier": "1"}


def liquidation(symbol: str, i: int) -> dict:
    return {"kind": "liquidation", "contract": symbol, "id": f"L-{i}", "side": "long", "qty": "1",
            "bankruptcy_price": "100", "fill_price": "101" if i % 7 == 0 else "99.5"}


@pytest.fixture
def site_log(ledger2):
    """Two funds (AAA with 2 full bundles and a partial one), a checkpoint,
    then liquidations the checkpoint does not cover (the heads must be
    computed below them)."""
    ledger2.append(contract("AAA"), contract("BBB"))
    ledger2.store.append([liquidation("BBB" if i % 5 == 0 else "AAA", i) for i in range(700)], [ledger2.signer])
    ledger2.checkpoint()
    ledger2.store.append([liquidation("AAA", i) for i in range(700, 710)], [ledger2.signer])
    return ledger2


def traced_requests(monkeypatch, db: str, paths: list[str]) -> tuple[list[str], dict[str, int]]:
    """The SQL every site connection ran while ``paths`` were fetched, and each path's status."""
    statements: list[str] = []  # list.append is atomic: safe from the database threads
    connect = ReadOnlyDatabase.connect

    def traced(self, write=False):
        conn = connect(self, write)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(ReadOnlyDatabase, "connect", traced)
    ds = make_datasette(db)
    wait_verified(ds)

    async def fetch():
        return {p: (await ds.client.get(p)).status_code for p in paths}

    return statements, asyncio.run(fetch())


def walks(plan_conn, statement: str) -> list[str]:
    """The plan steps of ``statement`` that walk a whole big table or index."""
    rows = plan_conn.execute("EXPLAIN QUERY PLAN " + statement).fetchall()
    return [r[3] for r in rows if re.match(rf"SCAN ({'|'.join(BIG_TABLES)})\b", r[3])]


def test_no_request_walks_a_whole_table(site_log, monkeypatch):
    statements, status = traced_requests(monkeypatch, site_log.db, PATHS)
    assert status["/funds"] == 200 and status["/chain/AAA/002.p/33"] == 200, status
    assert all(code in (200, 302, 404) for code in status.values()), status
    plan = sqlite3.connect(site_log.db)
    queries = sorted({s for s in statements if re.match(r"\s*(SELECT|WITH)\b", s, re.I)})
    assert any("FROM entries" in q for q in queries) and any("FROM tree" in q for q in queries)
    unbounded = {q: w for q in queries if (w := walks(plan, q))}
    assert unbounded == {}


@pytest.fixture
def adl_log(ledger2):
    """A lot contract with two ADL events (docs/FORMAT.md, "Auto-deleveraging"),
    one after the checkpoint, beside a contract without a lot."""
    from test_adl import LOT, event, shortfall, surplus

    store, signer = ledger2.store, [ledger2.signer]
    store.append([LOT, contract("AAA")], signer)
    store.append([surplus(i) for i in range(20)] + [liquidation("AAA", i) for i in range(30)], signer)
    store.append(event(store, shortfall("L1", "100"), 60, per_entry=4), signer)
    ledger2.checkpoint()
    store.append(event(store, shortfall("L2", "5"), 10), signer)
    return ledger2


def test_no_adl_request_walks_a_whole_table(adl_log, monkeypatch):
    """The ADL pages, their JSON and the contract page's ADL section
    (publish/adlread.py): each event found through the contract's index,
    its adl entries by seq."""
    con = sqlite3.connect(adl_log.db)
    l1, l2 = (s for (s,) in con.execute("SELECT seq FROM entries WHERE liquidation_id IN ('L1', 'L2') ORDER BY seq"))
    con.close()
    paths = ["/contract/XBTLOT", "/contract/XBTLOT/adl", f"/contract/XBTLOT/adl?before={l2}",
             f"/contract/XBTLOT/adl/{l1}", f"/contract/XBTLOT/adl/{l1 + 1}", "/contract/XBTLOT/adl.json",
             f"/contract/XBTLOT/adl.json?before={l2}", "/contract/AAA", "/contract/AAA/adl", "/contract/AAA/adl.json",
             "/contract/NOPE/adl/3"]
    statements, status = traced_requests(monkeypatch, adl_log.db, paths)
    assert [status[p] for p in paths] == [200] * 4 + [404] + [200] * 5 + [404], status
    plan = sqlite3.connect(adl_log.db)
    queries = sorted({s for s in statements if re.match(r"\s*(SELECT|WITH)\b", s, re.I)})
    assert any("kind = 'adl'" in q for q in queries)
    unbounded = {q: w for q in queries if (w := walks(plan, q))}
    assert unbounded == {}


def test_the_check_would_catch_the_walk_it_is_for(site_log):
    """The plan of the heads' query as it once was: a walk of the contract
    index to group by contract, 3 s on a 10M log. The check names it."""
    plan = sqlite3.connect(site_log.db)
    old = "SELECT contract, COUNT(*) FROM entries WHERE seq >= 704 AND kind = 'liquidation' GROUP BY contract"
    assert walks(plan, old) == ["SCAN entries USING INDEX entries_contract_seq"]


def test_chain_bundles_in_any_order_are_the_exports(site_log, tmp_path, monkeypatch):
    out = tmp_path / "out"
    export(site_log.store, str(out))
    files = sorted(p.relative_to(out).as_posix() for p in (out / "chain").rglob("*") if p.is_file())
    assert "chain/AAA/002.p/49" in files and "chain/AAA/000.paths" in files
    monkeypatch.setattr(tlog, "_BUNDLE_STARTS", {})
    ds = make_datasette(site_log.db)

    async def fetch(order):
        return {f: (await ds.client.get("/" + f)).content for f in order}

    for order in (files[::-1], files):
        got = asyncio.run(fetch(order))
        assert got == {f: (out / f).read_bytes() for f in order}
    assert set(tlog._BUNDLE_STARTS) and all(len(i) >= 1 for i, _ in tlog._BUNDLE_STARTS.values())


def test_bundle_starts_are_kept_per_log(ledger2, monkeypatch):
    """A log replaced by another at the same path: the second's bundles are
    not read from the starts found in the first (its AAA entries lie at
    other seqs)."""
    from conftest import ORIGIN
    from ledger.ops import api

    monkeypatch.setattr(tlog, "_BUNDLE_STARTS", {})

    def bundles(lg_store, signer, every: int) -> list[bytes | None]:
        lg_store.append([contract("AAA"), contract("BBB")], [signer])
        lg_store.append([liquidation("BBB" if i % every == 0 else "AAA", i) for i in range(1200)], [signer])
        lg_store.add_checkpoint([signer])
        conn = sqlite3.connect(lg_store.path)
        try:
            return [tlog.chain_bundle(conn, "AAA", i, 256) for i in (1, 2)]
        finally:
            conn.close()

    first = bundles(ledger2.store, ledger2.signer, 2)
    ledger2.store.close()
    for suffix in ("", "-wal", "-shm"):
        (ledger2.dir / ("fund.db" + suffix)).unlink(missing_ok=True)
    store, signer = api.init_ledger(ledger2.db, ledger2.key + "2", ORIGIN, log_format=2)
    try:
        second = bundles(store, signer, 9)
        out = ledger2.dir / "out"
        export(store, str(out))
        assert second == [(out / "chain/AAA" / n).read_bytes() for n in ("001", "002")]
        assert first[0] is not None and first[0] != second[0]
    finally:
        store.close()


def test_a_read_past_the_time_limit_is_a_503_not_a_500(site_log, monkeypatch):
    import contextlib

    from publish import views

    @contextlib.contextmanager
    def always_interrupted(conn, ms):
        conn.set_progress_handler(lambda: 1, 1)
        try:
            yield
        finally:
            conn.set_progress_handler(None, 1)

    monkeypatch.setattr(views, "sqlite_timelimit", always_interrupted)
    ds = make_datasette(site_log.db)

    async def fetch():
        return [await ds.client.get(p) for p in ("/funds", "/contract/AAA.json", "/chain/AAA/000")]

    for r in asyncio.run(fetch()):
        assert (r.status_code, r.headers["retry-after"]) == (503, "5")
        assert "took longer than" in r.text
