"""The site's own routes: pages, their JSON twins, the Atom feed and the
C2SP tlog-tiles endpoints, all read live through Datasette's read-only
database (``Database.execute_fn``).

Every view answers GET and HEAD only. Paths are matched on the raw
(undecoded) request path, and tile paths are parsed with
:func:`ledger.tlog.parse_tile_path`, which accepts exactly one spelling:
``..``, ``%2e%2e``, ``//``, leading zeros or a trailing slash are "not found".
"""

from __future__ import annotations

import json
import sqlite3
import re
from datetime import datetime, timezone
from urllib.parse import quote

from datasette.utils import sqlite_timelimit
from datasette.utils.asgi import Response
from markupsafe import Markup

from ledger.tlog.tiles import PATH_SUFFIX, TILE_WIDTH, parse_tile_path
from ledger.errors import FormatError
from ledger.rules.fund import parse_amount

from . import adlread, chart, feed, present, queries, tlog

READ_LIMIT_MS = 3000  # per page or tile: every query is indexed, this is a safety net
HISTORY_PAGE = 50
MAX_HISTORY_PAGE = 200
# Large logs: /verify checks inclusion proofs of the entries on screen
# instead of replaying everything (docs/SITE.md, "Verify in your browser").
# /verify: the full replay starts by itself up to AUTO entries; above it waits for the
# visitor's button, and above DESKTOP it says it is a job for a desktop (docs/SITE.md)
VERIFY_AUTO_LIMIT = 50_000
VERIFY_DESKTOP_LIMIT = 1_000_000

IMMUTABLE = "public, max-age=31536000, immutable"
PARTIAL = "public, max-age=3600"
NO_CACHE = "no-cache"
NO_STORE = "no-store"
PAGE_CACHE = "public, max-age=5"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


# --- helpers ---------------------------------------------------------------------


def _cfg(datasette):
    return datasette._fundledger


def _db(datasette):
    return datasette.get_database(_cfg(datasette).db_name)


def _snap(datasette):
    """The latest verified snapshot (publish/verified.py): read once per request."""
    return _cfg(datasette).verifier.snapshot


async def _read(datasette, fn, *args):
    """Run ``fn(conn, *args)`` in a database thread, under a time limit."""

    def inner(conn):
        with sqlite_timelimit(conn, READ_LIMIT_MS):
            return fn(conn, *args)

    return await _db(datasette).execute_fn(inner)


