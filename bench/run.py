"""fundledger's benchmark: ``scripts/bench [--quick] [--out FILE]``.

Measures, in one run, the machine's raw limits (Ed25519, SHA-256, SQLite)
and then fundledger's append, verify, proof, export, site and memory
figures, each beside its aim. Prints a table and writes it as JSON
(default ``bench-results/latest.json``). docs/PERFORMANCE.md explains every
figure and holds the table of the latest full run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import gen, raw  # noqa: E402
from ledger.ops import api  # noqa: E402
from ledger.tlog.proof import prove_consistency, prove_inclusion  # noqa: E402
from ledger.store.schema import Reader  # noqa: E402
from ledger.store.store import Store  # noqa: E402

RESULTS_VERSION = 1


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}/s"


def fmt_ms(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f} ms"
    if x >= 10:
        return f"{x:.1f} ms"
    return f"{x:.3f} ms" if x < 1 else f"{x:.2f} ms"


def fmt_s(x: float) -> str:
    return f"{x:,.1f} s" if x >= 10 else f"{x:.2f} s"


def human(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n:,}"


class Table:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, section: str, figure: str, value: float | None, unit: str, text: str,
            ratio: str = "", aim: str = "", ok: bool | None = None, note: str = "") -> dict:
        row = {"section": section, "figure": figure, "value": value, "unit": unit, "text": text,
               "ratio": ratio, "aim": aim, "ok": ok, "note": note, "loadavg_1min": round(os.getloadavg()[0], 2)}
        self.rows.append(row)
        mark = "" if ok is None else ("pass" if ok else "MISS")
        log(f"  {figure}: {text}{'  ' + ratio if ratio else ''}{'  [' + aim + '] ' + mark if aim else ''}")
        return row


SECTIONS = ("raw", "append", "verify", "proofs", "export", "site", "light", "memory", "browser", "service",
            "witness", "adl", "ids")


def render(rows: list[dict], markdown: bool = False) -> str:
    head = ("section", "figure", "value", "ratio", "aim", "result")
    rows = sorted(rows, key=lambda r: SECTIONS.index(r["section"]) if r["section"] in SECTIONS else 99)
    data = [
        (r["section"], r["figure"], r["text"], r["ratio"], r["aim"],
         "" if r["ok"] is None else ("pass" if r["ok"] else "MISS"))
        for r in rows
    ]
    if markdown:
        head = head + ("notes",)
        data = [row + (r["note"],) for row, r in zip(data, rows)]
        out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in data]
        return "\n".join(out)
    widths = [max(len(h), *(len(row[i]) for row in data)) if data else len(h) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(row) for row in data])


def header(out: dict) -> str:
    m = out["machine"]
    return "\n".join([
        f"fundledger benchmark ({out['mode']}), {out['started']}, {out['duration_s']:.0f} s",
        f"machine: {m['cpu']}, nproc {m['nproc']}; {m['platform']}",
        f"versions: Python {m['python']}, SQLite {m['sqlite']}, libsodium {m['libsodium']}"
        + (f", {m['openssl']}" if m.get("openssl") else ", cryptography/OpenSSL not importable"),
        f"load average (1 min): {m['loadavg_at_start'][0]:.2f} at start, {m['loadavg_at_end'][0]:.2f} at end",
    ])


DOC = os.path.join(ROOT, "docs", "PERFORMANCE.md")
DOC_START, DOC_END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


def update_docs(out: dict) -> None:
    """Replace the table in docs/PERFORMANCE.md with this run's."""
    if out.get("mode") != "full":
        raise SystemExit("refusing to put a --quick run into docs/PERFORMANCE.md")
    with open(DOC) as f:
        text = f.read()
    i, j = text.find(DOC_START), text.find(DOC_END)
    if i < 0 or j < i:
        raise SystemExit(f"{DOC}: no {DOC_START} ... {DOC_END} markers")
    block = "\n".join([DOC_START, "", "```text", header(out), "```", "", render(out["rows"], True), "", DOC_END])
    with open(DOC, "w") as f:
        f.write(text[:i] + block + text[j + len(DOC_END):])
    print(f"updated {os.path.relpath(DOC)} with the run of {out['started']}")


# --- helpers ----------------------------------------------------------------------


def fundledger_cmd() -> list[str]:
    exe = shutil.which("fundledger", path=os.path.dirname(sys.executable)) or shutil.which("fundledger")
    return [exe] if exe else [sys.executable, "-m", "ledger.cli"]


def run_cli(args: list[str], env: dict | None = None, stdin=None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(fundledger_cmd() + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       env=env, stdin=stdin)
    el = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"fundledger {' '.join(args[:2])} failed ({r.returncode}): {r.stderr.decode()[-400:]}")
    return el


