"""``fundledger verify``: one verification of a source, end to end.

It opens the checkpoint, runs every entry through the reference
(:mod:`ledger.verify.reference`), directly (``workers=0``) or with the
accelerator's worker processes deciding which entries plainly passed
(:mod:`ledger.verify.pipeline`), and meanwhile recomputes what the source
publishes beside the entries: hash tiles (:mod:`ledger.verify.tiles`), or a
database's derived tables (:mod:`ledger.verify.database`). Then the
checkpoint, the trusted checkpoint and the witnesses' cosignatures.
"""

from __future__ import annotations

import bisect
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Sequence

from ledger.errors import InputError, VerificationError
from ledger.format import note
from ledger.rules.fund import FundBook
from ledger.tlog import merkle
from ledger.verify import accelerator, pipeline, transport
from ledger.verify.checkpoint import (
    MAX_CHECKPOINT_BYTES, check_policy_log, check_published_vkey, check_trusted_file, distinct_witnesses, has_line_by,
    load_policy, load_vkey, open_checkpoint, policy_cosigners, require_cosignatures, signed_by_any,
    unverified_checkpoint, unverified_cosigners,
)
from ledger.verify.database import DbCrossCheck, DbSource
from ledger.verify.reference import Chain, KeyHistory, MissingEntries, check_checkpoints
from ledger.verify.report import Report
from ledger.verify.sources import Source, open_source
from ledger.verify.state import VerifierState
from ledger.verify.tiles import tile_checker
from ledger.verify.transport import read_small_file

if TYPE_CHECKING:
    from ledger.format.policy import Policy

PARALLEL_MIN_ENTRIES = 8 * accelerator.CHUNK  # fewer: one process (workers start in about 0.1 s)