def _headers(cache: str, cors: bool = True, **extra) -> dict:
    h = {"Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    if cors:
        h["Access-Control-Allow-Origin"] = "*"
    h.update(extra)
    return h


def _bytes(body: bytes, content_type: str, cache: str, status: int = 200, **extra) -> Response:
    return Response(body, status=status, content_type=content_type, headers=_headers(cache, **extra))


def _text(body: str, status: int = 200, cache: str = NO_CACHE) -> Response:
    return _bytes(body.encode("utf-8"), "text/plain; charset=utf-8", cache, status)


def _not_found(what: str = "not found") -> Response:
    return _text(what + "\n", 404, NO_STORE)


def _json(obj, status: int = 200, cache: str = NO_CACHE) -> Response:
    body = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    return _bytes(body.encode("utf-8"), "application/json; charset=utf-8", cache, status)


def _method_not_allowed() -> Response:
    return _bytes(b"only GET and HEAD\n", "text/plain; charset=utf-8", NO_STORE, 405, Allow="GET, HEAD")


def _get_only(view):
    """Refuse anything but GET and HEAD (405)."""

    async def wrapped(datasette, request):
        if request.method not in ("GET", "HEAD"):
            return _method_not_allowed()
        try:
            return await view(datasette, request)
        except sqlite3.OperationalError as e:
            if "interrupted" not in str(e):
                raise
            return _bytes(f"the read took longer than {READ_LIMIT_MS} ms; try again later\n".encode(),
                          "text/plain; charset=utf-8", NO_STORE, 503, **{"Retry-After": "5"})

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


async def _page(datasette, request, template: str, context: dict, status: int = 200) -> Response:
    cfg = _cfg(datasette)
    ctx = {"origin": cfg.origin, "fmt": present, "request_path": request.path,
           "site_url": datasette.absolute_url(request, "/"), **context}
    html = await datasette.render_template(template, ctx, request=request)
    headers = _headers(PAGE_CACHE if status == 200 else NO_STORE, cors=False)
    headers["Content-Security-Policy"] = CSP
    headers["Referrer-Policy"] = "no-referrer"
    return Response(html, status=status, content_type="text/html; charset=utf-8", headers=headers)


async def _html_not_found(datasette, request, message: str) -> Response:
    return await _page(datasette, request, "fl_error.html", {"title": "Not found", "message": message}, 404)


def _int_param(request, name: str, lo: int, hi: int) -> int | None:
    """An optional integer query parameter in [lo, hi]; ValueError if bad."""
    v = request.args.get(name)
    if v is None or v == "":
        return None
    if not v.isascii() or not v.isdigit() or len(v) > 19:
        raise ValueError(name)
    n = int(v)
    if not lo <= n <= hi:
        raise ValueError(name)
    return n


def _seq(request) -> int | None:
    s = request.url_vars["seq"]
    n = int(s)
    return n if n < 1 << 63 else None


# --- C2SP tlog-tiles ---------------------------------------------------------------


@_get_only
async def checkpoint(datasette, request):
    """``/checkpoint``: the latest signed checkpoint with its cosignatures."""
    cp = await _read(datasette, tlog.latest_checkpoint)
    if cp is None:
        return _not_found("no signed checkpoint yet")
    return _bytes(cp.published, "text/plain; charset=utf-8", NO_CACHE)


@_get_only
async def vkey(datasette, request):
    """``/vkey``: the log's note verifier key (the first key: the trust anchor)."""
    return _bytes((_cfg(datasette).vkey + "\n").encode(), "text/plain; charset=utf-8", "public, max-age=86400")


@_get_only
async def tile(datasette, request):
    """``/tile/<L>/<N>[.p/<W>]`` and ``/tile/entries/<N>[.p/<W>]``."""
    path = "tile/" + request.url_vars["rest"]
    try:
        level, index, width = parse_tile_path(path)
    except FormatError:
        return _not_found()
    data = await _read(datasette, tlog.tile_bytes, level, index, width)
    if data is None:
        return _not_found("not covered by the latest checkpoint")
    cache = IMMUTABLE if width == TILE_WIDTH else PARTIAL
    return _bytes(data, "application/octet-stream", cache)


@_get_only
async def receipt(datasette, request):
    """``/entry/<seq>/receipt``: a C2SP tlog-proof@v1 receipt for one entry."""
    seq = _seq(request)
    data = None if seq is None else await _read(datasette, tlog.receipt, seq)
    if data is None:
        return _not_found("no such entry in the latest signed checkpoint")
    return _bytes(data, "text/plain; charset=utf-8", NO_CACHE,
                  **{"Content-Disposition": f'attachment; filename="entry-{seq}.receipt"'})


@_get_only
async def raw_entry(datasette, request):
    """``/entry/<seq>/raw``: the entry's exact bytes (its signed note)."""
    seq = _seq(request)
    data = None if seq is None else await _read(datasette, tlog.entry_bytes, seq)
    if data is None:
        return _not_found("no such entry")
    return _bytes(data, "text/plain; charset=utf-8", IMMUTABLE)


_ID_RE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?")
_SYMBOL_RE = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,31}")


@_get_only
async def search(datasette, request):
    """``/search?id=<liquidation id>[&contract=<symbol>]``: the entry that
    recorded it (a redirect), the entries of several contracts, or "not
    found", said as what it is."""
    lid = request.args.get("id", "").strip()
    symbol = request.args.get("contract") or None
    if not _ID_RE.fullmatch(lid) or (symbol is not None and not _SYMBOL_RE.fullmatch(symbol)):
        return await _page(datasette, request, "fl_error.html", {
            "title": "Find a liquidation", "message": "Give a liquidation id: printable ASCII, at most 128 characters."},
            400)
    found = await _read(datasette, queries.find_liquidation, lid, symbol)
    if len(found) == 1:
        return Response.redirect(f"/entry/{found[0]['seq']}")
    size = await _read(datasette, queries.log_size)
    return await _page(datasette, request, "fl_search.html", {
        "title": "Find a liquidation", "lid": lid, "symbol": symbol, "found": found, "log_size": size,
    }, 200 if found else 404)


