"""The demo's simulated market: contracts, mean-reverting prices and the
liquidations they cause, as ``fundledger import`` records.

Each asset's mark price starts at its price in
``ledger/data/market-prices.tsv`` and follows a mean-reverting random walk.
Contracts are KuCoin-style USDT-margined linear perpetuals on nine assets,
and the coin-margined inverse XBTUSDM (1 USD a contract, settled in XBT).
Each liquidation closes a position whose bankruptcy price sits a little
beyond the mark (the margin left when it was liquidated); most fills land
between the bankruptcy price and the mark, a surplus for the fund, and a few
land beyond the bankruptcy price, a shortfall. Three fifths into the run one
asset (solana or dogecoin, by the seed) crashes by about a quarter over a
twenty-fifth of the liquidations, packed close together (about ten minutes
in the default run), and the rest of the market follows a few percent: long
positions are liquidated in a cascade and filled far below their bankruptcy
prices, which drains that contract's fund and passes the rest to
auto-deleveraging. Both crashing contracts are lot contracts (docs/ADL.md):
each ADL is allocated over a simulated queue of opposing positions of demo
traders (account ``demo-<n>``, salt ``demo-salt-<n>``: :func:`demo_account`),
the most whole lots the balance pays filled in the market, so the fund
keeps less than one lot's shortfall. The run checks, in the simulation and
then in the ledger, that this happened. (Should the cascade fall short, its last liquidation is
a whale's position large enough to empty the fund, so every seed and size
tells the story.)

Everything derives from ``random.Random(seed)``, including the entries'
times (simulated, from a fixed start date): two runs with the same seed
produce the same ``liquidations.jsonl`` and the same entries but for the
key, that is, the signatures and the ``prev`` hashes that cover them. The
simulation uses integers only: prices are integer numbers of ticks, moves are
integer parts per million.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from random import Random

from ledger.rules import fund
from ledger.errors import InputError, InvariantError
from ledger.rules import adl as adl_rules

START = datetime(2026, 1, 5, 0, 0, 0, tzinfo=timezone.utc)  # simulated clock's first instant

PPM = 1_000_000
PRICE_DIGITS = 8  # an asset's mark price is an integer number of 10**-8 USD
SHORTFALL_PCT = 4  # outside the crash: share of liquidations filled beyond bankruptcy
CRASH_ASSETS = ("solana", "dogecoin")
CRASH_AT = (3, 5)  # the crash starts three fifths into the run
CRASH_SHARE_PCT = 75  # during the crash: share of liquidations on the crashing contract
MIN_LIQUIDATIONS = 10  # the crash needs a market before it


@dataclass(frozen=True)
class DemoContract:
    symbol: str
    asset: str
    type: str
    currency: str
    multiplier: str
    scale: int
    tick_digits: int  # prices are multiples of 10**-tick_digits
    weight: int  # relative share of the liquidations
    vol_ppm: int  # largest move of the mark per step, parts per million
    lot: str | None = None  # a lot contract: its ADL is allocated (docs/ADL.md)

    def record(self, time: str) -> dict:
        out = {
            "kind": "contract",
            "symbol": self.symbol,
            "currency": self.currency,
            "scale": self.scale,
            "type": self.type,
            "multiplier": self.multiplier,
            "time": time,
        }
        if self.lot is not None:
            out["lot"] = self.lot
        return out


# KuCoin-like lot sizes: a contract is 0.001 BTC, 0.01 ETH, 10 XRP, ...;
# XBTUSDM is the coin-margined inverse contract worth 1 USD. The two that
# may crash are lot contracts (one contract a lot): their ADL is allocated.
CONTRACTS: tuple[DemoContract, ...] = (
    DemoContract("XBTUSDTM", "bitcoin", "linear", "USDT", "0.001", 8, 1, 26, 900),
    DemoContract("XBTUSDM", "bitcoin", "inverse", "XBT", "1", 8, 1, 9, 900),
    DemoContract("ETHUSDTM", "ethereum", "linear", "USDT", "0.01", 8, 2, 17, 1200),
    DemoContract("SOLUSDTM", "solana", "linear", "USDT", "0.1", 8, 3, 10, 1600, "1"),
    DemoContract("XRPUSDTM", "xrp", "linear", "USDT", "10", 6, 4, 8, 1600),
    DemoContract("DOGEUSDTM", "dogecoin", "linear", "USDT", "100", 6, 5, 8, 1800, "1"),
    DemoContract("BNBUSDTM", "bnb", "linear", "USDT", "0.01", 8, 2, 6, 1100),
    DemoContract("ADAUSDTM", "cardano", "linear", "USDT", "10", 6, 5, 6, 1700),
    DemoContract("LINKUSDTM", "chainlink", "linear", "USDT", "0.1", 6, 3, 6, 1700),
    DemoContract("TRXUSDTM", "tron", "linear", "USDT", "100", 6, 5, 4, 1100),
)


def demo_account(n: int) -> bytes:
    """The account commitment of demo trader ``n`` (account id ``demo-<n>``,
    salt ``demo-salt-<n>``): what an exchange gives its trader."""
    return adl_rules.account_commitment(f"demo-{n}", f"demo-salt-{n}")


# --- the demo market's prices ----------------------------------------------------------


def load_prices() -> dict[str, tuple[int, int]]:
    """``asset -> (units, digits)`` from the packaged market-prices.tsv, exact."""
    text = (resources.files("ledger") / "data" / "market-prices.tsv").read_text("utf-8")
    lines = text.splitlines()
    if not lines or lines[0].split("\t")[:2] != ["asset", "price_usd"]:
        raise InvariantError("market-prices.tsv: unexpected header")
    prices = {}
    for line in lines[1:]:
        if line.strip():
            asset, price = line.split("\t")[:2]
            prices[asset] = fund.parse_positive(price, f"price of {asset}")
    return prices


def _to_units(dec: tuple[int, int], digits: int) -> int:
    n, k = dec
    return n * 10**digits // 10**k


# --- the simulation ----------------------------------------------------------------------


@dataclass
class Crash:
    asset: str
    contract: str
    start: int  # index of the first liquidation in the crash
    length: int
    drop_ppm: int
    open_price: int = 0  # 10**-8 USD
    low_price: int = 0
    start_time: str = ""
    end_time: str = ""
    longs: int = 0  # long liquidations on the crashing contract during the crash


class Market:
    """The random walk of every asset's mark price, in 10**-8 USD."""

    def __init__(self, rng: Random, prices: dict[str, tuple[int, int]]):
        self.rng = rng
        self.assets = sorted({c.asset for c in CONTRACTS})
        missing = [a for a in self.assets if a not in prices]
        if missing:
            raise InvariantError(f"market-prices.tsv lacks {', '.join(missing)}")
        self.mark = {a: _to_units(prices[a], PRICE_DIGITS) for a in self.assets}
        self.anchor = dict(self.mark)  # what each walk reverts to
        self.vol = {c.asset: c.vol_ppm for c in CONTRACTS}

    def step(self, pull: dict[str, int] | None = None) -> None:
        """One step of every walk: a random move, a pull of 1/1000 of the
        distance back to the anchor, and an optional extra move (ppm)."""
        for a in self.assets:
            m, v = self.mark[a], self.vol[a]
            d = self.rng.randint(-v, v) + (self.anchor[a] - m) * 1000 // self.anchor[a]
            if pull:
                d += pull.get(a, 0)
            self.mark[a] = max(1, m * (PPM + d) // PPM)


def _choose(rng: Random, cumulative: list[int]) -> int:
    return bisect_right(cumulative, rng.randrange(cumulative[-1]))


def time_str(ms: int) -> str:
    t = START + timedelta(milliseconds=ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{t.microsecond // 1000:03d}Z"


def price_str(ticks: int, c: DemoContract) -> str:
    return fund.decimal_str(ticks, c.tick_digits)


def mark_str(units: int, c: DemoContract) -> str:
    """A mark price (10**-8 USD) at the contract's tick."""
    return price_str(units // 10 ** (PRICE_DIGITS - c.tick_digits), c)


def _qty_for(rng: Random, c: DemoContract, mark_ticks: int, boost: int = 1) -> int:
    """Contracts for a position of a random USD size ($100 to ~$1M, most
    small), at the mark."""
    exp = _choose(rng, [40, 75, 95, 100])  # 10**0 .. 10**3
    notional = rng.randint(100, 999) * 10**exp * boost  # USD
    if c.type == "inverse":
        m_n, m_k = fund.parse_positive(c.multiplier, "multiplier")
        return max(1, notional * 10**m_k // m_n)
    m_n, m_k = fund.parse_positive(c.multiplier, "multiplier")
    # contract value = multiplier * price = m_n/10**m_k * ticks/10**tick_digits USD
    return max(1, notional * 10 ** (m_k + c.tick_digits) // (m_n * mark_ticks))


class Simulation:
    """Generates the records; keeps each fund's balance by the rules to make
    sure the crash drains one (the ledger computes it again on import)."""

    def __init__(self, seed: int, liquidations: int):
        if liquidations < MIN_LIQUIDATIONS:
            raise InputError(f"the demo needs at least {MIN_LIQUIDATIONS} liquidations")
        self.rng = Random(seed)
        self.n = liquidations
        self.market = Market(self.rng, load_prices())
        self.by_symbol = {c.symbol: c for c in CONTRACTS}
        self.cumulative = []
        total = 0
        for c in CONTRACTS:
            total += c.weight
            self.cumulative.append(total)
        asset = self.rng.choice(CRASH_ASSETS)
        contract = next(c.symbol for c in CONTRACTS if c.asset == asset)
        start = liquidations * CRASH_AT[0] // CRASH_AT[1]
        length = max(1, min(liquidations - start, max(3, liquidations // 25)))
        self.crash = Crash(asset, contract, start, length, self.rng.randint(230_000, 280_000))
        self.balance = {c.symbol: 0 for c in CONTRACTS}
        self.drained = False
        self.mult = {c.symbol: fund.parse_positive(c.multiplier, "multiplier") for c in CONTRACTS}
        self.queue_rng = Random(seed * 7919 + 1)  # the ADL queues' own, not to change the market's draws

    # -- one liquidation ---------------------------------------------------------------

    def _prices(self, c: DemoContract, side: str, outcome: str) -> tuple[int, int, int]:
        """``(mark, bankruptcy, fill)`` in ticks for ``outcome`` in surplus,
        shortfall, crash."""
        rng = self.rng
        mark = max(3, self.market.mark[c.asset] // 10 ** (PRICE_DIGITS - c.tick_digits))
        gap = max(1, mark * rng.randint(2_500, 12_000) // PPM)  # margin left at liquidation
        if outcome == "crash":
            gap = max(1, mark * rng.randint(500, 4_000) // PPM)
        sign = -1 if side == "long" else 1  # a long's bankruptcy price is below the mark
        bankruptcy = mark + sign * gap
        if outcome == "surplus":  # closed between the bankruptcy price and the mark
            fill = bankruptcy - sign * (gap * rng.randint(50, 950) // 1000)
        elif outcome == "shortfall":  # slipped beyond the bankruptcy price
            fill = bankruptcy + sign * max(1, gap * rng.randint(20, 500) // 1000)
        else:  # the cascade: filled far beyond it
            fill = bankruptcy + sign * max(1, bankruptcy * rng.randint(15_000, 70_000) // PPM)
        if min(bankruptcy, fill) < 1:
            raise InvariantError(f"non-positive simulated price for {c.symbol}")
        return mark, bankruptcy, fill

    def _delta(self, c: DemoContract, side: str, qty: int, bankruptcy: int, fill: int) -> int:
        return fund.movement_units(
            c.type, side, (qty, 0), self.mult[c.symbol],
            (bankruptcy, c.tick_digits), (fill, c.tick_digits), c.scale,
        )

    def _record(self, i: int, ms: int, c: DemoContract, side: str, qty: int,
                prices: tuple[int, int, int]) -> list[dict]:
        """The records of liquidation ``i``: the liquidation, and for an ADL
        of a lot contract its allocation (the fund's balance kept by the rules)."""
        mark, bankruptcy, fill = prices
        delta = self._delta(c, side, qty, bankruptcy, fill)
        b = self.balance[c.symbol]
        record = self._liquidation(i, ms, c, side, qty, prices)
        if delta >= 0:
            self.balance[c.symbol] = b + delta
        elif c.lot is not None and -delta > b:
            return self._adl(c, record, qty, b)
        else:
            paid = min(-delta, b)
            if paid > 0 and paid == b and -delta > paid:
                self.drained = True
            self.balance[c.symbol] = b - paid
        return [record]

    def _adl(self, c: DemoContract, record: dict, qty: int, before: int) -> list[dict]:
        """An ADL liquidation (docs/FORMAT.md, "The minimum ADL"): the most
        whole lots the balance pays filled in the market, the rest
        allocated over a simulated queue of opposing positions."""
        b, f = fund.parse_positive(record["bankruptcy_price"], "b"), fund.parse_positive(record["fill_price"], "f")
        one = fund.movement_fraction(c.type, record["side"], (1, 0), self.mult[c.symbol], b, f)
        k = adl_rules.market_lots(one, c.scale, before, qty)
        paid = -fund.movement_units(c.type, record["side"], (k, 0), self.mult[c.symbol], b, f, c.scale) if k else 0
        self.balance[c.symbol] = before - paid
        self.drained = self.drained or paid > 0
        fields, parts = adl_rules.allocate(c.symbol, record["id"], str(qty - k), self._queue(c, record["id"], qty - k))
        record.update(fields)
        for part in parts:
            part["time"] = record["time"]  # (allocated as it happened)
        return [record, *parts]

    def _queue(self, c: DemoContract, liquidation_id: str, need: int) -> list:
        """Opposing positions in profit, of demo accounts, holding more than ``need`` lots."""
        rng = self.queue_rng
        n = rng.randint(8, 40)
        base = max(1, need * 13 // (10 * n) + 1)
        accounts = rng.sample(range(100_000), n + 1)
        sizes = [rng.randint(1, 2 * base) for _ in range(n)]
        if sum(sizes) <= need:
            sizes.append(need - sum(sizes) + 1)
        queue = []
        for account, size in zip(accounts, sizes):
            commitment = adl_rules.position_commitment(demo_account(account), c.symbol, liquidation_id)
            queue.append(adl_rules.QueuedPosition(commitment, str(size), fund.decimal_str(rng.randint(1, 4000), 4),
                                                  str(rng.randint(1, 50))))
        return queue

    def _liquidation(self, i: int, ms: int, c: DemoContract, side: str, qty: int,
                     prices: tuple[int, int, int]) -> dict:
        mark, bankruptcy, fill = prices
        return {
            "kind": "liquidation",
            "contract": c.symbol,
            "id": f"L-{i + 1:07d}",
            "side": side,
            "qty": str(qty),
            "bankruptcy_price": price_str(bankruptcy, c),
            "fill_price": price_str(fill, c),
            "mark_price": price_str(mark, c),
            "time": time_str(ms),
        }

    # -- the run -----------------------------------------------------------------------

    def records(self):
        """Yield the contract records, then the liquidations (an ADL's with its allocation)."""
        t0 = time_str(0)
        for c in CONTRACTS:
            yield c.record(t0)
        crash = self.crash
        others = [a for a in self.market.assets if a != crash.asset]
        # the rest of the market follows the crash: this much lower each step (ppm)
        pull = {a: -self.rng.randint(20_000, 50_000) // crash.length for a in others}
        ms = 0
        for i in range(self.n):
            if crash.start <= i < crash.start + crash.length:
                ms, records = self._crash_liquidation(i, ms, pull)
            else:
                ms, records = self._calm_liquidation(i, ms)
            yield from records

    def live_liquidation(self, i: int, ms: int) -> tuple[int, list[dict]]:
        """A calm-market liquidation ``i``, after the simulated run (the
        live demo's risk engine): its time and records."""
        return self._calm_liquidation(i, ms)

    def _calm_liquidation(self, i: int, ms: int) -> tuple[int, list[dict]]:
        """Liquidation ``i`` outside the crash, ``ms`` after the start of the
        previous one; returns its time and record."""
        rng, market = self.rng, self.market
        crash_c = self.by_symbol[self.crash.contract]
        ms += rng.randint(1_000, 110_000)
        market.step()
        c = CONTRACTS[_choose(rng, self.cumulative)]
        if i == self.crash.start - 1 and self.balance[crash_c.symbol] == 0:
            c = crash_c  # a tiny run: give the crashing fund something to lose
        side = "long" if rng.randrange(2) else "short"
        outcome = "shortfall" if rng.randrange(100) < SHORTFALL_PCT else "surplus"
        if c is crash_c and self.balance[c.symbol] == 0:
            outcome = "surplus"
        qty = _qty_for(rng, c, market.mark[c.asset] // 10 ** (PRICE_DIGITS - c.tick_digits))
        prices = self._prices(c, side, outcome)
        if outcome == "surplus" and prices[2] == prices[1]:
            mark, bankruptcy, fill = prices
            prices = (mark, bankruptcy, fill + (1 if side == "long" else -1))
        return ms, self._record(i, ms, c, side, qty, prices)

    def _crash_liquidation(self, i: int, ms: int, pull: dict[str, int]) -> tuple[int, list[dict]]:
        """Liquidation ``i`` during the crash: the crashing asset falls step
        by step, the others by ``pull``, and most liquidations are longs on
        the crashing contract filled far beyond bankruptcy."""
        rng, market, crash = self.rng, self.market, self.crash
        crash_c = self.by_symbol[crash.contract]
        j = i - crash.start
        if j == 0:
            crash.open_price = market.mark[crash.asset]
            crash.start_time = time_str(ms)
        ms += rng.randint(200, 9_000)
        market.step(pull)
        target = crash.open_price * (PPM - crash.drop_ppm * (j + 1) // crash.length) // PPM
        market.mark[crash.asset] = max(1, target * (PPM + rng.randint(-3_000, 3_000)) // PPM)
        crash.low_price = min(crash.low_price or market.mark[crash.asset], market.mark[crash.asset])
        crash.end_time = time_str(ms)
        on_crash = rng.randrange(100) < CRASH_SHARE_PCT
        c = crash_c if on_crash else CONTRACTS[_choose(rng, self.cumulative)]
        side = "long" if rng.randrange(100) < 92 else "short"
        if on_crash and side == "long":
            outcome = "crash"
            crash.longs += 1
        else:
            outcome = "shortfall" if rng.randrange(100) < 3 * SHORTFALL_PCT else "surplus"
        qty = _qty_for(rng, c, market.mark[c.asset] // 10 ** (PRICE_DIGITS - c.tick_digits), 3)
        prices = self._prices(c, side, outcome)
        if j < crash.length - 1:
            return ms, self._record(i, ms, c, side, qty, prices)
        c, side, qty, prices = self._bottom_of_cascade(c, side, qty, prices, on_crash and side == "long")
        record = self._record(i, ms, c, side, qty, prices)
        market.anchor[crash.asset] = crash.low_price * (PPM + rng.randint(50_000, 150_000)) // PPM
        return ms, record

    def _bottom_of_cascade(self, c: DemoContract, side: str, qty: int, prices: tuple[int, int, int],
                           crash_long: bool) -> tuple[DemoContract, str, int, tuple[int, int, int]]:
        """The crash's last liquidation, made to drain the crashing fund if
        nothing has yet: a whale's long position, large enough to empty the
        fund whatever came before."""
        if self.drained:
            return c, side, qty, prices
        if crash_long:
            if self.balance[c.symbol] > 0:
                _, bankruptcy, fill = prices
                one = self._delta(c, side, 1, bankruptcy, fill)
                qty = max(qty, -(self.balance[c.symbol] * 3 // 2) // one + 1)
            return c, side, qty, prices
        c, side = self.by_symbol[self.crash.contract], "long"
        self.crash.longs += 1
        prices = self._prices(c, side, "crash")
        _, bankruptcy, fill = prices
        one = self._delta(c, side, 1, bankruptcy, fill)
        qty = max(1, -(self.balance[c.symbol] * 3 // 2) // one + 1)
        return c, side, qty, prices


def write_jsonl(path: str, records) -> int:
    """Write records as JSON Lines; returns the number of lines."""
    n = 0
    with open(path, "w", encoding="ascii", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
            n += 1
    return n

