"""An ML-DSA-44 witness (`fundledger witness init --algorithm ml-dsa-44`):
its key file, its cosignatures from the file commands and from `witness
serve`, and every command that checks cosignatures taking its vkey
(`verify --witness`, `verify --policy`, the light check, `check-receipt`,
`attach-cosignatures`), beside an Ed25519 witness."""

from __future__ import annotations

import base64
import json
import os
import stat
from urllib.parse import quote

import httpx
import pytest
from conftest import run_fundledger
from test_witness_http import Server, submit

from ledger.errors import FormatError
from ledger.format import mldsa, note
from ledger.format.policy import parse_policy
from ledger.ops import api, witness
from publish.export import export


def liq(i):
    return {"kind": "liquidation", "contract": "XBTUSDTM", "id": f"L-{i}", "side": "long", "qty": "1",
            "bankruptcy_price": "39000", "fill_price": "39010"}


def test_init_makes_an_ml_dsa_key_and_ed25519_stays_the_default(tmp_path):
    r = run_fundledger("witness", "init", "pq.witness.example", "--algorithm", "ml-dsa-44", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(tmp_path / "witness.key").st_mode) == 0o600
    skey = (tmp_path / "witness.key").read_text()
    signer = note.parse_skey(skey)
    assert signer.alg == note.ALG_MLDSA44 and skey == signer.skey() + "\n"
    raw = base64.b64decode(skey.rstrip("\n").split("+", 4)[4])
    assert raw[0] == 0x06 and len(raw) == 1 + 32  # the type byte, then the 32-byte seed
    vkey = (tmp_path / "witness.vkey").read_text()
    assert note.parse_vkey(vkey) == signer.verifier() and len(signer.verifier().public_key) == 1312
    assert f"witness key: {vkey.strip()}" in r.stdout.decode()
    d = tmp_path / "ed"
    d.mkdir()
    assert run_fundledger("witness", "init", "ed.witness.example", cwd=d).returncode == 0
    assert note.parse_skey((d / "witness.key").read_text()).alg == note.ALG_COSIGNATURE_V1
    bad = tmp_path / "bad"
    bad.mkdir()
    r = run_fundledger("witness", "init", "w.example", "--algorithm", "ml-dsa-65", cwd=bad)
    assert r.returncode == 2 and not (bad / "witness.key").exists()
    r = run_fundledger("witness", "init", "w" * 256, "--algorithm", "ml-dsa-44", cwd=bad)
    assert r.returncode == 2 and r.stderr.decode().count("\n") == 1 and b"255" in r.stderr
    assert not (bad / "witness.key").exists()


@pytest.fixture
def two_witnesses(ledger2, tmp_path):
    """A format-2 log at a checkpoint, an ML-DSA-44 and an Ed25519 witness of it."""
    ledger2.contract()
    ledger2.append(*[liq(i) for i in range(8)])
    ledger2.checkpoint()
    out = {}
    for name, alg in (("pq", note.ALG_MLDSA44), ("ed", note.ALG_COSIGNATURE_V1)):
        key, state = str(tmp_path / f"{name}.key"), str(tmp_path / f"{name}.db")
        v = witness.init_witness(key, state, f"{name}.witness.example", str(tmp_path / f"{name}.vkey"), alg)
        witness.add_log(state, ledger2.store.vkey)
        out[name] = (key, state, v.verifier())
    return ledger2, out


