"""The fund rules (ledger/rules/fund.py): exact decimals, times, the movement of a
liquidation, payouts and ADL, and the FundBook state machine.

Expected values are computed independently of the code under test (with
fractions.Fraction and the test's own formatting) wherever possible.
"""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ledger.errors import InputError, InvariantError, RuleError
from ledger.rules.fund import (
    MAX_FRAC_DIGITS,
    MAX_ID_LENGTH,
    MAX_INT_DIGITS,
    MAX_SCALE,
    DuplicateContract,
    DuplicateLiquidation,
    FundBook,
    amount_str,
    decimal_str,
    movement_units,
    now_time,
    parse_amount,
    parse_positive,
    parse_time,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- independent helpers ---------------------------------------------------------


def dec_text(units: int, digits: int) -> str:
    """units / 10**digits spelled with exactly ``digits`` fractional digits
    (trailing zeros kept on purpose: the parser must strip them)."""
    if digits == 0:
        return str(units)
    s = str(units).rjust(digits + 1, "0")
    return s[:-digits] + "." + s[-digits:]


def frac(d: tuple[int, int]) -> Fraction:
    return Fraction(d[0], 10 ** d[1])


def fmt_amount(units: int, scale: int) -> str:
    """The expected amount spelling, built without ledger.rules.fund."""
    neg = units < 0
    s = dec_text(abs(units), scale)
    return ("-" if neg else "") + s


def exact_delta(ctype, side, qty: Fraction, mult: Fraction, bankruptcy: Fraction, fill: Fraction) -> Fraction:
    if ctype == "linear":
        d = qty * mult * (fill - bankruptcy)
    else:
        d = qty * mult * (1 / bankruptcy - 1 / fill)
    return d if side == "long" else -d


# --- parse_positive -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("39000", (39000, 0)),
        (39000, (39000, 0)),
        (1, (1, 0)),
        ("0.001", (1, 3)),
        ("1.50", (15, 1)),  # trailing fractional zeros removed
        ("1.000", (1, 0)),
        ("00012.3400", (1234, 2)),  # leading zeros canonicalised
        ("0" * 40 + "7", (7, 0)),  # leading zeros do not count as digits
        ("9" * MAX_INT_DIGITS, (int("9" * MAX_INT_DIGITS), 0)),  # max digits before the point
        ("0." + "0" * (MAX_FRAC_DIGITS - 1) + "1", (1, MAX_FRAC_DIGITS)),  # max digits after
        ("1." + "0" * 50, (1, 0)),  # trailing zeros do not count either
        (10**MAX_INT_DIGITS - 1, (10**MAX_INT_DIGITS - 1, 0)),
        ("9" * MAX_INT_DIGITS + "." + "9" * MAX_FRAC_DIGITS, (int("9" * (MAX_INT_DIGITS + MAX_FRAC_DIGITS)), MAX_FRAC_DIGITS)),
    ],
)
def test_parse_positive_valid(value, expected):
    assert parse_positive(value, "qty") == expected


@pytest.mark.parametrize(
    "value",
    [
        "0", "0.0", "000", "0." + "0" * 10, 0,  # zero is not positive
        "-1", -1, "+1", "-0.5",
        "abc", "", " ", "NaN", "nan", "Infinity", "-Infinity", "inf",
        "1e400", "1E5", "1e-3", "0x10", "1_000", "1,5",
        " 1", "1 ", "1\n", "\t1",
        "1.", ".5", ".", "1..2", "1.2.3",
        "\u0661",  # ARABIC-INDIC DIGIT ONE: only ASCII digits
        "\uff11",  # FULLWIDTH DIGIT ONE
        "9" * (MAX_INT_DIGITS + 1),  # one digit too many before the point
        "0." + "0" * MAX_FRAC_DIGITS + "1",  # one digit too many after the point
        10**MAX_INT_DIGITS,
        1.5, 1.0, float("nan"), float("inf"),
        True, False, None, [1], {"units": 1}, b"1",
    ],
)
def test_parse_positive_invalid(value):
    with pytest.raises(RuleError) as e:
        parse_positive(value, "qty")
    assert "qty" in str(e.value)
    assert "\n" not in str(e.value)


def test_parse_positive_error_message_is_short_for_long_input():
    with pytest.raises(RuleError) as e:
        parse_positive("x" * 100_000, "qty")
    assert len(str(e.value)) < 200


