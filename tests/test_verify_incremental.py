"""verify --state: later runs check only what is new, and still catch a
rewritten history."""

from __future__ import annotations

import json
import sqlite3

import pytest
from state_util import legacy_json, read_state

from ledger.verify import run as verify
from ledger.errors import InputError, VerificationError


def liquidations(start, n, contract="XBTUSDTM"):
    return [{"kind": "liquidation", "contract": contract, "id": f"L-{i}", "side": "short" if i % 3 else "long",
             "qty": "2", "bankruptcy_price": "40000", "fill_price": str(39990 + (i % 7) * 5)}
            for i in range(start, start + n)]


def test_incremental_matches_full_and_reads_only_new(ledger, tmp_path):
    ledger.contract()
    ledger.contract("XBTUSDM", "XBT", 8, "inverse", "1")
    ledger.append(*liquidations(0, 50))
    ledger.checkpoint()
    state = str(tmp_path / "state.json")
    first = verify.verify_path(ledger.db, state_path=state)
    assert first.entries_checked == 52
    ledger.append(*liquidations(50, 30), *liquidations(0, 5, "XBTUSDM"))
    ledger.checkpoint()
    second = verify.verify_path(ledger.db, state_path=state)
    assert second.entries_checked == 35
    full = verify.verify_path(ledger.db)
    assert second.as_json()["contracts"] == full.as_json()["contracts"]
    assert second.root == full.root and second.tree_size == 87
    saved = read_state(state)
    assert saved["tree_size"] == 87 and saved["version"] == 4 and len(saved["ids"]) == 85
    # nothing new: nothing read
    assert verify.verify_path(ledger.db, state_path=state).entries_checked == 0


def test_incremental_catches_a_duplicate_id_from_before(ledger, tmp_path):
    """The set of ids comes from the saved state, not from the source."""
    ledger.contract()
    ledger.append(*liquidations(0, 10))
    ledger.checkpoint()
    state = str(tmp_path / "state.json")
    verify.verify_path(ledger.db, state_path=state)
    seq = append_replay(ledger, 3)
    with pytest.raises(VerificationError, match="duplicate") as e:
        verify.verify_path(ledger.db, state_path=state)
    assert e.value.seq == seq


def test_id_hash_collisions_are_settled_exactly_when_resumed(ledger, tmp_path, monkeypatch):
    """With an id hash that always collides, a resumed run still tells a
    new id from a replay: each hit is settled by re-reading the log."""
    from ledger.verify import accelerator

    from ledger.verify import pipeline

    monkeypatch.setattr(accelerator, "id_hash", lambda key, contract, lid: 7)
    rereads = []
    recorded_before = pipeline.recorded_before
    monkeypatch.setattr(pipeline, "recorded_before", lambda *a: rereads.append(a[3]) or recorded_before(*a))
    ledger.contract()
    ledger.append(*liquidations(0, 10))
    ledger.checkpoint()
    state = str(tmp_path / "state.db")
    verify.verify_path(ledger.db, state_path=state, workers=1)
    ledger.append(*liquidations(10, 5))
    ledger.checkpoint()
    assert verify.verify_path(ledger.db, state_path=state, workers=1).entries_checked == 5
    assert ("XBTUSDTM", "L-10") in rereads  # a hit on the saved hashes, settled by a re-read
    seq = append_replay(ledger, 12)  # an id the resumed run saw only as a hash
    with pytest.raises(VerificationError, match="duplicate") as e:
        verify.verify_path(ledger.db, state_path=state, workers=1)
    assert e.value.seq == seq


def append_replay(ledger, i: int) -> int:
    """Append, signed with the real key past the writer's checks, a replay
    of liquidation ``L-i``, and a checkpoint over it; its seq."""
    # The operator re-signs a replay at the end (the writer would
    # refuse; forge it with the real key by building the entry by hand).
    from ledger.format import entry
    from ledger.tlog import merkle
    from ledger.rules.fund import FundBook

    book = FundBook()
    rows = sqlite3.connect(ledger.db).execute("SELECT data FROM entries ORDER BY seq").fetchall()
    prev = merkle.leaf_hash(rows[-1][0])
    full = verify.verify_path(ledger.db)
    book = full.book
    book.seen = set()  # forget the ids, to build the replay
    fields = book.build(liquidations(i, 1)[0])
    data = entry.sign_entry(entry.entry_text(fields, len(rows), prev, "2026-11-23T00:00:00Z"), [ledger.signer])
    conn = sqlite3.connect(ledger.db)
    for t in ("entries", "tree"):
        conn.execute(f"DROP TRIGGER {t}_insert")
    from ledger.store.schema import derived_columns

    fields.update(seq=len(rows), time="2026-11-23T00:00:00Z")
    conn.execute("DROP INDEX entries_liquidation")
    conn.execute(f"INSERT INTO entries VALUES ({','.join('?' * 16)})", derived_columns(len(rows), data, merkle.leaf_hash(data), fields))
    conn.commit()
    conn.close()
    store = ledger.store
    from ledger.tlog import merkle as m

    # extend the stored tree and sign a checkpoint with the real key
    from ledger.store.schema import _DictReader, tree_rows_of

    edge = m.compact_range_indexes(len(rows))
    cache = dict(zip(edge, store.read_hashes(edge)))
    hashes = m.stored_hashes_for_leaf(len(rows), m.leaf_hash(data), _DictReader(cache))
    conn = sqlite3.connect(ledger.db)
    conn.executemany("INSERT INTO tree VALUES (?, ?)", tree_rows_of(len(rows), hashes))
    conn.commit()
    conn.close()
    ledger.store.add_checkpoint([ledger.signer])
    return len(rows)


def test_a_damaged_state_is_refused(ledger, tmp_path):
    ledger.contract()
    ledger.append(*liquidations(0, 10))
    ledger.checkpoint()
    state = str(tmp_path / "state.json")
    verify.verify_path(ledger.db, state_path=state)
    saved = legacy_json(state)
    saved["edge"][0] = saved["edge"][0][:-4] + "AAA="  # state no longer gives its root
    bad = str(tmp_path / "bad.json")
    json.dump({**saved}, open(bad, "w"))
    with pytest.raises(InputError, match="damaged"):
        verify.verify_path(ledger.db, state_path=bad)


def test_incremental_catches_a_history_rewritten_with_the_real_key(ledger, tmp_path):
    """The operator builds another history under the same key: plain verify
    of the new one passes, resuming from the auditor's state fails."""
    from ledger.store.store import Store

    ledger.contract()
    ledger.append(*liquidations(0, 10))
    ledger.checkpoint()
    state = str(tmp_path / "state.json")
    verify.verify_path(ledger.db, state_path=state)
    other = Store.create(str(tmp_path / "forged.db"), ledger.store.origin, ledger.store.vkey)
    other.append([{"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8}], [ledger.signer])
    forged = liquidations(0, 12)
    forged[4]["fill_price"] = "40500"  # a short closed far worse: history differs from seq 5
    other.append(forged, [ledger.signer])
    other.add_checkpoint([ledger.signer])
    assert verify.verify_path(str(tmp_path / "forged.db")).tree_size == 13
    with pytest.raises(VerificationError, match="prev|root"):
        verify.verify_path(str(tmp_path / "forged.db"), state_path=state)
