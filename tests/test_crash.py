"""Crash safety: ``kill -9`` a real ``fundledger import`` at random moments.

Each trial copies a small ledger (one contract and a checkpoint at size 1),
starts ``python -m ledger.cli import FILE --batch 20`` on a JSON Lines file of
400 liquidations (so the import commits 21 transactions), and kills it with
SIGKILL at a seeded random moment: usually once a random number of entries
is committed plus a random fraction of a commit (anywhere in the write
phase), sometimes at a random time from its start. 1 to 3 kills a trial,
each followed by the checks. Then, on the files the dead process left:

* the database passes SQLite's integrity check and opens read-only;
* no partial entry: seqs are 0..N-1, the ``tree`` table holds exactly the
  stored hashes of N leaves, every entry is a signed note whose text parses;
* whole batches only: the liquidation ids present, in seq order, are exactly
  the file's first k*batch records (k >= 0), nothing else;
* ``fundledger verify`` passes, before any new checkpoint (the old one at
  size 1 still holds) and after one is signed with the key;
* re-running the import finishes the job: it reports the missing records
  appended and the rest skipped as duplicates, each liquidation is present
  once, and the log is byte for byte the log of an import that never
  crashed (same root).

``scripts/crashtest N`` runs N trials of the same function and prints a
summary; docs/RELIABILITY.md has the figures.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.ops import api
from ledger.tlog import merkle
from ledger.format import note
from ledger.verify import run as verify
from ledger.cli import cli
from ledger.format.entry import MAX_ENTRY_BYTES, parse_entry_text
from ledger.ops.keys import load_key_file
from ledger.store.schema import Reader
from ledger.store.store import Store

ORIGIN = "example.com/crash-fund"
LIQUIDATIONS = 400
BATCH = 20
SUITE_TRIALS = 20
CONTRACT = {"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8, "type": "linear",
            "multiplier": "0.001"}


def liquidation_records(n: int) -> list[dict]:
    """Deterministic liquidations with explicit times: credits, shortfalls
    paid by the fund, and shortfalls beyond it (ADL)."""
    rng = random.Random(8)
    out = []
    for i in range(n):
        side = rng.choice(["long", "short"])
        bankruptcy = 39000 + rng.randrange(-500, 500)
        move = rng.choice([1, 5, 20, -3, -40, -400])
        fill = bankruptcy + (move if side == "long" else -move)
        out.append({
            "kind": "liquidation", "contract": "XBTUSDTM", "id": f"L-{i:05d}", "side": side,
            "qty": str(rng.randrange(1, 50)), "bankruptcy_price": str(bankruptcy), "fill_price": str(fill),
            "time": f"2026-11-23T{10 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}.5Z",
        })
    return out


@dataclass
class Setup:
    """What every trial starts from, and what a crash-free import gives."""

    dir: Path
    template_db: Path
    key: Path
    import_file: Path
    records: list[dict]
    ref_root: bytes
    ref_size: int
    write_seconds: float  # how long the write phase of a real import lasts


def env_for(db: Path, key: Path) -> dict:
    e = dict(os.environ)
    e.update(FUNDLEDGER_DB=str(db), FUNDLEDGER_KEY=str(key), PYTHONDONTWRITEBYTECODE="1")
    return e


def import_cmd(path: Path, batch: int = BATCH) -> list[str]:
    return [sys.executable, "-m", "ledger.cli", "import", str(path), "--batch", str(batch)]


def copy_template(setup_dir: Path, template_db: Path, key: Path, db: Path) -> None:
    """A fresh copy of the template ledger at ``db``, with the key's anchor
    put back as it was beside the template: every trial signs its own copy
    of the log with the one key, so each starts from the template's anchor
    (a key whose anchor is ahead of its database refuses to sign)."""
    shutil.copyfile(template_db, db)
    shutil.copyfile(setup_dir / "template.anchor", api.writer_anchor(str(key)).path)


def make_setup(base: Path, n: int = LIQUIDATIONS) -> Setup:
    base.mkdir(parents=True, exist_ok=True)
    db, key = base / "template.db", base / "fund.key"
    store, signer = api.init_ledger(str(db), str(key), ORIGIN)
    store.append([CONTRACT], [signer])
    store.add_checkpoint([signer])
    store.close()
    shutil.copyfile(api.writer_anchor(str(key)).path, base / "template.anchor")
    records = [CONTRACT] + liquidation_records(n)  # the contract line replays: a duplicate
    path = base / "import.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    # the reference: a real import that is never interrupted, timed
    ref = base / "reference.db"
    copy_template(base, db, key, ref)
    p = subprocess.Popen(import_cmd(path), env=env_for(ref, key), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    wait_for_stderr(p, b"importing", 60)
    t0 = time.monotonic()
    out, err = p.communicate(timeout=120)
    write_seconds = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError(f"reference import failed: {err.decode()}")
    s = Reader.open(str(ref))
    try:
        ref_size, ref_root = s.size(), s.tree_hash()
    finally:
        s.close()
    return Setup(base, db, key, path, records, ref_root, ref_size, write_seconds)


def wait_for_stderr(p: subprocess.Popen, marker: bytes, timeout: float) -> bool:
    """Read the child's stderr until ``marker`` appears (True) or it exits
    or ``timeout`` passes (False). Reads byte-wise with select: never blocks
    past the deadline."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = p.stderr.fileno()
    while marker not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            return False
        chunk = os.read(fd, 4096)
        if not chunk:
            return False
        buf += chunk
    return True


