"""The pipelined bulk import (ledger/store/bulk.py, ledger/store/sign.py).

The reference is the ordinary write path, ``Store.append`` batch after batch,
which reads the state inside each transaction: the pipeline must give the
same bytes, and must fall back to that path, never fork the chain and never
write part of a batch when another writer moves the head or the signing
stage fails."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import sqlite3
import subprocess

import pytest

from ledger.ops import api
from ledger.store import sign as chainsign
from ledger.store import bulk as importer
from ledger.format import note
from ledger.errors import FundledgerError, StoreError
from ledger.store.store import Store
from ledger.verify.run import verify_path

ORIGIN = "example.com/test-fund"
SEED = hashlib.sha256(b"test_import_pipeline").digest()


def fixed_signer() -> note.Signer:
    from nacl.bindings import crypto_sign_seed_keypair

    pk, _ = crypto_sign_seed_keypair(SEED)
    return note.Signer(ORIGIN, note.key_id(ORIGIN, note.ALG_ED25519, pk), SEED)


def new_store(path) -> Store:
    return Store.create(str(path), ORIGIN, fixed_signer().verifier().vkey())


def dump(db) -> list:
    c = sqlite3.connect(str(db))
    try:
        return [c.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in ("entries", "tree", "contracts")]
    finally:
        c.close()


def verified_size(db) -> int:
    """Checkpoint the ledger, verify it from scratch, return its size."""
    store = Store.open(str(db))
    store.add_checkpoint([fixed_signer()])
    store.close()
    return verify_path(str(db), workers=1).tree_size


CONTRACTS = [
    {"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8, "multiplier": "0.001", "time": "2026-01-01T00:00:00Z"},
    {"kind": "contract", "symbol": "XBTUSDM", "currency": "XBT", "scale": 8, "type": "inverse", "multiplier": "1", "time": "2026-01-01T00:00:01Z"},
    {"kind": "contract", "symbol": "DOGE_X-1.A", "currency": "USDT", "scale": 0, "multiplier": 100, "time": "2026-01-01T00:00:02.5Z"},
    {"kind": "contract", "symbol": "TINY", "currency": "USDC", "scale": "18", "multiplier": "0.000000000000000001", "time": "2026-01-01T00:00:03Z"},
]


def varied_records(n: int, seed: int = 1) -> list[dict]:
    """Liquidations in every spelling the rules accept, canonical or not."""
    rng = random.Random(seed)
    out = [dict(c) for c in CONTRACTS]
    ids = ["plain", 'quo"te', "back\\slash", "in side", "~!@#$%^&*()_+{}|:<>?", "x" * 120]
    for i in range(n):
        c = rng.choice(CONTRACTS)["symbol"]
        price = rng.choice(["39000", "39000.5", "0.00001234", "1", "123456789012345678901234567890"])
        fill = rng.choice(["39100", "38000.25", "0.00001", "2", "39000.5"])
        r = {"kind": "liquidation", "contract": c, "id": f"{rng.choice(ids)}-{i}", "side": rng.choice(["long", "short"]),
             "qty": rng.choice(["1", "3000", "0.5", 7, "1.50", "0012"]), "bankruptcy_price": price, "fill_price": fill}
        if rng.random() < 0.7:
            r["mark_price"] = rng.choice(["39120", "39000.10", "5"])
        r["time"] = rng.choice([
            f"2026-02-{1 + i % 28:02d}T10:00:{i % 60:02d}Z", f"2026-02-01T10:00:00.{i % 1000:03d}Z",
            "2026-02-01T12:00:00+02:00", "2026-02-01t10:00:00.500z", "2024-02-29T23:59:59.000000001Z",
        ])
        out.append(r)
        if rng.random() < 0.05:
            out.append(dict(r))  # a replay inside the input
    out.append(dict(CONTRACTS[0]))  # an identical contract: a duplicate
    return out


def jsonl(records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def reference(db, records, batch: int):
    """The ordinary path: Store.append per batch, as before the pipeline."""
    store = new_store(db)
    signer = fixed_signer()
    for k in range(0, len(records), batch):
        store.append(records[k : k + batch], [signer])
    store.close()


@pytest.fixture(params=["inline", "process"])
def chain_kind(request, monkeypatch):
    if request.param == "process":
        monkeypatch.setattr(api, "PIPELINE_MIN_BYTES", 0)
    else:
        monkeypatch.setattr(api, "PIPELINE_MIN_BYTES", 1 << 62)
    return request.param


@pytest.mark.parametrize("batch", [1, 7, 2000])
def test_same_bytes_as_the_ordinary_path(tmp_path, chain_kind, batch):
    records = varied_records(400 if batch > 1 else 60)
    reference(tmp_path / "ref.db", records, batch)
    store = new_store(tmp_path / "new.db")
    r = api.import_records(store, fixed_signer(), io.BytesIO(jsonl(records)), batch_size=batch)
    store.close()
    assert dump(tmp_path / "new.db") == dump(tmp_path / "ref.db")
    assert r.lines == len(records) and r.appended + r.duplicates == len(records)
    assert verified_size(tmp_path / "new.db") == r.tree_size


CLOCK = lambda: "2026-01-01T00:00:00Z"  # noqa: E731 - the state entries' time, the same in both ledgers


def format_2_store(db, records, upgraded: bool):
    """A format-2 ledger: new (its state entry at seq 0), or a format-1 one
    holding the first 100 records, upgraded. Returns the records left."""
    store = new_store(db)
    if upgraded:
        store.append(records[:100], [fixed_signer()])
        records = records[100:]
    store.upgrade([fixed_signer()], clock=CLOCK)
    return store, records


@pytest.mark.parametrize("upgraded", [False, True])
@pytest.mark.parametrize("batch", [1, 7, 2000])
def test_format_2_same_bytes_as_the_ordinary_path(tmp_path, chain_kind, batch, upgraded):
    """Format 2: each liquidation names its fund's previous entry, inside
    the import (the chain signer fills the hole) or before it (the
    importer writes the hash)."""
    records = varied_records(400 if batch > 1 else 160)
    ref, rest = format_2_store(tmp_path / "ref.db", records, upgraded)
    for k in range(0, len(rest), batch):
        ref.append(rest[k : k + batch], [fixed_signer()])
    ref.close()
    store, rest = format_2_store(tmp_path / "new.db", records, upgraded)
    r = api.import_records(store, fixed_signer(), io.BytesIO(jsonl(rest)), batch_size=batch)
    store.close()
    assert dump(tmp_path / "new.db") == dump(tmp_path / "ref.db")
    assert r.lines == len(rest) and r.appended + r.duplicates == len(rest)
    assert verified_size(tmp_path / "new.db") == r.tree_size + 1  # and the checkpoint's state entry


def test_fast_path_matches_generic_path():
    """EntryBuilder's liquidation fast path against FundBook.build + entry_text."""
    from ledger.rules.fund import FundBook

    recs = varied_records(3000, seed=5)
    fast = importer.EntryBuilder(FundBook(), 0, 100)
    slow = importer.EntryBuilder(FundBook(), 0, 100)
    slow_fast = importer.fast_liquidation
    n_fast = 0
    for r in recs:
        a = fast.build(dict(r))
        if importer.fast_liquidation(r, fast.book.funds) is not None:
            n_fast += 1
        try:
            importer.fast_liquidation = lambda record, funds: None
            b = slow.build(dict(r))
        finally:
            importer.fast_liquidation = slow_fast
        assert a == b, r
    assert n_fast > 300  # the fast path did run (the rest took the generic one)
    assert fast.summaries() == slow.summaries()


