"""The SQLite store (ledger/store/store.py): creation, append-only triggers, WAL,
transactions, replays, stored Merkle hashes, checkpoints and concurrent
writers."""

from __future__ import annotations

import base64
import hashlib
import multiprocessing
import os
import shutil
import sqlite3

import pytest

from ledger.ops import api
from ledger.tlog import merkle
from ledger.format import note
from ledger.format.entry import parse_entry_text
from ledger.errors import InvariantError, ProofError, RuleError, StoreError, VerificationError
from ledger.rules.fund import FundBook
from ledger.store import schema as schema_mod
from ledger.store.schema import Reader, derived_columns
from ledger.store.store import Store
from ledger.verify.run import verify_path

ORIGIN = "example.com/test-fund"


# --- helpers ------------------------------------------------------------------------


def raw(db: str) -> sqlite3.Connection:
    return sqlite3.connect(db, isolation_level=None)


def dump(db: str) -> list[str]:
    """The logical content of every table (robust to WAL checkpoints)."""
    c = raw(db)
    try:
        return list(c.iterdump())
    finally:
        c.close()


def count(db: str, table: str) -> int:
    c = raw(db)
    try:
        return c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        c.close()


def liq(i, contract="XBTUSDTM", fill="39100", side="long", qty="1"):
    return {"kind": "liquidation", "contract": contract, "id": f"L-{i}", "side": side, "qty": qty,
            "bankruptcy_price": "39000", "fill_price": fill}


def rfc6962_root(leaves: list[bytes]) -> bytes:
    """MTH per RFC 6962 section 2.1, straight from the definition."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + rfc6962_root(leaves[:k]) + rfc6962_root(leaves[k:])).digest()


class DictReader:
    def __init__(self, d):
        self.d = d

    def read_hashes(self, indexes):
        return [self.d[i] for i in indexes]


def set_stored_hash(db: str, index: int, value: bytes) -> None:
    """Overwrite stored hash ``index``: a leaf's in entries.leaf_hash, any other in tree."""
    level, n = merkle.split_stored_hash_index(index)
    c = raw(db)
    if level == 0:
        cur = c.execute("UPDATE entries SET leaf_hash = ? WHERE seq = ?", (value, n))
    else:
        cur = c.execute("UPDATE tree SET hash = ? WHERE id = ?", (value, index))
    if cur.rowcount != 1:
        raise RuntimeError(f"no stored hash {index}")
    c.close()


def drop_triggers(db: str) -> None:
    c = raw(db)
    for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        c.execute(f"DROP TRIGGER {name}")
    c.close()


# --- create / open ----------------------------------------------------------------------


def test_create_and_open(tmp_path):
    db = str(tmp_path / "f.db")
    signer = note.generate_signer(ORIGIN)
    s = Store.create(db, ORIGIN, signer.verifier().vkey())
    assert s.size() == 0 and s.origin == ORIGIN and s.vkey == signer.verifier().vkey()
    s.close()
    s = Store.open(db)
    assert s.size() == 0 and s.origin == ORIGIN
    s.append([{"kind": "contract", "symbol": "A", "currency": "USDT", "scale": 2}], [signer])
    s.close()
    ro = Reader.open(db)
    assert ro.size() == 1
    # a read-only open cannot write: the Reader has no writes, and its
    # connection refuses them
    assert not isinstance(ro, Store) and not hasattr(ro, "append")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        ro.conn.execute("DELETE FROM meta")
    ro.close()


def test_create_refuses_overwrite(tmp_path):
    db = tmp_path / "f.db"
    db.write_bytes(b"precious")
    with pytest.raises(StoreError, match="already exists"):
        Store.create(str(db), ORIGIN, note.generate_signer(ORIGIN).verifier().vkey())
    assert db.read_bytes() == b"precious"


def test_create_refuses_existing_ledger(ledger):
    before = dump(ledger.db)
    with pytest.raises(StoreError):
        Store.create(ledger.db, ORIGIN, ledger.signer.verifier().vkey())
    assert dump(ledger.db) == before


def test_create_refuses_bad_origin(tmp_path):
    from ledger.errors import FormatError

    db = tmp_path / "f.db"
    with pytest.raises(FormatError):
        Store.create(str(db), "bad origin", note.generate_signer(ORIGIN).verifier().vkey())
    assert not db.exists()


def test_open_missing(tmp_path):
    with pytest.raises(StoreError, match="no such ledger"):
        Store.open(str(tmp_path / "nope.db"))
    assert not (tmp_path / "nope.db").exists()


