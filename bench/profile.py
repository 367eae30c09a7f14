"""Where the time goes: ``scripts/bench --profile``.

Stage timers, not a sampling profiler: the functions that make up an import
and a verification are wrapped (monkeypatched for the run only) with a timer
that charges the time spent inside them to a stage, nested stages excluded
from their parents. A wrapped call costs about 0.5 µs more than a bare one
(calibrated at each report, times the number of timed calls, and taken out
of "other" and the totals), small beside the 100-170 µs an entry takes. What
no stage claims is "other" (the Python glue between them). Each stage is
also shown as its share of the main process's CPU time, which stays
meaningful when other processes compete for the cores. ``--profile`` also
prints cProfile's top functions.

Import stages, per entry, main process (pass 1 checks and builds every
entry while a signing process signs the chain; pass 2 writes), and the CPU
seconds of the signing process:

* pass 1: JSON parse of each input line (``parse_json_object``); the fund
  rules and the entry's text around ``prev`` (``importer.EntryBuilder.build``);
  handing the templates and derived columns to the signer;
* pass 2: reading back the rows the signer made (entries and Merkle
  nodes); SQLite: every statement on the store's connection (prefetch of
  duplicate ids, inserts, summaries, commits);
* other: the loops of both passes.

Verify stages, per entry (1 worker: the chunk checks run inline in the main
process, so every stage is seen; all cores: the main process's stages, and
the CPU seconds of the worker processes):

* read: fetching entries from the source (SQLite rows or entry bundles);
* note parse: splitting the signature line off;
* worker: pattern + rules: ``_fast_liquidation`` less its signature check
  (the canonical-text pattern, the fund rules, the derived columns of a
  database row);
* signature: ``crypto_sign_open`` (a chunk's signatures in one loop after
  its other checks);
* Merkle: leaf hash; worker: chunk summary (``_summarize``);
* main: apply results (``apply_summary``, ``fast``); Merkle tree, hash
  tiles and a database's stored hashes (``leaf``, ``leaves``, ``flush_tree``); the full
  check of contract and key entries and anything a worker left.
"""

from __future__ import annotations

import bisect
import cProfile
import io
import os
import pstats
import resource
import tempfile
import time
from contextlib import contextmanager

from bench import gen

_now = time.perf_counter


class Stages:
    """Exclusive time per stage: a stage entered inside another pauses it."""

    def __init__(self):
        self.total: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.stack: list[list] = []  # [stage, start, child time]

    def wrap(self, stage: str, fn):
        def timed(*args, **kwargs):
            frame = [stage, _now(), 0.0]
            self.stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                el = _now() - frame[1]
                self.stack.pop()
                self.total[stage] = self.total.get(stage, 0.0) + el - frame[2]
                self.calls[stage] = self.calls.get(stage, 0) + 1
                if self.stack:
                    self.stack[-1][2] += el

        timed.__wrapped__ = fn
        return timed

    def wrap_iter(self, stage: str, it):
        """Charge the time spent producing each item of ``it`` to ``stage``."""
        it = iter(it)
        while True:
            t0 = _now()
            try:
                item = next(it)
            except StopIteration:
                self._charge(stage, _now() - t0)
                return
            self._charge(stage, _now() - t0)
            yield item

    def _charge(self, stage: str, el: float) -> None:
        self.total[stage] = self.total.get(stage, 0.0) + el
        self.calls[stage] = self.calls.get(stage, 0) + 1
        if self.stack:
            self.stack[-1][2] += el


@contextmanager
def patched(targets: list[tuple[object, str, str]], stages: Stages):
    """Wrap ``getattr(obj, name)`` for each ``(obj, name, stage)``, restore after."""
    saved = []
    try:
        for obj, name, stage in targets:
            fn = getattr(obj, name)
            saved.append((obj, name, obj.__dict__.get(name, fn) if isinstance(obj, type) else fn))
            setattr(obj, name, stages.wrap(stage, fn))
        yield stages
    finally:
        for obj, name, fn in reversed(saved):
            setattr(obj, name, fn)


class TimedConnection:
    """A sqlite3 connection whose statements are charged to the SQLite stage."""

    def __init__(self, conn, stages: Stages):
        self._conn = conn
        self.execute = stages.wrap("SQLite", conn.execute)
        self.executemany = stages.wrap("SQLite", conn.executemany)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def timer_overhead() -> float:
    """Seconds that one wrapped call costs beyond the bare call (calibration)."""
    st = Stages()

    def f(x):
        return x

    w = st.wrap("calibration", f)
    n = 100_000
    best = float("inf")
    for _ in range(3):
        t0 = _now()
        for i in range(n):
            f(i)
        bare = _now() - t0
        t0 = _now()
        for i in range(n):
            w(i)
        best = min(best, (_now() - t0 - bare) / n)
    return max(0.0, best)


