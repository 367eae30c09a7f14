"""Reads behind the ADL pages of a lot contract (docs/SITE.md,
"Auto-deleveraging"): synchronous functions of a read-only connection, run
in Datasette's database threads like publish/queries.py.

An ADL event (docs/FORMAT.md, "Auto-deleveraging") is a liquidation entry
whose next entry is an ``adl`` entry, and the ``adl`` entries at the
consecutive seqs after it. Every entry is read from its signed bytes and
checked as the history's are (:func:`publish.queries.checked_entry`); an
event's ``check`` is the worst of its entries'. Reads are bounded: a page
of events, newest first, and at most MAX_EVENT_ENTRIES ``adl`` entries of
one event (``complete`` False beyond: ``fundledger adl`` lists the rest).
"""

from __future__ import annotations

from ledger.errors import FundledgerError
from ledger.rules.fund import Contract

from . import adl as adl_report
from . import queries
from .verified import Snapshot

PAGE_EVENTS = 50  # events per page, and on the contract page
MAX_EVENT_ENTRIES = 256  # adl entries read per event (up to 65,536 positions closed)
MAX_JSON_POSITIONS = 20_000  # positions per page of adl.json (at least one event a page)
LOOKUP_FIELDS = ("rank", "commitment", "size", "qty", "price", "seq")
_WORST = ("mismatch", "unverified", "verified")

_EVENTS = (  # an event's liquidation is the entry before its first adl entry (the index entries_adl)
    "SELECT e.seq, e.data FROM entries AS a JOIN entries AS e ON e.seq = a.seq - 1 "
    "WHERE a.contract = ? AND a.kind = 'adl' AND a.seq <= ? AND e.kind = 'liquidation' "
    "ORDER BY a.seq DESC LIMIT ?"
)
_PARTS = "SELECT seq, data FROM entries WHERE seq > ? AND seq <= ? ORDER BY seq"
_ONE = "SELECT data FROM entries WHERE seq = ? AND contract = ? AND kind = 'liquidation'"


def lot_contract(conn, symbol: str, snap: Snapshot) -> Contract | None:
    """The contract as its signed ``contract`` entry registered it (``lot``
    None for a contract without one); None if the log has no such contract
    or its stored entry is not the signed one."""
    row = queries.contract(conn, symbol)
    if row is None:
        return None
    seq = row["registered_seq"]
    found = conn.execute("SELECT data FROM entries WHERE seq = ?", (seq,)).fetchone()
    if found is None:
        return None
    entry = queries.checked_entry(seq, found[0], snap, symbol)
    f = entry["fields"]
    if entry["check"] == "mismatch" or f is None or f.get("kind") != "contract":
        return None
    try:
        return Contract(symbol, f["currency"], int(f["scale"]), f["type"], f["multiplier"], seq, f.get("lot"))
    except (KeyError, TypeError, ValueError):
        return None


def _worst(checks: list[str]) -> str:
    return min(checks, key=_WORST.index)


def _parts(conn, contract: Contract, seq: int, snap: Snapshot) -> tuple[list, list[str], bool]:
    """The ``adl`` entries of event ``seq``: ``([(seq, fields)], checks, complete)``."""
    parts, checks, complete = [], [], True
    for s, data in conn.execute(_PARTS, (seq, seq + MAX_EVENT_ENTRIES + 1)):
        row = queries.checked_entry(s, data, snap, contract.symbol)
        f = row["fields"]
        if f is None:
            checks.append("mismatch")
            break
        if f.get("kind") != "adl" or f.get("event") != seq:
            break
        if len(parts) == MAX_EVENT_ENTRIES:
            complete = False
            break
        parts.append((s, f))
        checks.append(row["check"])
    return parts, checks, complete


def event(conn, contract: Contract, seq: int, data: bytes, snap: Snapshot) -> dict:
    """Event ``seq`` as ``fundledger adl --json`` lists it (publish/adl.py),
    with ``check``, ``complete``, ``fair`` (the ADL quantity is the minimum
    the balance required) and ``entries`` (the seqs of its ``adl``
    entries); ``malformed`` True when its entries could not be read as an
    event."""
    liq = queries.checked_entry(seq, data, snap, contract.symbol)
    parts, checks, complete = _parts(conn, contract, seq, snap)
    check = _worst([liq["check"], *checks])
    try:
        if liq["fields"] is None or not parts:
            raise ValueError("no event")
        ev = adl_report.event_record(contract, seq, liq["fields"], parts)
    except (FundledgerError, KeyError, TypeError, ValueError, AttributeError):
        return {"seq": seq, "malformed": True, "check": check, "liquidation": liq.get("liquidation_id"),
                "time": liq.get("time")}
    ev.update(check=check, complete=complete, malformed=False, fair=ev["min_adl_qty"] == ev["adl_qty"],
              price=ev["bankruptcy_price"], entries=[s for s, _ in parts])
    return ev


def events(conn, contract: Contract, snap: Snapshot, before: int | None, limit: int = PAGE_EVENTS,
           max_positions: int | None = None) -> tuple[list[dict], int | None]:
    """A page of the contract's ADL events, newest first: ``(events,
    next_before)``. With ``max_positions``, the page ends early once its
    events close that many positions (after its first event)."""
    bound = (1 << 63) - 1 if before is None else before
    found = conn.execute(_EVENTS, (contract.symbol, bound, limit + 1)).fetchall()
    out, total = [], 0
    for seq, data in found[:limit]:
        if max_positions is not None and out and total >= max_positions:
            return out, out[-1]["seq"]
        ev = event(conn, contract, seq, data, snap)
        total += len(ev.get("positions", ()))
        out.append(ev)
    return out, (out[-1]["seq"] if len(found) > limit and out else None)


def summary(conn, symbol: str, snap: Snapshot) -> dict | None:
    """The contract page's ADL section: ``{"lot", "currency", "events", "next_before"}``
    (no events for a contract without a lot); None for no such contract."""
    contract = lot_contract(conn, symbol, snap)
    if contract is None:
        return None
    if contract.lot is None:
        return {"lot": None, "currency": contract.currency, "events": [], "next_before": None}
    evs, nxt = events(conn, contract, snap, None)
    return {"lot": contract.lot, "currency": contract.currency, "events": evs, "next_before": nxt}


def one_event(conn, symbol: str, seq: int, snap: Snapshot) -> tuple[Contract, dict] | None:
    """Event ``seq`` of the lot contract ``symbol``; None if there is none."""
    contract = lot_contract(conn, symbol, snap)
    if contract is None or contract.lot is None:
        return None
    found = conn.execute(_ONE, (seq, symbol)).fetchone()
    if found is None:
        return None
    ev = event(conn, contract, seq, found[0], snap)
    if ev["malformed"] and ev["check"] != "mismatch":
        return None
    return contract, ev


def lookup_event(ev: dict) -> dict:
    """An event as adl.json lists it for the trader lookup: what the
    browser needs to find a position and show it."""
    keep = ("seq", "liquidation", "time", "side", "qty", "adl_qty", "price", "closed", "queue_size", "queue_root",
            "check", "complete", "malformed")
    out = {k: ev.get(k) for k in keep}
    out["positions"] = [{k: p[k] for k in LOOKUP_FIELDS} for p in ev.get("positions", ())]
    return out
