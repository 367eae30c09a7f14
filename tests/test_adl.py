"""The ADL allocation rule of lot contracts (docs/FORMAT.md, "Auto-deleveraging"):
the minimum against an independent model, events written and verified in
full and light, every bad allocation refused at import (exit 2, the line
and the reason, nothing written), and the same forged by an operator who
holds the key: the verifier fails it at its seq."""

from __future__ import annotations

import json
import math
import re
import sqlite3
from fractions import Fraction

import pytest
import tamper_util as tu
from conftest import ORIGIN, run_fundledger

from ledger.errors import RuleError
from ledger.ops import api
from ledger.rules import adl
from ledger.store.chains import fill_chains
from ledger.verify.light import check_fund_path

LOT = {"kind": "contract", "symbol": "XBTLOT", "currency": "USDT", "scale": 8, "type": "linear",
       "multiplier": "0.001", "lot": "1"}
INV = {"kind": "contract", "symbol": "XBTINV", "currency": "XBT", "scale": 8, "type": "inverse",
       "multiplier": "100", "lot": "10"}


def surplus(i: int, symbol: str = "XBTLOT") -> dict:
    """A liquidation that credits the fund (filled above a long's bankruptcy price)."""
    return {"kind": "liquidation", "contract": symbol, "id": f"s{symbol}{i}", "side": "long",
            "qty": "10" if symbol == "XBTLOT" else "100", "bankruptcy_price": "39000", "fill_price": "39100"}


def shortfall(lid: str, qty: str, symbol: str = "XBTLOT", side: str = "long") -> dict:
    fill = "38000" if side == "long" else "40000"
    return {"kind": "liquidation", "contract": symbol, "id": lid, "side": side, "qty": qty,
            "bankruptcy_price": "39000", "fill_price": fill}


def queue(symbol: str, lid: str, n: int, lot: int = 1) -> list[adl.QueuedPosition]:
    """``n`` opposing positions, of several sizes and scores (some equal)."""
    out = []
    for j in range(n):
        c = adl.position_commitment(adl.account_commitment(f"acct-{j}", f"salt-{j}"), symbol, lid)
        out.append(adl.QueuedPosition(c, str(lot * (1 + j % 5)), f"0.{1 + j % 9}", str(2 + j % 4)))
    return out


def event(store, record: dict, n: int, per_entry: int = 3, lot: int = 1) -> list[dict]:
    """The liquidation record with its ADL fields and its adl records, for the minimum now."""
    book = fill_chains(store, store.load_book())
    minimum = book.adl_minimum(record)
    assert minimum is not None
    fields, parts = adl.allocate(record["contract"], record["id"], minimum, queue(record["contract"], record["id"], n,
                                                                                  lot), per_entry)
    return [dict(record, **fields), *parts]


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    """A format-2 log with two lot contracts, surpluses, and ADL events: one
    over several adl entries with next and a queue proof, one closing the
    whole queue, one from an empty fund (all of it ADL), one inverse."""
    d = tmp_path_factory.mktemp("adl")
    db, key = str(d / "fund.db"), str(d / "fund.key")
    store, signer = api.init_ledger(db, key, ORIGIN, log_format=2)
    store.append([LOT, INV], [signer])
    store.append([surplus(i) for i in range(20)] + [surplus(i, "XBTINV") for i in range(5)], [signer])
    store.add_checkpoint([signer])
    store.append(event(store, shortfall("L1", "100"), 60, per_entry=4), [signer])  # 20 paid, 80 ADL
    store.append([surplus(i) for i in range(20, 23)], [signer])
    store.append(event(store, shortfall("L2", "9", side="short"), 3), [signer])  # 3 paid, the whole queue closed
    store.append(event(store, shortfall("L3", "5"), 10), [signer])  # an empty fund: all five lots ADL
    store.append(event(store, shortfall("I1", "800", "XBTINV"), 40, lot=10), [signer])
    store.add_checkpoint([signer])
    export = d / "export"
    store.close()
    assert run_fundledger("export", export, "--db", db).returncode == 0
    return db, key, signer, export