_RUSAGE_WRAPPER = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
    "el = time.perf_counter() - t\n"
    "sys.stderr.write(r.stderr.decode(errors='replace')[-400:])\n"
    "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, el)\n"
)


def run_cli_rss(args: list[str]) -> tuple[float, float]:
    """``fundledger ARGS`` in a fresh wrapper process, so that
    RUSAGE_CHILDREN sees only it (and its own children): ``(wall seconds,
    peak RSS in MiB)``."""
    p = subprocess.run([sys.executable, "-c", _RUSAGE_WRAPPER, *fundledger_cmd(), *args],
                       capture_output=True, text=True)
    out = p.stdout.split()
    if p.returncode != 0 or len(out) != 3 or out[0] != "0":
        raise RuntimeError(f"fundledger {args[0]} failed: {p.stderr[-400:]}")
    return float(out[2]), int(out[1]) / 1024


def append_new(db: str, key: str, n: int, first_id: int) -> float:
    """Import ``n`` new liquidations (ids from ``first_id``) and checkpoint; seconds."""
    from ledger.ops.keys import load_key_file

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as tmp:
        path = tmp.name
    try:
        gen.write_jsonl(path, n, with_contracts=False, first_id=first_id)
        store = Store.open(db)
        signer = load_key_file(key)
        t0 = time.perf_counter()
        with open(path, "rb") as f:
            api.import_records(store, signer, f)
        api.checkpoint(store, signer)
        el = time.perf_counter() - t0
        store.close()
    finally:
        os.unlink(path)
    return el


# --- sections -------------------------------------------------------------------------


def bench_raw(t: Table, quick: bool) -> dict:
    log("raw limits")
    r = raw.measure(quick)
    t.add("raw", "Ed25519 sign, PyNaCl/libsodium, 1 core", r["pynacl"]["sign"], "/s", fmt_rate(r["pynacl"]["sign"]))
    t.add("raw", "Ed25519 verify, PyNaCl/libsodium, 1 core", r["pynacl"]["verify"], "/s",
          fmt_rate(r["pynacl"]["verify"]))
    if r["openssl"]:
        t.add("raw", "Ed25519 sign, cryptography/OpenSSL, 1 core", r["openssl"]["sign"], "/s",
              fmt_rate(r["openssl"]["sign"]), note="comparison only")
        t.add("raw", "Ed25519 verify, cryptography/OpenSSL, 1 core", r["openssl"]["verify"], "/s",
              fmt_rate(r["openssl"]["verify"]), note="comparison only")
    else:
        t.add("raw", "Ed25519, cryptography/OpenSSL", None, "", "not importable")
    t.add("raw", f"SHA-256, hashlib, {raw.MSG_BYTES}-byte messages", r["sha256"]["per_s"], "/s",
          fmt_rate(r["sha256"]["per_s"]))
    t.add("raw", "SHA-256, hashlib, 1 MiB buffers", r["sha256"]["mb_per_s"], "MiB/s",
          f"{r['sha256']['mb_per_s']:,.0f} MiB/s")
    t.add("raw", f"SQLite insert, {raw.MSG_BYTES}-byte blobs, WAL, sync=FULL, 2,000/txn",
          r["sqlite"]["rows_per_s"], "/s", fmt_rate(r["sqlite"]["rows_per_s"]))
    t.add("raw", "SQLite one-row transaction (commit latency)", r["sqlite"]["commit_ms_p50"], "ms",
          fmt_ms(r["sqlite"]["commit_ms_p50"]), note="median of 50")
    return r


