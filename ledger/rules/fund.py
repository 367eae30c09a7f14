"""The insurance-fund rules: pure, exact, shared by the writer and the verifier.

A fund belongs to one contract and moves only on a liquidation:

* the liquidation's movement (RFC-free, from the exchange mechanics)::

      linear,  long:   delta = qty * multiplier * (fill - bankruptcy)
      linear,  short:  delta = qty * multiplier * (bankruptcy - fill)
      inverse, long:   delta = qty * multiplier * (1/bankruptcy - 1/fill)
      inverse, short:  delta = qty * multiplier * (1/fill - 1/bankruptcy)

  ``delta > 0`` is a surplus credited to the fund; ``delta < 0`` a shortfall.

* rounding: ``delta`` is rounded toward minus infinity to the contract's
  ``scale`` (floor). A surplus is therefore never rounded up into the fund and
  a shortfall is never rounded down out of it: the rounding never favours the
  fund. Linear deltas are usually exact; inverse deltas almost never are.

* a shortfall is paid by the fund up to its balance: ``paid = min(-delta,
  balance)``; the rest, ``adl = -delta - paid``, goes to auto-deleveraging and
  is recorded in the same entry. A balance never goes below zero.

* funds are isolated: nothing moves between contracts; there is no
  withdrawal, transfer, fee, bonus or adjustment, and a liquidation id is
  recorded at most once per contract.

All arithmetic is on Python integers: a decimal is a pair ``(units, digits)``
meaning ``units / 10**digits``; an amount is an integer number of
``10**-scale`` units of the settlement currency. No float is ever used.

:class:`FundBook` is the state machine. The writer calls ``contract_entry`` /
``liquidation_entry`` to build the fields of a new entry from a user's record;
the verifier rebuilds every entry from its own input fields with the same
functions and compares bytes, so a recorded ``delta``, ``paid``, ``adl`` or
``balance`` that is not what the rules give is caught.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ledger.errors import InvariantError, RuleError
from ledger.format import kinds
from ledger.format.kinds import (  # noqa: F401 (the limits, re-exported)
    CONTRACT_TYPES, MAX_CURRENCY_LENGTH, MAX_FRAC_DIGITS, MAX_ID_LENGTH, MAX_INT_DIGITS, MAX_SCALE, MAX_SYMBOL_LENGTH, SIDES,
)
from ledger.rules import adl as _adl
from ledger.rules.chains import Chains
# The numbers and times of the rules, re-exported: callers import them from here.
from ledger.rules.decimals import (  # noqa: F401
    _CANONICAL_POSITIVE, _DECIMAL, ZEROS, amount_str, decimal_str, parse_amount, parse_positive, positive_decimal,
    zero_str,
)
from ledger.rules.times import _CANONICAL_TIME, _DATES_OK, _date_exists, _valid_date, now_time, parse_time  # noqa: F401

# --- limits and grammars: the entry format's (ledger/format/kinds.py) ------------

_SYMBOL = re.compile(rf"(?:{kinds.SYMBOL})\Z")
_CURRENCY = re.compile(rf"(?:{kinds.CURRENCY})\Z")
_PRINTABLE = re.compile(rf"(?:{kinds.PRINTABLE})\Z")


def movement_units(
    contract_type: str,
    side: str,
    qty: tuple[int, int],
    multiplier: tuple[int, int],
    bankruptcy: tuple[int, int],
    fill: tuple[int, int],
    scale: int,
) -> int:
    """``floor(delta * 10**scale)`` for the formulas in the module docstring,
    computed exactly with integers.

    With ``x = (x_n, x_k)`` meaning ``x_n / 10**x_k``::

        num = q_n * m_n * (f_n * 10**b_k - b_n * 10**f_k)
        linear:  den = 10**(q_k + m_k + f_k + b_k)
        inverse: den = 10**(q_k + m_k) * b_n * f_n

    since ``1/b - 1/f = (f - b) / (b * f)``. Shorts negate ``num``.
    """
    num, den = movement_fraction(contract_type, side, qty, multiplier, bankruptcy, fill)
    return (num * 10**scale) // den  # floor division: rounds toward -infinity


def movement_fraction(contract_type: str, side: str, qty: tuple[int, int], multiplier: tuple[int, int],
                      bankruptcy: tuple[int, int], fill: tuple[int, int]) -> tuple[int, int]:
    """``delta`` before rounding, exactly: ``(num, den)`` of
    :func:`movement_units`'s formula, ``den > 0``."""
    (q_n, q_k), (m_n, m_k), (b_n, b_k), (f_n, f_k) = qty, multiplier, bankruptcy, fill
    num = q_n * m_n * (f_n * 10**b_k - b_n * 10**f_k)
    if contract_type == "linear":
        den = 10 ** (q_k + m_k + f_k + b_k)
    elif contract_type == "inverse":
        den = 10 ** (q_k + m_k) * b_n * f_n
    else:
        raise InvariantError(f"contract type {contract_type!r}")
    if side == "short":
        num = -num
    elif side != "long":
        raise InvariantError(f"side {side!r}")
    return num, den


