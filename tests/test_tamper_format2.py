"""Attacks on the fields of format 2 (docs/FORMAT.md, "Format 2"), by an
operator who holds the real key: a broken fund link, a link that skips an
entry, an entry without its link, a head that skips an entry, a wrong
balance in a fund's head, a wrong state commitment, a checkpoint that does
not end with a state entry. Each forged entry is signed with the real key,
the database's derived columns and stored hashes are brought in line and
a checkpoint is signed over the result: the verifier must name the first
forged entry and the field, by the accelerator and the reference alike
(``lib_verify`` runs both and asserts they agree)."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest
import tamper_util as tu
from conftest import ORIGIN

from ledger.ops import api
from ledger.rules.chains import head_line
from ledger.tlog import heads as heads_mod

SYMBOLS = ["AAA", "BBB", "CCC"]
N = 2600  # over two chunks of the accelerator


def liquidation(i: int) -> dict:
    return {"kind": "liquidation", "contract": SYMBOLS[i % 3], "id": f"L-{i}", "side": "long" if i % 2 else "short",
            "qty": str(1 + i % 4), "bankruptcy_price": "100", "fill_price": "99" if i % 5 else "101"}


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    d = tmp_path_factory.mktemp("tamper2")
    db, key = str(d / "fund.db"), str(d / "fund.key")
    store, signer = api.init_ledger(db, key, ORIGIN, log_format=2)
    store.append([{"kind": "contract", "symbol": s, "currency": "USDT", "scale": 2} for s in SYMBOLS], [signer])
    for lo in range(0, N, 500):
        store.append([liquidation(i) for i in range(lo, min(N, lo + 500))], [signer])
        store.add_checkpoint([signer])
    store.close()
    return db, signer


@pytest.fixture
def forged(honest, tmp_path):
    db, signer = honest
    copy = tu.copy_ledger(db, tmp_path / "forged.db")
    conn = tu.open_rw(copy)
    yield conn, copy, signer
    conn.close()


def seqs_of(conn, kind: str, contract: str | None = None) -> list[int]:
    q = "SELECT seq FROM entries WHERE kind = ?" + (" AND contract = ?" if contract else "") + " ORDER BY seq"
    return [r[0] for r in conn.execute(q, (kind, contract) if contract else (kind,))]


def resign(conn, copy, signer, seq: int, edit) -> dict:
    """Entry ``seq`` edited by ``edit(obj)``, signed with the real key, the
    database brought in line, a checkpoint signed over it; the verdict."""
    tu.resign_entry(conn, seq, edit, signer, ORIGIN)
    return tu.lib_verify(copy)


def assert_fails(verdict: dict, seq: int, *words: str) -> None:
    assert verdict["ok"] is False, verdict
    assert verdict["seq"] == seq, verdict
    for w in words:
        assert w in verdict["reason"], verdict


def test_the_honest_log_verifies(honest):
    verdict = tu.lib_verify(honest[0])
    assert verdict["ok"] is True and verdict["size"] == 1 + 3 + N + len(range(0, N, 500)), verdict


def test_a_broken_fund_link(forged):
    conn, copy, signer = forged
    seq = seqs_of(conn, "liquidation", "BBB")[700]
    other = tu.entry_data(conn, seqs_of(conn, "liquidation", "AAA")[10])
    verdict = resign(conn, copy, signer, seq, lambda o: o.update(chain_prev=tu.b64(tu.leaf(other))))
    assert_fails(verdict, seq, "chain_prev")


def test_a_link_that_skips_an_entry(forged):
    conn, copy, signer = forged
    fund = seqs_of(conn, "liquidation", "CCC")
    seq, skipped_to = fund[500], fund[498]

    def skip(o):
        o["chain_seq"] = skipped_to
        o["chain_prev"] = tu.b64(tu.leaf(tu.entry_data(conn, skipped_to)))

    assert_fails(resign(conn, copy, signer, seq, skip), seq, "chain_seq")


def test_a_liquidation_without_its_link(forged):
    conn, copy, signer = forged
    seq = seqs_of(conn, "liquidation", "AAA")[300]
    verdict = resign(conn, copy, signer, seq, lambda o: [o.pop("chain_seq"), o.pop("chain_prev")])
    assert_fails(verdict, seq, "missing field", "chain_")


def _heads_with(conn, state_seq: int, change) -> str:
    """The base64 heads root at ``state_seq`` with one fund's head line
    replaced by ``change(symbol, head dict)``, built from the entries."""
    lines = []
    for symbol in SYMBOLS:
        fund = [s for s in seqs_of(conn, "liquidation", symbol) if s < state_seq]
        first = conn.execute("SELECT seq FROM entries WHERE kind = 'contract' AND contract = ?", (symbol,)).fetchone()[0]
        seqs = [first, *fund]
        head = {"contract": symbol, "entries": len(seqs), "seq": seqs[-1],
                "hash": tu.b64(tu.leaf(tu.entry_data(conn, seqs[-1]))),
                "balance": tu.entry_obj(tu.entry_data(conn, seqs[-1])).get("balance", "0.00")}
        change(symbol, head, seqs)
        lines.append(json.dumps(head, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    return base64.b64encode(heads_mod.heads_root(lines)).decode()


def test_a_head_that_skips_an_entry(forged):
    """The state entry commits to AAA's head as if its latest liquidation
    were not there: the verifier recomputes the heads and refuses it."""
    conn, copy, signer = forged
    state = seqs_of(conn, "state")[3]

    def skip_last(symbol, head, seqs):
        if symbol == "AAA":
            prev = seqs[-2]
            head.update(seq=prev, entries=len(seqs) - 1, hash=tu.b64(tu.leaf(tu.entry_data(conn, prev))),
                        balance=tu.entry_obj(tu.entry_data(conn, prev))["balance"])

    honest_root = _heads_with(conn, state, lambda *a: None)
    assert honest_root == tu.entry_obj(tu.entry_data(conn, state))["heads"]  # the model is the spec's
    root = _heads_with(conn, state, skip_last)
    assert_fails(resign(conn, copy, signer, state, lambda o: o.update(heads=root)), state, "heads")


def test_a_wrong_balance_in_a_fund_head(forged):
    conn, copy, signer = forged
    state = seqs_of(conn, "state")[2]
    root = _heads_with(conn, state, lambda s, h, _: h.update(balance="1000000.00") if s == "BBB" else None)
    assert_fails(resign(conn, copy, signer, state, lambda o: o.update(heads=root)), state, "heads")


@pytest.mark.parametrize("field,value", [("funds", 4), ("keys", 1), ("format", 3), ("chain_seq", 0)])
def test_a_wrong_state_commitment(forged, field, value):
    conn, copy, signer = forged
    state = seqs_of(conn, "state")[2]
    verdict = resign(conn, copy, signer, state, lambda o: o.update({field: value}))
    assert_fails(verdict, state, "format 3" if field == "format" else field)


def test_a_checkpoint_that_does_not_end_with_a_state_entry(forged):
    """A liquidation appended after the last state entry, linked and signed
    correctly, and a checkpoint over it."""
    conn, copy, signer = forged
    last = seqs_of(conn, "liquidation", "AAA")[-1]
    size = conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    obj = tu.entry_obj(tu.entry_data(conn, last))
    obj.update(seq=size, prev=tu.b64(tu.leaf(tu.entry_data(conn, size - 1))), id="L-extra",
               chain_seq=last, chain_prev=tu.b64(tu.leaf(tu.entry_data(conn, last))))
    # a surplus of 1.00 on AAA's balance: what the rules give
    obj.update(side="long", qty="1", bankruptcy_price="100", fill_price="101", delta="1.00", paid="0.00", adl="0.00")
    before = tu.entry_obj(tu.entry_data(conn, last))["balance"]
    obj["balance"] = str(Decimal(before) + 1)
    tu.append_raw(conn, tu.sign(tu.canonical(obj), signer))
    tu.sign_checkpoint(conn, signer, ORIGIN)
    verdict = tu.lib_verify(copy)
    assert_fails(verdict, size, "does not end with a state entry")


def test_a_state_entry_right_after_another(forged):
    conn, copy, signer = forged
    size = conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    state = tu.entry_obj(tu.entry_data(conn, size - 1))
    state.update(seq=size, prev=tu.b64(tu.leaf(tu.entry_data(conn, size - 1))),
                 chain_seq=size - 1, chain_prev=tu.b64(tu.leaf(tu.entry_data(conn, size - 1))))
    tu.append_raw(conn, tu.sign(tu.canonical(state), signer))
    tu.sign_checkpoint(conn, signer, ORIGIN)
    assert_fails(tu.lib_verify(copy), size, "state entry may not follow another state entry")


def test_head_line_is_the_spec_spelling():
    """The model above writes head lines as docs/FORMAT.md spells them; so does the ledger."""
    from ledger.rules.fund import Contract, Fund

    f = Fund(Contract("AAA", "USDT", 2, "linear", "1", 1), balance=12345, liquidations=2, last_seq=9,
             last_leaf=bytes(range(32)))
    spec = {"balance": "123.45", "contract": "AAA", "entries": 3, "hash": tu.b64(bytes(range(32))), "seq": 9}
    assert head_line(f) == json.dumps(spec, sort_keys=True, separators=(",", ":")).encode() + b"\n"