@pytest.mark.parametrize("content", [b"not a database at all" * 100, b""])
@pytest.mark.parametrize("readonly", [False, True])
def test_open_non_database_refused(tmp_path, content, readonly):
    p = tmp_path / "x.db"
    p.write_bytes(content)
    with pytest.raises(StoreError):
        (Reader.open if readonly else Store.open)(str(p))


def _foreign_db(tmp_path):
    p = tmp_path / "other.db"
    c = sqlite3.connect(p)
    c.execute("CREATE TABLE t (x)")
    c.execute("INSERT INTO t VALUES (1)")
    c.commit()
    c.close()
    return p


def test_open_foreign_sqlite_refused(tmp_path):
    p = _foreign_db(tmp_path)
    with pytest.raises(StoreError, match="not a fundledger"):
        Store.open(str(p))


@pytest.mark.parametrize("kind", ["foreign", "empty"])
def test_open_refused_file_is_not_modified(tmp_path, kind):
    if kind == "foreign":
        p = _foreign_db(tmp_path)
    else:
        p = tmp_path / "empty.db"
        p.write_bytes(b"")
    before = p.read_bytes()
    with pytest.raises(StoreError):
        Store.open(str(p))
    assert p.read_bytes() == before
    assert not os.path.exists(str(p) + "-wal")


def test_wal_mode_and_synchronous(ledger):
    assert ledger.store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ledger.store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    c = raw(ledger.db)
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    c.close()


# --- append-only triggers ------------------------------------------------------------------------


@pytest.fixture
def filled(ledger):
    ledger.contract()
    for i in range(5):
        ledger.liquidation(id=f"L-{i}", fill_price=str(38900 + 50 * i))
    ledger.checkpoint()
    ledger.liquidation(id="L-9")
    ledger.checkpoint()
    return ledger


def _row(c, table, key, value):
    return c.execute(f"SELECT * FROM {table} WHERE {key} = ?", (value,)).fetchone()


# (the tree table's first row is node (1, 0), stored hash 2: leaf hashes are entries.leaf_hash)
TABLES = [("entries", "seq", 0), ("tree", "id", 2), ("checkpoints", "id", 1)]


@pytest.mark.parametrize("table, key, first", TABLES)
def test_triggers_refuse_update(filled, table, key, first):
    before = dump(filled.db)
    c = raw(filled.db)
    col = {"entries": "data", "tree": "hash", "checkpoints": "note"}[table]
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        c.execute(f"UPDATE {table} SET {col} = ? WHERE {key} = ?", (b"forged", first))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        c.execute(f"UPDATE {table} SET {key} = {key} + 1000")
    c.close()
    assert dump(filled.db) == before


@pytest.mark.parametrize("table, key, first", TABLES)
def test_triggers_refuse_delete(filled, table, key, first):
    before = dump(filled.db)
    c = raw(filled.db)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        c.execute(f"DELETE FROM {table} WHERE {key} = ?", (first,))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        c.execute(f"DELETE FROM {table}")
    c.close()
    assert dump(filled.db) == before


@pytest.mark.parametrize("table, key, first", TABLES)
def test_triggers_refuse_insert_or_replace_and_gaps(filled, table, key, first):
    before = dump(filled.db)
    c = raw(filled.db)
    row = list(_row(c, table, key, first))
    cols = len(row)
    top = c.execute(f"SELECT MAX({key}) FROM {table}").fetchone()[0]
    q = ", ".join("?" * cols)
    # replace an existing row
    with pytest.raises(sqlite3.DatabaseError):
        c.execute(f"INSERT OR REPLACE INTO {table} VALUES ({q})", row)
    with pytest.raises(sqlite3.DatabaseError):
        c.execute(f"REPLACE INTO {table} VALUES ({q})", row)
    if table == "tree":
        # no row below the greatest id, not even in a free id (a leaf's)
        for free in (0, 1, merkle.stored_hash_index(0, 4), top - 1):
            assert c.execute("SELECT COUNT(*) FROM tree WHERE id = ?", (free,)).fetchone()[0] == 0
            with pytest.raises(sqlite3.DatabaseError, match="above every stored id"):
                c.execute(f"INSERT INTO {table} VALUES ({q})", [free, row[1]])
            with pytest.raises(sqlite3.DatabaseError, match="above every stored id"):
                c.execute(f"INSERT OR IGNORE INTO {table} VALUES ({q})", [free, row[1]])
    else:
        # a gap: not the next row
        gap = list(row)
        gap[0] = top + 2
        with pytest.raises(sqlite3.DatabaseError, match="only the next row"):
            c.execute(f"INSERT INTO {table} VALUES ({q})", gap)
        with pytest.raises(sqlite3.DatabaseError, match="only the next row"):
            c.execute(f"INSERT OR IGNORE INTO {table} VALUES ({q})", gap)
    neg = list(row)
    neg[0] = -1
    with pytest.raises(sqlite3.DatabaseError):
        c.execute(f"INSERT INTO {table} VALUES ({q})", neg)
    c.close()
    assert dump(filled.db) == before


