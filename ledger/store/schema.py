"""The ledger's SQLite schema and its read side: what a reader may import.

Layout, schema 3 (see docs/FORMAT.md for the public formats)::

    meta(key, value)                 origin, vkey, schema version
    entries(seq INTEGER PRIMARY KEY, data BLOB, leaf_hash BLOB, ...derived columns)
    tree(id INTEGER PRIMARY KEY, hash BLOB)      RFC 6962 stored hashes above the leaves
    contracts(symbol PRIMARY KEY, ..., lot, allocations)  per-fund summary, rewritten on each append
    checkpoints(id, tree_size, root, time, note) every signed checkpoint, in order
    cosignatures(checkpoint_id, name, key_id, line, timestamp)

The stored Merkle hashes are x/mod's: hash (level L, n) has the stored-hash
index ``merkle.stored_hash_index(L, n)``. Those of level 0, the leaf hashes,
are ``entries.leaf_hash`` (of entry n); ``tree`` holds the others (about one
per entry), each under its stored-hash index, so its ids skip the leaves'.
Schema 1 kept the leaf hashes in ``tree`` too: it is read as it is (a writer
upgrades it, ``ledger.store.store.upgrade_schema``); schema 2 lacked the
contracts' ``lot`` and ``allocations`` (a writer adds them, NULL and 0).

``entries``, ``tree`` and ``checkpoints`` are append-only: triggers refuse
UPDATE and DELETE, and BEFORE INSERT triggers refuse any row that is not the
next one (``tree``: whose id is not above every id there), which also
defeats ``INSERT OR REPLACE``, and a liquidation id a contract has recorded.
Everything but ``entries.data`` and ``checkpoints.note`` is derived; the
verifier cross-checks it against those bytes.

This module never writes: the DDL is text here, executed by the writer
(:mod:`ledger.store.store`), and :class:`Reader` opens a ledger read-only.
The verifier and the site import this module, never the writer.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from typing import Iterator, Sequence

from ledger.errors import InvariantError, ProofError, StoreError
from ledger.format import entry as entry_mod
from ledger.format import note
from ledger.rules.fund import Contract, Fund, FundBook, parse_amount
from ledger.tlog import merkle

SCHEMA_VERSION = "3"
READABLE_SCHEMAS = ("1", "2", "3")  # 1: leaf hashes in `tree` too; 2: no lot, allocations; upgraded by a writer
BUSY_TIMEOUT_MS = 30_000
READER_MMAP_BYTES = 1 << 30  # read-only connections map up to 1 GiB of the file
MAX_HASH_READ = 1 << 12  # stored hashes in one read: a tile is 256, a proof about 2 * 64

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (
    seq INTEGER PRIMARY KEY,
    data BLOB NOT NULL,
    leaf_hash BLOB NOT NULL,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    contract TEXT NOT NULL,
    liquidation_id TEXT,
    side TEXT,
    qty TEXT,
    bankruptcy_price TEXT,
    fill_price TEXT,
    mark_price TEXT,
    delta TEXT,
    paid TEXT,
    adl TEXT,
    balance TEXT
);
CREATE UNIQUE INDEX entries_liquidation ON entries(contract, liquidation_id)
    WHERE liquidation_id IS NOT NULL;
CREATE INDEX entries_contract_seq ON entries(contract, seq);
CREATE TABLE tree (id INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE contracts (
    symbol TEXT PRIMARY KEY,
    currency TEXT NOT NULL,
    scale INTEGER NOT NULL,
    type TEXT NOT NULL,
    multiplier TEXT NOT NULL,
    registered_seq INTEGER NOT NULL,
    balance TEXT NOT NULL,
    balance_usd TEXT,
    credited TEXT NOT NULL,
    paid TEXT NOT NULL,
    adl TEXT NOT NULL,
    liquidations INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    last_time TEXT,
    last_price TEXT
);
CREATE TABLE checkpoints (
    id INTEGER PRIMARY KEY,
    tree_size INTEGER NOT NULL,
    root BLOB NOT NULL,
    time TEXT NOT NULL,
    note BLOB NOT NULL
);
CREATE TABLE cosignatures (
    checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id),
    name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    line BLOB NOT NULL,
    PRIMARY KEY (checkpoint_id, name, key_id)
);
"""