def test_parse_positive_huge_int_is_a_rule_error():
    with pytest.raises(RuleError):
        parse_positive(10**5000, "qty")


@SETTINGS
@given(st.integers(1, 10**30 - 1), st.integers(0, 18))
def test_parse_positive_value_roundtrip(units, digits):
    assume(len(str(units)) - digits <= MAX_INT_DIGITS)
    got = parse_positive(dec_text(units, digits), "x")
    assert frac(got) == Fraction(units, 10**digits)
    # canonical: no trailing zero left in the fraction
    assert got[1] == 0 or got[0] % 10 != 0
    assert decimal_str(*got) == decimal_str(units, digits)


# --- decimal_str / amount_str / parse_amount ----------------------------------------------------


@pytest.mark.parametrize(
    "units, digits, text",
    [
        (0, 0, "0"), (5, 0, "5"), (-5, 0, "-5"), (1, 3, "0.001"), (-1, 3, "-0.001"),
        (1000, 3, "1"), (123450, 2, "1234.5"), (39000, 0, "39000"), (10**40, 0, "1" + "0" * 40),
        (0, 8, "0"), (100, 1, "10"),
    ],
)
def test_decimal_str(units, digits, text):
    assert decimal_str(units, digits) == text


@SETTINGS
@given(st.integers(-(10**40), 10**40), st.integers(0, 30))
def test_decimal_str_is_exact_and_canonical(units, digits):
    s = decimal_str(units, digits)
    assert "e" not in s.lower() and "+" not in s
    assert Fraction(s) == Fraction(units, 10**digits)
    body = s.lstrip("-")
    if "." in body:
        assert not body.endswith("0")
    assert body == "0" or not body.startswith("0") or body.startswith("0.")
    assert s != "-0"


@pytest.mark.parametrize(
    "units, scale, text",
    [
        (10_000_000_000, 8, "100.00000000"), (0, 8, "0.00000000"), (-1, 8, "-0.00000001"),
        (1, 8, "0.00000001"), (5, 0, "5"), (-5, 0, "-5"), (123, 2, "1.23"), (0, 0, "0"),
        (10**26, 18, "100000000.000000000000000000"), (10**8, 8, "1.00000000"), (10**8 - 1, 8, "0.99999999"),
        (-(10**8), 8, "-1.00000000"), (-(10**8 - 1), 8, "-0.99999999"), (10, 1, "1.0"), (9, 1, "0.9"),
    ],
)
def test_amount_str_and_parse_amount(units, scale, text):
    assert amount_str(units, scale) == text
    assert parse_amount(text, scale) == units


@SETTINGS
@given(st.integers(-(10**30), 10**30), st.integers(0, MAX_SCALE))
def test_amount_roundtrip(units, scale):
    s = amount_str(units, scale)
    assert s == fmt_amount(units, scale)
    assert parse_amount(s, scale) == units


@pytest.mark.parametrize(
    "text, scale",
    [
        ("100.0", 8), ("100", 8), ("100.000000000", 8), ("-0.00000000", 8), ("+1.00", 2),
        ("01.00", 2), ("1.00 ", 2), (" 1.00", 2), ("1.00", 0), ("1", 2), ("1.", 0), ("", 0),
        ("-", 0), ("-0", 0), ("1e2", 0), ("NaN", 0), ("\u0661", 0), ("--1", 0),
    ],
)
def test_parse_amount_refuses_other_spellings(text, scale):
    with pytest.raises(RuleError):
        parse_amount(text, scale)


@pytest.mark.parametrize("value", [1, 1.0, None, b"1.00", True])
def test_parse_amount_refuses_non_strings(value):
    with pytest.raises(RuleError):
        parse_amount(value, 2)


