"""Interop of ML-DSA-44 witness cosignatures with a second implementation.

tests/mldsa/cosign.mjs implements c2sp.org/tlog-cosignature v1.1's ML-DSA-44
type on @noble/post-quantum under Node, sharing no code with fundledger: it
parses vkeys, checkpoint texts and signature lines and builds the binary
subtree/v1 message itself. Both directions are checked: a cosignature made
by `fundledger witness` (with --algorithm ml-dsa-44) verifies there, over
the very message bytes ledger.format.mldsa builds; one made there verifies
here; one byte changed fails under both. The known answers in
tests/vectors/mldsa/ are re-made here and must come out the same.

The package is installed from tests/mldsa/package-lock.json (exact versions
and integrity hashes, no install scripts) into a directory beside the
virtualenv, once. The test is skipped only when the npm registry cannot be
reached; without node and npm (scripts/test installs them) it fails.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.errors import SignatureError
from ledger.format import mldsa, note
from ledger.ops import api, witness

HERE = Path(__file__).resolve().parent
SRC = HERE / "mldsa"
VECTORS = HERE / "vectors" / "mldsa" / "noble-cosignatures.json"
LOCK = (SRC / "package-lock.json").read_bytes()
CACHE = Path(os.environ.get("FUNDLEDGER_NODE_CACHE", Path(sys.prefix) / "fundledger-node"))


def _install(dest: Path) -> None:
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        pytest.fail("needs node and npm on PATH (Debian: nodejs npm; scripts/test installs them)")
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in ("package.json", "package-lock.json"):
        shutil.copy(SRC / f, tmp / f)
    r = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--omit=dev"], cwd=tmp,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        ping = subprocess.run([npm, "ping"], cwd=tmp, capture_output=True, text=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)
        if ping.returncode != 0:
            pytest.skip(f"the npm registry is unreachable (npm ping: {(ping.stderr or ping.stdout).strip()[:200]})")
        pytest.fail(f"npm ci of tests/mldsa failed:\n{r.stdout}{r.stderr}")
    os.replace(tmp, dest)


@pytest.fixture(scope="module")
def noble():
    """Run cosign.mjs on a list of requests; returns its answers."""
    dest = CACHE / hashlib.sha256(LOCK).hexdigest()[:16]
    lib = dest / "node_modules" / "@noble" / "post-quantum" / "ml-dsa.js"
    if not lib.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        _install(dest)

    def run(requests: list[dict]) -> list[dict]:
        r = subprocess.run(["node", str(SRC / "cosign.mjs")], input=json.dumps(requests), capture_output=True,
                           text=True, timeout=300, env={**os.environ, "NOBLE_ML_DSA": str(lib)})
        if r.returncode != 0:
            pytest.fail(f"cosign.mjs failed:\n{r.stderr}")
        out = json.loads(r.stdout)
        assert len(out) == len(requests) and not any("error" in o for o in out), out
        return out

    return run


def flip_signature(line: bytes, i: int) -> bytes:
    """``line`` with bit 0 of byte ``i`` of its key id || signature flipped."""
    head, _, b64 = line.rstrip(b"\n").rpartition(b" ")
    raw = bytearray(base64.b64decode(b64))
    raw[i] ^= 1
    return head + b" " + base64.b64encode(bytes(raw)) + b"\n"


def ours(text: bytes, line: bytes, key: note.Verifier) -> int:
    return note.verify_cosignature(text, note.parse_signature_lines(line)[0], key)


def test_a_fundledger_witness_cosignature_verifies_under_noble(ledger, tmp_path, noble):
    ledger.contract()
    ledger.liquidation()
    ledger.checkpoint()
    key, state = str(tmp_path / "w.key"), str(tmp_path / "w.db")
    w = witness.init_witness(key, state, "pq.witness.example", alg=note.ALG_MLDSA44).verifier()
    witness.add_log(state, ledger.store.vkey)
    line = witness.add_checkpoint(key, state, api.consistency(ledger.store, old_size=0), now=1_700_000_123)
    text = note.split_note(ledger.store.latest_checkpoint()[4])[0]
    cp = note.parse_checkpoint(text)
    want = mldsa.cosigned_message(w.name, 1_700_000_123, cp.origin, 0, cp.tree_size, cp.root_hash)
    other_root = note.Checkpoint(cp.origin, cp.tree_size, bytes(32), cp.extensions).text()
    tampered = [(text, flip_signature(line, 4 + 8 + 1000)), (text, flip_signature(line, 4 + 3)),
                (other_root, line)]
    good, *bad = noble([{"op": "verify", "vkey": w.vkey(), "checkpoint": t.decode(), "line": ln.decode()}
                        for t, ln in [(text, line), *tampered]])
    assert good == {"ok": True, "reason": "", "timestamp": "1700000123", "message": want.hex()}
    assert [b["ok"] for b in bad] == [False, False, False]
    assert ours(text, line, w) == 1_700_000_123
    for t, ln in tampered:
        with pytest.raises(SignatureError):
            ours(t, ln, w)


def test_a_noble_cosignature_verifies_under_ours(noble):
    seed = hashlib.sha256(b"noble witness").digest()
    name, origin = "w\u00efne.example/pq", "example.com/\u00e9chelle"  # lengths are bytes, not characters
    text = note.Checkpoint(origin, 123456, hashlib.sha256(b"r").digest(), ("an extension",)).text()
    (made,) = noble([{"op": "cosign", "seed": seed.hex(), "name": name, "checkpoint": text.decode(),
                      "timestamp": "1700000456", "deterministic": False}])
    key = note.parse_vkey(made["vkey"])
    assert key.alg == note.ALG_MLDSA44 and key.name == name
    ours_from_seed = note.Signer(name, key.key_id, seed, note.ALG_MLDSA44)  # the skey format's seed is noble's too
    assert ours_from_seed.verifier() == key
    cp = note.parse_checkpoint(text)
    assert made["message"] == mldsa.cosigned_message(name, 1_700_000_456, origin, 0, 123456, cp.root_hash).hex()
    line = made["line"].encode()
    assert ours(text, line, key) == 1_700_000_456
    bare = note.Checkpoint(origin, 123456, cp.root_hash).text()  # extension lines are not signed
    assert ours(bare, line, key) == 1_700_000_456
    bad_sig, bad_time = flip_signature(line, 4 + 8 + 2419), flip_signature(line, 4 + 7)
    for bad in (bad_sig, bad_time):
        with pytest.raises(SignatureError):
            ours(text, bad, key)
    checks = noble([{"op": "verify", "vkey": made["vkey"], "checkpoint": text.decode(), "line": ln.decode()}
                    for ln in (line, bad_sig, bad_time)])
    assert [c["ok"] for c in checks] == [True, False, False]
    # and the other way round for the same key: ours cosigns, noble checks
    mine = note.cosign(text, ours_from_seed, 9)
    (c,) = noble([{"op": "verify", "vkey": made["vkey"], "checkpoint": text.decode(), "line": mine.decode()}])
    assert c["ok"] and c["timestamp"] == "9"


VECTOR_INPUTS = [
    {"seed": hashlib.sha256(b"vector 1").hexdigest(), "name": "witness.example/pq", "timestamp": "1679315147",
     "checkpoint": "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"},
    {"seed": hashlib.sha256(b"vector 2").hexdigest(), "name": "w\u00efne.example", "timestamp": "0",
     "checkpoint": "example.com/\u00e9chelle\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"},
    {"seed": hashlib.sha256(b"vector 3").hexdigest(), "name": "x" * 255, "timestamp": str(2**63 - 1),
     "checkpoint": "venue.example/fund\n18446744\n" + base64.b64encode(bytes(range(32))).decode()
                   + "\nextension one\nextension two\n"},
]


def make_vectors(noble) -> dict:
    made = noble([{"op": "cosign", "deterministic": True, **v} for v in VECTOR_INPUTS])
    return {"vectors": [{"seed": v["seed"], "vkey": m["vkey"], "checkpoint": v["checkpoint"],
                         "timestamp": int(v["timestamp"]), "message": m["message"], "line": m["line"]}
                        for v, m in zip(VECTOR_INPUTS, made)]}


def test_the_committed_vectors_are_what_noble_makes(noble):
    """tests/vectors/mldsa/noble-cosignatures.json is noble's deterministic
    (FIPS 204 rnd = 0) signing of VECTOR_INPUTS; FUNDLEDGER_WRITE_VECTORS=1
    writes it anew."""
    vectors = make_vectors(noble)
    if os.environ.get("FUNDLEDGER_WRITE_VECTORS") == "1":
        VECTORS.write_text(json.dumps({"about": "see PROVENANCE.md", **vectors}, indent=1, ensure_ascii=False) + "\n")
    assert json.loads(VECTORS.read_text("utf-8"))["vectors"] == vectors["vectors"]
