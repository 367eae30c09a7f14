"""The light check of one fund (docs/FORMAT.md, "The light check of one
fund") on real exports and on the site: it agrees with the full verifier,
reads only the fund's files, and fails on what it must catch. Attacks by a
dishonest operator are in test_light_attacks.py."""

from __future__ import annotations

import json
import os

import pytest
from conftest import Ledger, run_fundledger

from ledger.errors import InputError, VerificationError
from ledger.ops import api
from ledger.tlog.tiles import TILE_WIDTH
from ledger.verify.light import check_fund, check_fund_path
from ledger.verify.run import verify_path
from ledger.verify.sources import DirSource
from publish.export import export


def contract(symbol: str, scale: int = 2) -> dict:
    return {"kind": "contract", "symbol": symbol, "currency": "USDT", "scale": scale, "multiplier": "1"}


def liquidation(symbol: str, i: int) -> dict:
    """A surplus most of the time, now and then a shortfall."""
    return {"kind": "liquidation", "contract": symbol, "id": f"L-{i}", "side": "long", "qty": "1",
            "bankruptcy_price": "100", "fill_price": "101" if i % 7 == 0 else "99.5"}


def fill(lg: Ledger, symbols: list[str], count: int, start: int = 0, checkpoint_every: int = 0) -> None:
    for i in range(start, start + count):
        lg.append(liquidation(symbols[i % len(symbols)], i))
        if checkpoint_every and i % checkpoint_every == checkpoint_every - 1:
            lg.checkpoint()


def full_balances(out: str) -> dict[str, str]:
    report = verify_path(out, workers=0)
    return {c["contract"]: c["balance"] for c in report.as_json()["contracts"]}


def light_balances(out: str, symbols: list[str]) -> dict[str, str]:
    return {s: check_fund_path(out, s).fund["balance"] for s in symbols}


def test_light_check_agrees_with_the_full_verifier(ledger2):
    symbols = ["AAA", "BBB", "CCC"]
    for s in symbols:
        ledger2.append(contract(s))
    fill(ledger2, symbols, 700, checkpoint_every=150)
    ledger2.checkpoint()
    out = str(ledger2.dir / "out")
    export(ledger2.store, out)
    assert light_balances(out, symbols) == full_balances(out)
    r = check_fund_path(out, "AAA")
    assert r.entries_checked == 1 + len(range(0, 700, 3))
    assert r.head["entries"] == r.entries_checked and r.fund["liquidations"] == r.entries_checked - 1
    assert r.fund == api.balances(ledger2.store, "AAA")["contracts"][0]


def test_the_incremental_export_publishes_what_a_fresh_one_does(ledger2):
    symbols = ["AAA", "BBB"]
    for s in symbols:
        ledger2.append(contract(s))
    inc, fresh = str(ledger2.dir / "inc"), str(ledger2.dir / "fresh")
    for step in range(4):
        fill(ledger2, symbols, 200 + 37 * step, start=1000 * step)
        ledger2.checkpoint()
        export(ledger2.store, inc)
    export(ledger2.store, fresh)
    for root, _, files in os.walk(fresh):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), fresh)
            with open(os.path.join(fresh, rel), "rb") as a, open(os.path.join(inc, rel), "rb") as b:
                assert a.read() == b.read(), rel
    # older partial chain bundles stay, each the first W entries of the newer one
    older = [p for p in os.listdir(os.path.join(inc, "chain", "AAA", "000.p"))]
    assert len(older) >= 2
    assert light_balances(inc, symbols) == full_balances(inc)


def test_a_fund_registered_before_the_switch_is_checked_light(ledger):
    """A format-1 log with a key rotation, upgraded, then more entries and
    another rotation: the chains cover the format-1 entries too."""
    ledger.contract("AAA", scale=2)
    ledger.contract("BBB", scale=2)
    fill(ledger, ["AAA", "BBB"], 300)
    ledger.checkpoint()
    _, signer = api.rotate_key(ledger.store, ledger.signer, str(ledger.dir / "k2.key"))
    ledger.signer = signer
    fill(ledger, ["AAA"], 50, start=300)
    ledger.checkpoint()
    api.upgrade(ledger.store, ledger.signer)
    ledger.append(contract("CCC"))
    fill(ledger, ["AAA", "BBB", "CCC"], 300, start=400)
    _, signer = api.rotate_key(ledger.store, ledger.signer, str(ledger.dir / "k3.key"))
    ledger.signer = signer
    fill(ledger, ["AAA", "CCC"], 30, start=800)
    ledger.checkpoint()
    out = str(ledger.dir / "out")
    export(ledger.store, out)
    assert light_balances(out, ["AAA", "BBB", "CCC"]) == full_balances(out)
    r = check_fund_path(out, "BBB")
    assert [s for s, _ in r.keys] == [0, 303, r.keys[2][0]] and len(r.keys) == 3


