"""The one-way append path: read (ledger/format/records.py), check and build
(ledger/store/build.py), sign (entry.sign_entry, sign.sign_batch), store
(Store._insert)."""

from __future__ import annotations

import hashlib
import io

import pytest

from ledger.errors import FormatError, InvariantError, LimitError, RuleError
from ledger.format import entry as entry_mod
from ledger.format import kinds, note, records
from ledger.rules.fund import DuplicateLiquidation, FundBook
from ledger.store import sign as chainsign
from ledger.store.build import build_entry, key_entry
from ledger.store.schema import derived_columns
from ledger.store.store import Store
from ledger.tlog import merkle

def _signer(name: str, seed: bytes) -> note.Signer:
    from nacl.bindings import crypto_sign_seed_keypair

    pk, _ = crypto_sign_seed_keypair(seed)
    return note.Signer(name, note.key_id(name, note.ALG_ED25519, pk), seed)


SIGNER = _signer("example.com/fund", hashlib.sha256(b"seed").digest())
CONTRACT = {"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8, "type": "linear",
            "multiplier": "0.001"}
LIQ = {"kind": "liquidation", "contract": "XBTUSDTM", "id": "L-1", "side": "long", "qty": "3",
       "bankruptcy_price": "39000", "fill_price": "38900", "time": "2026-11-23T18:59:07.123Z"}
CLOCK = lambda: "2026-11-23T00:00:00Z"  # noqa: E731


def test_record_fields_are_the_kinds_input_fields():
    assert records.RECORD_FIELDS == {
        "contract": {"kind", "symbol", "currency", "scale", "type", "multiplier", "lot", "time"},
        "liquidation": {"kind", "contract", "id", "side", "qty", "bankruptcy_price", "fill_price", "mark_price",
                        "time", "adl_qty", "queue_root", "queue_size"},
        "adl": {"kind", "contract", "liquidation", "positions", "next", "queue_proof", "time"},
    }
    assert records.RECORD_KINDS == ("contract", "liquidation", "adl")
    computed = set(kinds.ADL.names) - records.RECORD_FIELDS["adl"]
    assert computed == {"seq", "prev", "chain_seq", "chain_prev", "event", "side", "price"}
    computed = set(kinds.LIQUIDATION.names) - records.RECORD_FIELDS["liquidation"]
    assert computed == {"seq", "prev", "delta", "paid", "adl", "balance"}


@pytest.mark.parametrize("line, error, message", [
    (b'{"kind":"key","contract":""}', RuleError, "unknown kind 'key': only contract, liquidation and adl exist"),
    (b'{"symbol":"X"}', RuleError, "unknown kind 'None': only contract, liquidation and adl exist"),
    (b'{"kind":"contract","contract":"X"}', RuleError, "unknown field 'contract' in a contract record"),
    (b'{"kind":"liquidation","delta":"1"}', RuleError, "unknown field 'delta' in a liquidation record"),
    (b'{"kind":"liquidation","qty":1.5}', FormatError, "a JSON float is not allowed: 1.5"),
    (b"[1]", FormatError, "not a JSON object"),
    (b"{}" + b" " * records.MAX_LINE_BYTES, LimitError, "longer than 65536 bytes"),
])
def test_parse_record_refuses(line, error, message):
    with pytest.raises(error) as e:
        records.parse_record(line)
    assert str(e.value) == message


def test_iter_records_numbers_lines_and_skips_blank_ones():
    data = b'\n{"kind":"contract"}\n  \n{"kind":"liquidation","id":"a"}'
    got = list(records.iter_records(io.BytesIO(data), 5))
    assert got == [(6, {"kind": "contract"}), (8, {"kind": "liquidation", "id": "a"})]
    chunks = list(records.iter_chunks(io.BytesIO(data * 3), 4))
    assert [len(c) for c in chunks] == [4, 2] and chunks[1][-1][0] == 10  # (data has no final newline: 10 lines in all)
    with pytest.raises(RuleError, match=r"^line 2: unknown field 'x' in a contract record$"):
        list(records.iter_records(io.BytesIO(b'\n{"kind":"contract","x":1}\n')))
    blank = b" " * records.MAX_LINE_BYTES + b"\n"  # blank, but over the limit
    with pytest.raises(LimitError, match=r"^line 1: longer than 65536 bytes$"):
        list(records.iter_records(io.BytesIO(blank)))


