"""Auto-deleveraging: the allocation rule of lot contracts, pure and exact.

docs/FORMAT.md, "Auto-deleveraging", is the definition; this module is its
code, shared by the writer and the verifier (through
:class:`ledger.rules.fund.FundBook`). In short, for a liquidation of a lot
contract whose shortfall exceeds the fund's balance ``B``:

* the market part is the largest whole number of lots ``k`` the balance
  covers: ``k = min(qty / lot, floor(B * den1 / (-num1 * 10**scale)))``
  with ``num1 / den1`` one lot's exact movement (:func:`market_lots`); the
  minimum ADL quantity is ``qty - k * lot``;
* the ``adl`` entries after it list the positions closed, in rank order
  (score = pnl_ratio * leverage, higher first, ties by commitment bytes),
  the top of the queue closed whole and the last one perhaps in part, their
  quantities adding up to the ADL quantity exactly (:class:`AdlEvent`);
* the positions shown (and ``next``, the first one spared) are the first
  leaves of the RFC 6962 tree whose root the liquidation commits to
  (``queue_root``), shown by an RFC 9162 consistency proof.

Quantities are integers of 10**-18 contracts (every quantity has at most 18
digits after the point), scores integers of 10**-36: no float anywhere.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from dataclasses import dataclass, field
from typing import Sequence

from ledger.errors import FundledgerError, RuleError
from ledger.format import kinds
from ledger.format.kinds import MAX_FRAC_DIGITS, MAX_POSITIONS, MAX_QUEUE_PROOF
from ledger.rules.chains import b64  # noqa: F401 (standard base64, as the entries spell hashes)
from ledger.tlog import merkle
from ledger.tlog.proof import prove_consistency, verify_consistency

QTY_DIGITS = MAX_FRAC_DIGITS  # a quantity as an integer of 10**-18 contracts
SCORE_DIGITS = 2 * MAX_FRAC_DIGITS  # a score as an integer of 10**-36
ACCOUNT_DOMAIN = b"fundledger-adl-account/v1\n"
POSITION_DOMAIN = b"fundledger-adl-position/v1\n"
OPPOSITE = {"long": "short", "short": "long"}

_POSITIVE = re.compile(rf"(?:{kinds.POSITIVE})\Z")
_SCORE = re.compile(rf"(?:{kinds.SCORE})\Z")
_HASH_B64 = re.compile(rf"(?:{kinds.PREV})\Z")


# --- commitments (docs/FORMAT.md, "Commitments") -----------------------------------


def account_commitment(account_id: str, salt: str) -> bytes:
    """``SHA-256("fundledger-adl-account/v1\\n" || account id || "\\n" || salt)``:
    what the exchange gives a trader once, to find their positions."""
    return hashlib.sha256(ACCOUNT_DOMAIN + account_id.encode("utf-8") + b"\n" + salt.encode("utf-8")).digest()


def position_commitment(account: bytes, contract: str, liquidation_id: str) -> bytes:
    """A position's commitment in one ADL event: ``SHA-256("fundledger-adl-
    position/v1\\n" || C || contract || "\\n" || liquidation id)``. Two
    events' commitments of one account are unrelated without ``C``."""
    if len(account) != 32:
        raise RuleError("an account commitment is 32 bytes")
    return hashlib.sha256(POSITION_DOMAIN + account + contract.encode("ascii") + b"\n"
                          + liquidation_id.encode("ascii")).digest()


def decode_hash(text: str, name: str) -> bytes:
    """A 32-byte hash in canonical standard base64, else RuleError."""
    if type(text) is not str or not _HASH_B64.match(text):
        raise RuleError(f"{name} is not the base64 of 32 bytes: {str(text)[:50]!r}")
    return binascii.a2b_base64(text)


# --- exact quantities and scores -----------------------------------------------------


def decimal_parts(text: str) -> tuple[int, int]:
    """``(units, digits)`` of a canonical decimal (checked by the caller)."""
    whole, _, frac = text.partition(".")
    return int(whole + frac), len(frac)


def qty_units(text: str, name: str) -> int:
    """A canonical positive decimal quantity as an integer of 10**-18."""
    if type(text) is not str or not _POSITIVE.match(text):
        raise RuleError(f"{name} is not a canonical positive decimal: {str(text)[:40]!r}")
    n, k = decimal_parts(text)
    return n * 10 ** (QTY_DIGITS - k)