def bench_import(t: Table, work: str, n: int, start_sign_rate: float) -> None:
    log(f"append: bulk import of {n:,} liquidations")
    d = os.path.join(work, "import")
    jsonl = os.path.join(work, "import.jsonl")
    lines = gen.write_jsonl(jsonl, n)
    # in-process: the library call the CLI makes; best of 3 fresh ledgers,
    # as the raw rates are best of 3 (other jobs on the machine only slow a
    # run). The raw sign rate is measured again right before each run: the
    # ratio is best import / best of those, figures from the same minutes.
    times, raws = [], []
    for _ in range(3):
        raws.append(raw.pynacl_rate("sign"))
        store, signer, db, key = gen.new_ledger(d)
        t0 = time.perf_counter()
        with open(jsonl, "rb") as f:
            r = api.import_records(store, signer, f)
        times.append(time.perf_counter() - t0)
        store.close()
        shutil.rmtree(d)
        if r.appended != lines:
            raise RuntimeError(f"import appended {r.appended} of {lines}")
    rate, sign_rate = r.appended / min(times), max(raws)
    aim_rate = 0.7 * sign_rate
    t.add("append", f"import, in-process api.import_records ({human(n)})", rate, "/s", fmt_rate(rate),
          f"{rate / sign_rate:.2f} × raw sign", "≥ 0.70 × raw sign", rate >= aim_rate,
          note="best of 3 (raw sign measured before each): " + ", ".join(
              f"{fmt_rate(r.appended / x)} ({fmt_rate(y)})" for x, y in zip(times, raws))
          + f"; raw sign at the start of the run {fmt_rate(start_sign_rate)}")
    # the real CLI on fresh ledgers, best of 3 the same way
    cli_times, cli_raws, rss = [], [], 0.0
    for _ in range(3):
        store, signer, db, key = gen.new_ledger(d)
        store.close()
        cli_raws.append(raw.pynacl_rate("sign"))
        el, peak = run_cli_rss(["import", jsonl, "--db", db, "--key", key])
        cli_times.append(el)
        rss = max(rss, peak)
    rate, cli_raw = lines / min(cli_times), max(cli_raws)
    t.add("append", f"import, CLI `fundledger import` ({human(n)}, process wall time)", rate, "/s",
          fmt_rate(rate), f"{rate / cli_raw:.2f} × raw sign", "≥ 0.70 × raw sign", rate >= 0.7 * cli_raw,
          note="best of 3 (raw sign measured before each): " + ", ".join(
              f"{fmt_rate(lines / x)} ({fmt_rate(y)})" for x, y in zip(cli_times, cli_raws)))
    t.add("memory", f"peak RSS of `fundledger import` ({human(n)} lines)", rss, "MiB", f"{rss:,.0f} MiB")
    os.unlink(jsonl)
    shutil.rmtree(d)


def bench_append_latency(t: Table, db: str, key: str, first_id: int, quick: bool, large: int) -> int:
    """One liquidation at a time on the large log, in-process and by CLI."""
    from ledger.ops.keys import load_key_file

    st = Reader.open(db)
    size = st.size()
    st.close()
    log(f"append: one liquidation at a time on the {size:,}-entry log")
    per_round = 100
    recs = list(gen.liquidation_records(ROUNDS * per_round + 100, first_id=first_id))
    for r in recs:
        r.pop("time")  # as `fundledger liquidation` without --time: the clock's
    store = Store.open(db)
    signer = load_key_file(key)
    rounds = []
    for k in range(ROUNDS):
        lat = []
        for r in recs[k * per_round:(k + 1) * per_round]:
            t0 = time.perf_counter()
            res = api.append_one(store, signer, r)
            lat.append((time.perf_counter() - t0) * 1e3)
            if not res.appended:
                raise RuntimeError("append_one appended nothing")
        rounds.append(lat)
    store.close()
    st = rounds_stats(rounds)
    t.add("append", f"one liquidation, in-process api.append_one, median (on the {human(large)} log)",
          st["p50"], "ms", fmt_ms(st["p50"]), note=spread(st, "p50"))
    t.add("append", f"one liquidation, in-process api.append_one, p95 (on the {human(large)} log)",
          st["p95"], "ms", fmt_ms(st["p95"]), note=spread(st, "p95"))
    runs = []
    for r in recs[ROUNDS * per_round:ROUNDS * per_round + (10 if quick else 30)]:
        args = ["liquidation", r["contract"], "--id", r["id"], "--side", r["side"], "--qty", r["qty"],
                "--bankruptcy-price", r["bankruptcy_price"], "--fill-price", r["fill_price"],
                "--mark-price", r["mark_price"], "--db", db, "--key", key]
        runs.append(run_cli(args) * 1e3)
    t.add("append", f"one liquidation, CLI `fundledger liquidation`, median wall (on the {human(large)} log)",
          statistics.median(runs), "ms", fmt_ms(statistics.median(runs)), note=f"{len(runs)} runs")
    # the same startup cost with nothing to do: how much of it is the interpreter and imports
    boot = statistics.median(run_cli(["--help"]) * 1e3 for _ in range(5))
    t.add("append", "  of which: `fundledger --help` (process start and imports)", boot, "ms", fmt_ms(boot))
    return first_id + ROUNDS * 100 + 100


