"""The operator's library: one function per CLI command.

Each function takes paths or a :class:`~ledger.store.store.Store` and returns plain
data; the CLI only parses options, calls one of these and prints.
"""

from __future__ import annotations

import gc
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Callable

from ledger.ops import anchor as anchor_mod
from ledger.store import sign as chainsign
from ledger.ops import keys
from ledger.tlog import merkle
from ledger.tlog.proof import prove_consistency, verify_inclusion
from ledger.format import note
from ledger.format.consistency import ConsistencyProof, format_consistency
from ledger.format.receipt import format_receipts, parse_receipts
from ledger.store import bulk as importer_mod
from ledger.store.chains import fill_chains
from ledger.format.records import MAX_LINE_BYTES, iter_chunks
from ledger.errors import FundledgerError, InputError, LimitError, StoreError
from ledger.store.build import check_records
from ledger.store.schema import Reader
from ledger.store.store import AppendResult, Store

IMPORT_BATCH = 2000  # records per transaction in a bulk import


def init_ledger(db_path: str, key_path: str, origin: str, vkey_path: str | None = None,
                log_format: int = 1) -> tuple[Store, note.Signer]:
    """Create a ledger and its key (and, given ``vkey_path``, a file with the
    public verifier key). Refuses to overwrite any of them. A format-2 log
    starts with its first ``state`` entry (docs/FORMAT.md, "Format 2")."""
    if log_format not in (1, 2):
        raise InputError(f"--format must be 1 or 2, not {log_format}")
    keys.check_key_name(origin, "origin")
    anchor = writer_anchor(key_path)
    for p, what in ((db_path, "ledger"), (key_path, "key"), (vkey_path, "verifier key"), (anchor.path, "anchor")):
        if p is not None and os.path.exists(p):
            raise InputError(f"{p} already exists: refusing to overwrite a {what}")
    signer = keys.create_key_file(key_path, origin)
    try:
        if vkey_path is not None:
            keys.write_public(vkey_path, signer.verifier().vkey())
        try:
            store = Store.create(db_path, origin, signer.verifier().vkey())
            try:
                anchor.create(anchor_mod.AnchorState.empty(origin, signer.verifier().vkey()))
            except BaseException:
                store.close()
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(db_path + suffix):
                        os.unlink(db_path + suffix)
                raise
        except BaseException:
            if vkey_path is not None:
                os.unlink(vkey_path)
            raise
    except BaseException:
        os.unlink(key_path)
        raise
    if log_format == 2:
        store.upgrade([signer], anchor=anchor)
    return store, signer


def upgrade(store: Store, signer: note.Signer, anchor: anchor_mod.WriterAnchor | None = None) -> int:
    """Switch a format-1 log to format 2: its first ``state`` entry, whose seq
    is returned; the next checkpoint covers it."""
    return store.upgrade([signer], anchor=anchor)


def writer_anchor(key_path: str) -> anchor_mod.WriterAnchor:
    """The anchor of the key at ``key_path`` (``<key>.anchor``, beside it):
    what that key has signed, which every write is held to before it signs
    (ledger/ops/anchor.py)."""
    return anchor_mod.WriterAnchor(anchor_mod.anchor_path(key_path))


def append_one(store: Store, signer: note.Signer, record: dict,
               anchor: anchor_mod.WriterAnchor | None = None) -> AppendResult:
    """Append one contract or liquidation record (``contract add``,
    ``liquidation``), held to ``anchor`` if given (the CLI always gives it)."""
    return store.append([record], [signer], anchor=anchor)


# -- bulk import -------------------------------------------------------------------


@dataclass
class ImportResult:
    lines: int = 0
    appended: int = 0
    duplicates: int = 0
    tree_size: int = 0


def check_import(store: Reader, stream: IO[bytes]) -> tuple[int, int]:
    """Pass 1 of an import: every line parsed and checked by the fund rules
    against the ledger's state, nothing written. Returns ``(records,
    duplicates)``; raises on the first bad line."""
    return check_records(fill_chains(store, store.load_book()), iter_chunks(stream, IMPORT_BATCH))