def test_the_minimum_is_the_largest_market_part_the_balance_covers():
    """Against an independent model in Fractions: the market part is the
    largest number of whole lots whose shortfall (floored delta) the
    balance covers; a lot more would not be covered."""
    from ledger.rules.fund import Contract, Fund, FundBook

    cases = [("linear", "long", "0.001", "1", "39000", "38000", 8),
             ("linear", "short", "0.01", "0.5", "100.5", "101.25", 6),
             ("inverse", "long", "100", "10", "39000", "38123.5", 8),
             ("inverse", "short", "1", "1", "2000", "2100.7", 8)]
    for ctype, side, mult, lot, bk, fill, scale in cases:
        for balance in (0, 1, 7, 12345, 10**6, 10**9 + 7):
            book = FundBook()
            c = Contract("X", "USDT", scale, ctype, mult, 0, lot)
            book.funds["X"] = Fund(c, balance=balance)
            qty = str(Fraction(lot) * 40).rstrip("0").rstrip(".") if "." in str(Fraction(lot) * 40) else \
                str(int(Fraction(lot) * 40))
            rec = {"kind": "liquidation", "contract": "X", "id": "a", "side": side, "qty": qty,
                   "bankruptcy_price": bk, "fill_price": fill}

            def shortfall_units(q: Fraction) -> int:
                m, b, f = Fraction(mult), Fraction(bk), Fraction(fill)
                if ctype == "linear":
                    d = q * m * ((f - b) if side == "long" else (b - f))
                else:
                    d = q * m * ((1 / b - 1 / f) if side == "long" else (1 / f - 1 / b))
                return -math.floor(d * 10**scale)

            lots = 40
            k = max(j for j in range(lots + 1) if shortfall_units(j * Fraction(lot)) <= balance)
            got = book.adl_minimum(rec)
            if k == lots:
                assert got is None
            else:
                assert Fraction(got) == (lots - k) * Fraction(lot), (ctype, side, balance)
                assert shortfall_units((k + 1) * Fraction(lot)) > balance


def test_the_events_verify_in_full_and_light(honest):
    db, _, _, export = honest
    verdict = tu.lib_verify(db)
    assert verdict["ok"] is True, verdict
    funds = {f["contract"]: f for f in verdict["contracts"]}
    lot = funds["XBTLOT"]
    # 23 surpluses of 1 USDT each; L1 pays 20 of its 100, L2 3 of its 9 (0.001 * 1000 a lot), L3 none
    assert lot["credited"] == "23.00000000" and lot["paid"] == "23.00000000" and lot["balance"] == "0.00000000"
    assert lot["adl"] == "91.00000000" and lot["lot"] == "1"
    conn = sqlite3.connect(db)
    (rows,) = conn.execute("SELECT COUNT(*) FROM entries WHERE kind = 'adl' AND contract = 'XBTLOT'").fetchone()
    conn.close()
    assert lot["allocations"] == rows > 7
    assert tu.lib_verify(export)["ok"] is True
    for symbol in ("XBTLOT", "XBTINV"):
        check = check_fund_path(str(export), symbol)
        assert check.fund == funds[symbol] and check.entries_checked == check.head["entries"]


def test_adl_cli_lists_the_events(honest):
    db, _, _, _ = honest
    out = run_fundledger("adl", "XBTLOT", "--db", db, "--json")
    assert out.returncode == 0, out.stderr
    obj = json.loads(out.stdout)
    events = {e["liquidation"]: e for e in obj["events"]}
    assert obj["contract"] == "XBTLOT" and set(events) == {"L1", "L2", "L3"}
    assert events["L1"]["adl_qty"] == events["L1"]["min_adl_qty"] == "80"
    assert sum(Fraction(p["qty"]) for p in events["L1"]["positions"]) == 80
    assert events["L3"]["adl_qty"] == "5"
    mine = adl.b64(adl.account_commitment("acct-0", "salt-0"))
    out = run_fundledger("adl", "XBTLOT", "--db", db, "--json", "--account-commitment", mine)
    assert out.returncode == 0, out.stderr
    obj = json.loads(out.stdout)
    assert obj["events"] and all(len(e["positions"]) == 1 for e in obj["events"])
    assert all(e["positions"][0]["commitment"] == adl.b64(adl.position_commitment(
        adl.account_commitment("acct-0", "salt-0"), "XBTLOT", e["liquidation"])) for e in obj["events"])


