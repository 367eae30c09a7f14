"""The verifier's ``--state`` file: an SQLite file of the auditor's own,
read and written at a cost proportional to what is new, saved in one
transaction (never half, never over another run's save), and refused
plainly when it is not one."""

from __future__ import annotations

import os
import pickle
import sqlite3

import pytest
from state_util import read_state
from test_verify_incremental import liquidations

from ledger.errors import InputError, VerificationError
from ledger.verify import ids
from ledger.verify import run as verify
from ledger.verify.accelerator import IdSet
from ledger.verify.database import DbSource
from ledger.verify.ids import HashStore
from ledger.verify.state import VerifierState


@pytest.fixture
def saved(ledger, tmp_path):
    """A log of 21 entries verified once with --state."""
    ledger.contract()
    ledger.append(*liquidations(0, 20))
    ledger.checkpoint()
    state = str(tmp_path / "auditor.state")
    verify.verify_path(ledger.db, state_path=state)
    return ledger, state


def resume(ledger, state: str):
    """One incremental run by hand, returning its report (state not saved)."""
    src = DbSource(ledger.db)
    try:
        return verify.verify(src, resume=VerifierState.load(state), keep_state=True)
    finally:
        src.close()


def test_a_resumed_run_holds_only_the_new_ids_in_memory(saved):
    ledger, state = saved
    ledger.append(*liquidations(20, 7))
    ledger.checkpoint()
    report = resume(ledger, state)
    store = report.state.hashes
    assert report.entries_checked == 7
    assert store.on_file and not store.base_mem and len(store.recent) == 7 and store.spilled == 0
    report.state.dump(state)
    assert len(read_state(state)["ids"]) == 27 and read_state(state)["tree_size"] == 28


def test_spilled_ids_are_still_seen_and_saved(ledger, tmp_path, monkeypatch):
    """With room in memory for 4 ids the run spills to disk: the verdicts
    and the saved ids are those of a run that kept them all."""
    monkeypatch.setattr(ids, "MEMORY_CAP", 4)
    ledger.contract()
    ledger.append(*liquidations(0, 30))
    ledger.checkpoint()
    state = str(tmp_path / "auditor.state")
    first = verify.verify_path(ledger.db, state_path=state, workers=1)
    assert len(read_state(state)["ids"]) == 30
    ledger.append(*liquidations(30, 9))
    ledger.checkpoint()
    second = verify.verify_path(ledger.db, state_path=state, workers=1)
    assert second.entries_checked == 9 and len(read_state(state)["ids"]) == 39
    assert second.as_json()["contracts"] == verify.verify_path(ledger.db).as_json()["contracts"]
    assert first.tree_size == 31


def test_hash_store_spills_and_commits_up_to_a_mark(tmp_path):
    store = HashStore(base_mem=[1000, 1001], cap=3)
    for h in range(10):
        store.add(h)
    assert store.spilled == 9 and store.order == [9]
    assert all(h in store for h in [*range(10), 1000, 1001]) and 10 not in store
    assert not store.isdisjoint([55, 7]) and store.isdisjoint([55, 56]) and not store.isdisjoint([1001])
    conn = store.connection()
    conn.execute("ATTACH DATABASE ? AS dst", (str(tmp_path / "x.db"),))
    conn.execute(ids.IDS_TABLE.format(schema="dst."))
    store.commit_to(conn, "dst", 7)
    assert [h for (h,) in conn.execute("SELECT h FROM dst.ids")] == [0, 1, 2, 3, 4, 5, 6, 1000, 1001]
    assert store.snapshot(10) == [*range(10), 1000, 1001]


def test_a_replayed_id_is_found_after_a_spill():
    seen = IdSet(key=bytes(16), hashes=HashStore(cap=2))
    for i in range(6):
        seen.add(("C", f"L-{i}"))
    assert ("C", "L-0") in seen and ("C", "L-5") in seen and ("C", "L-6") not in seen


