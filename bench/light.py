"""The format-2 figures of ``scripts/bench`` (section ``light``).

* the light check of one fund of 10,000 entries in a log of ``large``
  entries, from an export directory (CLI, in-process for the byte count and
  as a process for the time) and in a real browser (Debian's chromium), with
  the bytes it read: the aim is at most 2 s in the browser at 1M entries;
* the bulk import and the full verify of the same records in format 1 and
  format 2, alternated in the same minutes: the aim is format 2 within 10 %
  of format 1.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from bench import gen
from ledger.ops import api

SMALL = "SMALLUSDTM"
SMALL_ENTRIES = 10_000


def _records(path: str, n: int) -> int:
    """The benchmark's records plus a fund SMALL with SMALL_ENTRIES - 1
    liquidations spread evenly among them."""
    every = max(1, n // SMALL_ENTRIES)
    lines = 0
    with open(path, "w") as f:
        for r in gen.contract_records() + [{"kind": "contract", "symbol": SMALL, "currency": "USDT", "scale": 6,
                                             "type": "linear", "multiplier": "1"}]:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
            lines += 1
        small = 0
        for i, r in enumerate(gen.liquidation_records(n)):
            if i % every == every - 1 and small < SMALL_ENTRIES - 1:
                r = dict(r, contract=SMALL, id=f"S-{i}", qty="1", bankruptcy_price="100", mark_price="100.2",
                         fill_price="100.5" if i % 7 else "99")
                small += 1
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
            lines += 1
    return lines


def _ledger(work: str, jsonl: str, log_format: int) -> tuple[str, float]:
    d = os.path.join(work, f"f{log_format}")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    db, key = os.path.join(d, "fund.db"), os.path.join(d, "fund.key")
    store, signer = api.init_ledger(db, key, gen.ORIGIN, log_format=log_format)
    t0 = time.perf_counter()
    with open(jsonl, "rb") as f:
        api.import_records(store, signer, f)
    took = time.perf_counter() - t0
    api.checkpoint(store, signer)
    store.close()
    return db, took


def bench_formats(t, work: str, n: int, run_cli) -> str:
    """Import and verify ``n`` records in format 1 and 2, alternated, twice;
    returns the format-2 database (kept for the light check)."""
    from bench.run import fmt_s, human, log

    log(f"light: format 1 against format 2, import and verify of {n:,} records")
    jsonl = os.path.join(work, "light.jsonl")
    _records(jsonl, n)
    took: dict[int, list] = {1: [], 2: []}
    verify: dict[int, list] = {1: [], 2: []}
    db2 = None
    for _ in range(2):
        for fmt in (1, 2):
            db, imported = _ledger(work, jsonl, fmt)
            took[fmt].append(imported)
            verify[fmt].append(run_cli(["verify", db]))
            if fmt == 2:
                db2 = db
    for what, runs in (("import", took), ("verify", verify)):
        ratio = min(runs[2]) / min(runs[1])
        t.add("light", f"{what} of {human(n)} records, format 2 against format 1", min(runs[2]), "s",
              fmt_s(min(runs[2])), f"{ratio:.2f} × format 1", "≤ 1.10 × format 1", ratio <= 1.10,
              note=f"alternated, seconds: format 1 {', '.join(f'{x:.2f}' for x in runs[1])}; "
                   f"format 2 {', '.join(f'{x:.2f}' for x in runs[2])}")
    os.unlink(jsonl)
    return db2


def bench_format_2(t, work: str, n: int) -> str:
    """Only the format-2 log of ``n`` records, for the light checks."""
    from bench.run import log

    log(f"light: a format-2 log of {n:,} records")
    jsonl = os.path.join(work, "light.jsonl")
    _records(jsonl, n)
    db, _ = _ledger(work, jsonl, 2)
    os.unlink(jsonl)
    return db


def bench_light_cli(t, work: str, db: str, n: int, run_cli) -> str:
    """The light check of SMALL from an export: time (a process, best of 3)
    and what it read (in-process)."""
    from bench.run import fmt_s, human, log
    from ledger.store.schema import Reader
    from ledger.verify.light import check_fund
    from ledger.verify.sources import DirSource
    from publish.export import export

    out = os.path.join(work, "light-export")
    store = Reader.open(db)
    export(store, out)
    size = store.size()
    store.close()
    log(f"light: the light check of {SMALL} ({SMALL_ENTRIES:,} entries) in a log of {size:,}")
    read = {"files": 0, "bytes": 0}

    class Counted(DirSource):
        def fetch(self, path, limit):
            data = super().fetch(path, limit)
            read["files"] += 1
            read["bytes"] += len(data or b"")
            return data

    r = check_fund(Counted(out), None, SMALL)
    times = [run_cli(["verify", out, "--contract", SMALL]) for _ in range(3)]
    t.add("light", f"CLI light check of one fund ({human(r.entries_checked)} entries, log of {human(n)})",
          min(times), "s", fmt_s(min(times)), f"{read['bytes'] / 1e6:.1f} MB in {read['files']} files",
          note=f"best of 3: {', '.join(f'{x:.2f}' for x in times)}; {r.hash_tiles_read} hash tiles")
    return out


# What a visitor waits: the button clicked in the page, and the verdict
# polled every 10 ms, with the page's own clock from the click event to the
# verdict beside it. (Playwright's page.click and wait_for_selector added
# 0.3 to 0.4 s of their own to a check the page timed at 1.6 s.)
IN_PAGE_CLOCK = """() => {
  const c = window.__fundCheckClock = {click: null, done: null};
  const section = document.getElementById("fund-check");
  document.getElementById("fund-check-run").addEventListener("click", () => { c.click = performance.now(); }, true);
  new MutationObserver(() => {
    const v = section.dataset.verdict;
    if (c.done === null && (v === "verified" || v === "failed")) c.done = performance.now();
  }).observe(section, {attributes: true, attributeFilter: ["data-verdict"]});
}"""


def bench_light_browser(t, db: str, n: int) -> None:
    """The Check this fund button in Debian's chromium on the site (loopback)."""
    from bench.run import human, log

    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium):
        t.add("light", "browser light check", None, "", "skipped", note="no /usr/bin/chromium")
        return
    from playwright.sync_api import sync_playwright

    from publish.site import BackgroundServer

    log("light: the same in chromium")
    args = ["--headless=new", "--no-sandbox", "--disable-gpu"]
    runs = []
    with BackgroundServer(db) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        for _ in range(3):
            page = browser.new_page()
            page.goto(url + "contract/" + SMALL)
            page.evaluate(IN_PAGE_CLOCK)
            t0 = time.perf_counter()
            page.evaluate("document.getElementById('fund-check-run').click()")
            while page.evaluate("window.__fundCheckClock.done") is None:
                if time.perf_counter() - t0 > 600:
                    raise RuntimeError("the fund check did not finish in 10 minutes")
                time.sleep(0.01)
            outside = time.perf_counter() - t0
            inside = page.evaluate("window.__fundCheckClock.done - window.__fundCheckClock.click") / 1000
            runs.append((outside, inside, page.inner_text("#fund-check-status")))
            if page.get_attribute("#fund-check", "data-verdict") != "verified":
                raise RuntimeError(page.inner_text("#fund-check-verdict"))
            page.close()
        browser.close()
    best, _, status = min(runs)
    mb = status.split(" MB")[0].rsplit(" ", 1)[-1]
    t.add("light", f"browser light check of one fund ({human(SMALL_ENTRIES)} entries, log of {human(n)})",
          best, "s", f"{best:.2f} s", f"{mb} MB", "≤ 2 s", best <= 2.0,
          note="click to verdict, best of 3: " + ", ".join(f"{x:.2f}" for x, _, _ in runs)
               + "; on the page's own clock: " + ", ".join(f"{y:.2f}" for _, y, _ in runs))