def test_insert_or_replace_via_unique_liquidation_index_refused(filled):
    before = dump(filled.db)
    c = raw(filled.db)
    row = list(c.execute("SELECT * FROM entries WHERE liquidation_id = 'L-0'").fetchone())
    row[0] = c.execute("SELECT MAX(seq) + 1 FROM entries").fetchone()[0]
    try:
        with pytest.raises(sqlite3.DatabaseError):
            c.execute(f"INSERT OR REPLACE INTO entries VALUES ({', '.join('?' * len(row))})", row)
    finally:
        c.close()
        assert dump(filled.db) == before


# --- append ------------------------------------------------------------------------------------


def test_append_returns_seqs_and_writes_derived_columns(ledger):
    r = ledger.contract()
    assert r.appended == [0] and r.duplicates == [] and r.tree_size == 1
    r = ledger.append(liq(1), liq(2, fill="38850", side="long"), liq(3, side="short", fill="39000"))
    assert r.appended == [1, 2, 3] and r.tree_size == 4
    assert ledger.store.size() == 4
    prev = bytes(32)
    for row in ledger.store.iter_rows():
        seq, data, leaf = row[0], row[1], row[2]
        assert leaf == hashlib.sha256(b"\x00" + data).digest()
        text, _ = note.open_note(data, [ledger.signer.verifier()])
        obj = parse_entry_text(text)
        assert obj["seq"] == seq and base64.b64decode(obj["prev"]) == prev
        fields = {k: v for k, v in obj.items() if k != "prev"}
        assert tuple(row) == derived_columns(seq, data, leaf, fields)
        prev = leaf


def test_append_uses_record_time_and_clock(ledger):
    ledger.store.append([{"kind": "contract", "symbol": "A", "currency": "USDT", "scale": 2}], [ledger.signer],
                        clock=lambda: "2026-01-01T00:00:00Z")
    ledger.append(dict(liq(1, "A"), time="2026-11-23T20:29:07.120+01:30"))
    rows = list(ledger.store.iter_rows())
    assert rows[0][3] == "2026-01-01T00:00:00Z"
    assert rows[1][3] == "2026-11-23T18:59:07.12Z"


def test_append_is_one_transaction(ledger):
    ledger.contract()
    ledger.liquidation(id="L-0")
    ledger.checkpoint()
    before = dump(ledger.db)
    bad_records = [
        [liq(1), liq(2), dict(liq(3), qty="0")],
        [{"kind": "contract", "symbol": "B", "currency": "USDT", "scale": 2}, liq(1, "B"), liq(2, "NOPE")],
        [liq(1), {"kind": "withdrawal", "contract": "XBTUSDTM", "amount": "100"}],
        [liq(1), dict(liq(2), time="2016-12-31T23:59:60Z")],
        [liq(1), dict(liq(2), mark_price="NaN")],
    ]
    for records in bad_records:
        with pytest.raises(RuleError):
            ledger.append(*records)
        assert dump(ledger.db) == before
        assert ledger.store.size() == 2
    # still usable afterwards
    assert ledger.append(liq(1)).appended == [2]


def test_append_refuses_wrong_key_and_writes_nothing(ledger):
    ledger.contract()
    before = dump(ledger.db)
    other = note.generate_signer(ORIGIN)
    with pytest.raises(StoreError, match="key does not match"):
        ledger.store.append([liq(1)], [other])
    with pytest.raises(StoreError):
        ledger.store.add_checkpoint([other])
    assert dump(ledger.db) == before


def test_append_batch_limit(ledger):
    ledger.contract()
    with pytest.raises(InvariantError):
        ledger.store.append([liq(i) for i in range(10_001)], [ledger.signer])
    assert ledger.store.size() == 1


