"""The ADL events of one fund, read from a ledger (``fundledger adl``, the site).

For each ADL liquidation of a lot contract (docs/FORMAT.md,
"Auto-deleveraging"): its size against the minimum the balance required,
recomputed here by the fund rules from the balance before it, the ranking
cut-off and every position closed. Given a trader's account commitment,
only the events that closed one of the trader's positions, with its rank
and a receipt for the entry that lists it. This reads the database as it
is: ``fundledger verify`` is what proves the entries follow the rules.
"""

from __future__ import annotations

import base64
from typing import Iterator

from ledger.errors import FundledgerError, InputError
from ledger.format import note
from ledger.format.entry import parse_entry_text
from ledger.rules import adl
from ledger.rules.fund import Contract, Fund, FundBook, check_symbol, parse_amount

MAX_EVENTS = 100_000  # events one report lists (a fund's; each is read in turn)


def _entry(data: bytes) -> dict:
    text, _ = note.split_note(bytes(data))
    return parse_entry_text(text)


def _contract(reader, symbol: str) -> Contract:
    for r in reader.contract_rows():
        if r["symbol"] == symbol:
            return Contract(r["symbol"], r["currency"], r["scale"], r["type"], r["multiplier"], r["registered_seq"],
                            r["lot"])
    raise InputError(f"unknown contract {symbol}")


def _minimum(contract: Contract, liq: dict) -> str | None:
    """The minimum ADL quantity for ``liq`` from the balance before it."""
    before = parse_amount(liq["balance"], contract.scale) + parse_amount(liq["paid"], contract.scale)
    book = FundBook()
    book.funds[contract.symbol] = Fund(contract, balance=before)
    record = {k: liq[k] for k in ("kind", "contract", "id", "side", "qty", "bankruptcy_price", "fill_price")}
    try:
        return book.adl_minimum(record)
    except FundledgerError:
        return None


def _events(reader, contract: Contract) -> Iterator[tuple[int, dict, list[tuple[int, dict]]]]:
    """``(seq, liquidation entry, [(seq, adl entry)])`` per event, in seq order."""
    current: tuple[int, dict, list] | None = None
    rows = reader.conn.execute(
        "SELECT seq, data FROM entries WHERE contract = ? AND kind = 'adl' ORDER BY seq", (contract.symbol,))
    for seq, data in rows:
        obj = _entry(data)
        if current is None or current[0] != obj["event"]:
            if current is not None:
                yield current
            found = reader.conn.execute("SELECT data FROM entries WHERE seq = ? AND contract = ? AND kind = "
                                        "'liquidation'", (obj["event"], contract.symbol)).fetchone()
            if found is None:
                raise InputError(f"the adl entry at seq {seq} names a liquidation at seq {obj['event']} that the "
                                 "database does not hold: run fundledger verify")
            current = (obj["event"], _entry(found[0]), [])
        current[2].append((seq, obj))
    if current is not None:
        yield current


def _positions(parts: list[tuple[int, dict]]) -> tuple[list[dict], dict | None]:
    out, rank, cutoff = [], 0, None
    for seq, obj in parts:
        for text in obj["positions"].split(","):
            c, size, qty, pnl, lev, score = text.split(" ")
            out.append({"rank": rank, "commitment": c, "side": obj["side"], "size": size, "qty": qty,
                        "price": obj["price"], "score": score, "pnl_ratio": pnl, "leverage": lev, "seq": seq})
            rank += 1
        if "next" in obj:
            c, size, pnl, lev, score = obj["next"].split(" ")
            cutoff = {"rank": rank, "commitment": c, "size": size, "score": score, "pnl_ratio": pnl, "leverage": lev}
    return out, cutoff


def event_record(contract: Contract, seq: int, liq: dict, parts: list[tuple[int, dict]]) -> dict:
    """One event of ``adl_events``: the liquidation entry ``seq`` (its fields
    ``liq``) and its ``adl`` entries ``parts`` (``(seq, fields)``, in order)."""
    positions, cutoff = _positions(parts)
    qty_units = adl.qty_units(liq["qty"], "qty") - adl.qty_units(liq["adl_qty"], "adl_qty")
    return {"seq": seq, "liquidation": liq["id"], "time": liq["time"], "side": liq["side"], "qty": liq["qty"],
            "adl_qty": liq["adl_qty"], "min_adl_qty": _minimum(contract, liq),
            "market_qty": _decimal(qty_units), "bankruptcy_price": liq["bankruptcy_price"],
            "fill_price": liq["fill_price"], "paid": liq["paid"], "adl": liq["adl"],
            "balance": liq["balance"], "queue_size": liq["queue_size"], "queue_root": liq["queue_root"],
            "closed": len(positions), "cutoff": cutoff, "positions": positions}


def adl_events(reader, symbol: str, account: bytes | None = None, receipts=None) -> dict:
    """``{"contract", "lot", "events": [...]}`` (docs/CLI.md, ``adl``); with
    ``account`` (an account commitment, 32 bytes) only the events that
    closed the trader's position, each with that position alone, its rank
    and ``receipts(seq)``'s receipt for its entry (None when no checkpoint
    covers it yet)."""
    symbol = check_symbol(symbol, "SYMBOL")
    contract = _contract(reader, symbol)
    events = []
    for seq, liq, parts in _events(reader, contract):
        event = event_record(contract, seq, liq, parts)
        positions = event["positions"]
        if account is not None:
            mine = base64.b64encode(adl.position_commitment(account, symbol, liq["id"])).decode()
            positions = [p for p in positions if p["commitment"] == mine]
            if not positions:
                continue
            event["positions"] = positions
            event["receipt"] = None if receipts is None else receipts(positions[0]["seq"])
        events.append(event)
        if len(events) >= MAX_EVENTS:
            break
    return {"contract": symbol, "lot": contract.lot, "currency": contract.currency,
            "scale": contract.scale, "events": events}


def _decimal(units: int) -> str:
    from ledger.rules.fund import decimal_str

    return decimal_str(units, adl.QTY_DIGITS)


def parse_account(text: str) -> bytes:
    """An account commitment given as standard base64 of 32 bytes."""
    try:
        return adl.decode_hash(text, "--account-commitment")
    except FundledgerError as e:
        raise InputError(str(e)) from None


def summary_line(event: dict, scale_currency: str) -> str:
    """One line of ``fundledger adl``'s text output."""
    cut = event["cutoff"]
    cut_s = f"cut-off score {cut['score']}" if cut else "the whole queue closed"
    minimum = event["min_adl_qty"]
    if minimum == event["adl_qty"]:
        fair = "the minimum"
    elif minimum is None:
        fair = "NOT NEEDED: the fund could pay"
    else:
        fair = f"NOT the minimum {minimum}"
    return (f"seq {event['seq']}  {event['liquidation']}  {event['side']} {event['qty']}: "
            f"ADL {event['adl_qty']} ({fair}), market {event['market_qty']}, fund paid {event['paid']} "
            f"{scale_currency}; {event['closed']} of {event['queue_size']} positions closed, {cut_s}")