# --- parse_time -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2026-11-23T18:59:07.123Z", "2026-11-23T18:59:07.123Z"),
        ("2026-11-23T18:59:07Z", "2026-11-23T18:59:07Z"),
        ("2026-11-23t18:59:07.120z", "2026-11-23T18:59:07.12Z"),  # lower case, trailing zero
        ("2026-11-23T18:59:07.000Z", "2026-11-23T18:59:07Z"),
        ("2026-11-23T18:59:07.123456789Z", "2026-11-23T18:59:07.123456789Z"),  # 9 digits
        ("2026-11-23T18:59:07+00:00", "2026-11-23T18:59:07Z"),
        ("2026-11-23T18:59:07-00:00", "2026-11-23T18:59:07Z"),
        ("2026-11-23T20:29:07.5+01:30", "2026-11-23T18:59:07.5Z"),  # offsets converted
        ("2026-11-23T22:00:00-05:00", "2026-11-24T03:00:00Z"),  # across a day
        ("2027-01-01T01:00:00+02:00", "2026-12-31T23:00:00Z"),  # across a year
        ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00Z"),  # leap day
        ("2024-03-01T00:30:00+01:00", "2024-02-29T23:30:00Z"),
        ("1000-01-01T00:00:00Z", "1000-01-01T00:00:00Z"),
        ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"),
        ("2026-11-23T18:59:07+23:59", "2026-11-22T19:00:07Z"),
    ],
)
def test_parse_time_valid(value, expected):
    assert parse_time(value) == expected
    assert parse_time(expected) == expected  # idempotent


