"""The full replay of /verify in a real browser (section ``browser`` of
``scripts/bench``): entries a second, against WebCrypto's raw Ed25519
verify rate on all the browser's cores, measured in the same minutes.

* raw: the page's own worker (publish/static/verify-worker.js) on every
  core (navigator.hardwareConcurrency), fed batches of one signature of
  the log over and over, for a few seconds; and one worker alone;
* replay: /verify?full=1 from the page load to its verdict, which the page
  also times itself (``data-seconds``).

* floor: what no replay can beat on this machine: every entry bundle and
  hash tile fetched as the replay fetches them, and the last signature of
  each entry with its leaf hash sent to the page's worker, in the messages
  the replay sends; nothing else (no parsing, no rules, no tree).

Raw, floor and replay alternate, twice; the aim is a replay at 0.7 of the
raw rate or better (the signatures are most of the work; the rules, the
chain, the tree and the tiles run on the page's thread beside the workers).
The floor shows how much of the gap is the cost of fetching the log on the
same cores (the browser's network process, and here the server too).
"""

from __future__ import annotations

import os
import time

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu"]

# In the page, at the start of RAW_JS and FLOOR_JS: b64() and the log's public key, `pub`.
LOG_KEY = """  const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const vkey = (await (await fetch("/vkey")).text()).trim();
  const pub = b64(vkey.split("+").slice(2).join("+")).subarray(1);"""

# In the page: the checkpoint's signature, verified by the page's worker on
# `workers` workers (0: one per core) for `seconds`; verdicts do not matter.
RAW_JS = """async ({ seconds, workers }) => {
LOG_KEY
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
}""".replace("LOG_KEY", LOG_KEY)

# In the page: the floor (see above), with `workers` of the page's worker.
FLOOR_JS = """async ({ workers }) => {
  const W = 256, dir = (i) => { const g = [String(i % 1000).padStart(3, "0")];
    for (i = Math.floor(i / 1000); i > 0; i = Math.floor(i / 1000)) g.unshift("x" + String(i % 1000).padStart(3, "0"));
    return g.join("/"); };
  const path = (level, i, w) => `/tile/${level}/${dir(i)}` + (w === W ? "" : `.p/${w}`);
LOG_KEY
  const cp = await (await fetch("/checkpoint", { cache: "no-store" })).text();
  const size = Number(cp.split("\\n")[1]), count = Math.ceil(size / W);
  const pool = Array.from({ length: workers || navigator.hardwareConcurrency }, () => new Worker("/static/verify-worker.js"));
  const waiting = new Map();
  let id = 0, bytes = 0, valid = 0;
  pool.forEach((w) => { w.onmessage = (e) => { waiting.get(e.data.id)(e.data); waiting.delete(e.data.id); }; });
  const ask = (w, msg) => new Promise((resolve) => { msg.id = ++id; waiting.set(msg.id, resolve); w.postMessage(msg); });
  const bundle = (i) => {
    const w = Math.min(W, size - i * W);
    return Promise.all([fetch(path("entries", i, w)).then((r) => r.arrayBuffer()), fetch(path(0, i, w)).then((r) => r.arrayBuffer())]);
  };
  const t0 = performance.now(), ahead = [], inflight = [];
  for (let i = 0; i < Math.min(4, count); i++) ahead[i] = bundle(i);
  for (let i = 0; i < count; i++) {
    const [buf, tile] = await ahead[i];
    if (i + 4 < count) ahead[i + 4] = bundle(i + 4);
    const data = new Uint8Array(buf), spans = [], checks = [];
    bytes += data.length + tile.byteLength;
    for (let pos = 0; pos < data.length;) {
      const start = pos + 2, end = start + ((data[pos] << 8) | data[pos + 1]);
      let text = end - 2, space = end - 1;
      while (!(data[text] === 10 && data[text - 1] === 10)) text--;
      while (data[space] !== 32) space--;
      const sig = b64(String.fromCharCode.apply(null, data.subarray(space + 1, end - 1))).subarray(4);
      spans.push(start, end - start);
      checks.push([pub, sig, start, text - start]);
      pos = end;
    }
    const n = pool.length, part = (list, k, per) => list.slice(per * Math.floor((k * list.length / per) / n), per * Math.floor(((k + 1) * list.length / per) / n));
    inflight.push(Promise.all(pool.map((w, k) => ask(w, { data, spans: part(spans, k, 2), checks: part(checks, k, 1) })))
      .then((rs) => { for (const r of rs) valid += r.oks.filter(Boolean).length; }));
    if (inflight.length > 3 * n) await inflight.shift();
  }
  await Promise.all(inflight);
  pool.forEach((w) => w.terminate());
  const seconds = (performance.now() - t0) / 1000;
  return { rate: size / seconds, seconds, mb: bytes / 1e6, valid, size };
}""".replace("LOG_KEY", LOG_KEY)


def measure(db: str, rounds: int = 2, raw_seconds: float = 4.0, log=print) -> dict:
    """Raw rates and replays of the site of ``db``, alternated ``rounds`` times."""
    from playwright.sync_api import sync_playwright

    from publish.site import BackgroundServer

    out = {"raw_all": [], "raw_one": [], "floor": [], "replay": [], "entries": None, "cores": None, "mb": None, "heap_mb": None}
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
                # the floor in a page of its own: each page is a new browser context, so neither the
                # floor nor the replay finds the other's files in the HTTP cache
                other = browser.new_page()
                other.goto(url + "about")
                floor = other.evaluate(FLOOR_JS, {"workers": 0})
                other.close()
                if floor["valid"] < 0.99 * floor["size"]:  # (a key entry's last signature is by its new key)
                    raise RuntimeError(f"the floor verified {floor['valid']:,} of {floor['size']:,} signatures")
                out["floor"].append(floor["rate"])
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
                    f"{every['workers']}; floor {out['floor'][-1]:,.0f}/s; replay {out['entries']:,} entries in {secs:.1f} s ({out['entries'] / secs:,.0f}/s)")
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
    floor = max(m["floor"])
    t.add("browser", "floor: fetch and verify only, no rules", floor, "/s", f"{floor:,.0f}/s",
          f"{floor / raw_all:.2f} × raw", note="best of " + ", ".join(f"{x:,.0f}" for x in m["floor"]) +
          "; the bundles and tiles fetched and each entry's signature and leaf hash sent to the page's worker")
    t.add("browser", f"browser full replay of {human(m['entries'])} entries ({m['mb']:.0f} MB)", best, "/s",
          f"{best:,.0f}/s", f"{ratio:.2f} × raw on {m['cores']} cores", "≥ 0.70 × raw", ratio >= 0.70,
          note="best of " + ", ".join(f"{x:,.0f}" for x in m["replay"]) +
          f"; {best / floor:.2f} × the floor; page heap after it {m['heap_mb'] or 0:.0f} MB; {time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(measure(sys.argv[1]), indent=1))
