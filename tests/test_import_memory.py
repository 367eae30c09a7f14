"""A bulk import's memory stays bounded (ledger/store/seen.py): the ids of
earlier chunks spill to disk, and the import still writes the ordinary
path's bytes, skips every replay (inside the file, across the spill, against
the database) and gives the anchor every new id's hash, in order."""

from __future__ import annotations

import array
import io
import random
import sys

import pytest

from ledger.errors import VerificationError
from ledger.ops import anchor as anchor_mod
from ledger.ops import api
from ledger.store import schema, seen
from ledger.store.seen import FrameLog, HashLog, SpilledPairs
from test_import_pipeline import dump, fixed_signer, jsonl, new_store, varied_records

CAP = 40  # pairs or hashes in memory before a spill
BATCH = 15  # records per chunk


def replayed(records: list[dict], seed: int = 3) -> list[dict]:
    """``records`` with a copy of some of its liquidations far after them:
    replays that cross chunks and the spill."""
    rng = random.Random(seed)
    liq = [r for r in records if r["kind"] == "liquidation"]
    out = list(records)
    for r in rng.sample(liq, 60):
        out.insert(rng.randrange(out.index(r) + 1, len(out) + 1), dict(r))
    return out


@pytest.fixture
def watched(monkeypatch):
    """The largest per-import structures seen at each chunk, and the spills."""
    monkeypatch.setattr(seen, "MEMORY_CAP", CAP)
    monkeypatch.setattr(api, "PIPELINE_MIN_BYTES", 1 << 62)  # (signing inline)
    sizes = {"chunk": 0, "older": 0, "spilled": 0, "pending": 0, "on_file": 0}
    prefetch, append = schema._SeenInDb.prefetch, HashLog.append

    def watch_prefetch(self, records):
        prefetch(self, records)
        sizes["chunk"] = max(sizes["chunk"], len(self._batch), len(self._known), len(self._added))
        if isinstance(self.older, SpilledPairs):
            sizes["older"] = max(sizes["older"], len(self.older.mem))
            sizes["spilled"] = max(sizes["spilled"], self.older.spilled)

    def watch_append(self, h):
        append(self, h)
        sizes["pending"] = max(sizes["pending"], len(self._buf))
        sizes["on_file"] = max(sizes["on_file"], self.on_file)

    monkeypatch.setattr(schema._SeenInDb, "prefetch", watch_prefetch)
    monkeypatch.setattr(HashLog, "append", watch_append)
    return sizes


def anchored_ids(key_path: str) -> list[int]:
    """The hashes the anchor's .ids file holds."""
    a = array.array("Q")
    with open(anchor_mod.anchor_path(key_path) + ".ids", "rb") as f:
        a.frombytes(f.read())
    if sys.byteorder != "little":
        a.byteswap()
    return a.tolist()


def ledger_with(db, records):
    """A new ledger holding ``records`` (appended the ordinary way)."""
    store = new_store(db)
    store.append(records, [fixed_signer()])
    return store


def test_a_spilled_import_writes_the_ordinary_bytes_in_bounded_memory(tmp_path, watched):
    records = replayed(varied_records(500))
    ref = ledger_with(tmp_path / "ref.db", records[:40])  # replays of the database's ids too
    for k in range(0, len(records), BATCH):
        ref.append(records[k : k + BATCH], [fixed_signer()])
    ref.close()
    store = ledger_with(tmp_path / "new.db", records[:40])
    key = str(tmp_path / "fund.key")
    anchor = anchor_mod.WriterAnchor(anchor_mod.anchor_path(key))
    watched.update(dict.fromkeys(watched, 0))  # (the import's alone)
    r = api.import_records(store, fixed_signer(), io.BytesIO(jsonl(records)), batch_size=BATCH, anchor=anchor)
    ids = store.conn.execute("SELECT contract, liquidation_id FROM entries WHERE liquidation_id IS NOT NULL "
                             "ORDER BY seq").fetchall()
    store.close()
    assert dump(tmp_path / "new.db") == dump(tmp_path / "ref.db")
    assert r.appended + r.duplicates == len(records) and r.duplicates > 60
    assert watched["spilled"] > 0 and watched["on_file"] > 0  # both structures went to disk
    assert watched["chunk"] <= BATCH and watched["older"] < CAP and watched["pending"] < CAP
    want = [anchor_mod.id_hash(anchor.state.ids_key, c, i) for c, i in ids]
    got = anchored_ids(key)
    assert len(got) == anchor.state.ids == len(ids) and set(got) == set(want)
    assert got[-len(ids) + 40:] == want[-len(ids) + 40:]  # the import's own, in order


