"""``fundledger demo``: the whole story on a simulated market.

:func:`run_demo` builds, in a new directory:

* ``fund.db`` and ``fund.key``: a ledger for the log
  ``demo.fundledger.example/insurance`` and its signing key, plus
  ``fund.vkey``, the verifier key an auditor pins;
* ``liquidations.jsonl``: the simulated market, as ``fundledger import``
  input (ten contract records, then the liquidations). It is also a sample
  input file for users;
* the ledger, in format 2 (docs/FORMAT.md: each fund checkable on its own),
  built by importing that file, with a signed checkpoint after every tenth of it; the first is kept as ``first.checkpoint`` (what an
  auditor would have saved that day);
* ``export/``: the static C2SP tlog-tiles publication, with the chains and
  heads that the light check of one fund reads;

then verifies the database and the export (against ``first.checkpoint``)
and prints a summary with the commands to try next.

The market and its liquidations are simulated by :mod:`ledger.ops.market`
(deterministic for a seed); this module builds the ledger from them, checks
the story it tells and prints it.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import shlex
import time as wallclock
from typing import Callable

from ledger.ops import api
from ledger.ops.market import CONTRACTS, Simulation, mark_str, time_str, write_jsonl
from ledger.rules import fund
from ledger.errors import InputError, InvariantError

ORIGIN = "demo.fundledger.example/insurance"


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
        if paid > 0 and adl > 0 and (bal == 0 or b'"adl_qty":' in bytes(rec["data"])):  # (a lot contract: a remainder)
            events.append({k: rec[k] for k in ("seq", "time", "contract", "id", "side", "qty",
                                               "bankruptcy_price", "fill_price", "delta", "paid", "adl")})
    return events


# --- the demo ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DemoPaths:
    """Where the demo writes each of its files, under ``directory``."""

    directory: str
    db: str
    key: str
    vkey: str
    liquidations: str
    first_checkpoint: str
    export: str

    @classmethod
    def under(cls, directory: str) -> DemoPaths:
        def j(name: str) -> str:
            return os.path.join(directory, name)

        return cls(directory, j("fund.db"), j("fund.key"), j("fund.vkey"), j("liquidations.jsonl"),
                   j("first.checkpoint"), j("export"))

    def check_new(self) -> None:
        """InputError unless the directory can take a new demo (no ledger,
        no export in it)."""
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise InputError(f"{self.directory} exists and is not a directory")
        for p in (self.db, self.key):
            if os.path.exists(p):
                raise InputError(f"{p} already exists: the demo needs a directory without a ledger (choose another --dir)")
        if os.path.isdir(self.export) and os.listdir(self.export):
            raise InputError(f"{self.export} is not empty: the demo needs a directory without an export")


def run_demo(directory: str, seed: int = 2026, liquidations: int = 3000, echo: Callable[[str], None] = print) -> dict:
    """Build the demo in ``directory`` (see the module docstring); returns a summary."""
    began = wallclock.monotonic()
    paths = DemoPaths.under(directory)
    paths.check_new()
    os.makedirs(directory, exist_ok=True)

    # 1. the market, as import input
    sim = Simulation(seed, liquidations)
    lines = write_jsonl(paths.liquidations, sim.records())
    if not sim.drained:
        raise InvariantError("the simulated crash drained no fund")

    # 2. a ledger, the import, a checkpoint after every tenth; 3. verify, export
    store, signer = api.init_ledger(paths.db, paths.key, ORIGIN, log_format=2)
    try:
        vkey = signer.verifier().vkey()
        with open(paths.vkey, "w", encoding="ascii") as f:
            f.write(vkey + "\n")
        checkpoints = _import_with_checkpoints(store, signer, paths, lines)
        drains = _drain_events(store)
        if not drains:
            raise InvariantError("the ledger records no fund drained into ADL")
        report, exported = _verify_and_export(store, paths, vkey)
    finally:
        store.close()
    elapsed = wallclock.monotonic() - began

    # 4. the summary
    funds = [report.book.funds[c.symbol] for c in CONTRACTS]
    summary = {
        "directory": directory,
        "origin": ORIGIN,
        "vkey": vkey,
        "seed": seed,
        "liquidations": liquidations,
        "tree_size": report.tree_size,
        "root": base64.b64encode(report.root).decode(),
        "contracts": [f.summary() for f in funds],
        "drained": sorted({e["contract"] for e in drains}),
        "drain_events": drains,
        "crash": _crash_summary(sim),
        "totals_usd": _totals_usd(funds),
        "checkpoints": checkpoints,
        "export_files": exported.files_written,
        "paths": dataclasses.asdict(paths),
    }
    _echo_summary(summary, funds, echo, elapsed)
    return summary


def _import_with_checkpoints(store, signer, paths: DemoPaths, lines: int) -> list[int]:
    """Import the market file, signing a checkpoint after every tenth of its
    ``lines`` (the first kept in ``paths.first_checkpoint``) and one at the
    end; returns the checkpoints' tree sizes."""
    from ledger.store.store import MAX_BATCH

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
                    with open(paths.first_checkpoint, "wb") as f:
                        f.write(signed)
                checkpoints.append(size)
            while next_mark <= done:
                next_mark += tenth

    with open(paths.liquidations, "rb") as f:
        result = api.import_records(store, signer, f, progress=on_batch, batch_size=batch)
    if result.appended != lines or result.duplicates:
        raise InvariantError(f"the import appended {result.appended} of {lines} records")
    size, _, created = api.checkpoint(store, signer)
    if created:
        checkpoints.append(size)
    return checkpoints


