"""Key rotation followed everywhere: receipts carry the key history and
check-receipt refuses a checkpoint by a key outside its range; witnesses
learn a rotation from their operator and then refuse the retired key;
verify names as cosignatures only what it verified; a rotation interrupted
by a crash can be run again; a missing bundle is named as such."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat

import pytest
from click.testing import CliRunner

from ledger.ops import api
from ledger.ops import keys
from ledger.format import note
from ledger.format import consistency
from ledger.format import receipt as receipt_mod
from ledger.verify import run as verify
from ledger.ops import witness
from ledger.cli import cli
from ledger.errors import InputError, VerificationError
from ledger.store.store import Store

from conftest import ORIGIN


def liq(i, fill="39050", qty="1"):
    return {"kind": "liquidation", "contract": "XBTUSDTM", "id": f"L-{i}", "side": "long", "qty": qty,
            "bankruptcy_price": "39000", "fill_price": fill}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def rotated(ledger, tmp_path):
    """Entries 0..5 and a checkpoint at 6 by the first key; the key entry at
    seq 6; entries 7..10 and a checkpoint at 11 by the new key. A witness
    cosigned the checkpoint at 6. A copy of the database at size 7 is kept
    for forging."""
    ledger.contract()
    ledger.append(*[liq(i) for i in range(5)])
    ledger.checkpoint()
    w = witness.init_witness(str(tmp_path / "w.key"), str(tmp_path / "w.db"), "witness.example")
    witness.add_log(str(tmp_path / "w.db"), ledger.store.vkey)
    witness.add_checkpoint(str(tmp_path / "w.key"), str(tmp_path / "w.db"), api.consistency(ledger.store, old_size=0))
    seq, new = api.rotate_key(ledger.store, ledger.signer, str(tmp_path / "new.key"))
    assert seq == 6
    _copy_db(ledger.db, str(tmp_path / "at7.db"))
    ledger.store.append([liq(i) for i in range(5, 9)], [new])
    ledger.store.add_checkpoint([new])
    (tmp_path / "fund.vkey").write_text(ledger.store.vkey + "\n")
    ledger.w = w
    ledger.wkey, ledger.wstate = str(tmp_path / "w.key"), str(tmp_path / "w.db")
    return ledger, new


def _copy_db(src: str, dst: str) -> None:
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    a.backup(b)
    a.close()
    b.close()


def retired_fork(ledger, tmp_path, entries=4):
    """What the holder of the retired key can sign: the genuine log up to the
    key entry, then entries and a checkpoint signed by the retired key."""
    db = str(tmp_path / "fork.db")
    _copy_db(str(tmp_path / "at7.db"), db)
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM meta WHERE key = 'current_vkey'")
    conn.commit()
    conn.close()
    store = Store.open(db)
    store.append([liq(100 + i, fill="99000", qty="1000") for i in range(entries)], [ledger.signer])
    store.add_checkpoint([ledger.signer])
    return store


def history_without_rotation(ledger, tmp_path, size=12):
    """A log the retired key signs alone, in which no rotation ever
    happened: any size, any content."""
    store = Store.create(str(tmp_path / "alone.db"), ORIGIN, ledger.store.vkey)
    store.append([{"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8, "type": "linear",
                   "multiplier": "1"}], [ledger.signer])
    store.append([liq(200 + i, fill="99000", qty="1000") for i in range(size - 1)], [ledger.signer])
    store.add_checkpoint([ledger.signer])
    return store


# --- check-receipt ----------------------------------------------------------------


def test_the_printed_command_passes_genuine_receipts_after_a_rotation(rotated, tmp_path):
    """The entry page prints `check-receipt entry-N.receipt --vkey "$(curl -s
    <site>vkey)"`: the published vkey is the log's first key."""
    from publish import tlog

    ledger, new = rotated
    template = open(os.path.join(os.path.dirname(tlog.__file__), "templates", "fl_entry.html")).read()
    assert 'check-receipt entry-{{ e.seq }}.receipt --vkey "$(curl -s {{ site_url }}vkey)"' in template
    conn = sqlite3.connect(ledger.db, isolation_level=None)
    for seq in (2, 6, 8, 10):  # before, at and after the rotation
        path = tmp_path / f"entry-{seq}.receipt"
        path.write_bytes(tlog.receipt(conn, seq))
        assert path.read_bytes() == api.prove(ledger.store, seq)
        r = run("check-receipt", path, "--vkey", ledger.store.vkey, "--json")
        assert r.exit_code == 0, r.output
        out = json.loads(r.output)
        assert out["seq"] == seq and out["tree_size"] == 11
        assert [k["from_size"] for k in out["keys"]] == [0, 7]


