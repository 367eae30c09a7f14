"""``fundledger demo``: the whole story on a simulated market.

:func:`run_demo` builds, in a new directory:

* ``fund.db`` and ``fund.key``: a ledger for the log
  ``demo.fundledger.example/insurance`` and its signing key, plus
  ``fund.vkey``, the verifier key an auditor pins;
* ``liquidations.jsonl``: the simulated market, as ``fundledger import``
  input (ten contract records, then the liquidations). It is also a sample
  input file for users;
* the ledger, built by importing that file, with a signed checkpoint after
  every tenth of it; the first is kept as ``first.checkpoint`` (what an
  auditor would have saved that day);
* ``export/``: the static C2SP tlog-tiles publication;

then verifies the database and the export (against ``first.checkpoint``)
and prints a summary with the commands to try next.

The market. Each asset's mark price starts at its price in
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
prices, which drains that contract's fund to zero and passes the rest to
auto-deleveraging. The run checks, in the simulation and then in the ledger,
that this happened. (Should the cascade fall short, its last liquidation is
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

import base64
import json
import os
import shlex
import time as wallclock
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from random import Random
from typing import Callable

from ledger.ops import api
from ledger.rules import fund
from ledger.errors import InputError, InvariantError

ORIGIN = "demo.fundledger.example/insurance"
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

    def record(self, time: str) -> dict:
        return {
            "kind": "contract",
            "symbol": self.symbol,
            "currency": self.currency,
            "scale": self.scale,
            "type": self.type,
            "multiplier": self.multiplier,
            "time": time,
        }


# KuCoin-like lot sizes: a contract is 0.001 BTC, 0.01 ETH, 10 XRP, ...;
# XBTUSDM is the coin-margined inverse contract worth 1 USD.
CONTRACTS: tuple[DemoContract, ...] = (
    DemoContract("XBTUSDTM", "bitcoin", "linear", "USDT", "0.001", 8, 1, 26, 900),
    DemoContract("XBTUSDM", "bitcoin", "inverse", "XBT", "1", 8, 1, 9, 900),
    DemoContract("ETHUSDTM", "ethereum", "linear", "USDT", "0.01", 8, 2, 17, 1200),
    DemoContract("SOLUSDTM", "solana", "linear", "USDT", "0.1", 8, 3, 10, 1600),
    DemoContract("XRPUSDTM", "xrp", "linear", "USDT", "10", 6, 4, 8, 1600),
    DemoContract("DOGEUSDTM", "dogecoin", "linear", "USDT", "100", 6, 5, 8, 1800),
    DemoContract("BNBUSDTM", "bnb", "linear", "USDT", "0.01", 8, 2, 6, 1100),
    DemoContract("ADAUSDTM", "cardano", "linear", "USDT", "10", 6, 5, 6, 1700),
    DemoContract("LINKUSDTM", "chainlink", "linear", "USDT", "0.1", 6, 3, 6, 1700),
    DemoContract("TRXUSDTM", "tron", "linear", "USDT", "100", 6, 5, 4, 1100),
)


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


def _time_str(ms: int) -> str:
    t = START + timedelta(milliseconds=ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{t.microsecond // 1000:03d}Z"


def _price_str(ticks: int, c: DemoContract) -> str:
    return fund.decimal_str(ticks, c.tick_digits)


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

    def _record(self, i: int, ms: int, c: DemoContract, side: str, qty: int, prices: tuple[int, int, int]) -> dict:
        mark, bankruptcy, fill = prices
        delta = self._delta(c, side, qty, bankruptcy, fill)
        b = self.balance[c.symbol]
        if delta >= 0:
            self.balance[c.symbol] = b + delta
        else:
            paid = min(-delta, b)
            if paid > 0 and paid == b and -delta > paid:
                self.drained = True
            self.balance[c.symbol] = b - paid
        return {
            "kind": "liquidation",
            "contract": c.symbol,
            "id": f"L-{i + 1:07d}",
            "side": side,
            "qty": str(qty),
            "bankruptcy_price": _price_str(bankruptcy, c),
            "fill_price": _price_str(fill, c),
            "mark_price": _price_str(mark, c),
            "time": _time_str(ms),
        }

    # -- the run -----------------------------------------------------------------------

    def records(self):
        """Yield the contract records, then the liquidations."""
        rng, market, crash = self.rng, self.market, self.crash
        t0 = _time_str(0)
        for c in CONTRACTS:
            yield c.record(t0)
        crash_c = self.by_symbol[crash.contract]
        others = [a for a in market.assets if a != crash.asset]
        sympathy = {a: rng.randint(20_000, 50_000) for a in others}  # the rest of the market follows
        ms = 0
        for i in range(self.n):
            in_crash = crash.start <= i < crash.start + crash.length
            if in_crash:
                j = i - crash.start
                if j == 0:
                    crash.open_price = market.mark[crash.asset]
                    crash.start_time = _time_str(ms)
                ms += rng.randint(200, 9_000)
                market.step({a: -sympathy[a] // crash.length for a in others})
                target = crash.open_price * (PPM - crash.drop_ppm * (j + 1) // crash.length) // PPM
                market.mark[crash.asset] = max(1, target * (PPM + rng.randint(-3_000, 3_000)) // PPM)
                crash.low_price = min(crash.low_price or market.mark[crash.asset], market.mark[crash.asset])
                crash.end_time = _time_str(ms)
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
                last = j == crash.length - 1
                if last and on_crash and side == "long" and not self.drained and self.balance[c.symbol] > 0:
                    # the bottom of the cascade: a whale's position, large
                    # enough to empty the fund whatever came before
                    _, bankruptcy, fill = prices
                    one = self._delta(c, side, 1, bankruptcy, fill)
                    qty = max(qty, -(self.balance[c.symbol] * 3 // 2) // one + 1)
                if last and not self.drained and not (on_crash and side == "long"):
                    c, side, outcome = crash_c, "long", "crash"
                    crash.longs += 1
                    prices = self._prices(c, side, outcome)
                    _, bankruptcy, fill = prices
                    one = self._delta(c, side, 1, bankruptcy, fill)
                    qty = max(1, -(self.balance[c.symbol] * 3 // 2) // one + 1)
                yield self._record(i, ms, c, side, qty, prices)
                if last:
                    market.anchor[crash.asset] = crash.low_price * (PPM + rng.randint(50_000, 150_000)) // PPM
                continue
            ms += rng.randint(1_000, 110_000)
            market.step()
            c = CONTRACTS[_choose(rng, self.cumulative)]
            if i == crash.start - 1 and self.balance[crash.contract] == 0:
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
            yield self._record(i, ms, c, side, qty, prices)


def write_jsonl(path: str, records) -> int:
    """Write records as JSON Lines; returns the number of lines."""
    n = 0
    with open(path, "w", encoding="ascii", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
            n += 1
    return n


# --- reporting ---------------------------------------------------------------------------


def _usd_cents(units: int, f: fund.Fund) -> int | None:
    c = f.contract
    if c.currency in fund.USD_STABLE:
        return units * 100 // 10**c.scale
    if f.last_price is None:
        return None
    p_n, p_k = fund.parse_positive(f.last_price, "price")
    return units * p_n * 100 // 10 ** (c.scale + p_k)


def _usd(cents: int | None) -> str:
    if cents is None:
        return "-"
    whole, frac = divmod(cents, 100)
    return f"${whole:,}.{frac:02d}"


def _drain_events(store) -> list[dict]:
    """Liquidations, read back from the ledger, whose payout emptied the
    fund while ADL took the rest."""
    scales = {r["symbol"]: r["scale"] for r in store.contract_rows()}
    events = []
    for row in store.iter_rows():
        rec = dict(zip(("seq", "data", "leaf_hash", "time", "kind", "contract", "id", "side", "qty",
                        "bankruptcy_price", "fill_price", "mark_price", "delta", "paid", "adl", "balance"), row))
        if rec["kind"] != "liquidation":
            continue
        s = scales[rec["contract"]]
        paid, adl, bal = (fund.parse_amount(rec[k], s) for k in ("paid", "adl", "balance"))
        if paid > 0 and adl > 0 and bal == 0:
            events.append({k: rec[k] for k in ("seq", "time", "contract", "id", "side", "qty",
                                               "bankruptcy_price", "fill_price", "delta", "paid", "adl")})
    return events


def _fmt_price(units: int, c: DemoContract) -> str:
    """A mark price (10**-8 USD) at the contract's tick."""
    return _price_str(units // 10 ** (PRICE_DIGITS - c.tick_digits), c)


# --- the demo ------------------------------------------------------------------------------


def run_demo(directory: str, seed: int = 2026, liquidations: int = 3000, echo: Callable[[str], None] = print) -> dict:
    """Build the demo in ``directory`` (see the module docstring); returns a summary."""
    from publish.export import export

    from ledger.store.store import MAX_BATCH
    from ledger.verify.run import verify_path

    began = wallclock.monotonic()
    db = os.path.join(directory, "fund.db")
    key = os.path.join(directory, "fund.key")
    vkey_path = os.path.join(directory, "fund.vkey")
    jsonl = os.path.join(directory, "liquidations.jsonl")
    first_cp = os.path.join(directory, "first.checkpoint")
    export_dir = os.path.join(directory, "export")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise InputError(f"{directory} exists and is not a directory")
    for p in (db, key):
        if os.path.exists(p):
            raise InputError(f"{p} already exists: the demo needs a directory without a ledger (choose another --dir)")
    if os.path.isdir(export_dir) and os.listdir(export_dir):
        raise InputError(f"{export_dir} is not empty: the demo needs a directory without an export")
    os.makedirs(directory, exist_ok=True)

    # 1. the market, as import input
    sim = Simulation(seed, liquidations)
    lines = write_jsonl(jsonl, sim.records())
    crash = sim.crash
    if not sim.drained:
        raise InvariantError("the simulated crash drained no fund")

    # 2. a ledger, the import, a checkpoint after every tenth
    store, signer = api.init_ledger(db, key, ORIGIN)
    try:
        vkey = signer.verifier().vkey()
        with open(vkey_path, "w", encoding="ascii") as f:
            f.write(vkey + "\n")
        tenth = -(-lines // 10)
        batch = max(1, min(tenth, MAX_BATCH))
        checkpoints: list[int] = []
        done = 0
        next_mark = tenth

        def on_batch(n: int) -> None:
            nonlocal done, next_mark
            done += n
            if done >= next_mark or done == lines:
                size, signed, created = api.checkpoint(store, signer)
                if created:
                    if not checkpoints:
                        with open(first_cp, "wb") as f:
                            f.write(signed)
                    checkpoints.append(size)
                while next_mark <= done:
                    next_mark += tenth

        with open(jsonl, "rb") as f:
            result = api.import_records(store, signer, f, progress=on_batch, batch_size=batch)
        if result.appended != lines or result.duplicates:
            raise InvariantError(f"the import appended {result.appended} of {lines} records")
        size, _, created = api.checkpoint(store, signer)
        if created:
            checkpoints.append(size)

        drains = _drain_events(store)
        if not drains:
            raise InvariantError("the ledger records no fund drained into ADL")

        # 3. verify, export, verify the export against the first checkpoint
        report = verify_path(db)
        exported = export(store, export_dir)
        export_report = verify_path(export_dir, vkey=vkey, trusted_path=first_cp)
        if (export_report.tree_size, export_report.root) != (report.tree_size, report.root):
            raise InvariantError("the export does not match the ledger")
    finally:
        store.close()
    elapsed = wallclock.monotonic() - began

    # 4. the summary
    root = base64.b64encode(report.root).decode()
    funds = [report.book.funds[c.symbol] for c in CONTRACTS]
    contracts = [f.summary() for f in funds]
    totals = {"credited": 0, "paid": 0, "adl": 0, "balance": 0}
    for f in funds:
        for k in totals:
            totals[k] += _usd_cents(getattr(f, k), f) or 0
    drained = sorted({e["contract"] for e in drains})
    summary = {
        "directory": directory,
        "origin": ORIGIN,
        "vkey": vkey,
        "seed": seed,
        "liquidations": liquidations,
        "tree_size": report.tree_size,
        "root": root,
        "contracts": contracts,
        "drained": drained,
        "drain_events": drains,
        "crash": {
            "asset": crash.asset,
            "contract": crash.contract,
            "from_usd": _fmt_price(crash.open_price, sim.by_symbol[crash.contract]),
            "low_usd": _fmt_price(crash.low_price, sim.by_symbol[crash.contract]),
            "drop_percent": fund.decimal_str((crash.open_price - crash.low_price) * 1000 // crash.open_price, 1),
            "start": crash.start_time,
            "end": crash.end_time,
            "liquidations": crash.length,
            "long_liquidations": crash.longs,
        },
        "totals_usd": {k: fund.amount_str(v, 2) for k, v in totals.items()},
        "checkpoints": checkpoints,
        "export_files": exported.files_written,
        "paths": {
            "directory": directory,
            "db": db,
            "key": key,
            "vkey": vkey_path,
            "liquidations": jsonl,
            "first_checkpoint": first_cp,
            "export": export_dir,
        },
    }
    _echo_summary(summary, funds, echo, elapsed)
    return summary


def _echo_summary(s: dict, funds: list[fund.Fund], echo: Callable[[str], None], elapsed: float) -> None:
    q = shlex.quote
    p = s["paths"]
    cr = s["crash"]
    n_contracts = len(s["contracts"])
    first_time = _time_str(0)
    last_time = max((f.last_time or "") for f in funds)
    echo(f"fundledger demo (seed {s['seed']}) in {p['directory']}: {s['liquidations']} liquidations on "
         f"{n_contracts} contracts, simulated from {first_time} to {last_time}")
    echo(f"  market input: {p['liquidations']} ({s['tree_size']} records, `fundledger import` format)")
    echo(f"  the crash: {cr['asset']} fell {cr['drop_percent']}% (${cr['from_usd']} -> ${cr['low_usd']}) "
         f"from {cr['start']} to {cr['end']}; {cr['long_liquidations']} long liquidations on {cr['contract']} "
         f"filled far below their bankruptcy prices")
    echo("")
    header = f"  {'contract':<10} {'type':<7} {'liqs':>5} {'balance':>22} {'ccy':<4} {'USD':>16} " \
             f"{'surplus':>18} {'paid out':>18} {'ADL':>18}"
    echo(header)
    for f in funds:
        c = f.contract
        sm = f.summary()
        echo(f"  {c.symbol:<10} {c.type:<7} {f.liquidations:>5} {sm['balance']:>22} {c.currency:<4} "
             f"{_usd(_usd_cents(f.balance, f)):>16} {sm['credited']:>18} {sm['paid']:>18} {sm['adl']:>18}")
    t = s["totals_usd"]
    cents = {k: fund.parse_amount(v, 2) for k, v in t.items()}
    echo(f"  total in USD: balance {_usd(cents['balance'])}, surplus {_usd(cents['credited'])}, "
         f"paid out {_usd(cents['paid'])}, ADL {_usd(cents['adl'])}")
    echo("")
    by_symbol = {f.contract.symbol: f for f in funds}
    shown = 3
    for e in s["drain_events"][:shown]:
        cur = by_symbol[e["contract"]].contract.currency
        echo(f"  drained: {e['contract']} fund emptied at seq {e['seq']} ({e['time']}): liquidation {e['id']}, "
             f"{e['side']} {e['qty']} bankrupt at {e['bankruptcy_price']} filled at {e['fill_price']}; "
             f"fund paid {e['paid']} {cur}, ADL took {e['adl']} {cur}")
    if len(s["drain_events"]) > shown:
        echo(f"  ... and {len(s['drain_events']) - shown} more times a payout emptied a fund "
             f"(`fundledger history {s['drain_events'][0]['contract']}`)")
    cps = s["checkpoints"]
    echo(f"  ledger: {s['tree_size']} entries, root {s['root']}")
    echo(f"  {len(cps)} signed checkpoints at sizes {', '.join(map(str, cps))}; the first kept in {p['first_checkpoint']}")
    echo(f"  verified: {p['db']} (signatures, chain, every balance, every checkpoint) and the export "
         f"{p['export']} ({s['export_files']} files) against the first checkpoint")
    echo(f"  done in {elapsed:.1f} s")
    seq = s["drain_events"][0]["seq"] if s["drain_events"] else 0
    db, export_dir, vkey = q(p["db"]), q(p["export"]), q(p["vkey"])
    proof = q(os.path.join(p["directory"], f"entry-{seq}.proof"))
    cons = q(os.path.join(p["directory"], "first-to-latest.consistency"))
    drained = s["drained"][0] if s["drained"] else s["contracts"][0]["contract"]
    echo("")
    echo("next, try:")
    for cmd in (
        f"fundledger serve --db {db}",
        f"fundledger balance --db {db}",
        f"fundledger history {drained} --db {db}",
        f"fundledger verify {db}",
        f"fundledger verify {export_dir} --vkey {vkey} --trusted {q(p['first_checkpoint'])}",
        f"fundledger prove {seq} --db {db} --out {proof}",
        f"fundledger check-receipt {proof} --vkey {vkey}",
        f"fundledger consistency {q(p['first_checkpoint'])} --db {db} --out {cons}",
    ):
        echo(f"  {cmd}")
