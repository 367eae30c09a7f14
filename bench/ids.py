"""The anchor's ids figure of ``scripts/bench`` (section ``ids``).

``n`` random 64-bit id hashes as the anchor's ``.ids`` file holds them,
then 100,000 lookups: the sorted run the anchor builds (``IdHashes``,
ledger/ops/anchor.py) against a plain set of the same hashes, built and
probed one after the other in the same minute, each in a child process of
its own so that its peak RSS is its own.
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import array, json, random, resource, sys, time
from ledger.ops import idhashes as anchor
n, mode = int(sys.argv[1]), sys.argv[2]
rng = random.Random(1)
data = array.array("Q", (rng.getrandbits(64) for _ in range(n))).tobytes()
probes = [rng.getrandbits(64) for _ in range(100_000)]
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
if mode == "run":
    ids = anchor.IdHashes(); ids.add_packed(data); ids.lookups = anchor.IdHashes.SET_AFTER; _ = probes[0] in ids
else:
    ids = set(anchor._unpack(data))
built = time.perf_counter() - t
r1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter(); sum(h in ids for h in probes); looked = time.perf_counter() - t
print(json.dumps({"build_s": built, "peak_mib": (r1 - r0) / 1024, "bytes_mib": len(data) / 2**20,
                  "lookup_us": looked / len(probes) * 1e6}))
"""


def _measure(n: int, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), mode], capture_output=True, check=True, text=True)
    return json.loads(out.stdout)


def bench_ids(t, n: int) -> None:
    s, r = _measure(n, "set"), _measure(n, "run")
    t.add("ids", f"anchor ids of {n:,}: peak RSS above their bytes", r["peak_mib"], "MiB",
          f"{r['peak_mib']:,.0f} MiB as a sorted run (a set: {s['peak_mib']:,.0f} MiB)",
          ratio=f"{r['peak_mib'] / s['peak_mib']:.2f}x the set's",
          note=f"build {r['build_s']:.1f} s (set {s['build_s']:.1f} s); lookup {r['lookup_us']:.1f} us "
               f"(set {s['lookup_us']:.2f} us); the ids' bytes {r['bytes_mib']:.0f} MiB")