@pytest.mark.parametrize("saved", [True, False])
def test_after_an_import_the_same_anchor_still_refuses_an_id_the_database_lost(tmp_path, watched, monkeypatch,
                                                                              saved):
    records = varied_records(200)
    store = ledger_with(tmp_path / "fund.db", records[:4])  # the contracts
    anchor = anchor_mod.WriterAnchor(anchor_mod.anchor_path(str(tmp_path / "fund.key")))
    if not saved:  # the anchor's file behind this process's state: checked from memory
        monkeypatch.setattr(anchor_mod, "LAZY_SAVE_SECONDS", 0.0)
        monkeypatch.setattr(anchor, "flush", lambda: None)
    api.import_records(store, fixed_signer(), io.BytesIO(jsonl(records[4:])), batch_size=BATCH, anchor=anchor)
    assert len(anchor.ids.packed) == 0  # the import's hashes are in the file, not in memory
    seq, c, i = store.conn.execute("SELECT seq, contract, liquidation_id FROM entries "
                                   "WHERE liquidation_id IS NOT NULL ORDER BY seq LIMIT 1 OFFSET 150").fetchone()
    store.conn.execute("DROP TRIGGER entries_no_update")
    store.conn.execute("UPDATE entries SET liquidation_id = 'gone' WHERE seq = ?", (seq,))
    replay = next(r for r in records if r["kind"] == "liquidation" and (r["contract"], r["id"]) == (c, i))
    with pytest.raises(VerificationError, match="was signed by this key"):
        store.append([replay], [fixed_signer()], anchor=anchor)
    store.close()


def test_spilled_pairs_are_found_exactly(monkeypatch):
    pairs = SpilledPairs(cap=4)
    pairs.update([("A", "x-1"), ("A", "x-3"), ("B", "x-2")])
    pairs.update([("A", "x-5"), ("B", "x-9")])  # the fifth: all five spill
    pairs.update([("A", "x-7")])
    assert pairs.spilled == 5 and pairs.mem == {("A", "x-7")}
    assert pairs.find("A", ["x-1", "x-2", "x-7", "x-8", "x-9"]) == {"x-1", "x-7"}
    assert pairs.find("B", ["x-1", "x-2", "x-9"]) == {"x-2", "x-9"} and pairs.find("C", ["x-1"]) == set()
    assert ("A", "x-3") in pairs and ("A", "x-7") in pairs and ("A", "x-4") not in pairs
    assert ("B", "x-1") not in pairs and ("C", "x-2") not in pairs
    pairs.close()


def test_a_hash_log_slices_across_its_file():
    log = HashLog(cap=3)
    values = [(1 << 64) - 1 - i for i in range(10)]
    for v in values:
        log.append(v)
    assert log.on_file == 9 and len(log) == 10
    for a, b in ((0, 10), (2, 5), (8, 10), (9, 10), (4, 4), (0, 3)):
        assert log[a:b] == values[a:b]
    assert list(log) == values
    log.close()


def test_a_frame_log_gives_back_what_was_appended():
    log = FrameLog()
    values = [(0, 1, 2000, 3, 1997, [("XBTUSDTM", "USDT", 8, None)], 1997), (), (5, "x" * 70_000, [])]
    for v in values:
        log.append(v)
    assert len(log) == 3 and list(log) == values and list(log) == values  # (read again from the start)
    log.close()