def bench_verify(t: Table, work: str, db: str, export_dir: str, size: int, raw_verify: float,
                 cores: int) -> str:
    from ledger.verify.run import verify_path

    log(f"verify: full verification of {size:,} entries")
    state = os.path.join(work, "verifier.state")
    for label, src in (("export", export_dir), ("database", db)):
        for workers in (1, cores):
            # all cores: best of 3 runs, as the raw rates and the import
            # (other jobs on the machine only ever slow a run down); for a
            # database the first run also saves the verifier state (--state)
            times, raws = [], []
            for attempt in range(3 if workers == cores else 1):
                raws.append(raw.pynacl_rate("verify"))  # (the same minutes: see bench_import)
                t0 = time.perf_counter()
                rep = verify_path(src, workers=workers, state_path=state if (
                    label == "database" and workers == cores and attempt == 0) else None)
                times.append(time.perf_counter() - t0)
                if rep.tree_size < size:
                    raise RuntimeError(f"verified {rep.tree_size} < {size}")
            el = min(times)
            rate = rep.tree_size / el
            ref = max(raws) * workers
            who = "1 worker" if workers == 1 else f"{workers} workers (all cores)"
            t.add("verify", f"full verify, {label}, {who} ({human(size)})", rate, "/s", fmt_rate(rate),
                  f"{rate / ref:.2f} × raw verify × {workers}",
                  "≥ 0.70 × raw verify × cores" if workers == cores else "",
                  (rate >= 0.7 * max(raws) * cores) if workers == cores else None,
                  note=f"{el:.1f} s" + (f"; best of {len(times)}: " + ", ".join(f"{x:.1f} s" for x in times)
                                         if len(times) > 1 else "")
                  + "; raw verify measured before each: " + ", ".join(fmt_rate(x) for x in raws)
                  + f" (at the start of the run {fmt_rate(raw_verify)})"
                  + (" (the first also saved --state)" if label == "database" and workers == cores else ""))
    return state


def bench_verify_rss(t: Table, db: str, size: int, aim_size: int) -> None:
    log(f"memory: peak RSS of `fundledger verify` at {size:,} entries")
    el, mb = run_cli_rss(["verify", "--db", db, "--json"])
    t.add("memory", f"peak RSS of `fundledger verify --db` ({human(size)})", mb, "MiB", f"{mb:,.0f} MiB",
          aim=f"≤ 150 MB at {human(aim_size)}", ok=mb * 1.048576 <= 150,
          note="largest process: the main one; workers are smaller")
    t.add("verify", f"full verify, CLI `fundledger verify --db`, all cores ({human(size)})", size / el, "/s",
          fmt_rate(size / el), note=f"process wall time {el:.1f} s")


def bench_read_rss(t: Table, db: str, work: str, size: int, aim_size: int) -> None:
    """Peak RSS of the commands that read the whole log or a whole fund."""
    import sqlite3

    out = os.path.join(work, "export-rss")
    if os.path.isdir(out):
        shutil.rmtree(out)
    log(f"memory: peak RSS of `fundledger export` and `history` at {size:,} entries")
    el, mb = run_cli_rss(["export", "--db", db, out])
    shutil.rmtree(out)
    t.add("memory", f"peak RSS of a full `fundledger export` ({human(size)})", mb, "MiB", f"{mb:,.0f} MiB",
          aim=f"≤ 150 MB at {human(aim_size)}", ok=mb * 1.048576 <= 150, note=f"wall time {el:.1f} s")
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    symbol, count = conn.execute("SELECT symbol, liquidations FROM contracts ORDER BY liquidations DESC").fetchone()
    conn.close()
    el, mb = run_cli_rss(["history", "--db", db, symbol, "--json"])
    t.add("memory", f"peak RSS of `fundledger history` of a fund of {count:,} ({human(size)})", mb, "MiB",
          f"{mb:,.0f} MiB", aim=f"≤ 150 MB at {human(aim_size)}", ok=mb * 1.048576 <= 150,
          note=f"wall time {el:.1f} s")


def bench_incremental(t: Table, db: str, key: str, export_dir: str, state: str, first_id: int, large: int) -> int:
    from ledger.verify.run import verify_path
    from publish.export import export

    times = []
    for _ in range(3):  # best of 3: the host is shared
        log("incremental: 1,000 new entries on top of the large log")
        el = append_new(db, key, 1000, first_id)
        first_id += 1000
        log(f"  (appended 1,000 and checkpointed in {el:.2f} s)")
        t0 = time.perf_counter()
        rep = verify_path(db, state_path=state)
        times.append(time.perf_counter() - t0)
        if rep.entries_checked != 1000:
            raise RuntimeError(f"incremental verify checked {rep.entries_checked} entries, not 1000")
    el = min(times)
    t.add("verify", f"incremental verify --state, 1,000 new entries (on the {human(large)} log)", el * 1e3,
          "ms", fmt_ms(el * 1e3), f"{1000 / el:,.0f} entries/s", aim="≤ 200 ms", ok=el <= 0.2,
          note=f"best of {', '.join(fmt_ms(x * 1e3) for x in times)}; state file {os.path.getsize(state) / 1e6:.1f} MB")
    store = Reader.open(db)
    t0 = time.perf_counter()
    r = export(store, export_dir)
    el = time.perf_counter() - t0
    store.close()
    if r.previous_size == 0:
        raise RuntimeError("the export was not incremental")
    t.add("export", f"incremental export, 1,000 new entries (on the {human(large)} log)", el * 1e3, "ms",
          fmt_ms(el * 1e3), note=f"{r.files_written} files")
    return first_id


