"""Exact decimals and amounts: the fund rules' number spellings (docs/FORMAT.md, "Entries").

A decimal is a pair ``(units, digits)`` meaning ``units / 10**digits``; an
amount an integer number of ``10**-scale`` units. Parsers accept one
spelling, with limits (MAX_INT_DIGITS, MAX_FRAC_DIGITS); no float anywhere.
"""

from __future__ import annotations

import re

from ledger.errors import RuleError
from ledger.format import kinds
from ledger.format.kinds import MAX_FRAC_DIGITS, MAX_INT_DIGITS

_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]+))?\Z")


_CANONICAL_POSITIVE = re.compile(rf"(?:{kinds.POSITIVE})\Z")


def positive_decimal(value: object, name: str) -> tuple[int, int, str]:
    """:func:`parse_positive` plus the canonical spelling (:func:`decimal_str`).
    A string already canonical (the verifier's case, and most inputs) takes a
    fast path that gives the same result."""
    if type(value) is str and _CANONICAL_POSITIVE.match(value):
        whole, _, frac = value.partition(".")
        return int(whole + frac), len(frac), value
    units, digits = parse_positive(value, name)
    return units, digits, decimal_str(units, digits)


def parse_positive(value: object, name: str) -> tuple[int, int]:
    """Parse a strictly positive decimal given as a string or an integer.

    Accepts ``"39000"``, ``"0.001"``, ``39000``; refuses floats, booleans,
    exponents, signs, NaN, infinities, blanks and more than
    MAX_INT_DIGITS/MAX_FRAC_DIGITS digits. Returns ``(units, digits)`` with
    trailing fractional zeros removed.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RuleError(f"{name} must be a decimal string or an integer, not {type(value).__name__}")
    if isinstance(value, int) and not 0 < value < 10**MAX_INT_DIGITS:
        raise RuleError(f"{name} must be greater than zero and have at most {MAX_INT_DIGITS} digits")
    text = str(value) if isinstance(value, int) else value
    m = _DECIMAL.match(text)
    if m is None:
        raise RuleError(f"{name} is not a plain positive decimal: {text[:40]!r}")
    whole, frac = m.group(1), (m.group(2) or "")
    whole = whole.lstrip("0") or "0"
    frac = frac.rstrip("0")
    if len(whole) > MAX_INT_DIGITS or len(frac) > MAX_FRAC_DIGITS:
        raise RuleError(
            f"{name} has too many digits (at most {MAX_INT_DIGITS} before and {MAX_FRAC_DIGITS} after the point)"
        )
    units = int(whole + frac)
    if units <= 0:
        raise RuleError(f"{name} must be greater than zero")
    return units, len(frac)


def decimal_str(units: int, digits: int) -> str:
    """The canonical spelling of ``units / 10**digits``: no exponent, no
    leading zeros, no trailing fractional zeros, ``-`` only for negatives."""
    sign = "-" if units < 0 else ""
    units = abs(units)
    if digits == 0:
        return f"{sign}{units}"
    whole, frac = divmod(units, 10**digits)
    frac_s = f"{frac:0{digits}d}".rstrip("0")
    return f"{sign}{whole}.{frac_s}" if frac_s else f"{sign}{whole}"


def amount_str(units: int, scale: int) -> str:
    """An amount of ``units * 10**-scale`` with exactly ``scale`` digits after
    the point (``"100.00000000"`` at scale 8)."""
    sign = ""
    if units < 0:
        sign, units = "-", -units
    digits = str(units)
    if not scale:
        return sign + digits
    if len(digits) <= scale:  # a leading "0." and the fraction's leading zeros
        digits = "0" * (scale + 1 - len(digits)) + digits
    return f"{sign}{digits[:-scale]}.{digits[-scale:]}"


ZEROS: dict[int, str] = {}  # scale -> amount_str(0, scale), filled by zero_str


def zero_str(scale: int) -> str:
    """``amount_str(0, scale)``, kept per scale (hot paths look in
    :data:`ZEROS` first: ``ZEROS.get(scale) or zero_str(scale)``)."""
    z = ZEROS[scale] = amount_str(0, scale)
    return z


def parse_amount(text: str, scale: int, name: str = "amount") -> int:
    """Inverse of :func:`amount_str`, accepting only that exact spelling."""
    if not isinstance(text, str):
        raise RuleError(f"{name} must be a string")
    body = text[1:] if text.startswith("-") else text
    m = _DECIMAL.match(body)
    if m is None or len(m.group(2) or "") != scale or (scale == 0 and m.group(2) is not None):
        raise RuleError(f"{name} is not an amount at scale {scale}: {text[:40]!r}")
    units = int(m.group(1) + (m.group(2) or ""))
    if amount_str(-units if text.startswith("-") else units, scale) != text:
        raise RuleError(f"{name} is not canonical: {text[:40]!r}")
    return -units if text.startswith("-") else units
