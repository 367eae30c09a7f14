"""The verifier: recompute everything from the entry bytes, trust nothing else.

It reads a *source* (a ledger database, an export directory of C2SP tiles, or
the http(s) URL where one is published) and checks, in one streaming pass:

1. the latest checkpoint is a signed note by the log key, for the log's origin;
2. each entry is a signed note by the log key and nothing else, at most
   65,535 bytes, whose text is one line of canonical JSON;
3. ``seq`` counts 0, 1, 2, ... and ``prev`` is the RFC 6962 leaf hash of the
   entry before (32 zero bytes for seq 0);
4. the entry is exactly what the fund rules give: it is rebuilt from its own
   inputs (contract terms; liquidation side, quantity and prices) and the
   state the earlier entries left, and the bytes must match. This catches a
   wrong movement, payout, ADL split or balance, an unknown kind or field, a
   duplicate liquidation id, a non-canonical spelling;
5. the RFC 6962 root of all entries equals the checkpoint's root, and every
   hash tile matches the recomputed tree, older partial tiles included (an
   export directory's, and those of the trusted checkpoint's size);
6. with ``trusted``, the root at the trusted checkpoint's size equals its root
   (the log extends what the auditor saw) and the log is not older;
7. for a database, every derived column, stored hash, summary row and stored
   checkpoint agrees with the entry bytes.

Entries are checked in chunks by worker processes, one per core, and
applied in order by the main process (see :func:`verify`). This module never
imports the writer; a database is read through ``ledger.store.schema.Reader``,
imported only for database sources.
"""

from __future__ import annotations

import array
import base64
import bisect
import binascii
import contextlib
import hashlib
import json
import os
import re
import stat
import sys
import threading
import urllib.parse
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from nacl.bindings import crypto_sign_open

from ledger.tlog import merkle
from ledger.tlog.proof import prove_inclusion, verify_inclusion
from ledger.tlog.tiles import TILE_HEIGHT, TILE_WIDTH, entries_path, parse_tile_path, tile_hash_indexes, tile_path
from ledger.format import note
from ledger.verify import transport
from ledger.format.entry import MAX_ENTRY_BYTES, ZERO_HASH, entry_text, parse_entry_text
from ledger.errors import FormatError, FundledgerError, InputError, InvariantError, LimitError, StoreError, VerificationError
from ledger.rules.fund import (
    _CANONICAL_POSITIVE, _CANONICAL_TIME, _PRINTABLE, MAX_ID_LENGTH, ZEROS, Contract, Fund, FundBook, _valid_date,
    amount_str, canonical_movement, parse_time, settle, zero_str,
)

MAX_CHECKPOINT_BYTES = 1 << 20
MAX_VKEY_BYTES = 4096
MAX_STATE_BYTES = 1 << 30  # a verifier state: about 11 bytes per liquidation id, ~100 million ids
MAX_BUNDLE_BYTES = TILE_WIDTH * (2 + MAX_ENTRY_BYTES)
MAX_TILE_BYTES = TILE_WIDTH * merkle.HASH_SIZE
MAX_KEY_PROOFS = 64  # key entries a receipt or a witness request may prove


class MissingEntries(VerificationError):
    """Fewer entries than the checkpoint claims."""


# --- sources -------------------------------------------------------------------


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


class DbSource(Source):
    """A ledger database, opened read-only."""

    def __init__(self, path: str):
        from ledger.store.schema import Reader  # only database sources need sqlite

        try:
            self.store = Reader.open(path)
        except KeyError as e:  # a meta table without origin or vkey
            raise VerificationError(f"database {path!r}: the meta table has no {e.args[0]!r}") from None
        except StoreError as e:
            if _tampered_ledger(path):
                raise VerificationError(str(e)) from None
            raise
        if not all(isinstance(v, str) for v in (self.store.origin, self.store.vkey, self.store.current_vkey)):
            self.store.close()
            raise VerificationError(f"database {path!r}: a value of the meta table is not text")
        # A verifier streams the whole file once: no mapping (its pages would
        # count in this process's resident memory for nothing).
        self.store.conn.execute("PRAGMA mmap_size=0")
        self.path = os.path.abspath(path)
        self._prefetch_fd: int | None = None
        self.description = f"database {path}"
        # One read transaction for the whole run: a consistent snapshot even
        # while a writer appends.
        self.store.conn.execute("BEGIN")

    def vkey(self) -> str | None:
        return self.store.vkey

    def checkpoint(self) -> bytes | None:
        try:
            return self.store.published_checkpoint()
        except TypeError:  # a note or a cosignature that is not a blob
            raise VerificationError("the latest stored checkpoint is not a blob") from None

    def size(self) -> int:
        (last,) = self.store.conn.execute("SELECT MAX(seq) FROM entries").fetchone()
        if last is not None and type(last) is not int:
            raise VerificationError(f"the entries table has a seq that is not an integer: {str(last)[:20]!r}")
        return self.store.size()

    def spec(self) -> tuple:
        return ("db", self.path)

    @contextlib.contextmanager
    def failures(self):
        import sqlite3

        try:
            yield
        except sqlite3.Error as e:  # a dropped table, a damaged file...
            raise _db_failure(e) from None

    def entries(self, tree_size: int, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        for data, _ in self.entry_rows(tree_size, start, end):
            yield data

    def entry_rows(self, tree_size: int, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, tuple]]:
        """Entry bytes with their whole ``entries`` row, so the derived
        columns are checked without reading the table twice."""
        from sqlite3 import Error

        tree_size = tree_size if end is None else min(end, tree_size)
        expect = start
        rows = self.store.iter_rows(start, chunk=max(1, min(4096, tree_size - start)))
        while expect < tree_size:
            try:
                row = next(rows, None)
            except Error as e:  # (also in a worker process)
                raise _db_failure(e) from None
            if row is None:
                break
            seq = row[0]
            if seq != expect:
                raise MissingEntries(f"entry {expect} is missing", seq=expect)
            if type(row[1]) is not bytes:
                raise VerificationError("the entry's data is not a blob", seq=expect)
            yield row[1], row
            expect += 1
        if expect != tree_size:
            raise MissingEntries(f"entry {expect} is missing", seq=expect)

    def read_tile(self, level: int, index: int, width: int) -> bytes:
        return b"".join(self.store.read_hashes(tile_hash_indexes(level, index, width)))

    def prefetch(self, progress: Callable[[], float]) -> Callable[[], None]:
        """Ask the OS to read the database file ahead of a full
        verification: at most PREFETCH_AHEAD_BYTES past the share of the
        file that ``progress()`` (0 to 1) says is done, since rows are laid
        out roughly in seq order. The workers then find their pages cached
        instead of reading them one at a time (a run on a cold cache was
        about 15% slower). Returns the function that stops it.

        The file descriptor stays open until :meth:`close` has closed the
        SQLite connection: closing any descriptor of a database file drops
        every POSIX lock the process holds on it, this run's read snapshot
        included (sqlite.org/howtocorrupt.html, 2.2)."""
        stop = threading.Event()
        if not hasattr(os, "posix_fadvise") or self._prefetch_fd is not None:
            return stop.set
        try:
            self._prefetch_fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return stop.set
        thread = threading.Thread(target=_prefetch, args=(self._prefetch_fd, progress, stop), daemon=True)
        thread.start()

        def finish() -> None:
            stop.set()
            thread.join()

        return finish

    def close(self) -> None:
        try:
            self.store.conn.execute("COMMIT")
        finally:
            self.store.close()
            if self._prefetch_fd is not None:  # only now (see prefetch)
                os.close(self._prefetch_fd)
                self._prefetch_fd = None


def _db_failure(e: Exception) -> VerificationError:
    """One line for an sqlite3 error while reading a ledger (sqlite3's own
    message for text that is not UTF-8 quotes the bytes)."""
    bad_text = re.match(r"Could not decode to UTF-8 column '(\w{1,40})'", str(e))
    if bad_text:
        return VerificationError(f"database: column {bad_text[1]} holds text that is not UTF-8")
    return VerificationError(f"database: {transport.detail(e)}")


def _tampered_ledger(path: str) -> bool:
    """Whether a file the store refused is still a ledger (its entries,
    tree or checkpoints table is there), so the refusal is an alarm: not
    plain bad input. A ledger of a schema this verifier does not know yet
    is not tampered with (nor is a file that SQLite cannot read)."""
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{os.path.abspath(path)}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            try:
                schema = next(iter(conn.execute("SELECT value FROM meta WHERE key = 'schema'")), (None,))[0]
            except sqlite3.Error:  # no meta table, or not one of a ledger
                schema = None
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    newer = isinstance(schema, str) and schema.isdigit() and int(schema) > 2
    return bool(tables & {"entries", "tree", "checkpoints"}) and not newer


PREFETCH_AHEAD_BYTES = 64 << 20  # how far a database is read ahead of the verification
_PREFETCH_POLL_S = 0.05


def _prefetch(fd: int, progress: Callable[[], float], stop: threading.Event) -> None:
    """The loop of :meth:`DbSource.prefetch`: ``posix_fadvise(WILLNEED)``
    over the file ``fd`` in order, never more than PREFETCH_AHEAD_BYTES
    ahead of ``progress() * size``. Advice only: an error ends it quietly.
    It never closes ``fd``."""
    try:
        size, done = os.fstat(fd).st_size, 0
        while done < size and not stop.is_set():
            want = min(size, int(progress() * size) + PREFETCH_AHEAD_BYTES)
            if want > done:
                os.posix_fadvise(fd, done, want - done, os.POSIX_FADV_WILLNEED)
                done = want
            else:
                stop.wait(_PREFETCH_POLL_S)
    except OSError:
        return


def source_from_spec(spec: tuple) -> Source:
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
        return DbSource(source)
    raise InputError(f"{source!r}: no such database, directory or URL")


# --- signature checks in worker processes ----------------------------------------


