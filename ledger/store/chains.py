"""The chain heads of format 2 (ledger/rules/chains.py), read from a ledger.

The writer needs them to build a format-2 entry (its ``chain_seq`` and
``chain_prev``) and a ``state`` entry (every fund's head). They are read
from the entries' own columns: the leaf hash of each fund's latest entry,
the latest key and state entries. Their leaf hashes are the tree's leaves,
which the writer holds to what its key signed (ledger/ops/anchor.py) before
it builds on them.
"""

from __future__ import annotations

from ledger.rules.fund import FundBook

_IN_BATCH = 500  # seqs per IN (...) query


def first_state_seq(reader, upto: int | None = None) -> int | None:
    """The seq of the log's first ``state`` entry (below ``upto``): format 2 from there on."""
    row = reader.conn.execute(
        "SELECT seq FROM entries WHERE contract = '' AND kind = 'state' AND seq < ? ORDER BY seq LIMIT 1",
        (_upto(upto),)).fetchone()
    return None if row is None else row[0]


def _upto(upto: int | None) -> int:
    return (1 << 62) if upto is None else upto


def _latest(reader, kind: str, upto: int | None) -> tuple[int, bytes] | None:
    row = reader.conn.execute(
        "SELECT seq, leaf_hash FROM entries WHERE contract = '' AND kind = ? AND seq < ? ORDER BY seq DESC LIMIT 1",
        (kind, _upto(upto))).fetchone()
    return None if row is None else (row[0], bytes(row[1]))


def fill_chains(reader, book: FundBook, upto: int | None = None) -> FundBook:
    """Give ``book`` (the funds after the entries below ``upto``, all of them
    by default, read in the same snapshot of ``reader``) its chain heads:
    every fund's index and latest leaf hash, the key and state chains'
    heads, and the first state entry's seq (format 2 from there on)."""
    chains = book.chains
    chains.since = first_state_seq(reader, upto)
    ordered = sorted(book.funds.values(), key=lambda f: f.contract.seq)
    chains.index = {f.contract.symbol: i for i, f in enumerate(ordered)}
    by_seq = {f.last_seq: f for f in ordered}
    seqs = list(by_seq)
    for i in range(0, len(seqs), _IN_BATCH):
        part = seqs[i:i + _IN_BATCH]
        rows = reader.conn.execute(
            f"SELECT seq, leaf_hash FROM entries WHERE seq IN ({','.join('?' * len(part))})", part)
        for seq, leaf in rows:
            by_seq[seq].last_leaf = bytes(leaf)
    chains.keys = reader.conn.execute(
        "SELECT COUNT(*) FROM entries WHERE contract = '' AND kind = 'key' AND seq < ?", (_upto(upto),)).fetchone()[0]
    chains.key_head = _latest(reader, "key", upto)
    chains.state_head = _latest(reader, "state", upto)
    return book