def test_two_runs_from_one_state_never_both_save(saved):
    """Compare-and-swap on the saved checkpoint: the slower of two runs
    resumed from the same file is refused rather than saved over the other."""
    ledger, state = saved
    ledger.append(*liquidations(20, 3))
    ledger.checkpoint()
    a, b = resume(ledger, state), resume(ledger, state)
    a.state.dump(state)
    before = open(state, "rb").read()
    with pytest.raises(InputError, match="another run saved"):
        b.state.dump(state)
    assert open(state, "rb").read() == before


def test_a_failed_run_leaves_the_state_as_it_was(saved, tmp_path):
    from ledger.store.store import Store

    ledger, state = saved
    before = open(state, "rb").read()
    other = Store.create(str(tmp_path / "forged.db"), ledger.store.origin, ledger.store.vkey)
    other.append([{"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8}], [ledger.signer])
    forged = liquidations(0, 25)
    forged[4]["fill_price"] = "40500"
    other.append(forged, [ledger.signer])
    other.add_checkpoint([ledger.signer])
    with pytest.raises(VerificationError):
        verify.verify_path(str(tmp_path / "forged.db"), state_path=state)
    assert open(state, "rb").read() == before


def test_the_state_at_the_checkpoint_leaves_later_ids_out(ledger, tmp_path, monkeypatch):
    """A live database: entries after the checkpoint are checked, but their
    ids (spilled or not) are not saved, so the next run takes them afresh."""
    monkeypatch.setattr(ids, "MEMORY_CAP", 3)
    ledger.contract()
    ledger.append(*liquidations(0, 10))
    ledger.checkpoint()
    ledger.append(*liquidations(10, 8))
    state = str(tmp_path / "auditor.state")
    verify.verify_path(ledger.db, state_path=state, workers=1)
    assert len(read_state(state)["ids"]) == 10 and read_state(state)["tree_size"] == 11
    ledger.checkpoint()
    assert verify.verify_path(ledger.db, state_path=state, workers=1).entries_checked == 8
    assert len(read_state(state)["ids"]) == 18


def test_a_state_passed_between_processes_resumes(saved):
    """The site's rounds pass the state pickled: it carries the ids."""
    ledger, state = saved
    copy = pickle.loads(pickle.dumps(VerifierState.load(state)))
    assert len(copy.hashes.base_mem) == 20 and not copy.hashes.on_file
    ledger.append(*liquidations(0, 1))  # a replay of L-0: the writer refuses it
    src = DbSource(ledger.db)
    try:
        assert verify.verify(src, resume=copy, keep_state=True).entries_checked == 0
    finally:
        src.close()


def damage(path: str, sql: str, *args) -> None:
    conn = sqlite3.connect(path)
    conn.execute(sql, args)
    conn.commit()
    conn.close()


@pytest.mark.parametrize("sql, args", [
    ("UPDATE state SET tree_size = tree_size + 1", ()),
    ("UPDATE state SET body = ?", ('{"origin": 1}',)),
    ("UPDATE state SET body = ?", ("[" * 100_000,)),
    ("UPDATE state SET version = 3", ()),
    ("DELETE FROM state", ()),
    ("CREATE TABLE extra (x)", ()),
    ("DROP TABLE ids", ()),
])
def test_a_damaged_state_file_is_bad_input(saved, sql, args):
    ledger, state = saved
    damage(state, sql, *args)
    with pytest.raises(InputError, match="not a verifier state"):
        verify.verify_path(ledger.db, state_path=state)


def test_a_file_that_is_no_state_is_bad_input(saved, tmp_path):
    ledger, state = saved
    with open(state, "r+b") as f:  # the SQLite header, then garbage
        f.seek(100)
        f.write(os.urandom(4000))
    with pytest.raises(InputError, match="not a verifier state"):
        verify.verify_path(ledger.db, state_path=state)
    with open(state, "w") as f:  # an older JSON state, nested past any parser's depth
        f.write("[" * 100_000)
    with pytest.raises(InputError, match="not a verifier state"):
        verify.verify_path(ledger.db, state_path=state)
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        verify.verify_path(ledger.db, state_path=fifo)
