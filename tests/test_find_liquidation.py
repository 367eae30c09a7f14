"""Find my liquidation: `fundledger prove --contract C --liquidation ID`
and the site's search box. "Not found" is said as what it is."""

from __future__ import annotations

import httpx
import pytest
from conftest import run_fundledger

from ledger.ops import api
from publish.site import BackgroundServer


@pytest.fixture
def logged(ledger):
    ledger.contract("XBTUSDTM")
    ledger.contract("ETHUSDTM")
    for i in range(5):
        ledger.liquidation("XBTUSDTM", id=f"L-{i}")
    ledger.liquidation("ETHUSDTM", id="L-2", bankruptcy_price="2000", fill_price="2001")
    ledger.checkpoint()
    return ledger


def test_prove_by_liquidation_id_gives_the_receipt_of_its_entry(logged):
    seq = api.liquidation_seq(logged.store, "XBTUSDTM", "L-3")
    by_id = run_fundledger("prove", "--contract", "XBTUSDTM", "--liquidation", "L-3", "--db", logged.db)
    by_seq = run_fundledger("prove", str(seq), "--db", logged.db)
    assert by_id.returncode == 0 and by_id.stdout == by_seq.stdout
    receipt = logged.dir / "r.proof"
    receipt.write_bytes(by_id.stdout)
    vkey = logged.store.vkey
    r = run_fundledger("check-receipt", str(receipt), "--vkey", vkey, "--json")
    assert r.returncode == 0 and b'"L-3"' in r.stdout


def test_not_recorded_is_not_called_never_happened(logged):
    r = run_fundledger("prove", "--contract", "XBTUSDTM", "--liquidation", "L-99", "--db", logged.db)
    assert r.returncode == 2
    assert b"no liquidation 'L-99' of XBTUSDTM is recorded" in r.stderr and b"not a proof" in r.stderr
    r = run_fundledger("prove", "--contract", "NOPE", "--liquidation", "L-1", "--db", logged.db)
    assert r.returncode == 2 and b"unknown contract" in r.stderr
    for args in (["3", "--contract", "XBTUSDTM", "--liquidation", "L-1"], ["--liquidation", "L-1"], []):
        r = run_fundledger("prove", *args, "--db", logged.db)
        assert r.returncode == 2 and b"give SEQ, or --contract and --liquidation" in r.stderr, args


def test_the_site_finds_a_liquidation(logged):
    with BackgroundServer(logged.db) as url:
        c = httpx.Client(base_url=url)
        seq = api.liquidation_seq(logged.store, "XBTUSDTM", "L-3")
        r = c.get("/search", params={"id": "L-3"})
        assert r.status_code == 302 and r.headers["location"] == f"/entry/{seq}"
        r = c.get("/search", params={"id": "L-2"})  # recorded for two contracts
        assert r.status_code == 200 and "XBTUSDTM: entry #" in r.text and "ETHUSDTM: entry #" in r.text
        r = c.get("/search", params={"id": "L-2", "contract": "ETHUSDTM"})
        assert r.status_code == 302
        r = c.get("/search", params={"id": "L-404"})
        assert r.status_code == 404 and "not a proof that the exchange never liquidated" in r.text
        for bad in ({"id": ""}, {"id": "x" * 129}, {"id": "L-1", "contract": "bad symbol"}):
            assert c.get("/search", params=bad).status_code == 400, bad
        for page in ("/", "/contract/XBTUSDTM"):
            assert 'action="/search"' in c.get(page).text
        assert "form-action 'self'" in c.get("/").headers["content-security-policy"]
