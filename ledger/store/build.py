"""Checking and building entries: the step between reading and signing.

The flow of every append is read -> check -> build -> sign -> store:
a record (ledger/format/records.py) is checked by the fund rules against a
book, which give the entry's fields (``FundBook.build``, the one definition);
:func:`build_entry` turns them into the entry's text at ``seq`` after
``prev`` and its derived columns, and advances the book. The caller signs
the text (``entry.sign_entry``, or the chain signer of ledger/store/sign.py
for a bulk import) and stores the rows (``Store``). Nothing here reads or
writes the database.

The bulk import's liquidation fast path (ledger/store/bulk.py) fuses these
same steps from the same definitions (the kinds' templates, the rules'
functions); tests check it equal to :func:`build_entry`.
"""

from __future__ import annotations

from typing import Callable, Iterable, NamedTuple

from ledger.errors import FundledgerError
from ledger.format.entry import entry_text
from ledger.rules.fast import fast_liquidation
from ledger.rules.fund import DuplicateContract, DuplicateLiquidation, FundBook, parse_time
from ledger.store.schema import derived_columns


class Built(NamedTuple):
    """One entry built, not yet signed."""

    text: bytes  # the text to sign (entry.entry_text)
    fields: dict  # the entry's fields, seq and time included
    columns: tuple  # its derived columns after (seq, data, leaf_hash) (schema.derived_columns)

    def row(self, data: bytes, leaf_hash: bytes) -> tuple:
        """The ``entries`` row once signed as ``data`` of leaf hash ``leaf_hash``."""
        return (self.fields["seq"], data, leaf_hash) + self.columns


def _built(fields: dict, seq: int, prev: bytes, time: str) -> Built:
    text = entry_text(fields, seq, prev, time)
    fields["seq"] = seq
    fields["time"] = time
    return Built(text, fields, derived_columns(seq, b"", b"", fields)[3:])


def build_entry(book: FundBook, record: dict, seq: int, prev: bytes, clock: Callable[[], str]) -> Built:
    """Entry ``seq`` after the leaf hash ``prev`` for ``record``, checked by
    the rules against ``book``, which then holds it. Its time is the
    record's (canonical) or ``clock()``. A replay raises DuplicateLiquidation
    or DuplicateContract and leaves the book as it was; any other bad record
    raises its RuleError."""
    fields = book.build(record)
    t = record.get("time")
    built = _built(fields, seq, prev, clock() if t is None else parse_time(t))
    book.apply(fields)
    return built


def key_entry(book: FundBook, vkey: str, seq: int, prev: bytes, time: str) -> Built:
    """The ``key`` entry ``seq`` handing the log over to the key ``vkey``
    (signed by the old key and the new one, docs/FORMAT.md), which ``book``
    then holds."""
    built = _built(book.key_entry(vkey), seq, prev, time)
    book.apply(built.fields)
    return built


def state_entry(book: FundBook, seq: int, prev: bytes, time: str) -> Built:
    """The ``state`` entry ``seq``: every fund's head as ``book`` holds them
    (docs/FORMAT.md, "Format 2"), which ``book`` then holds."""
    built = _built(book.state_entry(seq), seq, prev, time)
    book.apply(built.fields)
    return built


def check_records(book: FundBook, chunks: Iterable[list[tuple[int, dict]]]) -> tuple[int, int]:
    """Check every record of ``chunks`` (lists of ``(line number, record)``)
    by the rules against ``book`` as :func:`build_entry` would, building
    nothing. Returns ``(records, duplicates)``; raises on the first bad
    line."""
    funds, seen = book.funds, book.seen
    records = duplicates = 0
    for chunk in chunks:
        seen.prefetch([r for _, r in chunk])
        for lineno, record in chunk:
            records += 1
            f = fast_liquidation(record, funds) if record["kind"] == "liquidation" else None
            if f is not None and f[0].contract.lot is None and book.adl_pending is None:
                # every input valid and canonical: what book.check does for it
                key = (f[1], f[2])
                if key in seen:
                    duplicates += 1
                else:
                    seen.add(key)
                continue
            try:
                book.check(record)
                t = record.get("time")
                if t is not None:
                    parse_time(t)
            except (DuplicateLiquidation, DuplicateContract):
                duplicates += 1
            except FundledgerError as e:
                raise type(e)(f"line {lineno}: {e}") from None
    book.end_of_batch()
    return records, duplicates
