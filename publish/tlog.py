"""The log's public objects, read from a (read-only) SQLite connection.

These functions run inside Datasette's database threads, through
``Database.execute_fn``: they take the thread's read-only connection and
return bytes. They never write. They follow the store's own reads
(``Reader.published_checkpoint``, ``Reader.read_hashes``) on the same schema,
without importing the writer.

Only what the latest checkpoint covers is served, and the tiles and entry
bundles of the pending checkpoint (signed, waiting for its witnesses'
quorum): a tile or an entry bundle beyond is "not found", so every byte
published here is committed to by a checkpoint the log signed.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Sequence

from ledger.tlog.tiles import TILE_HEIGHT, TILE_WIDTH, tile_hash_indexes
from ledger.format import note
from ledger.errors import FundledgerError, ProofError
from ledger.store.schema import read_tree_hashes
from ledger.format.receipt import format_receipts


@dataclass(frozen=True)
class LatestCheckpoint:
    id: int
    tree_size: int
    root: bytes
    time: str
    note: bytes
    cosignatures: tuple[bytes, ...]

    @property
    def published(self) -> bytes:
        """The checkpoint note with every cosignature line collected for it
        (what ``/checkpoint`` serves)."""
        return self.note + b"".join(self.cosignatures)


def latest_checkpoint(conn) -> LatestCheckpoint | None:
    row = conn.execute(
        "SELECT id, tree_size, root, time, note FROM checkpoints ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    cid, size, root, time, signed = tuple(row)
    lines = tuple(
        bytes(r[0])
        for r in conn.execute(
            "SELECT line FROM cosignatures WHERE checkpoint_id = ? ORDER BY name, key_id", (cid,)
        )
    )
    return LatestCheckpoint(cid, size, bytes(root), time, bytes(signed), lines)


def checkpoint_size(conn) -> int:
    """The latest checkpoint's tree size (0 if none)."""
    row = conn.execute("SELECT tree_size FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()
    return 0 if row is None else row[0]


def tiles_size(conn) -> int:
    """The tree size up to which tiles and entry bundles are served: the
    latest checkpoint's, or the pending checkpoint's when it is larger (it
    is signed and waits for its witnesses, who may fetch the new entries
    before they cosign: docs/WITNESS.md)."""
    size = checkpoint_size(conn)
    row = conn.execute("SELECT value FROM meta WHERE key = 'pending_checkpoint'").fetchone()
    if row is not None:
        try:
            size = max(size, note.parse_signed_checkpoint(row[0].encode("utf-8")).tree_size)
        except (FundledgerError, UnicodeError):
            pass  # not a checkpoint: serve what the published one covers
    return size


class ConnHashReader:
    """merkle.HashReader over the ``tree`` table of a connection."""

    def __init__(self, conn):
        self.conn = conn

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        return read_tree_hashes(self.conn, indexes)


def published_width(tree_size: int, level: int, index: int) -> int:
    """How many hashes (level >= 0) or entries (level -1) tile ``(level,
    index)`` holds in the tree of ``tree_size`` leaves (0: none)."""
    count = tree_size if level < 0 else tree_size >> (TILE_HEIGHT * level)
    return max(0, min(TILE_WIDTH, count - index * TILE_WIDTH))


def tile_bytes(conn, level: int, index: int, width: int) -> bytes | None:
    """The bytes at ``tile/...`` for ``(level, index, width)``, or None when
    neither the latest checkpoint nor the pending one (:func:`tiles_size`)
    covers that tile at that width.

    A narrower partial tile than the one published now is still served:
    it is the tile of an older checkpoint, and its bytes are the first
    ``width`` of the current one (readers holding that checkpoint ask for it).
    """
    size = tiles_size(conn)
    if width > published_width(size, level, index):
        return None
    if level < 0:
        first = index * TILE_WIDTH
        rows = conn.execute(
            "SELECT seq, data FROM entries WHERE seq >= ? AND seq < ? ORDER BY seq", (first, first + width)
        ).fetchall()
        if [r[0] for r in rows] != list(range(first, first + width)):
            raise ProofError(f"entries {first}..{first + width - 1} are not all in the database")
        return b"".join(len(d).to_bytes(2, "big") + bytes(d) for _, d in (tuple(r) for r in rows))
    return b"".join(ConnHashReader(conn).read_hashes(tile_hash_indexes(level, index, width)))


def entry_bytes(conn, seq: int) -> bytes | None:
    row = conn.execute("SELECT data FROM entries WHERE seq = ?", (seq,)).fetchone()
    return None if row is None else bytes(row[0])


def receipt(conn, seq: int) -> bytes | None:
    """A C2SP tlog-proof@v1 receipt for entry ``seq`` against the latest
    checkpoint (the entry in ``extra``; after a key rotation, followed by
    the key entries' proofs: see ledger.format.receipt.format_receipts), or None if that checkpoint does not
    cover the entry. One read transaction: the checkpoint, the proof and the
    entry come from the same snapshot."""
    conn.execute("BEGIN")
    try:
        cp = latest_checkpoint(conn)
        if cp is None or not 0 <= seq < cp.tree_size:
            return None
        data = entry_bytes(conn, seq)
        if data is None:
            raise ProofError(f"entry {seq} is missing")
        keys = conn.execute(
            "SELECT seq, data FROM entries WHERE contract = '' AND kind = 'key' AND seq < ? ORDER BY seq",
            (cp.tree_size,),
        ).fetchall()
        return format_receipts(seq, cp.tree_size, cp.published, data, [(k, bytes(d)) for k, d in keys],
                             ConnHashReader(conn))
    finally:
        conn.execute("COMMIT")


def signature_lines(data: bytes) -> list[dict]:
    """The signature lines of a signed note, for display:
    ``[{"name", "key_id" (hex), "line"}]``; [] if it does not parse."""
    try:
        _, sigs = note.split_note(data)
    except FundledgerError:
        return []
    return [
        {"name": s.name, "key_id": s.key_id.hex(), "line": s.line.decode("utf-8", "replace").rstrip("\n")}
        for s in sigs
    ]


# --- format 2: the files of the light check of one fund (publish/chains.py) ------------

_FUND_FILES: dict = {}  # {(database file, checkpoint id): FundFiles | None}, the latest checkpoint's only


def _database_file(conn) -> str:
    return next((r[2] for r in conn.execute("PRAGMA database_list") if r[1] == "main"), "")


def fund_files(conn) -> "chains.FundFiles | None":
    """``funds``, ``since`` and the heads tiles of the latest checkpoint
    (None before one, or for a format-1 log), computed once per checkpoint."""
    from publish import chains

    conn.execute("BEGIN")
    try:
        row = conn.execute("SELECT id, tree_size FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        key = (_database_file(conn), row[0])
        if key not in _FUND_FILES:
            files = chains.fund_files(conn, row[1])
            _FUND_FILES.clear()
            _FUND_FILES[key] = files
        return _FUND_FILES[key]
    finally:
        conn.execute("COMMIT")


_BUNDLE_STARTS: dict = {}  # {(log, chain name): (sorted bundle indexes, seq of each one's first entry)}
_MAX_BUNDLE_STARTS = 1 << 20  # seqs kept in all (8 MB at most); past it, start again


def _log_id(conn) -> tuple:
    """The database file and its first leaf hash: a log's bundle starts are
    kept for that log only, even if another file takes its path."""
    row = conn.execute("SELECT leaf_hash FROM entries WHERE seq = 0").fetchone()
    return _database_file(conn), None if row is None else bytes(row[0])


def bundle_start(conn, name: str, index: int) -> int | None:
    """The seq of chain bundle ``index``'s first entry (None: the chain is
    shorter). A chain's positions never move (the log is append-only), so
    each one found is kept and the next is found from the nearest below it:
    reading bundle after bundle walks the index O(bundle) rows a request,
    not O(chain) as an OFFSET from the chain's start would."""
    from publish import chains

    if index == 0:
        return chains.chain_seq_at(conn, name, 0)
    key = (_log_id(conn), name)
    indexes, seqs = _BUNDLE_STARTS.setdefault(key, ([], []))
    at = bisect.bisect_right(indexes, index)
    if at and indexes[at - 1] == index:
        return seqs[at - 1]
    below, from_seq = (indexes[at - 1], seqs[at - 1]) if at else (0, 0)
    seq = chains.chain_seq_at(conn, name, (index - below) * TILE_WIDTH, from_seq)
    if seq is not None:
        if sum(len(i) for i, _ in _BUNDLE_STARTS.values()) >= _MAX_BUNDLE_STARTS:
            _BUNDLE_STARTS.clear()
            indexes, seqs = _BUNDLE_STARTS[key] = ([index], [seq])
        else:
            indexes.insert(at, index)
            seqs.insert(at, seq)
    return seq


def chain_bundle(conn, name: str, index: int, width: int, paths: bool = False) -> bytes | None:
    """``chain/<name>/<N>[.p/<W>]`` at the latest checkpoint, or with
    ``paths`` its ``.paths`` file (None: not published)."""
    from publish import chains

    conn.execute("BEGIN")
    try:
        size = checkpoint_size(conn)
        if size == 0 or chains.since(conn, size) is None:
            return None
        first = bundle_start(conn, name, index)
        if first is None or first >= size:
            return None
        read = chains.chain_paths if paths else chains.chain_bundle
        return read(conn, name, size, index, width, first)
    finally:
        conn.execute("COMMIT")
