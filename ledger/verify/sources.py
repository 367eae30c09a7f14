"""Where a log is read from: an export directory or a published site, laid
out as C2SP tlog-tiles (``checkpoint``, ``vkey``, hash tiles, entry bundles).

A ledger database is a source too (:class:`ledger.verify.database.DbSource`),
imported only when one is opened, so that verifying an export or a URL loads
no SQLite module.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from typing import Iterator

from ledger.errors import InputError, VerificationError
from ledger.format.entry import MAX_ENTRY_BYTES
from ledger.tlog import merkle
from ledger.tlog.tiles import TILE_WIDTH, entries_path, tile_path
from ledger.verify import transport
from ledger.verify.checkpoint import MAX_CHECKPOINT_BYTES, MAX_VKEY_BYTES
from ledger.verify.reference import MissingEntries


MAX_BUNDLE_BYTES = TILE_WIDTH * (2 + MAX_ENTRY_BYTES)


MAX_TILE_BYTES = TILE_WIDTH * merkle.HASH_SIZE


class Source:
    """Where the log is read from. Subclasses provide the raw pieces."""

    description = "source"

    def vkey(self) -> str | None:
        raise NotImplementedError

    def checkpoint(self) -> bytes | None:
        raise NotImplementedError

    def entries(self, tree_size: int, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Entries ``start..end-1`` (``end`` defaults to ``tree_size``) of the log of ``tree_size``."""
        raise NotImplementedError

    def entry_rows(self, tree_size: int, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, tuple | None]]:
        """``(entry bytes, database row or None)`` for entries ``start..end-1``."""
        for data in self.entries(tree_size, start, end):
            yield data, None

    def read_tile(self, level: int, index: int, width: int) -> bytes:
        raise NotImplementedError

    def spec(self) -> tuple:
        """A picklable description from which a worker process opens the same source."""
        raise NotImplementedError

    def failures(self):
        """A context in which the source's own failures (a database's
        errors) become VerificationError: what carries ledger metadata and
        fails is an alarm, never a traceback."""
        return contextlib.nullcontext()

    def close(self) -> None:
        pass


class _FileTree(Source):
    """A C2SP tlog-tiles tree read by relative path (directory or URL)."""

    def fetch(self, path: str, limit: int) -> bytes | None:
        raise NotImplementedError

    def vkey(self) -> str | None:
        data = self.fetch("vkey", MAX_VKEY_BYTES)
        return None if data is None else data.decode("utf-8", "replace").strip()

    def checkpoint(self) -> bytes | None:
        return self.fetch("checkpoint", MAX_CHECKPOINT_BYTES)

    def read_tile(self, level: int, index: int, width: int) -> bytes:
        path = tile_path(level, index, width)
        data = self.fetch(path, MAX_TILE_BYTES)
        if data is None:
            raise VerificationError(f"{path} is missing")
        return data

    def entries(self, tree_size: int, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Entries ``start..end-1`` from the entry bundles of a log of ``tree_size``."""
        w = TILE_WIDTH
        end = tree_size if end is None else min(end, tree_size)
        for index in range(start // w, (end + w - 1) // w):
            width = min(w, tree_size - index * w)
            path = entries_path(index, width)
            data = self.fetch(path, MAX_BUNDLE_BYTES)
            if data is None:
                raise MissingEntries(f"{path} is missing", seq=max(index * w, start))
            skip = max(0, start - index * w)
            stop = end - index * w  # only past the bundle's last entry is its end checked
            for i, item in enumerate(iter_bundle(data, width, index * w)):
                if i >= stop:
                    return
                if i >= skip:
                    yield item


def iter_bundle(data: bytes, width: int, first_seq: int) -> Iterator[bytes]:
    """The entries of a C2SP entry bundle, one at a time: each a big-endian
    uint16 length and that many bytes, exactly ``width`` of them and nothing
    after. Lazy, so that an entry made wrong by a bad length prefix is
    checked (and named) before the framing breaks further on."""
    pos = 0
    for i in range(width):
        if pos + 2 > len(data):
            raise VerificationError("entry bundle is truncated", seq=first_seq + i)
        n = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if pos + n > len(data):
            raise VerificationError("entry bundle is truncated", seq=first_seq + i)
        yield data[pos : pos + n]
        pos += n
    if pos != len(data):
        raise VerificationError("entry bundle has bytes after its last entry", seq=first_seq + width - 1)


def split_bundle(data: bytes, width: int, first_seq: int) -> list[bytes]:
    """All the entries of a bundle (see :func:`iter_bundle`)."""
    return list(iter_bundle(data, width, first_seq))


class DirSource(_FileTree):
    def __init__(self, root: str):
        self.root = os.path.realpath(root)
        self.description = f"export {root}"

    def spec(self) -> tuple:
        return ("dir", self.root)

    def fetch(self, path: str, limit: int) -> bytes | None:
        """A regular file of the export, at most ``limit`` bytes; a directory
        or a FIFO in its place fails (and never blocks the open)."""
        full = os.path.realpath(os.path.join(self.root, path))
        if not full.startswith(self.root + os.sep):
            raise InputError(f"path {path!r} escapes the export directory")
        return transport.read_file(full, limit, path)


class UrlSource(_FileTree):
    """A published site, read over http(s) with the bounds of
    :class:`transport.Deadlines` per request (see :mod:`ledger.verify.transport`)."""

    def __init__(self, url: str, deadlines: transport.Deadlines | None = None):
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises for a port that is not one
        except ValueError as e:
            raise InputError(f"{url!r}: not a URL ({transport.detail(e)})") from None
        if not parts.hostname:
            raise InputError(f"{url!r}: not a URL with a host")
        self.base = url if url.endswith("/") else url + "/"
        self.description = f"site {url}"
        self.deadlines = deadlines or transport.Deadlines()
        self.http = transport.HttpFetcher(self.deadlines)

    def spec(self) -> tuple:
        return ("url", self.base, self.deadlines.request_s, self.deadlines.stall_s)

    def fetch(self, path: str, limit: int) -> bytes | None:
        return self.http.get(urllib.parse.urljoin(self.base, path), limit, path)

    def close(self) -> None:
        self.http.close()


def source_from_spec(spec: tuple) -> Source:
    """The source :meth:`Source.spec` describes (in a worker process)."""
    from ledger.verify.database import DbSource  # only database sources need sqlite

    kind, where, *deadlines = spec
    if kind == "url":
        return UrlSource(where, transport.Deadlines(*deadlines))
    return {"db": DbSource, "dir": DirSource}[kind](where)


def open_source(source: str, deadlines: transport.Deadlines | None = None) -> Source:
    """A database file, an export directory, or an http(s) URL (read with
    ``deadlines`` per request)."""
    if source.startswith(("http://", "https://")):
        return UrlSource(source, deadlines)
    if os.path.isdir(source):
        return DirSource(source)
    if os.path.isfile(source):
        from ledger.verify.database import DbSource  # only database sources need sqlite

        return DbSource(source)
    raise InputError(f"{source!r}: no such database, directory or URL")

