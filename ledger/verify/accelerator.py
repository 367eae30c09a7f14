"""The accelerator: checks a chunk of entries in a worker process without
the state the entries before it leave, and answers for each entry either
"passed, by the same rules" (what the main process must still apply) or
"not sure" (None: the reference checks it, see :mod:`ledger.verify.reference`).

It never decides that an entry is bad. Its fast path matches a liquidation's
text against the pattern derived from the entry definition, rebuilds its
figures from the balance they imply, and verifies the chunk's signatures in
one tight loop; the main process then checks the implied balance against the
running one and the id against those seen (:class:`IdSet`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from nacl.bindings import crypto_sign_open

from ledger.errors import FundledgerError
from ledger.format import note
from ledger.format.entry import MAX_ENTRY_BYTES
from ledger.format.kinds import LIQUIDATION, LIQUIDATION_2
from ledger.rules.fund import (
    _PRINTABLE, MAX_ID_LENGTH, ZEROS, Contract, Fund, FundBook, _valid_date, amount_str, canonical_movement, settle,
    zero_str,
)
from ledger.rules.adl import qty_units
from ledger.tlog import merkle
from ledger.verify.ids import HashStore
from ledger.verify.sources import Source, source_from_spec


CHUNK = 1024  # entries per verification job (a multiple of the tile width)


_ID_HASH_MASK = (1 << 60) - 1  # 60 bits: a CPython int of two digits


_KEYED: dict[bytes, "hashlib.blake2b"] = {}  # key -> BLAKE2b state with the key absorbed


def id_hash(key: bytes, contract: str, liquidation_id: str) -> int:
    """A 60-bit keyed BLAKE2b hash of a (contract, liquidation id) pair."""
    keyed = _KEYED.get(key)
    if keyed is None:
        if len(_KEYED) >= 16:
            _KEYED.clear()
        keyed = _KEYED[key] = hashlib.blake2b(digest_size=8, key=key)
    h = keyed.copy()  # cheaper than absorbing the key again
    h.update(f"{contract}\x00{liquidation_id}".encode())
    return int.from_bytes(h.digest(), "little") & _ID_HASH_MASK


class IdSet:
    """The (contract, liquidation id) pairs recorded so far, as 60-bit keyed
    hashes (:func:`id_hash`): about 64 bytes an id instead of about 200 for
    the pair of strings, so a million ids fit in ~64 MB.

    A hash hit is only a *probable* replay: ``confirm(pair)`` settles it
    exactly (the verifier re-reads the log for an earlier entry with that
    pair), so a collision between two different ids never becomes a false
    "duplicate". The key is random per run (or kept in the saved state), so
    nobody can aim for collisions."""

    def __init__(self, key: bytes | None = None, hashes: HashStore | None = None, confirm=None):
        self.key = os.urandom(16) if key is None else key
        self.hashes = HashStore() if hashes is None else hashes  # bounded in memory (ledger/verify/ids.py)
        self.exact: set[tuple[str, str]] = set()  # pairs added although their hash was already there
        self.confirm = confirm

    def __contains__(self, pair) -> bool:
        if id_hash(self.key, *pair) not in self.hashes:
            return False
        if pair in self.exact or self.confirm is None:
            return True
        return self.confirm(pair)

    def add(self, pair) -> None:
        h = id_hash(self.key, *pair)
        if h in self.hashes:
            self.exact.add(tuple(pair))
        self.hashes.add(h)


_WORKER_SOURCES: dict = {}


def check_chunk_job(job: tuple) -> tuple:
    """Run :func:`check_chunk` in a worker process, on its own handle to the source."""
    spec = job[0]
    source = _WORKER_SOURCES.get(spec)
    if source is None:
        source = _WORKER_SOURCES[spec] = source_from_spec(spec)
    return check_chunk(source, *job[1:])


def check_chunk(source: "Source", size: int, first: int, end: int, key: tuple, contracts: dict, id_key: bytes,
                db_columns: bool, summarize: bool = True) -> tuple:
    """The entries ``first..end-1`` checked as far as they can be without the
    state the entries before them leave: ``(items, summary, leaves,
    first_prev, read_failed)``. ``items`` has per entry either what the main
    process must still check and apply, or None ("not sure": a contract or
    key entry, a contract or key not in the tables given, any check
    failing), which the reference then checks; when every entry passed and
    ``summarize``, ``items`` is None and ``summary`` is one movement per fund
    (:func:`_summarize`). Then every entry's leaf hash, the first one's
    ``prev``, and whether reading stopped early.

    A liquidation passes when its signature by ``key`` verifies, its prev is
    the hash of the entry before (in the chunk), its seq is right, and its
    bytes are what the rules give for its contract and the balance *before*
    it that its own figures imply; the main process checks that balance
    against the running one, the id against those seen, and the first prev."""
    name, key_id, public_key = key
    verifier = note.Verifier(name, key_id, public_key, note.ALG_ED25519)
    book = FundBook()
    for symbol, (currency, scale, ctype, multiplier, cseq, lot) in contracts.items():
        book.funds[symbol] = Fund(Contract(symbol, currency, scale, ctype, multiplier, cseq, lot))
    derived = None
    if db_columns:
        from ledger.store.schema import liquidation_row as derived
    items: list = []
    signed: list[tuple[int, bytes]] = []  # (index in items, signature + text) still to verify
    leaves: list[bytes] = []
    first_prev = None
    prev_b64 = None
    seq = first
    it = source.entry_rows(size, first, end)
    read_failed = False
    while True:
        try:
            data, row = next(it)
        except StopIteration:
            break
        except FundledgerError:
            read_failed = True
            break
        leaf = merkle.leaf_hash(data)
        item = None
        try:
            item = _fast_liquidation(data, seq, verifier, public_key, book, prev_b64, leaf, row, derived, id_key)
        except FundledgerError:
            item = None
        if item is None:
            items.append(None)
        else:
            if seq == first:
                first_prev = item[-2]
            signed.append((len(items), item[-1]))
            items.append(item[:-2])
        leaves.append(leaf)
        prev_b64 = base64.b64encode(leaf).decode()
        seq += 1
    if seq != end:
        read_failed = True
    _check_signed(signed, items, public_key)
    if items and items[0] is None:
        first_prev = None
    if summarize and not read_failed and None not in items:
        summary = _summarize(items, first, leaves)
        if summary is not None:
            return None, summary, leaves, first_prev, False, None
    runs = _runs(items, first, leaves) if summarize and not read_failed else None
    return items, None, leaves, first_prev, read_failed, runs


MIN_RUN = 64  # passed entries in a row worth one summary in a chunk that has others


def _runs(items: list, first: int, leaves: list[bytes]) -> dict[int, tuple[int, tuple]]:
    """The runs of at least MIN_RUN passed entries of a chunk that has some
    the reference must check (an ADL event's, a contract entry): ``{start
    index: (end index, summary)}``, each summarized as a whole chunk is."""
    out: dict[int, tuple[int, tuple]] = {}
    i, n = 0, len(items)
    while i < n:
        if items[i] is None:
            i += 1
            continue
        j = i
        while j < n and items[j] is not None:
            j += 1
        if j - i >= MIN_RUN:
            summary = _summarize(items[i:j], first + i, leaves[i:j])
            if summary is not None:
                out[i] = (j, summary)
        i = j
    return out


def _check_signed(signed: list[tuple[int, bytes]], items: list, public_key: bytes) -> None:
    """Verify the chunk's signed messages ``(index in items, signature +
    text)``, setting ``items[index]`` to None ("not sure") for each that
    fails. In one tight loop after the rest: interleaved with the Python
    checks, each Ed25519 verification ran slower (docs/PERFORMANCE.md)."""
    refused = note.REFUSED_POINTS  # the explicit checks of note.ed25519_shape_ok (the key: parse_vkey's)
    for i, signed_message in signed:
        if signed_message[:32] in refused or signed_message[63] >= 0x10 \
                and int.from_bytes(signed_message[32:64], "little") >= note.ED25519_ORDER:
            items[i] = None
            continue
        try:
            crypto_sign_open(signed_message, public_key)
        except Exception:  # noqa: BLE001 - nacl's BadSignatureError or a libsodium refusal
            items[i] = None


def _summarize(items: list[tuple], first: int, leaves: list[bytes]) -> tuple[dict, list[int]] | None:
    """A chunk whose entries all passed, as one movement per fund: ``({symbol:
    (balance before, balance after, credited, paid, adl, liquidations, last
    seq, last time, last price, first chain link)}, [id hashes])``, so the
    main process applies it in a few steps. None unless each entry starts
    from the balance the fund's previous entry in the chunk left, all are of
    one format and, in format 2, each after a fund's first names the one
    before it (the first's link is the main process's to check)."""
    funds: dict[str, list] = {}
    hashes = []
    fmt2 = items[0][9] is not None if items else False
    for i, (symbol, before, delta, paid, adl, balance, h, time, price, chain) in enumerate(items):
        if (chain is not None) != fmt2:
            return None
        f = funds.get(symbol)
        if f is None:
            f = funds[symbol] = [before, before, 0, 0, 0, 0, 0, None, None, chain]
        elif f[1] != before or fmt2 and chain != (f[6], leaves[f[6] - first]):
            return None
        f[1] = balance
        if delta > 0:
            f[2] += delta
        f[3] += paid
        f[4] += adl
        f[5] += 1
        f[6], f[7], f[8] = first + i, time, price
        hashes.append(h)
    return {symbol: tuple(f) for symbol, f in funds.items()}, hashes


# A liquidation's canonical text when no string needs escaping, one group per
# field in RFC 8785 key order, derived from the entry's definition: a text
# matching it is exactly canonical_json of its groups; any other spelling
# does not match, and the reference checks it.
_LIQUIDATION_TEXT = LIQUIDATION.pattern
_LIQUIDATION_2_TEXT = LIQUIDATION_2.pattern  # format 2: with chain_seq and chain_prev
_GROUPS = ("adl", "balance", "bankruptcy_price", "contract", "delta", "fill_price", "id", "mark_price", "paid", "prev",
           "qty", "seq", "side", "time")


def _fast_liquidation(data, seq, verifier, public_key, book, prev_b64, leaf, row, derived, id_key):
    """One liquidation entry for :func:`check_chunk`: the tuple the main
    process applies, then the entry's prev and its signed message
    (signature + text), or None. The signature is not checked here: the
    caller verifies the chunk's signed messages together, and an entry
    whose signature fails is left to the main process like any other.

    The text must match :data:`_LIQUIDATION_TEXT` (its fields' canonical
    encoding) and every field be what the rules give from the balance
    before it that its own figures imply; a lot contract's ADL is not here."""
    if len(data) > MAX_ENTRY_BYTES:
        return None
    split = _split_signature_line(data, verifier)
    if split is None:
        return None
    text, signature = split
    try:  # (the pattern admits no newline before the text's last byte: the text is the whole note's)
        ascii_text = text.decode("ascii")
    except UnicodeDecodeError:
        return None
    chain = None
    m = _LIQUIDATION_TEXT.fullmatch(ascii_text)
    if m is None:
        m = _LIQUIDATION_2_TEXT.fullmatch(ascii_text)
        if m is None:
            return None
        # (the pattern took canonical base64 of 32 bytes; the main process checks where it points)
        chain = (int(m["chain_seq"]), binascii.a2b_base64(m["chain_prev"]))
    (adl_s, balance_s, bankruptcy_s, contract, delta_s, fill_s, lid, mark_s, paid_s, prev, qty_s, seq_s, side,
     time) = m.group(*_GROUPS)
    # (the pattern took the time in canonical spelling only; the date must exist)
    if int(seq_s) != seq or (prev_b64 is not None and prev != prev_b64) or not _valid_date(time):
        return None
    fund = book.funds.get(contract)
    if fund is None or len(lid) > MAX_ID_LENGTH or not _PRINTABLE.match(lid):
        return None  # (the pattern took qty and the prices in canonical spelling only)
    scale = fund.contract.scale
    delta = canonical_movement(fund.contract, side, qty_s, bankruptcy_s, fill_s)
    # The balance before this entry, as its own figures imply it; the
    # comparisons below show they are what the rules give from it.
    try:
        if delta >= 0:
            before = int(balance_s.replace(".", "")) - delta
        else:
            before = int(balance_s.replace(".", "")) + int(paid_s.replace(".", ""))
    except ValueError:
        return None
    if before < 0:
        return None
    if fund.contract.lot_units is not None and qty_units(qty_s, "qty") % fund.contract.lot_units:
        return None  # (not whole lots: the reference's to refuse)
    if delta >= 0:  # settle(before, delta): a surplus, nothing paid or passed to ADL
        paid = adl = 0
        balance = before + delta
        zero = ZEROS.get(scale) or zero_str(scale)
        if paid_s != zero or adl_s != zero or amount_str(delta, scale) != delta_s \
                or amount_str(balance, scale) != balance_s:
            return None
    else:
        paid, adl, balance = settle(before, delta)
        if (adl and fund.contract.lot is not None  # (a lot contract's ADL: the reference's)
                or amount_str(delta, scale) != delta_s or amount_str(paid, scale) != paid_s
                or amount_str(adl, scale) != adl_s or amount_str(balance, scale) != balance_s):
            return None
    if derived is not None and tuple(row) != derived(seq, data, leaf, time, contract, lid, side, qty_s, bankruptcy_s,
                                                     fill_s, mark_s, delta_s, paid_s, adl_s, balance_s):
        return None
    return (contract, before, delta, paid, adl, balance, id_hash(id_key, contract, lid), time,
            fill_s if mark_s is None else mark_s, chain, prev, signature + text)


