"""The scale figures of ``scripts/bench`` (section ``scale``): one format-2
log of ``large`` records, with the fund SMALL of 10,000 entries spread
through it, each command run once as its own process:

* ``fundledger import`` of the whole file: time and peak RSS;
* ``fundledger verify --db --state``: time, peak RSS, and the rate against
  the raw Ed25519 verify rate times the cores, measured just before;
* incremental ``verify --state`` after 1,000 new entries, best of 3;
* a full ``export`` and ``history`` of the largest fund: peak RSS;
* the light check of SMALL from the export (CLI): time and bytes read.

At 10M entries this takes about an hour on two cores and some 20 GB of
disk; it never runs in CI. The log is left in bench-results/scale-N/.
"""

from __future__ import annotations

import os
import shutil

from bench import gen, light


def bench_scale(t, work: str, n: int, raw_verify_rate, cores: int) -> None:
    from bench.run import append_new, fmt_ms, fmt_rate, fmt_s, human, log, run_cli, run_cli_rss

    d = os.path.join(os.path.dirname(work), f"scale-{n}")  # kept, for measuring again by hand
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    db, key, jsonl = os.path.join(d, "fund.db"), os.path.join(d, "fund.key"), os.path.join(d, "records.jsonl")
    log(f"scale: {n:,} records in format 2")
    lines = light._records(jsonl, n)
    run_cli(["init", "--db", db, "--key", key, gen.ORIGIN])
    el, mb = run_cli_rss(["import", "--db", db, "--key", key, jsonl])
    os.unlink(jsonl)
    t.add("scale", f"`fundledger import` of {human(lines)} lines (format 2)", el, "s", fmt_s(el),
          f"{lines / el:,.0f} lines/s", note=f"peak RSS {mb:,.0f} MiB")
    run_cli(["checkpoint", "--db", db, "--key", key])
    rate = raw_verify_rate()
    state = os.path.join(d, "auditor.state")
    el, mb = run_cli_rss(["verify", "--db", db, "--state", state])
    ratio = (n / el) / (rate * cores)
    t.add("scale", f"full verify --db --state, all cores ({human(n)})", n / el, "/s", fmt_rate(n / el),
          f"{ratio:.2f} × raw verify × {cores}", "≥ 0.70 × raw verify × cores", ratio >= 0.70,
          note=f"{el:.0f} s; raw verify {rate:,.0f}/s just before; state file {os.path.getsize(state) / 1e6:,.0f} MB")
    t.add("scale", f"peak RSS of `fundledger verify --db --state` ({human(n)})", mb, "MiB", f"{mb:,.0f} MiB",
          aim="≤ 150 MB", ok=mb * 1.048576 <= 150)
    times, first_id = [], n + 10_000_000
    for _ in range(3):
        append_new(db, key, 1000, first_id)
        first_id += 1000
        times.append(run_cli_rss(["verify", "--db", db, "--state", state])[0])
    t.add("scale", f"incremental verify --state, 1,000 new entries, a process ({human(n)})", min(times) * 1e3,
          "ms", fmt_ms(min(times) * 1e3), aim="≤ 200 ms", ok=min(times) <= 0.2,
          note="best of " + ", ".join(fmt_ms(x * 1e3) for x in times) + " (process start included)")
    _reads(t, d, db, n)


def _reads(t, d: str, db: str, n: int) -> None:
    from bench.run import fmt_s, human, run_cli, run_cli_rss

    out = os.path.join(d, "export")
    el, mb = run_cli_rss(["export", "--db", db, out])
    t.add("scale", f"peak RSS of a full `fundledger export` ({human(n)})", mb, "MiB", f"{mb:,.0f} MiB",
          aim="≤ 150 MB", ok=mb * 1.048576 <= 150, note=f"{el:.0f} s")
    el, mb = run_cli_rss(["history", "--db", db, gen.contract_records()[0]["symbol"], "--json"])
    t.add("scale", f"peak RSS of `fundledger history` of one of the large funds ({human(n)})", mb, "MiB",
          f"{mb:,.0f} MiB", aim="≤ 150 MB", ok=mb * 1.048576 <= 150, note=f"{el:.0f} s")
    times = [run_cli(["verify", out, "--contract", light.SMALL]) for _ in range(3)]
    t.add("scale", f"CLI light check of {light.SMALL} ({human(light.SMALL_ENTRIES)} entries, log of {human(n)})",
          min(times), "s", fmt_s(min(times)), note="best of " + ", ".join(f"{x:.2f}" for x in times))
    shutil.rmtree(out)