def test_records_of_command_options():
    assert records.contract_record("XBTUSDTM", "USDT", 8, "linear", "0.001") == CONTRACT
    rec = records.liquidation_record("XBTUSDTM", "L-1", "long", "3", "39000", "38900",
                                     time="2026-11-23T18:59:07.123Z")
    assert rec == LIQ
    with_mark = records.liquidation_record("X", "i", "short", "1", "2", "3", mark_price="4")
    assert with_mark["mark_price"] == "4" and "time" not in with_mark


def test_build_entry_is_the_rules_and_the_encoding():
    book = FundBook()
    c = build_entry(book, CONTRACT, 0, entry_mod.ZERO_HASH, CLOCK)
    assert c.text == entry_mod.entry_text(FundBook().build(CONTRACT), 0, entry_mod.ZERO_HASH, CLOCK())
    assert c.fields["seq"] == 0 and c.fields["time"] == CLOCK() and "XBTUSDTM" in book.funds
    prev = merkle.leaf_hash(entry_mod.sign_entry(c.text, [SIGNER]))
    liq = build_entry(book, LIQ, 1, prev, CLOCK)
    obj = entry_mod.parse_entry_text(liq.text)
    assert obj["time"] == LIQ["time"] and obj["delta"] == "-0.30000000" and obj["balance"] == "0.00000000"
    data = entry_mod.sign_entry(liq.text, [SIGNER])
    assert liq.row(data, b"h") == derived_columns(1, data, b"h", obj)
    with pytest.raises(DuplicateLiquidation):
        build_entry(book, LIQ, 2, prev, CLOCK)
    assert book.funds["XBTUSDTM"].liquidations == 1


def test_key_entry():
    k = key_entry(FundBook(), SIGNER.verifier().vkey(), 7, entry_mod.ZERO_HASH, CLOCK())
    assert entry_mod.parse_entry_text(k.text) == {
        "kind": "key", "contract": "", "vkey": SIGNER.verifier().vkey(), "seq": 7,
        "prev": entry_mod.b64(entry_mod.ZERO_HASH), "time": CLOCK()}
    assert k.row(b"d", b"h")[:6] == (7, b"d", b"h", CLOCK(), "key", "")


def test_chain_signer_signs_as_sign_entry():
    """sign.sign_batch's inline signing gives entry.sign_entry's bytes."""
    book = FundBook()
    built = [build_entry(book, CONTRACT, 0, entry_mod.ZERO_HASH, CLOCK)]
    prev = merkle.leaf_hash(entry_mod.sign_entry(built[0].text, [SIGNER]))
    built.append(build_entry(book, LIQ, 1, prev, CLOCK))
    items = []
    for b in built:
        i = b.text.index(b'"prev":"') + 8
        items += [b.text[:i], b.text[i + kinds.PREV_B64_LENGTH:-1], b"x"]
    rows, _, _ = chainsign.sign_batch(items, 0, entry_mod.ZERO_HASH, [], SIGNER._sk, SIGNER.key_id,
                                      chainsign._sep(SIGNER.name))
    assert [r[1] for r in rows] == [entry_mod.sign_entry(b.text, [SIGNER]) for b in built]


def test_insert_refuses_entries_off_the_head(tmp_path):
    store = Store.create(str(tmp_path / "l.db"), SIGNER.name, SIGNER.verifier().vkey())
    store.append([CONTRACT], [SIGNER])
    with pytest.raises(InvariantError, match="do not follow a head of 1"):
        with store._write():
            store._insert(1, [(2, b"", b"")], [], [])
    with pytest.raises(InvariantError, match="more than 10000 entries in one append"):
        with store._write():
            store._insert(1, [(1, b"", b"")] * 10_001, [], [])
    assert store.size() == 1
    store.close()