_SIG_B64_LEN = note.sig_b64_length(note.ED25519_SIG_SIZE)  # base64 of a key id and an Ed25519 signature
_LINE_PREFIXES: dict[tuple[str, bytes], bytes] = {}  # (key name, key id) -> b"\n\n— <name> "


def _split_signature_line(data: bytes, key: note.Verifier) -> tuple[bytes, bytes] | None:
    """:func:`_split_one_signature` less its check that the text holds no
    blank line (for a caller whose own check of the text excludes one)."""
    prefix = _LINE_PREFIXES.get((key.name, key.key_id))
    if prefix is None:
        if len(_LINE_PREFIXES) >= 16:
            _LINE_PREFIXES.clear()
        prefix = _LINE_PREFIXES[key.name, key.key_id] = b"\n\n" + note.SIG_PREFIX + key.name.encode() + b" "
    cut = len(data) - len(prefix) - _SIG_B64_LEN - 1
    if cut < 1 or data[cut : cut + len(prefix)] != prefix or data[-1:] != b"\n":
        return None
    b64 = data[cut + len(prefix) : -1]
    try:
        raw = binascii.a2b_base64(b64, strict_mode=True)
    except binascii.Error:
        return None
    if len(raw) != note.KEY_ID_SIZE + note.ED25519_SIG_SIZE or raw[:4] != key.key_id or binascii.b2a_base64(raw, newline=False) != b64:
        return None
    return data[: cut + 1], raw[4:]