class _Run:
    """A verification under way: the reference's :class:`Chain` and what
    follows the leaves (tiles, a database's tables, the roots wanted)."""

    def __init__(self, size: int, chain: Chain, tiles, db_checks, roots: dict, roots_wanted: set):
        self.size, self.chain, self.tiles, self.db_checks = size, chain, tiles, db_checks
        self.book, self.keys, self.tree = chain.book, chain.keys, chain.tree
        self.roots, self.roots_wanted = roots, roots_wanted
        self._wanted_sorted = sorted(roots_wanted)
        self.state_ends: set[int] = set()  # wanted sizes whose last entry is a state entry

    @property
    def seq(self) -> int:
        return self.chain.seq

    @property
    def prev(self) -> bytes:
        return self.chain.prev

    def full(self, data: bytes, row) -> bytes:
        """The reference's check of the next entry, then what follows its
        leaf; its leaf hash."""
        fields, leaf, stored = self.chain.check(data)
        if fields["kind"] == "state" and self.chain.seq in self.roots_wanted:
            self.state_ends.add(self.chain.seq)
        if self.db_checks is not None:
            self.db_checks.entry(self.chain.seq - 1, data, leaf, fields, row)
        self._stored(stored)
        return leaf

    def leaf(self, leaf: bytes) -> None:
        """Append the leaf of an entry the accelerator passed (its fund
        already moved by :meth:`fast`)."""
        _, stored = self.tree.append(leaf)
        self.chain.prev = leaf
        self.chain.seq += 1
        self._stored(stored)

    def _stored(self, stored: list[bytes]) -> None:
        """The stored hashes one append added (the leaf hash, then one node
        per trailing 1 bit of its index) are those a database must hold, and
        every 8th one completes a subtree whose root is an entry of a tile."""
        if self.tiles is not None:
            self.tiles.add_built(stored)
        if self.db_checks is not None:
            self.db_checks.tree(stored)
        if self.chain.seq in self.roots_wanted:
            self.roots[self.chain.seq] = self.tree.root()

    def fast(self, item: tuple) -> bool:
        """Apply an entry the accelerator passed (see
        :func:`accelerator.check_chunk`) if the running state agrees with
        what it assumed; False (ask the reference) if it does not."""
        symbol, before, delta, paid, adl, balance, h, time, price, chain = item
        fund = self.book.funds.get(symbol)
        if fund is None or fund.balance != before or h in self.book.seen.hashes or self.book.adl_pending is not None:
            return False
        if not _links(self.book.chains.since, fund, chain):
            return False
        fund.advance(delta, paid, adl, balance, self.chain.seq, time, price)
        self.book.seen.hashes.add(h)
        return True

    def apply_summary(self, funds: dict, hashes: list[int]) -> bool:
        """Apply a chunk that passed whole, given as one movement per fund
        (:func:`accelerator._summarize`), if it starts from the running
        balances and brings no id seen before; False otherwise."""
        book = self.book
        if book.adl_pending is not None:  # (the reference refuses what comes inside an ADL event)
            return False
        for symbol, s in funds.items():
            fund = book.funds.get(symbol)
            if fund is None or fund.balance != s[0] or not _links(book.chains.since, fund, s[9]):
                return False
        seen = book.seen.hashes
        if len(set(hashes)) != len(hashes) or not seen.isdisjoint(hashes):
            return False
        for symbol, (_, balance, credited, paid, adl, count, last_seq, last_time, last_price, _) in funds.items():
            fund = book.funds[symbol]
            fund.balance = balance
            fund.credited += credited
            fund.paid += paid
            fund.adl += adl
            fund.liquidations += count
            fund.last_seq, fund.last_time, fund.last_price = last_seq, last_time, last_price
        seen.update(hashes)
        return True

    def leaves(self, leaves: list[bytes]) -> None:
        """:meth:`leaf` for each of ``leaves`` (a chunk that passed whole),
        with the tree, tile and stored-hash work done in one loop."""
        first, end = self.chain.seq, self.chain.seq + len(leaves)
        wanted = self._wanted_sorted
        k = bisect.bisect_right(wanted, first)
        if not leaves or k < len(wanted) and wanted[k] <= end or len(wanted) != len(self.roots_wanted):
            for leaf in leaves:  # a root is wanted inside the run: leaf by leaf
                self.leaf(leaf)
            return
        stored = self.tree.extend(leaves)
        if self.tiles is not None:
            self.tiles.add_run(first, leaves, stored)
        if self.db_checks is not None:
            self.db_checks.tree_run(len(leaves), stored)
        self.chain.prev = leaves[-1]
        self.chain.seq = end


def _links(since: int | None, fund, chain: tuple[int, bytes] | None) -> bool:
    """Whether a liquidation the accelerator passed is of the log's format
    at this point (chain fields exactly after the first state entry) and,
    in format 2, names its fund's head (docs/FORMAT.md, "Chains")."""
    if chain is None:
        return since is None
    return since is not None and chain[0] == fund.last_seq and chain[1] == fund.last_leaf


def _check_format_2_sizes(run: _Run, start: int, sizes: list[int]) -> None:
    """A checkpoint of a format-2 size ends with a state entry (docs/FORMAT.md,
    "Checkpoints of a format-2 log"): of the sizes whose last entry this run read."""
    since = run.book.chains.since
    for n in sizes:
        if since is not None and n > since and n > start and n not in run.state_ends:
            raise VerificationError(f"the checkpoint of size {n} does not end with a state entry (format 2)",
                                    seq=n - 1)