@pytest.mark.parametrize(
    "value",
    [
        "2016-12-31T23:59:60Z",  # leap second refused
        "0000-01-01T00:00:00Z",  # no year 0
        "2016-12-31T23:59:60.5Z",
        "2025-02-29T00:00:00Z",  # not a leap year
        "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-11-31T00:00:00Z",
        "2026-11-23T24:00:00Z", "2026-11-23T18:60:00Z",
        "2026-11-23T18:59:07", "2026-11-23 18:59:07Z", "2026-11-23", "18:59:07Z",
        "2026-11-23T18:59:07.Z", "2026-11-23T18:59:07.1234567890Z",  # fraction 1..9 digits
        "2026-11-23T18:59:07+0100", "2026-11-23T18:59:07+01", "2026-11-23T18:59:07+24:00",
        "2026-11-23T18:59:07+01:60", "2026-11-23T18:59:07UTC", "26-11-23T18:59:07Z",
        " 2026-11-23T18:59:07Z", "2026-11-23T18:59:07Z ", "2026-11-23T18:59:07Z\n",
        "\uff12026-11-23T18:59:07Z", "", "now",
        1700000000, None, 1.5, b"2026-11-23T18:59:07Z",
    ],
)
def test_parse_time_invalid(value):
    with pytest.raises(RuleError) as e:
        parse_time(value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_parse_time_out_of_range_after_offset_is_a_rule_error(value):
    with pytest.raises(RuleError):
        parse_time(value)


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00Z", "0999-12-31T23:59:59.5Z", "1000-01-01T00:30:00+01:00"])
def test_parse_time_years_before_1000_keep_four_digits(value):
    t = parse_time(value)
    assert re.fullmatch(r"[0-9]{4}-.*Z", t), t
    assert parse_time(t) == t


def test_now_time_is_canonical():
    t = now_time()
    assert parse_time(t) == t
    assert t.endswith("Z")


# --- movement_units --------------------------------------------------------------------------

decimals = st.tuples(st.integers(1, 10**12), st.integers(0, 12))
small_decimals = st.tuples(st.integers(1, 10**7), st.integers(0, 8))


@SETTINGS
@given(
    st.sampled_from(["linear", "inverse"]),
    st.sampled_from(["long", "short"]),
    decimals, small_decimals, decimals, decimals, st.integers(0, MAX_SCALE),
)
def test_movement_units_is_the_floor_of_the_exact_delta(ctype, side, qty, mult, b, f, scale):
    exact = exact_delta(ctype, side, frac(qty), frac(mult), frac(b), frac(f))
    got = movement_units(ctype, side, qty, mult, b, f, scale)
    assert got == math.floor(exact * 10**scale)
    # the rounding never favours the fund: a credit is never rounded up, a
    # shortfall never rounded down in magnitude; and it is off by < 1 unit
    amount = Fraction(got, 10**scale)
    assert amount <= exact < amount + Fraction(1, 10**scale)
    if exact > 0:
        assert 0 <= amount <= exact  # credit rounded down
    elif exact < 0:
        assert -amount >= -exact  # shortfall rounded up in magnitude
    else:
        assert got == 0


@SETTINGS
@given(st.sampled_from(["linear", "inverse"]), decimals, small_decimals, decimals, decimals, st.integers(0, MAX_SCALE))
def test_movement_units_long_and_short_are_opposite_up_to_rounding(ctype, qty, mult, b, f, scale):
    lo = movement_units(ctype, "long", qty, mult, b, f, scale)
    sh = movement_units(ctype, "short", qty, mult, b, f, scale)
    # floor(x) + floor(-x) is 0 when x is exact at the scale, else -1
    assert lo + sh in (0, -1)


def test_movement_units_worked_examples():
    one = (1, 0)
    # linear long: bankruptcy 39,000, closed at 39,100 -> +100 USDT
    assert movement_units("linear", "long", one, one, (39000, 0), (39100, 0), 8) == 100 * 10**8
    # closed at 38,850 -> -150
    assert movement_units("linear", "long", one, one, (39000, 0), (38850, 0), 8) == -150 * 10**8
    # short mirrors
    assert movement_units("linear", "short", one, one, (39000, 0), (38900, 0), 8) == 100 * 10**8
    # multiplier 0.001, qty 3: 3 * 0.001 * 100 = 0.3
    assert movement_units("linear", "long", (3, 0), (1, 3), (39000, 0), (39100, 0), 8) == 30_000_000
    # inverse long, 1000 USD contracts: 1000 * (1/40000 - 1/40100) XBT, floored at 1e-8
    exact = 1000 * (Fraction(1, 40000) - Fraction(1, 40100))
    assert movement_units("inverse", "long", (1000, 0), one, (40000, 0), (40100, 0), 8) == math.floor(exact * 10**8) == 6234
    # inverse short shortfall rounds away from zero
    assert movement_units("inverse", "short", (1000, 0), one, (40000, 0), (40100, 0), 8) == -6235


@pytest.mark.parametrize("ctype, side", [("perpetual", "long"), ("linear", "buy"), ("inverse", "")])
def test_movement_units_refuses_unknown_type_or_side(ctype, side):
    with pytest.raises(InvariantError):
        movement_units(ctype, side, (1, 0), (1, 0), (1, 0), (2, 0), 8)


# --- FundBook: contracts ---------------------------------------------------------------------------


def contract(symbol="XBTUSDTM", currency="USDT", scale=8, type="linear", multiplier="1", **kw):
    r = {"kind": "contract", "symbol": symbol, "currency": currency, "scale": scale, "type": type,
         "multiplier": multiplier}
    r.update(kw)
    return r


def liquidation(contract="XBTUSDTM", id="L-1", side="long", qty="1", bankruptcy_price="39000",
                fill_price="39100", **kw):
    r = {"kind": "liquidation", "contract": contract, "id": id, "side": side, "qty": qty,
         "bankruptcy_price": bankruptcy_price, "fill_price": fill_price}
    r.update(kw)
    return r


class Chain:
    """Drives a FundBook as the store does: build, then apply with seq and time."""

    def __init__(self):
        self.book = FundBook()
        self.seq = 0

    def add(self, record):
        fields = self.book.build(record)
        fields["seq"] = self.seq
        fields["time"] = "2026-11-23T18:59:07Z"
        self.book.apply(fields)
        self.seq += 1
        return fields


def state(book: FundBook):
    return {
        s: (f.balance, f.credited, f.paid, f.adl, f.liquidations, f.last_seq)
        for s, f in book.funds.items()
    }


def test_contract_entry_fields():
    fields = FundBook().build(contract(multiplier="0.0010"))
    assert fields == {"kind": "contract", "contract": "XBTUSDTM", "currency": "USDT", "scale": 8,
                      "type": "linear", "multiplier": "0.001"}


def test_contract_defaults_and_string_scale():
    fields = FundBook().build({"kind": "contract", "symbol": "ETHUSDTM", "currency": "USDT", "scale": "8"})
    assert fields["type"] == "linear" and fields["multiplier"] == "1" and fields["scale"] == 8


@pytest.mark.parametrize(
    "record",
    [
        contract(symbol="xbtusdtm"), contract(symbol=""), contract(symbol="A" * 33), contract(symbol="-X"),
        contract(symbol="X Y"), contract(symbol=None), contract(symbol=5),
        contract(currency="usdt"), contract(currency=""), contract(currency="U" * 17), contract(currency=None),
        contract(scale=MAX_SCALE + 1), contract(scale=-1), contract(scale=True), contract(scale=8.0),
        contract(scale="8.0"), contract(scale="-1"), contract(scale="100"), contract(scale=None),
        contract(type="perpetual"), contract(type=None), contract(type="Linear"),
        contract(multiplier="0"), contract(multiplier="-1"), contract(multiplier=0.001),
        contract(multiplier="1e-3"), contract(multiplier="abc"),
    ],
)
def test_contract_invalid(record):
    book = FundBook()
    with pytest.raises(RuleError):
        book.build(record)
    assert book.funds == {}


def test_contract_boundaries_accepted():
    book = Chain()
    book.add(contract(symbol="A" * 32, currency="C" * 16, scale=MAX_SCALE))
    book.add(contract(symbol="B", scale=0))
    assert set(book.book.funds) == {"A" * 32, "B"}


def test_contract_scale_superscript_digit_is_a_rule_error():
    with pytest.raises(RuleError):
        FundBook().build(contract(scale="\u00b2"))


def test_contract_scale_non_ascii_digit_refused():
    with pytest.raises(RuleError):
        FundBook().build(contract(scale="\u0668"))


def test_contract_reregistration_identical_is_duplicate():
    c = Chain()
    c.add(contract(multiplier="0.001"))
    before = state(c.book)
    for again in (contract(multiplier="0.001"), contract(multiplier="0.00100"), contract(multiplier="0.001", scale="8")):
        with pytest.raises(DuplicateContract) as e:
            c.book.build(again)
        assert "duplicate" in str(e.value)
    assert state(c.book) == before


@pytest.mark.parametrize(
    "change", [{"currency": "USDC"}, {"scale": 6}, {"type": "inverse"}, {"multiplier": "0.01"}]
)
def test_contract_reregistration_with_other_terms_is_an_error(change):
    c = Chain()
    c.add(contract(multiplier="0.001"))
    with pytest.raises(RuleError) as e:
        c.book.build(contract(**{"multiplier": "0.001", **change}))
    assert not isinstance(e.value, DuplicateContract)


# --- FundBook: liquidations ----------------------------------------------------------------------


def test_worked_example_credit_then_shortfall_with_adl():
    c = Chain()
    c.add(contract())
    f1 = c.add(liquidation(id="L-1", fill_price="39100"))
    assert (f1["delta"], f1["paid"], f1["adl"], f1["balance"]) == (
        "100.00000000", "0.00000000", "0.00000000", "100.00000000")
    f2 = c.add(liquidation(id="L-2", fill_price="38850"))
    assert (f2["delta"], f2["paid"], f2["adl"], f2["balance"]) == (
        "-150.00000000", "100.00000000", "50.00000000", "0.00000000")
    fund = c.book.funds["XBTUSDTM"]
    assert (fund.balance, fund.credited, fund.paid, fund.adl, fund.liquidations) == (0, 100 * 10**8, 100 * 10**8, 50 * 10**8, 2)
    s = fund.summary()
    assert s["balance"] == "0.00000000" and s["adl"] == "50.00000000" and s["credited"] == "100.00000000"
    assert s["balance_usd"] == "0.00" and s["last_price"] == "38850"


def test_liquidation_entry_fields_are_canonical():
    c = Chain()
    c.add(contract())
    f = c.add(liquidation(qty="001.50", bankruptcy_price="39000.0", fill_price=39100, mark_price="39120.000"))
    assert f["qty"] == "1.5" and f["bankruptcy_price"] == "39000" and f["fill_price"] == "39100"
    assert f["mark_price"] == "39120"
    assert f["delta"] == "150.00000000"
    assert c.book.funds["XBTUSDTM"].last_price == "39120"
    assert set(f) == {"kind", "contract", "id", "side", "qty", "bankruptcy_price", "fill_price", "mark_price",
                      "delta", "paid", "adl", "balance", "seq", "time"}


def test_zero_delta_moves_nothing():
    c = Chain()
    c.add(contract())
    f = c.add(liquidation(fill_price="39000"))
    assert (f["delta"], f["paid"], f["adl"], f["balance"]) == ("0.00000000",) * 4


def test_shortfall_fully_covered():
    c = Chain()
    c.add(contract(scale=2))
    c.add(liquidation(id="a", fill_price="39500"))  # +500
    f = c.add(liquidation(id="b", side="short", fill_price="39200"))  # short: 39000-39200 = -200
    assert (f["delta"], f["paid"], f["adl"], f["balance"]) == ("-200.00", "200.00", "0.00", "300.00")


def test_rounding_never_favours_the_fund_inverse():
    c = Chain()
    c.add(contract(symbol="XBTUSDM", currency="XBT", type="inverse", multiplier="1", scale=8))
    # credit: exact 0.0000623441..., rounded down
    f = c.add(liquidation(contract="XBTUSDM", id="a", qty="1000", bankruptcy_price="40000", fill_price="40100"))
    assert f["delta"] == "0.00006234"
    # shortfall: exact -0.0000623441..., rounded up in magnitude
    f = c.add(liquidation(contract="XBTUSDM", id="b", side="short", qty="1000", bankruptcy_price="40000", fill_price="40100"))
    assert f["delta"] == "-0.00006235"
    assert (f["paid"], f["adl"], f["balance"]) == ("0.00006234", "0.00000001", "0.00000000")


def test_usd_value_of_funds():
    c = Chain()
    c.add(contract(scale=8))
    c.add(liquidation(id="a", qty="0.00000999", bankruptcy_price="1", fill_price="1000001"))  # 9.99 + 0.00000999...
    s = c.book.funds["XBTUSDTM"].summary()
    bal = Fraction(s["balance"])
    assert s["balance_usd"] == dec_text(math.floor(bal * 100), 2)
    c.add(contract(symbol="XBTUSDM", currency="XBT", type="inverse", scale=8))
    assert c.book.funds["XBTUSDM"].summary()["balance_usd"] is None  # no price known yet
    c.add(liquidation(contract="XBTUSDM", id="a", qty="1000", bankruptcy_price="40000", fill_price="40100",
                      mark_price="40050.5"))
    s = c.book.funds["XBTUSDM"].summary()
    assert s["balance"] == "0.00006234"
    assert s["balance_usd"] == dec_text(math.floor(Fraction("0.00006234") * Fraction("40050.5") * 100), 2) == "2.49"


def test_unknown_contract_refused():
    c = Chain()
    c.add(contract())
    with pytest.raises(RuleError) as e:
        c.book.build(liquidation(contract="ETHUSDTM"))
    assert "unknown contract" in str(e.value)


@pytest.mark.parametrize(
    "change",
    [
        {"qty": "0"}, {"qty": "-1"}, {"qty": 1.0}, {"qty": "NaN"}, {"qty": "1e400"}, {"qty": "abc"},
        {"qty": None}, {"qty": True}, {"bankruptcy_price": "0"}, {"fill_price": "-39100"},
        {"fill_price": " 39100"}, {"mark_price": "0"}, {"mark_price": 1.5}, {"side": "buy"},
        {"side": None}, {"side": "LONG"}, {"id": ""}, {"id": " L"}, {"id": "L "}, {"id": "L\n"},
        {"id": "L\u00e9"}, {"id": "x" * (MAX_ID_LENGTH + 1)}, {"id": 5}, {"id": None},
        {"contract": None}, {"contract": "xbtusdtm"},
    ],
)
def test_liquidation_invalid(change):
    c = Chain()
    c.add(contract())
    before = state(c.book)
    with pytest.raises(RuleError):
        c.book.build(liquidation(**change))
    assert state(c.book) == before


def test_liquidation_id_boundaries():
    c = Chain()
    c.add(contract())
    c.add(liquidation(id="x" * MAX_ID_LENGTH))
    c.add(liquidation(id="a b ~!"))  # inner spaces and punctuation are printable ASCII
    assert c.book.funds["XBTUSDTM"].liquidations == 2


@pytest.mark.parametrize("kind", ["withdrawal", "transfer", "fee", "bonus", "adjustment", "deposit",
                                  "Liquidation", "CONTRACT", "", None, 1])
def test_unknown_kinds_refused(kind):
    c = Chain()
    c.add(contract())
    c.add(liquidation(id="a"))
    before = state(c.book)
    record = {"kind": kind, "contract": "XBTUSDTM", "amount": "100", "id": "w-1", "side": "long", "qty": "1",
              "bankruptcy_price": "1", "fill_price": "2"}
    with pytest.raises(RuleError) as e:
        c.book.build(record)
    assert "kind" in str(e.value)
    assert state(c.book) == before


def test_record_without_kind_refused():
    with pytest.raises(RuleError):
        FundBook().build({"symbol": "X", "currency": "USDT", "scale": 8})


def test_apply_refuses_unknown_kind():
    c = Chain()
    c.add(contract())
    with pytest.raises(InvariantError):
        c.book.apply({"kind": "withdrawal", "contract": "XBTUSDTM", "seq": 1, "time": None, "amount": "1"})


def test_apply_refuses_inconsistent_balance():
    c = Chain()
    c.add(contract())
    f = c.book.build(liquidation())
    forged = dict(f, balance="1000.00000000", seq=1, time="2026-11-23T18:59:07Z")
    with pytest.raises(InvariantError):
        c.book.apply(forged)


def test_duplicate_ids_per_contract_and_across_contracts():
    c = Chain()
    c.add(contract(symbol="A"))
    c.add(contract(symbol="B"))
    c.add(liquidation(contract="A", id="L-1"))
    before = state(c.book)
    with pytest.raises(DuplicateLiquidation) as e:
        c.book.build(liquidation(contract="A", id="L-1", fill_price="1"))  # same id, other numbers
    assert "duplicate" in str(e.value) and e.value.contract == "A" and e.value.liquidation_id == "L-1"
    assert state(c.book) == before
    c.add(liquidation(contract="B", id="L-1"))  # allowed on another contract
    assert c.book.funds["B"].liquidations == 1


def test_check_validates_like_build_without_moving_funds():
    book = FundBook()
    book.check(contract(symbol="A"))
    book.check(liquidation(contract="A", id="x"))
    with pytest.raises(DuplicateLiquidation):
        book.check(liquidation(contract="A", id="x"))
    with pytest.raises(RuleError):
        book.check(liquidation(contract="B", id="x"))
    with pytest.raises(RuleError):
        book.check(liquidation(contract="A", id="y", qty="0"))
    with pytest.raises(RuleError):
        book.check({"kind": "withdrawal", "contract": "A"})
    assert book.funds["A"].balance == 0


# --- FundBook: property tests over random sequences ----------------------------------------------------------

CONTRACTS = [
    contract(symbol="XBTUSDTM", currency="USDT", scale=8, type="linear", multiplier="0.001"),
    contract(symbol="XBTUSDM", currency="XBT", scale=8, type="inverse", multiplier="1"),
    contract(symbol="ETHUSDTM", currency="USDT", scale=2, type="linear", multiplier="0.01"),
    contract(symbol="DOGEUSDTM", currency="USDT", scale=0, type="linear", multiplier="100"),
]


def price_text(draw_units, digits):
    return dec_text(draw_units, digits)


@st.composite
def liquidation_records(draw):
    ci = draw(st.integers(0, len(CONTRACTS) - 1))
    base = draw(st.integers(100, 60000))
    bankruptcy = draw(st.integers(base * 90, base * 110))  # 2 digits of fraction
    fill = draw(st.integers(base * 90, base * 110))
    qty = draw(st.integers(1, 10**6))
    qd = draw(st.integers(0, 3))
    return {
        "kind": "liquidation",
        "contract": CONTRACTS[ci]["symbol"],
        "id": f"L-{draw(st.integers(0, 30))}",  # a small pool: replays happen
        "side": draw(st.sampled_from(["long", "short"])),
        "qty": dec_text(qty, qd) if draw(st.booleans()) or qd else qty,
        "bankruptcy_price": dec_text(bankruptcy, 2),
        "fill_price": dec_text(fill, 2),
    }


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(liquidation_records(), min_size=1, max_size=60))
def test_random_liquidation_sequences(records):
    chain = Chain()
    for r in CONTRACTS:
        chain.add(r)
    terms = {r["symbol"]: r for r in CONTRACTS}
    model = {s: {"balance": 0, "credited": 0, "paid": 0, "adl": 0, "n": 0} for s in terms}
    seen = set()
    replica = FundBook()  # fed with parsed copies, as the verifier does
    for i, r in enumerate(CONTRACTS):
        f = replica.build(r)
        replica.apply(dict(f, seq=i, time="2026-11-23T18:59:07Z"))
    for r in records:
        sym = r["contract"]
        before = state(chain.book)
        if (sym, r["id"]) in seen:
            with pytest.raises(DuplicateLiquidation):
                chain.book.build(r)
            assert state(chain.book) == before
            continue
        seen.add((sym, r["id"]))
        t = terms[sym]
        scale = t["scale"]
        exact = exact_delta(t["type"], r["side"], Fraction(str(r["qty"])), Fraction(t["multiplier"]),
                            Fraction(r["bankruptcy_price"]), Fraction(r["fill_price"]))
        delta = math.floor(exact * 10**scale)
        m = model[sym]
        bal_before = m["balance"]
        f = chain.add(r)
        if delta >= 0:
            paid, adl = 0, 0
            m["balance"] += delta
            m["credited"] += delta
        else:
            paid = min(-delta, bal_before)
            adl = -delta - paid
            m["balance"] -= paid
        m["paid"] += paid
        m["adl"] += adl
        m["n"] += 1
        # the entry's fields are what the rules give
        assert f["delta"] == fmt_amount(delta, scale)
        assert f["paid"] == fmt_amount(paid, scale)
        assert f["adl"] == fmt_amount(adl, scale)
        assert f["balance"] == fmt_amount(m["balance"], scale)
        # rounding never favours the fund
        assert Fraction(delta, 10**scale) <= exact
        # paid <= balance before; ADL is exactly the uncovered part
        assert 0 <= paid <= bal_before
        assert paid + adl == max(0, -delta)
        assert adl == max(0, -delta - bal_before)
        # funds are isolated: nothing else moved
        after = state(chain.book)
        for other in after:
            if other != sym:
                assert after[other] == before[other]
        # the verifier's path (fields parsed from JSON) gives the same state
        rebuilt = replica.build({k: r[k] for k in r})
        assert rebuilt == {k: v for k, v in f.items() if k not in ("seq", "time")}
        replica.apply(json.loads(json.dumps(dict(rebuilt, seq=f["seq"], time=f["time"]))))
    for sym, fund in chain.book.funds.items():
        m = model[sym]
        assert fund.balance == m["balance"] >= 0
        assert fund.balance == fund.credited - fund.paid
        assert (fund.credited, fund.paid, fund.adl, fund.liquidations) == (m["credited"], m["paid"], m["adl"], m["n"])
    assert state(replica) == state(chain.book)