def test_replay_writes_nothing_and_reports_duplicate(ledger):
    ledger.contract()
    ledger.liquidation(id="L-1")
    before = dump(ledger.db)
    r = ledger.liquidation(id="L-1")
    assert r.appended == [] and len(r.duplicates) == 1 and "duplicate" in r.duplicates[0] and "L-1" in r.duplicates[0]
    r = ledger.contract()
    assert r.appended == [] and len(r.duplicates) == 1 and "duplicate" in r.duplicates[0]
    assert dump(ledger.db) == before
    # a batch mixing replays and new records writes only the new ones
    r = ledger.append(liq(1), liq(2), liq(2), liq(3))
    assert r.appended == [2, 3] and len(r.duplicates) == 2
    # the same id on another contract is not a replay
    ledger.contract(symbol="ETHUSDTM")
    assert ledger.append(liq(1, "ETHUSDTM")).appended == [5]


@pytest.mark.parametrize(
    "recorded, incoming, lookups",
    [
        (["L-5"], ["L-6", "L-7"], False),  # every new id sorts after the greatest: one seek
        (["L-5"], ["L-6", "L-5"], True),  # a replay among them
        (["L-5"], ["L-4"], True),  # an id below the greatest may be recorded
        (["L-9"], ["L-10"], True),  # text order: "L-10" < "L-9"
        (["L-9"], ["L-90", "M"], False),
        (["~"], ["!"], True),  # the ends of printable ASCII
        ([], ["L-1"], False),
    ],
)
def test_replay_lookups_skip_ids_past_the_greatest(ledger, recorded, incoming, lookups):
    """Replays are found whichever way the ids sort; the per-id lookups are
    skipped only when no incoming id can be recorded already."""
    ledger.contract()
    if recorded:
        ledger.append(*[dict(liq(0), id=i) for i in recorded])
    statements = []
    ledger.store.conn.set_trace_callback(statements.append)
    try:
        r = ledger.append(*[dict(liq(0), id=i) for i in incoming])
    finally:
        ledger.store.conn.set_trace_callback(None)
    replays = [i for i in incoming if i in recorded]
    assert len(r.duplicates) == len(replays) and len(r.appended) == len(incoming) - len(replays)
    assert any("liquidation_id IN" in q for q in statements) == lookups


def test_contract_summary_matches_replay_of_entries(ledger):
    ledger.contract()
    ledger.contract(symbol="XBTUSDM", currency="XBT", type="inverse", multiplier="100")
    recs = []
    for i in range(40):
        recs.append(liq(i, "XBTUSDTM" if i % 2 else "XBTUSDM", fill=str(38800 + 17 * i), side="long" if i % 3 else "short"))
    ledger.append(*recs[:20])
    ledger.append(*recs[20:])
    book = FundBook()
    for seq, data in ledger.store.iter_entries():
        obj = parse_entry_text(note.split_note(data)[0])
        rec = dict(obj)
        if obj["kind"] == "contract":
            rec["symbol"] = obj["contract"]
        fields = book.build(rec)
        book.apply(dict(fields, seq=seq, time=obj["time"]))
    rows = {r["symbol"]: r for r in ledger.store.contract_rows()}
    for sym, fund in book.funds.items():
        s = fund.summary()
        r = rows[sym]
        assert (r["balance"], r["credited"], r["paid"], r["adl"], r["liquidations"], r["last_seq"]) == (
            s["balance"], s["credited"], s["paid"], s["adl"], s["liquidations"], s["last_seq"])


# --- stored Merkle hashes ---------------------------------------------------------------------------


