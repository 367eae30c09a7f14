"""Entry encoding (ledger/format/entry.py): RFC 8785 canonical JSON, the entry text,
the signed entry and its size limit, and the strict JSON object parser."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.format import note
from ledger.format.entry import (
    MAX_ENTRY_BYTES,
    ZERO_HASH,
    canonical_json,
    entry_text,
    parse_entry_text,
    parse_json_object,
    sign_entry,
)
from ledger.errors import FormatError, LimitError
from ledger.rules.fund import FundBook

SIGNER = note.generate_signer("example.com/test-fund")
PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
SAFE_INT = st.integers(-(2**53) + 1, 2**53 - 1)


# --- canonical JSON --------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(PRINTABLE, st.one_of(PRINTABLE, SAFE_INT), max_size=20))
def test_canonical_json_is_rfc8785(obj):
    assert canonical_json(obj) == rfc8785.dumps(obj)


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "seq": st.integers(0, 2**53 - 1),
            "kind": st.sampled_from(["contract", "liquidation"]),
            "contract": st.from_regex(r"[A-Z0-9][A-Z0-9._-]{0,31}", fullmatch=True),
            "id": PRINTABLE,
            "qty": st.from_regex(r"[1-9][0-9]{0,5}(\.[0-9]{1,8})?", fullmatch=True),
            "scale": st.integers(0, 18),
            "delta": st.from_regex(r"-?[0-9]{1,9}\.[0-9]{8}", fullmatch=True),
        }
    ),
    st.binary(min_size=32, max_size=32),
)
def test_entry_text_is_rfc8785_of_the_entry(fields, prev):
    seq = fields.pop("seq")
    text = entry_text(fields, seq, prev, "2026-11-23T18:59:07.123Z")
    expected = dict(fields, seq=seq, prev=base64.b64encode(prev).decode(), time="2026-11-23T18:59:07.123Z")
    assert text == rfc8785.dumps(expected) + b"\n"


def test_canonical_json_examples():
    assert canonical_json({"b": 1, "a": "x", "A": -5}) == b'{"A":-5,"a":"x","b":1}'
    assert canonical_json({"s": 'q"\\/'}) == b'{"s":"q\\"\\\\/"}'
    assert canonical_json({}) == b"{}"


def test_canonical_json_refuses_nan():
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


# --- entry text ---------------------------------------------------------------------------


def contract_fields():
    return FundBook().build({"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8,
                             "multiplier": "0.001"})


def test_entry_text_shape_at_seq_0():
    text = entry_text(contract_fields(), 0, ZERO_HASH, "2026-11-23T18:59:07.123Z")
    assert text.endswith(b"\n") and text.count(b"\n") == 1
    assert b" " not in text
    assert text == (
        b'{"contract":"XBTUSDTM","currency":"USDT","kind":"contract","multiplier":"0.001",'
        b'"prev":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","scale":8,"seq":0,"time":"2026-11-23T18:59:07.123Z",'
        b'"type":"linear"}\n'
    )
    obj = parse_entry_text(text)
    assert list(obj) == sorted(obj)
    assert base64.b64decode(obj["prev"]) == bytes(32)
    assert obj["seq"] == 0 and isinstance(obj["seq"], int)
    assert {"seq", "prev", "time", "kind", "contract"} <= set(obj)


def test_entry_text_prev_is_the_leaf_hash_of_the_previous_entry():
    first = sign_entry(entry_text(contract_fields(), 0, ZERO_HASH, "2026-11-23T18:59:07Z"), [SIGNER])
    leaf = hashlib.sha256(b"\x00" + first).digest()
    text = entry_text(contract_fields(), 1, leaf, "2026-11-23T18:59:08Z")
    assert parse_entry_text(text)["prev"] == base64.b64encode(leaf).decode()


def test_entry_text_does_not_mutate_fields():
    f = contract_fields()
    before = dict(f)
    entry_text(f, 3, ZERO_HASH, "2026-11-23T18:59:07Z")
    assert f == before


def test_signed_entry_is_a_note_by_the_log_key():
    text = entry_text(contract_fields(), 0, ZERO_HASH, "2026-11-23T18:59:07Z")
    data = sign_entry(text, [SIGNER])
    assert data.startswith(text + b"\n\xe2\x80\x94 example.com/test-fund ")
    opened, _ = note.open_note(data, [SIGNER.verifier()])
    assert opened == text


@pytest.mark.parametrize(
    "text",
    [b'{"a":1}', b'{"a":1}\n\n', b'{"a":1}\n{"b":2}\n', b"\n", b'{"a":\n1}\n'],
)
def test_parse_entry_text_requires_one_line(text):
    with pytest.raises(FormatError):
        parse_entry_text(text)


# --- size limit -----------------------------------------------------------------------------


def padded_text(total_signed: int) -> bytes:
    """An entry text whose signed note is exactly ``total_signed`` bytes."""
    base = b'{"pad":""}\n'
    overhead = len(sign_entry(base, [SIGNER])) - len(base)
    n = total_signed - overhead - len(base)
    text = b'{"pad":"' + b"a" * n + b'"}\n'
    return text


def test_sign_entry_size_limit_boundary():
    ok = sign_entry(padded_text(MAX_ENTRY_BYTES), [SIGNER])
    assert len(ok) == MAX_ENTRY_BYTES == 65535
    with pytest.raises(LimitError) as e:
        sign_entry(padded_text(MAX_ENTRY_BYTES + 1), [SIGNER])
    assert "65535" in str(e.value)


# --- strict JSON object parser ---------------------------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        ('{"a":1}', {"a": 1}),
        (b'{"a":"b"}', {"a": "b"}),
        ('  {"a":[1,2,{"b":null}]}  \n', {"a": [1, 2, {"b": None}]}),
        ('{"a":-0}', {"a": 0}),
        ('{"n":' + "9" * 100 + "}", {"n": int("9" * 100)}),
        ('{"s":"\\u00e9"}', {"s": "\u00e9"}),
        ('{"s":"caf\u00e9"}'.encode(), {"s": "caf\u00e9"}),
        ("{}", {}),
    ],
)
def test_parse_json_object_valid(line, expected):
    assert parse_json_object(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        '{"a":1.0}', '{"a":1.5}', '{"a":1e5}', '{"a":1E-2}', '{"a":-0.0}', '{"a":[1,2.5]}',  # floats
        '{"a":NaN}', '{"a":Infinity}', '{"a":-Infinity}',  # constants
        '{"a":1,"a":2}', '{"a":{"b":1,"b":1}}',  # duplicate keys, even nested or equal
        '{"a":1} x', '{"a":1}{"b":2}', '{"a":1},', '{"a":1}\n{"b":2}',  # trailing data
        "[1]", "1", '"s"', "null", "true", "",  # not an object
        "   ", '{"a":1', '{"a"}', "{'a':1}", '{"a":01}', '{"a":.5}', "{a:1}",  # broken
        '{"n":' + "9" * 5000 + "}",  # an integer too long to parse
    ],
)
def test_parse_json_object_refuses(line):
    with pytest.raises(FormatError) as e:
        parse_json_object(line)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


@pytest.mark.parametrize(
    "line",
    ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000, "[" * 1_000_000],
)
def test_parse_json_object_deep_nesting_is_a_format_error(line):
    with pytest.raises(FormatError):
        parse_json_object(line)


@pytest.mark.parametrize(
    "data",
    [b"\xff", b'{"a":"\xff"}', b'{"a":"\xc0\xaf"}', b'{"a":"\xed\xa0\x80"}', b'{"a":"\xe2\x82"}'],
)
def test_parse_json_object_refuses_invalid_utf8(data):
    with pytest.raises(FormatError):
        parse_json_object(data)


@pytest.mark.parametrize("ws", ["\x0b", "\x0c", "\x1f", "\u00a0", "\u2028"])
def test_parse_json_object_accepts_only_json_whitespace(ws):
    with pytest.raises(FormatError):
        parse_json_object(ws + '{"a":1}' + ws)
