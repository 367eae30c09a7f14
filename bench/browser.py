"""The full replay of /verify in a real browser (section ``browser`` of
``scripts/bench``): entries a second, against WebCrypto's raw Ed25519
verify rate on all the browser's cores, measured in the same minutes.

* raw: the page's own worker (publish/static/verify-worker.js) on every
  core (navigator.hardwareConcurrency), fed batches of one signature of
  the log over and over, for a few seconds; and one worker alone;
* replay: /verify?full=1 from the page load to its verdict, which the page
  also times itself (``data-seconds``).

Raw and replay alternate, twice; the aim is a replay at 0.7 of the raw
rate or better (the signatures are most of the work; the rules, the chain,
the tree and the tiles run on the page's thread beside the workers).
"""

from __future__ import annotations

import os
import time

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu"]

# In the page: the checkpoint's signature, verified by the page's worker on
# `workers` workers (0: one per core) for `seconds`; verdicts do not matter.
RAW_JS = """async ({ seconds, workers }) => {
  const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const vkey = (await (await fetch("/vkey")).text()).trim();
  const pub = b64(vkey.split("+").slice(2).join("+")).subarray(1);
  const cp = new Uint8Array(await (await fetch("/checkpoint", { cache: "no-store" })).arrayBuffer());
  const s = new TextDecoder().decode(cp), i = s.lastIndexOf("\\n\\n");
  const text = cp.subarray(0, new TextEncoder().encode(s.slice(0, i + 1)).length);
  const sig = b64(s.slice(i + 2).split("\\n")[0].split(" ").pop()).subarray(4);
  const items = Array.from({ length: 64 }, () => [pub, sig, text]);
  const n = workers || navigator.hardwareConcurrency;
  let done = 0;
  const t0 = performance.now(), end = t0 + seconds * 1000;
  await Promise.all(Array.from({ length: n }, () => new Promise((resolve) => {
    const w = new Worker("/static/verify-worker.js");
    let inflight = 0;
    const send = () => { inflight++; w.postMessage({ id: 1, items }); };
    w.onmessage = (e) => {
      inflight--;
      done += e.data.oks.length;
      if (performance.now() < end) send();
      else if (!inflight) { w.terminate(); resolve(); }
    };
    send(); send();
  })));
  return { rate: done / ((performance.now() - t0) / 1000), workers: n, cores: navigator.hardwareConcurrency };
}"""


def measure(db: str, rounds: int = 2, raw_seconds: float = 4.0, log=print) -> dict:
    """Raw rates and replays of the site of ``db``, alternated ``rounds`` times."""
    from playwright.sync_api import sync_playwright

    from publish.site import BackgroundServer

    out = {"raw_all": [], "raw_one": [], "replay": [], "entries": None, "cores": None, "mb": None, "heap_mb": None}
    with BackgroundServer(db, verified_timeout=1800) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for r in range(rounds):
                page = browser.new_page()
                page.goto(url + "about")
                one = page.evaluate(RAW_JS, {"seconds": raw_seconds, "workers": 1})
                every = page.evaluate(RAW_JS, {"seconds": raw_seconds, "workers": 0})
                out["raw_one"].append(one["rate"])
                out["raw_all"].append(every["rate"])
                out["cores"] = every["cores"]
                page.goto(url + "verify?full=1")
                page.wait_for_selector("#verify-app[data-verdict]", timeout=3_600_000)
                if page.get_attribute("#verify-app", "data-verdict") != "verified":
                    raise RuntimeError(page.inner_text("#verdict-text"))
                status = page.inner_text("#status")
                out["entries"] = int(status.split("Replayed all ")[1].split(" ")[0].replace(",", ""))
                out["mb"] = float(status.split("(")[1].split(" MB")[0])
                secs = float(page.get_attribute("#verify-app", "data-seconds"))
                out["heap_mb"] = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize / 1e6 : null")
                out["replay"].append(out["entries"] / secs)
                log(f"browser: round {r + 1}: raw {one['rate']:,.0f}/s on 1 worker, {every['rate']:,.0f}/s on "
                    f"{every['workers']}; replay {out['entries']:,} entries in {secs:.1f} s ({out['entries'] / secs:,.0f}/s)")
                page.close()
        finally:
            browser.close()
    return out


def bench_replay(t, db: str, n: int) -> None:
    """The ``browser`` rows of the benchmark table."""
    from bench.run import human, log

    if not os.path.exists(CHROMIUM):
        t.add("browser", "browser full replay", None, "", "skipped", note=f"no {CHROMIUM}")
        return
    log(f"browser: the full replay of /verify at {n:,} entries against the raw Ed25519 rate, alternated")
    t0 = time.perf_counter()
    m = measure(db, log=log)
    best = max(m["replay"])
    raw_all = max(m["raw_all"])
    ratio = best / raw_all
    t.add("browser", f"raw WebCrypto Ed25519 verify, {m['cores']} workers", raw_all, "/s", f"{raw_all:,.0f}/s",
          f"{max(m['raw_one']):,.0f}/s on one worker", note="best of " + ", ".join(f"{x:,.0f}" for x in m["raw_all"]))
    t.add("browser", f"browser full replay of {human(m['entries'])} entries ({m['mb']:.0f} MB)", best, "/s",
          f"{best:,.0f}/s", f"{ratio:.2f} × raw on {m['cores']} cores", "≥ 0.70 × raw", ratio >= 0.70,
          note="best of " + ", ".join(f"{x:,.0f}" for x in m["replay"]) +
          f"; page heap after it {m['heap_mb'] or 0:.0f} MB; {time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(measure(sys.argv[1]), indent=1))