def _check_entries(run: _Run, source: Source, end: int, workers: int) -> None:
    """Entries ``run.seq..end-1``: by the reference alone (``workers=0``),
    or with the accelerator in ``workers`` processes (1: in this one)."""
    if workers == 0:
        try:
            for data, row in source.entry_rows(run.size, run.seq, end):
                run.full(data, row)
                if run.db_checks is not None and run.seq % accelerator.CHUNK == 0:
                    run.db_checks.flush_tree()
        finally:  # a stored hash wrong before a failing entry is named first
            if run.db_checks is not None:
                run.db_checks.flush_tree()
        if run.seq != end:
            raise MissingEntries(f"entry {run.seq} is missing", seq=run.seq)
        return
    # forkserver: a worker forked from this process could inherit a lock
    # another thread (a web server's, a test's) held at the fork, and hang.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) if workers > 1 else None
    try:
        pipeline.check_entries(run, source, run.seq, end, pool, workers, run.db_checks is not None)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _log_key(source: Source, vkeys: Sequence[note.Verifier]) -> tuple[note.Verifier, str]:
    """The log's first key (pinned, or published by the source) and where it came from."""
    if vkeys:
        check_published_vkey(source.vkey(), vkeys[0])
        return vkeys[0], "given"
    published = source.vkey()
    if published is None:
        raise VerificationError("the source publishes no verifier key; pass --vkey")
    return load_vkey(published), "published by the source (pass --vkey to pin it)"


def _older_checkpoints(cp: note.Checkpoint, origin: str, trusted: bytes | None,
                       resume: VerifierState | None) -> note.Checkpoint | None:
    """The trusted checkpoint (parsed, not yet checked) and the saved
    state: neither may be ahead of the source's checkpoint (a rollback)."""
    trusted_cp = None
    if trusted is not None:
        trusted_cp = unverified_checkpoint(trusted, origin, "trusted checkpoint")
        if trusted_cp.tree_size > cp.tree_size:
            raise VerificationError(f"rollback: the source's checkpoint has {cp.tree_size} entries, "
                                    f"fewer than the trusted {trusted_cp.tree_size}")
    if resume is not None:
        if resume.origin != origin:
            raise InputError(f"the saved state is for the log {resume.origin!r}")
        if resume.tree_size > cp.tree_size:
            raise VerificationError(f"rollback: the source's checkpoint has {cp.tree_size} entries, "
                                    f"fewer than the {resume.tree_size} already verified")
        if trusted_cp is not None and trusted_cp.tree_size < resume.tree_size:
            raise InputError("the trusted checkpoint is older than the saved state: verify without --state")
    return trusted_cp


def _start(source: Source, log_key: note.Verifier, cp: note.Checkpoint, trusted_cp: note.Checkpoint | None,
           resume: VerifierState | None, check_tiles: bool, plain_ids: bool) -> _Run:
    """The run's starting state: from seq 0, or from the saved state."""
    is_db = isinstance(source, DbSource)
    size = max(cp.tree_size, source.size()) if is_db and resume is None else cp.tree_size
    wanted = {cp.tree_size} | ({trusted_cp.tree_size} if trusted_cp is not None else set())
    db_checks = DbCrossCheck(source) if is_db and resume is None else None
    if db_checks is not None:
        wanted |= db_checks.checkpoint_sizes()
    roots = {0: merkle.EMPTY_ROOT}
    if resume is None:
        chain = Chain(FundBook(seen=set() if plain_ids else accelerator.IdSet()), KeyHistory(log_key))
        tiles = tile_checker(source, trusted_cp) if check_tiles and not is_db else None
    else:
        book, tree, prev, start, keys = resume.restore()
        chain = Chain(book, keys, tree, prev, start)
        roots[start] = tree.root()
        tiles = None
    run = _Run(size, chain, tiles, db_checks, roots, wanted)
    if isinstance(chain.book.seen, accelerator.IdSet):
        chain.book.seen.confirm = lambda pair: pipeline.recorded_before(source, size, run.seq, pair, run.tree.root())
    return run


def _workers(workers: int | None, entries: int) -> int:
    if workers is None:
        return (os.cpu_count() or 1) if entries >= PARALLEL_MIN_ENTRIES else 1
    if workers < 0:
        raise InputError("--workers must be 0 (the reference alone) or more")
    return workers


