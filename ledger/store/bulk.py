"""A bulk import in two passes, with signing overlapped (``api.import_records``).

Pass 1 (:func:`prepare`), inside one read snapshot of the ledger: every
record is checked by *building* its entry against the ledger's state (the
chain head, the funds, the liquidation ids already recorded):

* :class:`EntryBuilder` turns a record into the entry's text templates around
  ``prev`` (see :mod:`ledger.store.sign`) and its derived columns, exactly as
  ``FundBook.build``/``apply`` and ``entry.entry_text`` do (a fast path for
  liquidations whose inputs are already valid and canonical, the generic
  code for everything else);
* the templates and the derived columns go to a chain signer (a child
  process on the other core for large inputs) which signs them in order
  meanwhile, hashes the Merkle tree and returns the rows to insert; they
  wait in an unlinked temporary spool file.

A bad line anywhere raises (with its line number) before anything is
written. Pass 2 (:func:`write`) inserts one transaction per batch of
``batch_size`` records with :meth:`Store.append_prepared`, which checks
inside ``BEGIN IMMEDIATE`` that the chain head is still the one the batch
was built on. If another writer moved it, nothing of that batch is written,
every speculative entry is discarded (:class:`Fallback`) and the caller
appends the rest the ordinary way (``Store.append``, which reads the state
inside each transaction). Only whole batches whose every signature came back
are ever inserted.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, field
from json.encoder import encode_basestring_ascii as _json_str
from typing import Callable

from ledger.format import entry as entry_mod
from ledger.format import note
from ledger.format.kinds import LIQUIDATION, LIQUIDATION_2, PREV_B64_LENGTH
from ledger.tlog import merkle
from ledger.errors import FundledgerError, LimitError, StoreError
from ledger.rules.fund import (
    ZEROS,
    DuplicateContract,
    DuplicateLiquidation,
    settle,
    FundBook,
    amount_str,
    canonical_movement,
    now_time,
    zero_str,
)
from ledger.rules.adl import qty_units
from ledger.rules.fast import fast_liquidation
from ledger.store.build import build_entry
from ledger.store.chains import fill_chains
from ledger.store.schema import contract_row
from ledger.store.seen import FrameLog, SpilledPairs

CHUNK = 200  # records per message to the chain signer
_PREV_KEY = b'"prev":"'
_fill_liquidation = LIQUIDATION.fill  # the text around prev (ledger/format/kinds.py)
_fill_liquidation_2 = LIQUIDATION_2.fill
# Format 2: the leaf hash of an entry of this import, not known until it is
# signed; chain_prev naming it is a hole the chain signer fills (sign.py).
UNSIGNED = bytes(32)
_HOLE = b'"chain_prev":"' + entry_mod.b64(UNSIGNED).encode("ascii") + b'"'


class EntryBuilder:
    """Builds entries from records against a book, seq after seq: the fund
    rules and the entry text around ``prev``, no tree hashing (the chain
    signer adds each leaf to the tree, ``sign.sign_batch``)."""

    def __init__(self, book: FundBook, size: int, sig_len: int, clock: Callable[[], str] = now_time):
        self.book = book
        self.seq = size
        self.clock = clock
        self.sig_len = sig_len
        self.touched: set[str] = set()
        self.fmt2 = book.chains.since is not None  # five items an entry (ledger/store/sign.py)

    def build(self, record: dict):
        """``(pre, post, rest)`` for the next entry, or None for a replay.
        ``rest`` is the entry's derived columns after ``(seq, data, leaf)``,
        as a rest line (:func:`_rest_line`)."""
        seq = self.seq
        f = fast_liquidation(record, self.book.funds)
        if f is None:
            return self._generic(record, seq)
        fund, sym, lid, side, qty, bp, fp, mp, t = f
        seen = self.book.seen
        key = (sym, lid)
        if key in seen:
            return None
        scale = fund.contract.scale
        delta = canonical_movement(fund.contract, side, qty, bp, fp)
        paid, adl, balance = settle(fund.balance, delta)
        lot_units = fund.contract.lot_units
        if lot_units is not None and (adl or qty_units(qty, "qty") % lot_units) or self.book.adl_pending is not None:
            return self._generic(record, seq)  # (ADL, or a refusal: the rules' to say)
        if delta >= 0:
            p_s = a_s = ZEROS.get(scale) or zero_str(scale)
        else:
            p_s, a_s = amount_str(paid, scale), amount_str(adl, scale)
        time = self.clock() if t is None else t
        d_s, b_s = amount_str(delta, scale), amount_str(balance, scale)
        args = dict(adl=a_s, balance=b_s, bankruptcy_price=bp, contract=sym, delta=d_s, fill_price=fp,
                    id=_json_str(lid), mark_price=mp, paid=p_s, qty=qty, seq=seq, side=side, time=time)
        if self.fmt2:
            pre, post = _fill_liquidation_2(chain_seq=fund.last_seq, chain_prev=entry_mod.b64(fund.last_leaf), **args)
        else:
            pre, post = _fill_liquidation(**args)
        # fund.apply() of these fields, inline
        link = fund.last_seq
        fund.advance(delta, paid, adl, balance, seq, time, fp if mp is None else mp)
        seen.add(key)
        self.touched.add(sym)
        self.seq = seq + 1
        pre_b, post_b = pre.encode("ascii"), post.encode("ascii")
        self._check_size(len(pre_b) + len(post_b))
        # the derived columns after (seq, data, leaf), as a rest line (see _rest_line)
        rest = (f"{time}\tliquidation\t{sym}\t{lid}\t{side}\t{qty}\t{bp}\t{fp}\t{'' if mp is None else mp}"
                f"\t{d_s}\t{p_s}\t{a_s}\t{b_s}").encode("ascii")
        if self.fmt2:
            return self._linked(pre_b, post_b, rest, link, fund)
        return pre_b, post_b, rest

    def _linked(self, pre: bytes, post: bytes, rest: bytes, link: int, fund) -> tuple:
        """A format-2 entry's five items: its chain_prev, when it names an
        entry of this import, cut out as a hole the signer fills; the
        fund's head is now this unsigned entry."""
        fund.last_leaf = UNSIGNED
        at = pre.find(_HOLE)
        if at < 0:
            return pre, b"", post, rest, b""
        cut = at + len(b'"chain_prev":"')
        return pre[:cut], pre[cut + PREV_B64_LENGTH:], post, rest, str(link).encode("ascii")

    def _generic(self, record: dict, seq: int):
        """The generic path: :func:`build_entry`, cut around ``prev``."""
        try:
            built = build_entry(self.book, record, seq, entry_mod.ZERO_HASH, self.clock)
        except (DuplicateLiquidation, DuplicateContract):
            return None
        text = built.text
        i = text.index(_PREV_KEY) + len(_PREV_KEY)
        pre, post = text[:i], text[i + PREV_B64_LENGTH : -1]
        self._check_size(len(pre) + len(post))
        self.touched.add(built.fields["contract"])
        self.seq = seq + 1
        if self.fmt2:
            self.book.link(UNSIGNED)  # (its leaf: known once signed)
            return self._linked(pre, post, _rest_line(built.columns), built.fields.get("chain_seq", -1),
                                self.book.funds[built.fields["contract"]])
        return pre, post, _rest_line(built.columns)

    def _check_size(self, n: int) -> None:
        size = n + PREV_B64_LENGTH + 1 + self.sig_len  # the prev value, the newline, the signature
        if size > entry_mod.MAX_ENTRY_BYTES:
            raise LimitError(f"entry of {size} bytes is over the {entry_mod.MAX_ENTRY_BYTES}-byte limit")

    def summaries(self) -> list[tuple]:
        """``contracts`` rows of the funds touched since the last call."""
        rows = [contract_row(self.book.funds[s]) for s in sorted(self.touched)]
        self.touched = set()
        return rows


