"""The machine's raw limits, measured in the same run as the benchmark."""

from __future__ import annotations

import hashlib
import os
import platform
import sqlite3
import sys
import tempfile
import time

MSG_BYTES = 480  # about one entry (see bench/gen.py)


def _rate(fn, n: int, repeat: int = 3) -> float:
    """Best of ``repeat`` runs of ``fn(n)``, in operations per second."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t0)
    return n / best


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import nacl

    try:
        import cryptography
        from cryptography.hazmat.backends.openssl import backend

        crypto = f"cryptography {cryptography.__version__} ({backend.openssl_version_text()})"
    except Exception:  # noqa: BLE001 - comparison only
        crypto = None
    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover
        load = None
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        # PyNaCl bundles libsodium statically and exposes no version call
        "libsodium": f"bundled in PyNaCl {nacl.__version__}",
        "openssl": crypto,
        "platform": platform.platform(),
        "loadavg_at_start": load,
    }


def pynacl_rate(op: str, n: int = 20000) -> float:
    """One raw libsodium rate (``op`` "sign" or "verify"), best of 3, on
    its own: taken right before a throughput run, so that the run's ratio
    compares two figures from the same minutes (the host's speed drifts)."""
    from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair

    pk, sk = crypto_sign_seed_keypair(bytes(range(32)))
    msgs = [os.urandom(MSG_BYTES) for _ in range(256)]
    if op == "sign":
        def run(k):
            for i in range(k):
                crypto_sign(msgs[i & 255], sk)[:64]
    elif op == "verify":
        signed = [crypto_sign(m, sk) for m in msgs]

        def run(k):
            for i in range(k):
                crypto_sign_open(signed[i & 255], pk)
    else:
        raise ValueError(op)
    return _rate(run, n)


def ed25519_pynacl(n: int) -> dict:
    """PyNaCl/libsodium through the calls the project makes (nacl.bindings)."""
    return {"sign": pynacl_rate("sign", n), "verify": pynacl_rate("verify", n)}


def ed25519_openssl(n: int) -> dict | None:
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError:
        return None
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    pub = key.public_key()
    msgs = [os.urandom(MSG_BYTES) for _ in range(256)]
    sigs = [key.sign(m) for m in msgs]

    def sign(k):
        for i in range(k):
            key.sign(msgs[i & 255])

    def verify(k):
        for i in range(k):
            pub.verify(sigs[i & 255], msgs[i & 255])

    return {"sign": _rate(sign, n), "verify": _rate(verify, n)}


def sha256(n: int) -> dict:
    msgs = [os.urandom(MSG_BYTES) for _ in range(256)]
    h = hashlib.sha256

    def small(k):
        for i in range(k):
            h(msgs[i & 255]).digest()

    big = os.urandom(1 << 20)

    def bulk(k):
        for _ in range(k):
            h(big).digest()

    mb = _rate(bulk, 64)  # MiB/s
    return {"per_s": _rate(small, n), "mb_per_s": mb}


def sqlite_insert(rows: int, batch: int = 2000) -> dict:
    """rows/s into ``(seq INTEGER PRIMARY KEY, data BLOB)`` of 480-byte blobs,
    WAL, synchronous=FULL, ``batch`` rows a transaction (as an import), and
    the latency of a one-row transaction (as one `fundledger liquidation`)."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
        path = os.path.join(d, "raw.db")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        blob = [os.urandom(MSG_BYTES) for _ in range(256)]
        seq = 0
        t0 = time.perf_counter()
        while seq < rows:
            k = min(batch, rows - seq)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO t VALUES (?, ?)", ((seq + i, blob[i & 255]) for i in range(k)))
            conn.execute("COMMIT")
            seq += k
        rate = rows / (time.perf_counter() - t0)
        lat = []
        for i in range(50):
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?, ?)", (seq, blob[i & 255]))
            conn.execute("COMMIT")
            lat.append(time.perf_counter() - t0)
            seq += 1
        conn.close()
    lat.sort()
    return {"rows_per_s": rate, "commit_ms_p50": lat[len(lat) // 2] * 1e3}


def measure(quick: bool) -> dict:
    n = 5000 if quick else 20000
    out = {"machine": machine(), "pynacl": ed25519_pynacl(n), "openssl": ed25519_openssl(n),
           "sha256": sha256(n * 10), "sqlite": sqlite_insert(40_000 if quick else 200_000)}
    return out
