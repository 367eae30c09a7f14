"""Reads behind the pages: synchronous functions of a read-only connection,
run in Datasette's database threads (``Database.execute_fn``).

Every query is indexed and bounded (a page of history, one row per fund, a
few hundred chart samples), so pages cost the same on a log of a thousand
entries or of a hundred million.

Balances, totals and USD values come from the site's own verification
(:class:`publish.verified.Snapshot`), never from the ``contracts`` summary.
Entries shown in a history, a feed or an entry page are read from their
signed bytes and checked one by one (:func:`checked_entry`): the signature
of the log key in force at their position and their ``seq``; those above
the verified size are marked not yet verified."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from datetime import datetime, timezone

from ledger.format import mldsa, note
from ledger.errors import FundledgerError

from . import present, tlog
from .verified import Snapshot

CONTRACT_FIELDS = (
    "symbol", "currency", "type", "scale", "multiplier", "registered_seq", "balance", "balance_usd",
    "credited", "paid", "adl", "liquidations", "last_seq", "last_time", "last_price",
)
HISTORY_FIELDS = (
    "seq", "time", "kind", "liquidation_id", "side", "qty", "bankruptcy_price", "fill_price",
    "mark_price", "delta", "paid", "adl", "balance",
)
CHART_ALL_POINTS = 1500  # up to this many entries a fund's chart plots every one
CHART_SAMPLES = 600  # beyond, its balance sampled at this many evenly spaced positions


def log_size(conn) -> int:
    row = conn.execute("SELECT MAX(seq) FROM entries").fetchone()
    return 0 if row[0] is None else row[0] + 1


SUMMARY_FIELDS = (
    "contract", "currency", "type", "scale", "multiplier", "lot", "balance", "balance_usd", "credited", "paid", "adl",
    "liquidations", "allocations", "last_seq", "last_time", "last_price",
)
MAX_COSIGNATURES_SHOWN = 32  # cosignature rows looked at for one checkpoint
SIGNATURE_CACHE = 8192  # entries whose signature check is remembered (about 4 MB)


def fund_summary(fund: dict) -> dict:
    """The ``balance --json`` shape of one fund, from the verified snapshot
    (``lot`` and ``allocations`` a lot contract's only, as ``Fund.summary``)."""
    return {k: fund[k] for k in SUMMARY_FIELDS if k in fund}


def verified_funds(snap: Snapshot) -> list[dict]:
    """The funds as verified, for the pages (``symbol``, ``entries`` added);
    none unless the latest round verified."""
    if not snap.ok:
        return []
    return [dict(f, symbol=f["contract"], entries=f["liquidations"] + 1) for f in snap.funds.values()]


def verified_info(snap: Snapshot, size: int, cp_size: int) -> dict:
    """What the site verified itself, for pages and JSON: ``status``
    (pending, verified, failed), the size and root verified, how many
    entries of the log are newer, and why a failure failed."""
    done = snap.tree_size if snap.ok else 0
    return {
        "status": snap.status,
        "tree_size": done if snap.ok else None,
        "root": present.b64(snap.root) if snap.ok else None,
        "verified_at": snap.verified_at,
        "entries_not_yet_verified": max(0, size - done),
        "newer_checkpoint": cp_size > done if snap.ok else None,
        "reason": None if snap.ok else snap.reason,
        "failed_seq": snap.failed_seq if snap.status == "failed" else None,
    }


def checked_entry(seq: int, data: bytes, snap: Snapshot, contract: str | None = None) -> dict:
    """Entry ``seq`` as its signed bytes say, with ``check``: ``verified``
    (within the verified size, its ``seq`` is ``seq`` and the log key in
    force there signed it), ``unverified`` (above the verified size, or no
    verification yet) or ``mismatch`` (it is not the signed entry ``seq``:
    the stored copy was changed). ``contract``: the fund it must be about."""
    row = dict.fromkeys(HISTORY_FIELDS + ("contract",))
    row["seq"] = seq
    try:
        text, _ = note.split_note(bytes(data), 65535)
        obj = json.loads(text)
        if not isinstance(obj, dict):
            raise ValueError("not an object")
    except (FundledgerError, ValueError):
        return dict(row, check="mismatch", fields=None)
    for k in HISTORY_FIELDS[1:]:
        v = obj.get("id" if k == "liquidation_id" else k)
        row[k] = v if isinstance(v, str) else None
    row["contract"] = obj.get("contract") if isinstance(obj.get("contract"), str) else None
    row["fields"] = obj
    if obj.get("seq") != seq or (contract is not None and row["contract"] != contract):
        return dict(row, check="mismatch")
    if not snap.ok or seq >= snap.tree_size:
        return dict(row, check="unverified")
    return dict(row, check="verified" if _signed_by(bytes(data), snap.key_at(seq)) else "mismatch")


@functools.lru_cache(maxsize=SIGNATURE_CACHE)
def _signed_by(data: bytes, key: note.Verifier) -> bool:
    """Whether ``data`` is a signed note with a valid signature by ``key``.
    Cached (by the bytes themselves and the key), since the same pages are
    asked for again and again."""
    try:
        note.open_note(data, [key], 65535)
    except FundledgerError:
        return False
    return True


def contracts(conn) -> list[dict]:
    cols = ", ".join(CONTRACT_FIELDS)
    return [dict(zip(CONTRACT_FIELDS, r)) for r in conn.execute(f"SELECT {cols} FROM contracts ORDER BY symbol")]


def contract(conn, symbol: str) -> dict | None:
    cols = ", ".join(CONTRACT_FIELDS)
    r = conn.execute(f"SELECT {cols} FROM contracts WHERE symbol = ?", (symbol,)).fetchone()
    return None if r is None else dict(zip(CONTRACT_FIELDS, r))


COSIGNATURE_TYPES = {note.ALG_COSIGNATURE_V1: "Ed25519", note.ALG_MLDSA44: "ML-DSA-44"}
_TYPE_BY_SIZE = {note.COSIGNATURE_SIZE: "Ed25519", mldsa.COSIGNATURE_SIZE: "ML-DSA-44"}


def _utc(timestamp: int) -> str:
    """A cosignature's timestamp (seconds since the epoch) as UTC, or the
    number itself when it lies beyond what a date can show."""
    try:
        return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return str(timestamp)


def cosignatures(cp: tlog.LatestCheckpoint, witnesses=(), auditors=()) -> list[dict]:
    """The cosignature rows stored for ``cp``, each checked against the
    witness keys the site trusts: ``role`` ``witness`` (``verified``) only
    for a valid cosignature (Ed25519 cosignature/v1 or ML-DSA-44) by one of
    ``witnesses``; any other row is an ``unverified`` claim, whatever name
    it carries. ``algorithm`` is the verified key's type, or for a claim
    the type its length suggests (None if neither)."""
    text = None
    try:
        text, _ = note.split_note(cp.note)
    except FundledgerError:
        pass
    out = []
    for line in cp.cosignatures[:MAX_COSIGNATURES_SHOWN]:
        shown = line.decode("utf-8", "replace").rstrip("\n")[:300]
        try:
            (sig,) = note.parse_signature_lines(line)
        except (FundledgerError, ValueError):
            out.append({"name": None, "key_id": None, "line": shown, "role": "unverified", "verified": False,
                        "algorithm": None})
            continue
        good, at, algorithm = None, None, _TYPE_BY_SIZE.get(len(sig.signature))
        for w in witnesses:
            if text is not None and (w.name, w.key_id) == (sig.name, sig.key_id):
                try:
                    at = note.verify_cosignature(text, sig, w)
                    good, algorithm = w, COSIGNATURE_TYPES[w.alg]
                except FundledgerError:
                    pass
        out.append({"name": sig.name, "key_id": sig.key_id.hex(), "line": shown,
                    "role": "unverified" if good is None else "witness", "verified": good is not None,
                    "algorithm": algorithm,
                    # the time the witness signed into its cosignature (verified with it)
                    "cosigned_at": None if at is None else _utc(at),
                    "audits": good is not None and any(a.vkey() == good.vkey() for a in auditors)})
    return out


def checkpoint_info(cp: tlog.LatestCheckpoint | None, origin: str, snap: Snapshot | None = None,
                    witnesses=(), auditors=()) -> dict | None:
    """The latest checkpoint for pages and JSON: size, root, time, and who
    signed it. The log's signature counts as ``verified`` once this site's
    verifier checked this very checkpoint; a cosignature only if it verifies
    against a witness key the site was given (``fundledger serve
    --witness``); everything else is listed as an ``unverified`` claim."""
    if cp is None:
        return None
    verified = snap is not None and snap.ok and snap.checkpoint_id == cp.id and snap.checkpoint == cp.note
    sigs = [dict(s, role="log", verified=verified) if s["name"] == origin
            else dict(s, role="unverified", verified=False) for s in tlog.signature_lines(cp.note)]
    return {  # once verified, the size and root are the verified ones, not the table's copies
        "tree_size": snap.tree_size if verified else cp.tree_size,
        "root": present.b64(snap.root if verified else cp.root),
        "time": cp.time,
        "note": cp.published.decode("utf-8", "replace"),
        "verified": verified,
        "signatures": sigs + cosignatures(cp, witnesses, auditors),
    }


def home(conn, origin: str, snap: Snapshot, witnesses=(), auditors=()) -> dict:
    """The home page and /funds.json: every fund as verified, the latest
    checkpoint, and how much of the log is newer than what was verified."""
    funds = verified_funds(snap)
    cp = tlog.latest_checkpoint(conn)
    size = log_size(conn)
    cp_size = cp.tree_size if cp else 0
    return {
        "origin": origin,
        "tree_size": size,
        "checkpoint": checkpoint_info(cp, origin, snap, witnesses, auditors),
        "pending": size - cp_size,
        "verified": verified_info(snap, size, cp_size),
        "funds": funds,
        "total_usd": snap.total_usd() if snap.ok else None,
    }


def history(conn, symbol: str, before: int | None, limit: int, snap: Snapshot) -> tuple[list[dict], int | None]:
    """A page of one fund's entries, newest first, each as signed and
    checked (:func:`checked_entry`): ``(rows, next_before)``."""
    bound = (1 << 63) - 1 if before is None else before
    found = conn.execute(
        "SELECT seq, data FROM entries WHERE contract = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
        (symbol, bound, limit + 1),
    ).fetchall()
    more = len(found) > limit
    rows = [checked_entry(seq, data, snap, symbol) for seq, data in found[:limit]]
    return rows, (rows[-1]["seq"] if more and rows else None)


_POINT_TIME = re.compile(rb'"time":"([^"\\]{1,64})"')
_POINT_BALANCE = re.compile(rb'"balance":"([^"\\]{1,64})"')


def _signed_point(data: bytes, about: bytes) -> tuple[str, str | None] | None:
    """``(time, balance)`` from an entry's signed text (not from the derived
    columns); None if it has no time or is not ``about`` its fund (the bytes
    ``"contract":"SYMBOL"``). The text is the note's first line, canonical
    JSON (its signature is not checked here): its fields are found without a
    full parse, for speed."""
    line = bytes(data[:65535]).split(b"\n", 1)[0]
    when = _POINT_TIME.search(line)
    if about not in line or when is None:
        return None
    bal = _POINT_BALANCE.search(line)
    return when.group(1).decode("ascii", "replace"), bal.group(1).decode("ascii", "replace") if bal else None


def chart_points(conn, fund: dict) -> tuple[list[tuple[str, str | None]], bool]:
    """``[(time, balance)]`` in log order for the balance chart, up to the
    fund's last verified entry, and whether they are a sample. Every entry up
    to CHART_ALL_POINTS; beyond, the balance at CHART_SAMPLES evenly spaced
    positions of the fund's history (one indexed lookup each). Read from the
    entries' signed text, not from the derived columns."""
    symbol = fund["symbol"]
    about = b'"contract":' + json.dumps(symbol).encode()
    first, last = fund["registered_seq"], max(fund["last_seq"], fund["registered_seq"])
    if fund["liquidations"] + 1 <= CHART_ALL_POINTS:
        rows = conn.execute(
            "SELECT data FROM entries WHERE contract = ? AND seq <= ? ORDER BY seq", (symbol, last)
        ).fetchall()
        return [p for p in (_signed_point(r[0], about) for r in rows) if p is not None], False
    out, seen = [], set()
    for k in range(CHART_SAMPLES + 1):
        at = first + (last - first) * k // CHART_SAMPLES
        r = conn.execute(
            "SELECT seq, data FROM entries WHERE contract = ? AND seq <= ? ORDER BY seq DESC LIMIT 1",
            (symbol, at),
        ).fetchone()
        if r is not None and r[0] not in seen:
            seen.add(r[0])
            p = _signed_point(r[1], about)
            if p is not None:
                out.append(p)
    return out, True


def entry(conn, seq: int, origin: str, snap: Snapshot) -> dict | None:
    """One entry as signed and checked (:func:`checked_entry`), its
    signature lines, its neighbours, and its fund as verified."""
    r = conn.execute("SELECT data FROM entries WHERE seq = ?", (seq,)).fetchone()
    if r is None:
        return None
    data = bytes(r[0])
    row = checked_entry(seq, data, snap)
    row["leaf_hash"] = present.b64(hashlib.sha256(b"\x00" + data).digest())
    fund = snap.funds.get(row["contract"]) if snap.ok and row["contract"] else None
    if fund is not None:
        fund = dict(fund, symbol=fund["contract"])
    row["currency"] = fund["currency"] if fund else ""
    fields = row["fields"]
    row["fields_pretty"] = json.dumps(fields, indent=2, sort_keys=True) if fields is not None else ""
    row["signed_note"] = data.decode("utf-8", "replace")
    row["signatures"] = tlog.signature_lines(data)
    cp_size = tlog.checkpoint_size(conn)
    row["in_checkpoint"] = seq < cp_size
    row["checkpoint_size"] = cp_size
    row["verified_size"] = snap.tree_size if snap.ok else 0
    row["log_size"] = log_size(conn)
    prev_same = conn.execute(
        "SELECT MAX(seq) FROM entries WHERE contract = ? AND seq < ?", (row["contract"], seq)
    ).fetchone()[0] if row["contract"] else None
    next_same = conn.execute(
        "SELECT MIN(seq) FROM entries WHERE contract = ? AND seq > ?", (row["contract"], seq)
    ).fetchone()[0] if row["contract"] else None
    row["prev_same"], row["next_same"] = prev_same, next_same
    row["movement"] = present.movement(row)
    row["fund"] = fund
    return row


def verify_page(conn, origin: str, snap: Snapshot, witnesses=()) -> dict:
    """What /verify shows and the browser checks: the site's verified
    snapshot (its size and root, every fund's balance there, the seq of the
    entry that holds it) and the key-rotation entries below its size."""
    funds = [{"symbol": f["symbol"], "currency": f["currency"], "scale": f["scale"], "balance": f["balance"],
              "seq": f["last_seq"] if f["liquidations"] else f["registered_seq"]} for f in verified_funds(snap)]
    size = snap.tree_size if snap.ok else 0
    cp = tlog.latest_checkpoint(conn)
    return {"checkpoint": checkpoint_info(cp, origin, snap, witnesses), "size": size,
            "root": present.b64(snap.root) if snap.ok else "", "funds": funds,
            "key_seqs": [start - 1 for start, _ in snap.keys[1:]] if snap.ok else [],
            "verified": verified_info(snap, log_size(conn), cp.tree_size if cp else 0)}


def movements(conn, symbol: str | None, snap: Snapshot, limit: int = 50) -> list[dict]:
    """The latest liquidations (all funds, or one) within the verified
    size, newest first, as signed and checked, with the fund's currency:
    the Atom feed. A stored row that is not its signed entry is left out."""
    if not snap.ok:
        return []
    where = "kind = 'liquidation' AND seq < ?" + (" AND contract = ?" if symbol else "")
    args = (snap.tree_size,) + ((symbol,) if symbol else ()) + (limit,)
    out = []
    for seq, data in conn.execute(f"SELECT seq, data FROM entries WHERE {where} ORDER BY seq DESC LIMIT ?", args):
        row = checked_entry(seq, data, snap, symbol)
        fund = snap.funds.get(row["contract"] or "")
        if row["check"] == "verified" and row["kind"] == "liquidation" and fund is not None:
            out.append(dict(row, currency=fund["currency"]))
    return out


MAX_SEARCH_FUNDS = 10_000  # contracts searched for an id given without its contract


def find_liquidation(conn, liquidation_id: str, symbol: str | None = None) -> list[dict]:
    """The entries recording liquidation ``liquidation_id`` (of contract
    ``symbol``, or of any contract): ``[{"contract", "seq"}]``, each one
    indexed lookup. An id recorded for no contract gives []: that is not a
    proof that no such liquidation happened, only that none was logged."""
    if symbol is not None:
        symbols = [symbol]
    else:
        symbols = [r[0] for r in conn.execute("SELECT symbol FROM contracts ORDER BY registered_seq LIMIT ?",
                                               (MAX_SEARCH_FUNDS,))]
    out = []
    for s in symbols:
        row = conn.execute("SELECT seq FROM entries WHERE contract = ? AND liquidation_id = ?",
                           (s, liquidation_id)).fetchone()
        if row is not None:
            out.append({"contract": s, "seq": row[0]})
    return out


def auditing_cosigners(conn, witnesses=(), auditors=()) -> list[str]:
    """The names of the auditing witnesses whose cosignature of the latest
    checkpoint verifies (the site was given their keys as auditors)."""
    cp = tlog.latest_checkpoint(conn)
    if cp is None or not auditors:
        return []
    return [s["name"] for s in cosignatures(cp, witnesses, auditors) if s["audits"]]
