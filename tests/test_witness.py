"""Witnesses: cosign only consistent growth; the ledger keeps and publishes
cosignatures; verify can require k of n named witnesses."""

from __future__ import annotations

import pytest

from ledger.ops import api
from ledger.format import note
from ledger.format import consistency
from ledger.verify import run as verify
from ledger.ops import witness
from ledger.errors import InputError, ProofError, VerificationError


def grow(ledger, start, n):
    ledger.append(*[{"kind": "liquidation", "contract": "XBTUSDTM", "id": f"L-{i}", "side": "long",
                     "qty": "1", "bankruptcy_price": "39000", "fill_price": "39010"} for i in range(start, start + n)])
    return ledger.checkpoint()[1]


@pytest.fixture
def setup(ledger, tmp_path):
    ledger.contract()
    first = grow(ledger, 0, 5)
    w = witness.init_witness(str(tmp_path / "w.key"), str(tmp_path / "w.db"), "witness.example")
    witness.add_log(str(tmp_path / "w.db"), ledger.store.vkey)
    return ledger, w, first, str(tmp_path / "w.key"), str(tmp_path / "w.db")


def test_witness_key_is_cosignature_v1_and_private(setup):
    import os, stat

    ledger, w, _, key, _ = setup
    assert w.alg == note.ALG_COSIGNATURE_V1
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600


def test_cosigns_consistent_growth_and_refuses_the_rest(setup):
    ledger, w, first, key, state = setup
    req0 = api.consistency(ledger.store, old_size=0)
    line = witness.add_checkpoint(key, state, req0, now=1_700_000_000)
    sig = note.parse_signature_lines(line)[0]
    text, _ = note.split_note(first)
    assert note.verify_cosignature(text, sig, w.verifier()) == 1_700_000_000
    # the same request again: the witness has moved on (409 conflict)
    with pytest.raises(witness.WitnessConflict):
        witness.add_checkpoint(key, state, req0)
    # growth with a proof from the size it holds: cosigned
    grow(ledger, 5, 7)
    req = api.consistency(ledger.store, old_checkpoint=first)
    witness.add_checkpoint(key, state, req)
    # a fork: same old size, tampered proof
    grow(ledger, 12, 3)
    second = ledger.store.latest_checkpoint()
    prev_note = ledger.store.checkpoints()[-2][4]
    body = consistency.parse_consistency(api.consistency(ledger.store, old_checkpoint=prev_note))
    bad = consistency.ConsistencyProof(body.old_size, (bytes(32),) + body.proof[1:], body.checkpoint)
    with pytest.raises(ProofError):
        witness.add_checkpoint(key, state, consistency.format_consistency(bad))
    # a checkpoint signed by another key with the log's name: refused
    other = note.generate_signer(ledger.store.origin)
    cp = note.parse_checkpoint(note.split_note(second[4])[0])
    forged = consistency.ConsistencyProof(body.old_size, body.proof, note.sign_note(cp.text(), [other]))
    with pytest.raises(VerificationError):
        witness.add_checkpoint(key, state, consistency.format_consistency(forged))
    # an unknown log
    stranger = note.generate_signer("stranger.example")
    alien = consistency.ConsistencyProof(0, (), note.sign_note(note.Checkpoint("stranger.example", 0, bytes(32)).text(), [stranger]))
    with pytest.raises(InputError):
        witness.add_checkpoint(key, state, consistency.format_consistency(alien))


def test_attached_cosignatures_are_published_and_required(setup, tmp_path):
    ledger, w, first, key, state = setup
    line = witness.add_checkpoint(key, state, api.consistency(ledger.store, old_size=0))
    assert api.attach_cosignatures(ledger.store, line, [w.verifier()]) == ["witness.example"]
    published = ledger.store.published_checkpoint()
    assert published.endswith(line)
    wk = w.verifier().vkey()
    r = verify.verify_path(ledger.db, witnesses=[wk])
    assert r.cosignatures == ["witness.example"]
    # a second, silent witness: all required fails, a quorum of one passes
    w2 = note.generate_signer("witness2.example", note.ALG_COSIGNATURE_V1).verifier().vkey()
    with pytest.raises(VerificationError, match="1 valid cosignatures .* 2 required"):
        verify.verify_path(ledger.db, witnesses=[wk, w2])
    assert verify.verify_path(ledger.db, witnesses=[wk, w2], quorum=1).cosignatures == ["witness.example"]
    # the export publishes it too
    from publish.export import export

    export(ledger.store, str(tmp_path / "out"))
    assert verify.verify_path(str(tmp_path / "out"), witnesses=[wk]).cosignatures == ["witness.example"]


def test_a_cosignature_on_another_checkpoint_is_refused(setup):
    ledger, w, first, key, state = setup
    line = witness.add_checkpoint(key, state, api.consistency(ledger.store, old_size=0))
    grow(ledger, 5, 1)  # the latest checkpoint is now another one
    with pytest.raises(VerificationError):
        api.attach_cosignatures(ledger.store, line, [w.verifier()])


def test_cli_round_trip(setup, tmp_path):
    ledger, w, first, key, state = setup
    req = tmp_path / "req"
    req.write_bytes(api.consistency(ledger.store, old_size=0))
    r = ledger.cli("witness", "add-checkpoint", str(req), "--key", key, "--state", state)
    assert r.exit_code == 0, r.output
    cos = tmp_path / "cos"
    cos.write_text(r.output)
    r = ledger.cli("attach-cosignatures", str(cos), "--witness", w.verifier().vkey())
    assert r.exit_code == 0 and "witness.example" in r.output
    r = ledger.cli("verify", "--witness", w.verifier().vkey(), "--json")
    assert r.exit_code == 0 and '"witness.example"' in r.output
    r = ledger.cli("witness", "add-checkpoint", str(req), "--key", key, "--state", state)
    assert r.exit_code == 1


def test_a_decision_on_a_stale_row_is_a_conflict_and_writes_nothing(setup, monkeypatch):
    """Compare-and-swap: a request decided from the row as it was before
    another request moved it is refused (409 with the new size), never
    recorded over it: no rollback, no second branch."""
    from conftest import ORIGIN
    from ledger.ops import witness_state

    ledger, w, first, key, state = setup
    stale = witness.cosigned(state, ORIGIN)
    witness.add_checkpoint(key, state, api.consistency(ledger.store, old_size=0))  # the row moves to 6
    before = open(state, "rb").read()
    real, calls = witness_state.get, []

    def get(conn, origin):
        calls.append(origin)
        return stale if len(calls) == 1 else real(conn, origin)

    monkeypatch.setattr(witness_state, "get", get)
    with pytest.raises(witness.WitnessConflict) as e:
        witness.add_checkpoint(key, state, api.consistency(ledger.store, old_size=0))
    assert e.value.size == 6 and witness.http_status(e.value) == 409
    monkeypatch.undo()
    assert open(state, "rb").read() == before and witness.cosigned(state, ORIGIN).size == 6
