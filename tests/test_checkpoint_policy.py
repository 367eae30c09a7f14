"""`fundledger checkpoint --policy FILE`: the log asks the witnesses of a
c2sp.org/tlog-policy file over HTTP (real `fundledger witness serve`
processes on loopback) and publishes the checkpoint only once their
cosignatures meet the quorum; until then it is pending, its tiles served
and its checkpoint not. Re-proving on a 409, witnesses that are down, slow,
lying or refusing, and an idle log cosigned again."""

from __future__ import annotations

import json
import socket
import sqlite3

import pytest
from test_witness_http import Server

from ledger.format import note
from ledger.ops import witness
from ledger.errors import StoreError
from publish import tlog


def liq(i):
    return {"kind": "liquidation", "contract": "XBTUSDTM", "id": f"L-{i}", "side": "long", "qty": "1",
            "bankruptcy_price": "39000", "fill_price": "39010" if i % 3 else "38990"}


@pytest.fixture
def fleet(ledger2, tmp_path):
    """The format-2 ledger with a fund, and three witnesses of it, each
    with its own key and state, none started."""
    ledger2.contract()
    ledger2.append(*[liq(i) for i in range(20)])
    ws = {}
    for name in ("w1", "w2", "w3"):
        d = tmp_path / name
        d.mkdir()
        signer = witness.init_witness(str(d / "w.key"), str(d / "w.db"), f"{name}.example")
        witness.add_log(str(d / "w.db"), ledger2.store.vkey)
        ws[name] = {"dir": d, "vkey": signer.verifier().vkey(), "server": None}
    ledger2.ws = ws
    yield ledger2
    for w in ws.values():
        if w["server"] is not None:
            w["server"].kill()


def start(lg, name):
    w = lg.ws[name]
    w["server"] = Server(str(w["dir"] / "w.key"), str(w["dir"] / "w.db"))
    return w["server"].url


def stop(lg, name):
    lg.ws[name]["server"].stop()
    lg.ws[name]["server"] = None


def write_policy(lg, urls: dict[str, str], quorum="2", vkeys: dict[str, str] | None = None) -> str:
    lines = [f"log {lg.store.vkey}"]
    for name, w in lg.ws.items():
        lines.append(f"witness {name} {(vkeys or {}).get(name, w['vkey'])} {urls.get(name, 'http://127.0.0.1:9/')}")
    lines += [f"group g {quorum} w1 w2 w3", "quorum g"]
    path = lg.dir / "witnesses.policy"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def published_size(lg) -> int:
    row = sqlite3.connect(lg.db).execute("SELECT MAX(tree_size) FROM checkpoints").fetchone()
    return row[0] or 0


def cosigners(lg) -> set[str]:
    return {s.name for s in note.split_note(lg.store.published_checkpoint())[1]} - {lg.store.origin}


def test_the_quorum_met_publishes_with_the_cosignatures(fleet):
    urls = {n: start(fleet, n) for n in ("w1", "w2", "w3")}
    policy = write_policy(fleet, urls)
    out = fleet.dir / "out"
    r = fleet.cli("checkpoint", "--policy", policy, "--export", str(out))
    assert r.exit_code == 0, r.output
    size = fleet.store.size()
    assert f"checkpoint at size {size} published with 3 cosignatures" in r.output
    assert published_size(fleet) == size and cosigners(fleet) == {"w1.example", "w2.example", "w3.example"}
    assert (out / "checkpoint").read_bytes() == fleet.store.published_checkpoint()
    v = fleet.cli("verify", str(out), "--policy", policy)
    assert v.exit_code == 0, v.output

    fleet.append(*[liq(i) for i in range(20, 30)])
    r = fleet.cli("checkpoint", "--policy", policy, "--export", str(out))
    assert r.exit_code == 0, r.output
    assert r.output.count(f"cosigned (proved from size {size})") == 3  # each from the size it holds
    assert published_size(fleet) == fleet.store.size() > size
    assert fleet.cli("verify", str(out), "--policy", policy).exit_code == 0


def test_below_the_quorum_the_checkpoint_stays_pending(fleet):
    urls = {"w1": start(fleet, "w1")}
    policy = write_policy(fleet, urls)
    out = fleet.dir / "out"
    before = published_size(fleet)
    r = fleet.cli("checkpoint", "--policy", policy, "--export", str(out))
    assert r.exit_code == 1, r.output
    assert "w1: cosigned" in r.output and "w2: ConnectError" in r.output and "w3: ConnectError" in r.output
    assert "the policy's quorum is not met: g (1 of 3 witnessed, 2 needed)" in r.output
    assert "Traceback" not in r.output
    size = fleet.store.size()
    assert published_size(fleet) == before == 0  # nothing published
    assert not (out / "checkpoint").exists()  # the export holds the tiles, not the checkpoint
    assert (out / "tile/0/000.p" / str(size)).exists() and (out / "tile/entries/000.p" / str(size)).exists()
    conn = sqlite3.connect(fleet.db)
    assert (tlog.checkpoint_size(conn), tlog.tiles_size(conn)) == (0, size)  # the site serves its tiles
    assert fleet.store.pending_checkpoint() is not None

    urls.update(w2=start(fleet, "w2"), w3=start(fleet, "w3"))
    policy = write_policy(fleet, urls)
    r = fleet.cli("checkpoint", "--policy", policy, "--export", str(out))
    assert r.exit_code == 0, r.output
    # w1 cosigned the pending checkpoint: the log believed it at 0, its 409 said `size`
    assert f"w1: cosigned (proved from size {size})" in r.output
    assert published_size(fleet) == size and fleet.store.pending_checkpoint() is None
    assert fleet.cli("verify", str(out), "--policy", policy).exit_code == 0


