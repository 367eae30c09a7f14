"""The fund rules' fast path for the bulk import: a liquidation record whose
inputs are all already valid and canonical is taken as it is (no parsing,
no copies); any other goes the generic way (``FundBook.build``), which gives
the same result or the error. Tested equal to it (tests/test_import_pipeline.py)."""

from __future__ import annotations

from ledger.format.kinds import MAX_ID_LENGTH
from ledger.rules.fund import _CANONICAL_POSITIVE, _CANONICAL_TIME, _PRINTABLE, _valid_date


def fast_liquidation(record: dict, funds: dict):
    """The inputs of a liquidation record when every one of them is already
    valid and canonical (what ``FundBook._liquidation_inputs`` and
    ``parse_time`` accept and return unchanged), else None: the caller then
    takes the generic path, which gives the same result or the error. The
    bulk import's fast path (ledger/store/bulk.py): no parsing, no copies."""
    sym = record.get("contract")
    if type(sym) is not str:
        return None
    fund = funds.get(sym)
    if fund is None:  # (a listed contract's symbol was checked when it was listed)
        return None
    lid = record.get("id")
    side = record.get("side")
    qty = record.get("qty")
    bp = record.get("bankruptcy_price")
    fp = record.get("fill_price")
    mp = record.get("mark_price")
    t = record.get("time")
    if (
        type(lid) is str and len(lid) <= MAX_ID_LENGTH and _PRINTABLE.match(lid) is not None
        and (side == "long" or side == "short") and type(side) is str
        and type(qty) is str and _CANONICAL_POSITIVE.match(qty) is not None
        and type(bp) is str and _CANONICAL_POSITIVE.match(bp) is not None
        and type(fp) is str and _CANONICAL_POSITIVE.match(fp) is not None
        and (mp is None or (type(mp) is str and _CANONICAL_POSITIVE.match(mp) is not None))
        and (t is None or (type(t) is str and _CANONICAL_TIME.match(t) is not None and _valid_date(t)))
    ):
        return fund, sym, lid, side, qty, bp, fp, mp, t
    return None
