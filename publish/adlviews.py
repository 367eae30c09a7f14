"""The ADL pages of a lot contract (docs/SITE.md, "Auto-deleveraging"):
every event, paged (``/contract/<SYMBOL>/adl``), one event's positions
closed (``/contract/<SYMBOL>/adl/<seq>``) and what the trader lookup of
the contract page reads (``/contract/<SYMBOL>/adl.json``). GET and HEAD
only, read live like publish/views.py's routes."""

from __future__ import annotations

from urllib.parse import quote

from . import adlread, tlog
from .views import PAGE_CACHE, _SEQ, _SYMBOL, _get_only, _html_not_found, _int_param, _json, _page, _read, _snap


def _before(request) -> int | None:
    return _int_param(request, "before", 0, (1 << 63) - 1)


def _page_of(conn, symbol: str, snap, before: int | None, max_positions: int | None = None) -> dict | None:
    """A page of events of ``symbol`` (none for a contract without a lot);
    None for no such contract."""
    contract = adlread.lot_contract(conn, symbol, snap)
    if contract is None:
        return None
    evs, nxt = ([], None) if contract.lot is None else adlread.events(conn, contract, snap, before,
                                                                       max_positions=max_positions)
    return {"contract": contract, "events": evs, "next_before": nxt, "checkpoint_size": tlog.checkpoint_size(conn)}


async def _bad_request(datasette, request, message: str):
    return await _page(datasette, request, "fl_error.html", {"title": "Bad request", "message": message}, 400)


@_get_only
async def adl_list(datasette, request):
    """``/contract/<SYMBOL>/adl[?before=<seq>]``: every ADL event, 50 a page, newest first."""
    symbol = request.url_vars["symbol"]
    try:
        before = _before(request)
    except ValueError as e:
        return await _bad_request(datasette, request, f"bad parameter {e}")
    snap = _snap(datasette)
    d = await _read(datasette, _page_of, symbol, snap, before)
    if d is None:
        return await _html_not_found(datasette, request, f"There is no contract {symbol} in this ledger.")
    return await _page(datasette, request, "fl_adl_list.html", {
        "d": d, "c": d["contract"], "symbol": symbol, "before": before,
        "title": f"{symbol} auto-deleveraging events",
    })


@_get_only
async def adl_event(datasette, request):
    """``/contract/<SYMBOL>/adl/<seq>``: one event and every position it closed."""
    symbol, seq = request.url_vars["symbol"], int(request.url_vars["seq"])
    snap = _snap(datasette)

    def read(conn):
        found = None if seq >= 1 << 63 else adlread.one_event(conn, symbol, seq, snap)
        return None if found is None else (*found, tlog.checkpoint_size(conn))

    d = await _read(datasette, read)
    if d is None:
        return await _html_not_found(datasette, request, f"Entry {seq} is not an ADL event of {symbol}.")
    contract, ev, cp_size = d
    return await _page(datasette, request, "fl_adl_event.html", {
        "c": contract, "e": ev, "symbol": symbol, "checkpoint_size": cp_size,
        "title": f"{symbol} ADL event #{seq}",
    })


@_get_only
async def adl_json(datasette, request):
    """``/contract/<SYMBOL>/adl.json[?before=<seq>]``: a page of the events
    with their positions closed, for the trader lookup (publish/static/adl.js)."""
    symbol = request.url_vars["symbol"]
    try:
        before = _before(request)
    except ValueError as e:
        return _json({"error": f"bad parameter {e}"}, 400)
    d = await _read(datasette, _page_of, symbol, _snap(datasette), before, adlread.MAX_JSON_POSITIONS)
    if d is None:
        return _json({"error": f"unknown contract {symbol}"}, 404)
    c = d["contract"]
    nxt = None if d["next_before"] is None else f"/contract/{quote(symbol)}/adl.json?before={d['next_before']}"
    return _json({
        "contract": symbol, "lot": c.lot, "currency": c.currency, "scale": c.scale,
        "checkpoint_size": d["checkpoint_size"],
        "events": [adlread.lookup_event(e) for e in d["events"]],
        "next": nxt,
    }, cache=PAGE_CACHE)


ADL_ROUTES = [
    (rf"^/contract/{_SYMBOL}/adl$", adl_list),
    (rf"^/contract/{_SYMBOL}/adl\.json$", adl_json),
    (rf"^/contract/{_SYMBOL}/adl/{_SEQ}$", adl_event),
]
