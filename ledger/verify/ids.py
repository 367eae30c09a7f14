"""The liquidation ids a verifier has seen (rule 5), as a set of 60-bit
keyed hashes that stays small in memory at any log size.

Three parts, looked up in this order:

- ``recent``: the hashes added by this run, in memory, at most ``cap`` of
  them (about 64 bytes each);
- ``fresh``: the older additions of this run, moved to a temporary SQLite
  table when ``recent`` is full (an index on the hash: O(log n) a lookup);
- the base: the hashes committed before this run, either in the ``ids``
  table of the verifier's state file (``--state``, ledger/verify/state.py)
  or in memory (a state read from an older JSON file or passed between
  processes).

Nothing this run adds reaches the state file until :meth:`commit_to`, one
transaction with the rest of the state, so a run that fails leaves the
file as it was.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # sqlite3 is imported only by a run that spills or keeps a state:
    import sqlite3  # the verifier of an export or a URL loads no SQLite otherwise

MEMORY_CAP = 1 << 19  # hashes a run keeps in memory before it spills them (~32 MB)
BATCH = 10_000  # hashes per batched lookup
IDS_TABLE = "CREATE TABLE {schema}ids (h INTEGER PRIMARY KEY)"


class HashStore:
    """A set of ints below 2**63 with ``in``, ``add``, ``update`` and
    ``isdisjoint`` (what :class:`ledger.verify.accelerator.IdSet` uses),
    bounded in memory. ``conn``: an open state file whose ``ids`` table is
    the base (None: the base is ``base_mem``, and a private temporary
    database is opened only if the run spills)."""

    def __init__(self, conn: sqlite3.Connection | None = None, base_mem=(), cap: int | None = None):
        self.conn = conn
        self.on_file = conn is not None
        self.base_mem: set[int] = set(base_mem)
        self.recent: set[int] = set()
        self.order: list[int] = []  # recent, in the order added (a hash added twice appears twice)
        self.spilled = 0  # additions moved to the fresh table
        self.cap = MEMORY_CAP if cap is None else cap
        self.saved: tuple[int, str] | None = None  # the state file's (tree_size, root) when read
        self.not_in_file: set[int] = set()  # hashes :meth:`prefetch` found absent from the state file
        if conn is not None:
            _temp_table(conn)

    def added(self) -> int:
        """How many additions this run has made: a mark for :meth:`commit_to`."""
        return self.spilled + len(self.order)

    def __contains__(self, h: int) -> bool:
        if h in self.recent or h in self.base_mem:
            return True
        if self.on_file and h not in self.not_in_file and \
                self.conn.execute("SELECT 1 FROM main.ids WHERE h = ?", (h,)).fetchone():
            return True
        return bool(self.spilled) and self.conn.execute("SELECT 1 FROM temp.fresh WHERE h = ?", (h,)).fetchone()

    def isdisjoint(self, hashes) -> bool:
        hashes = list(hashes)
        if not self.recent.isdisjoint(hashes) or not self.base_mem.isdisjoint(hashes):
            return False
        tables = (["main.ids"] if self.on_file else []) + (["temp.fresh"] if self.spilled else [])
        for table in tables:
            for i in range(0, len(hashes), BATCH):
                q = f"SELECT 1 FROM {table} WHERE h IN (SELECT value FROM json_each(?)) LIMIT 1"
                if self.conn.execute(q, (json.dumps(hashes[i:i + BATCH]),)).fetchone():
                    return False
        return True

    def prefetch(self, hashes) -> None:
        """Look ``hashes`` up in the state file in batched queries, so that
        :meth:`__contains__` of each then asks the file nothing (the ids a
        chunk checked entry by entry brings). An id another run commits to
        the file meanwhile is of an entry this run reads and adds itself,
        so an absence found now holds for the ids this run looks up."""
        if not self.on_file:
            return
        hashes = [h for h in hashes if h not in self.not_in_file]
        if len(self.not_in_file) + len(hashes) > self.cap:
            self.not_in_file.clear()
        present: set[int] = set()
        for i in range(0, len(hashes), BATCH):
            q = "SELECT h FROM main.ids WHERE h IN (SELECT value FROM json_each(?))"
            present.update(h for (h,) in self.conn.execute(q, (json.dumps(hashes[i:i + BATCH]),)))
        self.not_in_file.update(h for h in hashes if h not in present)

    def add(self, h: int) -> None:
        self.recent.add(h)
        self.order.append(h)
        if len(self.order) >= self.cap:
            self.spill()

    def update(self, hashes) -> None:
        for h in hashes:
            self.add(h)

    def spill(self) -> None:
        """Move ``recent`` to the fresh table (opening a temporary database
        first if there is no state file)."""
        self.connection().executemany("INSERT INTO temp.fresh (n, h) VALUES (?, ?)", enumerate(self.order, self.spilled))
        self.spilled += len(self.order)
        self.recent.clear()
        self.order.clear()

    def snapshot(self, mark: int) -> list[int]:
        """Every hash in the set after the first ``mark`` additions, sorted
        (for a copy in memory; the size of the whole set)."""
        out = set(self.base_mem) | set(self._added_in_memory(mark))
        if self.on_file:
            out.update(h for (h,) in self.conn.execute("SELECT h FROM main.ids"))
        if self.spilled:
            out.update(h for (h,) in self.conn.execute("SELECT h FROM temp.fresh WHERE n < ?", (mark,)))
        return sorted(out)

    def commit_to(self, conn: sqlite3.Connection, schema: str, mark: int) -> None:
        """Insert into ``{schema}.ids`` of ``conn`` (inside the caller's
        transaction) every hash added before ``mark`` and, unless ``conn``
        is this store's own state file, the base as well."""
        target = f"{schema}.ids"
        own = self.on_file and conn is self.conn and schema == "main"
        if not own:
            if self.on_file:
                conn.execute(f"INSERT OR IGNORE INTO {target} SELECT h FROM main.ids")
            conn.executemany(f"INSERT OR IGNORE INTO {target} VALUES (?)", ((h,) for h in sorted(self.base_mem)))
        if self.spilled and conn is self.conn:
            conn.execute(f"INSERT OR IGNORE INTO {target} SELECT h FROM temp.fresh WHERE n < ? ORDER BY h", (mark,))
        elif self.spilled:
            raise ValueError("spilled hashes live in this store's own database")
        conn.executemany(f"INSERT OR IGNORE INTO {target} VALUES (?)",
                         ((h,) for h in sorted(self._added_in_memory(mark))))

    def _added_in_memory(self, mark: int) -> list[int]:
        return self.order[:max(0, mark - self.spilled)]

    def connection(self) -> sqlite3.Connection:
        """This store's database (opened, temporary, if it has none yet)."""
        if self.conn is None:
            import sqlite3

            self.conn = sqlite3.connect("", isolation_level=None)
            _temp_table(self.conn)
        return self.conn


def _temp_table(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS fresh (n INTEGER PRIMARY KEY, h INTEGER NOT NULL)")
    conn.execute("CREATE INDEX IF NOT EXISTS temp.fresh_h ON fresh (h)")
