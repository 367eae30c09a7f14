"""Key rotation: the new key is announced by an entry signed by both keys;
verification follows it; the retired key can sign nothing after it."""

from __future__ import annotations

import sqlite3

import pytest

from ledger.ops import api
from ledger.format import entry
from ledger.tlog import merkle
from ledger.format import note
from ledger.verify import run as verify
from ledger.errors import StoreError, VerificationError
from ledger.ops.keys import load_key_file


def liq(i, fill="39050"):
    return {"kind": "liquidation", "contract": "XBTUSDTM", "id": f"L-{i}", "side": "long", "qty": "1",
            "bankruptcy_price": "39000", "fill_price": fill}


@pytest.fixture
def rotated(ledger):
    ledger.contract()
    ledger.append(*[liq(i) for i in range(5)])
    old_cp = ledger.checkpoint()[1]
    seq, new = api.rotate_key(ledger.store, ledger.signer, str(ledger.dir / "new.key"))
    assert seq == 6
    ledger.store.append([liq(i) for i in range(5, 9)], [new])
    ledger.store.add_checkpoint([new])
    return ledger, new, old_cp


def test_verifies_across_the_rotation(rotated, tmp_path):
    ledger, new, old_cp = rotated
    r = verify.verify_path(ledger.db)
    assert r.tree_size == 11
    # pinned to the first key, through an export, with the pre-rotation checkpoint as trusted
    from publish.export import export

    export(ledger.store, str(tmp_path / "out"))
    (tmp_path / "old.cp").write_bytes(old_cp)
    r = verify.verify_path(str(tmp_path / "out"), vkey=ledger.store.vkey, trusted_path=str(tmp_path / "old.cp"))
    assert r.tree_size == 11
    # the key entry carries two signatures, old then new
    text, sigs = note.split_note(ledger.store.entry(6), 65535)
    assert [s.key_id for s in sigs] == [ledger.signer.key_id, new.key_id]
    # incremental verification across the rotation
    state = str(tmp_path / "st.json")
    verify.verify_path(ledger.db, state_path=state)
    ledger.store.append([liq(20)], [new])
    ledger.store.add_checkpoint([new])
    assert verify.verify_path(ledger.db, state_path=state).entries_checked == 1


def test_the_retired_key_is_refused_by_the_writer(rotated):
    ledger, new, _ = rotated
    with pytest.raises(StoreError):
        ledger.store.append([liq(30)], [ledger.signer])
    with pytest.raises(StoreError):
        ledger.store.add_checkpoint([ledger.signer])
    assert load_key_file(str(ledger.dir / "new.key")).verifier().vkey() == ledger.store.current_vkey


def _forge(ledger, signer):
    """Append an entry signed by ``signer`` behind the writer's back."""
    rec = verify.verify_path(ledger.db).book  # (before the triggers go: verify checks them)
    conn = sqlite3.connect(ledger.db)
    for t in ("entries", "tree"):
        conn.execute(f"DROP TRIGGER {t}_insert")
    size, prev = conn.execute("SELECT seq + 1, leaf_hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
    fields = rec.build(liq(40))
    data = entry.sign_entry(entry.entry_text(fields, size, prev, "2026-11-23T00:00:00Z"), [signer])
    from ledger.store.schema import _DictReader, derived_columns, tree_rows_of

    fields.update(seq=size, time="2026-11-23T00:00:00Z")
    conn.execute(f"INSERT INTO entries VALUES ({','.join('?' * 16)})", derived_columns(size, data, merkle.leaf_hash(data), fields))
    edge = merkle.compact_range_indexes(size)
    cache = dict(zip(edge, ledger.store.read_hashes(edge)))
    hashes = merkle.stored_hashes_for_leaf(size, merkle.leaf_hash(data), _DictReader(cache))
    conn.executemany("INSERT INTO tree VALUES (?, ?)", tree_rows_of(size, hashes))
    conn.commit()
    conn.close()
    return size


def test_an_entry_signed_by_the_retired_key_fails(rotated):
    ledger, new, _ = rotated
    seq = _forge(ledger, ledger.signer)
    with pytest.raises(VerificationError) as e:
        verify.verify_path(ledger.db)
    assert e.value.seq == seq and "may not sign" in e.value.reason


def test_a_checkpoint_signed_by_the_retired_key_fails(rotated, tmp_path):
    ledger, new, _ = rotated
    from publish.export import export

    export(ledger.store, str(tmp_path / "out"))
    cp = note.parse_checkpoint(note.split_note((tmp_path / "out" / "checkpoint").read_bytes())[0])
    (tmp_path / "out" / "checkpoint").write_bytes(note.sign_note(cp.text(), [ledger.signer]))
    with pytest.raises(VerificationError, match="checkpoint"):
        verify.verify_path(str(tmp_path / "out"))


def test_cli_rotate(ledger):
    ledger.contract()
    ledger.checkpoint()
    r = ledger.cli("key", "rotate", "--new-key", str(ledger.dir / "k2.key"))
    assert r.exit_code == 0, r.output
    r = ledger.cli("key", "rotate", "--new-key", str(ledger.dir / "k2.key"))
    assert r.exit_code == 2  # the old key is retired, and the file exists


def test_a_receipt_from_before_the_rotation_checks_with_the_first_key(rotated, tmp_path):
    from ledger.errors import SignatureError

    ledger, new, _ = rotated
    receipt = api.prove(ledger.store, 2)  # signed by the first key, checkpoint by the new one
    # the receipt carries the key entry and its proof: the first key suffices
    assert api.check_receipt(receipt, note.parse_vkey(ledger.store.vkey))["seq"] == 2
    assert api.check_receipt(receipt, [note.parse_vkey(ledger.store.vkey), new.verifier()])["seq"] == 2
    with pytest.raises((VerificationError, SignatureError)):
        api.check_receipt(receipt, new.verifier())