# --- bad input: refused at import, exit 2, the line and the reason, nothing written ------


@pytest.fixture
def fresh(tmp_path):
    db, key = str(tmp_path / "f.db"), str(tmp_path / "f.key")
    store, signer = api.init_ledger(db, key, ORIGIN, log_format=2)
    store.append([LOT], [signer])
    store.append([surplus(i) for i in range(20)], [signer])
    yield store, signer, db, key, tmp_path
    store.close()


def _positions(rec: dict) -> list[list[str]]:
    return [p.split(" ") for p in rec["positions"].split(",")]


def _join(rows: list[list[str]]) -> str:
    return ",".join(" ".join(r) for r in rows)


def _swap_first_two(records: list[dict]) -> None:
    rows = _positions(records[1])
    rows[0], rows[1] = rows[1], rows[0]
    records[1]["positions"] = _join(rows)


def _bad_score(records: list[dict]) -> None:
    rows = _positions(records[1])
    rows[0][5] = rows[0][5] + "1"
    records[1]["positions"] = _join(rows)


def _more_than_size(records: list[dict]) -> None:
    rows = _positions(records[1])
    rows[0][2] = str(int(rows[0][1]) + 1)
    records[1]["positions"] = _join(rows)


def _short_sum(records: list[dict]) -> None:
    records.pop()  # the last adl record