def bench_export_full(t: Table, db: str, export_dir: str, size: int) -> None:
    from publish.export import export

    log(f"export: full export of {size:,} entries")
    if os.path.isdir(export_dir):
        shutil.rmtree(export_dir)
    store = Reader.open(db)
    t0 = time.perf_counter()
    r = export(store, export_dir, full=True)
    el = time.perf_counter() - t0
    store.close()
    t.add("export", f"full export ({human(size)})", el, "s", fmt_s(el), f"{size / el:,.0f} entries/s",
          note=f"{r.files_written:,} files")


# --- proofs -----------------------------------------------------------------------------


def pymerkle_tree(root: str, db: str, size: int):
    """pymerkle's SqliteTree over the same entry bytes (cached), root checked."""
    from pymerkle import SqliteTree

    path = os.path.join(root, "cache", gen.cache_key(), f"pymerkle-{size}.db")
    if not os.path.exists(path + ".complete"):
        log(f"  building pymerkle's SqliteTree of {size:,} leaves (cached)")
        for p in (path, path + "-journal"):
            if os.path.exists(p):
                os.unlink(p)
        store = Reader.open(db)
        tree = SqliteTree(path)
        tree.append_entries((data for _, data in store.iter_entries(0, size)), chunksize=50_000)
        tree.close()
        store.close()
        open(path + ".complete", "w").close()
    return SqliteTree(path)


ROUNDS = 3  # latency figures: each statistic is the median over this many rounds


def time_each(fn, args: list, budget_s: float) -> list[float]:
    """Milliseconds of each ``fn(*a)``; stops early (after at least 50)
    once ``budget_s`` has passed."""
    out = []
    deadline = time.perf_counter() + budget_s
    for a in args:
        t0 = time.perf_counter()
        fn(*a)
        out.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() > deadline and len(out) >= 50:
            break
    return out


def rounds_stats(rounds: list[list[float]]) -> dict:
    """p50 and p95 of each round, and their medians over the rounds (other
    processes on the machine make single rounds noisy)."""
    p50s = [statistics.median(r) for r in rounds]
    p95s = [pct(r, 95) for r in rounds]
    return {"p50": statistics.median(p50s), "p95": statistics.median(p95s), "p50s": p50s, "p95s": p95s,
            "n": sum(len(r) for r in rounds)}


def spread(st: dict, key: str) -> str:
    vals = st[key + "s"]
    return f"{len(vals)} rounds, {st['n']:,} in all; {key} per round " + ", ".join(fmt_ms(v) for v in vals)


