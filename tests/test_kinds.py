"""Entry kinds (ledger/format/kinds.py): the encoder, the importer's templates
and the verifier's pattern, all derived from one definition, agree with each
other and with RFC 8785 canonical JSON, for values drawn from the grammars."""

from __future__ import annotations

import base64
import re
from json.encoder import encode_basestring_ascii

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.errors import InvariantError
from ledger.format import kinds
from ledger.format.entry import canonical_json, entry_text
from ledger.format.kinds import KINDS, Field, Kind
from ledger.rules.fund import FundBook


def _value(f: Field):
    if f.integer and f.grammar == kinds.SEQ:  # seq, chain_seq, funds, ...
        return st.integers(0, 2**53 - 1)  # (JSON integers below 2**53: more than the grammar says)
    s = st.from_regex(f"(?:{f.grammar})", fullmatch=True)
    return s.map(int) if f.integer else s


@st.composite
def entries(draw, kind: Kind):
    """``(values, prev hash)``: a value for every field of ``kind`` from its
    grammar (an optional one maybe absent), but prev, drawn as 32 bytes."""
    values = {"kind": kind.name}
    for f in kind.fields:
        if f.name in ("kind", "prev") or (f.optional and draw(st.booleans())):
            continue
        values[f.name] = draw(_value(f))
    return values, draw(st.binary(min_size=32, max_size=32))


def _check_agreement(kind: Kind, values: dict, prev: bytes) -> None:
    prev_b64 = base64.b64encode(prev).decode()
    obj = dict(values, prev=prev_b64)
    text = kind.encode(**obj)
    # the encoder is RFC 8785, and entry_text goes through it
    assert text == canonical_json(obj) + b"\n" == rfc8785.dumps(obj) + b"\n"
    fields = {k: v for k, v in values.items() if k not in ("seq", "time")}
    assert entry_text(fields, values["seq"], prev, values["time"]) == text
    # the importer's templates around prev give the same bytes
    given_values = {k: encode_basestring_ascii(v) if kind_field(kind, k).escaped else v
                    for k, v in values.items() if k != "kind"}
    pre, post = kind.fill(**given_values)
    assert (pre + prev_b64 + post + "\n").encode("ascii") == text
    assert pre.endswith('"prev":"') and post.startswith('"')
    # the verifier's pattern matches when every string is written verbatim
    m = kind.pattern.fullmatch(text.decode("ascii"))
    verbatim = all(re.fullmatch(f"(?:{f.fast})", str(obj[f.name])) for f in kind.fields
                   if f.fast is not None and f.name in obj)
    assert (m is not None) == verbatim
    if m is not None:
        captured = {k: v for k, v in m.groupdict().items() if v is not None}
        expected = {k: str(v) for k, v in obj.items() if k != "kind"}
        assert captured == expected
        for f in kind.fields:
            if f.name in captured:
                assert re.fullmatch(f"(?:{f.grammar})", captured[f.name])


def kind_field(kind: Kind, name: str) -> Field:
    return next(f for f in kind.fields if f.name == name)


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(entries(kinds.LIQUIDATION))
def test_liquidation_encoder_templates_and_pattern_agree(entry):
    _check_agreement(kinds.LIQUIDATION, *entry)


@SETTINGS
@given(entries(kinds.CONTRACT))
def test_contract_encoder_templates_and_pattern_agree(entry):
    _check_agreement(kinds.CONTRACT, *entry)


@SETTINGS
@given(entries(kinds.KEY))
def test_key_encoder_templates_and_pattern_agree(entry):
    _check_agreement(kinds.KEY, *entry)


@SETTINGS
@given(entries(kinds.LIQUIDATION_2))
def test_format_2_liquidation_encoder_templates_and_pattern_agree(entry):
    _check_agreement(kinds.LIQUIDATION_2, *entry)


@SETTINGS
@given(entries(kinds.KEY_2))
def test_format_2_key_encoder_templates_and_pattern_agree(entry):
    _check_agreement(kinds.KEY_2, *entry)


@SETTINGS
@given(entries(kinds.STATE))
def test_state_encoder_templates_and_pattern_agree(entry):
    _check_agreement(kinds.STATE, *entry)