# Schema 3: a contract's lot size and its adl entries (docs/FORMAT.md,
# "Auto-deleveraging"). Added by ALTER TABLE in a new ledger too, so that a
# new and an upgraded ledger have the very same schema text.
SCHEMA_3 = (
    "ALTER TABLE contracts ADD COLUMN lot TEXT",
    "ALTER TABLE contracts ADD COLUMN allocations INTEGER NOT NULL DEFAULT 0",
    # a fund's adl entries, found without walking its liquidations
    "CREATE INDEX entries_adl ON entries(contract, seq) WHERE kind = 'adl'",
)
SCHEMA_3_TABLES = SCHEMA + "".join(sql + ";\n" for sql in SCHEMA_3)  # a new ledger's tables and indexes

_NO_UPDATE = """
CREATE TRIGGER {t}_no_update BEFORE UPDATE ON {t}
    BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END;
"""
_NO_DELETE = """
CREATE TRIGGER {t}_no_delete BEFORE DELETE ON {t}
    BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END;
"""
TREE_NO_DELETE = _NO_DELETE.format(t="tree")

# One BEFORE INSERT trigger per table: a trigger costs a sub-program call per
# row, most of its cost (docs/PERFORMANCE.md).
ENTRIES_INSERT = """
CREATE TRIGGER entries_insert BEFORE INSERT ON entries BEGIN
    SELECT RAISE(ABORT, 'entries: only the next row may be inserted')
        WHERE NEW.seq IS NOT (SELECT COALESCE(MAX(seq), -1) + 1 FROM entries);
    SELECT RAISE(ABORT, 'entries: a liquidation id is recorded once per contract')
        WHERE NEW.liquidation_id IS NOT NULL AND EXISTS (
            SELECT 1 FROM entries WHERE contract = NEW.contract AND liquidation_id = NEW.liquidation_id);
END;
"""
TREE_INSERT = """
CREATE TRIGGER tree_insert BEFORE INSERT ON tree
    WHEN NEW.id <= (SELECT MAX(id) FROM tree)
    BEGIN SELECT RAISE(ABORT, 'tree: only a row above every stored id may be inserted'); END;
"""
CHECKPOINTS_INSERT = """
CREATE TRIGGER checkpoints_next_only BEFORE INSERT ON checkpoints
    WHEN NEW.id IS NOT (SELECT COALESCE(MAX(id), 0) + 1 FROM checkpoints)
    BEGIN SELECT RAISE(ABORT, 'checkpoints: only the next row may be inserted'); END;
"""

TRIGGERS = (
    "".join(_NO_UPDATE.format(t=t) + _NO_DELETE.format(t=t) for t in ("entries", "tree", "checkpoints"))
    + ENTRIES_INSERT + TREE_INSERT + CHECKPOINTS_INSERT
)
TRIGGER_NAMES = tuple(
    [f"{t}_{w}" for t in ("entries", "tree", "checkpoints") for w in ("no_update", "no_delete")]
    + ["entries_insert", "tree_insert", "checkpoints_next_only"]
)
# schema 1's BEFORE INSERT triggers on entries and tree, replaced by upgrade_schema_1
SCHEMA_1_INSERT_TRIGGERS = ("entries_next_only", "entries_no_replace_liquidation", "tree_next_only")

ENTRY_COLUMNS = (
    "seq", "data", "leaf_hash", "time", "kind", "contract", "liquidation_id", "side", "qty",
    "bankruptcy_price", "fill_price", "mark_price", "delta", "paid", "adl", "balance",
)
CONTRACT_COLUMNS = (
    "symbol", "currency", "scale", "type", "multiplier", "registered_seq", "balance",
    "balance_usd", "credited", "paid", "adl", "liquidations", "last_seq", "last_time", "last_price",
    "lot", "allocations",
)


def derived_columns(seq: int, data: bytes, leaf_hash: bytes, obj: dict) -> tuple:
    """The ``entries`` row for an entry whose text parsed to ``obj``."""
    return (
        seq, data, leaf_hash, obj["time"], obj["kind"], obj["contract"], obj.get("id"),
        obj.get("side"), obj.get("qty"), obj.get("bankruptcy_price"), obj.get("fill_price"),
        obj.get("mark_price"), obj.get("delta"), obj.get("paid"), obj.get("adl"), obj.get("balance"),
    )


