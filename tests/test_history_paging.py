"""`fundledger history` streamed and paged: --since and --limit walk a
fund's entries exactly once, and the JSON says where the next page starts."""

from __future__ import annotations

import json

from conftest import run_fundledger


def test_pages_cover_the_fund_once(ledger):
    ledger.contract("XBTUSDTM")
    ledger.contract("ETHUSDTM")
    for i in range(25):
        ledger.liquidation("XBTUSDTM" if i % 3 else "ETHUSDTM", id=f"L-{i}")
    whole = json.loads(run_fundledger("history", "XBTUSDTM", "--json", "--db", ledger.db).stdout)
    assert whole["next"] is None and [e["seq"] for e in whole["entries"]] == [
        e["seq"] for e in ledger.store.history("XBTUSDTM")]
    seen, since = [], 0
    while since is not None:
        r = run_fundledger("history", "XBTUSDTM", "--json", "--since", str(since), "--limit", "4", "--db", ledger.db)
        page = json.loads(r.stdout)
        assert r.returncode == 0 and len(page["entries"]) <= 4
        seen += page["entries"]
        since = page["next"]
    assert seen == whole["entries"]
    text = run_fundledger("history", "XBTUSDTM", "--since", str(whole["entries"][3]["seq"]), "--limit", "2",
                          "--db", ledger.db).stdout.decode().splitlines()
    assert [int(line.split()[0]) for line in text] == [e["seq"] for e in whole["entries"][3:5]]
    r = run_fundledger("history", "NOPE", "--db", ledger.db)
    assert r.returncode == 2 and b"unknown contract" in r.stderr
