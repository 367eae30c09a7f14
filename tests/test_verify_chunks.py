"""The verifier's parallel path: chunks checked in worker processes, applied
in order by the main process. Whatever the chunk size, the worker count and
where contracts and key rotations fall, the result is the one the main
process alone gives; collisions of the hashed id set are settled exactly."""

from __future__ import annotations

import base64
import json

import pytest
from state_util import legacy_json, read_state

from ledger.format import note
from ledger.verify import accelerator, database
from ledger.verify import run as verify
from ledger.verify.reference import Chain, KeyHistory
from ledger.verify.tiles import TileChecker
from publish.export import export
from ledger.errors import VerificationError

from conftest import ORIGIN


def liquidations(start, n, contract="XBTUSDTM"):
    return [{"kind": "liquidation", "contract": contract, "id": f"L-{i}", "side": "short" if i % 3 else "long",
             "qty": str(1 + i % 4), "bankruptcy_price": "40000", "fill_price": str(39980 + (i % 9) * 5)}
            for i in range(start, start + n)]


@pytest.fixture
def eventful(ledger, tmp_path):
    """A log where a contract is listed late and the key is rotated midway,
    so that chunks are checked with tables that change under them."""
    ledger.contract()
    ledger.append(*liquidations(0, 70))
    ledger.contract("ETHUSDTM", "USDT", 6, "linear", "0.01")  # listed at seq 71
    ledger.append(*liquidations(70, 30), *liquidations(0, 20, "ETHUSDTM"))
    new = note.generate_signer(ORIGIN)
    ledger.store.rotate_key(ledger.signer, new)  # seq 122
    ledger.signer = new
    ledger.append(*liquidations(100, 40), *liquidations(20, 25, "ETHUSDTM"))
    ledger.checkpoint()
    out = str(tmp_path / "export")
    export(ledger.store, out)
    return ledger, out


@pytest.mark.parametrize("chunk", [1, 7, 16, 1024])
@pytest.mark.parametrize("workers", [1, 2])
def test_any_chunking_gives_the_same_result(eventful, monkeypatch, chunk, workers):
    ledger, out = eventful
    reference = verify.verify_path(ledger.db, workers=1).as_json()
    assert reference["size"] == 188
    monkeypatch.setattr(accelerator, "CHUNK", chunk)
    for source in (ledger.db, out):
        got = verify.verify_path(source, workers=workers).as_json()
        assert (got["root"], got["contracts"], got["size"]) == (reference["root"], reference["contracts"], 188)


def test_every_entry_takes_the_worker_path_when_it_can(eventful, monkeypatch):
    """Only contract and key entries (and what a worker could not know yet)
    go through the main process's full check."""
    ledger, out = eventful
    full = []
    real = verify._Run.full

    def counting(self, data, row):
        full.append(self.seq)
        return real(self, data, row)

    monkeypatch.setattr(verify._Run, "full", counting)
    monkeypatch.setattr(accelerator, "CHUNK", 16)
    verify.verify_path(out, workers=1)
    assert full == [0, 71, 122]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("seq", [15, 16, 17, 130])
def test_a_fault_at_a_chunk_edge_is_named(eventful, monkeypatch, workers, seq):
    ledger, out = eventful
    import tamper_util as tu

    def flip(e: bytes) -> bytes:
        b = bytearray(e)
        b[-10] ^= 0x01  # inside the signature's base64
        return bytes(b)

    tu.edit_bundle_entry(__import__("pathlib").Path(out), seq, 188, flip)
    monkeypatch.setattr(accelerator, "CHUNK", 16)
    with pytest.raises(VerificationError) as e:
        verify.verify_path(out, workers=workers)
    assert e.value.seq == seq


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("seq", [15, 16, 17, 130])
def test_a_signature_that_does_not_verify_is_named(eventful, monkeypatch, workers, seq):
    """A well-formed signature line by the right key over another text: the
    entry passes every other fast check, and the chunk's batch of
    signature verifications is what catches it."""
    ledger, out = eventful
    import tamper_util as tu

    other = ledger.store.entry(seq - 3)
    line = other[other.rindex(b"\n", 0, len(other) - 1):]

    def swap(e: bytes) -> bytes:
        return e[: e.rindex(b"\n", 0, len(e) - 1)] + line

    tu.edit_bundle_entry(__import__("pathlib").Path(out), seq, 188, swap)
    monkeypatch.setattr(accelerator, "CHUNK", 16)
    with pytest.raises(VerificationError) as e:
        verify.verify_path(out, workers=workers)
    assert (e.value.seq, str(e.value)) == (seq, f"seq {seq}: signature does not verify")