# --- format 2: what the light check of one fund reads (docs/FORMAT.md) -------------------


@_get_only
async def funds_file(datasette, request):
    """``/funds`` and ``/since`` of a format-2 log (404 for a format-1 one)."""
    files = await _read(datasette, tlog.fund_files)
    if files is None:
        return _not_found("not a format-2 log")
    body = files.funds if request.path == "/funds" else f"{files.since}\n".encode()
    return _bytes(body, "text/plain; charset=utf-8", NO_CACHE)


@_get_only
async def heads_tile(datasette, request):
    """``/heads/<L>/<hex>``: a heads tile of the latest checkpoint, named by its hash."""
    files = await _read(datasette, tlog.fund_files)
    rel = f"{request.url_vars['level']}/{request.url_vars['name']}"
    data = None if files is None else files.heads.get(rel)
    if data is None:
        return _not_found("not a heads tile of the latest checkpoint")
    return _bytes(data, "application/octet-stream", IMMUTABLE)


@_get_only
async def chain_bundle(datasette, request):
    """``/chain/<name>/<N>[.p/<W>][.paths]``: a chain bundle at the latest
    checkpoint, or its tile paths (fixed for good once published)."""
    rest = request.url_vars["rest"]
    paths = rest.endswith(PATH_SUFFIX)
    try:
        _, index, width = parse_tile_path("tile/0/" + rest.removesuffix(PATH_SUFFIX))
    except FormatError:
        return _not_found()
    data = await _read(datasette, tlog.chain_bundle, request.url_vars["name"], index, width, paths)
    if data is None:
        return _not_found("not covered by the latest checkpoint")
    return _bytes(data, "application/octet-stream", IMMUTABLE if width == TILE_WIDTH or paths else PARTIAL)


# --- pages and their JSON --------------------------------------------------------------


@_get_only
async def home(datasette, request):
    cfg = _cfg(datasette)
    d = await _read(datasette, queries.home, cfg.origin, _snap(datasette), cfg.witnesses, cfg.auditors)
    return await _page(datasette, request, "fl_home.html", {"d": d, "title": "Insurance funds"})


@_get_only
async def funds_json(datasette, request):
    cfg = _cfg(datasette)
    d = await _read(datasette, queries.home, cfg.origin, _snap(datasette), cfg.witnesses, cfg.auditors)
    return _json({
        "origin": d["origin"],
        "tree_size": d["tree_size"],
        "verified": d["verified"],
        "checkpoint": d["checkpoint"],
        "entries_after_checkpoint": d["pending"],
        "total_usd": d["total_usd"],
        "contracts": [queries.fund_summary(f) for f in d["funds"]],
    }, cache=PAGE_CACHE)


def _contract_data(conn, symbol, before, limit, snap, with_adl=False):
    """A fund as verified and a page of its history (``with_adl``: and its
    latest ADL events, publish/adlread.py); None if the log has no such
    contract. A fund not (yet) in the verified snapshot has ``fund`` None:
    its page says so and shows no number."""
    fund = next((f for f in queries.verified_funds(snap) if f["symbol"] == symbol), None)
    if fund is None and queries.contract(conn, symbol) is None:
        return None
    rows, next_before = queries.history(conn, symbol, before, limit, snap)
    points, sampled = queries.chart_points(conn, fund) if fund is not None else ([], False)
    cp_size, size = tlog.checkpoint_size(conn), queries.log_size(conn)
    return {"fund": fund, "symbol": symbol, "rows": rows, "next_before": next_before, "points": points,
            "sampled": sampled, "checkpoint_size": cp_size, "log_size": size,
            "verified": queries.verified_info(snap, size, cp_size),
            "adl": adlread.summary(conn, symbol, snap) if with_adl else None}


def _history_args(request):
    before = _int_param(request, "before", 0, (1 << 63) - 1)
    limit = _int_param(request, "limit", 1, MAX_HISTORY_PAGE) or HISTORY_PAGE
    return before, limit


