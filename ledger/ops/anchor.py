"""The writer's anchor: what this key has signed, kept beside the key.

The database is storage, trusted for nothing (README, trust model). A
writer that believed it would sign what its rows say: a ``contracts``
balance someone edited (a payout the rules forbid, signed with the real
key, and the log broken for good), or a head from which someone deleted the
newest entries and every checkpoint (a rewritten history). The database
alone cannot tell a truncated log from a young one. So the writer keeps a
small file beside its key, ``<key file>.anchor`` (``fund.key.anchor``, 0600),
that the database cannot rewrite: the tree size this key has signed up to,
the root and the last entry's hash there, every fund's state there (its
``contracts`` row), the log keys, and the last checkpoint it signed; and
beside it ``<key file>.anchor.ids``, a keyed 64-bit hash of every liquidation
id up to that size (8 bytes an id), of which the anchor counts the first.

Before signing anything, inside the write transaction, :meth:`WriterAnchor.check`
holds the database to it (a :class:`VerificationError`, exit 1, one line,
nothing written, on any mismatch):

* the database has at least the anchor's entries, and the stored tree's
  root at the anchor's size is the anchor's root; at that size the last
  stored entry hash is the anchor's;
* entries after the anchor (only after a crash between a commit and the
  anchor's update, or another process's append the anchor does not show
  yet) are checked from their signed bytes by the verifier's own reference
  path, on top of the anchor's fund state, and must give the stored tree;
* every ``contracts`` row equals the state that signed data gives;
* a liquidation id the database's index does not show must not be one the
  key signed (:class:`AnchoredIds`).

The funds the writer then builds on are that verified state, never the
table's. The cost is the entries after the anchor (normally none) plus one
row per fund, and a search of the ids' 8 bytes each for a new id:
proportional to what changed, and a memory-speed scan.

The file is written after every commit (:meth:`WriterAnchor.advance`; a
bulk import at most once a second and at its end, the process holding the
rest in memory meanwhile), atomically (a temporary file, fsync, rename, fsync of the directory) and
only forward (under a lock on its directory, a smaller size never replaces
a larger one), so a crash between the commit and the anchor's update
leaves it behind the database, which the next check covers. A key without
an anchor (a ledger made before anchors, or a new key whose rotation was
interrupted before :func:`inherit` gave it the old key's anchor) is
checked once from entry 0 and anchored then: trust on first use.
"""

from __future__ import annotations

import array
import base64
import fcntl
import hashlib
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace

from ledger.tlog import merkle
from ledger.format import note
from ledger.store.chains import fill_chains
from ledger.ops.idhashes import IdHashes, _unpack
from ledger.format.entry import ZERO_HASH
from ledger.errors import FundledgerError, ProofError, StoreError, VerificationError
from ledger.rules.fund import Contract, Fund, FundBook, parse_amount
from ledger.store.schema import CONTRACT_COLUMNS, contract_row
from ledger.store.seen import HashLog
from ledger.store.store import Store

ANCHOR_VERSION = 1
MAX_ANCHOR_BYTES = 16 << 20  # about 60,000 funds
LAZY_SAVE_SECONDS = 1.0  # a bulk import rewrites the file at most this often (and at its end)


def anchor_path(key_path: str) -> str:
    """Where the anchor of the key at ``key_path`` lives: beside it."""
    return key_path + ".anchor"


