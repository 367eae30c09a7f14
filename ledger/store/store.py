"""The writer's SQLite store: the only module that writes the database.

The schema, the derived rows and the read-only queries are in
:mod:`ledger.store.schema`; :class:`Store` is its ``Reader`` that also
creates a ledger, appends, rotates the key and signs checkpoints, and
upgrades a ledger of an older schema in place when it opens one
(:func:`upgrade_schema`).

Writes run under ``BEGIN IMMEDIATE``: one writer at a time, and the writer
reads the head of the chain inside its own transaction, so two processes
appending at once never fork the chain. The database runs in WAL mode with
``synchronous=FULL``: a committed append survives a crash or power loss.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from ledger.errors import FundledgerError, InvariantError, ProofError, StoreError
from ledger.format import entry as entry_mod
from ledger.format import note
from ledger.rules.fund import DuplicateContract, DuplicateLiquidation, FundBook, now_time
from ledger.store import schema
from ledger.store.build import build_entry, key_entry, state_entry
from ledger.store.chains import fill_chains
from ledger.store.schema import CONTRACT_COLUMNS, ENTRY_COLUMNS, Reader, contract_row, tree_rows_of
from ledger.tlog import merkle

MAX_BATCH = 10_000  # entries in one transaction
_INSERT_ENTRY = f"INSERT INTO entries ({', '.join(ENTRY_COLUMNS)}) VALUES ({', '.join('?' * len(ENTRY_COLUMNS))})"


@dataclass
class AppendResult:
    """What one append did: the seqs written and the records skipped as
    replays (each a ``duplicate: ...`` message)."""

    appended: list[int] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    tree_size: int = 0
    per_record: list[int | None] = field(default_factory=list)  # each record's seq, None for a replay


def _connect_writer(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={schema.BUSY_TIMEOUT_MS}")
    return conn


def _writer_pragmas(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")


class Store(Reader):
    """A fundledger database opened to write: open one with :meth:`open` or
    :meth:`create`. Every read is the ``schema.Reader``'s; a process that
    only reads opens a Reader instead."""

    @classmethod
    def open(cls, path: str) -> "Store":
        """Open a ledger to write. The schema is checked before anything is
        changed: a file that is not a fundledger ledger is left exactly as
        it was. A ledger of schema 1 or 2 is upgraded in place."""
        return cls._open(path, _connect_writer, cls._ready_to_write)

    @staticmethod
    def _ready_to_write(store: "Store") -> None:
        _writer_pragmas(store.conn)
        if store.schema != schema.SCHEMA_VERSION:
            upgrade_schema(store.conn)
            store.schema = schema.SCHEMA_VERSION

    @classmethod
    def create(cls, path: str, origin: str, vkey: str) -> "Store":
        """A new empty ledger for the log ``origin`` whose key is ``vkey``."""
        if os.path.exists(path):
            raise StoreError(f"{path} already exists: refusing to overwrite a ledger")
        note.check_key_name(origin)
        conn = _connect_writer(path)
        _writer_pragmas(conn)
        try:
            conn.executescript("BEGIN IMMEDIATE;\n" + schema.SCHEMA_3_TABLES + schema.TRIGGERS)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("schema", schema.SCHEMA_VERSION), ("origin", origin), ("vkey", vkey)],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(path + suffix):
                    os.unlink(path + suffix)
            raise
        return cls(conn, path)

    # -- writing -----------------------------------------------------------------

    @contextmanager
    def _write(self):
        """One write transaction under ``BEGIN IMMEDIATE``: committed if the
        block ends normally (unless it rolled back itself), rolled back on
        any exception; SQLite failures become one-line StoreErrors."""
        self._require_writer()
        with _immediate(self.conn, self.path) as conn:
            yield conn

    def _head(self) -> tuple[int, bytes, merkle.TreeBuilder]:
        """``(size, hash of the last entry, tree builder at the right edge)``."""
        size, prev, edge = self.chain_head()
        return size, prev, merkle.TreeBuilder(size, edge)

    def append_prepared(
        self,
        signers: Sequence[note.Signer],
        size: int,
        prev: bytes,
        entry_rows: list[tuple],
        tree_rows: list[tuple],
        summary_rows: list[tuple],
    ) -> bool:
        """Insert entries built and signed ahead of the transaction on top of
        the head ``(size, prev)`` (see ledger/store/bulk.py), in ONE
        transaction. The signer and the head are checked inside it: if
        another writer moved the head, nothing is written and the result is
        False; the caller must rebuild."""
        with self._write() as conn:
            self.check_signer(signers)
            head = conn.execute("SELECT seq, leaf_hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
            now = (0, entry_mod.ZERO_HASH) if head is None else (head[0] + 1, bytes(head[1]))
            if now != (size, prev):
                conn.execute("ROLLBACK")
                return False
            self._insert(size, entry_rows, tree_rows, summary_rows)
        return True

    def _insert(self, size: int, entry_rows: list[tuple], tree_rows: list[tuple], summary_rows: list[tuple]) -> None:
        """The one insert of every write that appends (``append``,
        ``append_prepared``, ``rotate_key``), inside its transaction, on a
        head of ``size`` entries read in it: the entries rows, their tree
        rows and the ``contracts`` rows of the funds they touched. Checked
        right before writing: at most MAX_BATCH entries, numbered on from
        the head."""
        if len(entry_rows) > MAX_BATCH:
            raise InvariantError(f"more than {MAX_BATCH} entries in one append")
        if not entry_rows:
            return
        if entry_rows[0][0] != size or entry_rows[-1][0] != size + len(entry_rows) - 1:
            raise InvariantError(f"entries {entry_rows[0][0]}..{entry_rows[-1][0]} do not follow a head of {size}")
        self.conn.executemany(_INSERT_ENTRY, entry_rows)
        self.conn.executemany("INSERT INTO tree (id, hash) VALUES (?, ?)", tree_rows)
        self._upsert_summaries(summary_rows)

    def _require_writer(self) -> None:
        if self.schema != schema.SCHEMA_VERSION:
            raise InvariantError(f"write on a schema {self.schema} store")

    def check_signer(self, signers: Sequence[note.Signer]) -> None:
        """Refuse a key that is not the ledger's current log key. Reads the
        key from the database, so inside a write transaction it sees a
        rotation made by another process."""
        row = self.conn.execute(
            "SELECT value FROM meta WHERE key = 'current_vkey' UNION ALL "
            "SELECT value FROM meta WHERE key = 'vkey' LIMIT 1"
        ).fetchone()
        self.current_vkey = row[0]
        if not signers or signers[0].verifier().vkey() != self.current_vkey:
            raise StoreError("the key does not match this ledger's current log key")

    def append(
        self,
        records: Iterable[dict],
        signers: Sequence[note.Signer],
        clock: Callable[[], str] = now_time,
        anchor=None,
    ) -> AppendResult:
        """Append ``records`` (user records with a ``kind``) in ONE transaction.

        Each record is checked by the fund rules against the state inside the
        transaction; a replayed liquidation (or an identical contract) is
        skipped and reported in ``duplicates``. Any other bad record raises
        and rolls the whole call back: nothing is written. With ``anchor``
        (a ``ledger.ops.anchor.WriterAnchor``) the state is the one signed data
        give, checked against the anchor before anything is signed, and the
        anchor is advanced after the commit."""
        result = AppendResult()
        with self._write():
            self.check_signer(signers)
            size, prev, builder = self._head()
            book = self._book(anchor)
            records = list(records)
            if len(records) > MAX_BATCH:
                raise InvariantError(f"more than {MAX_BATCH} records in one append")
            book.seen.prefetch(records)
            touched: set[str] = set()
            entry_rows, tree_rows = [], []
            head_size = size
            for index, record in enumerate(records):
                try:
                    built = build_entry(book, record, size, prev, clock)
                except (DuplicateLiquidation, DuplicateContract) as d:
                    result.duplicates.append(str(d))
                    result.per_record.append(None)
                    continue
                except FundledgerError as e:
                    e.record_index = index  # which record (the service names its line)
                    raise
                data = entry_mod.sign_entry(built.text, signers)
                leaf = merkle.leaf_hash(data)
                book.link(leaf)
                touched.add(built.fields["contract"])
                entry_rows.append(built.row(data, leaf))
                tree_rows.extend(tree_rows_of(size, builder.append(leaf)[1]))
                result.appended.append(size)
                result.per_record.append(size)
                size += 1
                prev = leaf
            book.end_of_batch()
            summaries = [contract_row(book.funds[s]) for s in sorted(touched)]
            self._insert(head_size, entry_rows, tree_rows, summaries)
        result.tree_size = size
        if anchor is not None:
            anchor.advance(size, builder.root(), prev, summaries, new_ids=book.seen.pending)
        return result

    def _book(self, anchor) -> FundBook:
        """The state to build on, inside the write transaction: the anchor's
        (its ids the database's, held to the anchor's) or the database's,
        with the chain heads of format 2."""
        if anchor is not None:
            return anchor.check(self)
        return fill_chains(self, self.load_book())

    def _upsert_summaries(self, rows: list[tuple]) -> None:
        cols = ", ".join(CONTRACT_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in CONTRACT_COLUMNS[1:])
        self.conn.executemany(
            f"INSERT INTO contracts ({cols}) VALUES ({', '.join('?' * len(CONTRACT_COLUMNS))}) "
            f"ON CONFLICT(symbol) DO UPDATE SET {updates}",
            rows,
        )

    def rotate_key(self, old: note.Signer, new: note.Signer, clock: Callable[[], str] = now_time,
                   anchor=None) -> int:
        """Hand the log over to a new key: one ``key`` entry announcing it,
        signed by the current key and by the new one. From the next entry on
        only the new key signs entries and checkpoints. Returns the seq.
        With ``anchor`` (the old key's, see :meth:`append`) the database is
        first held to what the old key signed, and the anchor records the
        key entry and the new key."""
        self.check_signer([old])
        nv = new.verifier()
        if new.name != self.origin or new.alg != note.ALG_ED25519:
            raise StoreError(f"the new key must be an Ed25519 key named {self.origin}")
        if any(v == nv.vkey() for _, v in self.key_history()):
            raise StoreError("that key has already been used by this log")
        with self._write() as conn:
            self.check_signer([old])
            book = self._book(anchor)
            size, prev, builder = self._head()
            built = key_entry(book, nv.vkey(), size, prev, clock())
            data = entry_mod.sign_entry(built.text, [old, new])
            leaf = merkle.leaf_hash(data)
            book.link(leaf)
            self._insert(size, [built.row(data, leaf)], tree_rows_of(size, builder.append(leaf)[1]), [])
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('current_vkey', ?)", (nv.vkey(),))
        self.current_vkey = nv.vkey()
        if anchor is not None:
            anchor.advance(size + 1, builder.root(), leaf, [], new_key=(size + 1, nv.vkey()))
        return size

    def add_checkpoint(self, signers: Sequence[note.Signer], clock: Callable[[], str] = now_time,
                       anchor=None, publish: bool = True) -> tuple[int, bytes, bool]:
        """Sign a checkpoint at the current size, unless the latest one
        already covers it. Returns ``(tree_size, note, created)``. With
        ``publish=False`` the signed checkpoint is kept as the pending one
        (``meta.pending_checkpoint``) instead: witnesses are asked to cosign
        it first, and :meth:`publish_checkpoint` makes it the published one.

        Check and write happen in one ``BEGIN IMMEDIATE`` transaction. The
        root signed is recomputed from the entry bytes appended since the
        previous checkpoint, on top of the tree's right edge at that
        checkpoint (which must give its root); the stored hashes must agree
        with it. So a checkpoint is never signed over stored hashes the
        entries do not give, nor inconsistent with the previous one. The
        cost is proportional to the entries since the last checkpoint. With
        ``anchor`` (see :meth:`append`) the database is first held to what
        the key signed, and the anchor records the new checkpoint."""
        try:
            with self._write() as conn:
                self.check_signer(signers)
                book = self._book(anchor)
                state = self._append_state(book, signers, clock) if book.chains.since is not None else None
                out = self._sign_checkpoint(conn, signers, clock, publish)
        except ProofError as e:
            raise StoreError(f"refusing to sign: the log is not consistent with the last checkpoint ({e})") from None
        if anchor is not None:
            if state is not None:
                anchor.advance(*state, [])
            s = anchor.state
            anchor.advance(s.tree_size, s.root, s.prev, [], out[1] if out[2] else None)
        return out

    def upgrade(self, signers: Sequence[note.Signer], clock: Callable[[], str] = now_time,
                anchor=None) -> int:
        """Switch the log to format 2 (docs/FORMAT.md): append its first
        ``state`` entry, committing to every fund's head. Returns its seq;
        StoreError if the log is in format 2 already."""
        with self._write():
            self.check_signer(signers)
            book = self._book(anchor)
            if book.chains.since is not None:
                raise StoreError(f"the log is in format 2 already (since seq {book.chains.since})")
            size, root, _ = self._append_state(book, signers, clock)
        if anchor is not None:
            anchor.advance(size, root, book.chains.state_head[1], [])
        return size - 1

    def _append_state(self, book: FundBook, signers, clock) -> tuple[int, bytes, bytes] | None:
        """Inside a write transaction: a ``state`` entry after the last
        entry unless that is one; ``(tree size, root, leaf)`` after it, or None."""
        size, prev, builder = self._head()
        head = book.chains.state_head
        if head is not None and head[0] == size - 1:
            return None  # an idle log does not grow
        built = state_entry(book, size, prev, clock())
        data = entry_mod.sign_entry(built.text, signers)
        leaf = merkle.leaf_hash(data)
        book.link(leaf)
        self._insert(size, [built.row(data, leaf)], tree_rows_of(size, builder.append(leaf)[1]), [])
        return size + 1, builder.root(), leaf

    def _sign_checkpoint(self, conn, signers, clock, publish: bool = True) -> tuple[int, bytes, bool]:
        """The body of :meth:`add_checkpoint`, inside its transaction."""
        size = self.size()
        last = self.latest_checkpoint()
        old_size, old_root = (0, merkle.EMPTY_ROOT) if last is None else (last[1], last[2])
        if old_size > size:
            raise StoreError(f"the log has {size} entries but checkpoint {old_size} exists: refusing")
        if last is not None and old_size == size:
            if merkle.tree_hash(size, self) != old_root:
                raise ProofError("the stored tree does not give the last checkpoint's root")
            conn.execute("ROLLBACK")
            return size, last[4], False
        edge = merkle.TreeBuilder(old_size, self.read_hashes(merkle.compact_range_indexes(old_size)))
        if edge.root() != old_root:
            raise ProofError("the stored tree does not give the last checkpoint's root")
        for _, data in self.iter_entries(old_size, size):
            edge.append(merkle.leaf_hash(data))
        root = edge.root()
        if merkle.tree_hash(size, self) != root:
            raise ProofError("the stored Merkle hashes do not match the entries")
        text = note.Checkpoint(self.origin, size, root).text()
        signed = note.sign_note(text, signers)
        if publish:
            self._insert_checkpoint(conn, size, root, clock(), signed)
        else:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('pending_checkpoint', ?)",
                         (signed.decode("utf-8"),))
        return size, signed, True

    def _insert_checkpoint(self, conn, size: int, root: bytes, time: str, signed: bytes) -> int:
        conn.execute(
            "INSERT INTO checkpoints (id, tree_size, root, time, note) VALUES "
            "((SELECT COALESCE(MAX(id), 0) + 1 FROM checkpoints), ?, ?, ?, ?)",
            (size, root, time, signed),
        )
        if size >= self._pending_size():
            conn.execute("DELETE FROM meta WHERE key = 'pending_checkpoint'")
        return conn.execute("SELECT MAX(id) FROM checkpoints").fetchone()[0]

    def _pending_size(self) -> int:
        pending = self.pending_checkpoint()
        return -1 if pending is None else note.parse_signed_checkpoint(pending).tree_size

    def publish_checkpoint(self, signed: bytes, cosignatures: Sequence[tuple[str, bytes, int, bytes]],
                           clock: Callable[[], str] = now_time) -> int:
        """Make the pending checkpoint ``signed`` the published one, with
        its ``cosignatures`` (``(name, key id, timestamp, line)``, already
        checked by the caller against the witnesses' keys). Checked right
        before writing: it is the pending one, no larger checkpoint was
        published meanwhile, and the stored tree still gives its root.
        Returns the new checkpoint's id."""
        with self._write() as conn:
            if self.pending_checkpoint() != signed:
                raise StoreError("that checkpoint is not the pending one (another writer signed since)")
            cp = note.parse_signed_checkpoint(signed)
            last = self.latest_checkpoint()
            if last is not None and last[1] >= cp.tree_size:
                raise StoreError(f"checkpoint {last[1]} was published meanwhile: {cp.tree_size} is not newer")
            if merkle.tree_hash(cp.tree_size, self) != cp.root_hash:
                raise StoreError("the stored tree no longer gives the pending checkpoint's root: refusing")
            cid = self._insert_checkpoint(conn, cp.tree_size, cp.root_hash, clock(), signed)
            self._insert_cosignatures(conn, cid, cosignatures)
        return cid

    def add_cosignature(self, checkpoint_id: int, name: str, key_id: bytes, timestamp: int, line: bytes) -> None:
        with self._write() as conn:
            self._insert_cosignatures(conn, checkpoint_id, [(name, key_id, timestamp, line)])

    @staticmethod
    def _insert_cosignatures(conn, checkpoint_id: int, cosignatures) -> None:
        conn.executemany(  # a witness's newer cosignature of the same checkpoint replaces its older one
            "INSERT INTO cosignatures (checkpoint_id, name, key_id, timestamp, line) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET timestamp = excluded.timestamp, line = excluded.line "
            "WHERE excluded.timestamp > cosignatures.timestamp",
            [(checkpoint_id, name, key_id.hex(), ts, line) for name, key_id, ts, line in cosignatures],
        )


def upgrade_schema_1(conn: sqlite3.Connection) -> None:
    """Upgrade a schema 1 ledger to schema 2 in place, in one transaction:
    drop the leaf hashes from ``tree`` (``entries.leaf_hash`` holds each
    one) and put schema 2's BEFORE INSERT triggers in place of schema 1's
    (the upgraded schema is then exactly a new ledger's).
    Entries, checkpoints and every other hash are untouched, so the log and
    its proofs are the same; a reader sees schema 1 or 2, never a mix."""
    with _immediate(conn, "upgrading the ledger from schema 1"):
        (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if version == "1":  # (else another writer upgraded it meanwhile)
            for t in schema.SCHEMA_1_INSERT_TRIGGERS + ("tree_no_delete", "checkpoints_next_only"):
                conn.execute(f"DROP TRIGGER IF EXISTS {t}")  # (early schema 1 files lack some)
            (size,) = conn.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM entries").fetchone()
            leaf_index = merkle.leaf_stored_index
            conn.executemany("DELETE FROM tree WHERE id = ?", ((leaf_index(n),) for n in range(size)))
            # (one statement per call: executescript would commit first)
            for sql in (schema.TREE_NO_DELETE, schema.ENTRIES_INSERT, schema.TREE_INSERT, schema.CHECKPOINTS_INSERT):
                conn.execute(sql)
            conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")


def upgrade_schema_2(conn: sqlite3.Connection) -> None:
    """Upgrade a schema 2 ledger to schema 3 in place, in one transaction:
    the contracts' lot size and adl entry count (``schema.SCHEMA_3``),
    NULL and 0 for every contract so far, and the index of adl entries."""
    with _immediate(conn, "upgrading the ledger from schema 2"):
        (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if version == "2":
            for sql in schema.SCHEMA_3:
                conn.execute(sql)
            conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema'")


def upgrade_schema(conn: sqlite3.Connection) -> None:
    """Bring a ledger of an older schema to :data:`schema.SCHEMA_VERSION`."""
    upgrade_schema_1(conn)
    upgrade_schema_2(conn)


@contextmanager
def _immediate(conn: sqlite3.Connection, what: str):
    """One write transaction under ``BEGIN IMMEDIATE``: committed if the
    block ends normally (unless it rolled back itself), rolled back on any
    exception; SQLite failures become one-line StoreErrors about ``what``."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        if conn.in_transaction:
            conn.execute("COMMIT")
    except sqlite3.Error as e:
        _rollback(conn)
        raise StoreError(f"{what}: {e}") from None
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")