def import_records(
    store: Store,
    signer: note.Signer,
    stream: IO[bytes],
    progress: Callable[[int], None] = lambda n: None,
    batch_size: int = IMPORT_BATCH,
    on_checked: Callable[[int], None] = lambda total: None,
    anchor: anchor_mod.WriterAnchor | None = None,
) -> ImportResult:
    """Import JSON Lines of contract and liquidation records.

    Two passes: the whole input is checked first (a bad line anywhere means
    exit 2 and nothing written), then appended in transactions of
    ``batch_size`` records. Replays are skipped, so re-running an import that
    was interrupted appends exactly what is missing. ``stream`` must be
    seekable (the CLI spools standard input to a temporary file).
    ``on_checked(total)`` is called between the passes, ``progress(n)``
    after each committed batch of ``n`` records.

    Pass 1 checks each record by building its entry against one snapshot of
    the ledger, and a chain signer (a child process for large inputs) signs
    the entries meanwhile; pass 2 writes them, each transaction checking
    that the chain head is still the one they were built on. If another
    writer moved it, the rest is appended the ordinary way (see
    ledger/store/bulk.py). With ``anchor`` the ledger is held to it before
    anything is signed, and it advances after each committed batch."""
    with _collector_paused():
        try:
            return _import_records(store, signer, stream, progress, batch_size, on_checked, anchor)
        finally:
            if anchor is not None:
                anchor.flush()  # whatever was committed, however the import ends


