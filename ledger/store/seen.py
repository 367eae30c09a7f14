"""What a bulk import keeps per record, bounded in memory whatever its size.

Pass 1 of an import (ledger/store/bulk.py) must know every liquidation id
it has added, to skip a replay inside the same file, and the writer's
anchor must learn the hash of each (ledger/ops/anchor.py). Kept as Python
objects that is a few hundred bytes a record. Here the newest ones stay in
memory and the older ones go to disk:

* :class:`SpilledPairs`: the (contract, id) pairs of earlier chunks, exact,
  in a private temporary SQLite database past ``cap`` of them;
* :class:`HashLog`: the id hashes in order, 8 bytes each, in an unlinked
  temporary file past ``cap`` of them;
* :class:`FrameLog`: what pass 2 needs of each batch, in such a file.
"""

from __future__ import annotations

import array
import marshal
import os
import sqlite3
import tempfile

MEMORY_CAP = 1 << 16  # pairs, or hashes, kept in memory before they are spilled
_IN_PART = 500  # ids in one IN (...) query


class SpilledPairs:
    """A set of (contract, liquidation id) pairs with ``update``, ``in`` and
    :meth:`find`: the newest ``cap`` in memory, the others in a temporary
    SQLite database (deleted on close), compared exactly. A contract's ids
    above the greatest one it holds (ids that grow, as exchanges issue
    them) are answered without a query; until one is needed, spilled pairs
    wait in a plain file (a B-tree insert each costs 2 µs, for pairs that
    nothing may ever look up)."""

    def __init__(self, cap: int | None = None):
        self.cap = MEMORY_CAP if cap is None else cap
        self.mem: set = set()
        self.high: dict[str, str] = {}  # contract -> its greatest id here
        self.spilled = 0  # pairs moved to disk
        self._db: sqlite3.Connection | None = None
        self._frames: FrameLog | None = None  # pairs spilled before any query

    def update(self, pairs) -> None:
        high = self.high
        for c, i in pairs:
            h = high.get(c)
            if h is None or i > h:
                high[c] = i
        self.mem.update(pairs)
        if len(self.mem) >= self.cap:
            self._spill()

    def __contains__(self, pair) -> bool:
        c, i = pair
        h = self.high.get(c)
        if h is None or i > h:
            return False
        if pair in self.mem:
            return True
        return self.spilled > 0 and self._query().execute(
            "SELECT 1 FROM pairs WHERE contract = ? AND id = ?", (c, i)).fetchone() is not None

    def find(self, contract: str, ids: list[str]) -> set[str]:
        """Those of ``ids`` held for ``contract``."""
        h = self.high.get(contract)
        if h is None:
            return set()
        ids = [i for i in ids if i <= h]
        found = {i for i in ids if (contract, i) in self.mem}
        if self.spilled and ids:
            self._query()
            for k in range(0, len(ids), _IN_PART):
                part = ids[k : k + _IN_PART]
                q = f"SELECT id FROM pairs WHERE contract = ? AND id IN ({','.join('?' * len(part))})"
                found.update(i for (i,) in self._db.execute(q, [contract, *part]))
        return found

    def _query(self) -> sqlite3.Connection | None:
        """The database, indexed: the pairs spilled to a plain file so far are loaded first."""
        if self._db is None and self._frames is not None:
            self._db = sqlite3.connect("", isolation_level=None)  # a private file, deleted on close
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("CREATE TABLE pairs (contract TEXT NOT NULL, id TEXT NOT NULL)")
            self._db.execute("BEGIN")
            for frame in self._frames:
                self._db.executemany("INSERT INTO pairs VALUES (?, ?)", frame)
            self._db.execute("CREATE INDEX pairs_key ON pairs (contract, id)")
            self._db.execute("COMMIT")
            self._frames.close()
            self._frames = None
        return self._db

    def _spill(self) -> None:
        """Move the pairs in memory to disk: to a plain file until a query
        needs them indexed, then to the database."""
        if self._db is None:
            if self._frames is None:
                self._frames = FrameLog()
            self._frames.append(list(self.mem))
        else:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO pairs VALUES (?, ?)", sorted(self.mem))
            self._db.execute("COMMIT")
        self.spilled += len(self.mem)
        self.mem = set()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._frames is not None:
            self._frames.close()
            self._frames = None


class HashLog:
    """An append-only list of 64-bit ints with ``len``, iteration and
    slices (as lists): the newest ``cap`` in memory, the older ones in an
    unlinked temporary file, 8 bytes each."""

    def __init__(self, cap: int | None = None):
        self.cap = MEMORY_CAP if cap is None else cap
        self._buf = array.array("Q")
        self._file = None
        self.on_file = 0  # how many are in the file

    def append(self, h: int) -> None:
        self._buf.append(h)
        if len(self._buf) >= self.cap:
            self._spill()

    def __len__(self) -> int:
        return self.on_file + len(self._buf)

    def __iter__(self):
        return iter(self[0 : len(self)])

    def __getitem__(self, s: slice) -> list[int]:
        start, stop, step = s.indices(len(self))
        if step != 1:
            raise ValueError("a HashLog slice has no step")
        out = array.array("Q")
        end = min(stop, self.on_file)
        if start < end:
            out.frombytes(_pread_all(self._file.fileno(), 8 * (end - start), 8 * start))
        out.extend(self._buf[max(start - self.on_file, 0) : max(stop - self.on_file, 0)])
        return out.tolist()

    def _spill(self) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile()
        data = self._buf.tobytes()
        n = 0
        while n < len(data):
            n += os.pwrite(self._file.fileno(), data[n:], 8 * self.on_file + n)
        self.on_file += len(self._buf)
        self._buf = array.array("Q")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class FrameLog:
    """An append-only list of :mod:`marshal`-able values in an unlinked
    temporary file, read back in order (marshal trusts its input: only
    this process writes the file)."""

    def __init__(self):
        self._file = tempfile.TemporaryFile()
        self._end = 0
        self._count = 0

    def append(self, value) -> None:
        data = marshal.dumps(value)
        frame = len(data).to_bytes(4, "little") + data
        n = 0
        while n < len(frame):
            n += os.pwrite(self._file.fileno(), frame[n:], self._end + n)
        self._end += len(frame)
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self):
        fd, at = self._file.fileno(), 0
        for _ in range(self._count):
            n = int.from_bytes(_pread_all(fd, 4, at), "little")
            yield marshal.loads(_pread_all(fd, n, at + 4))
            at += 4 + n

    def close(self) -> None:
        self._file.close()


def _pread_all(fd: int, n: int, at: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.pread(fd, n - len(out), at + len(out))
        if not chunk:
            raise OSError("a spill file is shorter than written")
        out += chunk
    return out
