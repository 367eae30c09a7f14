"""`fundledger demo`: a reproducible simulated market, a drained fund, a
verified ledger and export, balances that an independent recomputation
agrees with."""

from __future__ import annotations

import base64
import json
import math
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.ops import api
from ledger.tlog.proof import verify_consistency
from ledger.format import note
from ledger.format import consistency
from ledger.cli import cli
from ledger.ops.demo import ORIGIN, run_demo
from ledger.ops.market import CONTRACTS
from ledger.errors import InputError
from ledger.store.schema import Reader
from ledger.store.store import Store
from ledger.verify.checkpoint import open_checkpoint
from ledger.verify.run import verify_path

N = 300
SEED = 11


def quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo") / "run"
    lines: list[str] = []
    summary = run_demo(str(d), seed=SEED, liquidations=N, echo=lines.append)
    return d, summary, "\n".join(lines)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def entry_texts(db: str) -> list[dict]:
    """Every entry's JSON without what depends on the key: the signature
    (outside the text) and the hashes of signed entries (``prev``,
    ``chain_prev``, a state entry's ``heads``); nor a state entry's
    ``time``, the moment its checkpoint was signed."""
    store = Reader.open(db)
    try:
        out = []
        for _, data in store.iter_entries():
            text, _ = note.split_note(data)
            obj = json.loads(text)
            del obj["prev"]
            obj.pop("chain_prev", None)
            if obj["kind"] == "state":
                del obj["heads"], obj["time"]
            out.append(obj)
        return out
    finally:
        store.close()


# -- an independent recomputation: fractions, straight from the rules ----------------------


def recompute(records: list[dict]) -> dict[str, dict]:
    contracts: dict[str, dict] = {}
    funds: dict[str, dict] = {}
    for r in records:
        if r["kind"] == "contract":
            contracts[r["symbol"]] = r
            funds[r["symbol"]] = {"balance": Fraction(0), "credited": Fraction(0), "paid": Fraction(0),
                                  "adl": Fraction(0), "liquidations": 0, "drained": 0}
            continue
        if r["kind"] == "adl":
            continue  # (its quantities are the verifier's to check; the balance moved with its liquidation)
        if r["kind"] != "liquidation":
            raise ValueError(f"unexpected record {r}")
        c = contracts[r["contract"]]
        f = funds[r["contract"]]
        unit = Fraction(1, 10 ** c["scale"])

        def movement(q: Fraction, exact: bool = False) -> Fraction:
            mult, bankruptcy, fill = Fraction(c["multiplier"]), Fraction(r["bankruptcy_price"]), Fraction(r["fill_price"])
            d = q * mult * ((fill - bankruptcy) if c["type"] == "linear" else (1 / bankruptcy - 1 / fill))
            d = -d if r["side"] == "short" else d
            return d if exact else math.floor(d / unit) * unit

        qty = Fraction(r["qty"])
        delta = movement(qty)
        if c.get("lot") and delta < 0 and -delta > f["balance"]:
            # a lot contract (docs/FORMAT.md, "The minimum ADL"): the most whole lots the balance pays
            lot = Fraction(c["lot"])
            k = min(int(qty / lot), math.floor(f["balance"] / -movement(lot, exact=True)))
            while k > 0 and -movement(k * lot) > f["balance"]:
                k -= 1
            while k < qty / lot and -movement((k + 1) * lot) <= f["balance"]:
                k += 1
            assert Fraction(r["adl_qty"]) == qty - k * lot, r
            paid = -movement(k * lot) if k else Fraction(0)
            f["drained"] += paid > 0
            f["balance"] -= paid
            f["paid"] += paid
            f["adl"] += -delta - paid
        elif delta >= 0:
            f["balance"] += delta
            f["credited"] += delta
        else:
            paid = min(-delta, f["balance"])
            adl = -delta - paid
            if paid > 0 and adl > 0:
                f["drained"] += 1
            f["balance"] -= paid
            f["paid"] += paid
            f["adl"] += adl
        f["liquidations"] += 1
    return funds


# -- the run --------------------------------------------------------------------------------