BAD = {
    "out of queue order": (_swap_first_two, "out of queue order"),
    "a score that is not the product": (_bad_score, "is not pnl_ratio * leverage"),
    "a position closed for more than it held": (_more_than_size, "more than the"),
    "an allocation that falls short": (_short_sum, "end before the ADL allocation"),
    "more ADL than needed": (lambda r: r[0].update(adl_qty="81"), "more than the minimum 80"),
    "less ADL than needed": (lambda r: r[0].update(adl_qty="79"), "less than the 80"),
    "a queue root that is not the queue's": (lambda r: r[0].update(queue_root=adl.b64(bytes(32))),
                                            "queue_proof does not show"),
    "an entry inside the event": (lambda r: r.insert(2, surplus(99)), "awaits its ADL allocation"),
    "a queue proof missing": (lambda r: r[-1].pop("queue_proof"), "queue_proof is needed"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_allocation_is_refused_at_import(fresh, name):
    store, signer, db, key, tmp = fresh
    records = event(store, shortfall("L1", "100"), 60, per_entry=4)
    edit, reason = BAD[name]
    edit(records)
    size = store.size()
    f = tmp / "in.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = run_fundledger("import", f, "--db", db, "--key", key)
    assert out.returncode == 2, out
    err = out.stderr.decode()
    assert reason in err and err.count("\n") == 1, err
    assert "line " in err or "end before" in err, err
    assert store.size() == size
    with pytest.raises(RuleError, match=re.escape(reason[:20])):
        store.append(records, [signer])
    assert store.size() == size


def test_adl_when_the_fund_could_pay_is_refused(fresh):
    store, signer, *_ = fresh
    rec = shortfall("L1", "10")  # a shortfall of 10, the fund holds 20
    fields, parts = adl.allocate("XBTLOT", "L1", "1", queue("XBTLOT", "L1", 5))
    with pytest.raises(RuleError, match="ADL when the fund could still pay"):
        store.append([dict(rec, **fields), *parts], [signer])


def test_a_shortfall_beyond_the_balance_needs_its_allocation(fresh):
    store, signer, *_ = fresh
    with pytest.raises(RuleError, match="ADL of 80 is needed"):
        store.append([shortfall("L1", "100")], [signer])


def test_quantities_are_whole_lots_and_lots_are_format_2(fresh, tmp_path):
    store, signer, *_ = fresh
    with pytest.raises(RuleError, match="not a multiple of the lot size"):
        store.append([dict(surplus(1), id="half", qty="2.5")], [signer])
    s1, k1 = api.init_ledger(str(tmp_path / "g.db"), str(tmp_path / "g.key"), ORIGIN)
    with pytest.raises(RuleError, match="format-2 log"):
        s1.append([LOT], [k1])
    s1.close()


def test_a_batch_split_keeps_an_event_whole(fresh):
    """An import in batches of 2 records never commits half an event."""
    store, signer, db, key, tmp = fresh
    records = event(store, shortfall("L1", "100"), 60, per_entry=4) + [surplus(50), surplus(51)]
    f = tmp / "in.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in records))
    with open(f, "rb") as stream:
        result = api.import_records(store, signer, stream, batch_size=2)
    assert result.appended == len(records)
    store.add_checkpoint([signer])
    assert tu.lib_verify(db)["ok"] is True


# --- forged by an operator holding the key: the verifier fails it at its seq ---------------


@pytest.fixture
def forged(honest, tmp_path):
    db, _, signer, _ = honest
    copy = tu.copy_ledger(db, tmp_path / "forged.db")
    conn = tu.open_rw(copy)
    yield conn, copy, signer
    conn.close()


def _adl_seqs(conn, liquidation: str) -> list[int]:
    seqs = []
    for seq, data in conn.execute("SELECT seq, data FROM entries WHERE kind = 'adl' ORDER BY seq"):
        if tu.entry_obj(bytes(data))["liquidation"] == liquidation:
            seqs.append(seq)
    return seqs


def _liquidation_seq(conn, lid: str) -> int:
    return conn.execute("SELECT seq FROM entries WHERE liquidation_id = ?", (lid,)).fetchone()[0]


def _resign(conn, copy, signer, seq: int, edit) -> dict:
    tu.resign_entry(conn, seq, edit, signer, ORIGIN)
    return tu.lib_verify(copy)


def _edit_positions(fn):
    def edit(obj):
        rows = [p.split(" ") for p in obj["positions"].split(",")]
        fn(rows)
        obj["positions"] = ",".join(" ".join(r) for r in rows)
    return edit


FORGED = {
    "a score raised": ("L1", 0, _edit_positions(lambda rows: rows[0].__setitem__(5, rows[0][5] + "9")),
                       "is not pnl_ratio * leverage"),
    "ranks swapped": ("L1", 0, _edit_positions(lambda rows: rows.__setitem__(slice(0, 2), rows[1::-1])),
                      "out of queue order"),
    "a position closed beyond its size": ("L1", 0, _edit_positions(
        lambda rows: rows[0].__setitem__(2, str(int(rows[0][1]) + 1))), "more than the"),
    "a commitment changed": ("L2", 0, _edit_positions(lambda rows: rows[0].__setitem__(0, adl.b64(b"\x07" * 32))),
                             "queue_root"),
    "next dropped": ("L1", -1, lambda o: o.pop("next"), "next must give"),
    "a wrong closing price": ("L1", 0, lambda o: o.update(price="39001"), "price"),
}


@pytest.mark.parametrize("name", sorted(FORGED))
def test_a_forged_allocation_fails_verification(forged, name):
    conn, copy, signer = forged
    lid, index, edit, word = FORGED[name]
    seq = _adl_seqs(conn, lid)[index]
    verdict = _resign(conn, copy, signer, seq, edit)
    assert verdict["ok"] is False and verdict["seq"] == seq and word in verdict["reason"], verdict


def test_a_forged_adl_qty_fails_verification(forged):
    conn, copy, signer = forged
    seq = _liquidation_seq(conn, "L1")
    verdict = _resign(conn, copy, signer, seq, lambda o: o.update(adl_qty="81"))
    assert verdict["ok"] is False and verdict["seq"] == seq and "more than the minimum 80" in verdict["reason"]


def test_a_plain_liquidation_hiding_an_adl_fails_verification(forged):
    """The ADL liquidation rewritten as a format-1-style one (the shortfall
    beyond the balance as one adl amount): a lot contract may not."""
    conn, copy, signer = forged
    seq = _liquidation_seq(conn, "L3")

    def plain(o):
        for k in ("adl_qty", "queue_root", "queue_size"):
            o.pop(k)
    verdict = _resign(conn, copy, signer, seq, plain)
    assert verdict["ok"] is False and verdict["seq"] == seq and "ADL of 5 is needed" in verdict["reason"], verdict


def test_the_service_takes_an_event_in_one_body_and_refuses_half_of_one(ledger2):
    """`fundledger run` over loopback: an ADL liquidation and its allocation
    in one POST body are appended and covered by a checkpoint; a body with
    the liquidation alone is a 400 naming why, and writes nothing."""
    import time

    from test_service import Service, body

    lg = ledger2
    lg.store.append([LOT] + [surplus(i) for i in range(20)], [lg.signer])
    records = event(lg.store, shortfall("L1", "100"), 30, per_entry=5)
    s = Service(lg, "--interval", "0.2")
    try:
        def moved() -> int:
            return sqlite3.connect(lg.db).execute("SELECT COUNT(*) FROM entries WHERE kind IN ('liquidation', 'adl')"
                                             ).fetchone()[0]
        before = moved()
        r = s.post(body(records[:1]))
        assert r.status_code == 400 and "end before the ADL allocation" in r.json()["error"], r.text
        assert moved() == before
        r = s.post(body(records))
        assert r.status_code == 200, r.text
        seqs = [x["seq"] for x in r.json()["results"]]
        assert seqs == list(range(seqs[0], seqs[0] + len(records)))
        deadline = time.monotonic() + 20
        while sqlite3.connect(lg.db).execute("SELECT COALESCE(MAX(tree_size), 0) FROM checkpoints").fetchone()[0] <= seqs[-1]:
            assert time.monotonic() < deadline, s.stderr()
            time.sleep(0.1)
    finally:
        assert s.stop() == 0
    verdict = tu.lib_verify(lg.db)
    assert verdict["ok"] is True, verdict


def test_incremental_verify_keeps_lot_funds_across_runs(fresh):
    """A verifier's state (``--state``) carries a lot contract's lot and adl
    entry count: the next run checks only the new event and agrees with a
    full run."""
    from ledger.verify.run import verify_path

    store, signer, db, key, tmp = fresh
    store.append(event(store, shortfall("L1", "100"), 40), [signer])
    store.add_checkpoint([signer])
    state = str(tmp / "verifier.state")
    first = verify_path(db, state_path=state)
    store.append([surplus(i) for i in range(40, 45)], [signer])
    store.append(event(store, shortfall("L2", "30"), 12), [signer])
    store.add_checkpoint([signer])
    again = verify_path(db, state_path=state)
    full = verify_path(db)
    assert again.entries_checked < full.entries_checked
    assert again.as_json()["contracts"] == full.as_json()["contracts"]
    assert full.as_json()["contracts"][0]["allocations"] > first.as_json()["contracts"][0]["allocations"]


def test_a_chunk_holding_an_event_is_applied_in_runs_and_still_checked(tmp_path, monkeypatch):
    """A verification chunk with an ADL event (the reference's) applies the
    runs of passed entries around it at once (pipeline._apply_run), and a
    forged entry in such a run is still caught at its seq."""
    from ledger.verify import pipeline

    db, key = str(tmp_path / "f.db"), str(tmp_path / "f.key")
    store, signer = api.init_ledger(db, key, ORIGIN, log_format=2)
    store.append([LOT], [signer])
    store.append([surplus(i) for i in range(1500)], [signer])
    store.append(event(store, shortfall("L1", "2000"), 300, per_entry=100), [signer])
    store.append([surplus(i) for i in range(1500, 1900)], [signer])
    store.add_checkpoint([signer])
    store.close()
    applied = []
    real = pipeline._apply_run
    monkeypatch.setattr(pipeline, "_apply_run", lambda *a: applied.append(a[1][0]) or real(*a))
    assert tu.lib_verify(db)["ok"] is True
    assert applied  # the runs around the event went at once
    conn = tu.open_rw(tu.copy_ledger(db, tmp_path / "forged.db"))
    seq = conn.execute("SELECT seq FROM entries WHERE liquidation_id = 'sXBTLOT1600'").fetchone()[0]
    verdict = _resign(conn, str(tmp_path / "forged.db"), signer, seq, lambda o: o.update(balance="1.00000000"))
    conn.close()
    assert verdict["ok"] is False and verdict["seq"] == seq, verdict
