"""The state a verifier keeps between runs (``--state``), so that the next
run checks only new entries: saved as JSON, loaded with every field's type
checked."""

from __future__ import annotations

import array
import base64
import binascii
import json
import os
import sys
from urllib.parse import quote
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ledger.errors import FundledgerError, InputError, LimitError

if TYPE_CHECKING:
    import sqlite3
from ledger.format import note
from ledger.rules.fund import Contract, Fund, FundBook
from ledger.tlog import merkle
from ledger.verify.accelerator import IdSet
from ledger.verify.ids import IDS_TABLE, HashStore
from ledger.verify.reference import KeyHistory
from ledger.verify.transport import read_file_head, read_small_file


MAX_STATE_BYTES = 1 << 30  # an older JSON state: about 11 bytes per liquidation id, ~100 million ids
MAX_BODY_BYTES = 64 << 20  # the JSON row of an SQLite state: funds, keys, edge (~300 bytes a fund)
SQLITE_MAGIC = b"SQLite format 3\x00"
STATE_TABLE = ("CREATE TABLE {schema}state (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL, "
               "tree_size INTEGER NOT NULL, root TEXT NOT NULL, body TEXT NOT NULL)")


@dataclass
class VerifierState:
    """What a verifier keeps between runs to check only new entries: the
    checkpoint it verified, the tree's right edge there, the hash of the last
    entry, every fund's state, the log's keys, format 2's chain heads, and
    every liquidation id seen (the keyed hashes of :class:`IdSet`: its key,
    and ``hashes``, the first ``mark`` additions of a :class:`HashStore`).

    Saved as an SQLite file (:data:`STATE_SCHEMA`): one row holding the
    rest as JSON, and the id hashes in an indexed table, so that a run reads
    and writes only what is new, at any log size. A JSON file from an older
    version is read too, and replaced by the SQLite file on the next save."""

    origin: str
    checkpoint: str
    tree_size: int
    root: str
    edge: list[str]
    prev: str
    funds: list[dict]
    seen_key: str
    seen_exact: list[list[str]]
    keys: list[list]  # [start seq, vkey] of every log key, oldest first
    chains: dict | None = None  # format 2's chain heads (ledger/rules/chains.py); None before version 3
    hashes: HashStore = field(default_factory=HashStore, repr=False, compare=False)
    mark: int = 0

    VERSION = 4
    BODY = ("origin", "checkpoint", "tree_size", "root", "edge", "prev", "funds", "seen_key", "seen_exact",
            "keys", "chains")

    @classmethod
    def capture(cls, origin, checkpoint: bytes, size: int, tree: merkle.TreeBuilder, prev: bytes, book: FundBook,
                keys: KeyHistory):
        b = lambda h: base64.b64encode(h).decode()  # noqa: E731
        funds = [_fund_obj(f) for f in book.funds.values()]
        ch = book.chains
        chains = {"since": ch.since, "keys": ch.keys, "index": dict(ch.index),
                  "key_head": None if ch.key_head is None else [ch.key_head[0], b(ch.key_head[1])],
                  "state_head": None if ch.state_head is None else [ch.state_head[0], b(ch.state_head[1])]}
        seen = book.seen
        if not isinstance(seen, IdSet):  # the reference's plain set of pairs
            plain, seen = seen, IdSet()
            for pair in sorted(plain):
                seen.add(pair)
        return cls(origin, checkpoint.decode(), size, b(tree.root()), [b(h) for h in tree.hashes()], b(prev),
                   funds, b(seen.key), sorted(map(list, seen.exact)),
                   [[st, v.vkey()] for st, v in keys.keys], chains, seen.hashes, seen.hashes.added())

    def restore(self) -> tuple[FundBook, merkle.TreeBuilder, bytes, int, KeyHistory]:
        try:
            tree = merkle.TreeBuilder(self.tree_size, [base64.b64decode(h, validate=True) for h in self.edge])
            if base64.b64encode(tree.root()).decode() != self.root:
                raise ValueError("edge does not give the root")
            book = FundBook()
            for f in self.funds:
                c = Contract(f["symbol"], f["currency"], f["scale"], f["type"], f["multiplier"], f["seq"],
                             f.get("lot"))
                leaf = f.get("last_leaf")
                book.funds[c.symbol] = Fund(c, f["balance"], f["credited"], f["paid"], f["adl"], f["liquidations"],
                                            f["last_seq"], f["last_time"], f["last_price"],
                                            None if leaf is None else _hash(leaf), f.get("allocations", 0))
            _restore_chains(book, self.chains)
            key = base64.b64decode(self.seen_key, validate=True)
            if len(key) != 16:
                raise ValueError("the id key is not 16 bytes")
            book.seen = IdSet(key, self.hashes)
            book.seen.exact = {(c, i) for c, i in self.seen_exact}
            prev = base64.b64decode(self.prev, validate=True)
            if len(prev) != merkle.HASH_SIZE:
                raise ValueError("the last entry's hash is not 32 bytes")
            ks = [(int(st), note.parse_vkey(v)) for st, v in self.keys]
            keys = KeyHistory(ks[0][1], ks[1:])
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, binascii.Error, FundledgerError) as e:
            raise InputError(f"the saved verifier state is damaged: {e}") from None
        return book, tree, prev, self.tree_size, keys

    def body(self) -> str:
        return json.dumps({k: getattr(self, k) for k in self.BODY}, separators=(",", ":"))

    def __getstate__(self) -> dict:
        """A copy for another process (the site's verification rounds): the
        id hashes travel packed, 8 bytes each."""
        packed = array.array("Q", self.hashes.snapshot(self.mark))
        return {"body": self.body(), "packed": packed.tobytes()}

    def __setstate__(self, obj: dict) -> None:
        packed = array.array("Q")
        packed.frombytes(obj["packed"])
        self.__init__(**json.loads(obj["body"]), hashes=HashStore(base_mem=packed))

    def dump(self, path: str) -> None:
        """Save to ``path``: in place, in one transaction, when the state was
        read from that file (and only if no other run saved there since);
        otherwise as a new file, written aside and renamed over ``path``."""
        import sqlite3

        body = self.body()
        if len(body) > MAX_BODY_BYTES:
            raise LimitError(f"{path!r}: the verifier state would be over {MAX_BODY_BYTES} bytes: not saved")
        try:
            if self.hashes.on_file and _file_of(self.hashes.conn) == os.path.realpath(path):
                _save_in_place(self, body, path)
            else:
                _save_new(self, body, path)
        except sqlite3.Error as e:
            raise InputError(f"{path!r}: cannot save the verifier state: {e}") from None

    @classmethod
    def load(cls, path: str) -> "VerifierState":
        """The state saved in ``path``; InputError (exit 2) for anything that
        is plainly not one: not a regular file, too large, not an SQLite
        state or older JSON one, or one of another shape or with values of
        the wrong types."""
        head = read_file_head(path, len(SQLITE_MAGIC), "a verifier state")
        if head == SQLITE_MAGIC:
            return _load_db(path)
        return _load_json(read_small_file(path, MAX_STATE_BYTES, "a verifier state"), path)


