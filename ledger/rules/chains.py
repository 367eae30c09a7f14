"""Format 2's chains and state entries (docs/FORMAT.md, "Format 2").

Every entry belongs to a chain: its fund's (``contract``, ``liquidation``),
the key chain or the state chain. In format 2 an entry names its chain
predecessor (``chain_seq``, ``chain_prev``), and a ``state`` entry commits to
every fund's head through the heads root, an RFC 6962 tree over the head
lines in fund-index order (the order of registration), and to the key chain.

:class:`Chains` is the part of a :class:`~ledger.rules.fund.FundBook` that
follows them. It is tracked in format 1 too (the first state entry commits
to the heads the format-1 entries left). The leaf hash of an entry is known
only once it is signed: the writer and the verifier call :meth:`link` with
it right after the entry is applied.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ledger.errors import InvariantError, RuleError
from ledger.format.kinds import FORMAT_2
from ledger.tlog import merkle
from ledger.tlog.heads import HeadsTree

if TYPE_CHECKING:
    from ledger.rules.fund import Fund

KEY_CHAIN = "_key"  # the names of the two chains that are not funds (a symbol cannot start with "_")
STATE_CHAIN = "_state"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def head_line(fund: "Fund") -> bytes:
    """A fund's head (docs/FORMAT.md, "state"): one line of canonical JSON.
    The fields are written in code point order; every value is ASCII that
    needs no escaping (a symbol, an amount, a base64 hash, integers)."""
    from ledger.rules.fund import amount_str

    c = fund.contract
    if fund.last_leaf is None:
        raise InvariantError(f"the head of {c.symbol} has no leaf hash")
    return (
        f'{{"balance":"{amount_str(fund.balance, c.scale)}","contract":"{c.symbol}",'
        f'"entries":{fund.liquidations + fund.allocations + 1},"hash":"{b64(fund.last_leaf)}","seq":{fund.last_seq}}}\n'
    ).encode("ascii")


@dataclass
class Chains:
    """The heads of every chain, and the format the log is in."""

    since: int | None = None  # the seq of the first state entry: format 2 from there on
    keys: int = 0  # key entries so far
    key_head: tuple[int, bytes] | None = None  # the latest key entry: (seq, leaf hash)
    state_head: tuple[int, bytes] | None = None  # the latest state entry
    index: dict[str, int] = field(default_factory=dict)  # symbol -> fund index
    _tree: HeadsTree | None = field(default=None, repr=False)
    _moved: set[str] = field(default_factory=set, repr=False)  # heads not in the tree yet
    _pending: tuple | None = field(default=None, repr=False)  # the entry applied, waiting for its leaf

    @property
    def format(self) -> int:
        return 1 if self.since is None else FORMAT_2

    # -- the fields the rules give ----------------------------------------------------

    def link_fields(self, chain_head: tuple[int, bytes] | None) -> dict:
        """``chain_seq`` and ``chain_prev`` naming ``chain_head`` in format 2
        (none without a predecessor, or in format 1)."""
        if self.since is None or chain_head is None:
            return {}
        if self._pending is not None:
            raise InvariantError("an entry was applied and not linked to its leaf hash")
        return {"chain_seq": chain_head[0], "chain_prev": b64(chain_head[1])}

    def fund_link(self, fund: "Fund") -> dict:
        if self.since is None:
            return {}
        if fund.last_leaf is None:
            raise InvariantError(f"no leaf hash for the head of {fund.contract.symbol}")
        return self.link_fields((fund.last_seq, fund.last_leaf))

    def state_fields(self, funds: dict[str, "Fund"], seq: int) -> dict:
        """The fields of a ``state`` entry at ``seq`` (without seq, prev, time)."""
        if self.state_head is not None and self.state_head[0] == seq - 1:
            raise RuleError("a state entry may not follow another state entry")
        if self._pending is not None:
            raise InvariantError("an entry was applied and not linked to its leaf hash")
        fields = {"kind": "state", "contract": "", "format": FORMAT_2, "funds": len(self.index),
                  "heads": b64(self.heads_root(funds)), "keys": self.keys}
        if self.key_head is not None:
            fields["key_seq"], fields["key_hash"] = self.key_head[0], b64(self.key_head[1])
        if self.since is not None:
            fields.update(self.link_fields(self.state_head))
        return fields

    def heads_root(self, funds: dict[str, "Fund"]) -> bytes:
        """The heads root over every fund, the moved heads brought in."""
        if self._tree is None:
            self._tree = HeadsTree()
            for symbol in sorted(self.index, key=self.index.__getitem__):
                self._tree.append(merkle.leaf_hash(head_line(funds[symbol])))
        else:
            for symbol in self._moved:
                self._tree.set(self.index[symbol], merkle.leaf_hash(head_line(funds[symbol])))
        self._moved.clear()
        return self._tree.root()

    # -- following the entries ----------------------------------------------------------

    def registered(self, symbol: str) -> None:
        """A contract entry: the next fund index."""
        self.index[symbol] = len(self.index)
        if self._tree is not None:
            self._tree.append(hashlib.sha256(b"").digest())  # (set at the next state entry)
        self._moved.add(symbol)
        self._pending = ("fund", symbol)

    def moved(self, symbol: str) -> None:
        """A liquidation applied: its leaf hash comes with :meth:`link`."""
        self._moved.add(symbol)
        self._pending = ("fund", symbol)

    def applied_key(self, seq: int) -> None:
        self.keys += 1
        self._pending = ("key", seq)

    def applied_state(self, seq: int) -> None:
        if self.since is None:
            self.since = seq
        self._pending = ("state", seq)

    def link(self, funds: dict[str, "Fund"], leaf: bytes) -> None:
        """The leaf hash of the entry just applied."""
        pending, self._pending = self._pending, None
        if pending is None:
            raise InvariantError("link() without an entry applied")
        what, ref = pending
        if what == "fund":
            funds[ref].last_leaf = leaf
        elif what == "key":
            self.key_head = (ref, leaf)
        else:
            self.state_head = (ref, leaf)

    def fast_moved(self, fund: "Fund", leaf: bytes) -> None:
        """A fund moved by the verifier's accelerator: its new head's leaf hash."""
        fund.last_leaf = leaf
        self._moved.add(fund.contract.symbol)