def _rest_line(rest: tuple) -> bytes:
    """Derived columns as one rest line for the chain signer
    (``chainsign.sign_batch``): tab-separated, None as empty (no value is
    empty, and printable ASCII has no tab)."""
    return "\t".join(["" if x is None else x for x in rest]).encode("ascii")


@dataclass
class Batch:
    """One transaction's worth of input, built and sent for signing."""

    offset: int  # stream position before its first line
    next_line: int  # line number at that position
    records: int = 0
    dups: int = 0
    entries: int = 0
    summaries: list = field(default_factory=list)
    ids_end: int = 0  # with an anchor: how many of the import's new ids precede its end


@dataclass
class Prepared:
    """What pass 1 leaves for the write pass."""

    size: int
    prev: bytes
    records: int = 0
    duplicates: int = 0
    batches: FrameLog = field(default_factory=FrameLog)  # each Batch as a tuple, on file
    ids: list = field(default_factory=list)  # with an anchor: the hashes of the new ids, in order (a HashLog)


class Fallback(Exception):
    """The head moved under the speculative entries: the ordinary path must
    take over at ``offset`` (line ``next_line``)."""

    def __init__(self, offset: int, next_line: int):
        super().__init__(offset, next_line)
        self.offset = offset
        self.next_line = next_line