def test_a_format_1_export_cannot_be_checked_one_fund_at_a_time(ledger):
    ledger.contract("AAA")
    ledger.checkpoint()
    out = str(ledger.dir / "out")
    export(ledger.store, out)
    with pytest.raises(InputError, match="format-2"):
        check_fund_path(out, "AAA")
    assert not os.path.exists(os.path.join(out, "funds"))


def test_it_reads_the_fund_and_not_the_log(ledger2):
    """A fund of 20 entries in a log of 3,000: the bundles it opens are its
    own chain's and the entry bundles of the first and the last state entry."""
    ledger2.append(contract("BIG"))
    ledger2.append(contract("SMALL"))
    for i in range(3000):
        ledger2.append(liquidation("SMALL" if i % 150 == 0 else "BIG", i))
    ledger2.checkpoint()
    out = str(ledger2.dir / "out")
    export(ledger2.store, out)
    read: list[str] = []

    class Watched(DirSource):
        def fetch(self, path, limit):
            read.append(path)
            return super().fetch(path, limit)

    r = check_fund(Watched(out), None, "SMALL")
    assert r.entries_checked == 21
    entry_bundles = [p for p in read if p.startswith("tile/entries/")]
    assert entry_bundles == ["tile/entries/011.p/" + str(ledger2.store.size() % TILE_WIDTH), "tile/entries/000"]
    assert not any(p.startswith("chain/BIG") for p in read)
    assert sum(1 for p in read if p.startswith("tile/0/")) <= 21 + 1


def test_tampered_files_fail(ledger2):
    ledger2.append(contract("AAA"))
    fill(ledger2, ["AAA"], 40)
    ledger2.checkpoint()
    out = str(ledger2.dir / "out")
    export(ledger2.store, out)
    bundle = os.path.join(out, "chain", "AAA", "000.p", "41")
    good = open(bundle, "rb").read()
    at = good.rindex(b'"side":"long"')  # in the last entry's text: same length, other bytes
    open(bundle, "wb").write(good[:at] + b'"side":"lonh"' + good[at + 13:])
    with pytest.raises(VerificationError, match="not the one the checkpointed tree holds"):
        check_fund_path(out, "AAA")
    open(bundle, "wb").write(good)
    funds = os.path.join(out, "funds")
    open(funds, "wb").write(b"AAA\nBBB\n")
    with pytest.raises(VerificationError, match="funds"):
        check_fund_path(out, "AAA")


def test_the_cli_prints_what_it_proves_and_what_not(ledger2):
    ledger2.append(contract("AAA"))
    fill(ledger2, ["AAA"], 10)
    ledger2.checkpoint()
    out = str(ledger2.dir / "out")
    export(ledger2.store, out)
    r = run_fundledger("verify", out, "--contract", "AAA")
    assert r.returncode == 0, r.stderr
    text = r.stdout.decode()
    assert "fund AAA checked light" in text and "does not prove" in text and "auditing witness" in text
    r = run_fundledger("verify", out, "--contract", "AAA", "--json")
    doc = json.loads(r.stdout)
    assert doc["light"] is True and doc["head"]["entries"] == 11 and doc["does_not_prove"]
    r = run_fundledger("verify", out, "--contract", "NOPE")
    assert r.returncode == 2 and b"not among" in r.stderr and b"Traceback" not in r.stderr
    r = run_fundledger("verify", out, "--contract", "AAA", "--state", str(ledger2.dir / "s"))
    assert r.returncode == 2
    r = run_fundledger("verify", ledger2.db, "--contract", "AAA")
    assert r.returncode == 2 and b"export directory or a URL" in r.stderr


def test_the_site_serves_the_light_check(ledger2):
    from publish.site import BackgroundServer

    for s in ("AAA", "BBB"):
        ledger2.append(contract(s))
    fill(ledger2, ["AAA", "BBB"], 600)
    ledger2.checkpoint()
    out = str(ledger2.dir / "out")
    export(ledger2.store, out)
    with BackgroundServer(ledger2.db) as url:
        for s in ("AAA", "BBB"):
            assert check_fund_path(url, s).as_json() == check_fund_path(out, s).as_json()
        import httpx

        assert httpx.get(url + "chain/AAA/000.p/256").status_code == 404  # .p/256 is not a name
        assert httpx.get(url + "chain/AAA/005").status_code == 404
        assert httpx.get(url + "heads/0/" + "0" * 64).status_code == 404
        assert httpx.get(url + "since").text == "0\n"
