"""The site shows only what it verified itself (publish/verified.py), calls
cosignatures so only when they verify against a witness key it was given,
and leaks no path, sets no cookie and sends a CSP on every HTML page.

Each test edits the database the way someone holding the file (and not the
key) could, and checks what the pages then say."""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import threading

import pytest

from ledger.ops import api
from ledger.format import note
from ledger.ops import witness
from publish import present
from publish.site import make_datasette, wait_verified

ATOM = "{http://www.w3.org/2005/Atom}"


def liq(i, contract="XBTUSDTM", fill="39100", qty="1", side="long", bankruptcy="39000"):
    return {"kind": "liquidation", "contract": contract, "id": f"L-{i}", "side": side, "qty": qty,
            "bankruptcy_price": bankruptcy, "fill_price": fill}


def build(ledger):
    """Two funds (one coin-settled), 40 liquidations, a checkpoint at 42, then
    two entries not yet covered by one."""
    ledger.contract("XBTUSDTM", "USDT", 8, "linear", "0.001")
    ledger.contract("XBTUSDM", "XBT", 8, "inverse", "1")
    ledger.append(*[liq(i, "XBTUSDTM" if i % 2 else "XBTUSDM", qty="1000" if i % 2 == 0 else "2")
                    for i in range(40)])
    ledger.checkpoint()
    ledger.append(liq(40, fill="39500"), liq(41, fill="39600"))
    return ledger


def edit(db: str, *statements) -> None:
    """What someone holding the file can do: drop the append-only triggers
    and change rows (no key needed)."""
    con = sqlite3.connect(db)
    for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        con.execute(f"DROP TRIGGER {name}")
    for stmt, args in statements:
        con.execute(stmt, args)
    con.commit()
    con.close()


def get(ds, path):
    return asyncio.run(ds.client.get(path))


@pytest.fixture
def site(ledger):
    build(ledger)
    truth = {c["contract"]: c for c in api.balances(ledger.store)["contracts"]}
    ds = make_datasette(ledger.db)
    assert wait_verified(ds).status == "verified"
    yield ledger, ds, truth
    ds._fundledger.verifier.stop()


def at_checkpoint(ledger) -> dict:
    """Each fund's balance after entry 41 (the checkpoint's last), from the
    entries' own bytes."""
    out = {}
    for c in ("XBTUSDTM", "XBTUSDM"):
        rows = [e for e in ledger.store.history(c) if e["seq"] < 42 and e["kind"] == "liquidation"]
        out[c] = rows[-1]["balance"]
    return out


# --- item: balances come from the site's own verification --------------------------------


def test_an_edited_summary_table_changes_no_page(site):
    ledger, ds, _ = site
    real = at_checkpoint(ledger)
    edit(ledger.db,
         ("UPDATE contracts SET balance = '99999999.00000000', balance_usd = '99999999.00', "
          "credited = '99999999.00000000'", ()))
    home = get(ds, "/").text
    assert "99,999,999" not in home and "99999999" not in home
    for sym, bal in real.items():
        assert f'data-balance="{bal}"' in home
    funds = get(ds, "/funds.json").json()
    assert {c["contract"]: c["balance"] for c in funds["contracts"]} == real
    assert all("99999999" not in (c["balance_usd"] or "") for c in funds["contracts"])
    assert "99999999" not in (funds["total_usd"] or "")
    page = get(ds, "/contract/XBTUSDTM").text
    assert "99,999,999" not in page and present.amount(real["XBTUSDTM"]) in page
    assert get(ds, "/contract/XBTUSDTM.json").json()["contract"]["balance"] == real["XBTUSDTM"]
    assert get(ds, "/verify").text.count('data-balance="99999999') == 0
    # Datasette's own table page says what the table is
    table = get(ds, "/ledger/contracts").text
    assert "UNVERIFIED CONVENIENCE COPY" in table
    assert "UNVERIFIED CONVENIENCE COPIES" in get(ds, "/ledger/entries").text
    assert "unverified convenience copy" in get(ds, "/ledger/fund_balances").text


