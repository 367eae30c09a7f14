"""Deterministic benchmark input and cached benchmark ledgers.

The input is a synthetic market (independent of ``fundledger demo`` so that
the benchmark's numbers do not move when the demo changes): eleven contracts
(ten linear USDT-margined, one inverse coin-margined) and liquidations with
KuCoin-like lot sizes and prices, about 5% of them shortfalls, every one with
a mark price and an explicit time. Each liquidation becomes an entry of about
480 bytes, the size the raw-limit figures use.

Ledgers are built the way an operator builds them: ``api.init_ledger`` then
``api.import_records`` (durable commits, 2,000 records a transaction) and one
``api.checkpoint``. The large ones take minutes to sign, so they are cached
under ``bench-results/cache/<CACHE_KEY>/ledger-<N>/``; a benchmark that
changes a cached ledger works on a copy.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import time
from random import Random

from ledger.ops import api
from ledger.store import schema as schema_mod

# Bump when the generator changes; the key also carries the store's schema
# version and fundledger's version, so an incompatible ledger is never reused.
GENERATOR_VERSION = "1"

ORIGIN = "bench.fundledger.example/insurance"

# symbol, type, currency, multiplier, scale, price digits, price (USD), lot
CONTRACTS = (
    ("XBTUSDTM", "linear", "USDT", "0.001", 8, 1, 64000, 40),
    ("XBTUSDM", "inverse", "XBT", "1", 8, 1, 64000, 20000),
    ("ETHUSDTM", "linear", "USDT", "0.01", 8, 2, 3100, 80),
    ("SOLUSDTM", "linear", "USDT", "0.1", 8, 3, 145, 300),
    ("XRPUSDTM", "linear", "USDT", "10", 6, 4, 0.52, 500),
    ("DOGEUSDTM", "linear", "USDT", "100", 6, 5, 0.12, 800),
    ("BNBUSDTM", "linear", "USDT", "0.01", 8, 2, 580, 300),
    ("ADAUSDTM", "linear", "USDT", "10", 6, 5, 0.45, 600),
    ("LINKUSDTM", "linear", "USDT", "0.1", 6, 3, 14, 400),
    ("TRXUSDTM", "linear", "USDT", "100", 6, 5, 0.12, 700),
    ("LTCUSDTM", "linear", "USDT", "0.1", 8, 2, 72, 300),
)


def cache_key() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("fundledger")
    except PackageNotFoundError:  # pragma: no cover
        v = "dev"
    return f"g{GENERATOR_VERSION}-schema{schema_mod.SCHEMA_VERSION}-fundledger{v}"


def _time(ms: int) -> str:
    s, ms = divmod(ms, 1000)
    t = time.gmtime(1767225600 + s)  # 2026-01-01T00:00:00Z
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + (f".{ms:03d}".rstrip("0") + "Z" if ms else "Z")


def contract_records() -> list[dict]:
    return [
        {"kind": "contract", "symbol": s, "currency": cur, "scale": scale, "type": typ,
         "multiplier": mult}
        for s, typ, cur, mult, scale, _, _, _ in CONTRACTS
    ]


def liquidation_records(n: int, seed: int = 7, first_id: int = 0, start_ms: int = 1000):
    """``n`` liquidation records, deterministic for (seed, first_id)."""
    rng = Random(f"{seed}-{first_id}")
    ticks = {c[0]: int(c[6] * 10 ** c[5]) for c in CONTRACTS}
    ms = start_ms + first_id * 30_000
    for i in range(first_id, first_id + n):
        sym, _typ, _cur, _mult, _scale, digits, _p, lot = CONTRACTS[rng.randrange(len(CONTRACTS))]
        mark = ticks[sym] = max(10, ticks[sym] * (1_000_000 + rng.randint(-1500, 1500)) // 1_000_000)
        side = "long" if rng.randrange(2) else "short"
        gap = max(1, mark * rng.randint(2500, 12000) // 1_000_000)
        sign = -1 if side == "long" else 1
        bankruptcy = mark + sign * gap
        if rng.randrange(100) < 5:  # shortfall: filled beyond the bankruptcy price
            fill = bankruptcy + sign * max(1, gap * rng.randint(20, 500) // 1000)
        else:  # surplus: between the bankruptcy price and the mark
            fill = bankruptcy - sign * max(1, gap * rng.randint(50, 950) // 1000)
        ms += rng.randint(1000, 59000)
        yield {
            "kind": "liquidation", "contract": sym, "id": f"L-{i + 1:09d}", "side": side,
            "qty": str(rng.randint(1, lot)),
            "bankruptcy_price": _price(bankruptcy, digits), "fill_price": _price(fill, digits),
            "mark_price": _price(mark, digits), "time": _time(ms),
        }


def _price(ticks: int, digits: int) -> str:
    if digits == 0:
        return str(ticks)
    w, f = divmod(ticks, 10**digits)
    f_s = f"{f:0{digits}d}".rstrip("0")
    return f"{w}.{f_s}" if f_s else str(w)


def write_jsonl(path: str, n: int, with_contracts: bool = True, first_id: int = 0) -> int:
    """Write the JSON Lines input of ``n`` liquidations; returns its line count."""
    lines = 0
    with open(path, "w") as f:
        if with_contracts:
            for r in contract_records():
                f.write(json.dumps(r, separators=(",", ":")) + "\n")
                lines += 1
        for r in liquidation_records(n, first_id=first_id):
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
            lines += 1
    return lines


def new_ledger(directory: str):
    """A fresh empty ledger in ``directory``: ``(store, signer, db, key)``."""
    os.makedirs(directory, exist_ok=True)
    db, key = os.path.join(directory, "fund.db"), os.path.join(directory, "fund.key")
    for p in (db, db + "-wal", db + "-shm", key, key + ".anchor", key + ".anchor.ids"):
        if os.path.exists(p):
            os.unlink(p)
    store, signer = api.init_ledger(db, key, ORIGIN)
    return store, signer, db, key


def build_ledger(directory: str, n: int, log=print) -> dict:
    """A ledger of the contracts and ``n`` liquidations, checkpointed."""
    store, signer, db, key = new_ledger(directory)
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", dir=directory, delete=False) as tmp:
        path = tmp.name
    try:
        t0 = time.perf_counter()
        write_jsonl(path, n)
        t_gen = time.perf_counter() - t0
        done = [0]
        last = [time.perf_counter()]

        def progress(k: int) -> None:
            done[0] += k
            if time.perf_counter() - last[0] > 15:
                last[0] = time.perf_counter()
                el = last[0] - t1
                log(f"  ... {done[0]:,} of {n:,} entries signed ({done[0] / el:,.0f}/s)")

        t1 = time.perf_counter()
        with open(path, "rb") as f:
            r = api.import_records(store, signer, f, progress=progress)
        t_import = time.perf_counter() - t1
        api.checkpoint(store, signer)
    finally:
        os.unlink(path)
        store.close()
    info = {"entries": r.tree_size, "generate_s": t_gen, "import_s": t_import,
            "import_rate": r.tree_size / t_import}
    return info


def cached_ledger(root: str, n: int, rebuild: bool = False, log=print) -> tuple[str, str, dict]:
    """``(db, key, info)`` of the cached ledger with ``n`` liquidations,
    building it first if needed."""
    d = os.path.join(root, "cache", cache_key(), f"ledger-{n}")
    marker = os.path.join(d, "complete.json")
    if rebuild and os.path.isdir(d):
        shutil.rmtree(d)
    if not os.path.exists(marker):
        if os.path.isdir(d):
            shutil.rmtree(d)
        log(f"building the cached {n:,}-liquidation ledger in {d} (once; signing takes a while)")
        info = build_ledger(d, n, log)
        info["built"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with open(marker, "w") as f:
            json.dump(info, f, indent=1)
        log(f"  built: {info['entries']:,} entries in {info['import_s']:.0f} s ({info['import_rate']:,.0f}/s)")
    with open(marker) as f:
        info = json.load(f)
    return os.path.join(d, "fund.db"), os.path.join(d, "fund.key"), info


def copy_ledger(db: str, key: str, directory: str) -> tuple[str, str]:
    """A working copy of a (closed, checkpointed) ledger."""
    os.makedirs(directory, exist_ok=True)
    out_db, out_key = os.path.join(directory, "fund.db"), os.path.join(directory, "fund.key")
    for p in (out_db, out_db + "-wal", out_db + "-shm", out_key):
        if os.path.exists(p):
            os.unlink(p)
    # fold any WAL back first so one file is a complete copy
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    shutil.copyfile(db, out_db)
    shutil.copyfile(key, out_key)
    os.chmod(out_key, 0o600)
    return out_db, out_key