def test_timeless_records_get_the_clock(tmp_path, chain_kind):
    recs = [{k: v for k, v in r.items() if k != "time"} for r in varied_records(50)]
    store = new_store(tmp_path / "t.db")
    r = api.import_records(store, fixed_signer(), io.BytesIO(jsonl(recs)), batch_size=16)
    assert r.appended > 40
    store.close()
    assert verified_size(tmp_path / "t.db") == r.tree_size


def test_concurrent_writer_between_batches_falls_back_without_fork(tmp_path, chain_kind):
    """Another writer appends after the first batch: the speculative entries
    built on the old head are discarded, the rest is appended the ordinary
    way on top of the other writer's entry, and the chain stays one chain."""
    recs = varied_records(300)
    db = tmp_path / "c.db"
    store = new_store(db)
    other = Store.open(str(db))
    signer = fixed_signer()
    calls = []

    def progress(n):
        calls.append(n)
        if len(calls) == 1:
            other.append([{"kind": "liquidation", "contract": "XBTUSDTM", "id": "OTHER-1", "side": "long",
                           "qty": "1", "bankruptcy_price": "39000", "fill_price": "39100",
                           "time": "2026-03-01T00:00:00Z"}], [signer])

    r = api.import_records(store, signer, io.BytesIO(jsonl(recs)), batch_size=50, progress=progress)
    other.close()
    # every record is in, plus the other writer's one
    ref = tmp_path / "ref.db"
    reference(ref, recs, 10_000)
    c = sqlite3.connect(str(db))
    got = c.execute("SELECT COUNT(*), MAX(seq) FROM entries").fetchone()
    ids = {row[0] for row in c.execute("SELECT liquidation_id FROM entries WHERE liquidation_id IS NOT NULL")}
    c.close()
    c = sqlite3.connect(str(ref))
    ref_ids = {row[0] for row in c.execute("SELECT liquidation_id FROM entries WHERE liquidation_id IS NOT NULL")}
    ref_n = c.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    c.close()
    assert got == (ref_n + 1, ref_n)  # no gap, no fork: seq 0..n contiguous
    assert ids == ref_ids | {"OTHER-1"}
    assert r.appended == ref_n and sum(calls) == len(recs)
    # the chain verifies: each prev is the hash of the entry before it
    assert verified_size(db) == ref_n + 1