def test_a_witness_that_lies_or_stalls_is_not_counted(fleet):
    urls = {n: start(fleet, n) for n in ("w1", "w2")}
    stall = socket.socket()
    stall.bind(("127.0.0.1", 0))
    stall.listen(1)  # accepts the connection, never answers
    urls["w3"] = f"http://127.0.0.1:{stall.getsockname()[1]}/"
    other = witness.init_witness(str(fleet.dir / "o.key"), str(fleet.dir / "o.db"), "w2.example")
    try:
        # w2's line names a key w2 does not hold (same name, another key): its cosignature is not w2's
        policy = write_policy(fleet, urls, vkeys={"w2": other.verifier().vkey()})
        r = fleet.cli("checkpoint", "--policy", policy, "--timeout", "0.5")
    finally:
        stall.close()
    assert r.exit_code == 1, r.output
    assert "w1: cosigned" in r.output
    assert "w2: ValueError: the reply holds 0 cosignatures by this witness's key, not 1" in r.output
    assert "w3: ReadTimeout" in r.output
    assert published_size(fleet) == 0


def test_a_refusing_witness_says_why(fleet):
    witness_db = fleet.ws["w3"]["dir"] / "w.db"
    conn = sqlite3.connect(witness_db)
    conn.execute("DELETE FROM log")  # w3 does not know the log
    conn.commit()
    conn.close()
    urls = {n: start(fleet, n) for n in ("w1", "w2", "w3")}
    policy = write_policy(fleet, urls, quorum="3")
    r = fleet.cli("checkpoint", "--policy", policy)
    assert r.exit_code == 1, r.output
    assert "w3: HTTP 404: unknown log" in r.output
    assert "g (2 of 3 witnessed, 3 needed)" in r.output


def test_an_idle_log_is_cosigned_again(fleet):
    urls = {n: start(fleet, n) for n in ("w1", "w2", "w3")}
    policy = write_policy(fleet, urls)
    assert fleet.cli("checkpoint", "--policy", policy).exit_code == 0
    size, first = published_size(fleet), fleet.store.published_checkpoint()
    r = fleet.cli("checkpoint", "--policy", policy)
    assert r.exit_code == 0, r.output
    assert f"checkpoint at size {size} cosigned again with 3 cosignatures" in r.output
    assert published_size(fleet) == size and fleet.store.size() == size  # no entry, no new checkpoint
    assert note.split_note(fleet.store.published_checkpoint())[0] == note.split_note(first)[0]
    conn = sqlite3.connect(fleet.db)
    assert conn.execute("SELECT COUNT(*) FROM cosignatures").fetchone()[0] == 3  # replaced, not added


def test_a_policy_that_does_not_name_the_log_is_bad_input(fleet, tmp_path):
    other = tmp_path / "other.policy"
    w = fleet.ws["w1"]
    log = note.generate_signer("example.com/other", note.ALG_ED25519).verifier().vkey()
    other.write_text(f"log {log}\nwitness w1 {w['vkey']} http://127.0.0.1:9/\nquorum w1\n")
    r = fleet.cli("checkpoint", "--policy", str(other))
    assert r.exit_code == 2 and "the policy does not name this log's key" in r.output, r.output
    assert fleet.store.pending_checkpoint() is None


def test_publishing_is_checked_right_before_writing(fleet):
    """A pending checkpoint overtaken by a plain `fundledger checkpoint`
    cannot be published over it; nor can a note that is not the pending one."""
    size, pending, new = fleet.store.add_checkpoint([fleet.signer], publish=False)
    assert new and fleet.store.pending_checkpoint() == pending and published_size(fleet) == 0
    fleet.append(liq(99))
    fleet.checkpoint()
    assert fleet.store.pending_checkpoint() is None  # overtaken: dropped
    with pytest.raises(StoreError, match="not the pending one"):
        fleet.store.publish_checkpoint(pending, [])
    fleet.append(liq(100))
    _, pending, _ = fleet.store.add_checkpoint([fleet.signer], publish=False)
    fleet.store.publish_checkpoint(pending, [])
    assert published_size(fleet) == fleet.store.size()
    with pytest.raises(StoreError, match="not the pending one"):
        fleet.store.publish_checkpoint(pending, [])


