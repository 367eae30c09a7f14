"""Static publication: the ledger as C2SP tlog-tiles under a directory.

Layout (https://c2sp.org/tlog-tiles)::

    checkpoint                   the latest signed checkpoint, with cosignatures
    vkey                         the log's note verifier key
    tile/<L>/<N>[.p/<W>]         hash tiles: W hashes of level 8L subtrees
    tile/entries/<N>[.p/<W>]     entry bundles: W entries, each a big-endian
                                 uint16 length and the entry's bytes

and for a format-2 log, the files of the light check of one fund
(publish/chains.py): ``funds``, ``since``, ``chain/<name>/<N>[.p/<W>]``
and ``heads/<L>/<hex>``. Only the chains that grew get new bundles, and
only the heads tiles not yet there are written (they are named by content).

The export covers the latest checkpoint's tree size, never more, so every
file it publishes is committed to by the checkpoint. It is incremental: the
size of the ``checkpoint`` already in the directory tells what exists, and
only the tiles that differ are written. Every file is written to a temporary
name and renamed; ``checkpoint`` is renamed last, so a reader never sees a
checkpoint whose tiles are not there yet. Partial tiles stay, for readers
holding an older checkpoint.

Reads the ledger, never writes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ledger.tlog.tiles import TILE_WIDTH, chain_path, chain_paths_path, entries_path, new_tiles, tile_hash_indexes, tile_path, tiles_for_size
from ledger.format import note
from ledger.errors import FundledgerError, InputError, StoreError
from ledger.store.schema import READER_MMAP_BYTES, Reader
from ledger.rules.chains import KEY_CHAIN
from publish import chains


@dataclass
class ExportResult:
    tree_size: int
    previous_size: int
    files_written: int


def _write(root: str, rel: str, data: bytes) -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def exported_size(root: str, origin: str) -> int:
    """The tree size of the checkpoint already exported to ``root`` (0 if none)."""
    try:
        with open(os.path.join(root, "checkpoint"), "rb") as f:
            data = f.read(1 << 20)
    except FileNotFoundError:
        return 0
    try:
        text, _ = note.split_note(data)
        cp = note.parse_checkpoint(text)
    except FundledgerError:
        return 0  # unreadable: export everything again
    if cp.origin != origin:
        raise InputError(f"{root} holds an export of another log ({cp.origin})")
    return cp.tree_size


def bundle(entries: list[bytes]) -> bytes:
    return b"".join(len(e).to_bytes(2, "big") + e for e in entries)


def export(store: Reader, root: str, full: bool = False) -> ExportResult:
    """Write (or bring up to date) the static tiles of ``store`` in ``root``.
    An export streams the file once: without the reader's mapping of it,
    whose pages would count in this process's resident memory for nothing."""
    store.conn.execute("PRAGMA mmap_size=0")
    try:
        with store.snapshot():  # the tiles and the checkpoint of one state
            return _export(store, root, full)
    finally:
        store.conn.execute(f"PRAGMA mmap_size={READER_MMAP_BYTES}")


def _export(store: Reader, root: str, full: bool) -> ExportResult:
    cp = store.latest_checkpoint()
    if cp is None:
        raise StoreError("no checkpoint yet: run `fundledger checkpoint` first")
    _, size, _, _, _ = cp
    signed = store.published_checkpoint()
    os.makedirs(root, exist_ok=True)
    old = 0 if full else exported_size(root, store.origin)
    if old > size:
        raise InputError(f"{root} holds a larger tree ({old}) than this ledger's checkpoint ({size})")
    written = _export_tiles(store, root, old, size)
    written += _export_funds(store.conn, root, old, size, full)
    _write(root, "vkey", (store.vkey + "\n").encode())
    _write(root, "checkpoint", signed)
    return ExportResult(size, old, written + 2)


def export_pending(store: Reader, root: str) -> ExportResult:
    """Write the tiles and entry bundles of the pending checkpoint (signed,
    waiting for its witnesses: ``fundledger checkpoint --policy``) above
    what ``root`` publishes, but not the checkpoint: auditing witnesses
    read them before they cosign, and readers see the new checkpoint only
    once it is published (a later :func:`export`)."""
    store.conn.execute("PRAGMA mmap_size=0")
    try:
        with store.snapshot():
            pending = store.pending_checkpoint()
            if pending is None:
                raise StoreError("no pending checkpoint")
            size = note.parse_signed_checkpoint(pending).tree_size
            os.makedirs(root, exist_ok=True)
            old = exported_size(root, store.origin)
            return ExportResult(size, old, _export_tiles(store, root, old, size) if size > old else 0)
    finally:
        store.conn.execute(f"PRAGMA mmap_size={READER_MMAP_BYTES}")