def bench_proofs(t: Table, root: str, sizes: list[int], dbs: dict[int, str], count: int, aim_size: int) -> None:
    for n in sizes:
        db = dbs[n]
        store = Reader.open(db)
        size = store.size()
        log(f"proofs at {size:,} entries ({ROUNDS} rounds of {count:,} random proofs)")
        rng = random.Random(n)
        inc = [[(size, rng.randrange(size), store) for _ in range(count)] for _ in range(ROUNDS)]
        con = [[(size, rng.randrange(1, size), store) for _ in range(count)] for _ in range(ROUNDS)]
        prove_inclusion(size, 0, store)  # open the file
        ours: dict[str, list] = {"inclusion": [], "consistency": []}
        for r in range(ROUNDS):  # fresh random leaves each round: no round re-reads the last one's pages
            ours["inclusion"].append(time_each(prove_inclusion, inc[r], 60))
            ours["consistency"].append(time_each(prove_consistency, con[r], 60))
        ours_root = store.tree_hash(size)
        store.close()
        theirs: dict[str, list] = {}
        note = ""
        try:
            tree = pymerkle_tree(root, db, size)
        except ImportError:
            tree = None
            note = "pymerkle not installed"
        if tree is not None:
            t0 = time.perf_counter()
            pm_root = tree.get_root(size)
            first = time.perf_counter() - t0
            if pm_root != ours_root:
                raise RuntimeError(f"pymerkle's root differs from fundledger's at {size}")
            # warm pymerkle's subroot cache as a long-running server would have it
            warm_args = [(size, rng.randrange(size), None) for _ in range(count)]
            t0 = time.perf_counter()
            warm = time_each(lambda s, i, _: tree.prove_inclusion(i + 1, s), warm_args, 120)
            warm_s = time.perf_counter() - t0
            note = (f"same root as ours; pymerkle measured warm, after get_root ({first:,.1f} s) and "
                    f"{len(warm):,} other random proofs ({warm_s:,.1f} s)")
            theirs = {"inclusion": [], "consistency": []}
            for r in range(ROUNDS):
                theirs["inclusion"].append(time_each(lambda s, i, _: tree.prove_inclusion(i + 1, s), inc[r], 60))
                theirs["consistency"].append(time_each(lambda s, o, _: tree.prove_consistency(o, s), con[r], 60))
            tree.close()
        for kind in ("inclusion", "consistency"):
            o = rounds_stats(ours[kind])
            at_aim = n == aim_size
            t.add("proofs", f"{kind} proof from the database, p50 ({human(n)})", o["p50"], "ms", fmt_ms(o["p50"]),
                  note=spread(o, "p50"))
            ratio = ""
            if kind in theirs:
                th = rounds_stats(theirs[kind])
                r50 = th["p50"] / o["p50"]
                ratio = f"{r50:.1f}× faster than pymerkle"
                t.add("proofs", f"{kind} proof, pymerkle SqliteTree, p50 ({human(n)})", th["p50"], "ms",
                      fmt_ms(th["p50"]), note=f"p95 {fmt_ms(th['p95'])}; {spread(th, 'p50')}; {note}")
                if at_aim:
                    t.add("proofs", f"{kind} proof speed-up over pymerkle, p50 ({human(n)})", r50, "×",
                          f"{r50:.1f}×", aim="≥ 5×", ok=r50 >= 5)
            t.add("proofs", f"{kind} proof from the database, p95 ({human(n)})", o["p95"], "ms", fmt_ms(o["p95"]),
                  ratio, "≤ 1 ms" if at_aim else "", (o["p95"] <= 1.0) if at_aim else None, note=spread(o, "p95"))


# --- site ---------------------------------------------------------------------------------


SITE_PAGES = {
    # name: candidate paths, the first that answers 200 is used
    "home": ["/"],
    "contract": ["/contract/{symbol}", "/contracts/{symbol}", "/fund/{symbol}", "/funds/{symbol}",
                 "/ledger/contracts/{symbol}"],
    "entry": ["/entry/{seq}", "/entries/{seq}", "/e/{seq}", "/ledger/entries/{seq}"],
}


