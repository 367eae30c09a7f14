"""Times: RFC 3339, in the canonical UTC spelling entries carry (docs/FORMAT.md, "Entries")."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from ledger.errors import RuleError
from ledger.format import kinds

_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})\Z"
)


def parse_time(value: object, name: str = "time") -> str:
    """Parse an RFC 3339 date-time and return its canonical UTC spelling:
    ``YYYY-MM-DDTHH:MM:SS[.fraction]Z`` with the fraction (at most 9 digits)
    stripped of trailing zeros. Offsets are converted to UTC; leap seconds
    are refused."""
    if not isinstance(value, str):
        raise RuleError(f"{name} must be an RFC 3339 string")
    if _CANONICAL_TIME.match(value) and _valid_date(value):
        return value  # already canonical: the common case for the verifier
    m = _TIME.match(value)
    if m is None:
        raise RuleError(f"{name} is not an RFC 3339 date-time: {value[:40]!r}")
    y, mo, d, h, mi, s, frac, off = m.groups()
    try:
        t = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=timezone.utc)
    except ValueError:
        raise RuleError(f"{name} is not a valid date-time: {value[:40]!r}") from None
    if off not in ("Z", "z"):
        sign = 1 if off[0] == "+" else -1
        oh, om = int(off[1:3]), int(off[4:6])
        if oh > 23 or om > 59:
            raise RuleError(f"{name} has a bad offset: {value[:40]!r}")
        try:
            t -= sign * timedelta(hours=oh, minutes=om)
        except OverflowError:
            raise RuleError(f"{name} is out of range: {value[:40]!r}") from None
    frac = (frac or "").rstrip("0")
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        + (f".{frac}" if frac else "")
        + "Z"
    )


_CANONICAL_TIME = re.compile(rf"(?:{kinds.TIME})\Z")


def _valid_date(value: str) -> bool:
    """The date part of an already well-shaped time exists (no 31 April)."""
    ok = _DATES_OK.get(value[:10])
    if ok is None:
        ok = _date_exists(value[:10])
        if len(_DATES_OK) < 65536:
            _DATES_OK[value[:10]] = ok
    return ok


_DATES_OK: dict[str, bool] = {}  # "YYYY-MM-DD" -> exists; a pure function's cache


def _date_exists(day: str) -> bool:
    try:
        datetime(int(day[0:4]), int(day[5:7]), int(day[8:10]))
    except ValueError:
        return False
    return day[0:4] != "0000"


def now_time() -> str:
    """The current time, canonical (see :func:`parse_time`), to the millisecond."""
    t = datetime.now(timezone.utc)
    ms = f"{t.microsecond // 1000:03d}".rstrip("0")
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        + (f".{ms}Z" if ms else "Z")
    )