@SETTINGS
@given(entries(kinds.LIQUIDATION_2))
def test_format_1_pattern_never_matches_a_format_2_liquidation(entry):
    """The accelerator's format-1 pattern must not pass a format-2 entry,
    whose chain fields it does not check."""
    values, prev = entry
    text = kinds.LIQUIDATION_2.encode(**values, prev=base64.b64encode(prev).decode())
    assert kinds.LIQUIDATION.pattern.fullmatch(text.decode("ascii")) is None


def test_the_kinds_of_docs_format():
    assert list(KINDS) == ["contract", "liquidation", "key"]
    assert kinds.LIQUIDATION.names == (
        "adl", "balance", "bankruptcy_price", "contract", "delta", "fill_price", "id", "kind", "mark_price",
        "paid", "prev", "qty", "seq", "side", "time")
    assert kinds.CONTRACT.names == ("contract", "currency", "kind", "multiplier", "prev", "scale", "seq", "time",
                                    "type")
    assert kinds.KEY.names == ("contract", "kind", "prev", "seq", "time", "vkey")
    assert [f.name for f in kinds.LIQUIDATION.fields if f.optional] == ["mark_price"]
    assert list(kinds.KINDS_2) == ["contract", "liquidation", "key", "state"]
    assert kinds.STATE.names == ("chain_prev", "chain_seq", "contract", "format", "funds", "heads", "key_hash",
                                 "key_seq", "keys", "kind", "prev", "seq", "time")
    assert set(kinds.LIQUIDATION_2.names) - set(kinds.LIQUIDATION.names) == {"chain_prev", "chain_seq"}


def test_a_rules_entry_is_written_by_its_kind():
    book = FundBook()
    book.apply(dict(book.build({"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8,
                                "multiplier": "0.001"}), seq=0, time="2026-11-23T00:00:00Z"))
    fields = book.build({"kind": "liquidation", "contract": "XBTUSDTM", "id": 'L-"7"', "side": "short",
                         "qty": "3", "bankruptcy_price": "39000", "fill_price": "39100", "mark_price": "39050"})
    text = entry_text(fields, 1, bytes(32), "2026-11-23T18:59:07.123Z")
    obj = dict(fields, seq=1, prev=base64.b64encode(bytes(32)).decode(), time="2026-11-23T18:59:07.123Z")
    assert text == kinds.LIQUIDATION.encode(**obj) == rfc8785.dumps(obj) + b"\n"
    assert kinds.LIQUIDATION.pattern.fullmatch(text.decode()) is None  # the id needs escaping
    fields["id"] = "L-7"
    m = kinds.LIQUIDATION.pattern.fullmatch(entry_text(fields, 1, bytes(32), "2026-11-23T18:59:07.123Z").decode())
    assert m["id"] == "L-7" and m["mark_price"] == "39050" and m["delta"] == "-0.30000000"


@pytest.mark.parametrize("bad", [
    {"mark_price": None},  # present as null: not the kind's encoding (json null), the generic one writes it
    {"scale": True},
    {"extra": "x"},
])
def test_entry_text_of_other_shapes_is_plain_canonical_json(bad):
    fields = {"kind": "liquidation", "contract": "X", "id": "1", "side": "long", "qty": "1",
              "bankruptcy_price": "1", "fill_price": "1", "delta": "0", "paid": "0", "adl": "0", "balance": "0",
              **bad}
    obj = dict(fields, seq=4, prev=base64.b64encode(bytes(32)).decode(), time="2026-11-23T00:00:00Z")
    assert entry_text(fields, 4, bytes(32), "2026-11-23T00:00:00Z") == canonical_json(obj) + b"\n"
    with pytest.raises(TypeError):
        kinds.LIQUIDATION.encode(**obj)


def test_a_kind_is_defined_in_canonical_order():
    seq, prev = kinds.Field("seq", kinds.SEQ, integer=True), kinds.Field("prev", kinds.PREV)
    with pytest.raises(InvariantError):
        Kind("x", (seq, prev))
    with pytest.raises(InvariantError):
        Kind("x", (kinds.Field("a", "", optional=True),))