def test_usd_values_come_from_the_verified_prices(site):
    ledger, ds, _ = site
    funds = {c["contract"]: c for c in get(ds, "/funds.json").json()["contracts"]}
    edit(ledger.db, ("UPDATE contracts SET last_price = '1000000', balance_usd = '1.00'", ()),
         ("UPDATE entries SET fill_price = '1000000', mark_price = '1000000'", ()))
    again = {c["contract"]: c for c in get(ds, "/funds.json").json()["contracts"]}
    assert again == funds
    # the coin-settled fund at its last verified liquidation's price (fill 39100), rounded down to the cent
    coin = funds["XBTUSDM"]
    assert coin["last_price"] == "39100"
    cents = int(coin["balance"].replace(".", "")) * 39100 * 100 // 10**8
    assert coin["balance_usd"] == f"{cents // 100}.{cents % 100:02d}"
    assert "$" + present.amount(coin["balance_usd"]) in get(ds, "/").text


def test_newer_entries_are_marked_not_yet_verified(site):
    ledger, ds, truth = site
    d = get(ds, "/funds.json").json()
    assert d["verified"] == {**d["verified"], "status": "verified", "tree_size": 42, "entries_not_yet_verified": 2}
    # the balance is the one at the checkpoint, not the current one
    assert d["contracts"][1]["contract"] == "XBTUSDTM"
    assert d["contracts"][1]["balance"] == at_checkpoint(ledger)["XBTUSDTM"] != truth["XBTUSDTM"]["balance"]
    html = get(ds, "/contract/XBTUSDTM").text
    assert html.count('data-check="unverified"') == 2
    assert "not yet verified" in html
    assert 'data-check="verified"' in html
    e = get(ds, "/entry/43").text
    assert 'data-check="unverified"' in e and "Not yet verified" in e
    assert 'data-check="verified"' in get(ds, "/entry/41").text
    feed = get(ds, "/feed.atom").text
    assert "/entry/43<" not in feed and "/entry/42<" not in feed and "/entry/41<" in feed
    # once a checkpoint covers them and the site verified it, they count
    ledger.checkpoint()
    wait_verified(ds)
    d = get(ds, "/funds.json").json()
    assert d["verified"]["tree_size"] == 44 and d["verified"]["entries_not_yet_verified"] == 0
    assert {c["contract"]: c for c in d["contracts"]} == truth
    assert 'data-check="unverified"' not in get(ds, "/contract/XBTUSDTM").text


def test_edited_derived_columns_are_not_shown_as_verified(site):
    ledger, ds, _ = site
    seq = max(e["seq"] for e in ledger.store.history("XBTUSDTM") if e["seq"] < 42)
    signed = ledger.store.history("XBTUSDTM")
    want = next(e for e in signed if e["seq"] == seq)
    edit(ledger.db, ("UPDATE entries SET balance = '777777.00000000', delta = '777777.00000000' WHERE seq = ?",
                     (seq,)))
    rows = get(ds, "/contract/XBTUSDTM.json").json()["entries"]
    row = next(r for r in rows if r["seq"] == seq)
    assert row["balance"] == want["balance"] and row["delta"] == want["delta"] and row["check"] == "verified"
    assert "777,777" not in get(ds, "/contract/XBTUSDTM").text
    assert "777,777" not in get(ds, f"/entry/{seq}").text
    assert "777777" not in get(ds, "/feed.atom").text


def test_an_entry_whose_bytes_were_changed_is_marked(site):
    ledger, ds, _ = site
    data = ledger.store.entry(20)
    bad = data.replace(b'"qty":"', b'"qty":"9', 1)
    edit(ledger.db, ("UPDATE entries SET data = ? WHERE seq = 20", (bad,)))
    e = get(ds, "/entry/20")
    assert 'data-check="mismatch"' in e.text and "Does not match the signed log" in e.text
    assert get(ds, "/entry/20.json").json()["check"] == "mismatch"
    contract = get(ds, "/contract/XBTUSDM.json").json()
    assert next(r for r in contract["entries"] if r["seq"] == 20)["check"] == "mismatch"
    assert "/entry/20<" not in get(ds, "/feed.atom").text
    # an entry of another position copied over it: its seq gives it away
    edit(ledger.db, ("UPDATE entries SET data = ? WHERE seq = 22", (ledger.store.entry(24),)))
    assert get(ds, "/entry/22.json").json()["check"] == "mismatch"