def test_id_hash_collisions_are_settled_exactly(eventful, monkeypatch):
    """With a hash that collides all the time the verdicts stay exact: an
    honest log passes, a replayed id is still a duplicate."""
    ledger, out = eventful
    monkeypatch.setattr(accelerator, "id_hash", lambda key, contract, lid: len(lid) % 2)
    assert verify.verify_path(out, workers=1).tree_size == 188
    seen = accelerator.IdSet(confirm=lambda pair: pair == ("XBTUSDTM", "L-1"))
    seen.add(("XBTUSDTM", "L-1"))
    assert ("XBTUSDTM", "L-1") in seen
    assert ("XBTUSDTM", "L-3") not in seen  # same hash, not recorded
    seen.add(("XBTUSDTM", "L-3"))
    assert ("XBTUSDTM", "L-3") in seen  # known to collide: answered without a re-read
    assert ("XBTUSDTM", "L-22") not in seen  # another hash


def test_id_set_without_confirm_counts_a_hit_as_seen():
    seen = accelerator.IdSet(key=bytes(16))
    seen.add(("A", "1"))
    assert ("A", "1") in seen and ("A", "2") not in seen


def test_state_of_version_1_is_still_read(ledger, tmp_path):
    """A state saved before ids were hashed (pairs of strings) resumes."""
    ledger.contract()
    ledger.append(*liquidations(0, 10))
    ledger.checkpoint()
    state = tmp_path / "state.json"
    verify.verify_path(ledger.db, state_path=str(state))
    saved = legacy_json(state)
    assert len(saved["seen"]) == 4 * ((8 * 10 + 2) // 3)  # base64 of 10 uint64
    old = {k: v for k, v in saved.items() if k not in ("seen_key", "seen", "seen_exact")}
    old.update(version=1, seen=[["XBTUSDTM", f"L-{i}"] for i in range(10)])
    state.write_text(json.dumps(old))
    ledger.append(*liquidations(10, 5))
    ledger.checkpoint()
    r = verify.verify_path(ledger.db, state_path=str(state))
    assert r.entries_checked == 5
    assert read_state(state)["version"] == 4 and len(read_state(state)["ids"]) == 15


# --- the worker's fast path never accepts what the full check refuses ----------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ledger.format import entry as entry_mod  # noqa: E402
from ledger.tlog import merkle  # noqa: E402
from ledger.rules.fund import Contract, Fund, FundBook  # noqa: E402

_SIGNER = note.generate_signer(ORIGIN)
_CONTRACTS = {
    "XBTUSDTM": ("USDT", 8, "linear", "0.001", 0),
    "XBTUSDM": ("XBT", 8, "inverse", "1", 1),
}
_TRICKY = ["0", "-0", "1e3", " 1", "01", "1.0", "1.", ".5", "+1", "1_0", "", "-1", "0.00000000", "-0.00000000",
           "10000000000.00000000", "L-1 ", " L-1", "XBTUSDM", "short", "long", "2026-02-30T00:00:00Z",
           "2026-11-23T18:59:07.120Z", "2026-11-23T18:59:07Z", "39000", "39100", "1.50000000", "A" * 129,
           "3.0", "03", "3.", "039000", "39000.0", "39100.00", "39120.50", "2026-11-23T18:59:07.1230Z",
           "0.0000000", "00.00000000", "0.000000000", "2026-11-23T24:00:00Z", "2026-11-23t18:59:07Z",
           "2026-11-23T18:59:07.123+00:00", "2025-02-29T00:00:00Z", "2024-02-29T00:00:00Z"]


def _book(balance: int, fmt2: bool = False) -> FundBook:
    """The two funds at ``balance``; in format 2 (from seq 2), each with a
    head at seq 3 or 4 whose leaf hash is known."""
    book = FundBook()
    for i, (symbol, (currency, scale, ctype, mult, cseq)) in enumerate(_CONTRACTS.items()):
        fund = book.funds[symbol] = Fund(Contract(symbol, currency, scale, ctype, mult, cseq), balance=balance)
        if fmt2:
            fund.last_seq, fund.last_leaf = 3 + i, merkle.leaf_hash(f"head of {symbol}".encode())
            book.chains.index[symbol] = i
    if fmt2:
        book.chains.since = 2
    return book


def _honest_text(contract: str, side: str, mark: bool, balance: int, seq: int, prev: bytes, fmt2: bool = False) -> bytes:
    record = {"kind": "liquidation", "contract": contract, "id": "L-7", "side": side, "qty": "3",
              "bankruptcy_price": "39000", "fill_price": "39100"}
    if mark:
        record["mark_price"] = "39120.5"
    fields = _book(balance, fmt2).liquidation_entry(record)
    return entry_mod.entry_text(fields, seq, prev, "2026-11-23T18:59:07.123Z")


def _full_path_accepts(data: bytes, seq: int, prev: bytes, before: int, fmt2: bool = False) -> tuple | None:
    """The main process's full check of ``data`` with the fund at ``before``:
    (delta, paid, adl, balance) if it passes, else None."""
    book = _book(before, fmt2)
    try:
        Chain(book, KeyHistory(_SIGNER.verifier()), prev=prev, seq=seq).check(data)
    except Exception:  # noqa: BLE001 - any refusal
        return None
    _, delta, paid, adl, balance = book._last
    return delta, paid, adl, balance


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    contract=st.sampled_from(sorted(_CONTRACTS)),
    side=st.sampled_from(["long", "short"]),
    mark=st.booleans(),
    balance=st.sampled_from([0, 5, 10**8, 10**12]),
    edit=st.one_of(
        st.none(),
        st.tuples(st.just("char"), st.integers(0, 400), st.characters(min_codepoint=0x20, max_codepoint=0x7e)),
        st.tuples(st.just("cut"), st.integers(0, 400), st.integers(1, 3)),
        st.tuples(st.just("field"), st.sampled_from(["adl", "balance", "bankruptcy_price", "contract", "delta",
                                                     "fill_price", "id", "mark_price", "paid", "qty", "side",
                                                     "time", "prev", "chain_seq", "chain_prev"]),
                  st.sampled_from(_TRICKY + [4, 3, "3", base64.b64encode(merkle.leaf_hash(b"head of XBTUSDM")).decode()])),
    ),
    fmt2=st.booleans(),
)
def test_fast_path_accepts_only_what_the_full_check_accepts(contract, side, mark, balance, edit, fmt2):
    """Format 1 and format 2 alike: an entry the fast path passes, with the
    chain link it reports naming the fund's head (as the main process
    checks, ledger/verify/run.py ``_links``), passes the full check with
    the same figures."""
    seq, prev = 9, merkle.leaf_hash(b"entry 8")
    text = _honest_text(contract, side, mark, balance, seq, prev, fmt2)
    if edit is not None and edit[0] == "char":
        i = edit[1] % (len(text) - 1)
        text = text[:i] + edit[2].encode() + text[i + 1:]
    elif edit is not None and edit[0] == "cut":
        i = edit[1] % (len(text) - 1)
        text = text[:i] + text[i + edit[2]:]
    elif edit is not None:
        import json as _json

        obj = _json.loads(text)
        obj[edit[1]] = edit[2]
        text = _json.dumps(obj, separators=(",", ":"), sort_keys=edit[2] != "short").encode() + b"\n"
    if not text.endswith(b"\n") or b"\n" in text[:-1]:
        return
    data = note.sign_note(text, [_SIGNER])
    v = _SIGNER.verifier()
    leaf = merkle.leaf_hash(data)
    for prev_b64 in (None, base64.b64encode(prev).decode()):
        fast = None
        try:
            fast = accelerator._fast_liquidation(data, seq, v, v.public_key, _book(0), prev_b64, leaf, None, None,
                                            bytes(16))
        except Exception:  # noqa: BLE001 - the worker treats an error as "leave it to the main process"
            fast = None
        if fast is None:
            continue
        symbol, before, delta, paid, adl, new_balance, _, _, _, chain, entry_prev, signed = fast
        # what check_chunk verifies afterwards: this entry's own text and signature
        assert signed[64:] == text and accelerator.crypto_sign_open(signed, v.public_key) == text
        if prev_b64 is None and entry_prev != base64.b64encode(prev).decode():
            continue  # the main process refuses a chunk's first prev that is not the entry before
        head = _book(0, fmt2).funds[symbol]
        if not verify._links(2 if fmt2 else None, head, chain):
            continue  # the main process refuses a link that does not name the fund's head, or the wrong format
        assert _full_path_accepts(data, seq, prev, before, fmt2) == (delta, paid, adl, new_balance), (text, fast)
    if edit is None:  # the honest entry takes the fast path, at the balance it was built on
        fast = accelerator._fast_liquidation(data, seq, v, v.public_key, _book(0), None, leaf, None, None, bytes(16))
        assert fast is not None and fast[1] == balance
        assert verify._links(2 if fmt2 else None, _book(0, fmt2).funds[fast[0]], fast[9])


