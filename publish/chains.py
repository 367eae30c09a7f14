"""The files of a format-2 log that let one fund be checked alone
(docs/FORMAT.md, "Publication of chains and heads"): ``funds``, ``since``,
the chain bundles ``chain/<name>/<N>`` and the heads tiles ``heads/<L>/<hex>``,
read from a (read-only) SQLite connection at a checkpointed tree size.

The export writes them to a directory and the site serves them; both read
them here. Before anything is handed out, the heads are checked against the
``heads`` root that the state entry at ``tree_size - 1`` signed, so nothing
published disagrees with what the log committed to. Reads, never writes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Iterator

from ledger.errors import ProofError
from ledger.format.entry import parse_entry_text
from ledger.format import note
from ledger.rules.chains import KEY_CHAIN, head_line
from ledger.rules.fund import Contract, Fund, parse_amount
from ledger.store.schema import MAX_HASH_READ, read_tree_hashes
from ledger.tlog.heads import heads_root, heads_tiles
from ledger.tlog.tiles import PATH_HASHES, TILE_WIDTH, paths_published, tile_path_indexes

_IN_BATCH = 500  # seqs per IN (...) query


def since(conn, tree_size: int) -> int | None:
    """The seq of the first ``state`` entry below ``tree_size``: the log is
    in format 2 from there on (None: format 1 at that size)."""
    row = conn.execute(
        "SELECT seq FROM entries WHERE contract = '' AND kind = 'state' AND seq < ? ORDER BY seq LIMIT 1",
        (tree_size,)).fetchone()
    return None if row is None else row[0]


def _funds_at(conn, tree_size: int) -> list[Fund]:
    """Every fund as entries ``0 .. tree_size - 1`` left it: its head entry's
    seq, leaf hash and balance, and its entry count."""
    # NOT INDEXED: a range of the primary key (the entries above the
    # checkpoint), not a walk of the whole contract index to group by it.
    later: dict[tuple[str, str], int] = {}
    for contract, kind, count in conn.execute(
            "SELECT contract, kind, COUNT(*) FROM entries NOT INDEXED WHERE seq >= ? AND kind IN ('liquidation', 'adl') "
            "GROUP BY contract, kind", (tree_size,)).fetchall():
        later[contract, kind] = count
    later_symbols = {c for c, _ in later}
    funds = []
    for row in conn.execute(
            "SELECT symbol, currency, scale, type, multiplier, registered_seq, liquidations, last_seq, lot, allocations "
            "FROM contracts WHERE registered_seq < ? ORDER BY registered_seq", (tree_size,)).fetchall():
        symbol, currency, scale, ctype, mult, registered, liquidations, last_seq, lot, allocations = tuple(row)
        fund = Fund(Contract(symbol, currency, scale, ctype, mult, registered, lot),
                    liquidations=liquidations - later.get((symbol, "liquidation"), 0), last_seq=last_seq,
                    allocations=allocations - later.get((symbol, "adl"), 0))
        if symbol in later_symbols:
            fund.last_seq = conn.execute(
                "SELECT MAX(seq) FROM entries WHERE contract = ? AND seq < ?", (symbol, tree_size)).fetchone()[0]
        funds.append(fund)
    by_seq = {f.last_seq: f for f in funds}
    seqs = list(by_seq)
    for i in range(0, len(seqs), _IN_BATCH):
        part = seqs[i:i + _IN_BATCH]
        for seq, leaf, balance, kind in conn.execute(
                f"SELECT seq, leaf_hash, balance, kind FROM entries WHERE seq IN ({','.join('?' * len(part))})", part):
            fund = by_seq[seq]
            fund.last_leaf = bytes(leaf)
            if kind == "adl":  # (an adl entry moves no balance: its liquidation's, the fund's latest before it)
                (balance,) = conn.execute(
                    "SELECT balance FROM entries WHERE contract = ? AND kind = 'liquidation' AND seq < ? "
                    "ORDER BY seq DESC LIMIT 1", (fund.contract.symbol, seq)).fetchone()
            fund.balance = 0 if balance is None else parse_amount(balance, fund.contract.scale)
    return funds


def _state_entry(conn, tree_size: int) -> dict:
    row = conn.execute("SELECT kind, data FROM entries WHERE seq = ?", (tree_size - 1,)).fetchone()
    if row is None or row[0] != "state":
        raise ProofError(f"the checkpoint of size {tree_size} does not end with a state entry")
    text, _ = note.split_note(bytes(row[1]))
    return parse_entry_text(text)


def heads_at(conn, tree_size: int) -> tuple[list[Fund], list[bytes]]:
    """Every fund at ``tree_size`` (a format-2 checkpoint's size) and its
    head line, checked against the heads root and fund count of the state
    entry at ``tree_size - 1``."""
    funds = _funds_at(conn, tree_size)
    lines = [head_line(f) for f in funds]
    state = _state_entry(conn, tree_size)
    if state.get("funds") != len(lines) or state.get("heads") != base64.b64encode(heads_root(lines)).decode():
        raise ProofError(f"the heads read from the ledger are not those the state entry {tree_size - 1} signed")
    return funds, lines


@dataclass(frozen=True)
class FundFiles:
    """What a format-2 checkpoint of ``tree_size`` publishes beside the tiles,
    except the chain bundles (read with :func:`chain_entries`)."""

    tree_size: int
    since: int
    funds: bytes  # the ``funds`` file
    heads: dict[str, bytes]  # heads tile path (below heads/) -> content
    lengths: dict[str, int]  # symbol -> the entries of its chain below tree_size


def fund_files(conn, tree_size: int) -> FundFiles | None:
    """The ``funds`` file and every heads tile at ``tree_size`` (None for a
    format-1 size)."""
    first = since(conn, tree_size)
    if first is None:
        return None
    funds, lines = heads_at(conn, tree_size)
    return FundFiles(tree_size, first, "".join(f.contract.symbol + "\n" for f in funds).encode(),
                     heads_tiles(lines), {f.contract.symbol: f.liquidations + f.allocations + 1 for f in funds})


def _chain_where(name: str) -> tuple[str, tuple]:
    if name == KEY_CHAIN:
        return "contract = '' AND kind = 'key'", ()
    return "contract = ?", (name,)


def chain_entries(conn, name: str, tree_size: int, start: int = 0, limit: int = -1,
                  first_seq: int = 0) -> Iterator[bytes]:
    """The entries of chain ``name`` (a symbol or ``_key``) below
    ``tree_size``, in seq order, from chain position ``start`` on, at most
    ``limit`` (-1: all). ``start`` counts from the chain's entry at
    ``first_seq`` (0: from its first): see :func:`chain_seq_at`."""
    where, args = _chain_where(name)
    cur = conn.execute(f"SELECT data FROM entries WHERE {where} AND seq >= ? AND seq < ? ORDER BY seq "
                       "LIMIT ? OFFSET ?", (*args, first_seq, tree_size, limit, start))
    while True:
        rows = cur.fetchmany(TILE_WIDTH)
        if not rows:
            return
        for r in rows:
            yield bytes(r[0])


def chain_seq_at(conn, name: str, steps: int, from_seq: int = 0) -> int | None:
    """The seq of the chain entry ``steps`` after the one at ``from_seq``
    (0: the chain's first), or None past its end. The index is walked
    ``steps`` rows: the site keeps the seqs it found (publish/tlog.py) so
    that reading a chain bundle after bundle stays O(bundle)."""
    where, args = _chain_where(name)
    row = conn.execute(f"SELECT seq FROM entries WHERE {where} AND seq >= ? ORDER BY seq LIMIT 1 OFFSET ?",
                       (*args, from_seq, steps)).fetchone()
    return None if row is None else row[0]


def chain_length(conn, name: str, tree_size: int) -> int:
    """How many entries chain ``name`` has below ``tree_size``."""
    where, args = _chain_where(name)
    return conn.execute(f"SELECT COUNT(*) FROM entries WHERE {where} AND seq < ?", (*args, tree_size)).fetchone()[0]


def chain_bundle(conn, name: str, tree_size: int, index: int, width: int, first_seq: int = 0) -> bytes | None:
    """Chain bundle ``index`` of ``width`` entries at ``tree_size``, or None
    when the chain has fewer entries there (a narrower bundle than the
    published one is an older checkpoint's, and is its first ``width``).
    ``first_seq``, when not 0, is the seq of the bundle's first entry."""
    start = index * TILE_WIDTH if first_seq == 0 else 0
    items = list(chain_entries(conn, name, tree_size, start, TILE_WIDTH, first_seq))
    if len(items) < width:
        return None
    return b"".join(len(e).to_bytes(2, "big") + e for e in items[:width])


def chain_seqs(conn, name: str, tree_size: int, start: int, limit: int, first_seq: int = 0) -> list[int]:
    """The seqs of chain ``name``'s entries from chain position ``start``
    (counted from the entry at ``first_seq``), at most ``limit``."""
    where, args = _chain_where(name)
    return [r[0] for r in conn.execute(
        f"SELECT seq FROM entries WHERE {where} AND seq >= ? AND seq < ? ORDER BY seq LIMIT ? OFFSET ?",
        (*args, first_seq, tree_size, limit, start))]


def chain_paths(conn, name: str, tree_size: int, index: int, width: int, first_seq: int = 0) -> bytes | None:
    """The tile paths of chain bundle ``index`` of ``width`` entries at
    ``tree_size`` (docs/FORMAT.md): per entry, its 8 siblings inside its
    level-0 tile. None when the bundle is not published or an entry of it
    still lies in the tree's partial last tile (its path is not yet fixed)."""
    start = index * TILE_WIDTH if first_seq == 0 else 0
    seqs = chain_seqs(conn, name, tree_size, start, width, first_seq)
    if len(seqs) < width or not paths_published(seqs, tree_size):
        return None
    per_read = MAX_HASH_READ // PATH_HASHES
    out = []
    for i in range(0, len(seqs), per_read):
        indexes = [x for seq in seqs[i:i + per_read] for x in tile_path_indexes(seq)]
        out.extend(read_tree_hashes(conn, indexes))
    return b"".join(out)
