"""The log's optional ML-DSA-44 key (`fundledger key add-mldsa`): every
later checkpoint carries its tlog-cosignature v1.1 line beside the Ed25519
signature, and readers who pinned its public key check it like a witness's,
in verify, check-receipt and a policy."""

from __future__ import annotations

from ledger.format import note
from publish.export import export


def liq(i):
    return {"kind": "liquidation", "contract": "XBTUSDTM", "id": f"L-{i}", "side": "long", "qty": "1",
            "bankruptcy_price": "39000", "fill_price": "39010"}


def test_checkpoints_carry_the_logs_ml_dsa_signature(ledger2, tmp_path):
    ledger2.contract()
    ledger2.append(*[liq(i) for i in range(5)])
    r = ledger2.cli("key", "add-mldsa")
    assert r.exit_code == 0, r.output
    pq_vkey = ledger2.key + ".mldsa.vkey"
    v = note.parse_vkey(open(pq_vkey).read().strip())
    assert (v.alg, v.name) == (note.ALG_MLDSA44, ledger2.store.origin)
    assert ledger2.cli("checkpoint").exit_code == 0
    published = ledger2.store.published_checkpoint()
    text, sigs = note.split_note(published)
    (line,) = [s for s in sigs if s.key_id == v.key_id]
    note.verify_cosignature(text, line, v)
    out = tmp_path / "out"
    export(ledger2.store, str(out))
    for source in (str(out), ledger2.db):
        r = ledger2.cli("verify", source, "--witness", pq_vkey, "--json")
        assert r.exit_code == 0, r.output
    other = tmp_path / "other.vkey"
    other.write_text(note.generate_signer(ledger2.store.origin, note.ALG_MLDSA44).verifier().vkey() + "\n")
    r = ledger2.cli("verify", str(out), "--witness", str(other))
    assert r.exit_code == 1, r.output  # a key not pinned: its signature is not there
    assert ledger2.cli("prove", "3", "--out", str(tmp_path / "r.proof")).exit_code == 0
    vkey = tmp_path / "fund.vkey"
    vkey.write_text(ledger2.store.vkey + "\n")
    r = ledger2.cli("check-receipt", str(tmp_path / "r.proof"), "--vkey", str(vkey), "--witness", pq_vkey)
    assert r.exit_code == 0 and f"cosigned by {ledger2.store.origin}" in r.output, r.output
    policy = tmp_path / "p.policy"
    policy.write_text(f"log {ledger2.store.vkey}\nwitness pq {v.vkey()}\nquorum pq\n")
    assert ledger2.cli("verify", str(out), "--policy", str(policy)).exit_code == 0


def test_a_tampered_ml_dsa_line_fails(ledger2, tmp_path):
    import sqlite3

    ledger2.contract()
    assert ledger2.cli("key", "add-mldsa").exit_code == 0
    assert ledger2.cli("checkpoint").exit_code == 0
    conn = sqlite3.connect(ledger2.db)
    (line,) = conn.execute("SELECT line FROM cosignatures").fetchone()
    body = bytearray(line)
    body[-10] = ord("A") if body[-10] != ord("A") else ord("B")
    conn.execute("UPDATE cosignatures SET line = ?", (bytes(body),))
    conn.commit()
    out = tmp_path / "out"
    export(ledger2.store, str(out))
    r = ledger2.cli("verify", str(out), "--witness", ledger2.key + ".mldsa.vkey")
    assert r.exit_code == 1, r.output


def test_add_mldsa_never_overwrites(ledger2):
    assert ledger2.cli("key", "add-mldsa").exit_code == 0
    r = ledger2.cli("key", "add-mldsa")
    assert r.exit_code == 2 and "exists" in r.output