def test_a_receipt_of_a_log_without_rotation_is_unchanged(ledger):
    ledger.contract()
    ledger.append(liq(1))
    ledger.checkpoint()
    data = api.prove(ledger.store, 1)
    assert data.count(b"c2sp.org/tlog-proof@v1") == 1
    assert receipt_mod.format_receipt(receipt_mod.parse_receipt(data)) == data


def test_check_receipt_refuses_the_retired_key_past_the_rotation(rotated, tmp_path):
    """The retired key signs entries and a checkpoint past the key entry: the
    receipt's own key proof puts the checkpoint outside the key's range."""
    ledger, new = rotated
    fork = retired_fork(ledger, tmp_path)
    path = tmp_path / "forged.receipt"
    path.write_bytes(api.prove(fork, 9))
    for vkeys in ([ledger.store.vkey], [ledger.store.vkey, new.verifier().vkey()]):
        r = run("check-receipt", path, *[a for v in vkeys for a in ("--vkey", v)])
        assert r.exit_code == 1, r.output
        assert "signed by a retired log key" in r.output


def test_check_receipt_refuses_a_receipt_that_hides_a_known_rotation(rotated, tmp_path):
    """A history in which the rotation never happened, signed by the retired
    key alone: refused when the reader names the new key, or asks for a
    witness; accepted on the first key alone (the limit that remains)."""
    ledger, new = rotated
    path = tmp_path / "forged.receipt"
    path.write_bytes(api.prove(history_without_rotation(ledger, tmp_path), 11))
    r = run("check-receipt", path, "--vkey", ledger.store.vkey, "--vkey", new.verifier().vkey())
    assert r.exit_code == 1 and "does not show the hand-over" in r.output, r.output
    r = run("check-receipt", path, "--vkey", ledger.store.vkey, "--witness", ledger.w.verifier().vkey())
    assert r.exit_code == 1 and "0 valid cosignatures" in r.output, r.output
    assert run("check-receipt", path, "--vkey", ledger.store.vkey).exit_code == 0