def test_head_moved_before_first_write_writes_nothing_speculative(tmp_path, monkeypatch):
    """A writer that slips in between pass 1 and the first transaction: the
    first append_prepared refuses (nothing written) and the ordinary path
    does the whole import."""
    recs = varied_records(40)
    db = tmp_path / "h.db"
    store = new_store(db)
    signer = fixed_signer()
    real = Store.append_prepared
    seen = []

    def racing(self, signers, size, prev, *rest):
        if not seen:
            other = Store.open(str(db))
            other.append([dict(CONTRACTS[0], symbol="RACE")], [signer])
            other.close()
        ok = real(self, signers, size, prev, *rest)
        seen.append(ok)
        return ok

    monkeypatch.setattr(Store, "append_prepared", racing)
    r = api.import_records(store, signer, io.BytesIO(jsonl(recs)), batch_size=10)
    store.close()
    assert seen == [False]
    c = sqlite3.connect(str(db))
    first = c.execute("SELECT contract FROM entries WHERE seq = 0").fetchone()[0]
    c.close()
    assert first == "RACE"
    assert verified_size(db) == r.appended + 1


class _DyingChain(chainsign.InlineChain):
    """Signs ``ok`` requests, then fails as a dead signing process would."""

    ok = 0

    def recv(self):
        if _DyingChain.ok <= 0:
            raise StoreError("the signing process failed")
        _DyingChain.ok -= 1
        return super().recv()


def test_signing_failure_leaves_only_whole_batches_and_resumes(tmp_path, monkeypatch):
    recs = varied_records(300)
    db = tmp_path / "f.db"
    store = new_store(db)
    signer = fixed_signer()
    monkeypatch.setattr(api, "PIPELINE_MIN_BYTES", 1 << 62)
    monkeypatch.setattr(chainsign, "InlineChain", _DyingChain)
    monkeypatch.setattr(importer, "CHUNK", 10)
    _DyingChain.ok = 7  # 70 entries signed: batch 1 (50 records) fits, batch 2 does not
    with pytest.raises(StoreError, match="signing process failed"):
        api.import_records(store, signer, io.BytesIO(jsonl(recs)), batch_size=50)
    c = sqlite3.connect(str(db))
    n = c.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    c.close()
    ref = tmp_path / "ref.db"
    reference(ref, recs[:50], 50)
    assert dump(db)[0] == dump(ref)[0]  # exactly the first batch, whole
    assert 0 < n < 60
    # a re-run resumes exactly
    monkeypatch.undo()
    api.import_records(store, signer, io.BytesIO(jsonl(recs)), batch_size=50)
    store.close()
    full = tmp_path / "full.db"
    reference(full, recs, 50)
    assert dump(db)[0] == dump(full)[0]


