"""The keyed hashes of the liquidation ids a writer's key signed, held at
8 bytes an id at any log size (ledger/ops/anchor.py keeps them in its
``.ids`` file and checks every new id against them)."""

from __future__ import annotations

import array
import bisect
import sys


class IdHashes:
    """A set of 64-bit id hashes at 8 bytes each, at any size. A few lookups
    (one append) search the .ids file's bytes as read, at memory speed
    (about 1 ms for a million ids); from the 33rd on (an import, a service),
    those bytes become a sorted run (``array("Q")``, looked up by
    bisection, about 3 µs), sorted in buckets by top byte so that no Python
    int per id of the whole set is ever held at once (a set of ten million
    took about 700 MB; its run takes 80). Hashes added go to a tail set of
    at most TAIL, then to runs of their own, merged beyond MAX_RUNS."""

    SET_AFTER = 32
    TAIL = 1 << 16
    MAX_RUNS = 8

    def __init__(self):
        self.packed = bytearray()  # read from the file, not yet sorted
        self.runs: list[array.array] = []
        self.tail: set[int] = set()
        self.lookups = 0

    def __len__(self) -> int:
        return len(self.packed) // 8 + sum(map(len, self.runs)) + len(self.tail)

    def add_packed(self, data: bytes) -> None:
        """Add the hashes of ``data``, little-endian uint64s (the .ids file's bytes)."""
        if self.lookups > self.SET_AFTER:
            self._add_run(_sorted(data))
        else:
            self.packed += data

    def update(self, hashes) -> None:
        self.tail.update(hashes)
        if len(self.tail) > self.TAIL:
            self._add_run(array.array("Q", self.tail))
            self.tail = set()

    def _add_run(self, hashes: array.array) -> None:
        if len(hashes) <= self.TAIL:
            self.tail.update(hashes)
            return
        self.runs.append(_sorted(hashes))
        while len(self.runs) > self.MAX_RUNS:
            self.runs.sort(key=len)
            a, b = self.runs.pop(0), self.runs.pop(0)
            self.runs.append(_sorted(a + b))

    def __contains__(self, h: int) -> bool:
        if h in self.tail:
            return True
        for run in self.runs:
            i = bisect.bisect_left(run, h)
            if i < len(run) and run[i] == h:
                return True
        if not self.packed:
            return False
        self.lookups += 1
        if self.lookups <= self.SET_AFTER:
            needle = h.to_bytes(8, "little")
            i = self.packed.find(needle)
            while i >= 0 and i % 8:
                i = self.packed.find(needle, i + 1)
            return i >= 0
        packed, self.packed = self.packed, bytearray()
        self._add_run(_sorted(packed))
        return h in self


_BUCKETED = 1 << 20  # hashes sorted at once (a list of them: about 36 MB); more go by top byte


def _sorted(hashes: array.array | bytes) -> array.array:
    """``hashes`` (an array, or little-endian uint64 bytes) sorted, as an
    array: directly up to _BUCKETED of them, else bucket by bucket of their
    top byte (the buckets' order is the hashes' order), read a slice at a
    time, so that no list of more than _BUCKETED ints is ever made. A
    bytearray given is emptied once read (its owner hands it over)."""
    n = len(hashes) // 8 if isinstance(hashes, (bytes, bytearray)) else len(hashes)
    if n <= _BUCKETED:
        return array.array("Q", sorted(_unpack(hashes) if isinstance(hashes, (bytes, bytearray)) else hashes))
    buckets = [array.array("Q") for _ in range(256)]
    for i in range(0, n, _BUCKETED):
        part = _unpack(hashes[8 * i:8 * (i + _BUCKETED)]) if isinstance(hashes, (bytes, bytearray)) \
            else hashes[i:i + _BUCKETED]
        for h in part:
            buckets[h >> 56].append(h)
    if isinstance(hashes, bytearray):
        hashes.clear()  # (the caller's, handed over: freed before the run grows)
    out = array.array("Q")
    for k in range(256):
        out.extend(sorted(buckets[k]))
        buckets[k] = None  # (freed as the run grows)
    return out


def _unpack(data: bytes) -> array.array:
    packed = array.array("Q")
    packed.frombytes(data)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed
