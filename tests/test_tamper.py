"""Tamper suite: `fundledger verify` passes on an honest ledger with exactly
the balances an independent recomputation gives, and fails, naming the first
bad seq, on every kind of tampering with the database, the export or the
history (even by the key holder, given an old checkpoint).

Every case works on a fresh copy. Database edits go through plain sqlite3
after dropping the append-only triggers; export edits rewrite the files.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ORIGIN, Ledger
from ledger.ops import api
from ledger.tlog import merkle
from ledger.format import note
from ledger.ops.keys import load_key_file
from publish.export import export as do_export

import tamper_util as tu

# --- the honest ledgers --------------------------------------------------------------------------

CONTRACTS = [
    {"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8, "type": "linear", "multiplier": "0.001"},
    {"kind": "contract", "symbol": "XBTUSDM", "currency": "XBT", "scale": 8, "type": "inverse", "multiplier": "100"},
    {"kind": "contract", "symbol": "ETHUSDTM", "currency": "USDT", "scale": 6, "type": "linear", "multiplier": "0.01"},
]

# ETHUSDTM, scripted: six surpluses, a shortfall that drains the fund (rest
# to ADL), one at zero (all ADL), a surplus with a floored delta, and a last
# shortfall that drains it again.
ETH_SCRIPT = [
    ("long", "100", "2000", "2003.5"),
    ("short", "40", "2010.25", "2001"),
    ("long", "7", "1999", "2000.125"),
    ("short", "100", "2000", "1996.5"),
    ("long", "3", "2000", "2001"),
    ("short", "12.5", "2000", "1999"),
    ("long", "1000", "2000", "1990"),
    ("short", "10", "2000", "2001"),
    ("short", "50", "2000", "1999.1234567"),
    ("long", "100", "2000", "1990"),
]


def _time(i: int) -> str:
    return f"2026-11-23T{18 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}.{i % 9 + 1}Z"


def _price(r: random.Random, lo: int, hi: int) -> tuple[int, str]:
    base = r.randint(lo, hi)
    return base, f"{base}{r.choice(['', '.5', '.25', '.75', '.125'])}"


def random_liquidation(r: random.Random, n: int, contract: str, t: int) -> dict:
    side = r.choice(["long", "short"])
    if contract == "XBTUSDM":
        qty = str(r.randint(1, 500))
    else:
        qty = r.choice([str(r.randint(1, 2000)), f"{r.randint(1, 99)}.{r.randint(1, 9)}"])
    b, b_s = _price(r, 30000, 45000) if contract != "ETHUSDTM" else _price(r, 1800, 2200)
    off = r.randint(1, 300 if contract != "ETHUSDTM" else 30)
    surplus = r.random() < 0.65
    _, f_s = _price(r, b + off, b + off) if surplus == (side == "long") else _price(r, b - off, b - off)
    rec = {"kind": "liquidation", "contract": contract, "id": f"{contract[:3]}-{n}", "side": side, "qty": qty,
           "bankruptcy_price": b_s, "fill_price": f_s, "time": _time(t)}
    if r.random() < 0.5:
        _, rec["mark_price"] = _price(r, b - 50, b + 50)
    return rec


def honest_records() -> list[dict]:
    """3 contracts and 40 liquidations (43 entries)."""
    r = random.Random(2026)
    recs = [dict(c, time=_time(i)) for i, c in enumerate(CONTRACTS)]
    eth = iter(ETH_SCRIPT)
    for i in range(40):
        t = len(recs)
        if i % 4 == 3:
            side, qty, b, f = next(eth)
            recs.append({"kind": "liquidation", "contract": "ETHUSDTM", "id": f"ETH-{i}", "side": side, "qty": qty,
                         "bankruptcy_price": b, "fill_price": f, "time": _time(t)})
        else:
            recs.append(random_liquidation(r, i, ["XBTUSDTM", "XBTUSDM", "XBTUSDTM"][i % 4 % 3], t))
    return recs


def big_records() -> list[dict]:
    """3 contracts and 297 liquidations (300 entries: a full tile and a partial one)."""
    r = random.Random(300)
    recs = [dict(c, time=_time(i)) for i, c in enumerate(CONTRACTS)]
    for i in range(297):
        recs.append(random_liquidation(r, i, ["XBTUSDTM", "XBTUSDM", "ETHUSDTM"][i % 3], len(recs)))
    return recs


def model_of(records) -> tu.Model:
    m = tu.Model()
    for seq, rec in enumerate(records):
        m.apply(seq, rec)
    return m


H_SIZE, H_CP1 = 43, 20
B_SIZE = 300
MID = 30  # a liquidation after the first checkpoint


def build_honest(L: Ledger, exports: Path | None = None) -> SimpleNamespace:
    """Append the honest records to ``L`` with a checkpoint at 20 and at 43.
    With ``exports``: snapshot the database and export at size 20 too."""
    recs = honest_records()
    r = L.append(*recs[:H_CP1])
    assert r.appended == list(range(H_CP1))
    cp20 = L.checkpoint()[1]
    ns = SimpleNamespace(records=recs, cp20=cp20)
    if exports is not None:
        ns.db20 = str(exports / "fund20.db")
        src, dst = sqlite3.connect(L.db), sqlite3.connect(ns.db20)
        src.backup(dst)
        src.close(), dst.close()
        ns.export20 = exports / "export20"
        do_export(L.store, str(ns.export20))
    r = L.append(*recs[H_CP1:])
    assert r.appended == list(range(H_CP1, H_SIZE)) and not r.duplicates
    ns.cp43 = L.checkpoint()[1]
    return ns


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    d = tmp_path_factory.mktemp("honest")
    db, key = str(d / "fund.db"), str(d / "fund.key")
    store, signer = api.init_ledger(db, key, ORIGIN)
    L = Ledger(d, db, key, store, signer)
    ns = build_honest(L, d)
    ns.export = d / "export"
    do_export(store, str(ns.export))
    store.close()
    ns.db, ns.key, ns.dir = db, key, d
    for name in ("cp20", "cp43"):
        (d / name).write_bytes(getattr(ns, name))
        setattr(ns, name + "_path", d / name)
    return ns


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    d = tmp_path_factory.mktemp("big")
    db, key = str(d / "fund.db"), str(d / "fund.key")
    store, signer = api.init_ledger(db, key, ORIGIN)
    recs = big_records()
    for i in range(0, len(recs), 100):  # batches
        store.append(recs[i : i + 100], [signer])
    store.add_checkpoint([signer])
    exp = d / "export"
    do_export(store, str(exp))
    store.close()
    return SimpleNamespace(db=db, key=key, export=exp, records=recs, dir=d)


@pytest.fixture
def hdb(honest, tmp_path):
    """A fresh copy of the honest database."""
    return tu.copy_ledger(honest.db, tmp_path / "fund.db")


@pytest.fixture
def hexp(honest, tmp_path):
    return tu.copy_export(honest.export, tmp_path / "export")


@pytest.fixture
def bexp(big, tmp_path):
    return tu.copy_export(big.export, tmp_path / "export")


def expect_fail(source, seq, *extra, reason=None, cli=False):
    """Verification fails with exit 1 and {"ok":false,"seq":seq,"reason":..}:
    the real CLI with ``cli``, else ``verify_path`` in-process and the same
    JSON (the CLI prints ``failure_json``; a subprocess costs ~0.3 s)."""
    if cli:
        rc, obj, err = tu.cli_verify(source, *extra)
        assert rc == 1, (rc, obj, err)
        assert obj is not None, err
    else:
        trusted = extra[1] if extra[:1] == ("--trusted",) else None
        obj = tu.lib_verify(source, trusted)
    assert set(obj) == {"ok", "seq", "reason"} and obj["ok"] is False, obj
    assert obj["seq"] == seq, obj
    if reason is not None:
        assert re.search(reason, obj["reason"]), obj
    return obj


def expect_ok(source, *extra, cli=False) -> dict:
    if cli:
        rc, obj, err = tu.cli_verify(source, *extra)
        assert rc == 0, (rc, obj, err)
    else:
        obj = tu.lib_verify(source, extra[1] if extra[:1] == ("--trusted",) else None)
    assert obj["ok"] is True, obj
    return obj


def bump(amount: str) -> str:
    """A different amount at the same scale (one more in the integer part)."""
    whole, _, frac = amount.partition(".")
    return f"{int(whole) + 1}" + (f".{frac}" if frac else "")


# --- honest ledgers verify with the independently recomputed balances ----------------------------


def check_report(obj: dict, records: list[dict], leaves: list[bytes]) -> None:
    assert obj["ok"] is True and obj["size"] == len(records)
    assert obj["root"] == tu.b64(tu.mth([tu.leaf(d) for d in leaves]))
    assert obj["contracts"] == model_of(records).summaries()


def test_honest_fixture_covers_the_rules():
    m = model_of(honest_records())
    assert m.events["credit"] >= 5 and m.events["payout"] >= 3 and m.events["adl"] >= 2
    assert "ETHUSDTM" in m.events["drained"]
    s = {f["contract"]: f for f in m.summaries()}
    assert s["ETHUSDTM"]["balance"] == "0.000000" and s["ETHUSDTM"]["adl"] != "0.000000"
    assert s["XBTUSDM"]["type"] == "inverse" and s["XBTUSDM"]["balance"] != "0.00000000"
    assert sum(f["liquidations"] for f in s.values()) == 40


def test_honest_ledger_fixture_db_and_export_verify(ledger, tmp_path):
    """Built in the conftest ``ledger`` fixture; the real CLI, db and export."""
    ns = build_honest(ledger)
    ledger.store.close()
    leaves = [d for (d,) in sqlite3.connect(ledger.db).execute("SELECT data FROM entries ORDER BY seq")]
    assert len(leaves) == H_SIZE
    obj = expect_ok(ledger.db, cli=True)
    assert {"ok", "size", "root", "contracts"} <= set(obj)
    check_report(obj, ns.records, leaves)
    exp = tmp_path / "pub"
    p = tu.run_fundledger("export", str(exp), "--db", ledger.db)
    assert p.returncode == 0, p.stderr
    check_report(expect_ok(exp, cli=True), ns.records, leaves)
    # the checkpoint is the one the ledger signed
    assert (exp / "checkpoint").read_bytes() == ns.cp43


def test_honest_big_db_and_export_verify(big):
    leaves = [d for (d,) in sqlite3.connect(big.db).execute("SELECT data FROM entries ORDER BY seq")]
    for src in (big.db, big.export):
        check_report(expect_ok(src, cli=True), big.records, leaves)
    assert (big.export / "tile/0/000").stat().st_size == 256 * 32
    assert (big.export / "tile/0/001.p/44").stat().st_size == 44 * 32
    assert (big.export / "tile/1/000.p/1").stat().st_size == 32
    assert (big.export / "tile/entries/000").exists() and (big.export / "tile/entries/001.p/44").exists()


@pytest.mark.parametrize("which", ["db", "export"])
def test_honest_trusted_checkpoints_pass(honest, which):
    src = honest.db if which == "db" else honest.export
    for cp in (honest.cp20_path, honest.cp43_path):
        assert expect_ok(src, "--trusted", cp)["size"] == H_SIZE


# --- database tampering -----------------------------------------------------------------------------


@pytest.mark.parametrize("sync", [False, True], ids=["data-only", "derived-synced"])
def test_db_amount_edited_signature_invalid(hdb, sync):
    conn = tu.open_rw(hdb)
    data = tu.entry_data(conn, MID)
    text, sigs = tu.split_entry(data)
    obj = json.loads(text)
    obj["balance"] = bump(obj["balance"])
    tu.set_data(conn, MID, tu.canonical(obj) + b"\n" + sigs, sync=sync)
    conn.close()
    expect_fail(hdb, MID, reason="balance", cli=True)


@pytest.mark.parametrize(
    "sql, seq",
    [
        (f"UPDATE entries SET balance = '1' || balance WHERE seq = {MID}", MID),
        ("UPDATE entries SET delta = '-' || delta WHERE seq = 12", 12),
        ("UPDATE entries SET liquidation_id = 'X' WHERE seq = 35", 35),
        ("UPDATE entries SET time = '2020-01-01T00:00:00Z' WHERE seq = 2", 2),
        ("UPDATE entries SET leaf_hash = zeroblob(32) WHERE seq = 5", 5),
        # a leaf's hash is entries.leaf_hash: a row for it in tree is one too many
        (f"INSERT INTO tree VALUES ({merkle.stored_hash_index(0, MID)}, zeroblob(32))", MID),
        (f"INSERT INTO tree SELECT {merkle.stored_hash_index(0, MID)}, leaf_hash FROM entries WHERE seq = {MID}", MID),
        # hash (2, 7) covers leaves 28..31: stored when leaf 31 is appended
        (f"UPDATE tree SET hash = zeroblob(32) WHERE id = {merkle.stored_hash_index(2, 7)}", 31),
        ("UPDATE contracts SET balance = '1' || balance WHERE symbol = 'XBTUSDTM'", None),
        ("UPDATE contracts SET adl = '0.000000' WHERE symbol = 'ETHUSDTM'", None),
        ("UPDATE checkpoints SET root = zeroblob(32) WHERE id = 1", None),
    ],
    ids=["entries.balance", "entries.delta", "entries.liquidation_id", "entries.time", "entries.leaf_hash",
         "tree.leaf-zero", "tree.leaf-copy", "tree.node", "contracts.balance", "contracts.adl", "checkpoints.root"],
)
def test_db_only_a_derived_column_changed(hdb, sql, seq):
    conn = tu.open_rw(hdb)
    assert conn.execute(sql).rowcount == 1
    conn.close()
    expect_fail(hdb, seq)


@pytest.mark.parametrize("seq", [0, 17, MID])
def test_db_row_deleted_in_the_middle(hdb, seq):
    conn = tu.open_rw(hdb)
    conn.execute("DELETE FROM entries WHERE seq = ?", (seq,))
    conn.close()
    expect_fail(hdb, seq, reason="missing")


def test_db_last_row_deleted_while_a_checkpoint_covers_it(hdb):
    conn = tu.open_rw(hdb)
    conn.execute("DELETE FROM entries WHERE seq = ?", (H_SIZE - 1,))
    conn.close()
    expect_fail(hdb, H_SIZE - 1, reason="missing", cli=True)


def test_db_two_rows_swapped(hdb):
    conn = tu.open_rw(hdb)
    a, b = (conn.execute("SELECT * FROM entries WHERE seq = ?", (s,)).fetchone() for s in (MID, MID + 1))
    conn.execute("DELETE FROM entries WHERE seq IN (?, ?)", (MID, MID + 1))
    ph = ",".join("?" * len(a))
    conn.execute(f"INSERT INTO entries VALUES ({ph})", (MID, *b[1:]))
    conn.execute(f"INSERT INTO entries VALUES ({ph})", (MID + 1, *a[1:]))
    conn.close()
    expect_fail(hdb, MID, reason="prev", cli=True)


@pytest.mark.parametrize("src", [1, MID, H_SIZE - 1])
def test_db_row_duplicated_at_the_end(hdb, src):
    conn = tu.open_rw(hdb)
    row = conn.execute("SELECT * FROM entries WHERE seq = ?", (src,)).fetchone()
    conn.execute(f"INSERT INTO entries VALUES ({','.join('?' * len(row))})", (H_SIZE, *row[1:]))
    conn.close()
    expect_fail(hdb, H_SIZE)


def test_db_entry_signed_by_a_foreign_key(hdb):
    foreign = note.generate_signer(ORIGIN)
    conn = tu.open_rw(hdb)
    text, _ = tu.split_entry(tu.entry_data(conn, MID))
    tu.set_data(conn, MID, tu.sign(text, foreign), sync=True)
    conn.close()
    expect_fail(hdb, MID, reason="may not sign", cli=True)


def _inflate_balance(o):
    o["balance"] = bump(o["balance"])


def _bigger_delta(o):  # the movement and the balance changed together, consistently
    o["delta"] = bump(o["delta"]) if not o["delta"].startswith("-") else o["delta"][1:]
    o["paid"] = o["adl"] = "0.000000"
    o["balance"] = bump(o["balance"])


def _shift_adl_to_fund(o):  # a shortfall entry paying less and passing more to ADL
    o["paid"], o["adl"] = o["adl"], o["paid"]


def _prices(o):
    o["fill_price"] = "1991"


@pytest.mark.parametrize("change", [_inflate_balance, _bigger_delta, _shift_adl_to_fund, _prices],
                         ids=["balance-inflated", "delta-changed", "paid-adl-swapped", "fill-price"])
@pytest.mark.parametrize("sync", [False, True], ids=["data-only", "derived-synced"])
def test_db_entry_changed_and_resigned_with_the_real_key(honest, hdb, change, sync):
    key = load_key_file(honest.key)
    conn = tu.open_rw(hdb)
    # seq 30 is the ETHUSDTM shortfall that drains the fund: paid > 0, adl > 0
    obj = tu.entry_obj(tu.entry_data(conn, MID))
    assert obj["contract"] == "ETHUSDTM" and obj["delta"].startswith("-") and obj["adl"] != "0.000000"
    change(obj)
    tu.set_data(conn, MID, tu.sign(tu.canonical(obj), key), sync=sync)
    # the next entry's prev is now broken as well: the changed one must be named
    nxt = tu.entry_obj(tu.entry_data(conn, MID + 1))
    assert nxt["prev"] != tu.b64(tu.leaf(tu.entry_data(conn, MID)))
    conn.close()
    expect_fail(hdb, MID)


NONCANONICAL = {
    "spaces": lambda o: json.dumps(o, sort_keys=True).encode() + b"\n",
    "reordered-keys": lambda o: json.dumps(dict(reversed(list(sorted(o.items())))), separators=(",", ":")).encode() + b"\n",
    "qty-trailing-zero": lambda o: tu.canonical(dict(o, qty=o["qty"] + ".0")),
    "qty-as-integer": lambda o: tu.canonical(dict(o, qty=int(o["qty"]))),
    "price-leading-zero": lambda o: tu.canonical(dict(o, bankruptcy_price="0" + o["bankruptcy_price"])),
    "escaped-letter": lambda o: tu.canonical(o).replace(b'"ETHUSDTM"', b'"\\u0045THUSDTM"'),
    "escaped-slash": lambda o: tu.canonical(dict(o, id=o["id"] + "/")).replace(b"/", b"\\/"),
    "trailing-space": lambda o: tu.canonical(o)[:-1] + b" \n",
    "time-utc-offset": lambda o: tu.canonical(dict(o, time=o["time"][:-1] + "+00:00")),
    "time-trailing-zero": lambda o: tu.canonical(dict(o, time=o["time"][:-1] + "0Z")),
    "time-lowercase-z": lambda o: tu.canonical(dict(o, time=o["time"][:-1] + "z")),
}


@pytest.mark.parametrize("spelling", list(NONCANONICAL))
def test_db_same_meaning_non_canonical_json_signed_with_the_real_key(honest, hdb, spelling):
    key = load_key_file(honest.key)
    conn = tu.open_rw(hdb)
    obj = tu.entry_obj(tu.entry_data(conn, MID))
    text = NONCANONICAL[spelling](obj)
    assert text != tu.canonical(obj)
    if spelling != "escaped-slash":  # that one also changes the id (new meaning, still non-canonical)
        assert json.loads(text) == obj or spelling.startswith(("qty-", "price-", "time-"))
    tu.set_data(conn, MID, tu.sign(text, key), sync=True)
    conn.close()
    expect_fail(hdb, MID)


def forge_appended_entry(honest, db, fields: dict) -> bytes:
    """Append a validly signed entry (correct seq and prev) and a new valid checkpoint."""
    key = load_key_file(honest.key)
    conn = tu.open_rw(db)
    last = tu.entry_data(conn, H_SIZE - 1)
    obj = dict(fields, seq=H_SIZE, prev=tu.b64(tu.leaf(last)), time="2026-11-24T00:00:00Z")
    seq = tu.append_raw(conn, tu.sign(tu.canonical(obj), key))
    assert seq == H_SIZE
    cp = tu.sign_checkpoint(conn, key, ORIGIN)
    conn.close()
    return cp


UNKNOWN = {
    "withdrawal": {"kind": "withdrawal", "contract": "XBTUSDTM", "amount": "1.00000000"},
    "transfer": {"kind": "transfer", "contract": "XBTUSDTM", "to": "ETHUSDTM", "amount": "1.00000000"},
    "adjustment": {"kind": "adjustment", "contract": "ETHUSDTM", "balance": "1000.000000"},
    "no-kind": {"contract": "XBTUSDTM"},
    "contract-registered-again": {"kind": "contract", "contract": "XBTUSDTM", "currency": "USDT", "scale": 8,
                                  "type": "linear", "multiplier": "0.002"},
    "liquidation-with-extra-field": None,  # filled in below
    "replayed-liquidation-id": None,  # filled in below
}
UNKNOWN_REASON = {
    "contract-registered-again": "already registered",
    "liquidation-with-extra-field": "unexpected field",
    "replayed-liquidation-id": "duplicate",
}


@pytest.mark.parametrize("kind", list(UNKNOWN))
def test_db_unknown_kind_appended_with_a_new_checkpoint(honest, hdb, tmp_path, kind):
    fields = UNKNOWN[kind]
    if kind == "replayed-liquidation-id":
        # the amounts the rules would give if the id were new: only the replay is wrong
        from ledger.verify.run import verify_path

        book = verify_path(hdb, workers=1).book
        rec = dict(honest.records[MID])
        rec.pop("time")
        book.seen = set()  # forget the ids, to build the replay
        fields = book.build(rec)
    elif fields is None:
        fields = {"kind": "liquidation", "contract": "XBTUSDTM", "id": "NEW-1", "side": "long", "qty": "1",
                  "bankruptcy_price": "40000", "fill_price": "40100", "delta": "0.10000000", "paid": "0.00000000",
                  "adl": "0.00000000", "bonus": "5"}
        conn = sqlite3.connect(hdb)
        bal = conn.execute("SELECT balance FROM contracts WHERE symbol = 'XBTUSDTM'").fetchone()[0]
        conn.close()
        fields["balance"] = tu._amount(Fraction(bal) + Fraction("0.1"), 8)
    forge_appended_entry(honest, hdb, fields)
    reason = UNKNOWN_REASON.get(kind, "unknown entry kind")
    expect_fail(hdb, H_SIZE, reason=reason, cli=kind == "withdrawal")
    # and published as a static export
    from ledger.store.schema import Reader

    s = Reader.open(hdb)
    try:
        do_export(s, str(tmp_path / "pub"))
    finally:
        s.close()
    expect_fail(tmp_path / "pub", H_SIZE, reason=reason, cli=kind == "withdrawal")


def rewrite_history(honest, db: str, k: int) -> list[dict]:
    """The key holder rewrites entries k.. with a different liquidation at k,
    recomputes the stored tree, the summaries and signs a new checkpoint
    (older checkpoints past k are deleted). Returns the new records."""
    from ledger.rules.fund import FundBook
    from ledger.store.schema import contract_row
    from ledger.store.store import Store
    from ledger.verify.reference import rebuild

    key = load_key_file(honest.key)
    conn = tu.open_rw(db)
    conn.execute("DELETE FROM entries WHERE seq >= ?", (k,))
    conn.execute("DELETE FROM checkpoints WHERE tree_size > ?", (k,))
    tu.resync(conn)
    book = FundBook()
    for seq, data in conn.execute("SELECT seq, data FROM entries ORDER BY seq").fetchall():
        obj = tu.entry_obj(data)
        exp = rebuild(book, obj, seq)
        exp.update(seq=seq, time=obj["time"])
        book.apply(exp)
    conn.execute("DELETE FROM contracts")
    for f in book.funds.values():
        row = contract_row(f)
        conn.execute(f"INSERT INTO contracts VALUES ({','.join('?' * len(row))})", row)
    tu.restore_guards(conn)
    conn.close()
    recs = list(honest.records[:k])
    swapped = dict(honest.records[k], id="REWRITTEN-1", fill_price="2100")
    recs += [swapped, *honest.records[k + 1 :]]
    recs += [dict(honest.records[5], id="EXTRA-1", time=_time(900)), dict(honest.records[6], id="EXTRA-2", time=_time(901))]
    store = Store.open(db)
    try:
        r = store.append(recs[k:], [key])
        assert r.appended == list(range(k, len(recs))) and not r.duplicates
        store.add_checkpoint([key])
    finally:
        store.close()
    return recs


@pytest.mark.parametrize("k", [10, MID])
def test_history_rewritten_and_resigned_passes_plain_verify_but_not_trusted(honest, hdb, tmp_path, k):
    recs = rewrite_history(honest, hdb, k)
    assert len(recs) == H_SIZE + 2
    conn = sqlite3.connect(hdb)
    leaves = [d for (d,) in conn.execute("SELECT data FROM entries ORDER BY seq")]
    old = [d for (d,) in sqlite3.connect(honest.db).execute("SELECT data FROM entries ORDER BY seq")]
    conn.close()
    assert leaves[:k] == old[:k] and leaves[k] != old[k]
    # the operator holds the key: without an old checkpoint, nothing to see
    obj = expect_ok(hdb)
    check_report(obj, recs, leaves)
    assert obj["contracts"] != expect_ok(honest.db)["contracts"]
    pub = tmp_path / "pub"
    from ledger.store.schema import Reader

    s = Reader.open(hdb)
    try:
        do_export(s, str(pub))
    finally:
        s.close()
    expect_ok(pub)
    # an auditor who kept yesterday's checkpoint is not fooled
    for src in (hdb, pub):
        expect_fail(src, None, "--trusted", honest.cp43_path, reason="rewritten", cli=src == hdb and k == MID)
        if k < H_CP1:
            expect_fail(src, None, "--trusted", honest.cp20_path, reason="rewritten")
        else:
            expect_ok(src, "--trusted", honest.cp20_path)


@pytest.mark.parametrize("which", ["db", "export"])
def test_rollback_to_an_older_checkpoint(honest, which):
    src = honest.db20 if which == "db" else honest.export20
    assert expect_ok(src, cli=True)["size"] == H_CP1
    expect_fail(src, None, "--trusted", honest.cp43_path, reason="rollback", cli=True)


# --- flipped signature bits ------------------------------------------------------------------------


def flip(data: bytes, bit: int) -> bytes:
    """Flip bit ``bit`` of the decoded (key id || signature) of the entry's
    signature line, re-encoded as base64."""
    import base64

    text, sigs = tu.split_entry(data)
    head, _, b = sigs[:-1].rpartition(b" ")
    raw = bytearray(base64.b64decode(b))
    raw[bit // 8] ^= 1 << (bit % 8)
    return text + b"\n" + head + b" " + base64.b64encode(bytes(raw)) + b"\n"


def test_export_every_signature_bit_of_the_last_entry(hexp):
    """All 8 * (4 + 64) bits of the last entry's key id and signature."""
    p = tu.bundle_path(hexp, H_SIZE - 1, H_SIZE)
    original = p.read_bytes()
    items = [e for _, e in tu.bundle_entries(original)]
    last = items[-1]
    bad = []
    try:
        for bit in range(8 * 68):
            p.write_bytes(tu.bundle(items[:-1] + [flip(last, bit)]))
            obj = tu.lib_verify(hexp)
            if obj.get("ok") is not False or obj.get("seq") != H_SIZE - 1:
                bad.append((bit, obj))
    finally:
        p.write_bytes(original)
    assert not bad, bad[:3]
    expect_ok(hexp)


# bits 0..31 are the key id (caught at once); 32.. are the Ed25519 signature
SIG_BITS = [3, 40, 300, 543]
# An invalid Ed25519 signature (key id intact) is checked in batches after the
# entry's other checks; entry k+1's prev then fails first. The verifier must
# still name k (the earliest bad signature), not k+1.


def _sig_param(bit):
    return pytest.param(bit, id=f"bit{bit}")


@pytest.mark.parametrize("bit", [_sig_param(b) for b in SIG_BITS])
def test_export_signature_bit_flipped_in_a_middle_entry(hexp, bit):
    tu.edit_bundle_entry(hexp, MID, H_SIZE, lambda e: flip(e, bit))
    expect_fail(hexp, MID)


RULE_CONSISTENT = {
    "id": lambda o: dict(o, id="ETH-999"),
    "time": lambda o: dict(o, time="2026-11-23T18:00:30.1Z" if o["time"] != "2026-11-23T18:00:30.1Z" else "2026-11-23T18:00:30.2Z"),
}


@pytest.mark.parametrize("field", list(RULE_CONSISTENT))
@pytest.mark.parametrize(
    "where",
    [
        "db-data-only",
        "db-derived-synced",
        "export",
    ],
)
def test_rule_consistent_edit_with_the_old_signature(hdb, hexp, field, where):
    """A field the rules do not recompute (id, time) edited, signature kept:
    only the signature check can name the entry."""

    def edit(e):
        text, sigs = tu.split_entry(e)
        new = tu.canonical(RULE_CONSISTENT[field](json.loads(text)))
        assert new != text
        return new + b"\n" + sigs

    if where == "export":
        tu.edit_bundle_entry(hexp, MID, H_SIZE, edit)
        expect_fail(hexp, MID)
        return
    conn = tu.open_rw(hdb)
    tu.set_data(conn, MID, edit(tu.entry_data(conn, MID)), sync=where == "db-derived-synced")
    conn.close()
    expect_fail(hdb, MID)


def test_db_signature_bit_flipped_data_only(hdb):
    """Only ``data`` edited: the stored leaf hash differs, caught at that seq."""
    conn = tu.open_rw(hdb)
    tu.set_data(conn, MID, flip(tu.entry_data(conn, MID), 300))
    conn.close()
    expect_fail(hdb, MID)


@pytest.mark.parametrize("bit", [_sig_param(b) for b in SIG_BITS])
def test_db_signature_bit_flipped_derived_synced(hdb, bit):
    """The attacker also rewrote leaf_hash and the tree table to match."""
    conn = tu.open_rw(hdb)
    tu.set_data(conn, MID, flip(tu.entry_data(conn, MID), bit), sync=True)
    conn.close()
    expect_fail(hdb, MID)


def test_export_foreign_signature_under_the_real_key_id(hexp):
    """A signature line with the log's name and key id but a foreign key's signature."""
    foreign = note.generate_signer(ORIGIN)

    def forge(e):
        text, sigs = tu.split_entry(e)
        real = note.split_note(e)[1][0]
        return text + b"\n" + note._format_sig_line(ORIGIN, real.key_id, foreign.sign(text))

    tu.edit_bundle_entry(hexp, MID, H_SIZE, forge)
    expect_fail(hexp, MID)


def test_export_entry_signed_by_a_foreign_key(hexp):
    foreign = note.generate_signer(ORIGIN)
    tu.edit_bundle_entry(hexp, MID, H_SIZE, lambda e: tu.sign(tu.split_entry(e)[0], foreign))
    expect_fail(hexp, MID, reason="may not sign")


