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
from dataclasses import dataclass

from ledger.errors import FundledgerError, InputError
from ledger.format import note
from ledger.rules.fund import Contract, Fund, FundBook
from ledger.tlog import merkle
from ledger.verify.accelerator import IdSet
from ledger.verify.reference import KeyHistory
from ledger.verify.transport import read_small_file


MAX_STATE_BYTES = 1 << 30  # a verifier state: about 11 bytes per liquidation id, ~100 million ids


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
    chains: dict | None = None  # format 2's chain heads (ledger/rules/chains.py); None in a version 2 file

    VERSION = 3

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
                "last_leaf": None if f.last_leaf is None else b(f.last_leaf),
            })
        ch = book.chains
        chains = {"since": ch.since, "keys": ch.keys, "index": dict(ch.index),
                  "key_head": None if ch.key_head is None else [ch.key_head[0], b(ch.key_head[1])],
                  "state_head": None if ch.state_head is None else [ch.state_head[0], b(ch.state_head[1])]}
        seen = book.seen
        packed = array.array("Q", sorted(seen.hashes))
        if sys.byteorder != "little":
            packed.byteswap()
        return cls(origin, checkpoint.decode(), size, b(tree.root()), [b(h) for h in tree.hashes()], b(prev),
                   funds, b(seen.key), b(packed.tobytes()), sorted(map(list, seen.exact)),
                   [[st, v.vkey()] for st, v in keys.keys], chains)

    def restore(self) -> tuple[FundBook, merkle.TreeBuilder, bytes, int, KeyHistory]:
        try:
            tree = merkle.TreeBuilder(self.tree_size, [base64.b64decode(h, validate=True) for h in self.edge])
            if base64.b64encode(tree.root()).decode() != self.root:
                raise ValueError("edge does not give the root")
            book = FundBook()
            for f in self.funds:
                c = Contract(f["symbol"], f["currency"], f["scale"], f["type"], f["multiplier"], f["seq"])
                leaf = f.get("last_leaf")
                book.funds[c.symbol] = Fund(c, f["balance"], f["credited"], f["paid"], f["adl"], f["liquidations"],
                                            f["last_seq"], f["last_time"], f["last_price"],
                                            None if leaf is None else _hash(leaf))
            _restore_chains(book, self.chains)
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
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, binascii.Error, FundledgerError) as e:
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
            elif version not in (2, cls.VERSION):
                raise ValueError("unknown version")
            if version < 3:  # before format 2: no chain heads
                obj["chains"] = None
                for f in obj.get("funds", []):
                    if isinstance(f, dict):
                        f["last_leaf"] = None
            _check_state_shape(obj)
            return cls(**obj)
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{path!r}: not a verifier state ({str(e)[:200]})") from None


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
                 "funds": list, "seen_key": str, "seen": str, "seen_exact": list, "keys": list,
                 "chains": (dict, type(None))}


_FUND_FIELDS = {"symbol": str, "currency": str, "scale": int, "type": str, "multiplier": str, "seq": int,
                "balance": int, "credited": int, "paid": int, "adl": int, "liquidations": int, "last_seq": int,
                "last_time": (str, type(None)), "last_price": (str, type(None)), "last_leaf": (str, type(None))}


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