def verify(
    source: Source,
    vkeys: Sequence[note.Verifier] = (),
    trusted: bytes | None = None,
    workers: int | None = None,
    check_tiles: bool = True,
    witnesses: Sequence[note.Verifier] = (),
    quorum: int | None = None,
    resume: VerifierState | None = None,
    keep_state: bool = False,
    policy: "Policy | None" = None,
) -> Report:
    """Verify ``source``; raise VerificationError at the first fault.
    ``policy`` (a c2sp.org/tlog-policy, instead of ``witnesses``) names the
    witnesses and their quorum, and the log keys one of which must be in
    force at the checkpoint's size.

    ``workers``: 0 runs the reference alone; None picks one process per core
    for a large log. Workers start from a fork server, so a program calling
    this with workers guards its entry point (``if __name__ == "__main__"``). With ``resume`` (the state a previous run saved at its
    checkpoint) only the entries after it are read, so the new root can only
    match if the log extends the saved checkpoint; hash tiles and a
    database's derived tables are not rechecked then."""
    log_key, key_source = _log_key(source, vkeys)
    cp_bytes = source.checkpoint()
    if cp_bytes is None:
        # A new ledger's entries are checked all the same; an export or a
        # site without one, or a run that needs one to compare with, fails.
        if isinstance(source, DbSource) and trusted is None and not witnesses and resume is None:
            return _verify_uncovered(source, log_key, key_source, workers, keep_state)
        raise VerificationError("no signed checkpoint (run `fundledger checkpoint`)")
    # Parsed now, its signature checked once the entries have told which key
    # was in force at its size (see KeyHistory).
    cp = unverified_checkpoint(cp_bytes, log_key.name)
    if policy is not None:
        cosigs = policy_cosigners(cp_bytes, policy)
    else:
        cosigs = require_cosignatures(cp_bytes, witnesses, quorum) if witnesses else []
    unverified = unverified_cosigners(cp_bytes, log_key.name, cosigs)
    trusted_cp = _older_checkpoints(cp, log_key.name, trusted, resume)
    run = _start(source, log_key, cp, trusted_cp, resume, check_tiles, workers == 0 and not keep_state)
    start = run.seq
    workers = _workers(workers, run.size - start)
    snapshot = _check_all(run, source, cp, cp_bytes, workers, keep_state, log_key.name)
    check_checkpoints(run.keys, run.roots, cp_bytes, cp, trusted, trusted_cp)
    if policy is not None:
        check_policy_log(policy, run.keys.at(cp.tree_size), cp.tree_size)
    _check_format_2_sizes(run, start, [cp.tree_size] + ([trusted_cp.tree_size] if trusted_cp else []))
    if run.tiles is not None:
        run.tiles.finish()
    if run.db_checks is not None:
        run.db_checks.finish(run.book, run.roots, run.keys)
    report = Report(run.size, run.tree.root(), run.book, cp.tree_size, run.seq - start, source.description,
                    key_source, cosigs, unverified_cosignatures=unverified)
    if keep_state:
        report.state = snapshot or VerifierState.capture(log_key.name, cp_bytes, run.size, run.tree, run.prev,
                                                         run.book, run.keys)
    return report


def _check_all(run: _Run, source: Source, cp: note.Checkpoint, cp_bytes: bytes, workers: int, keep_state: bool,
               origin: str) -> VerifierState | None:
    """Every entry up to the run's size, with the database read ahead; the
    state at the checkpoint when entries follow it (a live database)."""
    stop_prefetch = None
    if run.db_checks is not None and run.size > 0:  # a full run reads the whole file
        stop_prefetch = source.prefetch(lambda: run.seq / run.size)
    snapshot = None
    try:
        if keep_state and run.seq <= cp.tree_size < run.size:
            _check_entries(run, source, cp.tree_size, workers)
            snapshot = VerifierState.capture(origin, cp_bytes, cp.tree_size, run.tree, run.prev, run.book, run.keys)
        _check_entries(run, source, run.size, workers)
    except MissingEntries as e:
        _explain_missing(e, cp_bytes, [k for _, k in run.keys.keys])
        raise
    finally:
        if stop_prefetch is not None:
            stop_prefetch()
    return snapshot