def test_summary_is_sane(demo):
    d, s, out = demo
    # format 2: the first state entry, the records, a state entry before each checkpoint
    lines = len(read_jsonl(s["paths"]["liquidations"]))  # the contracts, the liquidations, their allocations
    assert lines > len(CONTRACTS) + N
    assert s["tree_size"] == 1 + lines + len(s["checkpoints"])
    assert len(base64.b64decode(s["root"], validate=True)) == 32
    assert s["origin"] == ORIGIN
    symbols = [c["contract"] for c in s["contracts"]]
    assert len(symbols) == len(set(symbols)) >= 6
    assert {"XBTUSDTM", "ETHUSDTM", "SOLUSDTM", "DOGEUSDTM", "XBTUSDM"} <= set(symbols)
    inverse = [c for c in s["contracts"] if c["type"] == "inverse"]
    assert inverse and inverse[0]["currency"] == "XBT" and inverse[0]["scale"] == 8
    assert sum(c["liquidations"] for c in s["contracts"]) == N
    cps = s["checkpoints"]
    assert len(cps) >= 5 and cps == sorted(set(cps)) and cps[-1] == s["tree_size"]
    for name in ("db", "key", "vkey", "liquidations", "first_checkpoint"):
        assert Path(s["paths"][name]).is_file(), name
    assert (Path(s["paths"]["export"]) / "checkpoint").is_file()
    assert Path(s["paths"]["db"]).parent == d
    # the readable summary
    for text in ("drained", s["root"], "fundledger serve --db", "fundledger verify", "fundledger prove",
                 "fundledger consistency", s["crash"]["asset"]):
        assert text in out, text
    for c in s["contracts"]:
        assert c["contract"] in out and c["balance"] in out


def test_first_checkpoint_is_the_first_tenth(demo):
    d, s, _ = demo
    vkey = note.parse_vkey(Path(s["paths"]["vkey"]).read_text().strip())
    assert vkey.vkey() == s["vkey"]
    cp = open_checkpoint(Path(s["paths"]["first_checkpoint"]).read_bytes(), [vkey])
    assert cp.origin == ORIGIN
    # the first state entry, the first tenth of the records (an ADL event kept whole), the checkpoint's state entry
    records = read_jsonl(s["paths"]["liquidations"])
    first = -(-len(records) // 10)
    while records[first - 1]["kind"] == "adl" or "adl_qty" in records[first - 1]:
        first += 1
    assert cp.tree_size == s["checkpoints"][0] == 1 + first + 1


def test_every_fund_of_the_export_checks_light(demo):
    """The light check of each fund gives the balance the full check gives."""
    _, s, _ = demo
    from ledger.verify.light import check_fund_path

    export_dir = s["paths"]["export"]
    for c in s["contracts"]:
        r = check_fund_path(export_dir, c["contract"], vkey=s["vkey"])
        assert r.fund == c


def test_database_verifies(demo):
    _, s, _ = demo
    report = verify_path(s["paths"]["db"])
    assert report.tree_size == s["tree_size"]
    assert base64.b64encode(report.root).decode() == s["root"]
    assert report.as_json()["contracts"] == sorted(s["contracts"], key=lambda c: c["contract"])


def test_export_verifies_against_the_first_checkpoint(demo):
    _, s, _ = demo
    report = verify_path(s["paths"]["export"], vkey=s["paths"]["vkey"], trusted_path=s["paths"]["first_checkpoint"])
    assert report.tree_size == s["tree_size"]
    assert base64.b64encode(report.root).decode() == s["root"]


def test_consistency_proof_from_the_first_checkpoint(demo):
    _, s, _ = demo
    first = Path(s["paths"]["first_checkpoint"]).read_bytes()
    vkey = note.parse_vkey(s["vkey"])
    store = Reader.open(s["paths"]["db"])
    try:
        body = api.consistency(store, first)
    finally:
        store.close()
    proof = consistency.parse_consistency(body)
    old = open_checkpoint(first, [vkey])
    new = open_checkpoint(proof.checkpoint, [vkey])
    assert (proof.old_size, new.tree_size) == (old.tree_size, s["tree_size"])
    verify_consistency(old.tree_size, new.tree_size, list(proof.proof), old.root_hash, new.root_hash)


def test_a_fund_is_drained_and_adl_recorded(demo):
    _, s, out = demo
    assert s["drained"]
    crash = s["crash"]
    assert crash["asset"] in ("solana", "dogecoin") and crash["contract"] in s["drained"]
    assert Fraction(crash["drop_percent"]) >= 20
    store = Reader.open(s["paths"]["db"])
    try:
        rows = store.history(crash["contract"])
    finally:
        store.close()
    allocated = {rows[i - 1]["seq"] for i, r in enumerate(rows) if r["kind"] == "adl" and rows[i - 1]["kind"] != "adl"}
    drains = [r for r in rows if r["kind"] == "liquidation" and Fraction(r["paid"]) > 0
              and Fraction(r["adl"]) > 0 and (Fraction(r["balance"]) == 0 or r["seq"] in allocated)]
    assert allocated  # the crashing contract is a lot contract: its ADL is allocated
    assert drains
    assert [r["seq"] for r in drains] == [e["seq"] for e in s["drain_events"] if e["contract"] == crash["contract"]]
    fund = next(c for c in s["contracts"] if c["contract"] == crash["contract"])
    assert Fraction(fund["adl"]) > 0 and Fraction(fund["paid"]) > 0
    assert f"drained: {crash['contract']}" in out


def test_balances_match_an_independent_recomputation(demo):
    _, s, _ = demo
    expected = recompute(read_jsonl(s["paths"]["liquidations"]))
    assert set(expected) == {c["contract"] for c in s["contracts"]}
    for c in s["contracts"]:
        e = expected[c["contract"]]
        for k in ("balance", "credited", "paid", "adl"):
            assert Fraction(c[k]) == e[k], (c["contract"], k)
            assert len(c[k].split(".")[1]) == c["scale"]
        assert c["liquidations"] == e["liquidations"]
    assert {sym for sym, e in expected.items() if e["drained"]} == set(s["drained"])
    assert sum(e["adl"] > 0 for e in expected.values()) >= 1


def test_the_input_file_is_realistic_import_input(demo):
    _, s, _ = demo
    records = read_jsonl(s["paths"]["liquidations"])
    contracts = [r for r in records if r["kind"] == "contract"]
    liqs = [r for r in records if r["kind"] == "liquidation"]
    assert records[: len(contracts)] == contracts and len(liqs) == N
    for r in records:
        for k, v in r.items():
            assert not isinstance(v, float), (k, v)  # a float is refused by import
    ids = defaultdict(set)
    for r in liqs:
        assert r["id"] not in ids[r["contract"]]
        ids[r["contract"]].add(r["id"])
        b, f, m = (Fraction(r[k]) for k in ("bankruptcy_price", "fill_price", "mark_price"))
        assert int(r["qty"]) >= 1
        # a long's bankruptcy price is below its mark, a short's above, within a few percent
        assert (b < m) if r["side"] == "long" else (b > m)
        assert abs(b - m) / m < Fraction(2, 100) and abs(f - m) / m < Fraction(15, 100)
    times = [r["time"] for r in liqs]
    assert times == sorted(times) and times[0].startswith("2026-")
    sides = {r["side"] for r in liqs}
    assert sides == {"long", "short"}
    # both outcomes occur
    surplus = shortfall = 0
    for r in liqs:
        b, f = Fraction(r["bankruptcy_price"]), Fraction(r["fill_price"])
        better = f > b if r["side"] == "long" else f < b
        surplus += better
        shortfall += not better and f != b
    assert surplus > N // 2 and shortfall > 0
    # the first prices are near the demo market's (ledger/data/market-prices.tsv)
    first_btc = next(r for r in liqs if r["contract"] == "XBTUSDTM")
    assert abs(Fraction(first_btc["mark_price"]) / Fraction("87959.907984") - 1) < Fraction(5, 100)


def test_the_crash(demo):
    _, s, _ = demo
    crash = s["crash"]
    liqs = [r for r in read_jsonl(s["paths"]["liquidations"]) if r["kind"] == "liquidation"]
    during = [r for r in liqs if crash["start"] <= r["time"] <= crash["end"] and r["contract"] == crash["contract"]]
    assert during
    marks = [Fraction(r["mark_price"]) for r in during]
    assert min(marks) <= Fraction(crash["from_usd"]) * Fraction(85, 100)
    far = [r for r in during if r["side"] == "long"
           and Fraction(r["fill_price"]) < Fraction(r["bankruptcy_price"]) * Fraction(99, 100)]
    assert far


# -- reproducibility ---------------------------------------------------------------------------


def test_same_seed_same_market_and_entries(demo, tmp_path):
    _, s, _ = demo
    again = run_demo(str(tmp_path / "again"), seed=SEED, liquidations=N, echo=quiet)
    assert Path(again["paths"]["liquidations"]).read_bytes() == Path(s["paths"]["liquidations"]).read_bytes()
    assert again["vkey"] != s["vkey"]  # a new key each time ...
    assert entry_texts(again["paths"]["db"]) == entry_texts(s["paths"]["db"])  # ... and nothing else differs
    assert again["contracts"] == s["contracts"]
    assert (again["drained"], again["crash"], again["checkpoints"]) == (s["drained"], s["crash"], s["checkpoints"])


def test_another_seed_another_market(demo, tmp_path):
    _, s, _ = demo
    other = run_demo(str(tmp_path / "other"), seed=SEED + 1, liquidations=N, echo=quiet)
    assert Path(other["paths"]["liquidations"]).read_bytes() != Path(s["paths"]["liquidations"]).read_bytes()
    assert other["contracts"] != s["contracts"]
    assert other["drained"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_seed_drains_a_fund_even_in_a_tiny_run(tmp_path, seed):
    s = run_demo(str(tmp_path / "tiny"), seed=seed, liquidations=10, echo=quiet)
    lines = len(read_jsonl(s["paths"]["liquidations"]))
    assert s["drained"] and s["tree_size"] == 1 + lines + len(s["checkpoints"])


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("existing", ["fund.db", "fund.key"])
def test_refuses_a_directory_holding_a_ledger(tmp_path, existing):
    d = tmp_path / "d"
    d.mkdir()
    (d / existing).write_bytes(b"precious")
    with pytest.raises(InputError, match="already exists"):
        run_demo(str(d), liquidations=N, echo=quiet)
    assert sorted(p.name for p in d.iterdir()) == [existing]
    assert (d / existing).read_bytes() == b"precious"


def test_refuses_a_finished_demo(demo):
    d, s, _ = demo
    before = Path(s["paths"]["liquidations"]).read_bytes()
    with pytest.raises(InputError):
        run_demo(str(d), seed=SEED + 5, liquidations=N, echo=quiet)
    assert Path(s["paths"]["liquidations"]).read_bytes() == before


def test_refuses_too_few_liquidations(tmp_path):
    with pytest.raises(InputError):
        run_demo(str(tmp_path / "few"), liquidations=3, echo=quiet)


# -- the command line ---------------------------------------------------------------------------


def test_cli_demo(tmp_path):
    d = tmp_path / "cli-demo"
    r = CliRunner().invoke(cli, ["demo", "--dir", str(d), "--seed", "7", "--liquidations", "300"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "drained" in r.output and "fundledger serve --db" in r.output
    assert (d / "fund.db").is_file() and (d / "export" / "checkpoint").is_file()
    # the commands it suggests work
    runner = CliRunner()
    v = runner.invoke(cli, ["verify", str(d / "export"), "--vkey", str(d / "fund.vkey"),
                            "--trusted", str(d / "first.checkpoint"), "--json"], catch_exceptions=False)
    assert v.exit_code == 0, v.output
    assert json.loads(v.output)["ok"] is True
    # and a second run into the same directory is refused: exit 2, one line
    again = runner.invoke(cli, ["demo", "--dir", str(d), "--liquidations", "300"])
    assert again.exit_code == 2
    assert "already exists" in again.output and "Traceback" not in again.output