def _report(title: str, stages: Stages, wall: float, n: int, order: list[str], cpu: float,
            extra: list[str] = ()) -> str:
    """Per-stage wall time per entry, its share, and that share of the main
    process's CPU time (robust when other processes compete for the cores).
    The timers' own cost (calls × calibrated overhead) is taken out of
    "other" and of the totals."""
    calls = sum(stages.calls.values())
    ovh = calls * timer_overhead()
    wall_net = wall - ovh
    cpu_net = cpu - ovh * (cpu / wall)
    lines = [title, f"  {'stage':<36} {'wall µs/entry':>13} {'share':>6} {'≈CPU µs/entry':>14}"]
    claimed = 0.0

    def row(label: str, v: float) -> str:
        return f"  {label:<36} {v / n * 1e6:>13.1f} {v / wall_net:>6.0%} {v / wall_net * cpu_net / n * 1e6:>14.1f}"

    for s in order:
        v = stages.total.get(s, 0.0)
        claimed += v
        lines.append(row(s, v))
    lines.append(row("other (glue, loops, dicts)", wall_net - claimed))
    lines.append(f"  {'total':<36} {wall_net / n * 1e6:>13.1f} {'':>6} {cpu_net / n * 1e6:>14.1f}"
                 f"   ({n / wall_net:,.0f} entries/s without the timers; main process CPU {cpu / wall:.0%} of wall)")
    lines.append(f"  (stage timers' own cost, removed above: {calls / n:.0f} timed calls/entry, "
                 f"{ovh / n * 1e6:.1f} µs/entry)")
    lines += [f"  {x}" for x in extra]
    return "\n".join(lines)


def _top(prof: cProfile.Profile, k: int = 18) -> str:
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(k)
    text = s.getvalue()
    keep = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("   Ordered", "         "))]
    return "\n".join("    " + ln[:150] for ln in keep[-(k + 1):])


def profile_import(n: int, with_cprofile: bool = True) -> tuple[str, dict]:
    from ledger.ops import api  # noqa: F401
    from ledger.store import bulk as importer, sign as chainsign  # noqa: F401 - importer: EntryBuilder

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
        jsonl = os.path.join(d, "in.jsonl")
        lines = gen.write_jsonl(jsonl, n)
        st, signer, db, key = gen.new_ledger(os.path.join(d, "l"))
        stages = Stages()
        st.conn = TimedConnection(st.conn, stages)
        targets = [
            (api, "parse_json_object", "pass 1: JSON parse"),
            (importer.EntryBuilder, "build", "pass 1: rules + entry template"),
            (chainsign.ProcessChain, "send", "pass 1: hand over to the signer"),
            (chainsign.InlineChain, "send", "rows + Merkle (in-process chain only)"),
            (chainsign, "crypto_sign", "signing (in-process chain only)"),
            (chainsign.ProcessChain, "recv", "pass 2: rows back from the signer"),
            (chainsign.InlineChain, "recv", "pass 2: rows back from the signer"),
        ]
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        with patched(targets, stages):
            cpu0 = time.process_time()
            t0 = _now()
            with open(jsonl, "rb") as f:
                r = api.import_records(st, signer, f)
            wall = _now() - t0
            cpu = time.process_time() - cpu0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        child = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        order = [
            "pass 1: JSON parse", "pass 1: rules + entry template", "pass 1: hand over to the signer",
            "signing (in-process chain only)", "rows + Merkle (in-process chain only)",
            "pass 2: rows back from the signer", "SQLite",
        ]
        extra = [f"signing process: {child:.1f} CPU s, {child / max(r.appended, 1) * 1e6:.1f} µs/entry "
                 "(Ed25519, base64, leaf hash, Merkle nodes, rows; stages above: main process)"]
        text = _report(f"import of {lines:,} records (api.import_records, in-process, stage timers)",
                       stages, wall, r.appended, order, cpu, extra)
        data = {"entries": r.appended, "wall_s": wall, "cpu_s": cpu, "signer_cpu_s": child,
                "stages_s": dict(stages.total)}
        st.close()
        if with_cprofile:
            st, signer, db, key = gen.new_ledger(os.path.join(d, "l"))
            prof = cProfile.Profile()
            with open(jsonl, "rb") as f:
                prof.enable()
                api.import_records(st, signer, f)
                prof.disable()
            st.close()
            text += "\n  cProfile, top functions by own time (cProfile inflates Python calls):\n" + _top(prof)
    return text, data


