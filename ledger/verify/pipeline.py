"""The main process's side of an accelerated run: chunks submitted to the
worker processes ahead of time, their answers applied in order, and every
entry they were not sure of checked by the reference."""

from __future__ import annotations

import base64
from collections import deque
from typing import TYPE_CHECKING, Iterator

from ledger.errors import FundledgerError, VerificationError
from ledger.format import note
from ledger.format.entry import MAX_ENTRY_BYTES, parse_entry_text
from ledger.tlog import merkle
from ledger.verify import accelerator
from ledger.verify.reference import MissingEntries
from ledger.verify.sources import Source

if TYPE_CHECKING:
    from ledger.verify.run import _Run


def _chunk_bounds(start: int, size: int) -> Iterator[tuple[int, int]]:
    """``[first, end)`` ranges of at most CHUNK entries, aligned to CHUNK."""
    first = start
    while first < size:
        end = min(size, (first // accelerator.CHUNK + 1) * accelerator.CHUNK)
        yield first, end
        first = end


class _Done:
    """A finished job (workers=1: run in the main process, when needed)."""

    def __init__(self, fn, job):
        self.fn, self.job = fn, job

    def result(self):
        return self.fn(*self.job)


class _Reread:
    """The main process's own reading of one chunk, for the entries it checks
    with the full sequential path, WINDOW entries at a time from the first
    one asked for (an ADL event's few entries read alone, not the rest of
    the chunk). Lazy: an error in the source surfaces at the entry it
    concerns."""

    WINDOW = 16

    def __init__(self, source: "Source", size: int, first: int, end: int, whole: bool = False):
        self.source, self.size = source, size
        self.it = iter(())
        self.next_seq = self.window_end = first
        self.end = end
        self.window = end - first if whole else self.WINDOW

    def get(self, seq: int, jump: bool = False) -> tuple[bytes, tuple | None]:
        """Entry ``seq``: the next one, or the last one read again; with
        ``jump``, those before it not read (the accelerator's)."""
        if jump and seq > self.next_seq:
            self.next_seq = self.window_end = seq
        while self.next_seq <= seq:
            if self.next_seq == self.window_end:
                self.window_end = min(self.end, max(seq + 1, self.next_seq + self.window))
                self.it = self.source.entry_rows(self.size, self.next_seq, self.window_end)
            try:
                self.last = next(self.it)
            except StopIteration:
                raise MissingEntries(f"entry {self.next_seq} is missing", seq=self.next_seq) from None
            self.next_seq += 1
        return self.last

    def drain(self) -> None:
        """Read what is left of the chunk (a source's failure surfaces here)."""
        for _ in self.it:
            pass


def check_entries(run: _Run, source: Source, start: int, size: int, pool, workers: int, db_columns: bool) -> None:
    """Entries ``start..size-1``: jobs submitted ahead (at most 3 per worker
    in flight), results applied in order by the main process."""
    spec = source.spec()
    contracts: dict = {}

    def submit(first: int, end: int, summarize: bool = True):
        book = run.book
        if len(contracts) != len(book.funds):
            contracts.clear()
            for symbol, f in book.funds.items():
                c = f.contract
                contracts[symbol] = (c.currency, c.scale, c.type, c.multiplier, c.seq, c.lot)
        k = run.keys.current
        job = ((k.name, k.key_id, k.public_key), dict(contracts), book.seen.key, db_columns, summarize)
        if pool is None:
            return k, _Done(accelerator.check_chunk, (source, size, first, end, *job))
        return k, pool.submit(accelerator.check_chunk_job, (spec, size, first, end, *job))

    # Lazy: the size comes from a checkpoint whose signature is not checked
    # yet, so nothing is allocated in proportion to it.
    bounds = _chunk_bounds(start, size)
    bound = next(bounds, None)
    pending: deque = deque()
    nxt = 0
    while bound is not None or pending:
        # One chunk alone first (it usually registers the contracts), then
        # up to 3 per worker in flight.
        ahead = 1 if pool is None or nxt <= 1 else 3 * workers
        while bound is not None and len(pending) < ahead:
            pending.append((bound, len(run.book.funds), *submit(*bound)))
            nxt += 1
            bound = next(bounds, None)
        (first, end), n_contracts, key, fut = pending.popleft()
        result = fut.result()
        if (n_contracts != len(run.book.funds) or key is not run.keys.current) and result[0] is not None \
                and None in result[0]:
            # Submitted before a contract or key entry was applied: check it
            # again with the tables as they are now.
            key, fut = submit(first, end)
            result = fut.result()
        _apply_chunk(run, source, first, end, key, result, submit)


def _apply_chunk(run: _Run, source: Source, first: int, end: int, key, result: tuple, submit) -> None:
    try:
        _apply_entries(run, source, first, end, key, result, submit)
    except VerificationError:
        if run.db_checks is not None:
            run.db_checks.flush_tree()  # a stored hash wrong before the failing entry is named first
        raise
    if run.db_checks is not None:
        run.db_checks.flush_tree()


def _apply_entries(run: _Run, source: Source, first: int, end: int, key, result: tuple, submit) -> None:
    """Apply one chunk's results in order; the entries a worker was not sure
    of (None) are checked by the reference, from the main process's own
    reading. After a
    contract or key entry, what is left of the chunk is checked again by a
    worker with the new tables."""
    items, summary, leaves, first_prev, read_failed, runs = result
    base = first  # the seq of items[0]
    reread = None
    agree = first_prev is not None and first_prev == base64.b64encode(run.prev).decode()
    if summary is not None:
        if agree and run.keys.current is key and run.apply_summary(*summary):
            run.leaves(leaves)
            for symbol in summary[0]:  # each fund's new head
                fund = run.book.funds[symbol]
                run.book.chains.fast_moved(fund, leaves[fund.last_seq - first])
            return
        items = []  # something is off: the whole chunk gets the full check
    if items and hasattr(run.book.seen, "hashes"):
        run.book.seen.hashes.prefetch([it[6] for it in items if it is not None])  # one query, not one an entry
    seq = first
    while seq < end:
        i = seq - base
        if runs and i in runs and agree and run.keys.current is key and _apply_run(run, runs[i], leaves, i, base):
            seq = base + runs[i][0]
            continue
        item = items[i] if i < len(items) else None
        if item is not None and agree and run.keys.current is key and run.fast(item):
            run.leaf(leaves[i])
            run.book.chains.fast_moved(run.book.funds[item[0]], leaves[i])
            agree = True
            seq += 1
            continue
        if reread is None:
            reread = _Reread(source, run.size, seq, end)
        data, row = reread.get(seq, jump=True)
        tables = (len(run.book.funds), run.keys.current)
        leaf = run.full(data, row)
        # the worker's later checks of prev assumed its own reading
        agree = i < len(leaves) and leaves[i] == leaf
        if (tables != (len(run.book.funds), run.keys.current) and seq + 1 < end and None in items[i + 1 :]
                and (i + 1 < len(items) and items[i + 1] is not None or not _table_entry(reread.get(seq + 1)[0]))):
            # (when the next entry registers a contract or a key too, its own
            # full check comes first: one resubmission for a run of them)
            key, fut = submit(seq + 1, end, summarize=False)
            items, _, leaves, first_prev, read_failed, runs = fut.result()
            base = seq + 1
            agree = first_prev is not None and first_prev == base64.b64encode(run.prev).decode()
        seq += 1
    if read_failed:  # the worker's reading stopped: the main process's, in one pass, says where and why
        whole = _Reread(source, run.size, first, end, whole=True)
        whole.get(end - 1)
        whole.drain()


def _apply_run(run: _Run, passed_run: tuple[int, tuple], leaves: list[bytes], i: int, base: int) -> bool:
    """Apply a run of passed entries ``i..end-1`` of a chunk at once, as a
    chunk that passed whole (:func:`accelerator._runs`); False if the
    running state does not agree with its summary (then entry by entry)."""
    end, summary = passed_run
    if not run.apply_summary(*summary):
        return False
    run.leaves(leaves[i:end])
    for symbol in summary[0]:  # each fund's new head
        fund = run.book.funds[symbol]
        run.book.chains.fast_moved(fund, leaves[fund.last_seq - base])
    return True


def _table_entry(data: bytes) -> bool:
    """Whether an entry looks like a contract or key entry (scheduling only:
    every entry is checked in full anyway)."""
    return b'"kind":"contract"' in data or b'"kind":"key"' in data


def recorded_before(source: Source, size: int, seq: int, pair: tuple[str, str], root: bytes | None = None) -> bool:
    """Whether an entry before ``seq`` (of a log of ``size``) records the
    liquidation ``pair``: the exact answer behind a hit in :class:`IdSet`
    (rare: a replay, or a hash collision). With ``root``, the tree root over
    entries ``0..seq-1`` as this run verified them (or as a saved state
    holds them), the entries read again must give that root, or the source
    served other bytes the second time (VerificationError): a host that
    hides the earlier entry cannot pass a duplicate off as new."""
    found = False
    tree = merkle.TreeBuilder() if root is not None else None
    for n, data in enumerate(source.entries(size, 0, seq)):
        if n >= seq:
            break
        if tree is not None:
            tree.append(merkle.leaf_hash(data))
        if found:
            continue
        try:
            text, _ = note.split_note(data, MAX_ENTRY_BYTES)
            obj = parse_entry_text(text)
        except FundledgerError:
            continue
        if obj.get("kind") == "liquidation" and (obj.get("contract"), obj.get("id")) == tuple(pair):
            found = True
            if tree is None:
                return True
    if tree is not None and (tree.size != seq or tree.root() != root):
        raise VerificationError(f"the source served other entries before seq {seq} than those verified "
                                "(read again for a liquidation id seen before)", seq=seq)
    return found
