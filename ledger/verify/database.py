"""A ledger database as a source, and the checks of what it derives.

The verifier reads a database through the read-only schema module, in one
read transaction; :class:`DbCrossCheck` compares every derived column,
stored Merkle hash, summary row, stored checkpoint, table, index and
append-only trigger with what the entries give.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from typing import Callable, Iterator

from ledger.errors import StoreError, VerificationError
from ledger.rules.fund import FundBook
from ledger.tlog import merkle
from ledger.tlog.tiles import tile_hash_indexes
from ledger.verify import transport
from ledger.verify.checkpoint import open_checkpoint
from ledger.verify.reference import KeyHistory
from ledger.verify.reference import MissingEntries
from ledger.verify.sources import Source


class DbSource(Source):
    """A ledger database, opened read-only."""

    def __init__(self, path: str):
        from ledger.store.schema import Reader  # only database sources need sqlite

        try:
            self.store = Reader.open(path)
        except KeyError as e:  # a meta table without origin or vkey
            raise VerificationError(f"database {path!r}: the meta table has no {e.args[0]!r}") from None
        except StoreError as e:
            if _tampered_ledger(path):
                raise VerificationError(str(e)) from None
            raise
        if not all(isinstance(v, str) for v in (self.store.origin, self.store.vkey, self.store.current_vkey)):
            self.store.close()
            raise VerificationError(f"database {path!r}: a value of the meta table is not text")
        # A verifier streams the whole file once: no mapping (its pages would
        # count in this process's resident memory for nothing).
        self.store.conn.execute("PRAGMA mmap_size=0")
        self.path = os.path.abspath(path)
        self._prefetch_fd: int | None = None
        self.description = f"database {path}"
        # One read transaction for the whole run: a consistent snapshot even
        # while a writer appends.
        self.store.conn.execute("BEGIN")

    def vkey(self) -> str | None:
        return self.store.vkey

    def checkpoint(self) -> bytes | None:
        try:
            return self.store.published_checkpoint()
        except TypeError:  # a note or a cosignature that is not a blob
            raise VerificationError("the latest stored checkpoint is not a blob") from None

    def size(self) -> int:
        (last,) = self.store.conn.execute("SELECT MAX(seq) FROM entries").fetchone()
        if last is not None and type(last) is not int:
            raise VerificationError(f"the entries table has a seq that is not an integer: {str(last)[:20]!r}")
        return self.store.size()

    def spec(self) -> tuple:
        return ("db", self.path)

    @contextlib.contextmanager
    def failures(self):
        import sqlite3

        try:
            yield
        except sqlite3.Error as e:  # a dropped table, a damaged file...
            raise _db_failure(e) from None

    def entries(self, tree_size: int, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        for data, _ in self.entry_rows(tree_size, start, end):
            yield data

    def entry_rows(self, tree_size: int, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, tuple]]:
        """Entry bytes with their whole ``entries`` row, so the derived
        columns are checked without reading the table twice."""
        from sqlite3 import Error

        tree_size = tree_size if end is None else min(end, tree_size)
        expect = start
        rows = self.store.iter_rows(start, chunk=max(1, min(4096, tree_size - start)))
        while expect < tree_size:
            try:
                row = next(rows, None)
            except Error as e:  # (also in a worker process)
                raise _db_failure(e) from None
            if row is None:
                break
            seq = row[0]
            if seq != expect:
                raise MissingEntries(f"entry {expect} is missing", seq=expect)
            if type(row[1]) is not bytes:
                raise VerificationError("the entry's data is not a blob", seq=expect)
            yield row[1], row
            expect += 1
        if expect != tree_size:
            raise MissingEntries(f"entry {expect} is missing", seq=expect)

    def read_tile(self, level: int, index: int, width: int) -> bytes:
        return b"".join(self.store.read_hashes(tile_hash_indexes(level, index, width)))

    def prefetch(self, progress: Callable[[], float]) -> Callable[[], None]:
        """Ask the OS to read the database file ahead of a full
        verification: at most PREFETCH_AHEAD_BYTES past the share of the
        file that ``progress()`` (0 to 1) says is done, since rows are laid
        out roughly in seq order. The workers then find their pages cached
        instead of reading them one at a time (docs/PERFORMANCE.md).
        Returns the function that stops it.

        The file descriptor stays open until :meth:`close` has closed the
        SQLite connection: closing any descriptor of a database file drops
        every POSIX lock the process holds on it, this run's read snapshot
        included (sqlite.org/howtocorrupt.html, 2.2)."""
        stop = threading.Event()
        if not hasattr(os, "posix_fadvise") or self._prefetch_fd is not None:
            return stop.set
        try:
            self._prefetch_fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return stop.set
        thread = threading.Thread(target=_prefetch, args=(self._prefetch_fd, progress, stop), daemon=True)
        thread.start()

        def finish() -> None:
            stop.set()
            thread.join()

        return finish

    def close(self) -> None:
        try:
            self.store.conn.execute("COMMIT")
        finally:
            self.store.close()
            if self._prefetch_fd is not None:  # only now (see prefetch)
                os.close(self._prefetch_fd)
                self._prefetch_fd = None


def _db_failure(e: Exception) -> VerificationError:
    """One line for an sqlite3 error while reading a ledger (sqlite3's own
    message for text that is not UTF-8 quotes the bytes)."""
    bad_text = re.match(r"Could not decode to UTF-8 column '(\w{1,40})'", str(e))
    if bad_text:
        return VerificationError(f"database: column {bad_text[1]} holds text that is not UTF-8")
    return VerificationError(f"database: {transport.detail(e)}")


def _tampered_ledger(path: str) -> bool:
    """Whether a file the store refused is still a ledger (its entries,
    tree or checkpoints table is there), so the refusal is an alarm: not
    plain bad input. A ledger of a schema this verifier does not know yet
    is not tampered with (nor is a file that SQLite cannot read)."""
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{os.path.abspath(path)}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            try:
                schema = next(iter(conn.execute("SELECT value FROM meta WHERE key = 'schema'")), (None,))[0]
            except sqlite3.Error:  # no meta table, or not one of a ledger
                schema = None
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    newer = isinstance(schema, str) and schema.isdigit() and int(schema) > 2
    return bool(tables & {"entries", "tree", "checkpoints"}) and not newer


PREFETCH_AHEAD_BYTES = 64 << 20  # how far a database is read ahead of the verification


_PREFETCH_POLL_S = 0.05


def _prefetch(fd: int, progress: Callable[[], float], stop: threading.Event) -> None:
    """The loop of :meth:`DbSource.prefetch`: ``posix_fadvise(WILLNEED)``
    over the file ``fd`` in order, never more than PREFETCH_AHEAD_BYTES
    ahead of ``progress() * size``. Advice only: an error ends it quietly.
    It never closes ``fd``."""
    try:
        size, done = os.fstat(fd).st_size, 0
        while done < size and not stop.is_set():
            want = min(size, int(progress() * size) + PREFETCH_AHEAD_BYTES)
            if want > done:
                os.posix_fadvise(fd, done, want - done, os.POSIX_FADV_WILLNEED)
                done = want
            else:
                stop.wait(_PREFETCH_POLL_S)
    except OSError:
        return


class DbCrossCheck:
    """Checks a database's derived data against what the entries give."""

    def __init__(self, source: DbSource):
        from ledger.store.schema import derived_columns

        self.source = source
        self.store = source.store
        self.derived_columns = derived_columns
        self.checked = 0
        # schema 1 keeps the leaf hashes in `tree` too; schema 2 has them
        # only as entries.leaf_hash (checked with the other derived columns).
        # Read in the run's snapshot: a writer may upgrade the file meanwhile.
        (schema,) = self.store.conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        self.leaf_rows = schema == "1"
        self.schema = schema
        self.want: list[tuple[int, bytes]] = []  # the (id, hash) rows `tree` must hold next
        self.tree_rows = self.store.conn.execute("SELECT id, hash FROM tree ORDER BY id")

    def checkpoint_sizes(self) -> set[int]:
        return {row[1] for row in self.checkpoints()}

    def checkpoints(self) -> list[tuple]:
        """The stored checkpoints, each column of its type (a retyped one
        would otherwise surface as a TypeError far from here)."""
        rows = self.store.checkpoints()
        for row in rows:
            if tuple(map(type, row)) != (int, int, bytes, str, bytes):
                raise VerificationError(f"stored checkpoint {str(row[0])[:20]}: a column is not of its type")
        return rows

    def entry(self, seq: int, data: bytes, leaf: bytes, fields: dict, row: tuple) -> None:
        """The derived columns of an entry checked in the main process."""
        if tuple(row) != self.derived_columns(seq, data, leaf, fields):
            raise VerificationError("a derived column of the entries table does not match the entry", seq=seq)

    def tree(self, hashes: list[bytes]) -> None:
        """The stored Merkle hashes appending the next leaf adds (the leaf
        hash, then one node per trailing 1 bit of its index), compared in
        bulk by :meth:`flush_tree`, which names a bad one's leaf."""
        n = self.checked
        self.checked = n + 1
        first = merkle.leaf_stored_index(n)
        skip = 0 if self.leaf_rows else 1
        self.want.extend(zip(range(first + skip, first + len(hashes)), hashes[skip:]))

    def tree_run(self, leaves: int, stored: list[bytes]) -> None:
        """:meth:`tree` for a run of ``leaves`` leaves, given as the stored
        hashes :meth:`merkle.TreeBuilder.extend` returned for them."""
        n, end = self.checked, self.checked + leaves
        self.checked = end
        base = merkle.leaf_stored_index(n)
        if self.leaf_rows:
            self.want.extend(zip(range(base, base + len(stored)), stored))
            return
        # leaf k's hash is stored[leaf_stored_index(k) - base]; the nodes it
        # completes follow it, up to the next leaf's
        add = self.want.extend
        a = 0
        for b in merkle.leaf_stored_indexes(n + 1, end + 1):
            b -= base
            if b - a > 1:
                add(zip(range(base + a + 1, base + b), stored[a + 1 : b]))
            a = b

    def flush_tree(self) -> None:
        """Compare the stored hashes queued by :meth:`tree` with the table."""
        want, self.want = self.want, []
        if not want:
            return
        rows = self.tree_rows.fetchmany(len(want))
        if rows == want:
            return
        for i, (index, h) in enumerate(want):
            if i >= len(rows) or tuple(rows[i]) != (index, h):
                # (a row whose id comes first is one the tree may not hold)
                first = index if i >= len(rows) or type(rows[i][0]) is not int else min(index, rows[i][0])
                raise VerificationError("a stored Merkle hash does not match the entries",
                                        seq=merkle.leaf_of_stored_index(max(first, 0)))

    def finish(self, book: FundBook, roots: dict[int, bytes], keys: KeyHistory) -> None:
        from ledger.store.schema import contract_row

        self.flush_tree()
        # last: a fault in the entries or tables is named first, by its seq
        _check_schema(self.store.conn, self.schema)
        if self.store.conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0] != self.checked:
            raise VerificationError("the entries table has rows beyond the log")
        if self.tree_rows.fetchone() is not None:
            raise VerificationError("the tree table has hashes beyond the log")
        want = sorted((contract_row(f) for f in book.funds.values()), key=repr)
        got = sorted((tuple(r.values()) for r in self.store.contract_rows()), key=repr)  # (repr: any types)
        if want != got:
            raise VerificationError("the contracts summary table does not match the entries")
        last_size = 0
        for cid, size, root, _time, signed in self.checkpoints():
            cp = open_checkpoint(signed, [keys.at(size)], f"stored checkpoint {cid}")
            if (cp.tree_size, cp.root_hash) != (size, root):
                raise VerificationError(f"stored checkpoint {cid}: columns do not match its note")
            if size < last_size or roots.get(size) != root:
                raise VerificationError(f"stored checkpoint {cid} is not consistent with the entries")
            last_size = size


_SCHEMA_1_GUARDS = ("entries_no_update", "entries_no_delete", "tree_no_update", "checkpoints_no_update",
                    "checkpoints_no_delete")  # (early schema 1 files lack some of the others)


def _statements(script: str, sep: str, end: str = "") -> dict[str, str]:
    """name -> SQL (whitespace collapsed) of the CREATE statements of ``script``."""
    out = {}
    for stmt in script.split(sep):
        if stmt.split():
            words = (stmt + end).split()
            kind = next(i for i, w in enumerate(words) if w in ("TABLE", "INDEX", "TRIGGER"))
            out[words[kind + 1]] = " ".join(words)
    return out


def _check_schema(conn, schema: str) -> None:
    """Every table, index and append-only trigger of a ledger is there, as
    the writer made it: a table retyped, a guard dropped or replaced is
    tampering (an alarm), and it would let values of other types through.
    Schema 1 files share the tables; of their triggers, the guards must be
    there."""
    from ledger.store.schema import SCHEMA, TRIGGERS

    got = _schema_sql(conn)
    want = _tables_sql(schema)
    if schema == "1":
        guards = [t for t in _SCHEMA_1_GUARDS if t not in got]
        if guards:
            raise VerificationError(f"the database lacks its append-only trigger {guards[0]}")
    else:
        want.update(_statements(TRIGGERS, "END;", "END"))
    for name, sql in want.items():
        what = sql.split()[1 if sql.split()[1] != "UNIQUE" else 2].lower()
        if name not in got:
            raise VerificationError(f"the database lacks its {what} {name}")
        if got[name] != sql:
            raise VerificationError(f"the database's {what} {name} is not the one a ledger has")



def _schema_sql(conn) -> dict[str, str]:
    """Every table, index and trigger of ``conn``: name -> its SQL, whitespace collapsed."""
    return {name: " ".join(str(sql).split()) for name, sql in
            conn.execute("SELECT name, sql FROM sqlite_master WHERE type IN ('table', 'index', 'trigger')"
                         " AND name NOT LIKE 'sqlite_%'")}


def _tables_sql(schema: str) -> dict[str, str]:
    """The tables and indexes of a ledger of ``schema`` as SQLite spells
    them (schema 3 adds columns by ALTER TABLE, which SQLite writes into
    the table's SQL its own way): made in memory, as the writer makes them."""
    import sqlite3

    from ledger.store.schema import SCHEMA, SCHEMA_3_TABLES

    mem = sqlite3.connect(":memory:")
    try:
        mem.executescript(SCHEMA_3_TABLES if schema == "3" else SCHEMA)
        return _schema_sql(mem)
    finally:
        mem.close()
