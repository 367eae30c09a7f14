"""Reads behind the pages: synchronous functions of a read-only connection,
run in Datasette's database threads (``Database.execute_fn``).

Every query is indexed and bounded (a page of history, one row per fund, a
few hundred chart samples), so pages cost the same on a log of a thousand
entries or of a hundred million."""

from __future__ import annotations

import json

from ledger import note
from ledger.errors import FundledgerError
from ledger.fund import amount_str

from . import present, tlog

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


def fund_summary(row: dict) -> dict:
    """The ``balance --json`` shape of one fund, from its ``contracts`` row."""
    return {
        "contract": row["symbol"], "currency": row["currency"], "type": row["type"], "scale": row["scale"],
        "multiplier": row["multiplier"], "balance": row["balance"], "balance_usd": row["balance_usd"],
        "credited": row["credited"], "paid": row["paid"], "adl": row["adl"],
        "liquidations": row["liquidations"], "last_seq": row["last_seq"], "last_time": row["last_time"],
        "last_price": row["last_price"],
    }


def contracts(conn) -> list[dict]:
    cols = ", ".join(CONTRACT_FIELDS)
    return [dict(zip(CONTRACT_FIELDS, r)) for r in conn.execute(f"SELECT {cols} FROM contracts ORDER BY symbol")]


def contract(conn, symbol: str) -> dict | None:
    cols = ", ".join(CONTRACT_FIELDS)
    r = conn.execute(f"SELECT {cols} FROM contracts WHERE symbol = ?", (symbol,)).fetchone()
    return None if r is None else dict(zip(CONTRACT_FIELDS, r))


def checkpoint_info(cp: tlog.LatestCheckpoint | None, origin: str) -> dict | None:
    """The latest checkpoint for pages and JSON: size, root, time, and who
    signed it (the log's key or keys, and the witnesses that cosigned)."""
    if cp is None:
        return None
    sigs = tlog.signature_lines(cp.published)
    return {
        "tree_size": cp.tree_size,
        "root": present.b64(cp.root),
        "time": cp.time,
        "note": cp.published.decode("utf-8", "replace"),
        "signatures": [dict(s, role="log" if s["name"] == origin else "witness") for s in sigs],
    }


def _sum_usd(rows: list[dict]) -> str | None:
    """Sum of the USD values (cents, exact) of the funds that have one."""
    cents = [int(r["balance_usd"].replace(".", "")) for r in rows if r.get("balance_usd")]
    return amount_str(sum(cents), 2) if cents else None


def home(conn, origin: str) -> dict:
    funds = contracts(conn)
    for f in funds:
        last = conn.execute(
            "SELECT seq, time, kind, delta, paid, adl FROM entries WHERE contract = ? AND kind = 'liquidation' "
            "ORDER BY seq DESC LIMIT 1", (f["symbol"],)
        ).fetchone()
        f["last_movement"] = None if last is None else dict(zip(("seq", "time", "kind", "delta", "paid", "adl"), last))
        f["entries"] = f["liquidations"] + 1
    cp = tlog.latest_checkpoint(conn)
    size = log_size(conn)
    return {
        "origin": origin,
        "tree_size": size,
        "checkpoint": checkpoint_info(cp, origin),
        "pending": size - (cp.tree_size if cp else 0),
        "funds": funds,
        "total_usd": _sum_usd(funds),
    }


def history(conn, symbol: str, before: int | None, limit: int) -> tuple[list[dict], int | None]:
    """A page of one fund's entries, newest first: ``(rows, next_before)``."""
    cols = ", ".join(HISTORY_FIELDS)
    bound = (1 << 63) - 1 if before is None else before
    rows = [
        dict(zip(HISTORY_FIELDS, r))
        for r in conn.execute(
            f"SELECT {cols} FROM entries WHERE contract = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (symbol, bound, limit + 1),
        )
    ]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1]["seq"] if more and rows else None)