def test_a_run_of_registrations_costs_one_recheck(ledger, monkeypatch):
    """Contracts listed one after another at the start: the rest of the
    chunk is sent back to a worker once, not once per contract."""
    for s in ("A", "B", "C", "D", "E"):
        ledger.contract(f"{s}USDTM")
    ledger.append(*[dict(r, contract=f"{'ABCDE'[i % 5]}USDTM") for i, r in enumerate(liquidations(0, 100))])
    ledger.checkpoint()
    calls = []
    real = accelerator.check_chunk
    monkeypatch.setattr(accelerator, "check_chunk", lambda *a: calls.append(a[2:4]) or real(*a))
    assert verify.verify_path(ledger.db, workers=1).tree_size == 105
    assert calls == [(0, 105), (5, 105)]


class _Tiles(TileChecker):
    """A TileChecker that records the tiles it would compare."""

    def __init__(self):
        super().__init__(None)
        self.compared = []

    def _compare(self, level, index, hashes):
        self.compared.append((level, index, b"".join(hashes)))


@pytest.mark.parametrize("start", [0, 5, 255, 256, 1024, 65535 - 700])
def test_tile_runs_are_leaf_by_leaf(start):
    """add_run over runs of any length gives the tiles add_built gives leaf
    by leaf, including the level-1 and level-2 tiles that leaves complete."""
    from ledger.tlog import merkle

    leaves = [merkle.leaf_hash(b"%d" % i) for i in range(start + 70_000)]
    one, many = _Tiles(), _Tiles()
    b1, b2 = merkle.TreeBuilder(), merkle.TreeBuilder()
    for leaf in leaves[:start]:  # the same state before the runs
        one.add_built(b1.append(leaf)[1])
        many.add_built(b2.append(leaf)[1])
    for leaf in leaves[start:]:
        one.add_built(b1.append(leaf)[1])
    at, size = start, 1
    while at < len(leaves):
        run = leaves[at : at + size]
        many.add_run(at, run, b2.extend(run))
        at += len(run)
        size = size * 3 % 1031 + 1
    assert many.compared == one.compared and (many.levels, many.index) == (one.levels, one.index)
    assert {c[0] for c in one.compared} >= {0, 1}


