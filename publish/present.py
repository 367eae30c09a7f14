"""How numbers and entries are shown to a person: pure functions, no I/O.

Amounts stay exact: they are the ledger's own decimal strings, only grouped
by thousands and stripped of trailing zeros beyond two decimals (never
rounded). The exact string is always available next to them (a title
attribute, the JSON API)."""

from __future__ import annotations

import base64
import re
from datetime import datetime, timezone

_AMOUNT = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?\Z")


def group(whole: str) -> str:
    """``"1234567"`` -> ``"1,234,567"``."""
    out = []
    while len(whole) > 3:
        out.append(whole[-3:])
        whole = whole[:-3]
    out.append(whole)
    return ",".join(reversed(out))


def amount(text: str | None, min_decimals: int = 2, signed: bool = False) -> str:
    """A ledger amount for reading: thousands grouped, trailing zeros past
    ``min_decimals`` dropped, never rounded. ``signed`` puts a ``+`` on
    positive amounts. ``None`` gives an em dash."""
    if text is None:
        return "\u2014"
    m = _AMOUNT.match(str(text))
    if m is None:
        return str(text)
    sign, whole, frac = m.group(1), m.group(2), m.group(3) or ""
    frac = frac.rstrip("0")
    if len(frac) < min_decimals:
        frac = frac + "0" * (min_decimals - len(frac))
    zero = not whole.strip("0") and not frac.strip("0")
    if signed and not sign and not zero:
        sign = "+"
    if zero:
        sign = ""
    return f"{sign}{group(whole)}" + (f".{frac}" if frac else "")


def usd(text: str | None) -> str:
    """``"1234.5"`` -> ``"$1,234.50"``; None -> em dash (no price known)."""
    if text is None:
        return "\u2014"
    return "$" + amount(text, 2)


def is_zero(text: str | None) -> bool:
    m = _AMOUNT.match(str(text or ""))
    return m is not None and not (m.group(2) + (m.group(3) or "")).strip("0")


def is_negative(text: str | None) -> bool:
    return bool(text) and str(text).startswith("-") and not is_zero(text)


def when(text: str | None) -> str:
    """An RFC 3339 UTC time for reading: ``2026-01-05 14:03:07 UTC``."""
    if not text:
        return "\u2014"
    t = parse_time(text)
    if t is None:
        return text
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def parse_time(text: str) -> datetime | None:
    m = re.match(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?Z\Z", text or "")
    if m is None:
        return None
    y, mo, d, h, mi, s, frac = m.groups()
    try:
        t = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=timezone.utc)
    except ValueError:
        return None
    if frac:
        t = t.replace(microsecond=int((frac[1:] + "000000")[:6]))
    return t


def b64(data: bytes | None) -> str:
    return "" if data is None else base64.b64encode(bytes(data)).decode("ascii")


def _allocation(fields: dict, contract: str) -> dict:
    """An ``adl`` entry: positions closed by an ADL event (docs/FORMAT.md)."""
    positions = fields.get("positions")
    n = len(positions.split(",")) if isinstance(positions, str) and positions else 0
    lid, event = fields.get("liquidation", "?"), fields.get("event", "?")
    return {"label": "positions closed, ADL", "css": "adl",
            "sentence": (f"{n} {contract} position{'' if n == 1 else 's'} closed by auto-deleveraging at "
                         f"{fields.get('price', '?')}, for liquidation {lid} (entry #{event}).")}


def movement(row: dict) -> dict:
    """What an entry did to its fund, in words and numbers, for the history
    table and the entry page: ``{"label", "css", "sentence"}``."""
    kind = row.get("kind")
    contract = row.get("contract") or ""
    cur = row.get("currency") or ""
    if kind == "contract":
        return {"label": "fund opened", "css": "opened",
                "sentence": f"The insurance fund of {contract} was opened, with a balance of 0 {cur}."}
    if kind == "key":
        return {"label": "signing key changed", "css": "key",
                "sentence": "The log's signing key was changed. This entry is signed by the old key and the new one."}
    if kind == "adl":
        return _allocation(row.get("fields") or {}, contract)
    if kind != "liquidation":
        return {"label": str(kind), "css": "other", "sentence": f"An entry of kind {kind!r}."}
    delta, paid, adl = row.get("delta"), row.get("paid"), row.get("adl")
    lid = row.get("liquidation_id") or row.get("id") or "?"
    fields = row.get("fields") or {}
    if isinstance(fields.get("adl_qty"), str):  # a lot contract's: ADL allocated (docs/FORMAT.md)
        return {"label": "shortfall, ADL", "css": "adl",
                "sentence": (f"Liquidation {lid} of {row.get('qty')} contracts: the fund paid {amount(paid)} {cur}, "
                             f"for the whole lots its balance covered; {fields['adl_qty']} contracts were closed by "
                             f"auto-deleveraging against opposing positions, absorbing the {amount(adl)} {cur} "
                             "a market fill would have left unpaid.")}
    if not is_negative(delta):
        return {"label": "surplus added", "css": "credit",
                "sentence": (f"Liquidation {lid} closed better than its bankruptcy price: "
                             f"the surplus of {amount(delta)} {cur} went into the {contract} fund.")}
    short = amount(str(delta)[1:])
    if is_zero(adl):
        return {"label": "shortfall paid", "css": "debit",
                "sentence": (f"Liquidation {lid} closed worse than its bankruptcy price: "
                             f"the fund paid the shortfall of {short} {cur}.")}
    return {"label": "shortfall, ADL", "css": "adl",
            "sentence": (f"Liquidation {lid} closed worse than its bankruptcy price by {short} {cur}. "
                         f"The fund paid {amount(paid)} {cur}, all it could; the remaining {amount(adl)} {cur} "
                         "was passed to auto-deleveraging.")}