# --- export tampering (300 entries: tile/0/000, tile/0/001.p/44, tile/1/000.p/1) ------------------


def _edit_digit(e: bytes, field: str) -> bytes:
    """Change one digit of ``field``'s value in the entry's bytes (signature kept)."""
    i = e.index(f'"{field}":"'.encode()) + len(field) + 4
    c = e[i : i + 1]
    return e[:i] + (b"9" if c != b"9" else b"8") + e[i + 1 :]


@pytest.mark.parametrize(
    "seq, field",
    [
        # the contract's multiplier 0.001 -> 9.001: still a valid registration,
        # only the signature says no (and every later XBTUSDTM delta would differ)
        (0, "multiplier"),
        (100, "qty"), (255, "qty"), (256, "qty"), (280, "delta"), (B_SIZE - 1, "balance"),
    ],
)
def test_export_entry_bundle_byte_changed(bexp, seq, field):
    tu.edit_bundle_entry(bexp, seq, B_SIZE, lambda e: _edit_digit(e, field))
    expect_fail(bexp, seq)




def test_export_entry_bundle_length_prefix_changed(bexp):
    p = bexp / "tile/entries/000"
    data = bytearray(p.read_bytes())
    off = tu.bundle_entries(bytes(data))[100][0] - 2
    n = int.from_bytes(data[off : off + 2], "big")
    data[off : off + 2] = (n + 1).to_bytes(2, "big")
    p.write_bytes(bytes(data))
    expect_fail(bexp, 100)


# A bad hash tile is reported at the first leaf under its first wrong hash
# (a hash missing from a short tile is wrong; trailing bytes name the tile's
# last leaf); a missing or oversized tile at the first leaf it covers.


@pytest.mark.parametrize(
    "path, hash_index, seq",
    [
        ("tile/0/000", 0, 0),
        ("tile/0/000", 100, 100),
        ("tile/0/000", 255, 255),
        ("tile/0/001.p/44", 0, 256),
        ("tile/0/001.p/44", 43, B_SIZE - 1),
        ("tile/1/000.p/1", 0, 0),
    ],
)
def test_export_hash_tile_byte_changed(bexp, path, hash_index, seq):
    p = bexp / path
    data = bytearray(p.read_bytes())
    data[32 * hash_index + 7] ^= 0x40
    p.write_bytes(bytes(data))
    expect_fail(bexp, seq, reason="hash tile")


def test_export_checkpoint_root_changed(big, bexp):
    p = bexp / "checkpoint"
    text, sigs = tu.split_entry(p.read_bytes())
    lines = text.split(b"\n")
    cp = note.parse_checkpoint(text)
    lines[2] = tu.b64(bytes(32)).encode()
    p.write_bytes(b"\n".join(lines) + b"\n" + sigs)
    # the note's signature no longer verifies: not about any entry
    expect_fail(bexp, None, reason="checkpoint", cli=True)
    # re-signed by the key holder: the root does not match the entries
    key = load_key_file(big.key)
    p.write_bytes(note.sign_note(note.Checkpoint(cp.origin, cp.tree_size, bytes(32)).text(), [key]))
    expect_fail(bexp, B_SIZE - 1, reason="root does not match", cli=True)


@pytest.mark.parametrize(
    "path, cut, seq",
    [
        ("tile/0/001.p/44", 32, B_SIZE - 1),
        ("tile/0/001.p/44", 1, B_SIZE - 1),
        ("tile/1/000.p/1", 1, 0),
        ("tile/entries/001.p/44", 1, B_SIZE - 1),
        ("tile/entries/001.p/44", "last", B_SIZE - 1),
        ("tile/entries/000", 1, 255),
    ],
)
def test_export_tile_truncated(bexp, path, cut, seq):
    p = bexp / path
    data = p.read_bytes()
    if cut == "last":
        cut = 2 + len(tu.bundle_entries(data)[-1][1])
    p.write_bytes(data[:-cut])
    expect_fail(bexp, seq)


@pytest.mark.parametrize(
    "path, seq",
    [
        ("tile/entries/001.p/44", B_SIZE - 1),
        ("tile/entries/000", 255),
        ("tile/0/001.p/44", B_SIZE - 1),
        ("tile/0/000", 0),
    ],
)
def test_export_trailing_garbage(bexp, path, seq):
    p = bexp / path
    p.write_bytes(p.read_bytes() + (b"\x00" * 32 if path.startswith("tile/0") else b"\x00\x05junk!"))
    expect_fail(bexp, seq)