def check_lots(units: int, lot_units: int, name: str, lot: str) -> int:
    """The number of lots in ``units``; RuleError unless a whole number."""
    count, rest = divmod(units, lot_units)
    if rest:
        raise RuleError(f"{name} is not a multiple of the lot size {lot}")
    return count


def score_str(pnl_ratio: str, leverage: str) -> str:
    """The exact product ``pnl_ratio * leverage`` in canonical spelling."""
    from ledger.rules.fund import decimal_str

    (a, i), (b, j) = decimal_parts(pnl_ratio), decimal_parts(leverage)
    return decimal_str(a * b, i + j)


def score_units(score: str) -> int:
    n, k = decimal_parts(score)
    return n * 10 ** (SCORE_DIGITS - k)


# --- the minimum ADL (docs/FORMAT.md, "The minimum ADL") ----------------------------


def market_lots(one_lot: tuple[int, int], scale: int, balance: int, lot_count: int) -> int:
    """The lots of the market part: the largest ``k <= lot_count`` whose
    shortfall ``ceil(k * -num1 * 10**scale / den1)`` is at most ``balance``,
    with ``one_lot = (num1, den1)`` one lot's exact movement, ``num1 < 0``:
    ``min(lot_count, floor(balance * den1 / (-num1 * 10**scale)))``."""
    num1, den1 = one_lot
    if num1 >= 0:
        return lot_count
    return min(lot_count, (balance * den1) // (-num1 * 10**scale))


# --- positions and the queue -----------------------------------------------------------


@dataclass(frozen=True)
class Position:
    """One position of an ADL event (a queue leaf, and for a position
    closed, the quantity closed)."""

    commitment: bytes
    size: str
    qty: str | None  # None: a queue leaf alone (``next``)
    pnl_ratio: str
    leverage: str
    score: str

    def leaf(self) -> bytes:
        """The queue leaf text: ``<commitment> <size> <pnl_ratio> <leverage> <score>``."""
        return f"{b64(self.commitment)} {self.size} {self.pnl_ratio} {self.leverage} {self.score}".encode("ascii")

    def text(self) -> str:
        """The spelling in ``positions`` (with qty) or ``next`` (without)."""
        parts = [b64(self.commitment), self.size] + ([self.qty] if self.qty is not None else [])
        return " ".join(parts + [self.pnl_ratio, self.leverage, self.score])

    def rank_key(self) -> tuple[int, bytes]:
        """Sorts in rank order: the higher score first, then the lower commitment."""
        return -score_units(self.score), self.commitment


def parse_position(text: str, with_qty: bool, lot_units: int, lot: str, where: str) -> Position:
    """One position (``with_qty``) or queue leaf, every value canonical, its
    quantities whole lots, its score the product of its inputs."""
    values = text.split(" ")
    if len(values) != (6 if with_qty else 5):
        raise RuleError(f"{where} is not {'six' if with_qty else 'five'} values separated by one space")
    commitment = decode_hash(values[0], f"{where}: the commitment")
    size = values[1]
    qty = values[2] if with_qty else None
    pnl_ratio, leverage, score = values[-3:]
    size_units = qty_units(size, f"{where}: size")
    check_lots(size_units, lot_units, f"{where}: size {size}", lot)
    if qty is not None:
        q = qty_units(qty, f"{where}: qty")
        check_lots(q, lot_units, f"{where}: qty {qty}", lot)
        if q > size_units:
            raise RuleError(f"{where} closes {qty}, more than the {size} it held")
    qty_units(pnl_ratio, f"{where}: pnl_ratio")
    qty_units(leverage, f"{where}: leverage")
    if not _SCORE.match(score) or score != score_str(pnl_ratio, leverage):
        raise RuleError(f"{where}: score {score[:60]} is not pnl_ratio * leverage = {score_str(pnl_ratio, leverage)}")
    return Position(commitment, size, qty, pnl_ratio, leverage, score)


def queue_hashes(leaves: Sequence[bytes]) -> list[bytes]:
    """The stored hashes of the RFC 6962 tree over queue leaf texts (index order)."""
    builder = merkle.TreeBuilder()
    return builder.extend([merkle.leaf_hash(x) for x in leaves])


class _ListReader:
    def __init__(self, hashes: list[bytes]):
        self.hashes = hashes

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        return [self.hashes[i] for i in indexes]


def queue_root(leaves: Sequence[bytes]) -> bytes:
    """The queue root: RFC 6962 MTH over the queue leaf texts in rank order."""
    builder = merkle.TreeBuilder()
    builder.extend([merkle.leaf_hash(x) for x in leaves])
    return builder.root()


def queue_proof(leaves: Sequence[bytes], shown: int) -> list[bytes]:
    """The consistency proof from the first ``shown`` leaves to the whole queue."""
    if not 0 < shown < len(leaves):
        return []
    return prove_consistency(len(leaves), shown, _ListReader(queue_hashes(leaves)))


def queue_inclusion(leaves: Sequence[bytes], rank: int) -> list[bytes]:
    """The RFC 9162 inclusion proof of the leaf at ``rank`` in the queue tree."""
    from ledger.tlog.proof import prove_inclusion

    return prove_inclusion(len(leaves), rank, _ListReader(queue_hashes(leaves)))


# --- one ADL event, from its liquidation to its last adl entry ---------------------------


@dataclass
class Part:
    """What an ``adl`` entry adds to its event, checked, not yet applied."""

    fields: dict
    positions: list[Position]
    closed_units: int
    last: Position
    done: bool
    tree: merkle.TreeBuilder


@dataclass
class AdlEvent:
    """An ADL liquidation whose allocation is not complete yet."""

    symbol: str
    liquidation_id: str
    seq: int
    side: str  # of the positions closed: the opposite of the liquidation's
    price: str  # the liquidation's bankruptcy price
    lot: str
    lot_units: int
    adl_units: int
    queue_root: bytes
    queue_size: int
    closed_units: int = 0
    count: int = 0
    last: Position | None = None
    commitments: set = field(default_factory=set)
    tree: merkle.TreeBuilder = field(default_factory=merkle.TreeBuilder)

    def describe(self) -> str:
        return f"liquidation {self.liquidation_id} of {self.symbol} (seq {self.seq})"

    def check_part(self, record: dict) -> Part:
        """The fields of the next ``adl`` entry for ``record`` ``{contract,
        liquidation, positions, next?, queue_proof?}``, every rule checked
        (docs/FORMAT.md, "adl"); the event is not changed."""
        if record.get("contract") != self.symbol or record.get("liquidation") != self.liquidation_id:
            raise RuleError(f"an adl record must allocate {self.describe()}, the liquidation before it")
        text = record.get("positions")
        if type(text) is not str or not text:
            raise RuleError("positions must be a non-empty string")
        items = text.split(",")
        if len(items) > MAX_POSITIONS:
            raise RuleError(f"more than {MAX_POSITIONS} positions in one adl entry")
        closed, last, seen = self.closed_units, self.last, set()
        positions = []
        for i, item in enumerate(items):
            rank = self.count + i
            p = parse_position(item, True, self.lot_units, self.lot, f"position {rank}")
            self._check_order(last, p, rank, seen)
            if last is not None and last.qty != last.size:
                raise RuleError(f"position {rank - 1} is closed for {last.qty} of {last.size}, yet the allocation "
                                "goes on: the top of the queue is closed whole first")
            closed += qty_units(p.qty, "qty")
            if closed > self.adl_units:
                raise RuleError(f"the positions add up to more than adl_qty at position {rank}")
            if closed == self.adl_units and i != len(items) - 1:
                raise RuleError(f"the positions reach adl_qty at position {rank}, before the last of the entry")
            seen.add(p.commitment)
            positions.append(p)
            last = p
        done = closed == self.adl_units
        tree = merkle.TreeBuilder(self.tree.size, self.tree.hashes())
        tree.extend([merkle.leaf_hash(p.leaf()) for p in positions])
        if tree.size > self.queue_size:
            raise RuleError(f"more positions closed than the queue's {self.queue_size}")
        fields = {"kind": "adl", "contract": self.symbol, "liquidation": self.liquidation_id, "event": self.seq,
                  "side": self.side, "price": self.price, "positions": text}
        if done:
            fields.update(self._queue_end(record, last, seen, tree))
        elif record.get("next") is not None or record.get("queue_proof") is not None:
            raise RuleError("next and queue_proof belong on the event's last adl entry only")
        return Part(fields, positions, closed, last, done, tree)

    def _check_order(self, last: Position | None, p: Position, rank: int, seen: set) -> None:
        if p.commitment in self.commitments or p.commitment in seen:
            raise RuleError(f"position {rank}: its commitment appears twice in the event")
        if last is not None and not last.rank_key() < p.rank_key():
            raise RuleError(f"position {rank} (score {p.score[:40]}) ranks above position {rank - 1} "
                            f"(score {last.score[:40]}): out of queue order")

    def _queue_end(self, record: dict, last: Position, seen: set, tree: merkle.TreeBuilder) -> dict:
        """The last entry's ``next`` and ``queue_proof``, checked against the queue root."""
        out = {}
        k = tree.size
        nxt, proof_text = record.get("next"), record.get("queue_proof")
        if k < self.queue_size:
            if nxt is None:
                raise RuleError(f"the queue has {self.queue_size} positions and {k} are closed: "
                                "next must give the first one spared")
            p = parse_position(nxt, False, self.lot_units, self.lot, "next")
            self._check_order(last, p, k, seen)
            tree.append(merkle.leaf_hash(p.leaf()))
            out["next"] = nxt
        elif nxt is not None:
            raise RuleError("next after the whole queue is closed")
        shown = tree.size
        if shown < self.queue_size:
            if type(proof_text) is not str or not proof_text:
                raise RuleError(f"queue_proof is needed: {shown} of the queue's {self.queue_size} positions are shown")
            parts = proof_text.split(" ")
            if len(parts) > MAX_QUEUE_PROOF:
                raise RuleError(f"more than {MAX_QUEUE_PROOF} hashes in queue_proof")
            proof = [decode_hash(h, "a queue_proof hash") for h in parts]
            try:
                verify_consistency(shown, self.queue_size, proof, tree.root(), self.queue_root)
            except FundledgerError:
                raise RuleError(f"queue_proof does not show the {shown} positions shown to be the top of "
                                "the queue of queue_root") from None
            out["queue_proof"] = proof_text
        else:
            if proof_text is not None:
                raise RuleError("queue_proof with the whole queue shown")
            if tree.root() != self.queue_root:
                raise RuleError("the positions shown are the whole queue, and their root is not queue_root")
        return out

    def apply(self, part: Part) -> None:
        """The event after ``part`` (checked by :meth:`check_part`)."""
        self.count += len(part.positions)
        self.closed_units = part.closed_units
        self.last = part.last
        self.commitments.update(p.commitment for p in part.positions)
        self.tree = part.tree


# --- building an allocation (an exchange's side: the demo, tests, integrations) ---------


@dataclass(frozen=True)
class QueuedPosition:
    """An opposing position as the exchange ranks it: its commitment, size
    and score inputs (the score is their product)."""

    commitment: bytes
    size: str
    pnl_ratio: str
    leverage: str

    def ranked(self, qty: str | None = None) -> Position:
        """The position, its values in canonical spelling and its score computed."""
        from ledger.rules.fund import positive_decimal

        size, pnl, lev = (positive_decimal(v, n)[2] for v, n in ((self.size, "size"), (self.pnl_ratio, "pnl_ratio"),
                                                                 (self.leverage, "leverage")))
        return Position(self.commitment, size, qty, pnl, lev, score_str(pnl, lev))


def allocate(contract: str, liquidation_id: str, adl_qty: str, queue: Sequence[QueuedPosition],
             per_entry: int = MAX_POSITIONS) -> tuple[dict, list[dict]]:
    """The ADL fields of a liquidation record and its ``adl`` records for
    ``adl_qty`` taken from ``queue`` in rank order (sorted here): the top
    positions closed whole, the last perhaps in part. RuleError when the
    queue holds less than ``adl_qty``."""
    ranked = sorted((q.ranked() for q in queue), key=Position.rank_key)
    leaves = [p.leaf() for p in ranked]
    need = qty_units(adl_qty, "adl_qty")
    closed: list[Position] = []
    for p in ranked:
        if need == 0:
            break
        size = qty_units(p.size, "size")
        take = min(size, need)
        need -= take
        from ledger.rules.fund import decimal_str

        closed.append(Position(p.commitment, p.size, decimal_str(take, QTY_DIGITS), p.pnl_ratio, p.leverage, p.score))
    if need:
        raise RuleError(f"the queue holds less than adl_qty {adl_qty}")
    fields = {"adl_qty": adl_qty, "queue_root": b64(queue_root(leaves)), "queue_size": len(ranked)}
    records = []
    for i in range(0, len(closed), per_entry):
        part = closed[i:i + per_entry]
        records.append({"kind": "adl", "contract": contract, "liquidation": liquidation_id,
                        "positions": ",".join(p.text() for p in part)})
    k = len(closed)
    shown = k + (1 if k < len(ranked) else 0)
    if k < len(ranked):
        records[-1]["next"] = ranked[k].text()
    if shown < len(ranked):
        records[-1]["queue_proof"] = " ".join(b64(h) for h in queue_proof(leaves, shown))
    return fields, records