def test_the_file_commands_cosign_and_every_checker_takes_the_key(two_witnesses, tmp_path):
    ledger, w = two_witnesses
    req = tmp_path / "req"
    req.write_bytes(api.consistency(ledger.store, old_size=0))
    for name in ("pq", "ed"):
        key, state, v = w[name]
        r = ledger.cli("witness", "add-checkpoint", str(req), "--key", key, "--state", state,
                       "--out", str(tmp_path / f"{name}.reply"))
        assert r.exit_code == 0, r.output
    line = (tmp_path / "pq.reply").read_bytes()
    assert len(line) == note.sig_line_length("pq.witness.example", mldsa.COSIGNATURE_SIZE)
    # a changed byte in the ML-DSA signature is refused by attach-cosignatures (exit 1)
    head, _, b64 = line.rstrip(b"\n").rpartition(b" ")
    raw = bytearray(base64.b64decode(b64))
    raw[500] ^= 1
    (tmp_path / "bad.reply").write_bytes(head + b" " + base64.b64encode(bytes(raw)) + b"\n")
    r = ledger.cli("attach-cosignatures", str(tmp_path / "bad.reply"), "--witness", str(tmp_path / "pq.vkey"))
    assert r.exit_code == 1, r.output
    for name in ("pq", "ed"):
        r = ledger.cli("attach-cosignatures", str(tmp_path / f"{name}.reply"), "--witness", str(tmp_path / f"{name}.vkey"))
        assert r.exit_code == 0 and f"{name}.witness.example" in r.output, r.output
    both = ["--witness", str(tmp_path / "pq.vkey"), "--witness", str(tmp_path / "ed.vkey")]
    r = ledger.cli("verify", *both, "--json")
    assert r.exit_code == 0, r.output
    assert sorted(json.loads(r.output)["cosignatures"]) == ["ed.witness.example", "pq.witness.example"]
    # a silent ML-DSA witness: all required fails, a quorum of 2 of 3 passes
    silent = note.generate_signer("silent.example", note.ALG_MLDSA44).verifier().vkey()
    assert ledger.cli("verify", *both, "--witness", silent).exit_code == 1
    assert ledger.cli("verify", *both, "--witness", silent, "--quorum", "2").exit_code == 0
    # check-receipt, and the light check and a policy on the export
    prove = ledger.cli("prove", "3", "--out", str(tmp_path / "r.proof"))
    assert prove.exit_code == 0, prove.output
    r = ledger.cli("check-receipt", str(tmp_path / "r.proof"), "--vkey", ledger.store.vkey, *both)
    assert r.exit_code == 0 and "pq.witness.example" in r.output, r.output
    out = str(tmp_path / "out")
    export(ledger.store, out)
    r = run_fundledger("verify", out, "--contract", "XBTUSDTM", "--witness", str(tmp_path / "pq.vkey"))
    assert r.returncode == 0 and b"pq.witness.example" in r.stdout, r.stderr
    policy = tmp_path / "policy.txt"
    policy.write_text(f"log {ledger.store.vkey}\nwitness PQ {w['pq'][2].vkey()}\nwitness ED {w['ed'][2].vkey()}\n"
                      f"witness S {silent}\ngroup g 2 PQ ED S\nquorum g\n")
    r = run_fundledger("verify", out, "--policy", str(policy), "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(json.loads(r.stdout)["cosignatures"]) == ["ed.witness.example", "pq.witness.example"]
    policy.write_text(f"witness PQ {w['pq'][2].vkey()}\nwitness S {silent}\ngroup g all PQ S\nquorum g\n")
    r = run_fundledger("verify", out, "--policy", str(policy))
    assert r.returncode == 1 and b"g (1 of 2 witnessed, 2 needed)" in r.stderr


def test_a_policy_takes_ml_dsa_witness_keys_and_no_ml_dsa_log_key():
    pq = note.generate_signer("pq.example", note.ALG_MLDSA44).verifier()
    ed = note.generate_signer("ed.example", note.ALG_COSIGNATURE_V1).verifier()
    p = parse_policy(f"witness PQ {pq.vkey()} https://pq.example/\nwitness ED {ed.vkey()}\n"
                     "group g any PQ ED\nquorum g\n".encode())
    assert p.witnesses["PQ"].verifier == pq and p.witnesses["PQ"].url == "https://pq.example/"
    with pytest.raises(FormatError, match="not 0x01"):
        parse_policy(f"log {pq.vkey()}\nquorum none\n".encode())
    with pytest.raises(FormatError, match="not 0x04 or 0x06"):
        parse_policy(f"witness L {note.generate_signer('log.example').verifier().vkey()}\nquorum L\n".encode())
    with pytest.raises(FormatError, match="already in the policy"):  # one key under two names is one witness
        renamed = note.Verifier("other.example", note.key_id("other.example", 6, pq.public_key), pq.public_key, 6)
        parse_policy(f"witness A {pq.vkey()}\nwitness B {renamed.vkey()}\nquorum A\n".encode())


def test_serve_cosigns_with_an_ml_dsa_key(two_witnesses, tmp_path):
    ledger, w = two_witnesses
    key, state, v = w["pq"]
    s = Server(key, state, "--rate", "1000", "--burst", "1000")
    try:
        first = api.consistency(ledger.store, old_size=0)
        status, body, ctype = submit(s.url, first)
        assert (status, ctype) == (200, "text/plain; charset=utf-8"), body
        cp = ledger.store.latest_checkpoint()[4]
        text = note.split_note(cp)[0]
        assert note.verify_cosignature(text, note.parse_signature_lines(body)[0], v) > 0
        assert submit(s.url, first)[:1] == (409,)
        prev = cp
        ledger.append(*[liq(i) for i in range(8, 12)])
        ledger.checkpoint()
        status, body, _ = submit(s.url, api.consistency(ledger.store, old_checkpoint=prev))
        assert status == 200, body
        got = httpx.get(s.url + "checkpoint/" + quote(ledger.store.origin, safe=""), timeout=10)
        assert got.status_code == 200
        log_key = note.parse_vkey(ledger.store.vkey)
        assert note.open_note(got.content, [log_key, v])[1] == [log_key, v]
    finally:
        err = s.stop()
    assert "Traceback" not in err