def test_stored_tree_hashes_equal_recomputed(ledger):
    ledger.contract()
    # several appends of different sizes, so that batches straddle subtree edges
    n = 0
    for size in (1, 2, 5, 1, 8, 16, 3, 31):
        ledger.append(*[liq(n + i) for i in range(size)])
        n += size
    size = ledger.store.size()
    assert size == 68
    leaves = []
    for seq, data in ledger.store.iter_entries():
        leaves.append(hashlib.sha256(b"\x00" + data).digest())
    expected: dict[int, bytes] = {}
    reader = DictReader(expected)
    for i, leaf in enumerate(leaves):
        first = merkle.stored_hash_index(0, i)
        for j, h in enumerate(merkle.stored_hashes_for_leaf(i, leaf, reader)):
            expected[first + j] = h
    c = raw(ledger.db)
    stored = dict(c.execute("SELECT id, hash FROM tree").fetchall())
    leaf_column = [h for (h,) in c.execute("SELECT leaf_hash FROM entries ORDER BY seq")]
    c.close()
    # the tree table holds every stored hash above the leaves; entries.leaf_hash the leaves'
    assert stored == {i: h for i, h in expected.items() if merkle.split_stored_hash_index(i)[0] > 0}
    assert len(stored) == merkle.stored_hash_count(size) - size
    assert leaf_column == leaves
    # any set of stored hashes reads back right: all, runs of leaves, singles, mixed, unordered
    every = sorted(expected)
    assert ledger.store.read_hashes(every) == [expected[i] for i in every]
    leaf_ids = [merkle.stored_hash_index(0, n) for n in range(size)]
    for lo, hi in ((0, size), (5, 6), (7, 40), (size - 1, size)):
        assert ledger.store.read_hashes(leaf_ids[lo:hi]) == leaves[lo:hi]
    for i in every:
        assert ledger.store.read_hashes([i]) == [expected[i]]
    mixed = [every[-1], leaf_ids[3], every[2], leaf_ids[3], leaf_ids[0]]
    assert ledger.store.read_hashes(mixed) == [expected[i] for i in mixed]
    with pytest.raises(ProofError, match="missing"):
        ledger.store.read_hashes([merkle.stored_hash_index(0, size)])  # a leaf not there yet
    with pytest.raises(ProofError, match="missing"):
        ledger.store.read_hashes([merkle.stored_hash_index(0, size - 1), merkle.stored_hash_index(0, size)])
    with pytest.raises(ProofError, match="missing"):
        ledger.store.read_hashes([merkle.stored_hash_index(3, 8)])  # a node not there yet
    for k in range(size + 1):
        want = rfc6962_root(leaves[:k])
        assert merkle.tree_hash(k, reader) == want
        assert ledger.store.tree_hash(k) == want


# --- checkpoints -------------------------------------------------------------------------------------


def test_checkpoint_one_per_size(ledger):
    ledger.contract()
    ledger.liquidation()
    size, signed, created = ledger.checkpoint()
    assert (size, created) == (2, True)
    text, _ = note.open_note(signed, [ledger.signer.verifier()])
    cp = note.parse_checkpoint(text)
    assert cp.origin == ORIGIN and cp.tree_size == 2 and cp.root_hash == ledger.store.tree_hash()
    again = ledger.checkpoint()
    assert again == (2, signed, False)
    assert count(ledger.db, "checkpoints") == 1
    ledger.liquidation(id="L-2")
    size, signed2, created = ledger.checkpoint()
    assert (size, created) == (3, True) and signed2 != signed
    assert [r[1] for r in ledger.store.checkpoints()] == [2, 3]
    assert ledger.store.published_checkpoint() == signed2


def test_checkpoint_of_empty_log(ledger):
    size, signed, created = ledger.checkpoint()
    assert size == 0 and created
    text, _ = note.open_note(signed, [ledger.signer.verifier()])
    assert note.parse_checkpoint(text).root_hash == hashlib.sha256(b"").digest()


@pytest.mark.parametrize(
    "target",
    [
        merkle.stored_hash_index(0, 2),  # leaf 2: in the old tree's right edge
        merkle.stored_hash_index(2, 0),  # the subtree of leaves 0..3
        merkle.stored_hash_index(1, 0),  # leaves 0..1
    ],
)
def test_checkpoint_refused_when_stored_tree_tampered(ledger, target):
    ledger.contract()
    ledger.append(liq(1), liq(2))
    ledger.checkpoint()  # size 3
    ledger.append(liq(3), liq(4))  # size 5
    drop_triggers(ledger.db)
    set_stored_hash(ledger.db, target, hashlib.sha256(b"forged").digest())
    before = dump(ledger.db)
    with pytest.raises(StoreError, match="refusing to sign"):
        ledger.checkpoint()
    assert dump(ledger.db) == before
    assert count(ledger.db, "checkpoints") == 1


@pytest.mark.parametrize("previous_checkpoint", [True, False])
def test_checkpoint_refused_when_new_part_of_tree_tampered(ledger, previous_checkpoint):
    ledger.contract()
    ledger.append(liq(1), liq(2))
    if previous_checkpoint:
        ledger.checkpoint()  # size 3
    ledger.append(liq(3), liq(4))  # size 5
    drop_triggers(ledger.db)
    set_stored_hash(ledger.db, merkle.stored_hash_index(0, 4), hashlib.sha256(b"forged").digest())
    before = dump(ledger.db)
    with pytest.raises(StoreError, match="refusing to sign"):
        ledger.checkpoint()
    assert dump(ledger.db) == before
    assert count(ledger.db, "checkpoints") == (1 if previous_checkpoint else 0)


def test_checkpoint_refused_when_tampered_at_same_size(ledger):
    ledger.contract()
    ledger.append(liq(1), liq(2), liq(3))
    ledger.checkpoint()  # size 4
    drop_triggers(ledger.db)
    c = raw(ledger.db)
    c.execute("UPDATE tree SET hash = ? WHERE id = ?", (bytes(32), merkle.stored_hash_index(2, 0)))
    c.close()
    with pytest.raises(StoreError):
        ledger.checkpoint()
    assert count(ledger.db, "checkpoints") == 1