def test_check_receipt_holds_a_receipt_to_the_policy(fleet):
    urls = {n: start(fleet, n) for n in ("w1", "w2")}
    policy = write_policy(fleet, urls)  # w3 is down: 2 of 3 cosign, the quorum of 2 is met
    assert fleet.cli("checkpoint", "--policy", policy).exit_code == 0
    receipt = fleet.dir / "r.proof"
    assert fleet.cli("prove", "5", "--out", str(receipt)).exit_code == 0
    vkey = fleet.dir / "fund.vkey"
    vkey.write_text(fleet.store.vkey + "\n")
    r = fleet.cli("check-receipt", str(receipt), "--vkey", str(vkey), "--policy", policy)
    assert r.exit_code == 0, r.output
    assert "cosigned by w1.example, w2.example" in r.output
    r = fleet.cli("check-receipt", str(receipt), "--vkey", str(vkey), "--policy", write_policy(fleet, urls, "3"))
    assert r.exit_code == 1 and "does not meet the policy's quorum: g (2 of 3 witnessed, 3 needed)" in r.output


def test_the_site_shows_each_cosigner_and_when(fleet):
    import asyncio

    from publish.site import make_datasette, wait_verified

    urls = {n: start(fleet, n) for n in ("w1", "w2", "w3")}
    assert fleet.cli("checkpoint", "--policy", write_policy(fleet, urls)).exit_code == 0
    ds = make_datasette(fleet.db, witnesses=[fleet.ws[n]["vkey"] for n in ("w1", "w2")])
    wait_verified(ds)

    async def get():
        return (await ds.client.get("/funds.json")).json(), (await ds.client.get("/")).text

    data, html = asyncio.run(get())
    sigs = {s["name"]: s for s in data["checkpoint"]["signatures"]}
    stored = dict(sqlite3.connect(fleet.db).execute("SELECT name, timestamp FROM cosignatures"))
    for n in ("w1", "w2"):  # checked against the keys the site was given, with the signed time
        s = sigs[f"{n}.example"]
        assert s["verified"] and s["role"] == "witness"
        from datetime import datetime, timezone
        assert s["cosigned_at"] == datetime.fromtimestamp(stored[f"{n}.example"], timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        assert f'<code>{n}.example</code> <span class="sub">(Ed25519, cosigned <time datetime="{s["cosigned_at"]}">' in html
    assert sigs["w3.example"]["role"] == "unverified" and sigs["w3.example"]["cosigned_at"] is None


def test_an_auditing_witness_cosigns_from_the_pending_tiles(ledger2, tmp_path):
    """The order Tessera keeps, end to end: `checkpoint --policy --export`
    writes the new tiles first, the auditing witness replays them (from the
    export, without its checkpoint) and cosigns, then the checkpoint is
    published."""
    ledger2.contract()
    ledger2.append(*[liq(i) for i in range(30)])
    out = tmp_path / "site"
    out.mkdir()
    d = tmp_path / "auditor"
    d.mkdir()
    signer = witness.init_witness(str(d / "w.key"), str(d / "w.db"), "auditor.example", audit=True)
    witness.add_log(str(d / "w.db"), ledger2.store.vkey, str(out))
    server = Server(str(d / "w.key"), str(d / "w.db"))
    try:
        policy = tmp_path / "p.policy"
        policy.write_text(f"log {ledger2.store.vkey}\n#fundledger-audit/v1 a\n"
                          f"witness a {signer.verifier().vkey()} {server.url}\nquorum a\n")
        for more in (0, 40):
            ledger2.append(*[liq(i) for i in range(100 + more, 100 + 2 * more)])
            r = ledger2.cli("checkpoint", "--policy", str(policy), "--export", str(out))
            assert r.exit_code == 0, r.output
            assert "a: cosigned" in r.output
        assert (out / "checkpoint").read_bytes() == ledger2.store.published_checkpoint()
        assert ledger2.cli("verify", str(out), "--policy", str(policy)).exit_code == 0
    finally:
        server.kill()
    import asyncio

    from publish.site import make_datasette, wait_verified

    async def pages(ds):
        return [(await ds.client.get(p)).text for p in ("/", "/contract/XBTUSDTM", "/funds.json")]

    told = make_datasette(ledger2.db, auditors=[signer.verifier().vkey()])
    wait_verified(told)
    home, contract, data = asyncio.run(pages(told))
    assert "audits: it replays every fund rule before it cosigns" in home
    assert "The latest checkpoint is cosigned by <code>auditor.example</code>, an auditing witness" in contract
    (a,) = [s for s in json.loads(data)["checkpoint"]["signatures"] if s["name"] == "auditor.example"]
    assert a["audits"] and a["verified"]
    plain = make_datasette(ledger2.db, witnesses=[signer.verifier().vkey()])  # the same key, not said to audit
    wait_verified(plain)
    home, contract, _ = asyncio.run(pages(plain))
    assert "audits:" not in home and "No auditing witness this site knows of cosigned" in contract