def _check_signatures(batch: list[tuple[int, bytes, bytes, bytes]]) -> tuple[int, str] | None:
    """``(seq, public key, message, signature)`` items; the first failure.
    Ed25519 by libsodium (``crypto_sign_open``) after the explicit checks of
    :func:`ledger.format.note.ed25519_shape_ok`, as in :mod:`ledger.format.note`."""
    for seq, public_key, message, signature in batch:
        if not note.ed25519_shape_ok(public_key, signature):
            return seq, "signature does not verify"
        try:
            crypto_sign_open(signature + message, public_key)
        except Exception:  # nacl's BadSignatureError or a libsodium refusal
            return seq, "signature does not verify"
    return None


class _Signatures:
    """The signatures of the entry being checked, verified once its other
    checks have passed (a wrong amount is named as such, not as a bad
    signature)."""

    def __init__(self):
        self.batch: list = []

    def add(self, seq: int, public_key: bytes, message: bytes, signature: bytes) -> None:
        self.batch.append((seq, public_key, message, signature))

    def check(self) -> None:
        batch, self.batch = self.batch, []
        bad = _check_signatures(batch)
        if bad is not None:
            raise VerificationError(bad[1], seq=bad[0])


# --- the checks --------------------------------------------------------------------


def load_vkey(value: str) -> note.Verifier:
    """A verifier key given inline or as the path of a file holding one."""
    text = value
    if os.path.isfile(value):
        with open(value, "rb") as f:
            text = f.read(MAX_VKEY_BYTES + 1).decode("utf-8", "replace")
    try:
        return note.parse_vkey(text.strip())
    except FundledgerError as e:
        raise InputError(f"bad verifier key: {e}") from None


def check_published_vkey(published: str | None, pinned: note.Verifier) -> None:
    """A source that publishes a first key other than the pinned one fails
    (exit 1): its readers would be told to trust another key. A source that
    publishes none is judged by the pinned key alone."""
    if published is None:
        return
    try:
        key = note.parse_vkey(published.strip())
    except FundledgerError as e:
        raise VerificationError(f"the source publishes a bad vkey ({e}), not the pinned {_key_label(pinned)}") from None
    if key.vkey() != pinned.vkey():
        raise VerificationError(f"the source publishes the vkey {_key_label(key)}, not the pinned {_key_label(pinned)}")


def _key_label(key: note.Verifier) -> str:
    return f"{key.name}+{key.key_id.hex()}"


def open_checkpoint(data: bytes, verifiers: Sequence[note.Verifier], what: str = "checkpoint") -> note.Checkpoint:
    """A checkpoint note signed by one of ``verifiers``, for their origin."""
    try:
        text, _ = note.open_note(data, verifiers, max_bytes=MAX_CHECKPOINT_BYTES)
        cp = note.parse_checkpoint(text)
    except VerificationError as e:
        raise VerificationError(f"{what}: {e.reason}") from None
    except FundledgerError as e:
        raise VerificationError(f"{what}: {e}") from None
    if cp.origin != verifiers[0].name:
        raise VerificationError(f"{what} is for origin {cp.origin!r}, not {verifiers[0].name!r}")
    return cp


def unverified_checkpoint(data: bytes, origin: str, what: str = "checkpoint") -> note.Checkpoint:
    """A checkpoint's fields, its signature NOT yet checked."""
    try:
        text, _ = note.split_note(data, MAX_CHECKPOINT_BYTES)
        cp = note.parse_checkpoint(text)
    except FundledgerError as e:
        raise VerificationError(f"{what}: {e}") from None
    if cp.origin != origin:
        raise VerificationError(f"{what} is for origin {cp.origin!r}, not {origin!r}")
    return cp


def rebuild(book: FundBook, obj: dict) -> dict:
    """The fields the rules give for the entry whose JSON is ``obj``."""
    kind = obj.get("kind")
    if kind == "contract":
        record = {k: obj.get(k) for k in ("currency", "scale", "type", "multiplier")}
        record["symbol"] = obj.get("contract")
        record["kind"] = kind
    elif kind == "liquidation":
        record = {k: obj.get(k) for k in ("kind", "contract", "id", "side", "qty", "bankruptcy_price", "fill_price")}
        if "mark_price" in obj:
            record["mark_price"] = obj["mark_price"]
    elif kind == "key":
        return key_entry_fields(obj.get("vkey"))
    else:
        raise VerificationError(f"unknown entry kind {str(kind)[:30]!r}")
    try:
        return book.build(record)
    except FundledgerError as e:
        raise VerificationError(str(e)) from None


def key_entry_fields(vkey: object) -> dict:
    """The fields of a key-rotation entry announcing ``vkey``."""
    if not isinstance(vkey, str):
        raise VerificationError("a key entry needs a vkey string")
    try:
        v = note.parse_vkey(vkey)
    except FundledgerError as e:
        raise VerificationError(f"bad vkey in key entry: {e}") from None
    if v.alg != note.ALG_ED25519:
        raise VerificationError("a log key must be an Ed25519 key")
    return {"kind": "key", "contract": "", "vkey": v.vkey()}


class KeyHistory:
    """The log keys and the entries each may sign. The first key (the trust
    anchor) signs from seq 0; a ``key`` entry at seq r, signed by the
    current key and the new one, hands over: the new key signs every entry
    after r and every checkpoint of a size above r; the old one is retired."""

    def __init__(self, first: note.Verifier, later: Sequence[tuple[int, note.Verifier]] = ()):
        self.keys: list[tuple[int, note.Verifier]] = [(0, first), *later]

    @property
    def current(self) -> note.Verifier:
        return self.keys[-1][1]

    def rotate(self, seq: int, new: note.Verifier) -> None:
        if any(v.key_id == new.key_id and v.public_key == new.public_key for _, v in self.keys):
            raise VerificationError("a key entry may not bring back a key already used", seq=seq)
        if new.name != self.current.name:
            raise VerificationError(f"the new key is named {new.name!r}, not the log's origin", seq=seq)
        self.keys.append((seq + 1, new))

    def at(self, tree_size: int) -> note.Verifier:
        """The key that must sign a checkpoint of ``tree_size``."""
        key = self.keys[0][1]
        for start, v in self.keys:
            if start <= tree_size:
                key = v
        return key

    def upto(self, seq: int) -> "KeyHistory":
        """The history as entry ``seq`` sees it: the rotations before it."""
        return KeyHistory(self.keys[0][1], [(s, v) for s, v in self.keys[1:] if s <= seq])

    def knows(self, start: int, v: note.Verifier) -> bool:
        return any(s == start and k.vkey() == v.vkey() for s, k in self.keys)

    def follow(self, receipts: Sequence[note.Receipt], cp: note.Checkpoint, first_new: int = 0) -> None:
        """Add the rotations that ``receipts`` prove: key entries with their
        inclusion proofs in ``cp``, in seq order. One this history holds
        already is passed over; a new one must come after the latest known
        one and at a seq of at least ``first_new``."""
        if len(receipts) > MAX_KEY_PROOFS:
            raise LimitError(f"more than {MAX_KEY_PROOFS} key proofs")
        last = -1
        for r in receipts:
            seq = r.leaf_index
            if r.extra is None or seq <= last:
                raise VerificationError("key proofs must each carry a key entry, in seq order")
            last = seq
            verify_inclusion(merkle.leaf_hash(r.extra), seq, cp.tree_size, r.proof, cp.root_hash)
            obj = check_lone_entry(r.extra, seq, self.upto(seq))
            if obj.get("kind") != "key":
                raise VerificationError("a key proof's entry is not a key entry", seq=seq)
            new = note.parse_vkey(obj["vkey"])
            if self.knows(seq + 1, new):
                continue
            if seq + 1 <= self.keys[-1][0] or seq < first_new:
                raise VerificationError("a key entry the known key history does not hold", seq=seq)
            self.rotate(seq, new)

    def open_checkpoint(self, data: bytes, tree_size: int, what: str = "checkpoint") -> note.Checkpoint:
        """The checkpoint of ``tree_size`` signed by the key in force there;
        a signature by any other key of the log does not count (a retired
        key's alone fails, and is named as such)."""
        try:
            return open_checkpoint(data, [self.at(tree_size)], what)
        except VerificationError:
            retired = [v for _, v in self.keys if v is not self.at(tree_size)]
            if retired and _signed_by_any(data, retired):
                raise VerificationError(
                    f"{what} of size {tree_size} is signed by a retired log key, not by the key in force at that size"
                ) from None
            raise


def unverified_cosigners(data: bytes, origin: str, verified: Sequence[str]) -> list[str]:
    """The names on a checkpoint's other signature lines: neither the log's
    own (named the origin, whichever key) nor a cosignature verified against
    a witness key the reader gave. Nobody checked them: never call them
    cosignatures."""
    names: list[str] = []
    for s in note.split_note(data, MAX_CHECKPOINT_BYTES)[1]:
        if s.name != origin and s.name not in verified and s.name not in names:
            names.append(s.name)
    return names


def _explain_missing(e: MissingEntries, cp_bytes: bytes, known: list[note.Verifier]) -> None:
    """Entries are missing: a bad signature by a known key is the better
    explanation (the checkpoint may claim entries that do not exist). A
    checkpoint by no key known so far may be by one the missing entries
    announce: the missing tile stays the fault, with the seq it would hold."""
    if _signed_by_any(cp_bytes, known):
        return
    if _has_line_by(cp_bytes, known):
        open_checkpoint(cp_bytes, known)
    raise MissingEntries(
        f"{e.reason}; the checkpoint is signed by no key known before it (a key entry among the missing may announce it)",
        seq=e.seq,
    ) from None


def _has_line_by(data: bytes, keys: Sequence[note.Verifier]) -> bool:
    ids = {(k.name, k.key_id) for k in keys}
    return any((s.name, s.key_id) in ids for s in note.split_note(data, MAX_CHECKPOINT_BYTES)[1])


def _signed_by_any(data: bytes, keys: Sequence[note.Verifier]) -> bool:
    try:
        note.open_note(data, keys, max_bytes=MAX_CHECKPOINT_BYTES)
    except FundledgerError:
        return False
    return True


