"""Reading user records: the first step of every append.

A *record* is what a user gives to append one entry: a JSON object with a
``kind`` (``contract``, ``liquidation`` or ``adl``) and that kind's input fields. A
record comes from one line of JSON Lines (``fundledger import``) or from a
command's options (``contract add``, ``liquidation``); either way it is
made here and nothing else is read from the input. The next steps are the
store's: the rules check it and give the entry's fields, the entry is
built, signed and stored (ledger/store/build.py, ledger/store/store.py).

A record's fields are taken from the entry kinds (ledger/format/kinds.py):
the entry's fields less those the chain gives (``seq``, ``prev``) and those
the rules compute (the amounts of a liquidation); a contract record names
its symbol ``symbol``. Their values are the rules' to check, not this
module's.
"""

from __future__ import annotations

from typing import IO, Iterator

from ledger.errors import FundledgerError, LimitError, RuleError
from ledger.format.entry import parse_json_object
from ledger.format.kinds import ADL, CONTRACT_LOT, LIQUIDATION_ADL, Kind

MAX_LINE_BYTES = 65536  # one line of JSON Lines, its newline included

_CHAIN_FIELDS = ("seq", "prev", "chain_seq", "chain_prev")  # given by the chain, never by a record
_COMPUTED_FIELDS = {  # computed by the rules (FundBook.liquidation_entry, FundBook.adl_entry)
    "liquidation": ("delta", "paid", "adl", "balance"),
    "adl": ("event", "side", "price"),
}
_RENAMED = {"contract": "symbol"}  # a contract record's name for the entry's "contract"


def _record_fields(kind: Kind) -> frozenset[str]:
    """The fields a record of ``kind`` may hold (see the module docstring):
    those of its fullest entry shape (a lot contract, an ADL liquidation)."""
    names = set(kind.names) - set(_CHAIN_FIELDS) - set(_COMPUTED_FIELDS.get(kind.name, ()))
    if kind is CONTRACT_LOT:
        names = {_RENAMED.get(n, n) for n in names}
    return frozenset(names)


RECORD_FIELDS: dict[str, frozenset[str]] = {k.name: _record_fields(k) for k in (CONTRACT_LOT, LIQUIDATION_ADL, ADL)}
RECORD_KINDS = tuple(RECORD_FIELDS)


def check_record(record: dict) -> dict:
    """``record`` if it is of a known kind and holds only that kind's
    fields, else RuleError."""
    kind = record.get("kind")
    if kind not in RECORD_KINDS:
        raise RuleError(f"unknown kind {str(kind)[:30]!r}: only contract, liquidation and adl exist")
    allowed = RECORD_FIELDS[kind]
    if not record.keys() <= allowed:
        extra = set(record) - allowed
        raise RuleError(f"unknown field {sorted(extra)[0][:40]!r} in a {kind} record")
    return record


def parse_record(raw_line: bytes) -> dict:
    """One line of JSON Lines (at most MAX_LINE_BYTES with its newline) as a
    record: a strict JSON object (``entry.parse_json_object``) of a known
    kind with known fields. Raises LimitError, FormatError or RuleError."""
    if len(raw_line) > MAX_LINE_BYTES:
        raise LimitError(f"longer than {MAX_LINE_BYTES} bytes")
    return check_record(parse_json_object(raw_line))


def iter_records(stream: IO[bytes], first_line: int = 1) -> Iterator[tuple[int, dict]]:
    """``(line number, record)`` for each non-blank line of JSON Lines
    (numbered from ``first_line``); an error names its line."""
    for lineno, raw in enumerate(iter(lambda: stream.readline(MAX_LINE_BYTES + 1), b""), first_line):
        if len(raw) <= MAX_LINE_BYTES and not raw.strip():
            continue
        try:
            record = parse_record(raw)
        except FundledgerError as e:
            raise type(e)(f"line {lineno}: {e}") from None
        yield lineno, record


def iter_chunks(stream: IO[bytes], size: int, first_line: int = 1) -> Iterator[list[tuple[int, dict]]]:
    """:func:`iter_records` in lists of ``size`` (the last may be shorter),
    never cut after a record of an ADL event (a liquidation with
    ``adl_qty``, an ``adl`` record): an ADL liquidation and its allocation
    are appended in one transaction (docs/FORMAT.md), so a list may be
    longer by an event's records. Each list is given as soon as its last
    line is read (the caller notes the stream's position there)."""
    chunk: list[tuple[int, dict]] = []
    for item in iter_records(stream, first_line):
        chunk.append(item)
        record = item[1]
        if len(chunk) >= size and record["kind"] != "adl" and "adl_qty" not in record:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def contract_record(symbol: str, currency: str, scale: int, type: str, multiplier: str,
                    lot: str | None = None) -> dict:
    """The record of ``contract add``'s options; ``lot`` absent when None."""
    record = {"kind": "contract", "symbol": symbol, "currency": currency, "scale": scale,
              "type": type, "multiplier": multiplier}
    if lot is not None:
        record["lot"] = lot
    return check_record(record)


def liquidation_record(contract: str, id: str, side: str, qty: str, bankruptcy_price: str, fill_price: str,
                       mark_price: str | None = None, time: str | None = None) -> dict:
    """The record of ``liquidation``'s options; ``mark_price`` and ``time``
    absent when None."""
    record = {"kind": "liquidation", "contract": contract, "id": id, "side": side, "qty": qty,
              "bankruptcy_price": bankruptcy_price, "fill_price": fill_price}
    if mark_price is not None:
        record["mark_price"] = mark_price
    if time is not None:
        record["time"] = time
    return check_record(record)