def test_signing_process_dies_in_pass_1_nothing_written(tmp_path, monkeypatch):
    recs = varied_records(400)
    db = tmp_path / "d.db"
    store = new_store(db)
    monkeypatch.setattr(api, "PIPELINE_MIN_BYTES", 0)
    monkeypatch.setattr(importer, "CHUNK", 5)
    real_send = chainsign.ProcessChain.send
    sent = []

    def send(self, pieces):
        real_send(self, pieces)
        sent.append(1)
        if len(sent) == 3:
            self._p.kill()
            self._p.wait()

    monkeypatch.setattr(chainsign.ProcessChain, "send", send)
    with pytest.raises(StoreError, match="signing process failed"):
        api.import_records(store, fixed_signer(), io.BytesIO(jsonl(recs)), batch_size=1000)
    store.close()
    c = sqlite3.connect(str(db))
    assert c.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 0
    assert c.execute("SELECT COUNT(*) FROM tree").fetchone()[0] == 0
    assert c.execute("SELECT COUNT(*) FROM contracts").fetchone()[0] == 0
    c.close()


def test_bad_line_late_writes_nothing_and_stops_the_child(tmp_path, monkeypatch):
    recs = varied_records(500)
    recs.insert(450, {"kind": "liquidation", "contract": "XBTUSDTM", "id": "bad", "side": "long", "qty": "1",
                      "bankruptcy_price": "39000", "fill_price": "1e5"})
    monkeypatch.setattr(api, "PIPELINE_MIN_BYTES", 0)
    children = []
    real_init = chainsign.ProcessChain.__init__

    def init(self, signer):
        real_init(self, signer)
        children.append(self._p)

    monkeypatch.setattr(chainsign.ProcessChain, "__init__", init)
    db = tmp_path / "b.db"
    store = new_store(db)
    with pytest.raises(FundledgerError, match="line 451"):
        api.import_records(store, fixed_signer(), io.BytesIO(jsonl(recs)), batch_size=20)
    store.close()
    assert len(children) == 1 and children[0].poll() is not None
    c = sqlite3.connect(str(db))
    assert c.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 0
    c.close()


def test_the_key_reaches_the_signing_process_only_through_its_pipe(tmp_path, monkeypatch):
    signer = fixed_signer()
    seen = {}
    real_popen = subprocess.Popen

    def popen(args, **kw):
        seen["args"], seen["env"] = args, kw.get("env")
        return real_popen(args, **kw)

    monkeypatch.setattr(chainsign.subprocess, "Popen", popen)
    chain = chainsign.ProcessChain(signer)
    leaf0 = hashlib.sha256(b"leaf 0").digest()
    try:
        chain.start(1, leaf0, [leaf0])
        chain.send([b'{"a":"1","prev":"', b'"}', b"x\t\ty"])
        rows, tree_rows = chain.recv()
    finally:
        chain.close()
    secrets = [signer.seed, signer.seed.hex(), signer.skey(), signer.skey().split("+", 4)[4]]  # name, id, then base64
    blob = repr(seen["args"]) + repr(seen["env"]) + repr(dict(os.environ))
    for s in secrets:
        assert (s if isinstance(s, str) else s.hex()) not in blob
    # and what it signs is what note.sign_note signs, chained to leaf0
    text = b'{"a":"1","prev":"' + base64.b64encode(leaf0) + b'"}\n'
    data = note.sign_note(text, [signer])
    leaf1 = hashlib.sha256(b"\x00" + data).digest()
    assert rows == [(1, data, leaf1, "x", None, "y")]
    # the node leaf 1 completes: stored hash index 2 (RFC 6962 MTH of two leaves)
    assert tree_rows == [(2, hashlib.sha256(b"\x01" + leaf0 + leaf1).digest())]


@pytest.mark.parametrize("start", [0, 1, 5, 7, 8, 1023])
def test_both_chain_signers_give_the_tree_builders_rows(start):
    """From any tree size and right edge, in requests of any size, both
    chain signers give the rows merkle.TreeBuilder and store.tree_rows_of
    give for the same leaves."""
    from ledger.tlog import merkle
    from ledger.store.schema import tree_rows_of

    signer = fixed_signer()
    prior = [hashlib.sha256(b"%d" % i).digest() for i in range(start)]
    tb = merkle.TreeBuilder()
    for h in prior:
        tb.append(h)
    prev = prior[-1] if prior else bytes(32)
    items = []
    for i in range(40):
        items += [b'{"n":"%d","prev":"' % i, b'"}', b"%d\t" % i]
    results = []
    for chain in (chainsign.InlineChain(signer), chainsign.ProcessChain(signer)):
        try:
            chain.start(start, prev, list(tb._stack))
            for lo, hi in ((0, 1), (1, 4), (4, 33), (33, 40)):
                chain.send(items[3 * lo : 3 * hi])
            got = [chain.recv() for _ in range(4)]
        finally:
            chain.close()
        results.append(([r for g in got for r in g[0]], [t for g in got for t in g[1]]))
    assert results[0] == results[1]
    rows, tree_rows = results[0]
    assert [r[0] for r in rows] == list(range(start, start + 40))
    assert [r[3:] for r in rows] == [(str(i), None) for i in range(40)]
    leaves = [r[2] for r in rows]
    assert leaves[0] == hashlib.sha256(b"\x00" + rows[0][1]).digest()
    want = []
    for i, h in enumerate(leaves):
        want += tree_rows_of(start + i, tb.append(h)[1])
    assert tree_rows == want and len(want) == 40 - (start + 40).bit_count() + start.bit_count()