def test_nothing_is_shown_before_the_first_verification(ledger, monkeypatch):
    from publish import verified

    build(ledger)
    release = threading.Event()
    real = verified.SiteVerifier._run_child

    def slow(self):
        release.wait(30)
        return real(self)

    monkeypatch.setattr(verified.SiteVerifier, "_run_child", slow)
    ds = make_datasette(ledger.db)
    try:
        home = get(ds, "/").text
        assert 'data-status="pending"' in home and "Not yet verified" in home
        assert "data-balance=" not in home and "$" not in home
        d = get(ds, "/funds.json").json()
        assert d["verified"]["status"] == "pending" and d["contracts"] == [] and d["total_usd"] is None
        page = get(ds, "/contract/XBTUSDTM").text
        assert "This fund holds" not in page and "Not yet verified" in page
        assert get(ds, "/contract/XBTUSDTM.json").json()["contract"] is None
        assert "data-balance=" not in get(ds, "/verify").text
        assert "<entry>" not in get(ds, "/feed.atom").text
    finally:
        release.set()
    assert wait_verified(ds).status == "verified"
    assert "data-balance=" in get(ds, "/").text
    ds._fundledger.verifier.stop()


def test_a_failed_verification_is_loud_and_shows_no_balance(ledger):
    build(ledger)
    data = ledger.store.entry(20)
    edit(ledger.db, ("UPDATE entries SET data = ? WHERE seq = 20", (data.replace(b'"qty":"', b'"qty":"9', 1),)))
    ds = make_datasette(ledger.db)
    snap = wait_verified(ds)
    home = get(ds, "/").text
    assert "Verification FAILED" in home and 'data-status="failed"' in home and "entry #20" in home
    assert "data-balance=" not in home and "$" not in home
    d = get(ds, "/funds.json").json()
    assert d["verified"]["status"] == "failed" and d["verified"]["failed_seq"] == 20
    assert d["contracts"] == [] and d["total_usd"] is None
    page = get(ds, "/contract/XBTUSDTM").text
    assert "Verification FAILED" in page and "This fund holds" not in page
    assert "data-balance=" not in get(ds, "/verify").text
    assert "<entry>" not in get(ds, "/feed.atom").text
    assert get(ds, "/entry/5.json").json()["check"] == "unverified"
    assert snap.status == "failed" and snap.failed_seq == 20
    ds._fundledger.verifier.stop()


def test_a_failure_after_a_good_round_withdraws_the_balances(site):
    """A new checkpoint whose signature is not the log key's: the next
    round fails, and the balances shown before are withdrawn."""
    ledger, ds, _ = site
    assert get(ds, "/funds.json").json()["contracts"]
    other = note.generate_signer(ledger.store.origin)
    ledger.store.add_checkpoint([ledger.signer])
    cid, size, root, time, signed = ledger.store.latest_checkpoint()
    text, _ = note.split_note(bytes(signed))
    edit(ledger.db, ("UPDATE checkpoints SET note = ? WHERE id = ?", (note.sign_note(text, [other]), cid)))
    snap = wait_verified(ds)
    d = get(ds, "/funds.json").json()
    assert d["verified"]["status"] == "failed" and d["contracts"] == []
    assert "Verification FAILED" in get(ds, "/").text
    assert snap.status == "failed"


# --- item: cosignatures ------------------------------------------------------------------------


def _witness(tmp_path, ledger, name="witness.example"):
    w = witness.init_witness(str(tmp_path / f"{name}.key"), str(tmp_path / f"{name}.db"), name)
    witness.add_log(str(tmp_path / f"{name}.db"), ledger.store.vkey)
    line = witness.add_checkpoint(str(tmp_path / f"{name}.key"), str(tmp_path / f"{name}.db"),
                                  api.consistency(ledger.store, old_size=0))
    return w, line


def _forge_cosignature(ledger, name: str) -> None:
    """A cosignature row of random bytes, written straight into the table."""
    cid = ledger.store.latest_checkpoint()[0]
    sig = os.urandom(76)
    line = f"\u2014 {name} {base64.b64encode(sig).decode()}\n".encode()
    edit(ledger.db, ("INSERT INTO cosignatures (checkpoint_id, name, key_id, timestamp, line) VALUES (?, ?, ?, ?, ?)",
                     (cid, name, sig[:4].hex(), 1, line)))