@pytest.mark.parametrize(
    "path, seq",
    [
        ("tile/entries/000", 0),
        ("tile/entries/001.p/44", 256),
        ("tile/0/000", 0),
        ("tile/0/001.p/44", 256),
        ("tile/1/000.p/1", 0),
        ("vkey", None),
        ("checkpoint", None),
    ],
)
def test_export_missing_file(bexp, path, seq):
    (bexp / path).unlink()
    expect_fail(bexp, seq)


# --- more: signature checks in worker processes, forged checkpoints, malformed entries ---------------


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("seq", [7, 100, 250])
def test_earliest_bad_signature_named_with_batched_and_pooled_checks(big, bexp, monkeypatch, workers, seq):
    """Entries checked in chunks of 8 (several queued, in worker processes
    with workers=2) while the main process applies results in order: the
    earliest bad signature is still the one named."""
    from ledger.errors import VerificationError
    from ledger.verify import accelerator
    from ledger.verify import run as verify

    monkeypatch.setattr(accelerator, "CHUNK", 8)
    tu.edit_bundle_entry(bexp, seq, B_SIZE, lambda e: flip(e, 300))
    with pytest.raises(Exception) as ei:
        verify.verify_path(str(bexp), workers=workers)
    assert isinstance(ei.value, VerificationError), ei.value
    assert (ei.value.seq, ei.value.reason) == (seq, "signature does not verify")