def _fund_obj(f: Fund) -> dict:
    c = f.contract
    return {"symbol": c.symbol, "currency": c.currency, "scale": c.scale, "type": c.type,
            "multiplier": c.multiplier, "seq": c.seq, "balance": f.balance, "credited": f.credited,
            "paid": f.paid, "adl": f.adl, "liquidations": f.liquidations, "last_seq": f.last_seq,
            "last_time": f.last_time, "last_price": f.last_price,
            "last_leaf": None if f.last_leaf is None else base64.b64encode(f.last_leaf).decode(),
            **({"lot": c.lot, "allocations": f.allocations} if c.lot is not None else {})}


def _load_json(data: bytes, path: str) -> VerifierState:
    """A state saved as JSON by an older version (1 to 3)."""
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
            obj["seen"] = base64.b64encode(array.array("Q", seen.hashes.snapshot(seen.hashes.added())).tobytes()).decode()
            obj["seen_exact"] = sorted(map(list, seen.exact))
        elif version not in (2, 3):
            raise ValueError("unknown version")
        if version < 3:  # before format 2: no chain heads
            obj["chains"] = None
            for f in obj.get("funds", []):
                if isinstance(f, dict):
                    f["last_leaf"] = None
        if not isinstance(obj.get("seen"), str):
            raise ValueError("seen is not a string")
        packed = array.array("Q")
        packed.frombytes(base64.b64decode(obj.pop("seen"), validate=True))
        if sys.byteorder != "little":
            packed.byteswap()
        _check_state_shape(obj)
        return VerifierState(**obj, hashes=HashStore(base_mem=packed))
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error) as e:
        raise InputError(f"{path!r}: not a verifier state ({str(e)[:200]})") from None


def _load_db(path: str) -> VerifierState:
    """A state saved as SQLite: the tables as :func:`_save_new` makes them,
    the row's JSON of the right shape, its size and root as the columns say."""
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=rw", uri=True, isolation_level=None)
        try:
            tables = dict(conn.execute("SELECT name, sql FROM sqlite_master"))
            if tables != {"state": STATE_TABLE.format(schema=""), "ids": IDS_TABLE.format(schema="")}:
                raise ValueError(f"tables {sorted(tables)[:10]}, not a verifier state's")
            row = conn.execute("SELECT version, tree_size, root, length(body) FROM state").fetchall()
            if len(row) != 1 or row[0][0] != VerifierState.VERSION or not 0 <= row[0][3] <= MAX_BODY_BYTES:
                raise ValueError("not one state row of this version")
            obj = json.loads(conn.execute("SELECT body FROM state").fetchone()[0])
            _check_state_shape(obj)
            if (obj["tree_size"], obj["root"]) != row[0][1:3]:
                raise ValueError("the row's size and root are not its body's")
        except BaseException:
            conn.close()
            raise
    except (ValueError, TypeError, RecursionError, sqlite3.Error) as e:
        raise InputError(f"{path!r}: not a verifier state ({str(e)[:200]})") from None
    store = HashStore(conn)
    store.saved = (obj["tree_size"], obj["root"])
    return VerifierState(**obj, hashes=store)