def canonical_movement(contract: "Contract", side: str, qty: str, bankruptcy: str, fill: str) -> int:
    """:func:`movement_units` of a liquidation whose quantity and prices are
    strings already in canonical spelling (what :func:`positive_decimal`
    returns unchanged), parsed as it parses them: the fast paths of the
    importer and the verifier."""
    w, _, f = qty.partition(".")
    q = (int(w + f), len(f))
    w, _, f = bankruptcy.partition(".")
    b = (int(w + f), len(f))
    w, _, f = fill.partition(".")
    return movement_units(contract.type, side, q, contract.multiplier_dec, b, (int(w + f), len(f)), contract.scale)


def settle(before: int, delta: int) -> tuple[int, int, int]:
    """``(paid, adl, balance)`` of a movement ``delta`` on a fund holding
    ``before`` (rule 3): a surplus is credited; a shortfall is paid up to
    the balance and the rest passed to auto-deleveraging."""
    if delta >= 0:
        return 0, 0, before + delta
    paid = min(-delta, before)
    return paid, -delta - paid, before - paid


# --- records and state ------------------------------------------------------------


def _text(value: object, name: str, pattern: re.Pattern, max_len: int) -> str:
    if not isinstance(value, str):
        raise RuleError(f"{name} must be a string")
    if not value or len(value) > max_len or pattern.match(value) is None:
        raise RuleError(f"{name} is not valid: {value[:40]!r}")
    return value


def check_symbol(value: object, name: str = "contract") -> str:
    """A contract symbol: 1..32 of ``A-Z 0-9 . _ -``, starting alphanumeric."""
    return _text(value, name, _SYMBOL, MAX_SYMBOL_LENGTH)


@dataclass(frozen=True)
class Contract:
    symbol: str
    currency: str
    scale: int
    type: str
    multiplier: str  # canonical decimal
    seq: int  # the entry that registered it
    lot: str | None = None  # canonical decimal: a lot contract (docs/FORMAT.md, "Auto-deleveraging")

    def __post_init__(self) -> None:
        object.__setattr__(self, "multiplier_dec", parse_positive(self.multiplier, "multiplier"))
        object.__setattr__(self, "lot_units", None if self.lot is None else _adl.qty_units(self.lot, "lot"))


@dataclass
class Fund:
    """One contract's fund as the chain leaves it."""

    contract: Contract
    balance: int = 0  # units of 10**-scale
    credited: int = 0  # sum of surpluses
    paid: int = 0  # sum of payouts
    adl: int = 0  # sum passed to auto-deleveraging
    liquidations: int = 0
    last_seq: int = -1
    last_time: str | None = None
    last_price: str | None = None  # mark price of the latest liquidation, else its fill price
    last_leaf: bytes | None = None  # the leaf hash of entry last_seq (ledger/rules/chains.py)
    allocations: int = 0  # adl entries (in the fund's chain)

    def advance(self, delta: int, paid: int, adl: int, balance: int, seq: int, time: str | None,
                price: str) -> None:
        """The fund after liquidation ``seq`` (figures from :func:`settle`)."""
        if delta > 0:
            self.credited += delta
        self.paid += paid
        self.adl += adl
        self.balance = balance
        self.liquidations += 1
        self.last_seq = seq
        self.last_time = time
        self.last_price = price

    def summary(self) -> dict:
        """The stable JSON shape of one fund (``balance --json``, ``verify --json``);
        a lot contract's has its ``lot`` and ``allocations`` (adl entries) too."""
        c = self.contract
        out = {
            "contract": c.symbol,
            "currency": c.currency,
            "type": c.type,
            "scale": c.scale,
            "multiplier": c.multiplier,
            "balance": amount_str(self.balance, c.scale),
            "balance_usd": usd_value(self),
            "credited": amount_str(self.credited, c.scale),
            "paid": amount_str(self.paid, c.scale),
            "adl": amount_str(self.adl, c.scale),
            "liquidations": self.liquidations,
            "last_seq": self.last_seq,
            "last_time": self.last_time,
            "last_price": self.last_price,
        }
        if c.lot is not None:
            out["lot"], out["allocations"] = c.lot, self.allocations
        return out