@dataclass(frozen=True)
class AnchorState:
    """What the key has signed up to: the log of ``tree_size`` entries."""

    origin: str
    tree_size: int
    root: bytes
    prev: bytes  # hash of entry tree_size - 1 (ZERO_HASH for an empty log)
    funds: dict  # symbol -> its contracts row (store.contract_row) at tree_size
    keys: tuple  # ((first seq it signs, vkey), ...), oldest first
    checkpoint: str | None = None  # the last checkpoint note this key signed
    ids_key: bytes = b""  # the key of the liquidation id hashes (id_hash)
    ids: int = 0  # liquidations up to tree_size: the first `ids` hashes of the .ids file

    @classmethod
    def empty(cls, origin: str, vkey: str) -> "AnchorState":
        return cls(origin, 0, merkle.EMPTY_ROOT, ZERO_HASH, {}, ((0, vkey),), None, os.urandom(16), 0)

    def to_json(self) -> bytes:
        b = lambda h: base64.b64encode(h).decode()  # noqa: E731
        obj = {"version": ANCHOR_VERSION, "origin": self.origin, "tree_size": self.tree_size,
               "root": b(self.root), "prev": b(self.prev), "keys": [list(k) for k in self.keys],
               "funds": [list(self.funds[s]) for s in sorted(self.funds)], "checkpoint": self.checkpoint,
               "ids_key": b(self.ids_key), "ids": self.ids}
        return json.dumps(obj, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> "AnchorState":
        """Parse an anchor file; ValueError/KeyError/TypeError if malformed."""
        obj = json.loads(data)
        if obj["version"] != ANCHOR_VERSION:
            raise ValueError(f"unknown version {obj['version']!r}")
        h = lambda s: _hash(base64.b64decode(s, validate=True))  # noqa: E731
        size = obj["tree_size"]
        if type(size) is not int or size < 0:
            raise ValueError("bad tree_size")
        funds = {}
        for row in obj["funds"]:
            if len(row) != len(CONTRACT_COLUMNS):
                raise ValueError("bad fund row")
            funds[row[0]] = tuple(row)
        keys = tuple((int(st), str(v)) for st, v in obj["keys"])
        if not keys:
            raise ValueError("no keys")
        cp = obj["checkpoint"]
        if cp is not None and type(cp) is not str:
            raise ValueError("bad checkpoint")
        ids_key, ids = base64.b64decode(obj["ids_key"], validate=True), obj["ids"]
        if len(ids_key) != 16 or type(ids) is not int or not 0 <= ids <= size:
            raise ValueError("bad ids")
        return cls(str(obj["origin"]), size, h(obj["root"]), h(obj["prev"]), funds, keys, cp, ids_key, ids)


def _hash(h: bytes) -> bytes:
    if len(h) != 32:
        raise ValueError("a hash is not 32 bytes")
    return h


def fund_from_row(row: tuple) -> Fund:
    """The fund a ``contracts`` row describes (as ``Store.load_book``)."""
    r = dict(zip(CONTRACT_COLUMNS, row))
    c = Contract(r["symbol"], r["currency"], r["scale"], r["type"], r["multiplier"], r["registered_seq"], r["lot"])
    return Fund(c, balance=parse_amount(r["balance"], c.scale), credited=parse_amount(r["credited"], c.scale),
                paid=parse_amount(r["paid"], c.scale), adl=parse_amount(r["adl"], c.scale),
                liquidations=r["liquidations"], last_seq=r["last_seq"], last_time=r["last_time"],
                last_price=r["last_price"], allocations=r["allocations"])


def id_hash(key: bytes, contract: str, liquidation_id: str) -> int:
    """A 64-bit keyed BLAKE2b hash of a (contract, liquidation id) pair."""
    keyed = _KEYED.get(key)
    if keyed is None:
        _KEYED.clear()  # (one anchor's key at a time)
        keyed = _KEYED[key] = hashlib.blake2b(digest_size=8, key=key)
    h = keyed.copy()  # cheaper than absorbing the key again
    h.update(f"{contract}\x00{liquidation_id}".encode())
    return int.from_bytes(h.digest(), "little")


_KEYED: dict = {}  # key -> BLAKE2b state with the key absorbed


def refuse(reason: str, seq: int | None = None) -> VerificationError:
    return VerificationError(f"refusing to sign: {reason}", seq=seq)


class AnchoredIds:
    """The writer's ``FundBook.seen``: the database's index of recorded
    liquidation ids, held to the keyed hashes of every id this key signed
    (the anchor's ``.ids`` file). An id the index no longer shows but the
    key signed is refused, never signed again (a 64-bit hash: a new id
    collides with one of a million by chance once in 10**13)."""

    def __init__(self, db_seen, key: bytes, hashes: IdHashes):
        self.db = db_seen
        self.key = key
        self.hashes = hashes  # committed and anchored (or checked since)
        self.pending = HashLog()  # hashes of the ids added since, in order
        self._last = (None, 0)  # the pair last found new, and its hash (add() follows)

    def prefetch(self, records) -> None:
        self.db.prefetch(records)

    @property
    def older(self):
        """The database index's pairs added before the current chunk."""
        return self.db.older

    @older.setter
    def older(self, value) -> None:
        self.db.older = value

    def __contains__(self, pair) -> bool:
        if pair in self.db:
            return True
        h = id_hash(self.key, *pair)
        if h in self.hashes:
            raise refuse(f"liquidation {str(pair[1])[:40]!r} of {pair[0]} was signed by this key, "
                         "but the database does not record it")
        self._last = (pair, h)
        return False

    def add(self, pair) -> None:
        self.db.add(pair)
        last, h = self._last
        self.pending.append(h if last is pair or last == pair else id_hash(self.key, *pair))


class WriterAnchor:
    """The anchor file of one key, and the state last verified against it.
    Pass it to ``Store.append``, ``Store.add_checkpoint`` and the import:
    they call :meth:`check` in their write transaction before signing and
    :meth:`advance` after the commit."""

    def __init__(self, path: str):
        self.path = path
        self.state: AnchorState | None = None  # verified by the last check, advanced since
        self._unsaved = False  # self.state is ahead of the file (a lazy advance)
        self._saved_at = 0.0  # time.monotonic() of the last write
        self.ids = IdHashes()  # the hashes of the liquidation ids up to self.state
        self._ids_disk = 0  # how many of them the .ids file holds for this state's history
        self._ids_unsaved = array.array("Q")  # the others, in order (8 bytes each: at a rotation, all of them)
        self._ids_stale = False  # self.ids lacks what lazy advances added (the file and _ids_unsaved hold them)

    # -- the file --------------------------------------------------------------

    def load(self) -> AnchorState | None:
        """The saved state, or None if there is no anchor file yet."""
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_ANCHOR_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"{self.path!r}: {e.strerror}") from None
        try:
            if len(data) > MAX_ANCHOR_BYTES:
                raise ValueError(f"over {MAX_ANCHOR_BYTES} bytes")
            return AnchorState.from_json(data)
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise refuse(f"the anchor file {self.path!r} is damaged ({str(e)[:80]})") from None

    def create(self, state: AnchorState) -> None:
        """Write the first anchor of a new ledger; refuses to overwrite one."""
        if os.path.lexists(self.path):
            raise StoreError(f"{self.path} already exists: refusing to overwrite an anchor")
        self._save(state)

    def _save(self, state: AnchorState) -> None:
        """Replace the file with ``state`` unless it already holds a later
        one: under a lock on the directory, atomically and durably."""
        try:
            with _locked_dir(self.path) as dfd:
                old = self.load()
                if old is not None and _order(old) >= _order(state):
                    return
                self._save_ids(state, old)
                tmp = f"{self.path}.tmp-{os.getpid()}"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(fd, state.to_json())
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, self.path)
                os.fsync(dfd)
                self._ids_disk, self._ids_unsaved = state.ids, array.array("Q")
        except OSError as e:
            raise StoreError(f"{self.path!r}: cannot write the anchor ({e.strerror}); "
                             "what was committed stays, and the next write checks it") from None

    def _save_ids(self, state: AnchorState, old: AnchorState | None) -> None:
        """Make the .ids file begin with the hashes of ``state``'s ids: it
        keeps those the current anchor ``old`` counts (readers may be
        reading them), then the unsaved ones it lacks are appended; fsynced
        before the anchor that counts them replaces ``old``."""
        keep, new = self._ids_disk, self._ids_unsaved
        if old is not None and old.ids_key == state.ids_key and old.ids > keep:
            held = set(_unpack(self._read_ids(keep, old.ids)))  # what another writer saved meanwhile
            keep, new = old.ids, [h for h in new if h not in held]
        if keep + len(new) != state.ids:
            raise StoreError("the anchor's liquidation ids do not add up")
        fd = os.open(self.path + ".ids", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, 8 * keep)
            os.lseek(fd, 0, os.SEEK_END)
            packed = array.array("Q", new)
            if sys.byteorder != "little":
                packed.byteswap()
            os.write(fd, packed.tobytes())
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read_ids(self, start: int, end: int) -> bytes:
        """Hashes ``start..end-1`` of the .ids file."""
        path = self.path + ".ids"
        try:
            with open(path, "rb") as f:
                f.seek(8 * start)
                data = f.read(8 * (end - start))
        except FileNotFoundError:
            data = b""
        except OSError as e:
            raise StoreError(f"{path!r}: {e.strerror}") from None
        if len(data) != 8 * (end - start):
            raise refuse(f"the anchor's id file {path!r} is damaged (it holds fewer than {end} ids)")
        return data

    def _ids_from_file(self, saved: AnchorState) -> None:
        """``self.ids`` for a state read from the file (only its tail is
        read when this process already holds the beginning)."""
        if saved.ids_key != getattr(self, "_ids_key", None) or self._ids_disk > saved.ids or self._ids_stale:
            self.ids, self._ids_disk, self._ids_stale = IdHashes(), 0, False
        self.ids.add_packed(self._read_ids(self._ids_disk, saved.ids))
        self._ids_key, self._ids_disk, self._ids_unsaved = saved.ids_key, saved.ids, array.array("Q")

    # -- the checks ------------------------------------------------------------

    def check(self, store: Store) -> FundBook:
        """Hold the database to the anchor (see the module docstring) inside
        the caller's transaction; the verified funds to build on, whose
        ``seen`` is the database's index of ids held to the anchor's."""
        saved = self.load()
        if self.state is not None and (saved is None or _order(self.state) > _order(saved)):
            saved = self.state  # what this process signed and has not saved yet
            self._fresh_ids()
        elif saved is None:
            saved = AnchorState.empty(store.origin, store.vkey)
            self._ids_key, self.ids, self._ids_disk, self._ids_unsaved = saved.ids_key, IdHashes(), 0, array.array("Q")
            self._ids_stale = False
        elif saved.origin != store.origin:
            raise refuse(f"the anchor {self.path!r} is for the log {saved.origin!r}, not {store.origin!r}")
        else:
            self._ids_from_file(saved)
        try:
            size, prev, edge = store.chain_head()
        except ProofError as e:
            raise refuse(f"the stored tree is incomplete ({e})") from None
        if size < saved.tree_size:
            raise refuse(f"the database has {size} entries but this key has signed {saved.tree_size} "
                         f"({self.path}): entries were removed")
        try:
            at_anchor = store.read_hashes(merkle.compact_range_indexes(saved.tree_size))
        except ProofError as e:
            raise refuse(f"the stored tree at size {saved.tree_size} is incomplete ({e})") from None
        if merkle.TreeBuilder(saved.tree_size, at_anchor).root() != saved.root:
            raise refuse(f"the stored tree at size {saved.tree_size} is not the one this key signed: "
                         "history was rewritten")
        book = fill_chains(store, FundBook(funds={s: fund_from_row(r) for s, r in saved.funds.items()}),
                           saved.tree_size)
        state, replayed = saved, []
        if size > saved.tree_size:
            state, replayed = _replay(store, saved, book, at_anchor, size)
        if prev != state.prev or merkle.TreeBuilder(size, edge).root() != state.root:
            raise refuse(f"the stored head at size {size} is not the one the signed entries give")
        if state.keys[-1][1] != store.current_vkey:
            raise refuse("the signed entries do not hand the log to the key in the database")
        _compare_contracts(store, book)
        self.ids.update(replayed)
        self._ids_unsaved.extend(replayed)
        self.state = state
        book.seen = AnchoredIds(store.recorded_ids(), state.ids_key, self.ids)
        return book

    def advance(self, tree_size: int, root: bytes, prev: bytes, rows: list[tuple],
                checkpoint: bytes | None = None, lazy: bool = False, new_ids: list[int] = (),
                new_key: tuple[int, str] | None = None) -> None:
        """Record, after a commit, that the key has signed up to
        ``tree_size`` (root ``root``, last entry hash ``prev``), with the
        ``contracts`` rows of the funds that changed, the hashes of the
        liquidation ids it added (``AnchoredIds.pending``), a new checkpoint
        and a new log key ``(first seq it signs, vkey)``.
        ``lazy`` (a bulk import, which calls :meth:`flush` at its end)
        rewrites the file at most every LAZY_SAVE_SECONDS: each write waits
        for the disk, about 10 ms while SQLite is writing too."""
        if self.state is None:
            raise StoreError("the anchor was not checked before writing")
        funds = dict(self.state.funds)
        funds.update((r[0], tuple(r)) for r in rows)
        cp = self.state.checkpoint if checkpoint is None else checkpoint.decode()
        if lazy:  # (an import: its hashes go to the file, not to memory)
            self._ids_stale = True
        else:
            self.ids.update(new_ids)
        self._ids_unsaved.extend(new_ids)
        keys = self.state.keys if new_key is None else self.state.keys + (tuple(new_key),)
        self.state = replace(self.state, tree_size=tree_size, root=root, prev=prev, funds=funds, checkpoint=cp,
                             ids=self.state.ids + len(new_ids), keys=keys)
        self._unsaved = True
        if not lazy or time.monotonic() - self._saved_at >= LAZY_SAVE_SECONDS:
            self.flush()

    def _fresh_ids(self) -> None:
        """``self.ids`` complete again after lazy advances: the file's
        hashes of this state's history, then the unsaved ones."""
        if self._ids_stale:
            self.ids = IdHashes()
            self.ids.add_packed(self._read_ids(0, self._ids_disk))
            self.ids.update(self._ids_unsaved)
            self._ids_stale = False

    def flush(self) -> None:
        """Write the state a lazy :meth:`advance` left in memory, if any."""
        if self._unsaved and self.state is not None:
            self._save(self.state)
            self._unsaved = False
            self._saved_at = time.monotonic()