@settings(max_examples=60, deadline=None)
@given(st.lists(liquidation_records(), min_size=1, max_size=30))
def test_same_sequence_on_one_contract_never_touches_the_others(records):
    """Running a contract's liquidations alone or interleaved with the others'
    gives that contract the very same fund."""
    full = Chain()
    for r in CONTRACTS:
        full.add(r)
    for r in records:
        try:
            full.add(r)
        except DuplicateLiquidation:
            pass
    for sym in (c["symbol"] for c in CONTRACTS):
        alone = Chain()
        for r in CONTRACTS:
            alone.add(r)
        for r in records:
            if r["contract"] == sym:
                try:
                    alone.add(r)
                except DuplicateLiquidation:
                    pass
        a, b = alone.book.funds[sym], full.book.funds[sym]
        assert (a.balance, a.credited, a.paid, a.adl, a.liquidations) == (b.balance, b.credited, b.paid, b.adl, b.liquidations)


def test_errors_are_input_errors():
    """Every rule failure is an InputError (exit 2), duplicates included."""
    assert issubclass(RuleError, InputError)
    assert issubclass(DuplicateLiquidation, RuleError) and issubclass(DuplicateContract, RuleError)


@SETTINGS
@given(
    st.sampled_from(["linear", "inverse"]), st.sampled_from(["long", "short"]),
    st.tuples(st.integers(1, 10**12), st.integers(0, 8)), st.tuples(st.integers(1, 10**9), st.integers(0, 6)),
    st.tuples(st.integers(1, 10**9), st.integers(0, 6)), st.integers(0, 12),
)
def test_canonical_movement_is_movement_units_of_the_parsed_inputs(ctype, side, qty, bankruptcy, fill, scale):
    from ledger.rules.fund import Contract, canonical_movement, positive_decimal

    contract = Contract("XBTUSDTM", "USDT", scale, ctype, "0.001", 0)
    texts = [decimal_str(*x) for x in (qty, bankruptcy, fill)]
    parsed = [positive_decimal(t, "x") for t in texts]
    assert [p[2] for p in parsed] == texts  # canonical spelling, as the fast paths require
    want = movement_units(ctype, side, parsed[0][:2], contract.multiplier_dec, parsed[1][:2], parsed[2][:2], scale)
    assert canonical_movement(contract, side, *texts) == want