def _verify_uncovered(source: DbSource, log_key: note.Verifier, key_source: str, workers: int | None,
                      keep_state: bool) -> Report:
    """:func:`verify` of a database no checkpoint covers yet (a new
    ledger): every entry and every derived table is checked as usual, with
    no signed root to compare. A pass says each entry is right; only a
    checkpoint commits the operator to them as a whole, so no state is kept."""
    size = source.size()
    db_checks = DbCrossCheck(source)
    workers = _workers(workers, size)
    chain = Chain(FundBook(seen=set() if workers == 0 else accelerator.IdSet()), KeyHistory(log_key))
    run = _Run(size, chain, None, db_checks, {0: merkle.EMPTY_ROOT}, db_checks.checkpoint_sizes())
    if workers:
        chain.book.seen.confirm = lambda pair: pipeline.recorded_before(source, size, run.seq, pair, run.tree.root())
    stop_prefetch = source.prefetch(lambda: run.seq / size) if size > 0 else None
    try:
        _check_entries(run, source, size, workers)
    finally:
        if stop_prefetch is not None:
            stop_prefetch()
    db_checks.finish(run.book, run.roots, run.keys)
    report = Report(size, run.tree.root(), run.book, None, size, source.description, key_source)
    if keep_state:
        report.state_note = "no signed checkpoint covers the entries yet"
    return report


def _explain_missing(e: MissingEntries, cp_bytes: bytes, known: list[note.Verifier]) -> None:
    """Entries are missing: a bad signature by a known key is the better
    explanation (the checkpoint may claim entries that do not exist). A
    checkpoint by no key known so far may be by one the missing entries
    announce: the missing tile stays the fault, with the seq it would hold."""
    if signed_by_any(cp_bytes, known):
        return
    if has_line_by(cp_bytes, known):
        open_checkpoint(cp_bytes, known)
    raise MissingEntries(
        f"{e.reason}; the checkpoint is signed by no key known before it (a key entry among the missing may announce it)",
        seq=e.seq,
    ) from None


def verify_path(
    source: str,
    vkey: str | None = None,
    trusted_path: str | None = None,
    workers: int | None = None,
    witnesses: Sequence[str] = (),
    quorum: int | None = None,
    state_path: str | None = None,
    deadlines: transport.Deadlines | None = None,
    policy_path: str | None = None,
) -> Report:
    """``fundledger verify``: open SOURCE, load the optional key, trusted
    checkpoint, witness keys or policy, verify. With ``state_path``: resume from the
    state saved there if it exists, and save the new state after success.
    ``deadlines`` bound each request to a URL source."""
    vkeys = [load_vkey(vkey)] if vkey else []
    witness_keys = distinct_witnesses([load_vkey(w) for w in witnesses])
    if quorum is not None and not 0 < quorum <= len(witness_keys):
        raise InputError(f"--quorum {quorum} needs at least that many --witness keys")
    if policy_path is not None and witnesses:
        raise InputError("--policy names the witnesses: give it or --witness, not both")
    policy = load_policy(policy_path) if policy_path is not None else None
    trusted = None
    if trusted_path is not None:
        trusted = read_small_file(trusted_path, MAX_CHECKPOINT_BYTES, "a trusted checkpoint")
        check_trusted_file(trusted, trusted_path, vkeys)
    if state_path and not os.path.isdir(os.path.dirname(os.path.abspath(state_path))):
        raise InputError(f"{state_path!r}: no such directory to keep the verifier state in")
    src = open_source(source, deadlines)
    try:
        resume = VerifierState.load(state_path) if state_path and os.path.exists(state_path) else None
        with src.failures():
            report = verify(src, vkeys, trusted, workers, witnesses=witness_keys, quorum=quorum, resume=resume,
                            keep_state=bool(state_path), policy=policy)
    finally:
        src.close()
    if state_path and report.state is not None:
        report.state.dump(state_path)
    return report