# --- two writers ----------------------------------------------------------------------------------------


def _writer(db, key, prefix, n, batch, barrier, q):
    try:
        from ledger.ops.keys import load_key_file

        s = Store.open(db)
        signer = load_key_file(key)
        barrier.wait(timeout=30)
        contracts = ["XBTUSDTM", "ETHUSDTM"]
        written = 0
        for start in range(0, n, batch):
            recs = []
            for i in range(start, min(n, start + batch)):
                recs.append({"kind": "liquidation", "contract": contracts[i % 2], "id": f"{prefix}-{i}",
                             "side": "long" if i % 3 else "short", "qty": "1", "bankruptcy_price": "39000",
                             "fill_price": str(38950 + i % 100)})
            written += len(s.append(recs, [signer]).appended)
        s.close()
        q.put(("ok", written))
    except BaseException as e:  # report, never hang the parent
        q.put(("error", repr(e)))


def test_two_processes_appending_at_once(ledger):
    ledger.contract()
    ledger.contract(symbol="ETHUSDTM")
    ledger.store.close()
    ctx = multiprocessing.get_context("spawn")  # a fork would inherit locks held by other threads of the suite
    barrier = ctx.Barrier(2)
    q = ctx.Queue()
    n = 300
    procs = [ctx.Process(target=_writer, args=(ledger.db, ledger.key, p, n, 7, barrier, q)) for p in ("A", "B")]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results == [("ok", n), ("ok", n)]
    s = Store.open(ledger.db)
    ledger.store = s  # closed by the fixture
    assert s.size() == 2 + 2 * n
    c = raw(ledger.db)
    ids = {r[0] for r in c.execute("SELECT liquidation_id FROM entries WHERE kind = 'liquidation'")}
    seqs = [r[0] for r in c.execute("SELECT seq FROM entries ORDER BY seq")]
    c.close()
    assert ids == {f"{p}-{i}" for p in "AB" for i in range(n)}
    assert seqs == list(range(2 + 2 * n))
    s.add_checkpoint([ledger.signer])
    report = verify_path(ledger.db)
    assert report.tree_size == 2 + 2 * n
    assert sum(f.liquidations for f in report.book.funds.values()) == 2 * n


# --- key rotation -------------------------------------------------------------------------------------------


def test_key_rotation_hands_the_log_over(ledger):
    ledger.contract()
    ledger.liquidation(id="L-1")
    ledger.checkpoint()
    new_path = str(ledger.dir / "new.key")
    seq, new = api.rotate_key(ledger.store, ledger.signer, new_path)
    assert seq == 2 and ledger.store.size() == 3
    assert oct(os.stat(new_path).st_mode & 0o777) == oct(0o600)
    before = dump(ledger.db)
    with pytest.raises(StoreError):
        ledger.store.append([liq(2)], [ledger.signer])  # the retired key
    with pytest.raises(StoreError):
        ledger.store.add_checkpoint([ledger.signer])
    assert dump(ledger.db) == before
    assert ledger.store.append([liq(2)], [new]).appended == [3]
    ledger.store.add_checkpoint([new])
    report = verify_path(ledger.db)
    assert report.tree_size == 4
    # a fresh open knows the new key too
    s = Store.open(ledger.db)
    with pytest.raises(StoreError):
        s.append([liq(3)], [ledger.signer])
    assert s.append([liq(3)], [new]).appended == [4]
    s.close()
    # the old key cannot come back, and the key must be named for the log
    with pytest.raises(StoreError):
        ledger.store.rotate_key(new, ledger.signer)
    with pytest.raises(StoreError):
        ledger.store.rotate_key(new, note.generate_signer("example.com/another"))


def test_key_rotation_refused_with_wrong_current_key(ledger):
    ledger.contract()
    before = dump(ledger.db)
    with pytest.raises(StoreError):
        ledger.store.rotate_key(note.generate_signer(ORIGIN), note.generate_signer(ORIGIN))
    assert dump(ledger.db) == before


def test_store_opened_before_rotation_refuses_retired_key(ledger):
    ledger.contract()
    early = Store.open(ledger.db)  # e.g. a long-running importer
    try:
        api.rotate_key(ledger.store, ledger.signer, str(ledger.dir / "new.key"))
        before = dump(ledger.db)
        with pytest.raises(StoreError):
            early.append([liq(1)], [ledger.signer])
        with pytest.raises(StoreError):
            early.add_checkpoint([ledger.signer])
        assert dump(ledger.db) == before
    finally:
        early.close()