def _chart(d: dict) -> str:
    fund = d["fund"]
    if fund is None:
        return ""
    pts = []
    for t, bal in d["points"]:
        when = present.parse_time(t)
        if when is None:
            continue
        pts.append((when, parse_amount(bal, fund["scale"]) if bal is not None else 0))
    title = f"{fund['symbol']} insurance fund balance over time"
    return chart.balance_svg(pts, fund["scale"], fund["currency"], title)


@_get_only
async def contract_page(datasette, request):
    symbol = request.url_vars["symbol"]
    try:
        before, limit = _history_args(request)
    except ValueError as e:
        return await _page(datasette, request, "fl_error.html",
                           {"title": "Bad request", "message": f"bad parameter {e}"}, 400)
    d = await _read(datasette, _contract_data, symbol, before, limit, _snap(datasette), True)
    if d is None:
        return await _html_not_found(datasette, request, f"There is no contract {symbol} in this ledger.")
    for r in d["rows"]:
        r["currency"] = d["fund"]["currency"] if d["fund"] else ""
        r["contract"] = symbol
        r["movement"] = present.movement(r)
    cfg = _cfg(datasette)
    auditing = await _read(datasette, queries.auditing_cosigners, cfg.witnesses, cfg.auditors)
    return await _page(datasette, request, "fl_contract.html", {
        "d": d, "f": d["fund"], "chart": Markup(_chart(d)), "before": before, "limit": limit, "auditing": auditing,
        "title": f"{symbol} insurance fund",
    })


@_get_only
async def contract_json(datasette, request):
    symbol = request.url_vars["symbol"]
    try:
        before, limit = _history_args(request)
    except ValueError as e:
        return _json({"error": f"bad parameter {e}"}, 400)
    d = await _read(datasette, _contract_data, symbol, before, limit, _snap(datasette))
    if d is None:
        return _json({"error": f"unknown contract {symbol}"}, 404)
    nxt = None
    if d["next_before"] is not None:
        nxt = f"/contract/{quote(symbol)}.json?before={d['next_before']}" + (
            f"&limit={limit}" if limit != HISTORY_PAGE else "")
    return _json({
        "contract": queries.fund_summary(d["fund"]) if d["fund"] else None,
        "verified": d["verified"],
        "checkpoint_size": d["checkpoint_size"],
        "entries": [{k: r[k] for k in queries.HISTORY_FIELDS + ("check",)} for r in d["rows"]],
        "next": nxt,
    }, cache=PAGE_CACHE)


@_get_only
async def entry_page(datasette, request):
    seq = _seq(request)
    e = None if seq is None else await _read(datasette, queries.entry, seq, _cfg(datasette).origin,
                                             _snap(datasette))
    if e is None:
        return await _html_not_found(datasette, request, f"There is no entry {request.url_vars['seq']} in this log.")
    return await _page(datasette, request, "fl_entry.html", {"e": e, "title": f"Log entry #{seq}"})


@_get_only
async def entry_json(datasette, request):
    seq = _seq(request)
    e = None if seq is None else await _read(datasette, queries.entry, seq, _cfg(datasette).origin,
                                             _snap(datasette))
    if e is None:
        return _json({"error": "no such entry"}, 404)
    return _json({
        "seq": e["seq"],
        "kind": e["kind"],
        "contract": e["contract"],
        "time": e["time"],
        "fields": e["fields"],
        "signed_note": e["signed_note"],
        "signatures": e["signatures"],
        "leaf_hash": e["leaf_hash"],
        "in_checkpoint": e["in_checkpoint"],
        "checkpoint_size": e["checkpoint_size"],
        "check": e["check"],
        "verified_size": e["verified_size"],
        "receipt": f"/entry/{seq}/receipt" if e["in_checkpoint"] else None,
        "raw": f"/entry/{seq}/raw",
    }, cache=PAGE_CACHE)