@dataclass
class KillOutcome:
    mode: str  # "from-start", or "after N" new entries
    delay: float
    killed: bool  # False: the import had already finished
    committed: int  # records (lines) of the file committed when it died


@dataclass
class TrialResult:
    seed: int
    kills: list[KillOutcome] = field(default_factory=list)
    seconds: float = 0.0
    final_appended: int = 0
    final_duplicates: int = 0


class TrialFailure(AssertionError):
    pass


def check(cond: bool, msg: str) -> None:
    # tests/ may run under -O: a plain assert would vanish
    if not cond:
        raise TrialFailure(msg)


def inspect_crashed(db: Path, setup: Setup) -> int:
    """Every invariant a crash must leave intact; returns how many records
    of the import file are committed (a multiple of the batch, or all)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        check(conn.execute("PRAGMA integrity_check").fetchone() == ("ok",), "integrity_check failed")
        seqs = [r[0] for r in conn.execute("SELECT seq FROM entries ORDER BY seq")]
        n = len(seqs)
        check(seqs == list(range(n)), "seqs are not 0..N-1")
        # exactly the stored hashes of n leaves above the leaves' own (entries.leaf_hash)
        tree_ids = [r[0] for r in conn.execute("SELECT id FROM tree ORDER BY id")]
        want = [i for i in range(merkle.stored_hash_count(n)) if merkle.split_stored_hash_index(i)[0] > 0]
        check(tree_ids == want, f"tree table has {len(tree_ids)} rows for {n} leaves, expected {len(want)}")
        ids = []
        for seq, data, kind, lid in conn.execute(
            "SELECT seq, data, kind, liquidation_id FROM entries ORDER BY seq"
        ):
            check(len(data) <= MAX_ENTRY_BYTES, f"entry {seq} too long")
            text, sigs = note.split_note(data, MAX_ENTRY_BYTES)
            obj = parse_entry_text(text)
            check(obj["seq"] == seq and obj["kind"] == kind and len(sigs) == 1, f"entry {seq} is damaged")
            if kind == "liquidation":
                ids.append(lid)
    finally:
        conn.close()
    check(n >= 1, "the contract entry is gone")
    lines = setup.records
    all_ids = [r["id"] for r in lines[1:]]
    # lines[0] is the (duplicate) contract record: the first batch holds it
    # and BATCH - 1 liquidations
    m = len(ids)
    committed = m + 1 if m else 0
    whole_batches = committed % BATCH == 0 or committed == len(lines)
    check(ids == all_ids[:m], "the ids present are not a prefix of the file in file order")
    check(m == 0 or whole_batches, f"{committed} records committed: not a whole number of batches of {BATCH}")
    check(n == 1 + m, "entries other than the import's are present")
    # read-only verification right after the crash, the old checkpoint (size 1) only
    r = verify.verify_path(str(db), workers=1)
    check(r.tree_size == n and r.checkpoint_size == 1, f"verify saw {r.tree_size}, expected {n}")
    return committed


def sign_checkpoint(db: Path, key: Path) -> int:
    s = Store.open(str(db))
    try:
        size, _, _ = s.add_checkpoint([load_key_file(str(key))])
    finally:
        s.close()
    return size


def cli_verify(db: Path, key: Path, expect_size: int) -> None:
    """``fundledger verify --json`` (the click command, run in-process)."""
    r = CliRunner().invoke(cli, ["verify", "--json", "--workers", "1", "--db", str(db)])
    check(r.exit_code == 0, f"fundledger verify failed after the crash: {r.output[-500:]}")
    out = json.loads(r.stdout)
    check(out["ok"] is True and out["size"] == expect_size and out["checkpoint_size"] == expect_size,
          f"fundledger verify reported {out}")


def db_size(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(seq) FROM entries").fetchone()
    return 0 if row[0] is None else row[0] + 1


def kill_once(db: Path, setup: Setup, rng: random.Random) -> KillOutcome:
    """Start an import and SIGKILL it. One time in five at a random moment
    from its start (startup, check pass or writes); otherwise once a seeded
    random number of new entries is committed (a reader polls the database
    every 2 ms), plus a random fraction of a commit's duration, so that the
    kill lands anywhere in the write phase however fast the machine is."""
    watch = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        start = db_size(watch)
        remaining = setup.ref_size - start
        per_commit = setup.write_seconds / max(1, (len(setup.records) + BATCH - 1) // BATCH)
        p = subprocess.Popen(import_cmd(setup.import_file), env=env_for(db, setup.key),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if remaining == 0 or rng.random() < 0.2:
                mode, delay = "from-start", rng.uniform(0.0, 0.5)
            else:
                target = start + rng.randint(1, remaining)
                mode, delay = f"after {target - start}", rng.uniform(0.0, 1.5 * per_commit)
                deadline = time.monotonic() + 60
                while p.poll() is None and db_size(watch) < target and time.monotonic() < deadline:
                    time.sleep(0.002)
            time.sleep(delay)
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            rc = p.wait(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    finally:
        watch.close()
    # 0: it finished just before the signal
    check(rc in (0, -signal.SIGKILL), f"import exited with {rc}")
    return KillOutcome(mode, delay, rc == -signal.SIGKILL, 0)


_SUMMARY = re.compile(rb"(\d+) appended, (\d+) duplicates skipped, (\d+) records, tree size (\d+)")


def run_trial(setup: Setup, seed: int, workdir: Path, kills: int | None = None) -> TrialResult:
    """One trial: 1 to 3 kills (seeded), the checks after each, then a
    complete re-run. Raises TrialFailure (an AssertionError) on any fault."""
    t0 = time.monotonic()
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "fund.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    copy_template(setup.dir, setup.template_db, setup.key, db)
    result = TrialResult(seed)
    n_kills = kills if kills is not None else rng.choice([1, 1, 1, 1, 2, 3])
    committed = 0
    for _ in range(n_kills):
        outcome = kill_once(db, setup, rng)
        outcome.committed = inspect_crashed(db, setup)
        check(outcome.committed >= committed, "a committed batch disappeared")
        committed = outcome.committed
        result.kills.append(outcome)
    size = 1 + max(committed - 1, 0)
    check(sign_checkpoint(db, setup.key) == size, "the checkpoint after the crash has the wrong size")
    cli_verify(db, setup.key, size)
    # finish the job
    p = subprocess.run(import_cmd(setup.import_file), env=env_for(db, setup.key), capture_output=True,
                       timeout=120)
    check(p.returncode == 0, f"the re-run import failed: {p.stderr.decode()[-500:]}")
    m = _SUMMARY.search(p.stdout)
    check(m is not None, f"no summary line: {p.stdout!r}")
    appended, dups, lines, tree = map(int, m.groups())
    already = max(committed - 1, 0)  # liquidations present before the re-run
    check(lines == len(setup.records), "the re-run did not read every line")
    check(appended == liquidations_in(setup) - already and dups == already + 1,
          f"the re-run appended {appended} and skipped {dups}; {already} were present")
    check(tree == setup.ref_size, f"tree size {tree}, expected {setup.ref_size}")
    result.final_appended, result.final_duplicates = appended, dups
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        ids = [r[0] for r in conn.execute(
            "SELECT liquidation_id FROM entries WHERE kind = 'liquidation' ORDER BY seq")]
    finally:
        conn.close()
    check(ids == [r["id"] for r in setup.records[1:]], "not every liquidation exactly once, in order")
    check(sign_checkpoint(db, setup.key) == setup.ref_size, "final checkpoint size")
    r = verify.verify_path(str(db), workers=1)
    check(r.root == setup.ref_root, "the resumed log differs from a crash-free import")
    result.seconds = time.monotonic() - t0
    return result


def liquidations_in(setup: Setup) -> int:
    return len(setup.records) - 1


# --- the suite --------------------------------------------------------------------

RESULTS: list[TrialResult] = []


def fast_tmp_root() -> str | None:
    """A tmpfs directory if there is one. A kill -9 leaves the same files on
    tmpfs as on a disk (the page cache survives the process; power loss is
    not what these trials simulate), and commits there cost no fsync wait,
    which keeps the suite fast. scripts/crashtest defaults to the disk."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