def liquidation_row(seq: int, data: bytes, leaf_hash: bytes, time: str, contract: str, liquidation_id: str, side: str,
                    qty: str, bankruptcy_price: str, fill_price: str, mark_price: str | None, delta: str, paid: str,
                    adl: str, balance: str) -> tuple:
    """:func:`derived_columns` of a liquidation entry given field by field
    (the verifier's per-entry path, without building a dict)."""
    return (seq, data, leaf_hash, time, "liquidation", contract, liquidation_id, side, qty, bankruptcy_price,
            fill_price, mark_price, delta, paid, adl, balance)


def contract_row(fund: Fund) -> tuple:
    """The ``contracts`` row of ``fund``, in CONTRACT_COLUMNS order."""
    s = fund.summary()
    return (
        s["contract"], s["currency"], s["scale"], s["type"], s["multiplier"], fund.contract.seq,
        s["balance"], s["balance_usd"], s["credited"], s["paid"], s["adl"], s["liquidations"],
        s["last_seq"], s["last_time"], s["last_price"], s.get("lot"), s.get("allocations", 0),
    )




def tree_rows_of(n: int, hashes: Sequence[bytes]) -> list[tuple[int, bytes]]:
    """The ``tree`` rows ``(id, hash)`` for the stored hashes appending leaf
    ``n`` adds, given as ``merkle.TreeBuilder.append`` returns them: the
    leaf hash first (kept as ``entries.leaf_hash``, not in ``tree``), then
    one node per trailing 1 bit of n, at the stored-hash indexes after it."""
    first = merkle.leaf_stored_index(n)
    return list(zip(range(first + 1, first + len(hashes)), hashes[1:]))


def read_tree_hashes(conn: sqlite3.Connection, indexes: Sequence[int]) -> list[bytes]:
    """The stored hashes at ``indexes`` (stored-hash indexes), in order, read
    from any connection to a ledger (the site uses its own read-only one):
    a leaf's hash from ``entries.leaf_hash``, any other from ``tree`` (a
    schema 1 ledger has the leaves' there too, and they are used: the
    verifier checks that they are equal)."""
    if not indexes:
        return []
    idx = list(indexes)
    if len(idx) > MAX_HASH_READ:
        raise InvariantError(f"more than {MAX_HASH_READ} stored hashes in one read")
    first = merkle.leaf_at_stored_index(idx[0])
    if first is not None and idx == merkle.leaf_stored_indexes(first, first + len(idx)):
        # a run of leaves (a hash tile of level 0): one range scan
        hashes = [r[0] for r in conn.execute(
            "SELECT leaf_hash FROM entries WHERE seq >= ? AND seq < ? ORDER BY seq", (first, first + len(idx))
        )]
        if len(hashes) == len(idx):
            return hashes
        raise ProofError(f"stored hash {idx[len(hashes)]} is missing")
    # the nodes from tree; what it lacks must be leaves (few: a proof has
    # at most one), from entries
    found: dict[int, bytes] = dict(conn.execute(f"SELECT id, hash FROM tree WHERE id IN ({','.join('?' * len(idx))})", idx))
    if len(found) < len(idx):
        leaves: dict[int, int] = {}  # seq -> stored-hash index
        for i in idx:
            if i not in found:
                n = merkle.leaf_at_stored_index(i)
                if n is None:
                    raise ProofError(f"stored hash {i} is missing")
                leaves[n] = i
        q = f"SELECT seq, leaf_hash FROM entries WHERE seq IN ({','.join('?' * len(leaves))})"
        found.update((leaves[n], h) for n, h in conn.execute(q, list(leaves)))
    try:
        return [found[i] for i in idx]
    except KeyError as e:
        raise ProofError(f"stored hash {e.args[0]} is missing") from None

class _Pairs(set):
    """Pairs added before the current chunk (ledger/store/seen.py bounds them)."""

    def find(self, contract: str, ids: list[str]) -> set[str]:
        return {i for i in ids if (contract, i) in self}