def _verify_and_export(store, paths: DemoPaths, vkey: str):
    """Verify the database, export it, and verify the export against the
    first checkpoint; ``(database report, export result)``."""
    from publish.export import export

    from ledger.verify.run import verify_path

    report = verify_path(paths.db)
    exported = export(store, paths.export)
    export_report = verify_path(paths.export, vkey=vkey, trusted_path=paths.first_checkpoint)
    if (export_report.tree_size, export_report.root) != (report.tree_size, report.root):
        raise InvariantError("the export does not match the ledger")
    return report, exported


def _crash_summary(sim: Simulation) -> dict:
    crash = sim.crash
    c = sim.by_symbol[crash.contract]
    return {
        "asset": crash.asset,
        "contract": crash.contract,
        "from_usd": mark_str(crash.open_price, c),
        "low_usd": mark_str(crash.low_price, c),
        "drop_percent": fund.decimal_str((crash.open_price - crash.low_price) * 1000 // crash.open_price, 1),
        "start": crash.start_time,
        "end": crash.end_time,
        "liquidations": crash.length,
        "long_liquidations": crash.longs,
    }


def _totals_usd(funds: list[fund.Fund]) -> dict[str, str]:
    """Credited, paid, ADL and balance over every fund, in USD (funds with no
    USD price yet count zero)."""
    totals = {"credited": 0, "paid": 0, "adl": 0, "balance": 0}
    for f in funds:
        for k in totals:
            totals[k] += _usd_cents(getattr(f, k), f) or 0
    return {k: fund.amount_str(v, 2) for k, v in totals.items()}


def _echo_summary(s: dict, funds: list[fund.Fund], echo: Callable[[str], None], elapsed: float) -> None:
    q = shlex.quote
    p = s["paths"]
    cr = s["crash"]
    n_contracts = len(s["contracts"])
    first_time = time_str(0)
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
        f"fundledger verify {export_dir} --vkey {vkey} --contract {drained}",
        f"fundledger prove {seq} --db {db} --out {proof}",
        f"fundledger check-receipt {proof} --vkey {vkey}",
        f"fundledger consistency {q(p['first_checkpoint'])} --db {db} --out {cons}",
    ):
        echo(f"  {cmd}")
