"""The verifier's parallel path: chunks checked in worker processes, applied
in order by the main process. Whatever the chunk size, the worker count and
where contracts and key rotations fall, the result is the one the main
process alone gives; collisions of the hashed id set are settled exactly."""

from __future__ import annotations

import json

import pytest

from ledger import note, verify
from publish.export import export
from ledger.errors import VerificationError

from conftest import ORIGIN


def liquidations(start, n, contract="XBTUSDTM"):
    return [{"kind": "liquidation", "contract": contract, "id": f"L-{i}", "side": "short" if i % 3 else "long",
             "qty": str(1 + i % 4), "bankruptcy_price": "40000", "fill_price": str(39980 + (i % 9) * 5)}
            for i in range(start, start + n)]


@pytest.fixture
def eventful(ledger, tmp_path):
    """A log where a contract is listed late and the key is rotated midway,
    so that chunks are checked with tables that change under them."""
    ledger.contract()
    ledger.append(*liquidations(0, 70))
    ledger.contract("ETHUSDTM", "USDT", 6, "linear", "0.01")  # listed at seq 71
    ledger.append(*liquidations(70, 30), *liquidations(0, 20, "ETHUSDTM"))
    new = note.generate_signer(ORIGIN)
    ledger.store.rotate_key(ledger.signer, new)  # seq 122
    ledger.signer = new
    ledger.append(*liquidations(100, 40), *liquidations(20, 25, "ETHUSDTM"))
    ledger.checkpoint()
    out = str(tmp_path / "export")
    export(ledger.store, out)
    return ledger, out


@pytest.mark.parametrize("chunk", [1, 7, 16, 1024])
@pytest.mark.parametrize("workers", [1, 2])
def test_any_chunking_gives_the_same_result(eventful, monkeypatch, chunk, workers):
    ledger, out = eventful
    reference = verify.verify_path(ledger.db, workers=1).as_json()
    assert reference["size"] == 188
    monkeypatch.setattr(verify, "CHUNK", chunk)
    for source in (ledger.db, out):
        got = verify.verify_path(source, workers=workers).as_json()
        assert (got["root"], got["contracts"], got["size"]) == (reference["root"], reference["contracts"], 188)


def test_every_entry_takes_the_worker_path_when_it_can(eventful, monkeypatch):
    """Only contract and key entries (and what a worker could not know yet)
    go through the main process's full check."""
    ledger, out = eventful
    full = []
    real = verify._Run.full

    def counting(self, data, row):
        full.append(self.seq)
        return real(self, data, row)

    monkeypatch.setattr(verify._Run, "full", counting)
    monkeypatch.setattr(verify, "CHUNK", 16)
    verify.verify_path(out, workers=1)
    assert full == [0, 71, 122]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("seq", [15, 16, 17, 130])
def test_a_fault_at_a_chunk_edge_is_named(eventful, monkeypatch, workers, seq):
    ledger, out = eventful
    import tamper_util as tu

    def flip(e: bytes) -> bytes:
        b = bytearray(e)
        b[-10] ^= 0x01  # inside the signature's base64
        return bytes(b)

    tu.edit_bundle_entry(__import__("pathlib").Path(out), seq, 188, flip)
    monkeypatch.setattr(verify, "CHUNK", 16)
    with pytest.raises(VerificationError) as e:
        verify.verify_path(out, workers=workers)
    assert e.value.seq == seq


def test_id_hash_collisions_are_settled_exactly(eventful, monkeypatch):
    """With a hash that collides all the time the verdicts stay exact: an
    honest log passes, a replayed id is still a duplicate."""
    ledger, out = eventful
    monkeypatch.setattr(verify, "id_hash", lambda key, contract, lid: len(lid) % 2)
    assert verify.verify_path(out, workers=1).tree_size == 188
    seen = verify.IdSet(confirm=lambda pair: pair == ("XBTUSDTM", "L-1"))
    seen.add(("XBTUSDTM", "L-1"))
    assert ("XBTUSDTM", "L-1") in seen
    assert ("XBTUSDTM", "L-3") not in seen  # same hash, not recorded
    seen.add(("XBTUSDTM", "L-3"))
    assert ("XBTUSDTM", "L-3") in seen  # known to collide: answered without a re-read
    assert ("XBTUSDTM", "L-22") not in seen  # another hash


def test_id_set_without_confirm_counts_a_hit_as_seen():
    seen = verify.IdSet(key=bytes(16))
    seen.add(("A", "1"))
    assert ("A", "1") in seen and ("A", "2") not in seen and len(seen) == 1
    seen.discard(("A", "1"))
    assert ("A", "1") not in seen and len(seen) == 0


def test_state_of_version_1_is_still_read(ledger, tmp_path):
    """A state saved before ids were hashed (pairs of strings) resumes."""
    ledger.contract()
    ledger.append(*liquidations(0, 10))
    ledger.checkpoint()
    state = tmp_path / "state.json"
    verify.verify_path(ledger.db, state_path=str(state))
    saved = json.loads(state.read_text())
    assert saved["version"] == 2 and len(saved["seen"]) == 4 * ((8 * 10 + 2) // 3)  # base64 of 10 uint64
    old = {k: v for k, v in saved.items() if k not in ("seen_key", "seen", "seen_exact")}
    old.update(version=1, seen=[["XBTUSDTM", f"L-{i}"] for i in range(10)])
    state.write_text(json.dumps(old))
    ledger.append(*liquidations(10, 5))
    ledger.checkpoint()
    r = verify.verify_path(ledger.db, state_path=str(state))
    assert r.entries_checked == 5
    assert json.loads(state.read_text())["version"] == 2