def check_lone_entry(data: bytes, seq: int, keys: KeyHistory) -> dict:
    """An entry seen without its log (a receipt's): signed as the verifier
    requires at ``seq`` (``keys.current`` is the key in force there), its
    ``seq`` right, its time canonical and, for a key entry, exactly the
    canonical key entry. A liquidation's figures need the log: not here."""
    sigs = _Signatures()
    obj, text = check_entry_shape(data, seq, keys, sigs)
    if obj.get("seq") != seq:
        raise VerificationError(f"seq is {str(obj.get('seq'))[:20]}, expected {seq}", seq=seq)
    try:
        time = parse_time(obj.get("time"))
        prev = base64.b64decode(obj.get("prev"), validate=True) if isinstance(obj.get("prev"), str) else b""
    except (FundledgerError, binascii.Error):
        raise VerificationError("bad time or prev", seq=seq) from None
    if len(prev) != 32:
        raise VerificationError("bad prev", seq=seq)
    if obj.get("kind") == "key":
        expected = key_entry_fields(obj.get("vkey"))
        if entry_text(expected, seq, prev, time) != text:
            raise VerificationError("the key entry is not canonical", seq=seq)
    try:
        sigs.check()
    except VerificationError:
        raise VerificationError("invalid signature", seq=seq) from None
    return obj


RECEIPT_SIG_PREFIX = "\u2014 ".encode()


def parse_receipts(data: bytes) -> list[note.Receipt]:
    """A receipt file: one C2SP tlog-proof@v1 for the entry, then, after a
    key rotation, one for each key entry in the same checkpoint (see
    docs/FORMAT.md). Each block ends after its checkpoint's signature lines."""
    if len(data) > note.MAX_NOTE_BYTES:
        raise LimitError(f"receipt of {len(data)} bytes is over the {note.MAX_NOTE_BYTES}-byte limit")
    blocks, pos = [], 0
    while pos < len(data):
        if len(blocks) > MAX_KEY_PROOFS:
            raise LimitError(f"more than {MAX_KEY_PROOFS} key proofs")
        end = _receipt_end(data, pos)
        blocks.append(note.parse_receipt(data[pos:end]))
        pos = end
    if not blocks:
        raise FormatError("empty receipt")
    if any(b.checkpoint != blocks[0].checkpoint for b in blocks):
        raise FormatError("a key proof is not against the receipt's checkpoint")
    return blocks


def format_receipts(seq: int, tree_size: int, checkpoint: bytes, data: bytes,
                    key_entries: list[tuple[int, bytes]], reader) -> bytes:
    """The receipt of entry ``seq`` (``data``) against ``checkpoint``: its
    tlog-proof@v1, then one for each key entry ``(seq, bytes)`` in that tree,
    so that a reader holding only the log's first key can follow every
    rotation to the key that signed the checkpoint (docs/FORMAT.md). A log
    that never rotated gets the plain tlog-proof@v1."""
    blocks = [(seq, data)] + [(k, d) for k, d in key_entries if k < tree_size]
    return b"".join(
        note.format_receipt(note.Receipt(i, tuple(prove_inclusion(tree_size, i, reader)), checkpoint, d))
        for i, d in blocks
    )


def _receipt_end(data: bytes, pos: int) -> int:
    """Where the tlog-proof block starting at ``pos`` ends: after the
    signature lines that follow its proof's and its checkpoint's blank lines."""
    proof_end = data.find(b"\n\n", pos)
    text_end = data.find(b"\n\n", proof_end + 2) if proof_end >= 0 else -1
    if text_end < 0:
        return len(data)
    p = text_end + 2
    while data.startswith(RECEIPT_SIG_PREFIX, p):
        nl = data.find(b"\n", p)
        if nl < 0:
            return len(data)
        p = nl + 1
    return p


def explain_mismatch(obj: dict, expected: dict) -> str:
    for k in obj:
        if k not in expected:
            return f"unexpected field {k[:30]!r}"
    for k in expected:
        if k not in obj:
            return f"missing field {k!r}"
    for k in expected:
        if obj[k] != expected[k]:
            got, want = _json_kind(obj[k]), _json_kind(expected[k])
            if got != want:  # "8" for 8 would read "is '8' but the rules give '8'"
                return f"{k} is {got} {json.dumps(obj[k])[:60]} but the rules give {want} {json.dumps(expected[k])[:60]}"
            return f"{k} is {str(obj[k])[:60]!r} but the rules give {str(expected[k])[:60]!r}"
    return "entry is not in canonical encoding"