def _export_tiles(store: Reader, root: str, old: int, size: int) -> int:
    """The hash tiles and entry bundles of ``size`` not in the export of ``old``."""
    written = 0
    for level, index, width in new_tiles(old, size) if old else tiles_for_size(size):
        data = b"".join(store.read_hashes(tile_hash_indexes(level, index, width)))
        _write(root, tile_path(level, index, width), data)
        written += 1
    w = TILE_WIDTH
    for index in range(old // w, (size + w - 1) // w):
        width = min(w, size - index * w)
        if index * w + width <= old:
            continue
        items = [data for _, data in store.iter_entries(index * w, index * w + width)]
        _write(root, entries_path(index, width), bundle(items))
        written += 1
    return written


def _write_if_changed(root: str, rel: str, data: bytes) -> int:
    try:
        with open(os.path.join(root, rel), "rb") as f:
            if f.read(len(data) + 1) == data:
                return 0
    except OSError:
        pass
    _write(root, rel, data)
    return 1


def _export_funds(conn, root: str, old: int, size: int, full: bool) -> int:
    """The format-2 files at ``size``, given what an export of ``old`` left."""
    files = chains.fund_files(conn, size)
    if files is None:
        return 0
    written = _write_if_changed(root, "funds", files.funds)
    written += _write_if_changed(root, "since", f"{files.since}\n".encode())
    for rel, data in files.heads.items():
        if full or not os.path.isfile(os.path.join(root, "heads", rel)):
            _write(root, "heads/" + rel, data)
            written += 1
    lengths = dict(files.lengths)
    lengths[KEY_CHAIN] = chains.chain_length(conn, KEY_CHAIN, size)
    if full or old <= files.since:
        grown = {name: 0 for name in lengths}
    else:
        grown = _grown_chains(conn, old, size, lengths)
    for name, length_before in grown.items():
        written += _export_chain(conn, root, name, size, length_before, lengths[name])
    for name, length in lengths.items():
        written += _export_paths(conn, root, name, size, 0 if full else old, length, full)
    return written


def _export_paths(conn, root: str, name: str, size: int, old: int, length: int, full: bool) -> int:
    """Write the tile-paths files of chain ``name`` that ``size`` publishes
    and an export at ``old`` could not (an entry of theirs lay in the
    partial last tile then): those of the bundles from the one holding the
    chain's first entry at or after old's last full tile on."""
    boundary = old - old % TILE_WIDTH
    before = chains.chain_length(conn, name, boundary)
    written = 0
    for index in range(before // TILE_WIDTH, -(-length // TILE_WIDTH)):
        width = min(TILE_WIDTH, length - index * TILE_WIDTH)
        rel = chain_paths_path(name, index, width)
        if not full and os.path.isfile(os.path.join(root, rel)):
            continue
        data = chains.chain_paths(conn, name, size, index, width)
        if data is not None:
            _write(root, rel, data)
            written += 1
    return written


def _grown_chains(conn, old: int, size: int, lengths: dict[str, int]) -> dict[str, int]:
    """The chains with entries in ``old .. size - 1``: {name: length at old}."""
    grown: dict[str, int] = {}
    for contract, kind, count in conn.execute(
            "SELECT contract, kind, COUNT(*) FROM entries WHERE seq >= ? AND seq < ? GROUP BY contract, kind",
            (old, size)):
        if kind == "state":
            continue
        name = KEY_CHAIN if kind == "key" else contract
        grown[name] = grown.get(name, lengths[name]) - count
    return grown


def _export_chain(conn, root: str, name: str, size: int, length_before: int, length: int) -> int:
    """Write the bundles of chain ``name`` that changed since it had ``length_before`` entries."""
    w = TILE_WIDTH
    first = length_before // w
    items: list[bytes] = []
    written = 0
    index = first
    for data in chains.chain_entries(conn, name, size, first * w):
        items.append(data)
        if len(items) == w:
            _write(root, chain_path(name, index, w), bundle(items))
            written, items, index = written + 1, [], index + 1
    if len(items) + index * w != length:
        raise StoreError(f"chain {name} has {index * w + len(items)} entries below {size}, its head says {length}")
    if items:
        _write(root, chain_path(name, index, len(items)), bundle(items))
        written += 1
    return written