def profile_verify(source: str, workers: int, with_cprofile: bool = False) -> tuple[str, dict]:
    from ledger.tlog import merkle
    from ledger.verify import accelerator, database, reference, run, sources

    stages = Stages()
    targets = [
        (accelerator, "_split_signature_line", "note parse (signature line)"),
        (accelerator, "_fast_liquidation", "worker: pattern + rules"),
        (accelerator, "crypto_sign_open", "signature (libsodium)"),
        (reference, "check_signatures", "signature (libsodium)"),
        (merkle, "leaf_hash", "Merkle: leaf hash"),
        (accelerator, "_summarize", "worker: chunk summary"),
        (run._Run, "apply_summary", "main: apply results"),
        (run._Run, "fast", "main: apply results"),
        (run._Run, "leaf", "main: Merkle, tiles, hashes"),
        (run._Run, "leaves", "main: Merkle, tiles, hashes"),
        (database.DbCrossCheck, "flush_tree", "main: Merkle, tiles, hashes"),
        (run._Run, "full", "main: full check (rare)"),
    ]
    orig_rows = {}
    for cls in (database.DbSource, sources.Source):
        orig_rows[cls] = cls.entry_rows

        def entry_rows(self, tree_size, start=0, end=None, _orig=cls.entry_rows):
            return stages.wrap_iter("read entries (source)", _orig(self, tree_size, start, end))

        cls.entry_rows = entry_rows
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = time.process_time()
    try:
        with patched(targets, stages):
            t0 = _now()
            rep = run.verify_path(source, workers=workers)
            wall = _now() - t0
    finally:
        for cls, fn in orig_rows.items():
            cls.entry_rows = fn
    cpu = time.process_time() - cpu0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    n = rep.entries_checked
    order = [
        "read entries (source)", "note parse (signature line)", "worker: pattern + rules",
        "signature (libsodium)", "Merkle: leaf hash", "worker: chunk summary", "main: apply results",
        "main: Merkle, tiles, hashes", "main: full check (rare)",
    ]
    kind = "database" if os.path.isfile(source) else "export"
    extra = ([f"worker processes: {child:.1f} CPU s, {child / n * 1e6:.1f} µs/entry (stages above: main process)"]
             if workers > 1 else [])
    text = _report(f"verify of a {kind}, {n:,} entries, {workers} worker{'s' if workers > 1 else ''} (stage timers)",
                   stages, wall, n, order, cpu, extra)
    if with_cprofile:  # a second run, without the stage timers
        prof = cProfile.Profile()
        prof.enable()
        run.verify_path(source, workers=workers)
        prof.disable()
        text += "\n  cProfile, top functions by own time:\n" + _top(prof)
    return text, {"entries": n, "wall_s": wall, "main_cpu_s": cpu, "workers_cpu_s": child,
                  "stages_s": dict(stages.total)}


def sqlite_breakdown(source_db: str, n: int = 20_000, batch: int = 2000) -> tuple[str, dict]:
    """What the store's inserts cost per entry: the same ``entries`` and
    ``tree`` rows (copied from a benchmark ledger) inserted into fresh
    databases with the store's schema, then without its append-only
    triggers, then without its secondary indexes as well; WAL,
    synchronous=FULL, ``batch`` entries a transaction."""
    import sqlite3

    from ledger.tlog import merkle
    from ledger.store import schema as schema_mod, store as store_mod

    src = schema_mod.Reader.open(source_db)
    rows = []
    for r in src.iter_rows(0):
        rows.append(r)
        if len(rows) >= n:
            break
    n = len(rows)
    tree = src.conn.execute("SELECT id, hash FROM tree WHERE id < ? ORDER BY id",
                            (merkle.stored_hash_count(n),)).fetchall()
    src.close()
    tree_ids = [r[0] for r in tree]
    no_index = "\n".join(ln for ln in schema_mod.SCHEMA.splitlines() if "INDEX" not in ln and "WHERE liquidation_id" not in ln)
    variants = [
        ("store schema, append-only triggers", schema_mod.SCHEMA + schema_mod.TRIGGERS),
        ("  without the triggers", schema_mod.SCHEMA),
        ("  without triggers and secondary indexes", no_index),
    ]
    out, data = [f"SQLite inserts of {n:,} entries ({len(tree):,} tree rows), {batch:,} entries a transaction"], {}
    first = 0.0
    for label, schema in variants:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
            conn = sqlite3.connect(os.path.join(d, "x.db"), isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(schema)
            t_i = 0
            t0 = _now()
            for k in range(0, n, batch):
                part = rows[k:k + batch]
                # the tree rows of these leaves: ids below the next leaf's stored index
                hi = bisect.bisect_left(tree_ids, merkle.stored_hash_count(k + len(part)))
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(store_mod._INSERT_ENTRY, part)
                conn.executemany("INSERT INTO tree (id, hash) VALUES (?, ?)", tree[t_i:hi])
                conn.execute("COMMIT")
                t_i = hi
            el = _now() - t0
            conn.close()
        first = first or el
        data[label.strip()] = el / n * 1e6
        out.append(f"  {label:<44} {el / n * 1e6:>7.1f} µs/entry  ({n / el:,.0f} entries/s)")
    return "\n".join(out), data