def _json_kind(value: object) -> str:
    """What kind of JSON value ``value`` is, for a message."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "an array" if isinstance(value, list) else "an object"


@dataclass
class Report:
    """What a successful verification established."""

    tree_size: int
    root: bytes
    book: FundBook
    checkpoint_size: int | None  # None: no signed checkpoint covers the entries yet (a database only)
    entries_checked: int
    source: str
    key_source: str
    cosignatures: list[str] = field(default_factory=list)
    state: "VerifierState | None" = None
    unverified_cosignatures: list[str] = field(default_factory=list)
    state_note: str | None = None  # why no state was kept, when one was asked for

    def as_json(self) -> dict:
        return {
            "ok": True,
            "size": self.tree_size,
            "root": base64.b64encode(self.root).decode(),
            "checkpoint_size": self.checkpoint_size,  # null: no checkpoint covers the entries
            "entries_checked": self.entries_checked,
            "source": self.source,
            "key": self.key_source,
            "cosignatures": self.cosignatures,
            "unverified_cosignatures": self.unverified_cosignatures,
            "contracts": [f.summary() for _, f in sorted(self.book.funds.items())],
        }


def implied_partial_tiles(tree_size: int) -> list[tuple[int, int, int]]:
    """The partial tiles ``(level, index, width)`` a tree of ``tree_size``
    publishes (one per level at its right edge, at most), and its partial
    entry bundle as level -1: what a reader of that tree's checkpoint fetches."""
    w = TILE_WIDTH
    out = []
    level = 0
    while tree_size >> (TILE_HEIGHT * level):
        count = tree_size >> (TILE_HEIGHT * level)
        if count % w:
            out.append((level, count // w, count % w))
        level += 1
    if tree_size % w:
        out.append((-1, tree_size // w, tree_size % w))
    return out


def listed_partial_tiles(root: str) -> list[tuple[int, int, int]]:
    """Every partial tile and entry bundle file in an export directory:
    files ``tile/.../<N>.p/<W>`` whose path :func:`merkle.parse_tile_path`
    accepts (W 1..255 without leading zero). Any other name (``.p/256``,
    ``.p/007``) is not a tile and is not looked at."""
    out = []
    for dirpath, _, files in os.walk(os.path.join(root, "tile")):
        if not dirpath.endswith(".p"):
            continue
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        for name in files:
            try:
                out.append(parse_tile_path(f"{rel}/{name}"))
            except FundledgerError:
                continue
    return out


def _tile_checker(source: Source, trusted_cp: note.Checkpoint | None) -> "TileChecker":
    """The tile checks of a file source, with the older partial tiles it
    knows of: a directory's own, and those of the trusted checkpoint's size."""
    partials = [] if trusted_cp is None else implied_partial_tiles(trusted_cp.tree_size)
    if isinstance(source, DirSource):
        partials += listed_partial_tiles(source.root)
    return TileChecker(source, partials)


class TileChecker:
    """Recomputes every hash tile from the leaf hashes as they stream by and
    compares it with the published one. Level L tiles hold the hashes of
    subtrees of 2**(8L) leaves.

    ``partials`` are the older partial tiles ``(level, index, width)`` to
    check too (level -1: an entry bundle), each when tile ``(level, index)``
    of the tree being checked is complete: a partial tile of width W must
    hold the first W hashes of that tile (an older bundle, entries whose
    leaf hashes are those). A partial tile as wide as or wider than the
    tree's own tile there is not an older one and is skipped; one that is
    missing is skipped too (an export need not keep them)."""

    def __init__(self, source: Source, partials: Sequence[tuple[int, int, int]] = ()):
        self.source = source
        self.levels: list[list[bytes]] = [[]]
        self.index: list[int] = [0]
        self.partials: dict[tuple[int, int], set[int]] = {}
        for level, index, width in partials:
            self.partials.setdefault((level, index), set()).add(width)

    def add_built(self, hashes: list[bytes]) -> None:
        """Add a leaf given as the hashes :meth:`merkle.TreeBuilder.append`
        returned for it: ``hashes[8 * L]``, when present, is the root of the
        2**(8L)-leaf subtree the leaf completes, the next entry of a level-L
        tile (so no subtree root is hashed twice)."""
        self._add(0, hashes)

    def add_run(self, first: int, leaves: Sequence[bytes], stored: Sequence[bytes]) -> None:
        """:meth:`add_built` for the leaves ``first, first + 1, ...``, given as
        their leaf hashes and the stored hashes
        :meth:`merkle.TreeBuilder.extend` returned for them."""
        base = merkle.leaf_stored_index(first)
        i, n = 0, len(leaves)
        while i < n:
            buf = self.levels[0]
            take = min(n - i, TILE_WIDTH - len(buf))
            buf.extend(leaves[i : i + take])
            i += take
            if len(buf) < TILE_WIDTH:
                return
            # leaf ``seq`` filled the level-0 tile: what add_built does with
            # its hashes (the leaf hash, then one per trailing 1 bit of seq)
            seq = first + i - 1
            start = merkle.leaf_stored_index(seq) - base
            count = merkle.stored_hashes_added(seq)
            self._compare(0, self.index[0], buf)
            self.levels[0] = []
            self.index[0] += 1
            self._add(1, stored[start : start + count])

    def _add(self, level: int, hashes: Sequence[bytes]) -> None:
        while True:
            if level == len(self.levels):
                self.levels.append([])
                self.index.append(0)
            buf = self.levels[level]
            buf.append(hashes[level * TILE_HEIGHT])
            if len(buf) < TILE_WIDTH:
                return
            self._compare(level, self.index[level], buf)
            self.levels[level] = []
            self.index[level] += 1
            level += 1

    def _compare(self, level: int, index: int, hashes: list[bytes]) -> None:
        """Compare a published tile with the recomputed one; a mismatch names
        the first leaf under the first wrong hash."""
        path = tile_path(level, index, len(hashes))
        first_leaf = (index * TILE_WIDTH) << (TILE_HEIGHT * level)
        try:
            got = self.source.read_tile(level, index, len(hashes))
        except VerificationError as e:
            raise VerificationError(e.reason, seq=first_leaf) from None
        want = b"".join(hashes)
        if got == want:
            if self.partials:
                self._compare_partials(level, index, hashes)
            return
        h = merkle.HASH_SIZE
        bad = next((i for i in range(len(hashes)) if got[i * h : (i + 1) * h] != hashes[i]), len(hashes) - 1)
        raise VerificationError(
            f"hash tile {path} does not match the entries",
            seq=(index * TILE_WIDTH + bad) << (TILE_HEIGHT * level),
        )

    def _compare_partials(self, level: int, index: int, hashes: list[bytes]) -> None:
        """The older partial tiles of tile ``(level, index)`` (and, at level
        0, its older partial entry bundles) against ``hashes``, its complete
        contents; a mismatch names the first leaf under the first wrong hash."""
        h = merkle.HASH_SIZE
        first_seq = index * TILE_WIDTH
        for width in sorted(w for w in self.partials.get((level, index), ()) if w < len(hashes)):
            path = tile_path(level, index, width)
            got = self.source.fetch(path, MAX_TILE_BYTES)
            if got is None or got == b"".join(hashes[:width]):
                continue
            bad = next((i for i in range(width) if got[i * h : (i + 1) * h] != hashes[i]), width - 1)
            raise VerificationError(f"hash tile {path} does not match the entries",
                                    seq=(first_seq + bad) << (TILE_HEIGHT * level))
        if level != 0:
            return
        for width in sorted(w for w in self.partials.get((-1, index), ()) if w < len(hashes)):
            path = entries_path(index, width)
            data = self.source.fetch(path, MAX_BUNDLE_BYTES)
            if data is None:
                continue
            try:
                entries = split_bundle(data, width, first_seq)
            except VerificationError as e:
                raise VerificationError(f"{path}: {e.reason}", seq=e.seq) from None
            for i, entry in enumerate(entries):
                if merkle.leaf_hash(entry) != hashes[i]:
                    raise VerificationError(f"entry bundle {path} does not match the entries", seq=first_seq + i)

    def finish(self) -> None:
        for level, buf in enumerate(self.levels):
            if buf:
                self._compare(level, self.index[level], buf)


# --- chunks: the per-entry checks, spread over worker processes -------------------

CHUNK = 1024  # entries per verification job (a multiple of the tile width)
_ID_HASH_MASK = (1 << 60) - 1  # 60 bits: a CPython int of two digits


_KEYED: dict[bytes, "hashlib.blake2b"] = {}  # key -> BLAKE2b state with the key absorbed


def id_hash(key: bytes, contract: str, liquidation_id: str) -> int:
    """A 60-bit keyed BLAKE2b hash of a (contract, liquidation id) pair."""
    keyed = _KEYED.get(key)
    if keyed is None:
        if len(_KEYED) >= 16:
            _KEYED.clear()
        keyed = _KEYED[key] = hashlib.blake2b(digest_size=8, key=key)
    h = keyed.copy()  # cheaper than absorbing the key again
    h.update(f"{contract}\x00{liquidation_id}".encode())
    return int.from_bytes(h.digest(), "little") & _ID_HASH_MASK


class IdSet:
    """The (contract, liquidation id) pairs recorded so far, as 60-bit keyed
    hashes (:func:`id_hash`): about 64 bytes an id instead of about 200 for
    the pair of strings, so a million ids fit in ~64 MB.

    A hash hit is only a *probable* replay: ``confirm(pair)`` settles it
    exactly (the verifier re-reads the log for an earlier entry with that
    pair), so a collision between two different ids never becomes a false
    "duplicate". The key is random per run (or kept in the saved state), so
    nobody can aim for collisions."""

    def __init__(self, key: bytes | None = None, hashes=(), confirm=None):
        self.key = os.urandom(16) if key is None else key
        self.hashes: set[int] = set(hashes)
        self.exact: set[tuple[str, str]] = set()  # pairs added although their hash was already there
        self.confirm = confirm

    def __contains__(self, pair) -> bool:
        if id_hash(self.key, *pair) not in self.hashes:
            return False
        if pair in self.exact or self.confirm is None:
            return True
        return self.confirm(pair)

    def add(self, pair) -> None:
        h = id_hash(self.key, *pair)
        if h in self.hashes:
            self.exact.add(tuple(pair))
        self.hashes.add(h)

    def discard(self, pair) -> None:
        self.hashes.discard(id_hash(self.key, *pair))
        self.exact.discard(tuple(pair))

    def __len__(self) -> int:
        return len(self.hashes)


def _chunk_bounds(start: int, size: int) -> Iterator[tuple[int, int]]:
    """``[first, end)`` ranges of at most CHUNK entries, aligned to CHUNK."""
    first = start
    while first < size:
        end = min(size, (first // CHUNK + 1) * CHUNK)
        yield first, end
        first = end


_WORKER_SOURCES: dict = {}


def _check_chunk_job(job: tuple) -> tuple:
    """Run :func:`check_chunk` in a worker process, on its own handle to the source."""
    spec = job[0]
    source = _WORKER_SOURCES.get(spec)
    if source is None:
        source = _WORKER_SOURCES[spec] = source_from_spec(spec)
    return check_chunk(source, *job[1:])


def check_chunk(source: "Source", size: int, first: int, end: int, key: tuple, contracts: dict, id_key: bytes,
                db_columns: bool, summarize: bool = True) -> tuple:
    """The entries ``first..end-1`` checked as far as they can be without the
    state the entries before them leave. Returns ``(items, summary,
    leaves, first_prev, read_failed)``: ``items`` has per entry either a
    tuple of what the main process must still check and apply, or None when
    the entry needs the full sequential check (anything unusual: a contract
    or key entry, a contract or key not in the tables given, any check
    failing); when every entry passed and ``summarize``, ``items`` is None
    and ``summary`` holds the same as one movement per fund
    (:func:`_summarize`); then the leaf hash of every entry read, the first
    entry's ``prev``, and whether reading stopped early. It never decides that an entry is bad: the main process
    re-checks every None with the full sequential path, which names the
    fault exactly.

    A liquidation passes here when its signature by the log key ``key``
    verifies, its prev is the hash of the entry before (within the chunk),
    its seq is right, and its bytes are exactly what the rules give for the
    contract in ``contracts`` and a fund balance *before* it equal to the
    balance its own figures imply. The main process then checks that
    implied balance against the running one, the id against the set seen,
    and the first prev against the entry before the chunk."""
    name, key_id, public_key = key
    verifier = note.Verifier(name, key_id, public_key, note.ALG_ED25519)
    book = FundBook()
    for symbol, (currency, scale, ctype, multiplier, cseq) in contracts.items():
        book.funds[symbol] = Fund(Contract(symbol, currency, scale, ctype, multiplier, cseq))
    derived = None
    if db_columns:
        from ledger.store.schema import liquidation_row as derived
    items: list = []
    signed: list[tuple[int, bytes]] = []  # (index in items, signature + text) still to verify
    leaves: list[bytes] = []
    first_prev = None
    prev_b64 = None
    seq = first
    it = source.entry_rows(size, first, end)
    read_failed = False
    while True:
        try:
            data, row = next(it)
        except StopIteration:
            break
        except FundledgerError:
            read_failed = True
            break
        leaf = merkle.leaf_hash(data)
        item = None
        try:
            item = _fast_liquidation(data, seq, verifier, public_key, book, prev_b64, leaf, row, derived, id_key)
        except FundledgerError:
            item = None
        if item is None:
            items.append(None)
        else:
            if seq == first:
                first_prev = item[-2]
            signed.append((len(items), item[-1]))
            items.append(item[:-2])
        leaves.append(leaf)
        prev_b64 = base64.b64encode(leaf).decode()
        seq += 1
    if seq != end:
        read_failed = True
    # The signatures in one tight loop after the rest: interleaved with the
    # Python checks above, each Ed25519 verification ran about 10% slower
    # (the interpreter's work evicts libsodium's tables from the caches).
    refused = note.REFUSED_POINTS  # the explicit checks of note.ed25519_shape_ok (the key: parse_vkey's)
    for i, signed_message in signed:
        if signed_message[:32] in refused or signed_message[63] >= 0x10 \
                and int.from_bytes(signed_message[32:64], "little") >= note.ED25519_ORDER:
            items[i] = None
            continue
        try:
            crypto_sign_open(signed_message, public_key)
        except Exception:  # noqa: BLE001 - nacl's BadSignatureError or a libsodium refusal
            items[i] = None
    if items and items[0] is None:
        first_prev = None
    if summarize and not read_failed and None not in items:
        summary = _summarize(items, first)
        if summary is not None:
            return None, summary, leaves, first_prev, False
    return items, None, leaves, first_prev, read_failed


def _summarize(items: list[tuple], first: int) -> tuple[dict, list[int]] | None:
    """A chunk whose entries all passed, as one movement per fund: ``({symbol:
    (balance before, balance after, credited, paid, adl, liquidations, last
    seq, last time, last price)}, [id hashes])``, so the main process applies
    it in a few steps. None unless each entry starts from the balance the
    fund's previous entry in the chunk left."""
    funds: dict[str, list] = {}
    hashes = []
    for i, (symbol, before, delta, paid, adl, balance, h, time, price) in enumerate(items):
        f = funds.get(symbol)
        if f is None:
            f = funds[symbol] = [before, before, 0, 0, 0, 0, 0, None, None]
        elif f[1] != before:
            return None
        f[1] = balance
        if delta > 0:
            f[2] += delta
        f[3] += paid
        f[4] += adl
        f[5] += 1
        f[6], f[7], f[8] = first + i, time, price
        hashes.append(h)
    return {symbol: tuple(f) for symbol, f in funds.items()}, hashes


def _liquidation_pattern() -> re.Pattern:
    """The canonical JSON text of a liquidation entry whose strings need no
    escaping, one group per field, keys in RFC 8785 order. A text matching
    it is exactly ``canonical_json`` of its groups (``json.dumps`` with
    ``ensure_ascii`` writes printable ASCII other than ``"`` and ``\\``
    verbatim); any other spelling does not match and takes the full path."""
    plain = r'([ !#-\[\]-~]*)'  # a JSON string body json.dumps writes verbatim
    if not _CANONICAL_POSITIVE.pattern.endswith(r"\Z"):
        raise InvariantError("_CANONICAL_POSITIVE must end with \\Z")
    positive = f"({_CANONICAL_POSITIVE.pattern[:-2]})"  # what positive_decimal returns unchanged
    if not _CANONICAL_TIME.pattern.endswith(r"\Z"):
        raise InvariantError("_CANONICAL_TIME must end with \\Z")
    time = f"({_CANONICAL_TIME.pattern[:-2]})"  # what parse_time returns unchanged, but for the calendar
    fields = {"adl": plain, "balance": plain, "bankruptcy_price": positive, "contract": plain, "delta": plain,
              "fill_price": positive, "id": plain, "kind": '"liquidation"', "mark_price": positive,
              "paid": plain, "prev": plain, "qty": positive, "seq": "(0|[1-9][0-9]*)",
              "side": '"(long|short)"', "time": time}
    parts = []
    for k in sorted(fields):
        v = fields[k]
        value = v if v.startswith(("(0", '"')) else f'"{v}"'
        part = f'"{k}":{value}'
        parts.append(f"(?:{part},)?" if k == "mark_price" else part)
    return re.compile("{" + ",".join(parts).replace(",(?:", "(?:,").replace(",)?", ")?") + "}\n")


_LIQUIDATION_TEXT = _liquidation_pattern()


def _fast_liquidation(data, seq, verifier, public_key, book, prev_b64, leaf, row, derived, id_key):
    """One liquidation entry for :func:`check_chunk`: the tuple the main
    process applies, then the entry's prev and its signed message
    (signature + text), or None. The signature is not checked here: the
    caller verifies the chunk's signed messages together, and an entry
    whose signature fails is left to the main process like any other.

    The text must match :data:`_LIQUIDATION_TEXT` (so it is the canonical
    encoding of its fields) and every field must be what the rules give:
    inputs in canonical spelling, movement, payout, ADL and balance from the
    balance before the entry that its own figures imply."""
    if len(data) > MAX_ENTRY_BYTES:
        return None
    split = _split_signature_line(data, verifier)
    if split is None:
        return None
    text, signature = split
    try:
        # (the pattern admits no newline before the text's last byte, so the
        # text holds no blank line: it is the whole of the note's text)
        m = _LIQUIDATION_TEXT.fullmatch(text.decode("ascii"))
    except UnicodeDecodeError:
        return None
    if m is None:
        return None
    (adl_s, balance_s, bankruptcy_s, contract, delta_s, fill_s, lid, mark_s, paid_s, prev, qty_s, seq_s, side,
     time) = m.groups()
    # (the pattern took the time in canonical spelling only; the date must exist)
    if int(seq_s) != seq or (prev_b64 is not None and prev != prev_b64) or not _valid_date(time):
        return None
    fund = book.funds.get(contract)
    if fund is None or len(lid) > MAX_ID_LENGTH or not _PRINTABLE.match(lid):
        return None
    # (the pattern took qty and the prices in canonical spelling only)
    scale = fund.contract.scale
    delta = canonical_movement(fund.contract, side, qty_s, bankruptcy_s, fill_s)
    # The balance before this entry, as its own figures imply it; the
    # comparisons below show they are what the rules give from it.
    try:
        if delta >= 0:
            before = int(balance_s.replace(".", "")) - delta
        else:
            before = int(balance_s.replace(".", "")) + int(paid_s.replace(".", ""))
    except ValueError:
        return None
    if before < 0:
        return None
    if delta >= 0:  # settle(before, delta): a surplus, nothing paid or passed to ADL
        paid = adl = 0
        balance = before + delta
        zero = ZEROS.get(scale) or zero_str(scale)
        if paid_s != zero or adl_s != zero or amount_str(delta, scale) != delta_s \
                or amount_str(balance, scale) != balance_s:
            return None
    else:
        paid, adl, balance = settle(before, delta)
        if (amount_str(delta, scale) != delta_s or amount_str(paid, scale) != paid_s
                or amount_str(adl, scale) != adl_s or amount_str(balance, scale) != balance_s):
            return None
    if derived is not None and tuple(row) != derived(seq, data, leaf, time, contract, lid, side, qty_s, bankruptcy_s,
                                                     fill_s, mark_s, delta_s, paid_s, adl_s, balance_s):
        return None
    return (contract, before, delta, paid, adl, balance, id_hash(id_key, contract, lid), time,
            fill_s if mark_s is None else mark_s, prev, signature + text)




class _Done:
    """A finished job (workers=1: run in the main process, when needed)."""

    def __init__(self, fn, job):
        self.fn, self.job = fn, job

    def result(self):
        return self.fn(*self.job)


class _Reread:
    """The main process's own reading of one chunk, for the entries it checks
    with the full sequential path. Lazy: an error in the source surfaces at
    the entry it concerns."""

    def __init__(self, source: "Source", size: int, first: int, end: int):
        self.it = source.entry_rows(size, first, end)
        self.next_seq = first
        self.end = end

    def get(self, seq: int) -> tuple[bytes, tuple | None]:
        """Entry ``seq``: the next one, or the last one read again."""
        while self.next_seq <= seq:
            try:
                self.last = next(self.it)
            except StopIteration:
                raise MissingEntries(f"entry {self.next_seq} is missing", seq=self.next_seq) from None
            self.next_seq += 1
        return self.last

    def drain(self) -> None:
        for _ in self.it:
            pass


class _Run:
    """The sequential state of one verification: funds, ids, keys, chain
    head, Merkle tree, and the cross-checks that follow the leaves."""

    def __init__(self, size, book, keys, tree, prev, seq, tiles, db_checks, roots, roots_wanted):
        self.size, self.book, self.keys, self.tree = size, book, keys, tree
        self.prev, self.seq, self.tiles, self.db_checks = prev, seq, tiles, db_checks
        self.roots, self.roots_wanted = roots, roots_wanted
        self._wanted_sorted = sorted(roots_wanted)
        self.sigs = _Signatures()

    def full(self, data: bytes, row) -> bytes:
        """Check entry ``self.seq`` from scratch, the reference path; its leaf hash."""
        seq, prev, book = self.seq, self.prev, self.book
        self.sigs.batch.clear()
        obj, text = check_entry_shape(data, seq, self.keys, self.sigs)
        if obj.get("prev") != base64.b64encode(prev).decode():
            raise VerificationError("prev is not the hash of the entry before", seq=seq)
        if obj.get("seq") != seq:
            raise VerificationError(f"seq is {str(obj.get('seq'))[:20]}, expected {seq}", seq=seq)
        try:
            time = parse_time(obj.get("time"))
        except FundledgerError as e:
            raise VerificationError(str(e), seq=seq) from None
        try:
            expected = rebuild(book, obj)
        except VerificationError as e:
            raise VerificationError(e.reason, seq=seq) from None
        if entry_text(expected, seq, prev, time) != text:
            full = dict(expected, seq=seq, prev=obj.get("prev"), time=time)
            raise VerificationError(explain_mismatch(obj, full), seq=seq)
        self.sigs.check()
        expected["seq"] = seq
        expected["time"] = time
        if expected["kind"] == "key":
            self.keys.rotate(seq, note.parse_vkey(expected["vkey"]))
        else:
            book.apply(expected)
        leaf = merkle.leaf_hash(data)
        if self.db_checks is not None:
            self.db_checks.entry(seq, data, leaf, expected, row)
        return leaf

    def fast(self, item: tuple) -> bool:
        """Apply an entry a worker checked (see :func:`check_chunk`) if the
        running state agrees with what it assumed; False if it does not."""
        symbol, before, delta, paid, adl, balance, h, time, price = item
        fund = self.book.funds.get(symbol)
        if fund is None or fund.balance != before or h in self.book.seen.hashes:
            return False
        fund.advance(delta, paid, adl, balance, self.seq, time, price)
        self.book.seen.hashes.add(h)
        return True

    def apply_summary(self, funds: dict, hashes: list[int]) -> bool:
        """Apply a chunk given as one movement per fund (see :func:`_summarize`)
        if it starts from the running balances and brings no id seen before."""
        book = self.book
        for symbol, s in funds.items():
            fund = book.funds.get(symbol)
            if fund is None or fund.balance != s[0]:
                return False
        seen = book.seen.hashes
        if len(set(hashes)) != len(hashes) or not seen.isdisjoint(hashes):
            return False
        for symbol, (_, balance, credited, paid, adl, count, last_seq, last_time, last_price) in funds.items():
            fund = book.funds[symbol]
            fund.balance = balance
            fund.credited += credited
            fund.paid += paid
            fund.adl += adl
            fund.liquidations += count
            fund.last_seq, fund.last_time, fund.last_price = last_seq, last_time, last_price
        seen.update(hashes)
        return True

    def leaf(self, leaf: bytes) -> None:
        """The Merkle side of the entry just checked, then advance. The
        hashes the tree builder computes for the leaf (the leaf hash, then
        one node per trailing 1 bit of its index) are the stored hashes a
        database must hold, and every 8th one completes a subtree whose
        root is an entry of a hash tile."""
        _, hashes = self.tree.append(leaf)
        if self.tiles is not None:
            self.tiles.add_built(hashes)
        if self.db_checks is not None:
            self.db_checks.tree(hashes)
        self.prev = leaf
        self.seq += 1
        if self.seq in self.roots_wanted:
            self.roots[self.seq] = self.tree.root()

    def leaves(self, leaves: list[bytes]) -> None:
        """:meth:`leaf` for each of ``leaves`` in turn (a chunk that passed
        whole), with the tree, tile and stored-hash work done in one loop."""
        first, end = self.seq, self.seq + len(leaves)
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
        self.prev = leaves[-1]
        self.seq = end


def verify(
    source: Source,
    vkeys: Sequence[note.Verifier] = (),
    trusted: bytes | None = None,
    workers: int | None = None,
    check_tiles: bool = True,
    witnesses: Sequence[note.Verifier] = (),
    quorum: int | None = None,
    resume: "VerifierState | None" = None,
    keep_state: bool = False,
) -> Report:
    """Verify ``source``; raise VerificationError at the first fault.

    The entries are read in chunks of CHUNK; each chunk's per-entry checks
    (signature, canonical rebuild, hash chain inside the chunk) run in a
    worker process (:func:`check_chunk`) while the main process applies the
    results in order: running balances, liquidation ids, key rotations,
    Merkle tree, tiles, database cross-checks. Whatever a worker could not
    settle is checked by the main process from scratch, so the first fault
    is always named with the same seq and reason.

    With ``resume`` (the state a previous run of this verifier saved after
    checking the log up to its checkpoint), only the entries after that
    checkpoint are read: the fund state, the set of liquidation ids and the
    right edge of the Merkle tree come from the saved state, so the new root
    can only match if the log extends the saved checkpoint. The cost is
    proportional to the new entries; hash tiles and a database's derived
    tables are not rechecked in this mode."""
    key_source = "given"
    if not vkeys:
        published = source.vkey()
        if published is None:
            raise VerificationError("the source publishes no verifier key; pass --vkey")
        vkeys = [load_vkey(published)]
        key_source = "published by the source (pass --vkey to pin it)"
    else:
        check_published_vkey(source.vkey(), vkeys[0])
    log_key = vkeys[0]
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
    cosigs: list[str] = []
    if witnesses:
        from ledger.ops.witness import require_cosignatures

        cosigs = require_cosignatures(cp_bytes, witnesses, quorum)
    unverified = unverified_cosigners(cp_bytes, log_key.name, cosigs)

    trusted_cp = None
    if trusted is not None:
        trusted_cp = unverified_checkpoint(trusted, log_key.name, "trusted checkpoint")
        if trusted_cp.tree_size > cp.tree_size:
            raise VerificationError(
                f"rollback: the source's checkpoint has {cp.tree_size} entries, fewer than the trusted {trusted_cp.tree_size}"
            )

    if resume is not None:
        if resume.origin != log_key.name:
            raise InputError(f"the saved state is for the log {resume.origin!r}")
        if resume.tree_size > cp.tree_size:
            raise VerificationError(
                f"rollback: the source's checkpoint has {cp.tree_size} entries, fewer than the {resume.tree_size} already verified"
            )
    size = cp.tree_size
    if isinstance(source, DbSource) and resume is None:
        size = max(size, source.size())  # entries after the checkpoint are checked too
    roots_wanted = {cp.tree_size}
    if trusted_cp is not None:
        roots_wanted.add(trusted_cp.tree_size)
    db_checks = DbCrossCheck(source) if isinstance(source, DbSource) and resume is None else None
    if db_checks is not None:
        roots_wanted.update(db_checks.checkpoint_sizes())
    roots: dict[int, bytes] = {0: merkle.EMPTY_ROOT}

    if resume is None:
        book, tree, prev, start = FundBook(seen=IdSet()), merkle.TreeBuilder(), ZERO_HASH, 0
        keys = KeyHistory(log_key)
        tiles = _tile_checker(source, trusted_cp) if check_tiles and not isinstance(source, DbSource) else None
    else:
        book, tree, prev, start, keys = resume.restore()
        roots[start] = tree.root()
        tiles = None
    if trusted_cp is not None and trusted_cp.tree_size < start:
        raise InputError("the trusted checkpoint is older than the saved state: verify without --state")
    if workers is None:
        workers = (os.cpu_count() or 1) if size - start >= 8 * CHUNK else 1
    run = _Run(size, book, keys, tree, prev, start, tiles, db_checks, roots, roots_wanted)
    book.seen.confirm = lambda pair: _recorded_before(source, size, run.seq, pair)
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    stop_prefetch = None
    if db_checks is not None and size > 0:  # a full run reads the whole file
        stop_prefetch = source.prefetch(lambda: run.seq / size)
    snapshot = None
    try:
        if keep_state and start <= cp.tree_size < size:
            # Entries follow the checkpoint (a live database): the state is
            # the one at the checkpoint, taken as the run passes it.
            _check_entries(run, source, start, cp.tree_size, pool, workers, db_checks is not None)
            snapshot = VerifierState.capture(log_key.name, cp_bytes, cp.tree_size, tree, run.prev, book, keys)
        _check_entries(run, source, run.seq, size, pool, workers, db_checks is not None)
    except MissingEntries as e:
        _explain_missing(e, cp_bytes, [k for _, k in keys.keys])
        raise
    finally:
        if stop_prefetch is not None:
            stop_prefetch()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    seq = run.seq
    keys.open_checkpoint(cp_bytes, cp.tree_size)
    if trusted_cp is not None:
        keys.open_checkpoint(trusted, trusted_cp.tree_size, "trusted checkpoint")
    if roots[cp.tree_size] != cp.root_hash:
        raise VerificationError(
            f"the checkpoint's root does not match the entries (size {cp.tree_size})",
            seq=max(cp.tree_size - 1, 0),
        )
    if trusted_cp is not None and roots[trusted_cp.tree_size] != trusted_cp.root_hash:
        raise VerificationError(
            f"the log does not extend the trusted checkpoint: history up to {trusted_cp.tree_size} was rewritten",
            seq=None,
        )
    if tiles is not None:
        tiles.finish()
    if db_checks is not None:
        db_checks.finish(book, roots, keys)
    report = Report(size, tree.root(), book, cp.tree_size, seq - start, source.description, key_source, cosigs,
                    unverified_cosignatures=unverified)
    if keep_state:
        report.state = snapshot if snapshot is not None else \
            VerifierState.capture(log_key.name, cp_bytes, size, tree, run.prev, book, keys)
    return report


def _verify_uncovered(source: DbSource, log_key: note.Verifier, key_source: str, workers: int | None,
                      keep_state: bool) -> Report:
    """:func:`verify` of a database no checkpoint covers yet (a new
    ledger): every entry and every derived table is checked as usual, with
    no signed root to compare. A pass says each entry is right; only a
    checkpoint commits the operator to them as a whole, so no state is kept."""
    size = source.size()
    db_checks = DbCrossCheck(source)
    book, keys = FundBook(seen=IdSet()), KeyHistory(log_key)
    roots = {0: merkle.EMPTY_ROOT}
    run = _Run(size, book, keys, merkle.TreeBuilder(), ZERO_HASH, 0, None, db_checks, roots,
               db_checks.checkpoint_sizes())
    book.seen.confirm = lambda pair: _recorded_before(source, size, run.seq, pair)
    if workers is None:
        workers = (os.cpu_count() or 1) if size >= 8 * CHUNK else 1
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    stop_prefetch = source.prefetch(lambda: run.seq / size) if size > 0 else None
    try:
        _check_entries(run, source, 0, size, pool, workers, True)
    finally:
        if stop_prefetch is not None:
            stop_prefetch()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    db_checks.finish(book, roots, keys)
    report = Report(size, run.tree.root(), book, None, size, source.description, key_source)
    if keep_state:
        report.state_note = "no signed checkpoint covers the entries yet"
    return report


def _check_entries(run: _Run, source: Source, start: int, size: int, pool, workers: int, db_columns: bool) -> None:
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
                contracts[symbol] = (c.currency, c.scale, c.type, c.multiplier, c.seq)
        k = run.keys.current
        job = ((k.name, k.key_id, k.public_key), dict(contracts), book.seen.key, db_columns, summarize)
        if pool is None:
            return k, _Done(check_chunk, (source, size, first, end, *job))
        return k, pool.submit(_check_chunk_job, (spec, size, first, end, *job))

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
    """Apply one chunk's results in order; the entries a worker left (None)
    get the full check from the main process's own reading. After a
    contract or key entry, what is left of the chunk is checked again by a
    worker with the new tables."""
    items, summary, leaves, first_prev, read_failed = result
    base = first  # the seq of items[0]
    reread = None
    agree = first_prev is not None and first_prev == base64.b64encode(run.prev).decode()
    if summary is not None:
        if agree and run.keys.current is key and run.apply_summary(*summary):
            run.leaves(leaves)
            return
        items = []  # something is off: the whole chunk gets the full check
    for seq in range(first, end):
        i = seq - base
        item = items[i] if i < len(items) else None
        if item is not None and agree and run.keys.current is key and run.fast(item):
            run.leaf(leaves[i])
            agree = True
            continue
        if reread is None:
            reread = _Reread(source, run.size, first, end)
        data, row = reread.get(seq)
        tables = (len(run.book.funds), run.keys.current)
        leaf = run.full(data, row)
        # the worker's later checks of prev assumed its own reading
        agree = i < len(leaves) and leaves[i] == leaf
        run.leaf(leaf)
        if (tables != (len(run.book.funds), run.keys.current) and seq + 1 < end and None in items[i + 1 :]
                and (i + 1 < len(items) and items[i + 1] is not None or not _table_entry(reread.get(seq + 1)[0]))):
            # (when the next entry registers a contract or a key too, its own
            # full check comes first: one resubmission for a run of them)
            key, fut = submit(seq + 1, end, summarize=False)
            items, _, leaves, first_prev, read_failed = fut.result()
            base = seq + 1
            agree = first_prev is not None and first_prev == base64.b64encode(run.prev).decode()
    if read_failed:
        if reread is None:
            reread = _Reread(source, run.size, first, end)
            reread.get(end - 1)
        reread.drain()


def _table_entry(data: bytes) -> bool:
    """Whether an entry looks like a contract or key entry (scheduling only:
    every entry is checked in full anyway)."""
    return b'"kind":"contract"' in data or b'"kind":"key"' in data


def _recorded_before(source: Source, size: int, seq: int, pair: tuple[str, str]) -> bool:
    """Whether an entry before ``seq`` (of a log of ``size``) records the
    liquidation ``pair``: the exact answer behind a hit in :class:`IdSet`
    (rare: a replay, or a hash collision)."""
    for n, data in enumerate(source.entries(size, 0)):
        if n >= seq:
            break
        try:
            text, _ = note.split_note(data, MAX_ENTRY_BYTES)
            obj = parse_entry_text(text)
        except FundledgerError:
            continue
        if obj.get("kind") == "liquidation" and (obj.get("contract"), obj.get("id")) == tuple(pair):
            return True
    return False


def check_entry_shape(data: bytes, seq: int, keys: KeyHistory, sigs: _Signatures) -> tuple[dict, bytes]:
    """Split an entry's note, parse its JSON, queue its signature checks.

    An entry carries exactly one signature, by the current log key; a key
    entry exactly two, by the current key and then by the key it announces."""
    if len(data) > MAX_ENTRY_BYTES:
        raise VerificationError(f"entry is over {MAX_ENTRY_BYTES} bytes", seq=seq)
    fast = _split_one_signature(data, keys.current)
    if fast is not None:
        # The common case: one well-formed signature line by the current key.
        # The text's own strictness (UTF-8, no control characters) follows
        # from the byte comparison with the canonical rebuild.
        text, signature = fast
        try:
            obj = parse_entry_text(text)
        except FundledgerError as e:
            raise VerificationError(f"entry text: {e}", seq=seq) from None
        if obj.get("kind") != "key":
            sigs.add(seq, keys.current.public_key, text, signature)
            return obj, text
    try:
        text, signatures = note.split_note(data, MAX_ENTRY_BYTES)
    except FundledgerError as e:
        raise VerificationError(f"not a signed note: {e}", seq=seq) from None
    try:
        obj = parse_entry_text(text)
    except FundledgerError as e:
        raise VerificationError(f"entry text: {e}", seq=seq) from None
    signers = [keys.current]
    if obj.get("kind") == "key":
        try:
            signers.append(note.parse_vkey(key_entry_fields(obj.get("vkey"))["vkey"]))
        except VerificationError as e:
            raise VerificationError(e.reason, seq=seq) from None
    if len(signatures) != len(signers):
        raise VerificationError(
            f"{len(signatures)} signatures, expected {len(signers)} by the log key{'s' if len(signers) > 1 else ''}", seq=seq
        )
    for s, k in zip(signatures, signers):
        if s.name != k.name or s.key_id != k.key_id:
            raise VerificationError(f"signed by a key that may not sign here: {s.name}+{s.key_id.hex()}", seq=seq)
        if len(s.signature) != 64:
            raise VerificationError("malformed signature", seq=seq)
        sigs.add(seq, k.public_key, text, s.signature)
    return obj, text


_SIG_B64_LEN = 92  # base64 of a 4-byte key id and a 64-byte Ed25519 signature


def _split_one_signature(data: bytes, key: note.Verifier) -> tuple[bytes, bytes] | None:
    """``(text, signature)`` if ``data`` is a text, a blank line and exactly
    one canonical signature line by ``key``; else None (the caller then
    parses it with :func:`ledger.format.note.split_note` for a precise error)."""
    split = _split_signature_line(data, key)
    if split is None or b"\n\n" in split[0]:
        return None  # the note's text ends at its last blank line
    return split


def _split_signature_line(data: bytes, key: note.Verifier) -> tuple[bytes, bytes] | None:
    """:func:`_split_one_signature` less its check that the text holds no
    blank line (for a caller whose own check of the text excludes one)."""
    prefix = key.__dict__.get("_line_prefix")
    if prefix is None:
        prefix = "\n\n\u2014 ".encode() + key.name.encode() + b" "
        object.__setattr__(key, "_line_prefix", prefix)
    cut = len(data) - len(prefix) - _SIG_B64_LEN - 1
    if cut < 1 or data[cut : cut + len(prefix)] != prefix or data[-1:] != b"\n":
        return None
    b64 = data[cut + len(prefix) : -1]
    try:
        raw = binascii.a2b_base64(b64, strict_mode=True)
    except binascii.Error:
        return None
    if len(raw) != 68 or raw[:4] != key.key_id or binascii.b2a_base64(raw, newline=False) != b64:
        return None
    return data[: cut + 1], raw[4:]


class DbCrossCheck:
    """Checks a database's derived data against what the entries give."""

    def __init__(self, source: DbSource):
        from ledger.store.schema import derived_columns

        self.source = source
        self.store = source.store
        self.derived_columns = derived_columns
        self.checked = 0
        # schema 1 keeps the leaf hashes in `tree` too; schema 2 has them
        # only as entries.leaf_hash (checked with the other derived columns).
        # Read in the run's snapshot: a writer may upgrade the file meanwhile.
        (schema,) = self.store.conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        self.leaf_rows = schema == "1"
        self.schema = schema
        self.want: list[tuple[int, bytes]] = []  # the (id, hash) rows `tree` must hold next
        self.tree_rows = self.store.conn.execute("SELECT id, hash FROM tree ORDER BY id")

    def checkpoint_sizes(self) -> set[int]:
        return {row[1] for row in self.checkpoints()}

    def checkpoints(self) -> list[tuple]:
        """The stored checkpoints, each column of its type (a retyped one
        would otherwise surface as a TypeError far from here)."""
        rows = self.store.checkpoints()
        for row in rows:
            if tuple(map(type, row)) != (int, int, bytes, str, bytes):
                raise VerificationError(f"stored checkpoint {str(row[0])[:20]}: a column is not of its type")
        return rows

    def entry(self, seq: int, data: bytes, leaf: bytes, fields: dict, row: tuple) -> None:
        """The derived columns of an entry checked in the main process."""
        if tuple(row) != self.derived_columns(seq, data, leaf, fields):
            raise VerificationError("a derived column of the entries table does not match the entry", seq=seq)

    def tree(self, hashes: list[bytes]) -> None:
        """The stored Merkle hashes appending the next leaf adds (the leaf
        hash, then one node per trailing 1 bit of its index), compared in
        bulk by :meth:`flush_tree`, which names a bad one's leaf."""
        n = self.checked
        self.checked = n + 1
        first = merkle.leaf_stored_index(n)
        skip = 0 if self.leaf_rows else 1
        self.want.extend(zip(range(first + skip, first + len(hashes)), hashes[skip:]))

    def tree_run(self, leaves: int, stored: list[bytes]) -> None:
        """:meth:`tree` for a run of ``leaves`` leaves, given as the stored
        hashes :meth:`merkle.TreeBuilder.extend` returned for them."""
        n, end = self.checked, self.checked + leaves
        self.checked = end
        base = merkle.leaf_stored_index(n)
        if self.leaf_rows:
            self.want.extend(zip(range(base, base + len(stored)), stored))
            return
        # leaf k's hash is stored[leaf_stored_index(k) - base]; the nodes it
        # completes follow it, up to the next leaf's
        add = self.want.extend
        a = 0
        for b in merkle.leaf_stored_indexes(n + 1, end + 1):
            b -= base
            if b - a > 1:
                add(zip(range(base + a + 1, base + b), stored[a + 1 : b]))
            a = b

    def flush_tree(self) -> None:
        """Compare the stored hashes queued by :meth:`tree` with the table."""
        want, self.want = self.want, []
        if not want:
            return
        rows = self.tree_rows.fetchmany(len(want))
        if rows == want:
            return
        for i, (index, h) in enumerate(want):
            if i >= len(rows) or tuple(rows[i]) != (index, h):
                # (a row whose id comes first is one the tree may not hold)
                first = index if i >= len(rows) or type(rows[i][0]) is not int else min(index, rows[i][0])
                raise VerificationError("a stored Merkle hash does not match the entries",
                                        seq=merkle.leaf_of_stored_index(max(first, 0)))

    def finish(self, book: FundBook, roots: dict[int, bytes], keys: KeyHistory) -> None:
        from ledger.store.schema import contract_row

        self.flush_tree()
        # last: a fault in the entries or tables is named first, by its seq
        _check_schema(self.store.conn, self.schema)
        if self.store.conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0] != self.checked:
            raise VerificationError("the entries table has rows beyond the log")
        if self.tree_rows.fetchone() is not None:
            raise VerificationError("the tree table has hashes beyond the log")
        want = sorted((contract_row(f) for f in book.funds.values()), key=repr)
        got = sorted((tuple(r.values()) for r in self.store.contract_rows()), key=repr)  # (repr: any types)
        if want != got:
            raise VerificationError("the contracts summary table does not match the entries")
        last_size = 0
        for cid, size, root, _time, signed in self.checkpoints():
            cp = open_checkpoint(signed, [keys.at(size)], f"stored checkpoint {cid}")
            if (cp.tree_size, cp.root_hash) != (size, root):
                raise VerificationError(f"stored checkpoint {cid}: columns do not match its note")
            if size < last_size or roots.get(size) != root:
                raise VerificationError(f"stored checkpoint {cid} is not consistent with the entries")
            last_size = size


_SCHEMA_1_GUARDS = ("entries_no_update", "entries_no_delete", "tree_no_update", "checkpoints_no_update",
                    "checkpoints_no_delete")  # (early schema 1 files lack some of the others)


def _statements(script: str, sep: str, end: str = "") -> dict[str, str]:
    """name -> SQL (whitespace collapsed) of the CREATE statements of ``script``."""
    out = {}
    for stmt in script.split(sep):
        if stmt.split():
            words = (stmt + end).split()
            kind = next(i for i, w in enumerate(words) if w in ("TABLE", "INDEX", "TRIGGER"))
            out[words[kind + 1]] = " ".join(words)
    return out


def _check_schema(conn, schema: str) -> None:
    """Every table, index and append-only trigger of a ledger is there, as
    the writer made it: a table retyped, a guard dropped or replaced is
    tampering (an alarm), and it would let values of other types through.
    Schema 1 files share the tables; of their triggers, the guards must be
    there."""
    from ledger.store.schema import SCHEMA, TRIGGERS

    got = {name: " ".join(str(sql).split()) for name, sql in
           conn.execute("SELECT name, sql FROM sqlite_master WHERE type IN ('table', 'index', 'trigger')"
                        " AND name NOT LIKE 'sqlite_%'")}
    want = _statements(SCHEMA, ";")
    if schema == "1":
        guards = [t for t in _SCHEMA_1_GUARDS if t not in got]
        if guards:
            raise VerificationError(f"the database lacks its append-only trigger {guards[0]}")
    else:
        want.update(_statements(TRIGGERS, "END;", "END"))
    for name, sql in want.items():
        what = sql.split()[1 if sql.split()[1] != "UNIQUE" else 2].lower()
        if name not in got:
            raise VerificationError(f"the database lacks its {what} {name}")
        if got[name] != sql:
            raise VerificationError(f"the database's {what} {name} is not the one a ledger has")


def verify_path(
    source: str,
    vkey: str | None = None,
    trusted_path: str | None = None,
    workers: int | None = None,
    witnesses: Sequence[str] = (),
    quorum: int | None = None,
    state_path: str | None = None,
    deadlines: transport.Deadlines | None = None,
) -> Report:
    """``fundledger verify``: open SOURCE, load the optional key, trusted
    checkpoint and witness keys, verify. With ``state_path``: resume from the
    state saved there if it exists, and save the new state after success.
    ``deadlines`` bound each request to a URL source."""
    vkeys = [load_vkey(vkey)] if vkey else []
    from ledger.ops.witness import distinct_witnesses

    witness_keys = distinct_witnesses([load_vkey(w) for w in witnesses])
    if quorum is not None and not 0 < quorum <= len(witness_keys):
        raise InputError(f"--quorum {quorum} needs at least that many --witness keys")
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
                            keep_state=bool(state_path))
    finally:
        src.close()
    if state_path and report.state is not None:
        report.state.dump(state_path)
    return report


def read_small_file(path: str, limit: int, what: str) -> bytes:
    """The bytes of the regular file ``path``, refusing (InputError, naming
    ``what`` the file should be) anything else: a FIFO or a device, which
    could block or never end, a directory, or more than ``limit`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not block
    except OSError as e:
        raise InputError(f"{path!r}: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
        os.close(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path!r}: not a regular file, so not {what}")
        raise InputError(f"{path!r}: larger than {limit} bytes, so not {what}")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise InputError(f"{path!r}: {e.strerror}") from None
    if len(data) > limit:
        raise InputError(f"{path!r}: larger than {limit} bytes, so not {what}")
    return data


def check_trusted_file(data: bytes, path: str, vkeys: Sequence[note.Verifier]) -> None:
    """Refuse a --trusted file that is plainly not a checkpoint of this log
    (exit 2): not a checkpoint note at all, or, when the log key is pinned
    with --vkey, one for another origin. A checkpoint of this log that the
    log does not extend, or that its key did not sign, fails verification
    later (exit 1); so does an origin other than that of a key the source
    itself published, since the source may be an impostor."""
    try:
        text, _ = note.split_note(data, MAX_CHECKPOINT_BYTES)
        cp = note.parse_checkpoint(text)
    except FundledgerError as e:
        raise InputError(f"{path!r}: not a trusted checkpoint ({e})") from None
    if vkeys and cp.origin != vkeys[0].name:
        raise InputError(f"{path!r}: a trusted checkpoint of the log {cp.origin[:80]!r}, not of {vkeys[0].name!r} (--vkey)")


@dataclass
class VerifierState:
    """What a verifier keeps between runs to check only new entries: the
    checkpoint it verified, the tree's right edge there, the hash of the last
    entry, every fund's state and every liquidation id seen (as the keyed
    hashes of :class:`IdSet`: its key, and the hashes packed as little-endian
    uint64, base64). Saved as JSON."""

    origin: str
    checkpoint: str
    tree_size: int
    root: str
    edge: list[str]
    prev: str
    funds: list[dict]
    seen_key: str
    seen: str
    seen_exact: list[list[str]]
    keys: list[list]  # [start seq, vkey] of every log key, oldest first

    VERSION = 2

    @classmethod
    def capture(cls, origin, checkpoint: bytes, size: int, tree: merkle.TreeBuilder, prev: bytes, book: FundBook,
                keys: KeyHistory):
        b = lambda h: base64.b64encode(h).decode()  # noqa: E731
        funds = []
        for f in book.funds.values():
            c = f.contract
            funds.append({
                "symbol": c.symbol, "currency": c.currency, "scale": c.scale, "type": c.type,
                "multiplier": c.multiplier, "seq": c.seq, "balance": f.balance, "credited": f.credited,
                "paid": f.paid, "adl": f.adl, "liquidations": f.liquidations, "last_seq": f.last_seq,
                "last_time": f.last_time, "last_price": f.last_price,
            })
        seen = book.seen
        packed = array.array("Q", sorted(seen.hashes))
        if sys.byteorder != "little":
            packed.byteswap()
        return cls(origin, checkpoint.decode(), size, b(tree.root()), [b(h) for h in tree.hashes()], b(prev),
                   funds, b(seen.key), b(packed.tobytes()), sorted(map(list, seen.exact)),
                   [[st, v.vkey()] for st, v in keys.keys])

    def restore(self) -> tuple[FundBook, merkle.TreeBuilder, bytes, int, KeyHistory]:
        try:
            tree = merkle.TreeBuilder(self.tree_size, [base64.b64decode(h, validate=True) for h in self.edge])
            if base64.b64encode(tree.root()).decode() != self.root:
                raise ValueError("edge does not give the root")
            book = FundBook()
            for f in self.funds:
                c = Contract(f["symbol"], f["currency"], f["scale"], f["type"], f["multiplier"], f["seq"])
                book.funds[c.symbol] = Fund(c, f["balance"], f["credited"], f["paid"], f["adl"], f["liquidations"],
                                            f["last_seq"], f["last_time"], f["last_price"])
            packed = array.array("Q")
            packed.frombytes(base64.b64decode(self.seen, validate=True))
            if sys.byteorder != "little":
                packed.byteswap()
            key = base64.b64decode(self.seen_key, validate=True)
            if len(key) != 16:
                raise ValueError("the id key is not 16 bytes")
            book.seen = IdSet(key, packed)
            book.seen.exact = {(c, i) for c, i in self.seen_exact}
            prev = base64.b64decode(self.prev, validate=True)
            if len(prev) != merkle.HASH_SIZE:
                raise ValueError("the last entry's hash is not 32 bytes")
            ks = [(int(st), note.parse_vkey(v)) for st, v in self.keys]
            keys = KeyHistory(ks[0][1], ks[1:])
        except (ValueError, KeyError, TypeError, IndexError, FundledgerError) as e:
            raise InputError(f"the saved verifier state is damaged: {e}") from None
        return book, tree, prev, self.tree_size, keys

    def dump(self, path: str) -> None:
        """Write the state to ``path`` atomically (a temporary file, then a
        rename), never one larger than :meth:`load` reads."""
        from ledger.errors import LimitError

        obj = {"version": self.VERSION, **self.__dict__}
        data = json.dumps(obj, separators=(",", ":")).encode()  # the C encoder
        if len(data) > MAX_STATE_BYTES:
            raise LimitError(f"{path!r}: the verifier state would be over {MAX_STATE_BYTES} bytes: not saved")
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise InputError(f"{path!r}: cannot save the verifier state: {e.strerror}") from None

    @classmethod
    def load(cls, path: str) -> "VerifierState":
        """The state saved in ``path``; InputError (exit 2) for anything that
        is plainly not one: not a regular file, too large, not JSON, or JSON
        of another shape or with values of the wrong types."""
        data = read_small_file(path, MAX_STATE_BYTES, "a verifier state")
        try:
            obj = json.loads(data)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            version = obj.pop("version")
            if version == 1:  # ids kept as pairs: hash them with a new key
                seen = IdSet()
                for c, i in obj.pop("seen"):
                    seen.add((c, i))
                obj["seen_key"] = base64.b64encode(seen.key).decode()
                obj["seen"] = base64.b64encode(array.array("Q", sorted(seen.hashes)).tobytes()).decode()
                obj["seen_exact"] = sorted(map(list, seen.exact))
            elif version != cls.VERSION:
                raise ValueError("unknown version")
            _check_state_shape(obj)
            return cls(**obj)
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{path!r}: not a verifier state ({str(e)[:200]})") from None


_STATE_FIELDS = {"origin": str, "checkpoint": str, "tree_size": int, "root": str, "edge": list, "prev": str,
                 "funds": list, "seen_key": str, "seen": str, "seen_exact": list, "keys": list}
_FUND_FIELDS = {"symbol": str, "currency": str, "scale": int, "type": str, "multiplier": str, "seq": int,
                "balance": int, "credited": int, "paid": int, "adl": int, "liquidations": int, "last_seq": int,
                "last_time": (str, type(None)), "last_price": (str, type(None))}


def _check_fields(obj: object, fields: dict, what: str) -> None:
    """``obj`` is a dict with exactly ``fields``, each of its type (an int
    is never a bool, and never negative but for a fund's last_seq of -1)."""
    if not isinstance(obj, dict):
        raise ValueError(f"{what} is not a JSON object")
    if set(obj) != set(fields):
        raise ValueError(f"{what} has fields {sorted(obj)[:20]}, expected {sorted(fields)}")
    for k, t in fields.items():
        v = obj[k]
        if not isinstance(v, t) or isinstance(v, bool):
            raise ValueError(f"{what}: {k} is not {getattr(t, '__name__', 'a string or null')}")
        if t is int and v < (-1 if k == "last_seq" else 0):
            raise ValueError(f"{what}: {k} is negative")


def _check_state_shape(obj: dict) -> None:
    """Every field of a saved state of the right JSON type, deep enough that
    restoring it and running on can only fail as bad input or as a log that
    does not extend it, never with a TypeError half-way."""
    from ledger.rules.fund import CONTRACT_TYPES, MAX_SCALE

    _check_fields(obj, _STATE_FIELDS, "the state")
    if obj["tree_size"] > merkle.MAX_TREE_SIZE:
        raise ValueError("tree_size is over 2**64 - 1")
    for name in ("edge", "seen_exact", "keys"):
        for item in obj[name]:
            if name == "edge" and not isinstance(item, str) or name != "edge" and not isinstance(item, list):
                raise ValueError(f"{name} holds a {type(item).__name__}")
    if any(len(p) != 2 or not all(isinstance(x, str) for x in p) for p in obj["seen_exact"]):
        raise ValueError("seen_exact is not a list of [contract, id] pairs")
    for f in obj["funds"]:
        _check_fields(f, _FUND_FIELDS, "a fund")
        if f["type"] not in CONTRACT_TYPES or f["scale"] > MAX_SCALE:
            raise ValueError(f"fund {f['symbol'][:40]!r}: not a contract type and scale")


def failure_json(e: VerificationError) -> dict:
    return {"ok": False, "seq": e.seq, "reason": e.reason}