def inherit(old: WriterAnchor, key_path: str) -> WriterAnchor:
    """The anchor of the key at ``key_path``, begun from ``old``'s state (the
    rotation to that key has just been anchored by ``old``): its id hashes
    and then its state are copied, durably, unless that anchor already holds
    a later state. Without it the new key would trust the database once."""
    if old.state is None:
        raise StoreError("the anchor was not checked before the rotation")
    old.flush()
    old._fresh_ids()
    new = WriterAnchor(anchor_path(key_path))
    new.ids, new._ids_key = old.ids, old.state.ids_key
    new._ids_disk, new._ids_unsaved = 0, _unpack(old._read_ids(0, old.state.ids))
    new.state, new._unsaved = old.state, True
    new.flush()
    return new


def _order(state: AnchorState) -> tuple[int, int]:
    """Later states first by size, then by having a checkpoint at it."""
    return state.tree_size, 0 if state.checkpoint is None else 1


@contextmanager
def _locked_dir(path: str):
    """An exclusive lock on the directory of ``path`` (its fd, for fsync)."""
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        fcntl.flock(dfd, fcntl.LOCK_EX)
        yield dfd
    finally:
        os.close(dfd)  # (releases the lock)


def _replay(store: Store, saved: AnchorState, book: FundBook, edge: list[bytes],
            size: int) -> tuple[AnchorState, list[int]]:
    """Check entries ``saved.tree_size..size-1`` from their signed bytes with
    the verifier's reference path (signatures by the key in force, the hash
    chain, the rules rebuilt on ``book``, canonical bytes), advancing
    ``book``; the state at ``size`` and the hashes of the ids they add."""
    from ledger.verify.reference import Chain, KeyHistory

    try:
        keys = KeyHistory(note.parse_vkey(saved.keys[0][1]),
                          [(st, note.parse_vkey(v)) for st, v in saved.keys[1:]])
    except FundledgerError as e:
        raise refuse(f"the anchor's keys do not parse ({e})") from None
    book.seen = _SeenBefore(store.conn, saved.tree_size)
    chain = Chain(book, keys, merkle.TreeBuilder(saved.tree_size, edge), saved.prev, saved.tree_size)
    try:
        for seq, data in store.iter_entries(saved.tree_size, size):
            if seq != chain.seq:
                raise refuse(f"entry {chain.seq} is missing", seq=chain.seq)
            if not isinstance(data, bytes):
                raise refuse("an entry after the anchor is not stored as bytes", seq=seq)
            chain.check(data)
    except VerificationError as e:
        raise refuse(f"an entry after the anchor does not verify: {e.reason}", seq=e.seq) from None
    if chain.seq != size:
        raise refuse(f"entry {chain.seq} is missing", seq=chain.seq)
    rows = {f.contract.symbol: contract_row(f) for f in book.funds.values()}
    ids = [id_hash(saved.ids_key, *pair) for pair in book.seen.added]
    return replace(saved, tree_size=size, root=chain.tree.root(), prev=chain.prev, funds=rows,
                   keys=tuple((st, v.vkey()) for st, v in keys.keys), ids=saved.ids + len(ids)), ids


