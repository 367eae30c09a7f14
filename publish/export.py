"""Static publication: the ledger as C2SP tlog-tiles under a directory.

Layout (https://c2sp.org/tlog-tiles)::

    checkpoint                   the latest signed checkpoint, with cosignatures
    vkey                         the log's note verifier key
    tile/<L>/<N>[.p/<W>]         hash tiles: W hashes of level 8L subtrees
    tile/entries/<N>[.p/<W>]     entry bundles: W entries, each a big-endian
                                 uint16 length and the entry's bytes

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

from ledger.tlog.tiles import TILE_WIDTH, entries_path, new_tiles, tile_hash_indexes, tile_path, tiles_for_size
from ledger.format import note
from ledger.errors import FundledgerError, InputError, StoreError
from ledger.store.schema import Reader


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
    """Write (or bring up to date) the static tiles of ``store`` in ``root``."""
    with store.snapshot():  # the tiles and the checkpoint of one state
        return _export(store, root, full)


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
    _write(root, "vkey", (store.vkey + "\n").encode())
    _write(root, "checkpoint", signed)
    return ExportResult(size, old, written + 2)