def test_sqlite_utils_view_of_the_store(ledger):
    """``Store.db`` is the same connection through sqlite-utils, imported
    only when asked for (the CLI's start-up does not pay for it)."""
    import subprocess
    import sys

    import sqlite_utils

    ledger.contract()
    assert isinstance(ledger.store.db, sqlite_utils.Database)
    assert ledger.store.db["contracts"].count == 1
    code = "import sys, ledger.cli; print('sqlite_utils' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_liquidation_row_is_the_derived_columns(ledger):
    """The verifier's field-by-field row equals the one the writer stores."""
    from ledger.format import entry as entry_mod
    from ledger.store.schema import derived_columns, liquidation_row

    ledger.contract()
    ledger.liquidation(mark_price="39120")
    ledger.liquidation(id="L-2", side="short", fill_price="38000")
    for seq in (1, 2):
        row = ledger.store.conn.execute("SELECT * FROM entries WHERE seq = ?", (seq,)).fetchone()
        text, _ = entry_mod.note.split_note(row[1], entry_mod.MAX_ENTRY_BYTES)
        obj = entry_mod.parse_entry_text(text)
        assert row == derived_columns(seq, row[1], row[2], obj)
        assert row == liquidation_row(seq, row[1], row[2], obj["time"], obj["contract"], obj["id"], obj["side"],
                                      obj["qty"], obj["bankruptcy_price"], obj["fill_price"], obj.get("mark_price"),
                                      obj["delta"], obj["paid"], obj["adl"], obj["balance"])


# --- schema 1 ledgers ------------------------------------------------------------------------------

SCHEMA1 = os.path.join(os.path.dirname(__file__), "data", "schema1")  # provenance: its README.md
SCHEMA1_ROOT_14 = base64.b64decode("KR7AJtIrFnKUhkYk+BqpbZf2sCNODFmv1Q/NjkcBGVE=")
SCHEMA1_ROOT_20 = base64.b64decode("y9tJFZzsXMHQ+nPhM+5RSML494G2FF8/+SJUmPTcY80=")


@pytest.fixture
def schema1(tmp_path):
    """A copy of the schema 1 ledger of tests/data/schema1 and its key."""
    db, key = str(tmp_path / "fund.db"), str(tmp_path / "fund.key")
    shutil.copyfile(os.path.join(SCHEMA1, "fund.db"), db)
    shutil.copyfile(os.path.join(SCHEMA1, "fund.key"), key)
    os.chmod(key, 0o600)
    return db, key