def prepare(store, signer, chunks, tell, chain, anchor=None) -> Prepared:
    """Pass 1: check and build every record of ``chunks`` (one chunk per
    batch of ``(line number, record)``) against the ledger, sending the
    entries to ``chain`` for signing as they are built. Call inside a
    :meth:`Store.snapshot`; raises on the first bad line, and nothing is
    written anywhere but the chain signer's spool. With ``anchor`` (a
    ``ledger.ops.anchor.WriterAnchor``) the ledger is held to it first and the
    entries are built on the funds that signed data give."""
    size, prev, edge = store.chain_head()
    if anchor is None:
        book = fill_chains(store, store.load_book())
    else:
        book = anchor.check(store)  # (its ids: the database's, held to the anchor's; the chain heads)
    builder = EntryBuilder(book, size, 1 + note.sig_line_length(signer.name))  # a blank line, then one signature
    chain.start(size, prev, edge, builder.fmt2)
    out = Prepared(size, prev)
    seen = book.seen
    if anchor is not None:
        out.ids = seen.pending
    seen.older = SpilledPairs()  # the ids of earlier chunks: bounded in memory
    try:
        _build_all(builder, chunks, tell, chain, out, anchor is not None)
        book.end_of_batch()
    finally:
        seen.older.close()
    return out


def _build_all(builder: EntryBuilder, chunks, tell, chain, out: Prepared, anchored: bool) -> None:
    """The loop of :func:`prepare`: each chunk built, sent, and noted as a Batch in ``out``."""
    seen = builder.book.seen
    offset, next_line = tell(), 1
    for chunk in chunks:
        b = Batch(offset, next_line, records=len(chunk))
        seen.prefetch([r for _, r in chunk])
        items: list[bytes] = []  # pre, post, rest of each entry (chainsign.sign_batch); five in format 2
        per = 5 if builder.fmt2 else 3
        limit = per * CHUNK
        for lineno, record in chunk:
            try:
                built = builder.build(record)
            except FundledgerError as e:
                raise type(e)(f"line {lineno}: {e}") from None
            if built is None:
                b.dups += 1
                continue
            items += built
            if len(items) >= limit:
                chain.send(items)
                b.entries += len(items) // per
                items = []
        if items:
            chain.send(items)
            b.entries += len(items) // per
        b.summaries = builder.summaries()
        if anchored:
            b.ids_end = len(seen.pending)
        out.records += b.records
        out.duplicates += b.dups
        out.batches.append(astuple(b))
        offset, next_line = tell(), chunk[-1][0] + 1


def write(store, signer, prep: Prepared, chain, result, progress, anchor=None) -> None:
    """Pass 2: one transaction per batch, each checking that the head is the
    one its entries were built on (else :class:`Fallback`); ``anchor``
    advanced after each commit."""
    size, prev = prep.size, prep.prev
    ids_start = 0
    for t in prep.batches:
        b = Batch(*t)
        rows: list[tuple] = []
        tree_rows: list[tuple] = []
        while len(rows) < b.entries:
            r, t = chain.recv()
            if not r or r[0][0] != size + len(rows):
                raise StoreError("the signing process sent a result out of order")
            rows += r
            tree_rows += t
        if len(rows) != b.entries:
            raise StoreError("the signing process sent a short result")
        if not store.append_prepared([signer], size, prev, rows, tree_rows, b.summaries):
            raise Fallback(b.offset, b.next_line)
        if rows:
            size, prev = size + len(rows), rows[-1][2]
        if anchor is not None:
            anchor.advance(size, merkle.tree_hash(size, store), prev, b.summaries, lazy=True,
                           new_ids=prep.ids[ids_start:b.ids_end])
            ids_start = b.ids_end
        result.appended += len(rows)
        result.duplicates += b.dups
        result.tree_size = size
        progress(b.records)
        chain.pump()
