"""The browser verifier's strict base64 (publish/static/verify.js,
``b64decode``) against Python's reading of the same rule: a string is
accepted only if it is the one standard, padded spelling of its bytes
(decoding and re-encoding give it back). Run under node on canonical
encodings of random lengths and on every near miss: wrong padding, bits
left over by the padding, whitespace, URL-safe and stray characters."""

from __future__ import annotations

import base64
import binascii
import json
import os
import random
import shutil
import subprocess

import pytest

NODE = shutil.which("node") or shutil.which("nodejs")
if NODE is None:
    pytest.skip("node is not installed (apt-get install nodejs)", allow_module_level=True)
JS = os.path.join(os.path.dirname(__file__), "js")
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"  # RFC 4648, table 1

RUN = """
const { b64decode, Failure } = require(%s);
const out = JSON.parse(require("fs").readFileSync(0, "utf8")).map((s) => {
  try { return Buffer.from(b64decode(s, "x")).toString("hex"); }
  catch (e) { if (e instanceof Failure) return null; throw e; }
});
process.stdout.write(JSON.stringify(out));
"""


def python_reading(s: str) -> str | None:
    """The rule as docs/FORMAT.md states it: strict decoding, then the
    re-encoding must be the same string."""
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if base64.b64encode(raw).decode() == s else None


def cases() -> list[str]:
    rng = random.Random(6)
    out = ["", "=", "==", "A", "AA", "AAA", "AA=", "A===", "AAAA====", "AB==", "AAE=", "AA==", "AAA="]
    for n in list(range(0, 40)) + [64, 66, 68, 69]:
        good = base64.b64encode(rng.randbytes(n)).decode()
        out.append(good)
        out += [good.rstrip("="), good + "=", " " + good, good + "\n", good[:-1] + "\t" + good[-1:] if good else "\t",
                good.replace("+", "-").replace("/", "_"), good + "A", good[1:]]
        if good.endswith("=="):  # set each bit the padding leaves over
            c = good[-3]
            for bit in (1, 2, 4, 8):
                out.append(good[:-3] + ALPHABET[ALPHABET.index(c) | bit] + "==")
        elif good.endswith("="):
            c = good[-2]
            for bit in (1, 2):
                out.append(good[:-2] + ALPHABET[ALPHABET.index(c) | bit] + "=")
    return list(dict.fromkeys(out))


def test_strict_base64_matches_the_rule():
    strings = cases()
    script = RUN % json.dumps(os.path.join(JS, "verify_internals.js"))
    r = subprocess.run([NODE, "-e", script], input=json.dumps(strings), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    want = [python_reading(s) for s in strings]
    assert sum(w is None for w in want) > 100 and sum(w is not None for w in want) > 40  # both kinds are tried
    wrong = [(s, g, w) for s, g, w in zip(strings, got, want) if g != w]
    assert wrong == []