def chart_points(conn, fund: dict) -> tuple[list[tuple[str, str | None]], bool]:
    """``[(time, balance)]`` in log order for the balance chart, and whether
    they are a sample. Every entry up to CHART_ALL_POINTS; beyond, the
    balance at CHART_SAMPLES evenly spaced positions of the fund's history
    (one indexed lookup each)."""
    symbol = fund["symbol"]
    if fund["liquidations"] + 1 <= CHART_ALL_POINTS:
        rows = conn.execute(
            "SELECT time, balance FROM entries WHERE contract = ? ORDER BY seq", (symbol,)
        ).fetchall()
        return [(r[0], r[1]) for r in rows], False
    first, last = fund["registered_seq"], fund["last_seq"]
    out, seen = [], set()
    for k in range(CHART_SAMPLES + 1):
        at = first + (last - first) * k // CHART_SAMPLES
        r = conn.execute(
            "SELECT seq, time, balance FROM entries WHERE contract = ? AND seq <= ? ORDER BY seq DESC LIMIT 1",
            (symbol, at),
        ).fetchone()
        if r is not None and r[0] not in seen:
            seen.add(r[0])
            out.append((r[1], r[2]))
    return out, True


def entry(conn, seq: int, origin: str) -> dict | None:
    cols = ", ".join(HISTORY_FIELDS)
    r = conn.execute(f"SELECT {cols}, contract, data, leaf_hash FROM entries WHERE seq = ?", (seq,)).fetchone()
    if r is None:
        return None
    row = dict(zip(HISTORY_FIELDS + ("contract", "data", "leaf_hash"), r))
    data = bytes(row.pop("data"))
    row["leaf_hash"] = present.b64(row["leaf_hash"])
    fund = contract(conn, row["contract"]) if row["contract"] else None
    row["currency"] = fund["currency"] if fund else ""
    try:
        text, _ = note.split_note(data, 65535)
        fields = json.loads(text)
    except (FundledgerError, ValueError):
        text, fields = b"", None
    row["fields"] = fields
    row["fields_pretty"] = json.dumps(fields, indent=2, sort_keys=True) if fields is not None else ""
    row["signed_note"] = data.decode("utf-8", "replace")
    row["signatures"] = tlog.signature_lines(data)
    cp_size = tlog.checkpoint_size(conn)
    row["in_checkpoint"] = seq < cp_size
    row["checkpoint_size"] = cp_size
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


def verify_page(conn, origin: str) -> dict:
    """What /verify shows and the browser checks: each fund's balance as of
    the latest checkpoint (the last balance recorded below its size), the
    seq of the entry that says so, and the key-rotation entries below it."""
    cp = tlog.latest_checkpoint(conn)
    size = cp.tree_size if cp else 0
    funds = []
    for f in contracts(conn):
        if f["registered_seq"] >= size:
            continue
        r = conn.execute(
            "SELECT seq, balance FROM entries WHERE contract = ? AND kind = 'liquidation' AND seq < ? "
            "ORDER BY seq DESC LIMIT 1", (f["symbol"], size)
        ).fetchone()
        seq, balance = (f["registered_seq"], amount_str(0, f["scale"])) if r is None else (r[0], r[1])
        funds.append({"symbol": f["symbol"], "currency": f["currency"], "scale": f["scale"],
                      "balance": balance, "seq": seq})
    # key entries have contract '': the (contract, seq) index finds them without a scan
    keys = [r[0] for r in conn.execute(
        "SELECT seq FROM entries WHERE contract = '' AND kind = 'key' AND seq < ? ORDER BY seq", (size,))]
    return {"checkpoint": checkpoint_info(cp, origin), "size": size, "funds": funds, "key_seqs": keys}


def movements(conn, symbol: str | None, limit: int = 50) -> list[dict]:
    """The latest liquidations (all funds, or one), newest first, with the
    fund's currency: the Atom feed."""
    cols = ", ".join(f"e.{c}" for c in HISTORY_FIELDS)
    where = "e.kind = 'liquidation'" + (" AND e.contract = ?" if symbol else "")
    args = ((symbol,) if symbol else ()) + (limit,)
    q = (f"SELECT {cols}, e.contract, c.currency FROM entries e JOIN contracts c ON c.symbol = e.contract "
         f"WHERE {where} ORDER BY e.seq DESC LIMIT ?")
    return [dict(zip(HISTORY_FIELDS + ("contract", "currency"), r)) for r in conn.execute(q, args)]
