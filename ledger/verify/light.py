"""The light check of one fund (docs/FORMAT.md, "The light check of one fund").

It reads the checkpoint, the key chain, the state entry the checkpoint ends
with, the fund's head from the heads tiles, the fund's chain bundles and the
hash tiles their inclusion needs: never the whole log. Every entry it reads
is authenticated as the leaf at its seq of the checkpointed tree (through
:class:`~ledger.tlog.tiles.TileHashReader`, which fetches each hash tile
once), signed by the key in force at its seq, linked to the one before it in
its chain, and, for the fund's own entries, rebuilt by the fund rules byte
for byte, as the reference verifier does.

What it proves, and what it does not (the trust model): see
:data:`WHAT_IT_PROVES` and :data:`WHAT_IT_DOES_NOT`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from ledger.errors import FundledgerError, InputError, VerificationError
from ledger.format import note
from ledger.format.entry import entry_text, parse_entry_text
from ledger.format.policy import AUDIT_STATEMENT, AUDIT_STATEMENT_TEXT
from ledger.rules.chains import KEY_CHAIN
from ledger.rules.fund import FundBook, amount_str, check_symbol, parse_time
from ledger.tlog import merkle
from ledger.tlog.heads import MAX_FUNDS, MAX_HEADS_TILE_BYTES, head_from_tiles
from ledger.tlog.tiles import (
    PATH_BYTES, TILE_HEIGHT, TILE_WIDTH, TileHashReader, chain_path, chain_paths_path, paths_published,
    tile_root_from_path,
)
from ledger.verify.checkpoint import (
    check_policy_log, check_published_vkey, count_cosignatures, policy_cosigners, require_cosignatures,
    unverified_checkpoint, unverified_cosigners,
)
from ledger.verify.reference import KeyHistory, check_signatures, explain_mismatch, key_entry_fields, rebuild, split_entry
from ledger.verify.sources import MAX_BUNDLE_BYTES, iter_bundle

MAX_SYMBOL_LINE = 34  # a symbol is at most 32 characters, and its newline
MAX_SINCE_BYTES = 32
_AUTH_BATCH = TILE_WIDTH  # leaves authenticated per read of the hash tiles

WHAT_IT_PROVES = (
    "every entry shown is in the checkpointed log at its seq, signed by the key in force there, "
    "linked to the one before it in the fund's chain and computed by the fund rules; "
    "the head (and so the balance) is the one the operator signed in the state entry the checkpoint ends with"
)
WITHOUT_AUDITOR = (
    "no auditing witness cosigned this checkpoint: that no entry of the fund was left out of its chain "
    "rests on the operator's word alone"
)
WHAT_IT_DOES_NOT = (
    "that the operator left none of the fund's entries out of its chain and its head "
    "(an entry of the fund elsewhere in the log, not linked, would not be seen): "
    "that needs a full verifier (fundledger verify without --contract) or an auditing witness"
)


@dataclass
class FundCheck:
    """The outcome of a light check that passed."""

    contract: str
    tree_size: int
    root: bytes
    fund: dict  # Fund.summary()
    head: dict
    entries_checked: int
    keys: list[tuple[int, str]]  # (first seq it signs, vkey)
    cosigned_by: list[str] = field(default_factory=list)
    unverified_cosigners: list[str] = field(default_factory=list)
    hash_tiles_read: int = 0
    audited_by: list[str] = field(default_factory=list)  # auditing witnesses among cosigned_by

    def completeness(self) -> str:
        """What holds, or not, of the fund's chain being complete."""
        if not self.audited_by:
            return WITHOUT_AUDITOR
        return (f"attested by the auditing witness{'es' if len(self.audited_by) > 1 else ''} "
                f"{', '.join(self.audited_by)} ({AUDIT_STATEMENT}): {AUDIT_STATEMENT_TEXT}; so no entry of the fund "
                f"up to size {self.tree_size} was left out of its chain, unless "
                f"{'they' if len(self.audited_by) > 1 else 'it'} lied along with the operator")

    def as_json(self) -> dict:
        return {
            "contract": self.contract, "light": True, "tree_size": self.tree_size,
            "root": base64.b64encode(self.root).decode(), "fund": self.fund, "head": self.head,
            "entries_checked": self.entries_checked,
            "keys": [{"from_seq": s, "vkey": v} for s, v in self.keys],
            "cosigned_by": self.cosigned_by, "unverified_cosigners": self.unverified_cosigners,
            "proves": WHAT_IT_PROVES, "does_not_prove": WHAT_IT_DOES_NOT,
            "audited_by": self.audited_by, "completeness": self.completeness(),
        }