@contextmanager
def _collector_paused():
    """Python's cyclic garbage collector paused for the duration of a bulk
    import, and restored as it was. An import makes millions of short-lived
    containers (records, rows) and no reference cycles, so reference
    counting frees them all; the collector's passes (each full one walks
    every object the process holds) only cost time: about 5% of an import
    in a small process, more in one that holds many objects
    (docs/PERFORMANCE.md)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _import_records(store: Store, signer: note.Signer, stream: IO[bytes], progress: Callable[[int], None],
                    batch_size: int, on_checked: Callable[[int], None],
                    anchor: anchor_mod.WriterAnchor | None = None) -> ImportResult:
    store.check_signer([signer])  # a wrong key is refused before any reading
    batch_size = max(1, batch_size)
    use_process = (os.cpu_count() or 1) > 1 and _worth_a_process(stream)
    chain = chainsign.ProcessChain(signer) if use_process else chainsign.InlineChain(signer)
    result = ImportResult()
    try:
        with store.snapshot():
            # pass 1, and the state the entries are built on: one view of the ledger
            prep = importer_mod.prepare(
                store, signer, iter_chunks(stream, batch_size), stream.tell, chain, anchor
            )
        result.lines = prep.records
        on_checked(prep.records)
        try:
            importer_mod.write(store, signer, prep, chain, result, progress, anchor)
            fallback = None
        except importer_mod.Fallback as f:
            fallback = f
    finally:
        chain.close()
    if fallback is not None:
        # another writer moved the head: the rest the ordinary way
        stream.seek(fallback.offset)
        _append_batches(store, signer, stream, batch_size, result, progress, fallback.next_line, anchor)
    if result.tree_size == 0:
        result.tree_size = store.size()
    return result


PIPELINE_MIN_BYTES = 1 << 20  # sign in a child process from an input this large on


def _worth_a_process(stream: IO[bytes]) -> bool:
    """Starting the signing process costs about 0.1 s: worth it from a few
    thousand records on."""
    try:
        here = stream.tell()
        end = stream.seek(0, os.SEEK_END)
        stream.seek(here)
    except (OSError, ValueError):
        return True
    return end - here >= PIPELINE_MIN_BYTES


def _append_batches(store, signer, stream, batch_size, result, progress, first_line, anchor=None) -> None:
    """Append the records from the stream's position, one ``Store.append``
    (state read inside the transaction) per batch."""
    for chunk in iter_chunks(stream, batch_size, first_line):
        first = chunk[0][0]
        batch = [r for _, r in chunk]
        try:
            r = store.append(batch, [signer], anchor=anchor)
        except FundledgerError as e:
            # Only reachable if another writer changed the ledger between the
            # passes; earlier batches stay committed and a re-run resumes.
            raise type(e)(f"line {first} or after: {e}") from None
        result.appended += len(r.appended)
        result.duplicates += len(r.duplicates)
        result.tree_size = r.tree_size
        progress(len(batch))


MAX_SPOOL_BYTES = 1 << 30  # default cap on standard input spooled for an import
SPOOL_CHUNK = 1 << 20


def spool(stream: IO[bytes], max_bytes: int = MAX_SPOOL_BYTES) -> IO[bytes]:
    """A seekable copy of a non-seekable stream (standard input), checked as
    it is read: a line over MAX_LINE_BYTES, or an input over
    ``max_bytes``, is refused within a chunk of where it starts (LimitError,
    the copy deleted), so an endless input never fills the disk."""
    tmp = tempfile.TemporaryFile()
    try:
        total = lines = tail = 0  # bytes, complete lines, bytes of the open line
        while chunk := stream.read(SPOOL_CHUNK):
            total += len(chunk)
            if total > max_bytes:
                at = lines + chunk.count(b"\n", 0, len(chunk) - (total - max_bytes)) + 1
                raise LimitError(f"the input is over {max_bytes} bytes (--max-input-bytes) at line {at}; "
                                 "nothing imported")
            tail = _check_line_lengths(chunk, lines, tail)
            lines += chunk.count(b"\n")
            tmp.write(chunk)
        tmp.seek(0)
    except BaseException:
        tmp.close()
        raise
    return tmp


def _check_line_lengths(chunk: bytes, lines: int, tail: int) -> int:
    """Refuse a line of ``chunk`` over MAX_LINE_BYTES (its newline
    counted, as ``records.iter_records`` counts it), given the ``lines`` complete
    lines and the ``tail`` bytes of the open one before it; the bytes of the
    line left open after it."""
    parts = chunk.split(b"\n")
    if len(parts) == 1:
        tail += len(chunk)
        if tail > MAX_LINE_BYTES:
            raise LimitError(f"line {lines + 1}: longer than {MAX_LINE_BYTES} bytes; nothing imported")
        return tail
    parts[0] = b"" if tail + len(parts[0]) < MAX_LINE_BYTES else None
    if parts[0] is None or max(map(len, parts[1:-1]), default=0) >= MAX_LINE_BYTES \
            or len(parts[-1]) > MAX_LINE_BYTES:
        k = 0 if parts[0] is None else next(
            (i for i, p in enumerate(parts[1:-1], 1) if len(p) >= MAX_LINE_BYTES), len(parts) - 1)
        raise LimitError(f"line {lines + k + 1}: longer than {MAX_LINE_BYTES} bytes; nothing imported")
    return len(parts[-1])


# -- reading -------------------------------------------------------------------------


def balances(store: Reader, symbol: str | None = None) -> dict:
    """``{"contracts": [...], "tree_size": N}``, the ``balance --json`` shape."""
    with store.snapshot():
        return _balances(store, symbol)


def _balances(store: Reader, symbol: str | None) -> dict:
    rows = store.contract_rows()
    if symbol is not None:
        rows = [r for r in rows if r["symbol"] == symbol]
        if not rows:
            raise InputError(f"unknown contract {symbol!r}")
    book = store.load_book()
    funds = [book.funds[r["symbol"]].summary() for r in rows]
    return {"origin": store.origin, "tree_size": store.size(), "contracts": funds}


def history(store: Reader, symbol: str) -> dict:
    """Every entry of one contract, oldest first (``history --json``)."""
    return {"contract": symbol, "entries": list(iter_history(store, symbol))}


def iter_history(store: Reader, symbol: str, since: int = 0, limit: int | None = None):
    """The entries of one contract from seq ``since`` on, oldest first, at
    most ``limit``, streamed (``fundledger history``)."""
    if store.conn.execute("SELECT 1 FROM contracts WHERE symbol = ?", (symbol,)).fetchone() is None:
        raise InputError(f"unknown contract {symbol!r}")
    # a fund's entries are scattered over the file: unmapped, the pages read
    # stay in SQLite's small cache instead of this process's resident memory
    store.conn.execute("PRAGMA mmap_size=0")
    return store.iter_history(symbol, since, limit)


def checkpoint(store: Store, signer: note.Signer,
               anchor: anchor_mod.WriterAnchor | None = None, pq_signer: note.Signer | None = None,
               ) -> tuple[int, bytes, bool]:
    """Sign a checkpoint at the current size (see ``Store.add_checkpoint``),
    held to ``anchor`` if given (the CLI always gives it); with
    ``pq_signer`` (the log's ML-DSA-44 key), its subtree/v1 signature of a
    new checkpoint is kept with it as a cosignature (:func:`pq_cosignature`)."""
    size, signed, created = store.add_checkpoint([signer], anchor=anchor)
    if created and pq_signer is not None:
        store.add_cosignature(store.latest_checkpoint()[0], *pq_cosignature(signed, pq_signer))
    return size, signed, created


def pq_key_path(key_path: str) -> str:
    """Where the log's optional ML-DSA-44 key lies: ``<key file>.mldsa``."""
    return key_path + ".mldsa"


def load_pq_key(key_path: str) -> note.Signer | None:
    """The log's ML-DSA-44 key beside ``key_path``, if there is one."""
    path = pq_key_path(key_path)
    if not os.path.exists(path):
        return None
    pq = keys.load_key_file(path)
    if pq.alg != note.ALG_MLDSA44:
        raise InputError(f"{path}: not an ML-DSA-44 key")
    return pq


def pq_cosignature(signed: bytes, pq_signer: note.Signer) -> tuple[str, bytes, int, bytes]:
    """The log's own ML-DSA-44 signature of checkpoint ``signed``: a
    tlog-cosignature v1.1 line (key type 0x06, the subtree/v1 message), in
    the form ``Store.add_cosignature`` takes. Readers check it like a
    witness's, with the key pinned out of band (``verify --witness``)."""
    import time

    text, _ = note.split_note(signed)
    ts = int(time.time())
    return pq_signer.name, pq_signer.key_id, ts, note.cosign(text, pq_signer, ts)


# -- proofs ----------------------------------------------------------------------------


def _latest(store: Reader) -> tuple[int, int, bytes, str, bytes]:
    cp = store.latest_checkpoint()
    if cp is None:
        raise StoreError("no checkpoint yet: run `fundledger checkpoint` first")
    return cp


def prove(store: Reader, seq: int) -> bytes:
    """A receipt (C2SP tlog-proof@v1) that entry ``seq`` is in the log: the
    entry in ``extra``, its inclusion proof and the latest checkpoint."""
    with store.snapshot():
        return _prove(store, seq)


def liquidation_seq(store: Reader, symbol: str, liquidation_id: str) -> int:
    """The seq of the entry recording liquidation ``liquidation_id`` of
    ``symbol``. InputError when there is none: the log does not record it,
    which does not prove that it never happened."""
    row = store.conn.execute("SELECT seq FROM entries WHERE contract = ? AND liquidation_id = ?",
                             (symbol, liquidation_id)).fetchone()
    if row is None:
        known = store.conn.execute("SELECT 1 FROM contracts WHERE symbol = ?", (symbol,)).fetchone()
        if known is None:
            raise InputError(f"unknown contract {symbol!r}")
        raise InputError(f"no liquidation {liquidation_id!r} of {symbol} is recorded in this log "
                         "(not a proof that it never happened: only that it was not logged)")
    return row[0]


def _prove(store: Reader, seq: int) -> bytes:
    _, size, _, _, _ = _latest(store)
    if not 0 <= seq < size:
        raise InputError(f"seq {seq} is not covered by the latest checkpoint (size {size})")
    keys = [(start - 1, store.entry(start - 1)) for start, _ in store.key_history()[1:]]

    return format_receipts(seq, size, store.published_checkpoint(), store.entry(seq), keys, store)


def consistency(store: Reader, old_checkpoint: bytes | None = None, old_size: int | None = None) -> bytes:
    """The C2SP tlog-witness add-checkpoint body proving that the latest
    checkpoint extends ``old_checkpoint`` (a signed checkpoint of this log),
    or the tree of ``old_size`` entries (0 for a witness's first request)."""
    with store.snapshot():
        return _consistency(store, old_checkpoint, old_size)


def _consistency(store: Reader, old_checkpoint: bytes | None, old_size: int | None) -> bytes:
    from ledger.verify.checkpoint import open_checkpoint

    _, size, _, _, _ = _latest(store)
    if (old_checkpoint is None) == (old_size is None):
        raise InputError("give either an old checkpoint or --old-size")
    if old_checkpoint is not None:
        from ledger.verify.checkpoint import unverified_checkpoint

        try:
            claimed = unverified_checkpoint(old_checkpoint, store.origin, "old checkpoint")
            old = open_checkpoint(old_checkpoint, [key_at(store, claimed.tree_size)], "old checkpoint")
        except FundledgerError as e:
            raise InputError(str(e)) from None
        if old.tree_size > size:
            raise InputError(f"the old checkpoint ({old.tree_size}) is newer than the latest ({size})")
        if store.tree_hash(old.tree_size) != old.root_hash:
            from ledger.errors import VerificationError

            raise VerificationError(f"the old checkpoint's root is not this log's root at size {old.tree_size}")
        old_size = old.tree_size
    elif not 0 <= old_size <= size:
        raise InputError(f"--old-size must be from 0 to the latest checkpoint's size {size}")
    proof = prove_consistency(size, old_size, store)
    return format_consistency(ConsistencyProof(old_size, tuple(proof), store.published_checkpoint()))


def key_at(store: Reader, tree_size: int) -> note.Verifier:
    """The log key that signs checkpoints of ``tree_size``."""
    key = store.vkey
    for start, vkey in store.key_history():
        if start <= tree_size:
            key = vkey
    return note.parse_vkey(key)


def rotate_key(store: Store, old: note.Signer, new_key_path: str,
               anchor: anchor_mod.WriterAnchor | None = None) -> tuple[int, note.Signer]:
    """Create a new log key at ``new_key_path`` (0600) and hand the log over
    to it with a key entry signed by both keys. With ``anchor`` (the old
    key's; the CLI always gives it) the database is held to it before the
    key entry is signed, and the new key's anchor begins where it ends.

    Safe to run again after a crash: a key file left at ``new_key_path`` by
    an interrupted run (a key for this log that the log never used) is
    reused; one that the log already uses means the rotation is done."""
    store.check_signer([old])  # a retired or wrong key: refused before any file is made
    new = _new_or_orphan_key(store, new_key_path)
    created = new is None
    if created:
        new = keys.create_key_file(new_key_path, store.origin)
    try:
        seq = store.rotate_key(old, new, anchor=anchor)
    except BaseException:
        if created and not _log_uses(store, new):
            os.unlink(new_key_path)
        raise
    if anchor is not None:
        anchor_mod.inherit(anchor, new_key_path)
    return seq, new


def _log_uses(store: Store, signer: note.Signer) -> bool:
    """Whether the log holds ``signer``'s key; True when that cannot be read
    (a key file is never removed unless the log surely does not use it)."""
    try:
        return any(v == signer.verifier().vkey() for _, v in store.key_history())
    except Exception:
        return True


def _new_or_orphan_key(store: Store, path: str) -> note.Signer | None:
    """None if ``path`` does not exist; the key it holds if that is an
    unused Ed25519 key named the origin (left by an interrupted rotation);
    else InputError: the file is something else, or the rotation to it was
    already made."""
    if not os.path.lexists(path):
        return None
    try:
        signer = keys.load_key_file(path)
    except FundledgerError as e:
        raise InputError(f"{path} already exists and is not a usable key ({e}): refusing to overwrite it") from None
    if signer.name != store.origin or signer.alg != note.ALG_ED25519:
        raise InputError(f"{path} already exists and is not a key of this log: refusing to overwrite it")
    vkey = signer.verifier().vkey()
    for start, used in store.key_history():
        if used == vkey:
            if start > 0 and vkey == store.current_vkey:
                raise InputError(f"{path} is already the log key (key entry at seq {start - 1}): the rotation is done")
            raise InputError(f"{path} holds a key this log has already used")
    return signer


def check_receipt(data: bytes, verifiers: note.Verifier | list[note.Verifier],
                  witnesses: list[note.Verifier] = (), quorum: int | None = None, policy=None) -> dict:
    """Check a receipt offline against the log's first key ``verifiers[0]``.

    The receipt's key proofs (one per rotation in its tree) give which key
    was in force at which size; the checkpoint must be signed by the key in
    force at its size and the entry by the key in force at its seq. Any
    further ``verifiers`` are later log keys the reader knows of: the
    receipt must show the hand-over to each. With ``witnesses``, ``quorum``
    of them (default: all) must have cosigned the checkpoint: only that
    exposes a history that the holder of a retired key signed as if the
    rotation never happened. With ``policy`` (c2sp.org/tlog-policy), its
    quorum must have cosigned and the log key in force at the checkpoint's
    size, from the receipt's key proofs, must be one of its logs. Returns
    the entry's JSON object and more."""
    from ledger.verify.checkpoint import unverified_checkpoint
    from ledger.verify.reference import KeyHistory, check_lone_entry
    from ledger.errors import VerificationError
    from ledger.verify.checkpoint import require_cosignatures

    anchors = [verifiers] if isinstance(verifiers, note.Verifier) else list(verifiers)
    try:
        r, *key_proofs = parse_receipts(data)
    except FundledgerError as e:
        raise VerificationError(f"receipt: {e}") from None
    cp = unverified_checkpoint(r.checkpoint, anchors[0].name)
    history = KeyHistory(anchors[0])
    history.follow(key_proofs, cp)
    history.open_checkpoint(r.checkpoint, cp.tree_size)
    for later in anchors[1:]:
        if not any(v.vkey() == later.vkey() for _, v in history.keys):
            raise VerificationError(f"the receipt does not show the hand-over to the key {later.vkey()}")
    cosigs = require_cosignatures(r.checkpoint, witnesses, quorum) if witnesses or quorum is not None else []
    if policy is not None:
        from ledger.verify.checkpoint import check_policy_log, policy_cosigners

        check_policy_log(policy, history.at(cp.tree_size), cp.tree_size)
        cosigs += [n for n in policy_cosigners(r.checkpoint, policy) if n not in cosigs]
    if r.extra is None:
        raise VerificationError("receipt carries no entry")
    try:
        obj = check_lone_entry(r.extra, r.leaf_index, history.upto(r.leaf_index))
    except VerificationError as e:
        raise VerificationError(f"receipt entry: {e.reason}") from None
    if obj.get("kind") == "key" and not history.knows(r.leaf_index + 1, note.parse_vkey(obj["vkey"])):
        raise VerificationError("the receipt's key entry is missing from its key proofs")
    verify_inclusion(merkle.leaf_hash(r.extra), r.leaf_index, cp.tree_size, r.proof, cp.root_hash)
    return {"ok": True, "seq": r.leaf_index, "tree_size": cp.tree_size, "entry": obj,
            "keys": [{"from_size": start, "vkey": v.vkey()} for start, v in history.keys], "cosignatures": cosigs}


def attach_cosignatures(store: Store, lines: bytes, witnesses: list[note.Verifier]) -> list[str]:
    """Verify witness cosignature lines on the latest checkpoint and keep
    them; they are published with it. Returns the witnesses' names."""
    from ledger.ops.witness import check_cosignatures

    cid, _, _, _, signed = _latest(store)
    names = []
    for w, timestamp, line in check_cosignatures(signed, lines, witnesses):
        store.add_cosignature(cid, w.name, w.key_id, timestamp, line)
        names.append(w.name)
    return names