def bench_site(t: Table, db: str, size: int, count: int, aim_size: int) -> None:
    try:
        from publish.site import make_datasette
    except ImportError as e:
        log(f"site: not available ({e})")
        t.add("site", "site", None, "", "not available", note=str(e)[:80])
        return
    log(f"site: pages at {size:,} entries")
    try:
        ds = make_datasette(db)
    except Exception as e:  # noqa: BLE001 - the site is someone else's work in progress
        t.add("site", "site", None, "", "not available", note=f"make_datasette failed: {str(e)[:80]}")
        return
    try:  # pages are measured as visitors see them once the site has verified the log itself
        from publish.site import wait_verified
    except ImportError:
        wait_verified = None
    if wait_verified is not None:
        t0 = time.perf_counter()
        status = wait_verified(ds, 3600).status
        t.add("site", f"site's own first verification ({human(size)})", time.perf_counter() - t0, "s",
              f"{time.perf_counter() - t0:.1f} s", note=f"in the background, before the pages are measured: {status}")
    store = Reader.open(db)
    symbols = [r["symbol"] for r in store.contract_rows()]
    store.close()
    rng = random.Random(size)

    async def run() -> None:
        async def get(path: str):
            return await ds.client.get(path)

        for name, patterns in SITE_PAGES.items():
            chosen = None
            for p in patterns:
                path = p.format(symbol=symbols[0], seq=size // 2)
                r = await get(path)
                if r.status_code == 200:
                    chosen = p
                    break
            if chosen is None:
                t.add("site", f"{name} page", None, "", "not found", note=f"tried {', '.join(patterns)}")
                continue
            cold = []
            if name == "contract":  # a running server has served each fund's page before
                for sym in symbols:
                    t0 = time.perf_counter()
                    await get(chosen.format(symbol=sym, seq=0))
                    cold.append((time.perf_counter() - t0) * 1e3)
            rounds = []
            for _ in range(ROUNDS):
                lat = []
                for i in range(count):
                    path = chosen.format(symbol=symbols[i % len(symbols)], seq=rng.randrange(size))
                    t0 = time.perf_counter()
                    r = await get(path)
                    lat.append((time.perf_counter() - t0) * 1e3)
                    if r.status_code != 200:
                        raise RuntimeError(f"{path}: HTTP {r.status_code}")
                rounds.append(lat)
            st = rounds_stats(rounds)
            label = chosen.replace("{symbol}", "SYMBOL").replace("{seq}", "SEQ")
            t.add("site", f"{name} page {label}, p50 ({human(size)})", st["p50"], "ms", fmt_ms(st["p50"]),
                  note=f"in-process datasette client; {spread(st, 'p50')}"
                  + (f"; first request per fund (cold, not counted) up to {fmt_ms(max(cold))}" if cold else ""))
            t.add("site", f"{name} page {label}, p95 ({human(size)})", st["p95"], "ms", fmt_ms(st["p95"]),
                  aim=f"≤ 100 ms at {human(aim_size)}", ok=st["p95"] <= 100, note=spread(st, "p95"))

    asyncio.run(run())


# --- profile ---------------------------------------------------------------------------------


def run_profile(results_dir: str, work: str, quick: bool, rebuild: bool, out_path: str) -> int:
    from bench import profile
    from publish.export import export

    n_import = 10_000 if quick else 50_000
    n_verify = 10_000 if quick else 100_000
    cores = os.cpu_count() or 1
    texts, data = [], {}
    log(f"profile: import of {n_import:,}")
    text, data["import"] = profile.profile_import(n_import)
    texts.append(text)
    db, _, _ = gen.cached_ledger(results_dir, n_verify, rebuild, log)
    export_dir = os.path.join(work, "export")
    store = Reader.open(db)
    export(store, export_dir, full=True)
    store.close()
    for label, src in (("database", db), ("export", export_dir)):
        for workers in sorted({1, cores}):
            log(f"profile: verify of the {label}, {workers} worker(s)")
            text, data[f"verify_{label}_{workers}"] = profile.profile_verify(src, workers, with_cprofile=False)
            texts.append(text)
    log("profile: SQLite inserts")
    text, data["sqlite"] = profile.sqlite_breakdown(db, min(n_verify, 50_000))
    texts.append(text)
    log("profile: verify of the database, 1 worker, cProfile")
    text, _ = profile.profile_verify(db, 1, with_cprofile=True)
    texts.append("cProfile of verify (database, 1 worker)" + text.split("\n  cProfile", 1)[1])
    shutil.rmtree(work, ignore_errors=True)
    report = "\n\n".join(texts)
    print(report)
    with open(out_path, "w") as f:
        json.dump({"mode": "quick" if quick else "full", "profile": data, "text": report}, f, indent=1)
    print(f"\nwritten to {os.path.relpath(out_path)}")
    return 0


# --- main -----------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes only (10k entries), under a minute")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-results", "latest.json"),
                    help="write the results here as JSON [default: bench-results/latest.json]")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown (for docs/PERFORMANCE.md)")
    ap.add_argument("--render", metavar="JSON", help="print the table of an earlier run's JSON (with --markdown: as Markdown)")
    ap.add_argument("--update-docs", action="store_true",
                    help="with --render: put that run's table into docs/PERFORMANCE.md (between its markers)")
    ap.add_argument("--rebuild-cache", action="store_true", help="rebuild the cached benchmark ledgers")
    ap.add_argument("--profile", action="store_true",
                    help="instead of the benchmark: where the time goes in import and verify (bench/profile.py)")
    ap.add_argument("--large", type=int, default=1_000_000,
                    help="entries in the large log (default 1M; 10M takes about an hour on two cores)")
    ap.add_argument("--only", default="",
                    help="comma-separated sections to run (raw,append,verify,proofs,site,light,lightcheck,browser,"
                         "service,witness,adl,ids,scale)")
    a = ap.parse_args(argv)

    if a.render:
        with open(a.render) as f:
            old = json.load(f)
        if a.update_docs:
            update_docs(old)
            return 0
        print(header(old))
        print()
        print(render(old["rows"], a.markdown))
        return 0
    results_dir = os.path.join(ROOT, "bench-results")
    work = os.path.join(results_dir, "work")
    if os.path.isdir(work):
        shutil.rmtree(work)
    os.makedirs(work)
    only = set(filter(None, a.only.split(",")))
    want = lambda s: not only or s in only  # noqa: E731

    quick = a.quick
    if a.profile:
        return run_profile(results_dir, work, quick, a.rebuild_cache,
                           a.out if a.out != ap.get_default("out") else os.path.join(results_dir, "profile.json"))
    large = 10_000 if quick else a.large
    proof_sizes = [10_000] if quick else [10_000, 100_000, 1_000_000]
    import_n = 10_000 if quick else 100_000
    proof_count = 1000
    site_count = 50 if quick else 200

    started = time.time()
    t = Table()
    r = bench_raw(t, quick) if want("raw") or want("append") or want("verify") else raw.measure(True)
    sign_rate, verify_rate = r["pynacl"]["sign"], r["pynacl"]["verify"]
    cores = os.cpu_count() or 1

    dbs = {}
    needed = (proof_sizes if want("proofs") else []) + (
        [large] if want("verify") or want("site") or want("append") or want("browser") else [])
    for n in sorted(set(needed)):
        db, key, info = gen.cached_ledger(results_dir, n, a.rebuild_cache, log)
        dbs[n] = (db, key, info)

    failures: list[str] = []

    def guarded(section: str, fn, *args, default=None):
        """Run one part; a failure (say, another engineer's change in flight)
        becomes a row and a non-zero exit, and the other parts still run."""
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            failures.append(f"{section}: {e}")
            t.add(section, f"{fn.__name__}", None, "", "FAILED", note=f"{type(e).__name__}: {str(e)[:200]}")
            return default

    if want("append"):
        guarded("append", bench_import, t, work, import_n, sign_rate)

    next_id = large + 1_000_000  # liquidation ids not in the generated log
    db = key = None
    if want("verify") or want("site") or want("append"):
        # the large log: a working copy, changed by the steps below
        db, key = gen.copy_ledger(dbs[large][0], dbs[large][1], os.path.join(work, "large"))
    export_dir = os.path.join(work, "export")
    if want("verify"):
        guarded("export", bench_export_full, t, db, export_dir, large)
        state = guarded("verify", bench_verify, t, work, db, export_dir, large, verify_rate, cores)
        guarded("memory", bench_verify_rss, t, db, large, max(large, 1_000_000))
        guarded("memory", bench_read_rss, t, db, work, large, max(large, 1_000_000))
        if state is not None and os.path.isdir(export_dir):
            next_id = guarded("verify", bench_incremental, t, db, key, export_dir, state, next_id, large,
                              default=next_id + 1000)
    if want("proofs"):
        guarded("proofs", bench_proofs, t, results_dir, proof_sizes, {n: dbs[n][0] for n in proof_sizes},
                proof_count, 10_000 if quick else 1_000_000)
    if want("site"):
        guarded("site", bench_site, t, db, large, site_count, large if quick else 1_000_000)
    if want("append"):
        guarded("append", bench_append_latency, t, db, key, next_id, quick, large)
    if want("light") or want("lightcheck"):
        from bench import light

        if want("light"):
            db2 = guarded("light", light.bench_formats, t, work, large, run_cli)
        else:  # the light checks alone, on one format-2 log
            db2 = guarded("light", light.bench_format_2, t, work, large)
        if db2 is not None:
            guarded("light", light.bench_light_cli, t, work, db2, large, run_cli)
            guarded("light", light.bench_light_browser, t, db2, large)
    if want("browser"):
        from bench import browser

        guarded("browser", browser.bench_replay, t, dbs[large][0], large)

    if want("service"):
        from bench import service

        guarded("service", service.bench_service, t, work)

    if want("ids"):
        from bench import ids as ids_bench

        guarded("ids", ids_bench.bench_ids, t, 1_000_000 if quick else 10_000_000)
    if want("adl"):
        from bench import adl as adl_bench

        guarded("adl", adl_bench.bench_adl, t, work, 20_000 if quick else 200_000)
    if want("witness"):
        from bench import witness as witness_bench

        guarded("witness", witness_bench.bench_witness, t, work, 10_000 if quick else 100_000)

    if want("scale"):
        from bench import scale

        guarded("scale", scale.bench_scale, t, work, large, lambda: raw.pynacl_rate("verify"), cores)

    try:
        load_end = os.getloadavg()
    except OSError:  # pragma: no cover
        load_end = None
    out = {
        "version": RESULTS_VERSION,
        "mode": "quick" if quick else "full",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": dict(r["machine"], loadavg_at_end=load_end),
        "raw": {k: v for k, v in r.items() if k != "machine"},
        "sizes": {"large": large, "proofs": proof_sizes, "import": import_n},
        "cache": {"key": gen.cache_key(), "ledgers": {str(n): v[2] for n, v in dbs.items()}},
        "rows": t.rows,
        "failures": failures,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)

    print(header(out))
    if quick:
        print("quick run: every size is 10k, so the aims set for 1M entries are checked at 10k")
    print()
    print(render(t.rows, a.markdown))
    print()
    print(f"written to {os.path.relpath(a.out)}")
    if failures:
        print("FAILED parts (tracebacks above, on stderr):\n  " + "\n  ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