def test_check_receipt_with_witnesses(rotated, tmp_path):
    ledger, new = rotated
    wv = tmp_path / "w.vkey"
    wv.write_text(ledger.w.verifier().vkey() + "\n")
    # the witness learns the rotation and cosigns the checkpoint at 11
    line = _tell_the_witness(ledger, tmp_path)
    api.attach_cosignatures(ledger.store, line, [ledger.w.verifier()])
    path = tmp_path / "r"
    path.write_bytes(api.prove(ledger.store, 8))
    r = run("check-receipt", path, "--vkey", ledger.store.vkey, "--witness", wv, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["cosignatures"] == ["witness.example"]
    # one witness given twice never makes a quorum of two
    r = run("check-receipt", path, "--vkey", ledger.store.vkey, "--witness", wv, "--witness", wv, "--quorum", "2")
    assert r.exit_code == 2 and "is given twice: each witness counts once" in r.output, r.output


def test_verify_counts_a_witness_given_twice_once(ledger, tmp_path):
    ledger.contract()
    ledger.checkpoint()
    w = witness.init_witness(str(tmp_path / "w.key"), str(tmp_path / "w.db"), "witness.example")
    witness.add_log(str(tmp_path / "w.db"), ledger.store.vkey)
    line = witness.add_checkpoint(str(tmp_path / "w.key"), str(tmp_path / "w.db"),
                                  api.consistency(ledger.store, old_size=0))
    api.attach_cosignatures(ledger.store, line, [w.verifier()])
    wk = w.verifier().vkey()
    r = run("verify", ledger.db, "--witness", wk, "--witness", wk, "--quorum", "2")
    assert r.exit_code == 2 and "is given twice: each witness counts once" in r.output, r.output
    assert verify.verify_path(ledger.db, witnesses=[wk]).cosignatures == ["witness.example"]


# --- witnesses ---------------------------------------------------------------------


def _request_and_key_proof(ledger, tmp_path):
    req = tmp_path / "request.txt"
    req.write_bytes(api.consistency(ledger.store, old_size=6))
    proof = tmp_path / "key.proof"
    proof.write_bytes(api.prove(ledger.store, 6))
    return req, proof


def _tell_the_witness(ledger, tmp_path):
    req, proof = _request_and_key_proof(ledger, tmp_path)
    r = run("witness", "add-key", req, proof, "--key", ledger.wkey, "--state", ledger.wstate)
    assert r.exit_code == 0, r.output
    return r.output.encode()


def test_a_witness_follows_a_rotation_it_is_told_of(rotated, tmp_path):
    ledger, new = rotated
    req, proof = _request_and_key_proof(ledger, tmp_path)
    # not told yet: the honest checkpoint by the new key is refused, with the way out
    r = run("witness", "add-checkpoint", req, "--key", ledger.wkey, "--state", ledger.wstate)
    assert r.exit_code == 1 and "witness add-key" in r.output, r.output
    line = _tell_the_witness(ledger, tmp_path)
    text, _ = note.split_note(ledger.store.published_checkpoint())
    assert note.verify_cosignature(text, note.parse_signature_lines(line)[0], ledger.w.verifier()) > 0
    state = witness.cosigned(ledger.wstate, ORIGIN)
    assert state.size == 11
    assert state.keys == ((0, ledger.store.vkey), (7, new.verifier().vkey()))
    # later checkpoints by the new key: cosigned
    ledger.store.append([liq(50)], [new])
    ledger.store.add_checkpoint([new])
    witness.add_checkpoint(ledger.wkey, ledger.wstate, api.consistency(ledger.store, old_size=11))
    # the retired key signs a consistent extension: refused
    ledger.store.append([liq(51)], [new])
    ledger.store.add_checkpoint([new])
    body = consistency.parse_consistency(api.consistency(ledger.store, old_size=12))
    cp = note.parse_checkpoint(note.split_note(body.checkpoint)[0])
    forged = consistency.ConsistencyProof(12, body.proof, note.sign_note(cp.text(), [ledger.signer]))
    with pytest.raises(VerificationError, match="in force at size 13"):
        witness.add_checkpoint(ledger.wkey, ledger.wstate, consistency.format_consistency(forged))
    # beside the new key's signature a retired one does not matter: the new key's counts
    both = consistency.ConsistencyProof(12, body.proof, note.sign_note(cp.text(), [new, ledger.signer]))
    witness.add_checkpoint(ledger.wkey, ledger.wstate, consistency.format_consistency(both))
    assert witness.cosigned(ledger.wstate, ORIGIN).size == 13


def test_a_witness_told_of_a_rotation_refuses_the_retired_keys_fork(rotated, tmp_path):
    """The retired key's fork past the key entry, shown with the genuine key
    entry, cannot pass as the hand-over: its checkpoint is not by the new
    key. (A witness nobody told of the rotation still cosigns the fork: the
    limit docs/OPERATOR.md states.)"""
    ledger, new = rotated
    fork = retired_fork(ledger, tmp_path)
    request = api.consistency(fork, old_size=6)
    untold = str(tmp_path / "untold.db")
    shutil.copy(ledger.wstate, untold)
    before = open(ledger.wstate, "rb").read()
    with pytest.raises(VerificationError, match="in force at size 11"):
        witness.add_key(ledger.wkey, ledger.wstate, request, api.prove(fork, 6))
    assert open(ledger.wstate, "rb").read() == before
    assert witness.add_checkpoint(ledger.wkey, untold, request)


def test_a_witness_refuses_a_bad_key_proof(rotated, tmp_path):
    ledger, new = rotated
    req, proof = _request_and_key_proof(ledger, tmp_path)
    before = open(ledger.wstate, "rb").read()
    # a key entry signed by a stranger's key instead of the first one
    stranger = note.generate_signer(ORIGIN)
    r = receipt_mod.parse_receipts(api.prove(ledger.store, 6))[0]
    text, _ = note.split_note(r.extra)
    forged_entry = note.sign_note(text, [stranger, new])
    bad = receipt_mod.format_receipt(receipt_mod.Receipt(6, r.proof, r.checkpoint, forged_entry))
    with pytest.raises(VerificationError):
        witness.add_key(ledger.wkey, ledger.wstate, req.read_bytes(), bad)
    # a proof against another checkpoint than the request's
    other = api.consistency(ledger.store, old_size=6)
    ledger.store.append([liq(60)], [new])
    ledger.store.add_checkpoint([new])
    with pytest.raises(InputError, match="not against the request's checkpoint"):
        witness.add_key(ledger.wkey, ledger.wstate, other, api.prove(ledger.store, 6))
    assert open(ledger.wstate, "rb").read() == before


# --- checkpoints signed by the retired key, and cosignature names ---------------------------


def test_the_new_keys_signature_is_what_counts(rotated, tmp_path):
    from publish.export import export

    ledger, new = rotated
    out = tmp_path / "out"
    export(ledger.store, str(out))
    cp = note.parse_checkpoint(note.split_note((out / "checkpoint").read_bytes())[0])
    # the retired key alone: refused, and named as such
    (out / "checkpoint").write_bytes(note.sign_note(cp.text(), [ledger.signer]))
    with pytest.raises(VerificationError, match="signed by a retired log key"):
        verify.verify_path(str(out), vkey=ledger.store.vkey)
    # beside the new key's: the new key's signature counts, and neither is a cosignature
    (out / "checkpoint").write_bytes(note.sign_note(cp.text(), [new, ledger.signer]))
    j = verify.verify_path(str(out), vkey=ledger.store.vkey).as_json()
    assert j["cosignatures"] == [] and j["unverified_cosignatures"] == []


def test_verify_json_names_no_unchecked_cosigner(rotated):
    """After a rotation the log's own new key is no cosigner; one row of
    random bytes in the cosignatures table is listed as unverified only."""
    ledger, new = rotated
    r = run("verify", ledger.db, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["cosignatures"] == []
    cid = ledger.store.latest_checkpoint()[0]
    line = "\u2014 witness.example " + __import__("base64").b64encode(os.urandom(76)).decode() + "\n"
    conn = sqlite3.connect(ledger.db)
    conn.execute("INSERT INTO cosignatures VALUES (?, ?, ?, ?, ?)", (cid, "witness.example", "00000000", 1, line.encode()))
    conn.commit()
    conn.close()
    r = run("verify", ledger.db, "--json")
    assert r.exit_code == 0, r.output
    j = json.loads(r.output)
    assert j["cosignatures"] == [] and j["unverified_cosignatures"] == ["witness.example"]


# --- a rotation interrupted by a crash -------------------------------------------------


def test_an_interrupted_rotation_can_be_run_again(ledger, monkeypatch):
    """kill -9 between writing the new key file and the key entry leaves
    the key file alone: running the command again uses it."""
    ledger.contract()
    new_path = ledger.dir / "k2.key"
    orphan = keys.create_key_file(str(new_path), ORIGIN)  # what the killed run left
    r = ledger.cli("key", "rotate", "--new-key", str(new_path))
    assert r.exit_code == 0, r.output
    assert orphan.verifier().vkey() in r.output
    assert ledger.store.key_history()[-1] == (2, orphan.verifier().vkey())
    # once done, again: refused, nothing written
    r = ledger.cli("key", "rotate", "--new-key", str(new_path), "--key", str(new_path))
    assert r.exit_code == 2 and "rotation is done" in r.output
    assert ledger.store.size() == 2


def test_a_key_file_of_another_log_is_not_taken(ledger):
    ledger.contract()
    other = ledger.dir / "other.key"
    keys.create_key_file(str(other), "other.example/log")
    before = other.read_bytes()
    r = ledger.cli("key", "rotate", "--new-key", str(other))
    assert r.exit_code == 2 and "not a key of this log" in r.output
    assert other.read_bytes() == before and ledger.store.size() == 1


def test_a_key_file_is_whole_and_its_directory_synced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    keys.create_key_file(str(tmp_path / "a.key"), ORIGIN)
    assert True in synced  # the directory, after the file
    assert sorted(os.listdir(tmp_path)) == ["a.key"]  # no temporary file left
    assert stat.S_IMODE(os.stat(tmp_path / "a.key").st_mode) == 0o600


# --- a missing bundle before a rotation --------------------------------------------------


def test_a_missing_bundle_before_a_rotation_is_named(rotated, tmp_path):
    from publish.export import export

    ledger, new = rotated
    out = tmp_path / "out"
    export(ledger.store, str(out))
    os.unlink(out / "tile" / "entries" / "000.p" / "11")
    with pytest.raises(VerificationError) as e:
        verify.verify_path(str(out), vkey=ledger.store.vkey, workers=1)
    assert "tile/entries/000.p/11 is missing" in e.value.reason and e.value.seq == 0
    r = run("verify", str(out), "--vkey", ledger.store.vkey, "--json")
    assert r.exit_code == 1
    j = json.loads(r.output)
    assert "tile/entries/000.p/11 is missing" in json.dumps(j) and j.get("seq") == 0