class _Log:
    """The checkpointed tree as the light check reads it: entries by seq
    from the entry bundles, and each leaf authenticated against the root."""

    def __init__(self, source, cp: note.Checkpoint):
        self.source, self.size, self.root = source, cp.tree_size, cp.root_hash
        self.hashes = TileHashReader(cp.tree_size, cp.root_hash, _CountingTiles(source))

    def fetch(self, path: str, limit: int) -> bytes:
        data = self.source.fetch(path, limit)
        if data is None:
            raise VerificationError(f"{path} is missing")
        return data

    def entry(self, seq: int) -> bytes:
        if not 0 <= seq < self.size:
            raise VerificationError(f"entry {seq} is not in the tree of size {self.size}")
        data = next(iter(self.source.entries(self.size, seq, seq + 1)))
        self.authenticate([(seq, data)])
        return data

    def in_tree(self, items: Sequence[tuple[int, bytes]]) -> None:
        for seq, _ in items:
            if not 0 <= seq < self.size:
                raise VerificationError(f"an entry claims seq {seq}, outside the tree of size {self.size}", seq=seq)

    def authenticate(self, items: Sequence[tuple[int, bytes]]) -> None:
        """Each (seq, bytes) is the leaf at seq of the checkpointed tree."""
        self.in_tree(items)
        stored = self.hashes.read_hashes([merkle.leaf_stored_index(seq) for seq, _ in items])
        for (seq, data), leaf in zip(items, stored):
            if merkle.leaf_hash(data) != leaf:
                raise VerificationError("the entry is not the one the checkpointed tree holds at its seq", seq=seq)


    def authenticate_paths(self, items: Sequence[tuple[int, bytes]], paths: bytes, where: str) -> None:
        """:meth:`authenticate` through the tile paths of a bundle: each
        entry's leaf hash and path give its level-0 tile's root, which must
        be the stored hash (8, seq >> 8) the hash tiles of levels 1 and up
        give (so no level-0 tile is read)."""
        self.in_tree(items)
        if len(paths) != len(items) * PATH_BYTES:
            raise VerificationError(f"{where} does not hold {len(items)} tile paths")
        roots = [tile_root_from_path(seq, merkle.leaf_hash(data), paths[i * PATH_BYTES:(i + 1) * PATH_BYTES])
                 for i, (seq, data) in enumerate(items)]
        stored = self.hashes.read_hashes([merkle.stored_hash_index(TILE_HEIGHT, seq >> TILE_HEIGHT)
                                          for seq, _ in items])
        for (seq, _), root, tile_root in zip(items, roots, stored):
            if root != tile_root:
                raise VerificationError(f"the entry is not the one the checkpointed tree holds at its seq "
                                        f"(through {where})", seq=seq)


class _CountingTiles:
    def __init__(self, source):
        self.source, self.count = source, 0

    def read_tile(self, level: int, index: int, width: int) -> bytes:
        self.count += 1
        return self.source.read_tile(level, index, width)


def _text_and_obj(data: bytes, what: str) -> tuple[bytes, dict]:
    try:
        text, _ = note.split_note(data)
        return text, parse_entry_text(text)
    except FundledgerError as e:
        raise VerificationError(f"{what}: {e}") from None


def _claimed_seq(data: bytes, what: str) -> int:
    seq = _text_and_obj(data, what)[1].get("seq")
    if type(seq) is not int or seq < 0:
        raise VerificationError(f"{what}: no seq")
    return seq