def _schema_of(db: str) -> tuple[str, list[str], int]:
    c = raw(db)
    try:
        (schema,) = c.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        triggers = sorted(r[0] for r in c.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger'"))
        return schema, triggers, c.execute("SELECT COUNT(*) FROM tree").fetchone()[0]
    finally:
        c.close()


def test_schema1_is_read_as_it_is(schema1):
    db, _ = schema1
    before = dump(db)
    assert _schema_of(db)[0] == "1" and count(db, "tree") == merkle.stored_hash_count(20) == 38
    s = Reader.open(db)
    try:
        assert s.schema == "1" and s.size() == 20
        assert s.tree_hash(14) == SCHEMA1_ROOT_14 and s.tree_hash() == SCHEMA1_ROOT_20
        every = list(range(merkle.stored_hash_count(20)))
        leaves = [merkle.leaf_hash(d) for _, d in s.iter_entries()]
        assert [s.read_hashes([i])[0] for i in every] == s.read_hashes(every)
        assert s.read_hashes([merkle.stored_hash_index(0, n) for n in range(20)]) == leaves
        receipt = api.prove(s, 7)
        assert not hasattr(s, "append")  # a reader never writes, so never upgrades
    finally:
        s.close()
    result = verify_path(db, workers=1)
    assert (result.tree_size, result.root) == (20, SCHEMA1_ROOT_20)
    assert api.check_receipt(receipt, note.parse_vkey(open(os.path.join(SCHEMA1, "fund.vkey")).read().strip()))
    assert dump(db) == before  # reading wrote nothing


def test_schema1_verify_checks_its_leaf_rows(schema1):
    db, _ = schema1
    drop_triggers(db)
    c = raw(db)
    c.execute("UPDATE tree SET hash = zeroblob(32) WHERE id = ?", (merkle.stored_hash_index(0, 9),))
    c.close()
    with pytest.raises(VerificationError, match="stored Merkle hash") as e:
        verify_path(db, workers=1)
    assert e.value.seq == 9


def test_a_writer_upgrades_schema1_in_place(schema1, tmp_path):
    db, key = schema1
    from ledger.ops.keys import load_key_file

    signer = load_key_file(key)
    s = Store.open(db)
    try:
        assert s.schema == "3"
        assert s.tree_hash(14) == SCHEMA1_ROOT_14 and s.tree_hash() == SCHEMA1_ROOT_20
    finally:
        s.close()
    # the same schema, triggers and tree rows as a ledger made by this version
    fresh, _ = api.init_ledger(str(tmp_path / "fresh.db"), str(tmp_path / "fresh.key"), ORIGIN)
    fresh.close()
    schema, triggers, tree_rows = _schema_of(db)
    assert (schema, triggers) == _schema_of(str(tmp_path / "fresh.db"))[:2]
    c = raw(db)
    assert {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")} == set(schema_mod.TRIGGER_NAMES)
    c.close()
    assert tree_rows == merkle.stored_hash_count(20) - 20
    result = verify_path(db, workers=1)
    assert (result.tree_size, result.root) == (20, SCHEMA1_ROOT_20)
    # and it is written to as any other: appends, checkpoints, the triggers
    s = Store.open(db)
    try:
        assert s.append([liq(100, contract="XBTUSDTM")], [signer]).appended == [20]
        assert s.add_checkpoint([signer])[0] == 21
    finally:
        s.close()
    c = raw(db)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        c.execute("DELETE FROM tree")
    with pytest.raises(sqlite3.DatabaseError, match="above every stored id"):
        c.execute("INSERT INTO tree VALUES (0, zeroblob(32))")
    with pytest.raises(sqlite3.DatabaseError, match="once per contract"):
        c.execute("INSERT INTO entries SELECT 21, data, leaf_hash, time, kind, contract, liquidation_id, side, qty, "
                  "bankruptcy_price, fill_price, mark_price, delta, paid, adl, balance FROM entries WHERE seq = 20")
    c.close()
    result = verify_path(db, workers=1)
    assert result.tree_size == 21 and result.checkpoint_size == 21
    # a second open finds schema 3 and changes nothing
    before = dump(db)
    Store.open(db).close()
    assert dump(db) == before


def test_schema1_upgrade_is_all_or_nothing(schema1, monkeypatch):
    db, _ = schema1
    before = dump(db)
    monkeypatch.setattr(schema_mod, "TREE_INSERT", "CREATE TRIGGER broken")
    with pytest.raises(StoreError, match="upgrading the ledger from schema 1"):
        Store.open(db)
    assert dump(db) == before and _schema_of(db)[0] == "1"
    monkeypatch.undo()
    Store.open(db).close()
    assert _schema_of(db)[0] == "3"


def test_hash_reads_are_bounded(filled):
    with pytest.raises(InvariantError, match="stored hashes in one read"):
        filled.store.read_hashes(range(schema_mod.MAX_HASH_READ + 1))


def test_a_reader_sees_schema1_or_3_never_a_mix(schema1):
    db, _ = schema1
    reader = Reader.open(db)
    try:
        with reader.snapshot():
            before = reader.conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            Store.open(db).close()  # a writer upgrades the file meanwhile
            during = (reader.conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone(),
                      reader.conn.execute("SELECT COUNT(*) FROM tree").fetchone()[0], reader.tree_hash())
        after = (reader.conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone(),
                 reader.conn.execute("SELECT COUNT(*) FROM tree").fetchone()[0], reader.tree_hash())
    finally:
        reader.close()
    assert before == ("1",) and during == (("1",), 38, SCHEMA1_ROOT_20)
    assert after == (("3",), 18, SCHEMA1_ROOT_20)  # (through schema 2, in two transactions)


def test_readers_never_import_the_writer(ledger):
    """The verifier and the site read a ledger through schema.Reader only:
    opening and verifying a database, exporting it and the site's modules
    load neither the writer nor the bulk import."""
    import subprocess
    import sys

    ledger.contract()
    ledger.store.add_checkpoint([ledger.signer])
    code = (
        "import sys\n"
        "from ledger.verify.run import verify_path\n"
        "from publish import export, tlog, verified, views, site\n"
        "from ledger.store.schema import Reader\n"
        f"verify_path({ledger.db!r}, workers=1)\n"
        f"export.export(Reader.open({ledger.db!r}), {str(ledger.db) + '.out'!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith('ledger.store.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['ledger.store.schema']"
