"""Lot contracts and their ADL events (docs/FORMAT.md, "Auto-deleveraging")
in a real browser (Debian's chromium through Playwright): a format-2 log
written by the importer from records built by an independent reading of the
rule (tests/adl_util.py) passes the full replay of /verify and the "Check
this fund" button of the lot contracts' pages; an adl entry whose score or
qty was changed and re-signed by the log key fails both, naming it."""

from __future__ import annotations

import io
import json

import pytest
from test_browser import browser, page, run_verifier  # noqa: F401 (fixtures; skips without chromium)
from test_browser_fund import check_fund_in

import tamper_util as tu
from adl_util import Position, Sim, account_commitment, position_commitment
from ledger.ops import api
from ledger.verify.light import check_fund_path
from publish.site import BackgroundServer

ORIGIN = "example.com/browser-adl"


def queue(contract: str, lid: str, specs: list[tuple[str, str, str]]) -> list[Position]:
    return [Position(position_commitment(account_commitment(f"trader-{i}", f"salt-{i}"), contract, lid), *spec)
            for i, spec in enumerate(specs)]


def scenario() -> Sim:
    """Three ADL events on a linear lot contract (one over two adl entries,
    one with next and a queue proof, one closing its whole queue), one on an
    inverse contract of half lots, and a contract without a lot beside."""
    s = Sim()
    s.contract("XBTLOT", 8, "linear", "0.001", "1")
    s.contract("XBTINV", 8, "inverse", "1", "0.5", currency="XBT")
    s.contract("XBTOLD", 8, "linear", "0.001", None)
    s.liquidation("XBTLOT", "S1", "long", "40", "39000", "39500")  # +20
    s.liquidation("XBTOLD", "O1", "long", "10", "39000", "30000")  # adl 90, no allocation
    s.liquidation("XBTLOT", "L1", "long", "10", "39000", "30000", split=[1, 2],
                  queue=queue("XBTLOT", "L1", [("3", "0.5", "10"), ("4", "0.25", "20"), ("5", "0.1", "3"), ("2", "0.01", "2")]))
    s.liquidation("XBTLOT", "S2", "short", "100", "39000", "38000")  # +100
    s.liquidation("XBTLOT", "L2", "short", "30", "39000", "44000",
                  queue=queue("XBTLOT", "L2", [(str(2 + i % 4), f"0.{i + 1}", str(1 + i % 3)) for i in range(11)]))
    s.liquidation("XBTLOT", "L3", "long", "7", "39000", "29000", queue=queue("XBTLOT", "L3", [("4", "1", "2"), ("3", "1.5", "1")]))
    s.liquidation("XBTINV", "I0", "long", "100000", "39000", "39001")
    s.liquidation("XBTINV", "I1", "long", "25", "39000", "30000",
                  queue=queue("XBTINV", "I1", [("10", "0.3", "2"), ("5.5", "0.2", "2"), ("3", "0.1", "1"), ("1", "0.1", "0.5")]))
    s.liquidation("XBTLOT", "S3", "long", "1", "39000", "39001")
    return s


INPUTS = {
    "contract": ("currency", "scale", "type", "multiplier", "lot"),
    "liquidation": ("contract", "id", "side", "qty", "bankruptcy_price", "fill_price", "mark_price",
                    "adl_qty", "queue_root", "queue_size"),
    "adl": ("contract", "liquidation", "positions", "next", "queue_proof"),
}


def record(obj: dict) -> dict:
    """The import record of an entry: its kind and inputs."""
    r = {"kind": obj["kind"], **{k: obj[k] for k in INPUTS[obj["kind"]] if k in obj}}
    if obj["kind"] == "contract":
        r["symbol"] = obj["contract"]
    return r


COMPUTED = ("delta", "paid", "adl", "balance", "event", "side", "price", "chain_seq")


@pytest.fixture(scope="module")
def adl_log(tmp_path_factory):
    d = tmp_path_factory.mktemp("browser-adl")
    db, key = str(d / "fund.db"), str(d / "fund.key")
    store, signer = api.init_ledger(db, key, ORIGIN, log_format=2)
    sim = scenario()
    lines = "".join(json.dumps(record(e["obj"])) + "\n" for e in sim.entries).encode()
    api.import_records(store, signer, io.BytesIO(lines))
    store.add_checkpoint([signer])
    written = [tu.entry_obj(data) for _, data in store.iter_entries(0, store.size())]
    store.close()
    # the importer wrote what the independent reading of the rule gives
    for e in sim.entries:
        got = written[e["seq"]]
        for k in COMPUTED:
            assert got.get(k) == e["obj"].get(k), (e["seq"], k, got.get(k), e["obj"].get(k))
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
    signer = log["signer"]
    path = tu.copy_ledger(log["db"], dst)
    conn = tu.open_rw(path)
    obj = tu.entry_obj(tu.entry_data(conn, seq))
    edit(obj)
    tu.set_data(conn, seq, tu.sign(tu.canonical(obj), signer), sync=True)
    tu.sign_checkpoint(conn, signer, ORIGIN)
    conn.close()
    return path


def set_value(obj: dict, rank: int, value: int, new: str) -> None:
    ps = [p.split(" ") for p in obj["positions"].split(",")]
    ps[rank][value] = new
    obj["positions"] = ",".join(" ".join(p) for p in ps)


TAMPERED = {
    "score": ("L1", 0, lambda o: set_value(o, 0, 5, "5.5"), "position 0: score 5.5 is not pnl_ratio * leverage = 5"),
    "qty": ("L2", 0, lambda o: set_value(o, 0, 2, str(int(o["positions"].split(" ")[2]) - 1)),
            "position 0 is closed for 1 of 2, yet the allocation goes on: the top of the queue is closed whole first"),
}


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