def _chain(log: _Log, name: str, length: int) -> Iterator[tuple[int, bytes]]:
    """(seq, bytes) of the ``length`` entries of chain ``name``, from its
    bundles, in strictly increasing seq, each authenticated (in batches)."""
    batch: list[tuple[int, bytes]] = []
    last = -1
    for index in range(0, -(-length // TILE_WIDTH)):
        width = min(TILE_WIDTH, length - index * TILE_WIDTH)
        path = chain_path(name, index, width)
        data = log.fetch(path, MAX_BUNDLE_BYTES)
        try:
            items = list(iter_bundle(data, width, 0))
        except VerificationError as e:  # (its seq counts in the bundle, not in the log)
            raise VerificationError(f"{path}: {e.reason}") from None
        for data_i in items:
            seq = _claimed_seq(data_i, f"chain {name}")
            if seq <= last:
                raise VerificationError(f"chain {name} is not in increasing seq order", seq=seq)
            last = seq
            batch.append((seq, data_i))
        _authenticate_bundle(log, batch, name, index, width)
        yield from batch
        batch = []


def _authenticate_bundle(log: _Log, batch: list[tuple[int, bytes]], name: str, index: int, width: int) -> None:
    """Through the bundle's tile paths when it has them (every entry in a
    full level-0 tile), else through the hash tiles; a paths file that is
    not published costs bytes, never soundness."""
    if paths_published([seq for seq, _ in batch], log.size):
        where = chain_paths_path(name, index, width)
        paths = log.source.fetch(where, len(batch) * PATH_BYTES)
        if paths is not None:
            log.authenticate_paths(batch, paths, where)
            return
    log.authenticate(batch)


def _decode_hash(value: object, what: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except binascii.Error:
        raw = b""
    if len(raw) != 32:
        raise VerificationError(f"{what} is not a base64 hash")
    return raw


def _fields_of(data: bytes, seq: int, keys: KeyHistory) -> tuple[dict, bytes, list, bytes, str]:
    """An entry's JSON, text, signatures to check (by the keys that must
    have made them at ``seq``), its ``prev`` and canonical ``time``."""
    obj, text, signatures = split_entry(data, seq, keys)
    try:
        time = parse_time(obj.get("time"))
    except FundledgerError as e:
        raise VerificationError(str(e), seq=seq) from None
    try:
        prev = _decode_hash(obj.get("prev"), "prev")
    except VerificationError as e:
        raise VerificationError(e.reason, seq=seq) from None
    return obj, text, signatures, prev, time


def _same(expected: dict, obj: dict, text: bytes, seq: int, prev: bytes, time: str) -> None:
    if entry_text(expected, seq, prev, time) != text:
        full = dict(expected, seq=seq, prev=obj.get("prev"), time=time)
        raise VerificationError(explain_mismatch(obj, full), seq=seq)


def _link(head: tuple[int, bytes] | None, seq: int, since: int) -> dict:
    """The chain fields an entry at ``seq`` carries (docs/FORMAT.md, "Chains")."""
    if head is None or seq <= since:
        return {}
    return {"chain_seq": head[0], "chain_prev": base64.b64encode(head[1]).decode()}


def _key_history(log: _Log, anchor: note.Verifier, count: int, since: int) -> tuple[KeyHistory, list]:
    """The key history from the ``count`` entries of the key chain: each
    linked, canonical, signed by the key in force and the key it announces;
    and their (seq, leaf hash)."""
    keys = KeyHistory(anchor)
    head, heads = None, []
    for seq, data in _chain(log, KEY_CHAIN, count):
        if seq >= log.size - 1:
            raise VerificationError("the key chain reaches past the state entry", seq=seq)
        obj, text, signatures, prev, time = _fields_of(data, seq, keys)
        if obj.get("kind") != "key":
            raise VerificationError("an entry of the key chain is not a key entry", seq=seq)
        try:
            expected = dict(key_entry_fields(obj.get("vkey")), **_link(head, seq, since))
        except VerificationError as e:
            raise VerificationError(e.reason, seq=seq) from None
        _same(expected, obj, text, seq, prev, time)
        check_signatures(text, signatures, seq)
        keys.rotate(seq, note.parse_vkey(expected["vkey"]))
        head = (seq, merkle.leaf_hash(data))
        heads.append(head)
    return keys, heads



def _state_fields(obj: dict, seq: int, since: int, key_head: tuple | None) -> dict:
    """The fields a state entry at ``seq`` must have, its commitments
    (which only a full verifier can recompute) taken from it, well typed."""
    funds, keys = obj.get("funds"), obj.get("keys")
    if type(funds) is not int or not 0 <= funds <= MAX_FUNDS or type(keys) is not int or keys < 0:
        raise VerificationError("a state entry's funds or keys are not counts", seq=seq)
    _decode_hash(obj.get("heads"), "a state entry's heads")
    fields = {"kind": "state", "contract": "", "format": 2, "funds": funds, "heads": obj.get("heads"), "keys": keys}
    if key_head is not None:
        fields["key_seq"], fields["key_hash"] = key_head[0], base64.b64encode(key_head[1]).decode()
    if seq > since:
        fields["chain_seq"] = obj.get("chain_seq")
        fields["chain_prev"] = obj.get("chain_prev")
        if type(fields["chain_seq"]) is not int or not since <= fields["chain_seq"] < seq:
            raise VerificationError("a state entry's chain_seq is not an earlier state entry", seq=seq)
        _decode_hash(fields["chain_prev"], "chain_prev")
    return fields


def _check_state(data: bytes, seq: int, keys: KeyHistory, since: int, key_heads: list) -> dict:
    """The state entry at ``seq``: canonical, signed, its key commitment
    that of the key chain below it."""
    obj, text, signatures, prev, time = _fields_of(data, seq, keys.upto(seq))
    if obj.get("kind") != "state":
        raise VerificationError(f"entry {seq} is not a state entry", seq=seq)
    if obj.get("format") != 2:
        raise VerificationError(f"format {str(obj.get('format'))[:20]} is not a format this verifier knows", seq=seq)
    earlier = [h for h in key_heads if h[0] < seq]
    if obj.get("keys") != len(earlier):
        raise VerificationError("the state entry's key count is not the key chain's", seq=seq)
    key_head = earlier[-1] if earlier else None
    _same(_state_fields(obj, seq, since, key_head), obj, text, seq, prev, time)
    check_signatures(text, signatures, seq)
    return obj


def _since(log: _Log) -> int:
    data = log.source.fetch("since", MAX_SINCE_BYTES)
    if data is None:
        raise InputError(f"{log.source.description} publishes no `since`: one fund can be checked alone only "
                         "in a format-2 log (the operator switches with `fundledger upgrade`)")
    text = data.decode("ascii", "replace")
    if not text.endswith("\n") or not text[:-1].isdigit() or (len(text) > 2 and text[0] == "0"):
        raise VerificationError("`since` is not a seq in decimal and a newline")
    since = int(text)
    if not since < log.size:
        raise VerificationError(f"`since` names seq {since}, outside the tree of size {log.size}")
    return since


def _head(log: _Log, state: dict, symbol: str) -> tuple[int, dict]:
    """The fund index of ``symbol`` and its head, read from the heads tiles
    under the state entry's root (docs/FORMAT.md, light check step 4)."""
    count = state["funds"]
    data = log.fetch("funds", max(count, 1) * MAX_SYMBOL_LINE)
    lines = data.decode("ascii", "replace").split("\n")
    if lines[-1] != "" or len(lines) - 1 != count:
        raise VerificationError(f"`funds` does not list the {count} funds of the state entry")
    if symbol not in lines[:-1]:
        raise InputError(f"contract {symbol} is not among the {count} funds of this log")
    index = lines.index(symbol)
    root = base64.b64decode(state["heads"])
    try:
        line = head_from_tiles(root, count, index, lambda p: log.fetch("heads/" + p, MAX_HEADS_TILE_BYTES))
        head = json.loads(line)
    except (FundledgerError, ValueError) as e:
        raise VerificationError(f"the head of {symbol}: {e}") from None
    if not isinstance(head, dict) or (json.dumps(head, sort_keys=True, separators=(",", ":")) + "\n").encode() != line:
        raise VerificationError(f"the head of {symbol} is not a canonical head line")
    if head.get("contract") != symbol or sorted(head) != ["balance", "contract", "entries", "hash", "seq"]:
        raise VerificationError(f"the head at fund index {index} is not that of {symbol}")
    if type(head["entries"]) is not int or not 1 <= head["entries"] <= log.size:
        raise VerificationError(f"the head of {symbol} has a bad entry count")
    return index, head


def _replay(log: _Log, keys: KeyHistory, symbol: str, head: dict, since: int,
            progress: Callable[[int, int], None] | None) -> FundBook:
    """Walk the fund's chain from its contract entry to its head: every
    entry linked, signed by the key in force at its seq and rebuilt by the
    rules byte for byte; the last is the head, with its balance."""
    book = FundBook()
    count, total = 0, head["entries"]
    for seq, data in _chain(log, symbol, total):
        if seq >= log.size - 1:
            raise VerificationError(f"the chain of {symbol} reaches past the state entry", seq=seq)
        if book.chains.since is None and seq > since:
            book.chains.since = since
        obj, text, signatures, prev, time = _fields_of(data, seq, keys.upto(seq))
        kinds = ("contract",) if count == 0 else ("adl",) if book.adl_pending is not None else ("liquidation", "adl")
        if obj.get("kind") not in kinds or obj.get("contract") != symbol:
            raise VerificationError(f"entry {count} of the chain of {symbol} is not a {' or '.join(kinds)} entry "
                                    f"of {symbol}", seq=seq)
        if book.adl_pending is not None and seq != book.funds[symbol].last_seq + 1:
            raise VerificationError(f"an ADL liquidation of {symbol} is not followed at once by its allocation",
                                    seq=seq)
        try:
            expected = rebuild(book, obj, seq)
        except VerificationError as e:
            raise VerificationError(e.reason, seq=seq) from None
        _same(expected, obj, text, seq, prev, time)
        check_signatures(text, signatures, seq)
        expected["seq"], expected["time"] = seq, time
        book.apply(expected)
        book.link(merkle.leaf_hash(data))
        count += 1
        if progress is not None and count % TILE_WIDTH == 0:
            progress(count, total)
    fund = book.funds[symbol]
    if book.adl_pending is not None:
        raise VerificationError(f"the chain of {symbol} ends inside the ADL event of {book.adl_pending.describe()}")
    if (fund.last_seq, base64.b64encode(fund.last_leaf).decode()) != (head["seq"], head["hash"]):
        raise VerificationError(f"the chain of {symbol} does not end at its head (seq {head['seq']})")
    if amount_str(fund.balance, fund.contract.scale) != head["balance"]:
        raise VerificationError(f"the head of {symbol} says balance {str(head['balance'])[:40]}, "
                                f"its entries give {amount_str(fund.balance, fund.contract.scale)}", seq=fund.last_seq)
    return book


def check_fund(source, anchor: note.Verifier | None, symbol: str, witnesses: Sequence[note.Verifier] = (),
               quorum: int | None = None, progress: Callable[[int, int], None] | None = None,
               policy=None, auditors: Sequence[note.Verifier] = ()) -> FundCheck:
    """The light check of fund ``symbol`` of ``source`` (an export directory
    or a URL: :class:`ledger.verify.sources.DirSource`, ``UrlSource``)
    against the log's first key ``anchor`` (None: the one the source
    publishes). ``auditors`` are auditing witnesses (counted with
    ``witnesses`` for the quorum); those that cosigned, and the policy's
    (``#fundledger-audit/v1``), are named in ``audited_by``.
    VerificationError names what failed (and the seq)."""
    symbol = check_symbol(symbol, "--contract")
    published = source.vkey()
    if anchor is None:
        if published is None:
            raise VerificationError("the source publishes no verifier key; pass --vkey")
        anchor = note.parse_vkey(published)
    else:
        check_published_vkey(published, anchor)
    cp_bytes = source.checkpoint()
    if cp_bytes is None:
        raise VerificationError(f"{source.description} has no checkpoint")
    cp = unverified_checkpoint(cp_bytes, anchor.name)
    if cp.tree_size == 0:
        raise VerificationError("the checkpoint is of the empty log")
    log = _Log(source, cp)
    since = _since(log)
    last = log.entry(cp.tree_size - 1)
    _, unsigned = _text_and_obj(last, "the last entry")
    if unsigned.get("kind") != "state" or type(unsigned.get("keys")) is not int:
        raise VerificationError("a checkpoint of a format-2 log must end with a state entry", seq=cp.tree_size - 1)
    keys, key_heads = _key_history(log, anchor, min(unsigned["keys"], cp.tree_size), since)
    state = _check_state(last, cp.tree_size - 1, keys, since, key_heads)
    if since < cp.tree_size - 1:  # the first state entry: format 2 from there on
        _check_state(log.entry(since), since, keys, since, key_heads)
    keys.open_checkpoint(cp_bytes, cp.tree_size)
    if policy is not None:
        check_policy_log(policy, keys.at(cp.tree_size), cp.tree_size)
        cosigned = policy_cosigners(cp_bytes, policy)
        auditors = policy.auditor_keys()
    else:
        everyone = [*witnesses, *auditors]
        cosigned = require_cosignatures(cp_bytes, everyone, quorum) if everyone else []
    audited_by = count_cosignatures(cp_bytes, auditors)  # by key, not by name
    _, head = _head(log, state, symbol)
    book = _replay(log, keys, symbol, head, since, progress)
    return FundCheck(symbol, cp.tree_size, cp.root_hash, book.funds[symbol].summary(), head, head["entries"],
                     [(s, v.vkey()) for s, v in keys.keys], cosigned,
                     unverified_cosigners(cp_bytes, anchor.name, cosigned), log.hashes._tiles.count, audited_by)


def check_fund_path(source: str, symbol: str, vkey: str | None = None, witnesses: Sequence[str] = (),
                    quorum: int | None = None, deadlines=None, policy_path: str | None = None,
                    auditors: Sequence[str] = ()) -> FundCheck:
    """``fundledger verify SOURCE --contract SYMBOL``: SOURCE an export
    directory or a URL (a database holds the whole log: verify it whole)."""
    from ledger.verify import transport
    from ledger.verify.checkpoint import distinct_witnesses, load_policy, load_vkey
    from ledger.verify.sources import UrlSource, DirSource
    import os

    anchor = load_vkey(vkey) if vkey else None
    witness_keys = distinct_witnesses([load_vkey(w) for w in [*witnesses, *auditors]])
    witness_keys, auditor_keys = witness_keys[:len(witnesses)], witness_keys[len(witnesses):]
    if quorum is not None and not 0 < quorum <= len(witness_keys) + len(auditor_keys):
        raise InputError(f"--quorum {quorum} needs at least that many --witness and --auditor keys")
    if policy_path is not None and (witnesses or auditors):
        raise InputError("--policy names the witnesses: give it or --witness and --auditor, not both")
    policy = load_policy(policy_path) if policy_path is not None else None
    if source.startswith(("http://", "https://")):
        src = UrlSource(source, deadlines or transport.Deadlines())
    elif os.path.isdir(source):
        src = DirSource(source)
    else:
        raise InputError(f"{source!r}: --contract checks an export directory or a URL (a database: verify it whole)")
    try:
        return check_fund(src, anchor, symbol, witness_keys, quorum, policy=policy, auditors=auditor_keys)
    finally:
        src.close()