def test_a_full_database_run_reads_the_file_ahead(eventful, monkeypatch):
    """The file is advised in order from its start, never more than
    PREFETCH_AHEAD_BYTES past the verification's progress; a database run
    starts it and stops it, with the same verdict."""
    import os
    import threading

    ledger, _ = eventful
    ledger.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every row in the main file
    calls = []
    monkeypatch.setattr(database, "PREFETCH_AHEAD_BYTES", 8192)
    monkeypatch.setattr(database.os, "posix_fadvise", lambda fd, off, n, advice: calls.append((off, n, advice)),
                        raising=False)
    size = os.path.getsize(ledger.db)
    steps = iter([0.0, 0.0, 0.1, 0.25, 0.5, 0.5, 0.9] + [1.0] * 100)
    done = []
    fd = os.open(ledger.db, os.O_RDONLY)
    try:
        database._prefetch(fd, lambda: done.append(next(steps)) or done[-1], threading.Event())
        os.fstat(fd)  # still open: closing it is the caller's business
    finally:
        os.close(fd)
    assert calls[0][0] == 0 and all(a[0] + a[1] == b[0] for a, b in zip(calls, calls[1:]))
    assert [off + n for off, n, _ in calls] == sorted({min(size, int(p * size) + 8192) for p in done})
    assert {c[2] for c in calls} == {os.POSIX_FADV_WILLNEED} and len(calls) > 3 and calls[-1][0] + calls[-1][1] == size

    calls.clear()
    reference = verify.verify_path(ledger.db, workers=1).as_json()
    assert calls and calls[0][0] == 0  # a full database run reads ahead
    monkeypatch.delattr(database.os, "posix_fadvise")  # not on every OS: then no read-ahead
    assert verify.verify_path(ledger.db, workers=2).as_json()["root"] == reference["root"]


def test_the_read_ahead_descriptor_outlives_the_connection(eventful, monkeypatch):
    """Closing a descriptor of the database file would drop the process's
    locks on it, the read snapshot's too: it is closed only after SQLite."""
    import os

    ledger, _ = eventful
    monkeypatch.setattr(database.os, "posix_fadvise", lambda *a: None, raising=False)
    source = database.DbSource(ledger.db)
    stop = source.prefetch(lambda: 0.0)
    stop()
    fd = source._prefetch_fd
    os.fstat(fd)  # stopped, still open
    order = []
    real_close = source.store.close
    monkeypatch.setattr(source.store, "close", lambda: order.append("sqlite") or real_close())
    real_os_close = os.close
    monkeypatch.setattr(database.os, "close", lambda n: order.append(n) or real_os_close(n))
    source.close()
    assert order == ["sqlite", fd]