USD_STABLE = ("USD", "USDT", "USDC")


def usd_value(fund: Fund) -> str | None:
    """The balance in USD, to the cent, rounded down.

    A fund settled in USD, USDT or USDC is taken at par. Any other settlement
    currency (an inverse contract's coin) is valued at the contract's latest
    liquidation price (its mark price, else its fill price), which inverse
    contracts quote in USD. ``None`` when no price is known yet.
    """
    c = fund.contract
    if c.currency in USD_STABLE:
        # floor to the cent
        cents = (fund.balance * 100) // 10**c.scale
        return amount_str(cents, 2)
    if fund.last_price is None:
        return None
    p_n, p_k = parse_positive(fund.last_price, "price")
    cents = (fund.balance * p_n * 100) // (10 ** (c.scale + p_k))
    return amount_str(cents, 2)


@dataclass
class FundBook:
    """The state of every fund, advanced one entry at a time."""

    funds: dict[str, Fund] = field(default_factory=dict)
    seen: set = field(default_factory=set)  # (contract, liquidation id)
    chains: Chains = field(default_factory=Chains)  # format 2's chain heads
    # The integers behind the fields returned by the last build(), so that
    # apply() of those very fields need not parse them back.
    _last: tuple | None = field(default=None, repr=False)
    adl_pending: _adl.AdlEvent | None = None  # an ADL liquidation whose allocation is not complete
    _last_part: tuple | None = field(default=None, repr=False)  # (fields, Part) of the last adl entry built

    # -- building new entries (writer) and rebuilding recorded ones (verifier) --

    def contract_entry(self, record: dict) -> dict:
        """The kind-specific fields of a ``contract`` entry for a user's record
        ``{symbol, currency, scale, type?, multiplier?}``."""
        symbol = check_symbol(record.get("symbol", record.get("contract")), "symbol")
        currency = _text(record.get("currency"), "currency", _CURRENCY, MAX_CURRENCY_LENGTH)
        scale = record.get("scale")
        if isinstance(scale, str) and re.fullmatch(r"[0-9]{1,2}", scale):
            scale = int(scale)
        if isinstance(scale, bool) or not isinstance(scale, int) or not 0 <= scale <= MAX_SCALE:
            raise RuleError(f"scale must be an integer from 0 to {MAX_SCALE}")
        ctype = record.get("type", "linear")
        if ctype not in CONTRACT_TYPES:
            raise RuleError(f"type must be linear or inverse, not {str(ctype)[:20]!r}")
        mult = decimal_str(*parse_positive(record.get("multiplier", "1"), "multiplier"))
        lot = record.get("lot")
        if lot is not None:
            if self.chains.since is None:
                raise RuleError("a lot size needs a format-2 log (fundledger upgrade): this log is in format 1")
            lot = decimal_str(*parse_positive(lot, "lot"))
        old = self.funds.get(symbol)
        if old is not None:
            c = old.contract
            if (c.currency, c.scale, c.type, c.multiplier, c.lot) == (currency, scale, ctype, mult, lot):
                raise DuplicateContract(f"duplicate: contract {symbol} is already registered")
            raise RuleError(f"contract {symbol} is already registered with other terms")
        fields = {
            "kind": "contract",
            "contract": symbol,
            "currency": currency,
            "scale": scale,
            "type": ctype,
            "multiplier": mult,
        }
        if lot is not None:
            fields["lot"] = lot
        return fields

    def _liquidation_inputs(self, record: dict) -> tuple:
        """Check a liquidation record's inputs; ``(fund, id, side, qty,
        bankruptcy, fill, mark)`` with the decimals parsed."""
        symbol = check_symbol(record.get("contract"), "contract")
        fund = self.funds.get(symbol)
        if fund is None:
            raise RuleError(f"unknown contract {symbol}")
        lid = _text(record.get("id"), "id", _PRINTABLE, MAX_ID_LENGTH)
        if (symbol, lid) in self.seen:
            raise DuplicateLiquidation(symbol, lid)
        side = record.get("side")
        if side not in SIDES:
            raise RuleError(f"side must be long or short, not {str(side)[:20]!r}")
        qty = positive_decimal(record.get("qty"), "qty")
        bankruptcy = positive_decimal(record.get("bankruptcy_price"), "bankruptcy_price")
        fill = positive_decimal(record.get("fill_price"), "fill_price")
        mark = record.get("mark_price")
        if mark is not None:
            mark = positive_decimal(mark, "mark_price")
        return fund, lid, side, qty, bankruptcy, fill, mark

    def check(self, record: dict) -> None:
        """Check a user's record as :meth:`build` would, without computing
        the movement, and remember what it registers (a contract, a
        liquidation id) so later records are checked against it. Used to
        validate a whole import before anything is written."""
        if record.get("kind") == "liquidation" and self.adl_pending is None:
            fund, lid, *_ = self._liquidation_inputs(record)
            if fund.contract.lot is None:  # (its validity does not depend on the balance)
                self.seen.add((fund.contract.symbol, lid))
                return
        fields = self.build(record)
        fields["seq"], fields["time"] = -1, None
        self.apply(fields)
        if self.chains._pending is not None:
            self.link(bytes(32))  # (no leaf: nothing is signed here)

    def liquidation_entry(self, record: dict) -> dict:
        """The kind-specific fields of a ``liquidation`` entry, movement and
        payout computed by the rules, for a user's record ``{contract, id,
        side, qty, bankruptcy_price, fill_price, mark_price?}``.

        Raises :class:`DuplicateLiquidation` for an id already recorded."""
        fund, lid, side, qty, bankruptcy, fill, mark = self._liquidation_inputs(record)
        symbol = fund.contract.symbol
        c = fund.contract
        delta = movement_units(c.type, side, qty[:2], c.multiplier_dec, bankruptcy[:2], fill[:2], c.scale)
        adl_fields = None
        if c.lot is not None:
            delta, adl_fields = self._lot_split(fund, record, side, qty, bankruptcy, fill, delta)
            paid, adl, balance = settle(fund.balance, delta) if adl_fields is None else adl_fields[1]
        else:
            if any(record.get(k) is not None for k in _ADL_FIELDS):
                raise RuleError(f"adl_qty, queue_root and queue_size need a lot contract: {symbol} has no lot size")
            paid, adl, balance = settle(fund.balance, delta)
        fields = {
            "kind": "liquidation",
            "contract": symbol,
            "id": lid,
            "side": side,
            "qty": qty[2],
            "bankruptcy_price": bankruptcy[2],
            "fill_price": fill[2],
        }
        if mark is not None:
            fields["mark_price"] = mark[2]
        scale = c.scale
        fields["delta"] = amount_str(delta, scale)
        fields["paid"] = amount_str(paid, scale)
        fields["adl"] = amount_str(adl, scale)
        fields["balance"] = amount_str(balance, scale)
        if adl_fields is not None:
            fields.update(adl_fields[0])
        if self.chains.since is not None:
            fields.update(self.chains.fund_link(fund))
        self._last = (fields, delta, paid, adl, balance)
        return fields

    def _lot_split(self, fund: Fund, record: dict, side: str, qty, bankruptcy, fill, delta: int):
        """A lot contract's liquidation (docs/FORMAT.md, "The minimum ADL"):
        ``(delta, None)`` when the fund pays, else the market part's delta
        and ``(ADL fields, (paid, adl, balance))``, the record's ADL
        quantity held to the minimum the balance requires."""
        c = fund.contract
        given = [record.get(k) for k in _ADL_FIELDS]
        before = fund.balance
        split = self._market_split(fund, side, qty, bankruptcy, fill, delta)
        if split is None:
            if any(v is not None for v in given):
                raise RuleError(f"ADL when the fund could still pay: it holds {amount_str(before, c.scale)} "
                                f"and the shortfall is {amount_str(max(-delta, 0), c.scale)}")
            return delta, None
        lots, k = split
        need = (lots - k) * c.lot_units
        minimum = decimal_str(need, _adl.QTY_DIGITS)
        if given[0] is None:
            raise RuleError(f"the fund holds {amount_str(before, c.scale)} and the shortfall is "
                            f"{amount_str(-delta, c.scale)}: ADL of {minimum} is needed (adl_qty, queue_root, "
                            "queue_size and the adl records)")
        adl_qty = positive_decimal(given[0], "adl_qty")[2]
        got = _adl.qty_units(adl_qty, "adl_qty")
        if got > need:
            raise RuleError(f"adl_qty {adl_qty} is more than the minimum {minimum} the balance requires")
        if got < need:
            raise RuleError(f"adl_qty {adl_qty} is less than the {minimum} the balance requires")
        root = _adl.decode_hash(given[1], "queue_root")
        size = given[2]
        if type(size) is not int or not 1 <= size <= kinds.MAX_QUEUE_SIZE:
            raise RuleError(f"queue_size must be an integer from 1 to {kinds.MAX_QUEUE_SIZE}")
        lot = parse_positive(c.lot, "lot")
        market = movement_units(c.type, side, (k * lot[0], lot[1]), c.multiplier_dec, bankruptcy[:2], fill[:2],
                                c.scale) if k else 0
        paid = -market
        fields = {"adl_qty": adl_qty, "queue_root": _adl.b64(root), "queue_size": size}
        return market, (fields, (paid, -delta - paid, before - paid))

    @staticmethod
    def _market_split(fund: Fund, side: str, qty, bankruptcy, fill, delta: int) -> tuple[int, int] | None:
        """``(lots, market lots)`` of a lot contract's liquidation whose
        shortfall ``-delta`` exceeds the balance, else None (the fund pays);
        RuleError unless ``qty`` is whole lots."""
        c = fund.contract
        lots = _adl.check_lots(_adl.qty_units(qty[2], "qty"), c.lot_units, f"qty {qty[2]}", c.lot)
        if delta >= 0 or -delta <= fund.balance:
            return None
        one = movement_fraction(c.type, side, parse_positive(c.lot, "lot"), c.multiplier_dec, bankruptcy[:2], fill[:2])
        return lots, _adl.market_lots(one, c.scale, fund.balance, lots)

    def adl_minimum(self, record: dict) -> str | None:
        """The minimum ADL quantity a liquidation record of a lot contract
        needs now (docs/FORMAT.md, "The minimum ADL"), or None when the fund
        pays: what an exchange's risk engine computes before it allocates."""
        fund, _, side, qty, bankruptcy, fill, _ = self._liquidation_inputs(record)
        c = fund.contract
        if c.lot is None:
            return None
        delta = movement_units(c.type, side, qty[:2], c.multiplier_dec, bankruptcy[:2], fill[:2], c.scale)
        split = self._market_split(fund, side, qty, bankruptcy, fill, delta)
        return None if split is None else decimal_str((split[0] - split[1]) * c.lot_units, _adl.QTY_DIGITS)

    def adl_entry(self, record: dict) -> dict:
        """The fields of an ``adl`` entry allocating the pending ADL
        liquidation (docs/FORMAT.md, "adl"), every rule checked."""
        ev = self.adl_pending
        if ev is None:
            raise RuleError("an adl record must follow the ADL liquidation it allocates, or its previous adl record")
        part = ev.check_part(record)
        fields = part.fields
        fields.update(self.chains.fund_link(self.funds[ev.symbol]))
        self._last_part = (fields, part)
        return fields

    def end_of_batch(self) -> None:
        """RuleError when the records given end inside an ADL event: a
        liquidation and its allocation are appended together or not at all."""
        ev = self.adl_pending
        if ev is not None:
            raise RuleError(f"the records end before the ADL allocation of {ev.describe()} is complete")

    def _no_event_pending(self) -> None:
        ev = self.adl_pending
        if ev is not None:
            raise RuleError(f"{ev.describe()} awaits its ADL allocation: the next record must be its adl record")

    def build(self, record: dict) -> dict:
        """Dispatch on ``record["kind"]``; an unknown kind is refused (rule 4)."""
        kind = record.get("kind")
        if kind == "adl":
            return self.adl_entry(record)
        self._no_event_pending()
        if kind == "liquidation":
            return self.liquidation_entry(record)
        if kind == "contract":
            return self.contract_entry(record)
        raise RuleError(f"unknown kind {str(kind)[:30]!r}: only contract, liquidation and adl exist")

    def key_entry(self, vkey: str) -> dict:
        """The fields of a ``key`` entry announcing ``vkey`` (checked by the caller)."""
        self._no_event_pending()
        return {"kind": "key", "contract": "", "vkey": vkey, **self.chains.link_fields(self.chains.key_head)}

    def state_entry(self, seq: int) -> dict:
        """The fields of a ``state`` entry at ``seq``: every fund's head."""
        self._no_event_pending()
        return self.chains.state_fields(self.funds, seq)

    # -- advancing the state ----------------------------------------------------

    def link(self, leaf: bytes) -> None:
        """The leaf hash of the entry :meth:`apply` applied last (its chain's new head)."""
        self.chains.link(self.funds, leaf)

    def apply(self, entry: dict) -> None:
        """Advance the state by an entry built by :meth:`build` (plus ``seq``
        and ``time``). The entry's fields are trusted here: they were built by
        this class, or rebuilt and compared byte for byte by the verifier."""
        kind = entry["kind"]
        seq = entry["seq"]
        symbol = entry["contract"]
        if kind == "contract":
            c = Contract(
                symbol, entry["currency"], entry["scale"], entry["type"], entry["multiplier"], seq, entry.get("lot")
            )
            self.funds[symbol] = Fund(c, last_seq=seq, last_time=entry["time"])
            self.chains.registered(symbol)
            return
        if kind == "key" or kind == "state":
            (self.chains.applied_key if kind == "key" else self.chains.applied_state)(seq)
            return
        if kind == "adl":
            self._apply_adl(entry)
            return
        if kind != "liquidation":
            raise InvariantError(f"apply({kind!r})")
        fund = self.funds[symbol]
        last = self._last
        if last is not None and last[0] is entry:
            _, delta, paid, adl, balance = last
        else:
            scale = fund.contract.scale
            delta = parse_amount(entry["delta"], scale, "delta")
            paid = parse_amount(entry["paid"], scale, "paid")
            adl = parse_amount(entry["adl"], scale, "adl")
            balance = parse_amount(entry["balance"], scale, "balance")
        expected = fund.balance + delta if delta >= 0 else fund.balance - paid
        if balance != expected or balance < 0:
            raise InvariantError(f"seq {seq}: balance {balance} != {expected}")
        fund.advance(delta, paid, adl, balance, seq, entry["time"], entry.get("mark_price", entry["fill_price"]))
        self.seen.add((symbol, entry["id"]))
        self.chains.moved(symbol)
        if "adl_qty" in entry:
            c = fund.contract
            self.adl_pending = _adl.AdlEvent(
                symbol, entry["id"], seq, _adl.OPPOSITE[entry["side"]], entry["bankruptcy_price"], c.lot, c.lot_units,
                _adl.qty_units(entry["adl_qty"], "adl_qty"), _adl.decode_hash(entry["queue_root"], "queue_root"),
                entry["queue_size"])

    def _apply_adl(self, entry: dict) -> None:
        ev = self.adl_pending
        if ev is None or entry["contract"] != ev.symbol:
            raise InvariantError("apply() of an adl entry with no ADL event pending")
        last = self._last_part
        part = last[1] if last is not None and last[0] is entry else ev.check_part(entry)
        self._last_part = None
        ev.apply(part)
        fund = self.funds[ev.symbol]
        fund.allocations += 1
        fund.last_seq = entry["seq"]
        fund.last_time = entry["time"]
        if part.done:
            self.adl_pending = None
        self.chains.moved(ev.symbol)


_ADL_FIELDS = ("adl_qty", "queue_root", "queue_size")  # a record's ADL fields (a lot contract's, when needed)


class DuplicateLiquidation(RuleError):
    """A liquidation id already recorded for its contract: a replay writes nothing."""

    def __init__(self, contract: str, liquidation_id: str):
        super().__init__(f"duplicate: liquidation {liquidation_id} of {contract} is already recorded")
        self.contract = contract
        self.liquidation_id = liquidation_id


class DuplicateContract(RuleError):
    """A contract registered again with the same terms: a replay writes nothing."""