def test_a_random_cosignature_row_is_not_called_a_cosignature(site):
    ledger, ds, _ = site
    _forge_cosignature(ledger, "witness.example")
    home = get(ds, "/").text
    assert "no verified cosignature" in home
    assert "independent witnesses" not in home
    assert 'id="unverified-cosignatures"' in home and "<code>witness.example</code>" in home
    sigs = get(ds, "/funds.json").json()["checkpoint"]["signatures"]
    assert [s["role"] for s in sigs] == ["log", "unverified"] and sigs[1]["verified"] is False
    assert [s["role"] for s in get(ds, "/checkpoint.json").json()["signatures"]] == ["log", "unverified"]


def test_cosignatures_verified_against_the_given_witness_keys(ledger, tmp_path):
    build(ledger)
    w, line = _witness(tmp_path, ledger)
    api.attach_cosignatures(ledger.store, line, [w.verifier()])
    _forge_cosignature(ledger, "other.example")
    # without the key: a claim, not a cosignature
    ds = make_datasette(ledger.db)
    wait_verified(ds)
    roles = {s["name"]: s["role"] for s in get(ds, "/funds.json").json()["checkpoint"]["signatures"]}
    assert roles["witness.example"] == "unverified" and roles["other.example"] == "unverified"
    ds._fundledger.verifier.stop()
    # with it: the genuine one is verified, the forged one stays a claim
    ds = make_datasette(ledger.db, witnesses=[w.verifier().vkey()])
    wait_verified(ds)
    sigs = get(ds, "/funds.json").json()["checkpoint"]["signatures"]
    roles = {s["name"]: (s["role"], s["verified"]) for s in sigs}
    assert roles["witness.example"] == ("witness", True) and roles["other.example"] == ("unverified", False)
    home = get(ds, "/").text
    assert "witnesses whose cosignatures this site checked" in home
    # a forged row under the trusted witness's own name is not one either
    _forge_cosignature(ledger, "witness.example")
    sigs = get(ds, "/funds.json").json()["checkpoint"]["signatures"]
    assert sorted((s["name"], s["role"]) for s in sigs if s["name"] == "witness.example") == [
        ("witness.example", "unverified"), ("witness.example", "witness")]
    ds._fundledger.verifier.stop()


def test_serve_refuses_a_bad_witness_key(ledger):
    ledger.contract()
    r = ledger.cli("serve", "--witness", "not-a-key")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "key" in r.output
    log_key = ledger.store.vkey  # an Ed25519 key is not a cosignature key
    r = ledger.cli("serve", "--witness", log_key)
    assert r.exit_code == 2 and "cosignature" in r.output


# --- item: no path, no cookie, a CSP everywhere ---------------------------------------------


def test_no_database_path_is_published(site):
    ledger, ds, _ = site
    path = os.path.abspath(ledger.db)
    for url in ("/-/databases.json", "/-/databases", "/ledger.json", "/-/metadata.json", "/-/settings.json",
                "/-/versions.json", "/-/plugins.json", "/ledger", "/.json"):
        r = get(ds, url)
        assert path not in r.text and str(ledger.dir) not in r.text, url
    assert [d["name"] for d in get(ds, "/-/databases.json").json()] == ["ledger"]


def test_no_cookie_is_ever_set(site):
    _, ds, _ = site
    for url in ("/-/messages", "/-/messages.json", "/", "/ledger", "/ledger/entries", "/ledger/contracts",
                "/ledger/fund_history?contract=XBTUSDTM&before=", "/-/allow-debug", "/-/permissions", "/-/actor",
                "/-/create-token", "/-/logout", "/verify", "/funds.json"):
        r = get(ds, url)
        assert "set-cookie" not in r.headers, url
    assert get(ds, "/-/messages").status_code == 404


def test_datasette_pages_send_a_csp(site):
    _, ds, _ = site
    for url in ("/ledger", "/ledger/entries", "/ledger/contracts", "/ledger/entries/3", "/-/versions",
                "/ledger/fund_balances", "/-/settings", "/-/databases", "/nope-not-here"):
        r = get(ds, url)
        if r.headers.get("content-type", "").startswith("text/html"):
            csp = r.headers.get("content-security-policy", "")
            assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, url
    assert get(ds, "/ledger/entries").headers["content-type"].startswith("text/html")
    # the site's own pages keep their stricter policy
    assert "style-src 'self';" in get(ds, "/").headers["content-security-policy"]