def _foreign_checkpoint(size: int, root: bytes) -> bytes:
    return note.sign_note(note.Checkpoint(ORIGIN, size, root).text(), [note.generate_signer(ORIGIN)])




@pytest.mark.parametrize(
    "which, extra",
    [
        ("db", 0),
        ("export", 0),
        pytest.param("db", 7),
        pytest.param("export", 7),
    ],
    ids=["db-same-size", "export-same-size", "db-bigger-size", "export-bigger-size"],
)
def test_checkpoint_signed_by_a_foreign_key(hdb, hexp, which, extra):
    forged = _foreign_checkpoint(H_SIZE + extra, bytes(range(32)))
    if which == "db":
        conn = tu.open_rw(hdb)
        conn.execute("UPDATE checkpoints SET note = ?, tree_size = ?, root = ? WHERE id = 2",
                     (forged, H_SIZE + extra, bytes(range(32))))
        conn.close()
        src = hdb
    else:
        (hexp / "checkpoint").write_bytes(forged)
        src = hexp
    # more entries than the source holds: the first missing entry or bundle
    # is named (a key entry there could announce the unknown key), and the
    # checkpoint too
    expect_fail(src, None if extra == 0 else {"db": H_SIZE, "export": 0}[which], reason="checkpoint")


def test_whole_log_resigned_by_a_foreign_key_fails_with_the_pinned_vkey(honest, tmp_path):
    """An impostor with its own key under the same name republishes the same
    history: it verifies against the key it publishes itself, but not against
    the pinned log key, nor against an auditor's saved checkpoint."""
    d = tmp_path / "impostor"
    d.mkdir()
    store, signer = api.init_ledger(str(d / "fund.db"), str(d / "fund.key"), ORIGIN)
    store.append(honest.records, [signer])
    store.add_checkpoint([signer])
    do_export(store, str(d / "pub"))
    store.close()
    obj = expect_ok(d / "pub")
    assert obj["contracts"] == model_of(honest.records).summaries()
    real_vkey = load_key_file(honest.key).verifier().vkey()
    rc, obj, err = tu.cli_verify(d / "pub", "--vkey", real_vkey)
    assert rc == 1 and "publishes the vkey" in obj["reason"] and "not the pinned" in obj["reason"], (rc, obj, err)
    published = (d / "pub" / "vkey").read_bytes()
    (d / "pub" / "vkey").unlink()  # publishing no key: the entries themselves fail
    rc, obj, err = tu.cli_verify(d / "pub", "--vkey", real_vkey)
    assert rc == 1 and obj["seq"] == 0 and "may not sign" in obj["reason"], (rc, obj, err)
    (d / "pub" / "vkey").write_bytes(published)
    expect_fail(d / "pub", None, "--trusted", honest.cp43_path, reason="trusted checkpoint")
    expect_fail(d / "fund.db", None, "--trusted", honest.cp20_path, reason="trusted checkpoint")


def _malformed(kind: str, data: bytes, key) -> bytes:
    text, sigs = tu.split_entry(data)
    if kind == "empty":
        return b""
    if kind == "random-bytes":
        return bytes(random.Random(1).randrange(256) for _ in range(200))
    if kind == "no-signature":
        return text + b"\n"
    if kind == "two-signatures-real-key":
        return text + b"\n" + sigs + sigs
    if kind == "text-two-lines":
        return tu.sign(text + text, key)
    if kind == "not-json":
        return tu.sign(b"seq 30 liquidation\n", key)
    if kind == "json-array":
        return tu.sign(b"[1,2]\n", key)
    if kind == "float-qty":
        return tu.sign(text.replace(b'"qty":"1000"', b'"qty":1000.0'), key)
    if kind == "duplicate-key":
        return tu.sign(text.replace(b'{"adl"', b'{"adl":"0.000000","adl"'), key)
    if kind == "over-65535-bytes":
        o = json.loads(text)
        o["id"] = "X" * 70000
        return tu.sign(tu.canonical(o), key)
    if kind == "seq-off-by-one":
        return tu.sign(tu.canonical(dict(json.loads(text), seq=MID + 1)), key)
    if kind == "prev-of-another":
        return tu.sign(tu.canonical(dict(json.loads(text), prev=tu.b64(bytes(32)))), key)
    if kind == "bad-time":
        return tu.sign(tu.canonical(dict(json.loads(text), time="2026-13-01T00:00:00Z")), key)
    raise AssertionError(kind)


MALFORMED = {
    "empty": "not a signed note",
    "random-bytes": "not a signed note",
    "no-signature": "not a signed note",
    "two-signatures-real-key": "2 signatures",
    "text-two-lines": "one line",
    "not-json": "JSON",
    "json-array": "not a JSON object",
    "float-qty": "float",
    "duplicate-key": "duplicate key",
    "over-65535-bytes": "over 65535 bytes",
    "seq-off-by-one": "seq is 31",
    "prev-of-another": "prev",
    "bad-time": "time",
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_db_malformed_entry_in_the_middle(honest, hdb, kind):
    key = load_key_file(honest.key)
    conn = tu.open_rw(hdb)
    data = _malformed(kind, tu.entry_data(conn, MID), key)
    assert b'"qty":"1000"' in tu.entry_data(conn, MID) or kind != "float-qty"
    conn.execute("UPDATE entries SET data = ? WHERE seq = ?", (data, MID))
    conn.close()
    expect_fail(hdb, MID, reason=MALFORMED[kind])