def _file_of(conn: sqlite3.Connection) -> str:
    return os.path.realpath(next(r[2] for r in conn.execute("PRAGMA database_list") if r[1] == "main"))


def _save_in_place(state: VerifierState, body: str, path: str) -> None:
    """One transaction: the new row, if the file still holds the state this
    run started from (compare-and-swap), and the ids added."""
    conn = state.hashes.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        old_size, old_root = state.hashes.saved
        cur = conn.execute("UPDATE state SET tree_size = ?, root = ?, body = ? WHERE tree_size = ? AND root = ?",
                           (state.tree_size, state.root, body, old_size, old_root))
        if cur.rowcount != 1:
            raise InputError(f"{path!r}: another run saved a verifier state there meanwhile: this one is not saved")
        state.hashes.commit_to(conn, "main", state.mark)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    state.hashes.saved = (state.tree_size, state.root)


def _save_new(state: VerifierState, body: str, path: str) -> None:
    """A new file beside ``path``, filled in one transaction, synced, then
    renamed over it: a reader sees the old state or the new, never half."""
    tmp = f"{path}.tmp-{os.getpid()}"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    conn = state.hashes.connection()
    conn.execute("ATTACH DATABASE ? AS dst", (tmp,))
    try:
        conn.execute("PRAGMA dst.synchronous = FULL")
        conn.execute("PRAGMA dst.journal_mode = DELETE")
        conn.execute("BEGIN")
        conn.execute(STATE_TABLE.format(schema="dst."))
        conn.execute(IDS_TABLE.format(schema="dst."))
        conn.execute("INSERT INTO dst.state VALUES (1, ?, ?, ?, ?)",
                     (VerifierState.VERSION, state.tree_size, state.root, body))
        state.hashes.commit_to(conn, "dst", state.mark)
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE dst")
        os.replace(tmp, path)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if any(r[1] == "dst" for r in conn.execute("PRAGMA database_list")):
            conn.execute("DETACH DATABASE dst")
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def _hash(text: str) -> bytes:
    h = base64.b64decode(text, validate=True)
    if len(h) != merkle.HASH_SIZE:
        raise ValueError("a leaf hash is not 32 bytes")
    return h


def _restore_chains(book, chains: dict | None) -> None:
    """The chain heads saved (a version-2 state has none: its funds' leaf
    hashes are unknown, and a later state entry is refused as bad input)."""
    ch = book.chains
    if chains is None:
        ch.index = {f.contract.symbol: i for i, f in
                    enumerate(sorted(book.funds.values(), key=lambda f: f.contract.seq))}
        return
    head = lambda h: None if h is None else (int(h[0]), _hash(h[1]))  # noqa: E731
    ch.since = chains["since"] if chains["since"] is None else int(chains["since"])
    ch.keys = int(chains["keys"])
    ch.index = {str(k): int(v) for k, v in chains["index"].items()}
    ch.key_head, ch.state_head = head(chains["key_head"]), head(chains["state_head"])
    if sorted(ch.index.values()) != list(range(len(book.funds))) or set(ch.index) != set(book.funds):
        raise ValueError("the fund index does not match the funds")


_STATE_FIELDS = {"origin": str, "checkpoint": str, "tree_size": int, "root": str, "edge": list, "prev": str,
                 "funds": list, "seen_key": str, "seen_exact": list, "keys": list,
                 "chains": (dict, type(None))}


_FUND_FIELDS = {"symbol": str, "currency": str, "scale": int, "type": str, "multiplier": str, "seq": int,
                "balance": int, "credited": int, "paid": int, "adl": int, "liquidations": int, "last_seq": int,
                "last_time": (str, type(None)), "last_price": (str, type(None)), "last_leaf": (str, type(None))}


_FUND_LOT_FIELDS = {"lot": str, "allocations": int}  # a lot contract's, both or neither (older states: neither)


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
        _check_fields(f, dict(_FUND_FIELDS, **_FUND_LOT_FIELDS) if "lot" in f else _FUND_FIELDS, "a fund")
        if f["type"] not in CONTRACT_TYPES or f["scale"] > MAX_SCALE:
            raise ValueError(f"fund {f['symbol'][:40]!r}: not a contract type and scale")