class _SeenInDb:
    """The set of recorded (contract, liquidation id) pairs, looked up in the
    database's unique index plus the pairs added since: in memory those of
    the current chunk (the records of the last :meth:`prefetch`), in
    ``older`` those added before it."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._batch: set = set()  # pairs of the current chunk known to be recorded
        self._known: set = set()  # pairs of the current chunk in neither the database nor older
        self._added: list = []  # pairs added since the last prefetch
        self.older = _Pairs()

    def __contains__(self, key) -> bool:
        if key in self._batch:
            return True
        if key in self._known:
            return False
        row = self._conn.execute(
            "SELECT 1 FROM entries WHERE contract = ? AND liquidation_id = ?", key
        ).fetchone()
        return row is not None or key in self.older

    def add(self, key) -> None:
        self._batch.add(key)
        self._added.append(key)

    def prefetch(self, records: Sequence[dict]) -> None:
        """Look up the liquidation ids of ``records`` in a few queries, so
        that the per-record checks hit memory (the chunk before's additions
        move to ``older``). When every id of a contract sorts after the
        greatest the database holds for it (ids that grow, as exchanges
        issue them), none can be there: one index seek for all."""
        self.older.update(self._added)
        self._added, self._batch, self._known = [], set(), set()
        by_contract: dict[str, list[str]] = {}
        for r in records:
            c, i = r.get("contract"), r.get("id")
            if r.get("kind") == "liquidation" and _sqlite_text(c) and _sqlite_text(i):
                by_contract.setdefault(c, []).append(i)
        for c, ids in by_contract.items():
            self._batch.update((c, i) for i in self.older.find(c, ids))
            # SQLite's BINARY collation orders UTF-8 bytes, the order of
            # code points, as Python compares str (and a valid id is
            # printable ASCII anyway)
            (greatest,) = self._conn.execute(
                "SELECT MAX(liquidation_id) FROM entries WHERE contract = ? AND liquidation_id IS NOT NULL", (c,)
            ).fetchone()
            if greatest is None or min(ids) > greatest:
                self._known.update((c, i) for i in ids)
                continue
            for k in range(0, len(ids), 500):
                part = ids[k : k + 500]
                q = f"SELECT liquidation_id FROM entries WHERE contract = ? AND liquidation_id IN ({','.join('?' * len(part))})"
                self._batch.update((c, i) for (i,) in self._conn.execute(q, [c, *part]))
            self._known.update((c, i) for i in ids)


def _sqlite_text(value: object) -> bool:
    """A str SQLite can take (no lone surrogates); others are refused later by the rules."""
    if not isinstance(value, str):
        return False
    if value.isascii():  # O(1) for a str CPython knows to be ASCII
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def connect_readonly(path: str) -> sqlite3.Connection:
    """A read-only connection (``mode=ro``) to the file at ``path``."""
    uri = f"file:{os.path.abspath(path)}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    # Readers serve proofs: random lookups in the tree table. Mapping the
    # file saves a system call per page (about 30% of a proof at 1M
    # entries); pages are the OS's file cache, shared, not copies.
    conn.execute(f"PRAGMA mmap_size={READER_MMAP_BYTES}")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


class Reader:
    """A fundledger database, read: open one read-only with :meth:`open`.

    The queries of the commands that only read, of the verifier's database
    cross-check and of the site. The writer, ``ledger.store.store.Store``,
    is a Reader that also appends."""

    def __init__(self, conn: sqlite3.Connection, path: str):
        self.conn = conn
        self.path = path
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("schema") not in READABLE_SCHEMAS:
            raise StoreError(f"{path}: unknown schema version {meta.get('schema')!r}")
        self.schema: str = meta["schema"]
        self.origin: str = meta["origin"]
        self.vkey: str = meta["vkey"]  # the first key: the trust anchor, published as `vkey`
        # the key that signs now (differs from vkey after a rotation)
        self.current_vkey: str = meta.get("current_vkey", meta["vkey"])

    @classmethod
    def open(cls, path: str) -> "Reader":
        """Open a ledger read-only. StoreError for a file that is missing,
        empty or not a fundledger ledger."""
        return cls._open(path, connect_readonly)

    @classmethod
    def _open(cls, path: str, connect, then=None):
        """Open with ``connect(path)``, check the schema, then ``then(reader)``;
        a file that is not a ledger is left exactly as it was."""
        if not os.path.isfile(path):
            raise StoreError(f"{path!r}: no such ledger (run `fundledger init ORIGIN` first)")
        if os.path.getsize(path) == 0:
            raise StoreError(f"{path}: empty file, not a fundledger database")
        conn = None
        try:
            conn = connect(path)
            reader = cls(conn, path)
            if then is not None:
                then(reader)
            return reader
        except sqlite3.DatabaseError as e:
            if conn is not None:
                conn.close()
            raise StoreError(f"{path}: not a fundledger database ({e})") from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise

    @property
    def db(self):
        """The connection as a ``sqlite_utils.Database`` (imported on first use:
        it costs 50 ms of every command's start-up otherwise)."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def snapshot(self):
        """Several reads that see one state of the ledger (a read transaction),
        even while another process appends or signs a checkpoint."""
        if self.conn.in_transaction:
            yield self
            return
        self.conn.execute("BEGIN")
        try:
            yield self
        finally:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    # -- reading -----------------------------------------------------------------

    def size(self) -> int:
        row = self.conn.execute("SELECT MAX(seq) FROM entries").fetchone()
        return 0 if row[0] is None else row[0] + 1

    def entry(self, seq: int) -> bytes:
        row = self.conn.execute("SELECT data FROM entries WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise StoreError(f"no entry {seq}")
        return row[0]

    def iter_entries(self, start: int = 0, end: int | None = None, chunk: int = 4096) -> Iterator[tuple[int, bytes]]:
        """``(seq, data)`` from ``start`` to ``end`` (exclusive), streaming."""
        seq = start
        while True:
            limit = chunk if end is None else min(chunk, end - seq)
            if limit <= 0:
                return
            rows = self.conn.execute(
                "SELECT seq, data FROM entries WHERE seq >= ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()
            if not rows:
                return
            yield from rows
            seq = rows[-1][0] + 1

    def iter_rows(self, start: int = 0, chunk: int = 4096) -> Iterator[tuple]:
        """Full ``entries`` rows in seq order (the derived columns included)."""
        seq = start
        cols = ", ".join(ENTRY_COLUMNS)
        while True:
            rows = self.conn.execute(
                f"SELECT {cols} FROM entries WHERE seq >= ? ORDER BY seq LIMIT ?", (seq, chunk)
            ).fetchall()
            if not rows:
                return
            yield from rows
            seq = rows[-1][0] + 1

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        """merkle.HashReader over the ``tree`` table."""
        return read_tree_hashes(self.conn, indexes)

    def tree_hash(self, tree_size: int | None = None) -> bytes:
        return merkle.tree_hash(self.size() if tree_size is None else tree_size, self)

    def checkpoints(self) -> list[tuple[int, int, bytes, str, bytes]]:
        """``(id, tree_size, root, time, note)`` of every checkpoint, oldest first."""
        return self.conn.execute(
            "SELECT id, tree_size, root, time, note FROM checkpoints ORDER BY id"
        ).fetchall()

    def latest_checkpoint(self) -> tuple[int, int, bytes, str, bytes] | None:
        return self.conn.execute(
            "SELECT id, tree_size, root, time, note FROM checkpoints ORDER BY id DESC LIMIT 1"
        ).fetchone()

    def cosignature_lines(self, checkpoint_id: int) -> list[bytes]:
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT line FROM cosignatures WHERE checkpoint_id = ? ORDER BY name, key_id",
                (checkpoint_id,),
            )
        ]

    def pending_checkpoint(self) -> bytes | None:
        """The checkpoint signed and waiting for its witnesses' quorum
        (``fundledger checkpoint --policy``), not yet published; or None."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'pending_checkpoint'").fetchone()
        return None if row is None else row[0].encode("utf-8")

    def published_checkpoint(self) -> bytes | None:
        """The latest checkpoint note with every cosignature collected for it."""
        cp = self.latest_checkpoint()
        if cp is None:
            return None
        return cp[4] + b"".join(self.cosignature_lines(cp[0]))

    def contract_rows(self) -> list[dict]:
        old = self.schema in ("1", "2")  # (no lot contract, no adl entry)
        cols = ", ".join(CONTRACT_COLUMNS[:-2]) + (", NULL, 0" if old else ", lot, allocations")
        rows = self.conn.execute(f"SELECT {cols} FROM contracts ORDER BY symbol").fetchall()
        return [dict(zip(CONTRACT_COLUMNS, r)) for r in rows]

    def entry_row(self, seq: int) -> dict:
        """The derived columns of entry ``seq``."""
        cols = ENTRY_COLUMNS[3:]
        row = self.conn.execute(f"SELECT seq, {', '.join(cols)} FROM entries WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise StoreError(f"no entry {seq}")
        return dict(zip(("seq",) + cols, row))

    def history(self, symbol: str, limit: int | None = None, offset: int = 0) -> list[dict]:
        cols = ENTRY_COLUMNS[3:]
        q = f"SELECT seq, {', '.join(cols)} FROM entries WHERE contract = ? ORDER BY seq"
        args: list = [symbol]
        if limit is not None:
            q += " LIMIT ? OFFSET ?"
            args += [limit, offset]
        return [dict(zip(("seq",) + cols, r)) for r in self.conn.execute(q, args)]

    def iter_history(self, symbol: str, since: int = 0, limit: int | None = None,
                     chunk: int = 1024) -> Iterator[dict]:
        """:meth:`history` one entry at a time, from seq ``since`` on, at
        most ``limit``: memory stays that of one chunk of rows, whatever the
        fund's size (an indexed range scan on ``(contract, seq)``)."""
        cols = ENTRY_COLUMNS[3:]
        q = f"SELECT seq, {', '.join(cols)} FROM entries WHERE contract = ? AND seq >= ? ORDER BY seq LIMIT ?"
        cur = self.conn.execute(q, (symbol, since, -1 if limit is None else limit))
        while True:
            rows = cur.fetchmany(chunk)
            if not rows:
                return
            for r in rows:
                yield dict(zip(("seq",) + cols, r))

    def load_book(self) -> FundBook:
        """The state of every fund, from the ``contracts`` summary."""
        book = FundBook(seen=_SeenInDb(self.conn))
        for r in self.contract_rows():
            c = Contract(r["symbol"], r["currency"], r["scale"], r["type"], r["multiplier"], r["registered_seq"],
                         r["lot"])
            book.funds[c.symbol] = Fund(
                c,
                balance=parse_amount(r["balance"], c.scale),
                credited=parse_amount(r["credited"], c.scale),
                paid=parse_amount(r["paid"], c.scale),
                adl=parse_amount(r["adl"], c.scale),
                liquidations=r["liquidations"],
                allocations=r["allocations"],
                last_seq=r["last_seq"],
                last_time=r["last_time"],
                last_price=r["last_price"],
            )
        return book

    def recorded_ids(self) -> _SeenInDb:
        """The liquidation ids the ledger records, looked up as needed (a
        ``FundBook.seen``)."""
        return _SeenInDb(self.conn)

    def chain_head(self) -> tuple[int, bytes, list[bytes]]:
        """``(size, hash of the last entry, the tree's right edge)``: the
        state the writer's ``append_prepared`` checks. Read it in a
        :meth:`snapshot` together with :meth:`load_book`."""
        head = self.conn.execute("SELECT seq, leaf_hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        size = 0 if head is None else head[0] + 1
        prev = entry_mod.ZERO_HASH if head is None else bytes(head[1])
        return size, prev, self.read_hashes(merkle.compact_range_indexes(size))

    def key_history(self) -> list[tuple[int, str]]:
        """``(first seq it signs, vkey)`` of every log key, oldest first."""
        out = [(0, self.vkey)]
        for seq, data in self.conn.execute("SELECT seq, data FROM entries WHERE contract = '' AND kind = 'key' ORDER BY seq"):
            text, _ = note.split_note(data, entry_mod.MAX_ENTRY_BYTES)
            out.append((seq + 1, entry_mod.parse_entry_text(text)["vkey"]))
        return out


class _DictReader:
    """A ``merkle.HashReader`` over a dict of stored hashes (index -> hash)."""

    def __init__(self, cache: dict[int, bytes]):
        self.cache = cache

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        try:
            return [self.cache[i] for i in indexes]
        except KeyError as e:
            raise InvariantError(f"stored hash {e.args[0]} not cached") from None