@_get_only
async def checkpoint_json(datasette, request):
    cfg = _cfg(datasette)
    snap = _snap(datasette)

    def read(conn):
        info = queries.checkpoint_info(tlog.latest_checkpoint(conn), cfg.origin, snap, cfg.witnesses)
        return info, queries.log_size(conn)

    info, size = await _read(datasette, read)
    if info is None:
        return _json({"error": "no signed checkpoint yet"}, 404)
    return _json({"origin": cfg.origin, **info, "entries_after_checkpoint": size - info["tree_size"]})


@_get_only
async def verify_page(datasette, request):
    cfg = _cfg(datasette)
    d = await _read(datasette, queries.verify_page, cfg.origin, _snap(datasette), cfg.witnesses)
    return await _page(datasette, request, "fl_verify.html", {
        "d": d, "auto_limit": VERIFY_AUTO_LIMIT, "desktop_limit": VERIFY_DESKTOP_LIMIT, "title": "Check it yourself",
    })


@_get_only
async def about(datasette, request):
    d = await _read(datasette, lambda conn: {"size": queries.log_size(conn)})
    return await _page(datasette, request, "fl_about.html", {"d": d, "title": "How this works"})


@_get_only
async def atom_feed(datasette, request):
    cfg = _cfg(datasette)
    symbol = request.url_vars.get("symbol")
    snap = _snap(datasette)

    def read(conn):
        if symbol is not None and queries.contract(conn, symbol) is None:
            return None
        return queries.movements(conn, symbol, snap)

    rows = await _read(datasette, read)
    if rows is None:
        return _not_found("unknown contract")
    path = f"/contract/{quote(symbol)}.atom" if symbol else "/feed.atom"
    site = f"/contract/{quote(symbol)}" if symbol else "/"
    body = feed.atom(
        rows,
        title=f"{symbol} insurance fund movements" if symbol else f"Insurance fund movements: {cfg.origin}",
        feed_url=datasette.absolute_url(request, path),
        site_url=datasette.absolute_url(request, site),
        entry_url=lambda seq: datasette.absolute_url(request, f"/entry/{seq}"),
        origin=cfg.origin,
        updated=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    return _bytes(body, feed.ATOM_TYPE, PAGE_CACHE)


ROBOTS = """\
# fundledger transparency site. Pages for people may be indexed; the
# generic data explorer, filtered and paged views, the tiles and receipts
# are for tools and would only cost crawlers and this server time.
User-agent: *
Disallow: /ledger
Disallow: /tile/
Disallow: /chain/
Disallow: /heads/
Disallow: /entry/
Disallow: /-/
Disallow: /*?
Allow: /
"""


@_get_only
async def robots(datasette, request):
    return _text(ROBOTS, cache="public, max-age=86400")


_SEQ = r"(?P<seq>0|[1-9][0-9]{0,18})"
_SYMBOL = r"(?P<symbol>[A-Z0-9][A-Z0-9._-]{0,31})"

ROUTES = [
    (r"^/$", home),
    (r"^/funds\.json$", funds_json),
    (r"^/about$", about),
    (r"^/verify$", verify_page),
    (r"^/feed\.atom$", atom_feed),
    (r"^/search$", search),
    (r"^/robots\.txt$", robots),
    (rf"^/contract/{_SYMBOL}$", contract_page),
    (rf"^/contract/{_SYMBOL}\.json$", contract_json),
    (rf"^/contract/{_SYMBOL}\.atom$", atom_feed),
    (rf"^/entry/{_SEQ}$", entry_page),
    (rf"^/entry/{_SEQ}\.json$", entry_json),
    (rf"^/entry/{_SEQ}/receipt$", receipt),
    (rf"^/entry/{_SEQ}/raw$", raw_entry),
    (r"^/checkpoint$", checkpoint),
    (r"^/checkpoint\.json$", checkpoint_json),
    (r"^/vkey$", vkey),
    (r"^/tile/(?P<rest>.*)$", tile),
    (r"^/(funds|since)$", funds_file),
    (r"^/heads/(?P<level>0|[1-9][0-9]?)/(?P<name>[0-9a-f]{64})$", heads_tile),
    (r"^/chain/(?P<name>_key|[A-Z0-9][A-Z0-9._-]{0,31})/(?P<rest>.+)$", chain_bundle),
]
