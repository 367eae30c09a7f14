"""Lot contracts and their ADL events (docs/FORMAT.md, "Auto-deleveraging")
in a real browser (Debian's chromium through Playwright): a format-2 log
written by the importer from records built by an independent reading of the
rule (tests/adl_util.py) passes the full replay of /verify and the "Check
this fund" button of the lot contracts' pages; an adl entry whose score or
qty was changed and re-signed by the log key fails both, naming it."""

from __future__ import annotations

import pytest
from test_browser import browser, page, run_verifier  # noqa: F401 (fixtures; skips without chromium)
from test_browser_fund import check_fund_in

import tamper_util as tu
from adl_util import queue, record, scenario, write_log
from ledger.verify.light import check_fund_path
from publish.site import BackgroundServer

ORIGIN = "example.com/browser-adl"


@pytest.fixture(scope="module")
def adl_log(tmp_path_factory):
    db, signer, written = write_log(tmp_path_factory.mktemp("browser-adl"), ORIGIN, scenario())
    return {"db": db, "signer": signer, "entries": written}


def adl_seqs(log: dict, lid: str) -> list[int]:
    return [s for s, o in enumerate(log["entries"]) if o["kind"] == "adl" and o["liquidation"] == lid]


def test_the_full_replay_checks_adl_events(adl_log, page):
    with BackgroundServer(adl_log["db"]) as url:
        assert run_verifier(page, url + "verify?full=1") == "verified", page.inner_text("#verdict-text")
    assert page.errors == []


def test_check_this_fund_of_lot_contracts(adl_log, page):
    with BackgroundServer(adl_log["db"]) as url:
        for symbol in ("XBTLOT", "XBTINV"):
            expected = check_fund_path(url, symbol)
            text = check_fund_in(page, url, symbol)
            assert text.startswith("checked:"), text
            assert page.get_attribute("#fund-check", "data-checked-balance") == expected.fund["balance"]
            chain = [o for o in adl_log["entries"] if o["contract"] == symbol]
            assert any(o["kind"] == "adl" for o in chain)
            assert f"All {len(chain):,} entries of this fund" in page.inner_text("#fund-check-status")
    assert page.errors == []


def forged(log: dict, dst, seq: int, edit) -> str:
    """A copy of the log whose entry ``seq`` is ``edit(obj)`` re-signed by
    the log key, with a new checkpoint over the tree made again."""
    return tu.forged_copy(log["db"], dst, seq, edit, log["signer"], ORIGIN)


def set_value(obj: dict, rank: int, value: int, new: str) -> None:
    ps = [p.split(" ") for p in obj["positions"].split(",")]
    ps[rank][value] = new
    obj["positions"] = ",".join(" ".join(p) for p in ps)


TAMPERED = {
    "score": ("L1", 0, lambda o: set_value(o, 0, 5, "5.5"), "position 0: score 5.5 is not pnl_ratio * leverage = 5"),
    "qty": ("L2", 0, lambda o: set_value(o, 0, 2, str(int(o["positions"].split(" ")[2]) - 1)),
            "position 0 is closed for 1 of 2, yet the allocation goes on: the top of the queue is closed whole first"),
}


def test_another_entry_inside_an_adl_event_fails_in_the_browser(adl_log, page, tmp_path):
    """L1's first adl entry replaced by a liquidation of another fund: the
    full replay refuses it at its seq, as the Python verifier does. (The
    fund check's view of it, a gap in the lot fund's chain, is
    tests/test_verify_js_adl.py's: the site here publishes chains and heads
    that no longer agree.)"""
    seq = adl_seqs(adl_log, "L1")[0]
    o1 = next(o for o in adl_log["entries"] if o.get("id") == "O1")

    def edit(o):
        keep = {k: o[k] for k in ("seq", "prev", "time")}
        o.clear()
        o.update(o1, id="O2", **keep)

    db = forged(adl_log, tmp_path / "forged.db", seq, edit)
    full = "liquidation L1 of XBTLOT (seq 6) awaits its ADL allocation: the next record must be its adl record"
    python = tu.lib_verify(db)
    assert (python["seq"], python["reason"]) == (seq, full), python
    with BackgroundServer(db, verified_timeout=None) as url:
        verdict = run_verifier(page, url + "verify?full=1")
        assert verdict == f"failed: entry {seq}: {full}", verdict


@pytest.mark.parametrize("what", sorted(TAMPERED))
def test_a_tampered_adl_entry_fails_in_the_browser(adl_log, page, tmp_path, what):
    """Both checks name the entry and the rule it breaks, as the Python
    verifier does."""
    lid, index, edit, message = TAMPERED[what]
    seq = adl_seqs(adl_log, lid)[index]
    db = forged(adl_log, tmp_path / "forged.db", seq, edit)
    python = tu.lib_verify(db)
    assert (python["seq"], python["reason"]) == (seq, message), python
    with BackgroundServer(db, verified_timeout=None) as url:
        verdict = run_verifier(page, url + "verify?full=1")
        assert verdict == f"failed: entry {seq}: {message}", verdict
        text = check_fund_in(page, url, adl_log["entries"][seq]["contract"])
        assert text == f"failed: entry {seq}: {message}", text


def test_a_return_visit_to_a_lot_fund_checks_only_its_new_adl_event(tmp_path, browser):  # noqa: F811
    """The fund state remembered (publish/static/memory.js) keeps the lot:
    the next visit checks a new ADL event from there."""
    from test_browser_return import free_port, fund_check, grow, site

    ctx = browser.new_context()
    visitor = ctx.new_page()
    visitor.errors = []
    visitor.on("pageerror", lambda e: visitor.errors.append(str(e)))
    sim = scenario()
    (tmp_path / "v1").mkdir()
    write_log(tmp_path / "v1", "example.com/browser-adl-return", sim)
    before = len(sim.entries)
    sim.liquidation("XBTLOT", "S4", "long", "50", "39000", "39400")  # +20
    sim.liquidation("XBTLOT", "L4", "long", "5", "39000", "30000", split=[1, 1],
                    queue=queue("XBTLOT", "L4", [("2", "0.4", "5"), ("9", "0.3", "5"), ("1", "0.2", "1")]))
    v2 = grow(tmp_path / "v1", tmp_path / "v2", [record(e["obj"]) for e in sim.entries[before:]])
    port = free_port()
    try:
        with site(tmp_path / "v1", port) as url:
            assert fund_check(visitor, url, "XBTLOT") == "verified", visitor.inner_text("#fund-check-verdict")
        with site(v2, port) as url:
            expected = check_fund_path(url, "XBTLOT")
            assert fund_check(visitor, url, "XBTLOT") == "verified", visitor.inner_text("#fund-check-verdict")
            status = visitor.inner_text("#fund-check-status")
            assert status.startswith(f"Checked {len(sim.entries) - before:,} new entries since your last visit"), status
            assert visitor.get_attribute("#fund-check", "data-checked-balance") == expected.fund["balance"]
        assert visitor.errors == []
    finally:
        ctx.close()