def _compare_contracts(store: Store, book: FundBook) -> None:
    """Every ``contracts`` row must be the one the verified funds give."""
    want = {s: contract_row(f) for s, f in book.funds.items()}
    got = {r["symbol"]: tuple(r[c] for c in CONTRACT_COLUMNS) for r in store.contract_rows()}
    for symbol in sorted(set(want) | set(got)):
        w, g = want.get(symbol), got.get(symbol)
        if w == g:
            continue
        if w is None or g is None:
            raise refuse(f"the contracts table {'lists' if w is None else 'lacks'} {symbol!r}, "
                         "unlike the signed entries")
        col = next(c for c, a, b in zip(CONTRACT_COLUMNS, w, g) if a != b)
        i = CONTRACT_COLUMNS.index(col)
        raise refuse(f"the contracts table says {symbol} {col} {str(g[i])[:40]!r} "
                     f"but the signed entries give {str(w[i])[:40]!r}")


class _SeenBefore:
    """The liquidation ids recorded by the entries before ``seq``, plus
    those added since: what the rules see when entry ``seq`` is rechecked."""

    def __init__(self, conn, seq: int):
        self._conn = conn
        self._seq = seq
        self._added: set = set()

    def __contains__(self, key) -> bool:
        if key in self._added:
            return True
        row = self._conn.execute(
            "SELECT 1 FROM entries WHERE contract = ? AND liquidation_id = ? AND seq < ?", (*key, self._seq)
        ).fetchone()
        return row is not None

    def add(self, key) -> None:
        self._added.add(key)

    @property
    def added(self) -> set:
        """The ids added since ``seq``."""
        return self._added