@pytest.fixture(scope="module")
def crash_root(tmp_path_factory):
    root = fast_tmp_root()
    if root is None:
        yield tmp_path_factory.mktemp("crash")
        return
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="fundledger-crash-", dir=root))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def setup(crash_root) -> Setup:
    return make_setup(crash_root / "setup")


@pytest.mark.parametrize("seed", range(SUITE_TRIALS))
def test_kill_9_during_import(setup, crash_root, seed):
    RESULTS.append(run_trial(setup, 1000 + seed, crash_root / f"trial-{seed}"))


def test_the_kills_landed_while_writing():
    """The trials above are only worth something if most kills hit the import
    between its first and last commit."""
    kills = [k for r in RESULTS for k in r.kills]
    if len(RESULTS) < SUITE_TRIALS:
        pytest.skip("the trials did not all run")
    mid = [k for k in kills if k.killed and 0 < k.committed < LIQUIDATIONS + 1]
    assert len(mid) >= len(kills) // 3, [(k.mode, round(k.delay, 3), k.killed, k.committed) for k in kills]


def test_an_import_killed_in_its_check_pass_wrote_nothing(setup, crash_root):
    """Killed before the check pass ends (no "importing" yet): nothing is
    written, not even a transaction left half-open."""
    tmp_path = crash_root / "check-pass"
    tmp_path.mkdir()
    db = tmp_path / "fund.db"
    copy_template(setup.dir, setup.template_db, setup.key, db)
    big = tmp_path / "big.jsonl"
    line = ('{"kind":"liquidation","contract":"XBTUSDTM","id":"C-%d","side":"long","qty":"3",'
            '"bankruptcy_price":"39000","fill_price":"39100","time":"2026-11-23T18:59:07Z"}\n')
    with open(big, "w") as f:  # a check pass of several seconds (about 20,000 lines a second)
        f.write("".join(line % i for i in range(80_000)))
    p = subprocess.Popen(import_cmd(big), env=env_for(db, setup.key), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        wait_for_stderr(p, b"never printed", 0.5)  # 0.5 s: the check pass is under way
        assert p.poll() is None, "the check pass finished too fast for this test"
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        seen_importing = b"importing" in p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stderr.close()
    assert not seen_importing
    assert inspect_crashed(db, setup) == 0
