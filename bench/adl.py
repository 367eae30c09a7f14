"""The ADL figures of ``scripts/bench`` (section ``adl``).

The same market twice, imported and verified in the same minutes: once on
contracts without a lot (today's rule: a shortfall beyond the balance is one
``adl`` amount), once on lot contracts, where one liquidation in 1,000 is a
shortfall beyond its fund's balance and is allocated over a queue of 50
opposing positions (its minimum ADL computed by the rules; the adl entries
follow it). The figures are records per second of ``api.import_records``
and entries per second of ``verify_path``, and their ratio lot/plain,
measured round after round (plain, lot, plain, lot: the host is shared).
"""

from __future__ import annotations

import os
import shutil
import time

from bench import gen

ADL_EVERY = 1000  # one liquidation in this many triggers ADL
QUEUE = 50  # opposing positions in each ADL event's queue
ROUNDS = 2


def _inputs(n: int) -> tuple[list[dict], list[dict]]:
    """``(plain, lot)`` records: the bench market, and the same on lot
    contracts (lot 1) with every ADL_EVERY-th liquidation a shortfall
    beyond its fund's balance, allocated (its fund's balance followed by
    the rules, as an exchange's engine follows it)."""
    from ledger.rules import adl
    from ledger.rules.fund import FundBook, decimal_str, parse_positive

    plain = gen.contract_records()
    lot = [dict(r, lot="1") for r in plain]
    book = FundBook()
    book.chains.since = 0  # (a format-2 log: lots are allowed)
    for r in lot:
        book.apply(dict(book.build(r), seq=-1, time=None))
        book.link(bytes(32))
    for i, r in enumerate(gen.liquidation_records(n)):
        if i % ADL_EVERY == ADL_EVERY - 1:
            units, digits = parse_positive(r["bankruptcy_price"], "price")
            r = dict(r, side="long", qty="100000", fill_price=decimal_str(max(1, units // 2), digits))
            if book.adl_minimum(r) is None:
                r["qty"] = "10000000"
            queue = [adl.QueuedPosition(adl.position_commitment(adl.account_commitment(f"b-{i}-{j}", "s"),
                                                                r["contract"], r["id"]),
                                        str(10_000_000 // QUEUE + j), f"0.{1 + j % 9}", str(1 + j % 20))
                     for j in range(QUEUE)]
            minimum = book.adl_minimum(r)
            fields, parts = adl.allocate(r["contract"], r["id"], minimum, queue)
            records = [dict(r, **fields), *(dict(p, time=r["time"]) for p in parts)]
            plain.append(r)
        else:
            if book.adl_minimum(r) is not None:  # (a shortfall beyond the balance outside the share: filled at
                r = dict(r, fill_price=r["bankruptcy_price"])  # the bankruptcy price instead, in both inputs)
            records = [r]
            plain.append(r)
        for rec in records:
            fields = book.build(rec)
            fields["seq"], fields["time"] = -1, rec.get("time")
            book.apply(fields)
            book.link(bytes(32))
        lot.extend(records)
    return plain, lot


def _write(path: str, records: list[dict]) -> None:
    import json

    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")


def _round(work: str, name: str, path: str, lines: int) -> tuple[float, float, int]:
    """Import ``path`` into a new format-2 ledger, checkpoint, verify:
    ``(records/s, entries/s, entries)``."""
    from ledger.ops import api
    from ledger.verify.run import verify_path

    d = os.path.join(work, f"adl-{name}")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    db, key = os.path.join(d, "fund.db"), os.path.join(d, "fund.key")
    store, signer = api.init_ledger(db, key, gen.ORIGIN, log_format=2)
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        result = api.import_records(store, signer, f)
    imported = time.perf_counter() - t0
    api.checkpoint(store, signer)
    size = store.size()
    store.close()
    t0 = time.perf_counter()
    verify_path(db)
    verified = time.perf_counter() - t0
    assert result.lines == lines, (result.lines, lines)
    return lines / imported, size / verified, size


def bench_adl(t, work: str, n: int) -> None:
    plain, lot = _inputs(n)
    paths = {}
    for name, records in (("plain", plain), ("lot", lot)):
        paths[name] = (os.path.join(work, f"adl-{name}.jsonl"), len(records))
        _write(paths[name][0], records)
    rates: dict[str, list[tuple[float, float, int]]] = {"plain": [], "lot": []}
    for _ in range(ROUNDS):
        for name in ("plain", "lot"):
            rates[name].append(_round(work, name, *paths[name]))
    best = {name: (max(r[0] for r in rs), max(r[1] for r in rs), rs[0][2]) for name, rs in rates.items()}
    events = n // ADL_EVERY
    for i, what, unit in ((0, "import", "records/s"), (1, "verify", "entries/s")):
        ratio = best["lot"][i] / best["plain"][i]
        t.add("adl", f"{what} with ADL allocations ({n:,} liquidations, {events} ADL events of {QUEUE} positions)",
              best["lot"][i], unit, f"{best['lot'][i]:,.0f} {unit} (without lots: {best['plain'][i]:,.0f})",
              ratio=f"{ratio:.2f}x today's", aim="within 10% of today's", ok=ratio >= 0.9,
              note=f"best of {ROUNDS} rounds each, alternated; {best['lot'][2]:,} entries with lots, "
                   f"{best['plain'][2]:,} without")