def test_cli_import_large_enough_for_the_signing_process(tmp_path):
    """The real CLI with an input above PIPELINE_MIN_BYTES gives what the
    ordinary path gives."""
    from conftest import run_fundledger

    recs = varied_records(4500, seed=9)
    data = jsonl(recs)
    assert len(data) >= api.PIPELINE_MIN_BYTES
    src = tmp_path / "in.jsonl"
    src.write_bytes(data)
    db, key = tmp_path / "fund.db", tmp_path / "fund.key"
    store, signer = api.init_ledger(str(db), str(key), ORIGIN)
    store.close()
    p = run_fundledger("import", src, "--db", db, "--key", key, timeout=300)
    assert p.returncode == 0, p.stderr
    ref = tmp_path / "ref.db"
    ref_store = Store.create(str(ref), ORIGIN, signer.verifier().vkey())
    for k in range(0, len(recs), api.IMPORT_BATCH):
        ref_store.append(recs[k : k + api.IMPORT_BATCH], [signer])
    ref_store.close()
    assert dump(db) == dump(ref)


def test_a_malformed_result_frame_is_a_store_error_not_a_crash():
    with pytest.raises(StoreError, match="malformed result"):
        chainsign._decode_result(b"\x00garbage")
    with pytest.raises(StoreError, match="malformed result"):
        chainsign._decode_result(__import__("marshal").dumps(("rows", [])))


@pytest.mark.parametrize("start", [b"", b"\x00" * 40, b"\x00" * 40 + b"\x01", b"\x00" * 40 + b"\x02" + b"\x00" * 63])
def test_the_signing_process_refuses_a_truncated_start(start):
    """A start frame shorter than its header (size, head, edge count and the
    edge's hashes) stops the child: the parent reports a failed signing
    process, and no rows."""
    chain = chainsign.ProcessChain(fixed_signer())
    try:
        chain._pending_start = start  # what start() would have encoded, cut short
        chain.send([])
        with pytest.raises(StoreError, match="signing process failed"):
            chain.recv()
    finally:
        chain.close()


@pytest.mark.parametrize("pipelined", [False, True])
def test_an_import_leaves_no_reference_cycles_for_the_paused_collector(tmp_path, monkeypatch, pipelined):
    """import_records pauses Python's cyclic collector: sound only because
    an import frees everything by reference counting. A collection right
    after finds nothing, whatever the input's size."""
    import gc

    monkeypatch.setattr(api, "PIPELINE_MIN_BYTES", 0 if pipelined else 1 << 62)
    store = new_store(tmp_path / "g.db")
    gc.collect()
    gc.disable()  # else the first allocation after the import would collect what it left
    try:
        for recs in (varied_records(300), varied_records(3000)):
            api.import_records(store, fixed_signer(), io.BytesIO(jsonl(recs)), batch_size=500)
            assert gc.collect() == 0
    finally:
        gc.enable()
        store.close()


def test_the_collector_is_restored_after_an_import_however_it_ends(tmp_path):
    import gc

    store = new_store(tmp_path / "r.db")
    good = jsonl(varied_records(50))
    bad = good + b'{"kind":"liquidation","contract":"NOPE"}\n'
    try:
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            api.import_records(store, fixed_signer(), io.BytesIO(good))
            assert gc.isenabled() is enabled
            with pytest.raises(FundledgerError):
                api.import_records(store, fixed_signer(), io.BytesIO(bad))
            assert gc.isenabled() is enabled
    finally:
        gc.enable()
        store.close()
