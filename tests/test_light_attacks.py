"""Attacks on the light check of one fund (docs/FORMAT.md, "Format 2",
"Publication of chains and heads", "The light check of one fund").

The attacker is a dishonest operator: it holds the log keys, so it can
re-sign forged entries, state entries and checkpoints, and it rebuilds the
hash tiles, entry bundles, chain bundles and heads tiles from its forged
entries (:func:`rewrite`, :func:`publish`), so that inclusion holds wherever
the attack needs it. Each attack asserts the exact outcome: exit 1
(VerificationError) and a message naming the problem, or 2 for bad input.

The tests marked TRUST MODEL document what the spec says the light check
cannot catch (an entry left out of its chain, a key hand-over left out of
the key chain by a holder of the retired key, a wrong `prev`, another fund's
entries): the light check passes, the full `verify` of the same export fails.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import ORIGIN, Ledger, run_fundledger
from tamper_util import _amount, b64, bundle, bundle_entries, canonical, entry_obj, leaf, lib_verify, mth

from ledger.errors import FundledgerError, VerificationError
from ledger.format import note
from ledger.ops import api
from ledger.tlog.tiles import chain_path, entries_path, tile_path
from ledger.verify.light import check_fund_path
from publish.export import export

XBT, ETH = "XBTUSDTM", "ETHUSDTM"
ZERO = b64(bytes(32))

# --- the dishonest operator's workshop ------------------------------------------------------


def _chain_name(o: dict) -> str:
    return {"key": "_key", "state": "_state"}.get(o["kind"], o["contract"])


def _settle(fund: dict, o: dict) -> None:
    """delta, paid, adl and balance of liquidation ``o`` by the rules (Fractions, floor)."""
    q, m = Fraction(o["qty"]), Fraction(fund["multiplier"])
    b, f = Fraction(o["bankruptcy_price"]), Fraction(o["fill_price"])
    delta = q * m * ((f - b) if fund["type"] == "linear" else (1 / b - 1 / f))
    delta = -delta if o["side"] == "short" else delta
    unit = Fraction(1, 10 ** fund["scale"])
    delta = math.floor(delta / unit) * unit
    paid = Fraction(0) if delta >= 0 else min(-delta, fund["balance"])
    adl = Fraction(0) if delta >= 0 else -delta - paid
    bal = fund["balance"] + delta if delta >= 0 else fund["balance"] - paid
    s = fund["scale"]
    o.update(delta=_amount(delta, s), paid=_amount(paid, s), adl=_amount(adl, s), balance=_amount(bal, s))


def heads_at(datas: list[bytes], below: int, hide=(), patch=None) -> list[bytes]:
    """The head lines, in fund-index order, of the funds at a state entry of
    seq ``below``, leaving the ``hide`` seqs out; ``patch(head)`` may lie
    (return a dict, or raw bytes for the line)."""
    heads: dict[str, dict] = {}
    for seq, d in enumerate(datas[:below]):
        o = entry_obj(d)
        if o["kind"] not in ("contract", "liquidation") or seq in hide:
            continue
        zero = _amount(Fraction(0), o.get("scale", 0))
        h = heads.setdefault(o["contract"], {"balance": zero, "contract": o["contract"], "entries": 0})
        h.update(entries=h["entries"] + 1, seq=seq, hash=b64(leaf(d)))
        h["balance"] = o.get("balance", h["balance"])
    lines = [patch(dict(h)) if patch else h for h in heads.values()]
    return [h if isinstance(h, bytes) else canonical(h) for h in lines]


def heads_root(lines: list[bytes]) -> bytes:
    return mth([leaf(line) for line in lines]) if lines else hashlib.sha256(b"").digest()


def rewrite(datas: list[bytes], signers: list, tweak=None, hide=(), patch=None, sign_as=None) -> list[bytes]:
    """The log re-signed from its entries' inputs by whoever holds
    ``signers`` (the first key first): seq, prev, chain fields, amounts and
    state commitments recomputed as the writer does, except that the
    ``hide`` seqs are left out of their chains, heads and the key history,
    and ``tweak(seq, obj)`` forges anything just before signing (``sign_as``:
    {seq: signers} instead of the key in force)."""
    by_vkey = {s.verifier().vkey(): s for s in signers}
    current, out, chains, funds, since = signers[0], [], {}, {}, None
    for seq, d in enumerate(datas):
        o = entry_obj(d)
        o.update(seq=seq, prev=b64(leaf(out[-1])) if out else ZERO)
        o.pop("chain_seq", None), o.pop("chain_prev", None)
        name = _chain_name(o)
        if since is not None and o["kind"] != "contract" and name in chains:
            o["chain_seq"], o["chain_prev"] = chains[name][0], b64(chains[name][1])
        if o["kind"] == "contract":
            funds[o["contract"]] = dict(o, balance=Fraction(0))
        elif o["kind"] == "liquidation":
            _settle(funds[o["contract"]], o)
        elif o["kind"] == "state":
            since = seq if since is None else since
            lines = heads_at(out, seq, hide, patch)
            keys = [i for i, e in enumerate(out) if entry_obj(e)["kind"] == "key" and i not in hide]
            o.update(funds=len(lines), heads=b64(heads_root(lines)), keys=len(keys))
            o.pop("key_seq", None), o.pop("key_hash", None)
            if keys:
                o.update(key_seq=keys[-1], key_hash=b64(leaf(out[keys[-1]])))
        if tweak:
            tweak(seq, o)
        by = [current, by_vkey[o["vkey"]]] if o["kind"] == "key" else [current]
        out.append(note.sign_note(canonical(o), (sign_as or {}).get(seq, by)))
        if seq not in hide:
            chains[name] = (seq, leaf(out[-1]))
            if o["kind"] == "liquidation":
                funds[o["contract"]]["balance"] = Fraction(o["balance"])
            if o["kind"] == "key":
                current = by_vkey[o["vkey"]]
    return out


def at(seq: int, fn):
    """A tweak that forges the entry at ``seq`` alone."""
    return lambda s, o: fn(o) if s == seq else None


def publish(root: Path, datas: list[bytes], vkey: str, cp_signers: list, hide=(), patch=None) -> Path:
    """The whole export of the log ``datas`` as tlog-tiles plus the format-2
    files, rebuilt from scratch; the chains leave the ``hide`` seqs out and
    are cut at the entry count the (patched) head says."""
    n, leaves, files = len(datas), [leaf(d) for d in datas], {}
    objs = [entry_obj(d) for d in datas]
    for i in range(0, n, 256):
        files[entries_path(i // 256, min(256, n - i))] = bundle(datas[i:i + 256])
    level = 0
    while n >> (8 * level):
        span, count = 256 ** level, n >> (8 * level)
        hashes = [mth(leaves[j * span:(j + 1) * span]) for j in range(count)]
        for k in range(0, count, 256):
            files[tile_path(level, k // 256, min(256, count - k))] = b"".join(hashes[k:k + 256])
        level += 1
    files["checkpoint"] = note.sign_note(note.Checkpoint(ORIGIN, n, mth(leaves)).text(), cp_signers)
    files["vkey"] = (vkey + "\n").encode()
    files["since"] = f"{next(i for i, o in enumerate(objs) if o['kind'] == 'state')}\n".encode()
    symbols = [o["contract"] for o in objs if o["kind"] == "contract"]
    files["funds"] = "".join(s + "\n" for s in symbols).encode()
    lines = heads_at(datas, n - 1, hide, patch)
    files[f"heads/0/{heads_root(lines).hex()}"] = b"".join(lines)
    counts = {}
    for line in lines:
        try:
            counts[json.loads(line)["contract"]] = json.loads(line)["entries"]
        except (ValueError, KeyError, TypeError):
            pass
    for name in symbols + ["_key"]:
        chain = [d for i, (d, o) in enumerate(zip(datas[:n - 1], objs)) if i not in hide and
                 (o["kind"] == "key" if name == "_key" else o["kind"] != "state" and o["contract"] == name)]
        count = counts.get(name, len(chain)) if isinstance(counts.get(name, 0), int) else len(chain)
        for k in range(0, count, 256):
            files[chain_path(name, k // 256, min(256, count - k))] = bundle(chain[k:k + min(256, count - k)])
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- the logs under attack ---------------------------------------------------------------------


def _new(tmp_path: Path, log_format: int = 2) -> Ledger:
    db, key = str(tmp_path / "fund.db"), str(tmp_path / "fund.key")
    store, signer = api.init_ledger(db, key, ORIGIN, log_format=log_format)
    return Ledger(tmp_path, db, key, store, signer)


@pytest.fixture
def log2(tmp_path):
    """0 state, 1 contract XBT, 2 contract ETH, 3 L-1 (+0.2), 4 E-1, 5 state,
    6 L-2 (-0.1, paid), 7 L-3 (+0.15), 8 state: XBT at 0.25, n = 9."""
    lg = _new(tmp_path)
    lg.contract(XBT, multiplier="0.001")
    lg.contract(ETH, scale=6, multiplier="0.01")
    lg.liquidation(XBT, id="L-1", qty="2", fill_price="39100")
    lg.liquidation(ETH, id="E-1", qty="2", bankruptcy_price="3000", fill_price="3010")
    lg.checkpoint()
    lg.liquidation(XBT, id="L-2", qty="1", fill_price="38900")
    lg.liquidation(XBT, id="L-3", qty="3", fill_price="39050")
    lg.checkpoint()
    lg.datas = [d for _, d in lg.store.iter_entries(0, lg.store.size())]
    lg.vkey = lg.signer.verifier().vkey()
    lg.pub = tmp_path / "pub"
    export(lg.store, str(lg.pub))
    yield lg
    lg.store.close()


@pytest.fixture
def rotated(tmp_path):
    """0 state, 1 contract XBT, 2 L-1 (K0), 3 key k1, 4 L-2 (k1), 5 state,
    6 key k2, 7 contract ETH, 8 E-1, 9 state (k2): n = 10."""
    lg = _new(tmp_path)
    lg.contract(XBT, multiplier="0.001")
    lg.liquidation(XBT, id="L-1", qty="2", fill_price="39100")
    _, k1 = api.rotate_key(lg.store, lg.signer, str(tmp_path / "k1.key"))
    lg.store.append([{"kind": "liquidation", "contract": XBT, "id": "L-2", "side": "long", "qty": "1",
                      "bankruptcy_price": "39000", "fill_price": "38900"}], [k1])
    lg.store.add_checkpoint([k1])
    _, k2 = api.rotate_key(lg.store, k1, str(tmp_path / "k2.key"))
    lg.store.append([{"kind": "contract", "symbol": ETH, "currency": "USDT", "scale": 6, "multiplier": "0.01"}], [k2])
    lg.store.append([{"kind": "liquidation", "contract": ETH, "id": "E-1", "side": "short", "qty": "1",
                      "bankruptcy_price": "3000", "fill_price": "2990"}], [k2])
    lg.store.add_checkpoint([k2])
    lg.keys = [lg.signer, k1, k2]
    lg.datas = [d for _, d in lg.store.iter_entries(0, lg.store.size())]
    lg.vkey = lg.signer.verifier().vkey()
    lg.pub = tmp_path / "pub"
    export(lg.store, str(lg.pub))
    yield lg
    lg.store.close()


def light(root, symbol=XBT, vkey=None, **kw):
    """(0, FundCheck) or (exit code, message): any other exception is a bug."""
    try:
        return 0, check_fund_path(str(root), symbol, vkey, **kw)
    except FundledgerError as e:
        return e.exit_code, str(e)


def fails(root, vkey, pattern, code=1, symbol=XBT, **kw):
    got, msg = light(root, symbol, vkey, **kw)
    assert (got, isinstance(msg, str)) == (code, True), (got, msg)
    assert pattern.lower() in msg.lower(), msg
    return msg


def chain_file(root: Path, width: int, name=XBT, index=0) -> tuple[Path, list[bytes]]:
    p = root / chain_path(name, index, width)
    return p, [e for _, e in bundle_entries(p.read_bytes())]


# --- the forger is the writer, and the honest log passes --------------------------------------


def test_the_forger_rebuilds_the_honest_export_byte_for_byte(log2, tmp_path):
    assert rewrite(log2.datas, [log2.signer]) == log2.datas
    mine = publish(tmp_path / "mine", log2.datas, log2.vkey, [log2.signer])
    assert files_of(mine) == files_of(log2.pub)
    code, r = light(log2.pub, XBT, log2.vkey)
    assert code == 0 and r.fund["balance"] == "0.25000000" and r.entries_checked == 4
    assert (r.head["seq"], r.head["entries"], r.tree_size) == (7, 4, 9)
    assert light(log2.pub, ETH, log2.vkey)[1].fund["balance"] == "0.200000"


def test_the_rotated_log_passes_with_its_key_history(rotated, tmp_path):
    assert rewrite(rotated.datas, rotated.keys) == rotated.datas
    mine = publish(tmp_path / "mine", rotated.datas, rotated.vkey, [rotated.keys[2]])
    assert files_of(mine) == files_of(rotated.pub)
    for symbol, balance in ((XBT, "0.10000000"), (ETH, "0.100000")):
        code, r = light(rotated.pub, symbol, rotated.vkey)
        assert code == 0 and r.fund["balance"] == balance
        assert [s for s, _ in r.keys] == [0, 4, 7]


# --- chain bundles -----------------------------------------------------------------------------

CHAIN_EDITS = {
    "an entry of another fund": (lambda d, e: [e[0], d[4], e[2], e[3]], "entry 1 of the chain of XBTUSDTM is not a liquidation or adl entry of XBTUSDTM"),
    "another fund's contract first": (lambda d, e: [d[2], e[1], e[2], e[3]], "entry 0 of the chain of XBTUSDTM is not a contract entry"),
    "reordered": (lambda d, e: [e[0], e[2], e[1], e[3]], "not in increasing seq order"),
    "duplicated": (lambda d, e: [e[0], e[1], e[1], e[3]], "not in increasing seq order"),
    "removed (bundle short)": (lambda d, e: [e[0], e[1], e[3]], "entry bundle is truncated"),
    "an unrelated entry inserted": (lambda d, e: [e[0], e[1], d[5], e[3]], "entry 2 of the chain of XBTUSDTM is not a liquidation"),
    "ends at the state entry": (lambda d, e: [e[0], e[1], e[2], d[8]], "reaches past the state entry"),
    "an entry not the tree's": (lambda d, e: [e[0], e[1], e[2].replace(b'"balance":"0.10000000"', b'"balance":"0.20000000"'), e[3]],
                                "seq 6: the entry is not the one the checkpointed tree holds at its seq"),
    "an entry re-signed, tree not rebuilt": (lambda d, e: e, "seq 6: the entry is not the one"),
    "truncated bytes": (lambda d, e: bundle([e[0], e[1], e[2], e[3]])[:-5], "entry bundle is truncated"),
    "bytes after the last entry": (lambda d, e: bundle(e) + b"\x00\x05hello", "entry bundle has bytes after its last entry"),
    "a length prefix past the end": (lambda d, e: b"\xff\xff" + bundle(e)[2:], "entry bundle is truncated"),
    "an empty entry": (lambda d, e: [b"", e[1], e[2], e[3]], "chain XBTUSDTM"),
    "a seq outside the tree": (lambda d, e: [e[0], e[1], e[2], e[3].replace(b'"seq":7', b'"seq":99999999999999')], "outside the tree of size 9"),
    "a negative seq": (lambda d, e: [e[0], e[1], e[2].replace(b'"seq":6', b'"seq":-6'), e[3]], "no seq"),
}


@pytest.mark.parametrize("name", CHAIN_EDITS)
def test_a_forged_chain_bundle_fails(log2, name):
    edit, pattern = CHAIN_EDITS[name]
    path, items = chain_file(log2.pub, 4)
    if name == "an entry re-signed, tree not rebuilt":
        o = entry_obj(items[2])
        o["balance"] = "0.20000000"
        items[2] = note.sign_note(canonical(o), [log2.signer])
    new = edit(log2.datas, items)
    path.write_bytes(new if isinstance(new, bytes) else bundle(new))
    fails(log2.pub, log2.vkey, pattern)


@pytest.mark.parametrize("edit", [lambda e: bundle(e[:3]), lambda e: bundle(e) + b"\x00\x01x"])
def test_a_broken_chain_bundle_names_the_chain_not_a_seq_of_another_fund(log2, edit):
    path, items = chain_file(log2.pub, 4)
    path.write_bytes(edit(items))
    with pytest.raises(VerificationError) as e:
        check_fund_path(str(log2.pub), XBT, log2.vkey)
    assert e.value.seq in (None, 1, 3, 6, 7) and "XBTUSDTM" in e.value.reason, (e.value.seq, e.value.reason)


def test_a_chain_bundle_of_the_wrong_width_is_missing(log2):
    path, items = chain_file(log2.pub, 4)
    path.unlink()
    (path.parent / "3").write_bytes(bundle(items[:3]))  # .p/3: one entry left out
    fails(log2.pub, log2.vkey, "chain/XBTUSDTM/000.p/4 is missing")


def test_a_long_chain_spans_bundles_and_a_seq_may_not_go_back(tmp_path):
    lg = _new(tmp_path)
    lg.contract(XBT, multiplier="0.001")
    recs = [{"kind": "liquidation", "contract": XBT, "id": f"L-{i}", "side": "long", "qty": "1",
             "bankruptcy_price": "39000", "fill_price": str(39000 + (i % 7) * 10 - 20)} for i in range(300)]
    lg.store.append(recs, [lg.signer])
    lg.checkpoint()
    export(lg.store, str(tmp_path / "pub"))
    vkey, pub = lg.signer.verifier().vkey(), tmp_path / "pub"
    code, r = light(pub, XBT, vkey)
    assert code == 0 and r.entries_checked == 301 and r.hash_tiles_read >= 2
    full, items = chain_file(pub, 256)
    part, rest = chain_file(pub, 45, index=1)
    part.write_bytes(bundle([items[-1]] + rest[1:]))  # bundle 1 starts with bundle 0's last entry
    fails(pub, vkey, "not in increasing seq order")
    part.write_bytes(bundle(rest))
    full.unlink()
    fails(pub, vkey, "chain/XBTUSDTM/000 is missing")
    lg.store.close()


# --- entries re-signed with the real key, the whole log rebuilt consistently ------------------

RULE_FORGERIES = {
    "a wrong balance": (6, lambda o: o.update(balance="0.20000000"), "seq 6: balance is '0.20000000' but the rules give '0.10000000'"),
    "a wrong delta": (6, lambda o: o.update(delta="-0.05000000", paid="0.05000000", balance="0.15000000"),
                      "seq 6: delta is '-0.05000000' but the rules give '-0.10000000'"),
    "a shortfall not paid": (6, lambda o: o.update(paid="0.00000000", adl="0.10000000", balance="0.20000000"), "seq 6: paid is"),
    "a repeated id": (6, lambda o: o.update(id="L-1"), "seq 6: "),
    "a broken chain_prev": (7, lambda o: o.update(chain_prev=ZERO), "seq 7: chain_prev is"),
    "a chain_seq that skips": (7, lambda o: o.update(chain_seq=3), "seq 7: chain_seq is '3' but the rules give '6'"),
    "no chain fields": (6, lambda o: (o.pop("chain_seq"), o.pop("chain_prev")), "seq 6: missing field 'chain_seq'"),
    "an extra field": (6, lambda o: o.update(bonus="1"), "seq 6: unexpected field 'bonus'"),
    "an impossible date": (6, lambda o: o.update(time="2026-02-30T00:00:00Z"), "seq 6: "),
    "a changed contract term": (1, lambda o: o.update(scale=7), "seq 3: "),
}


@pytest.mark.parametrize("name", RULE_FORGERIES)
def test_a_forged_entry_re_signed_in_a_consistent_log_fails_the_rules_replay(log2, tmp_path, name):
    seq, fn, pattern = RULE_FORGERIES[name]
    forged = rewrite(log2.datas, [log2.signer], tweak=at(seq, fn))
    assert forged[seq] != log2.datas[seq]
    pub = publish(tmp_path / "forged", forged, log2.vkey, [log2.signer])
    fails(pub, log2.vkey, pattern)
    assert lib_verify(pub)["ok"] is False  # and the full verifier agrees


@pytest.mark.parametrize("who, pattern", [
    ("outsider", "seq 6: signed by a key that may not sign here"),
    ("twice", "seq 6: 2 signatures, expected 1 by the log key"),
])
def test_an_entry_signed_by_the_wrong_keys_fails(log2, tmp_path, who, pattern):
    other = note.generate_signer(ORIGIN)
    forged = rewrite(log2.datas, [log2.signer], sign_as={6: [other] if who == "outsider" else [log2.signer] * 2})
    fails(publish(tmp_path / "forged", forged, log2.vkey, [log2.signer]), log2.vkey, pattern)


def test_times_are_not_ordered_and_checkpoint_extensions_are_ignored(log2, tmp_path):
    """Not attacks: what the spec says a verifier must accept."""
    forged = rewrite(log2.datas, [log2.signer], tweak=at(6, lambda o: o.update(time="2001-01-01T00:00:00.5Z")))
    pub = publish(tmp_path / "forged", forged, log2.vkey, [log2.signer])
    cp = note.Checkpoint(ORIGIN, 9, mth([leaf(d) for d in forged]), ("extension line",)).text()
    (pub / "checkpoint").write_bytes(note.sign_note(cp, [log2.signer]))
    code, r = light(pub, XBT, log2.vkey)
    assert code == 0 and r.fund["balance"] == "0.25000000"


def test_a_log_upgraded_from_format_1_and_its_chain_fields(tmp_path):
    lg = _new(tmp_path, log_format=1)
    lg.contract(XBT, multiplier="0.001")
    lg.liquidation(XBT, id="L-1", qty="2", fill_price="39100")
    lg.checkpoint()
    api.upgrade(lg.store, lg.signer)  # since = 2
    lg.liquidation(XBT, id="L-2", qty="1", fill_price="38900")
    lg.checkpoint()
    datas, vkey, export_dir = [d for _, d in lg.store.iter_entries(0, 5)], lg.signer.verifier().vkey(), tmp_path / "pub"
    export(lg.store, str(export_dir))
    lg.store.close()
    assert files_of(publish(tmp_path / "mine", datas, vkey, [lg.signer])) == files_of(export_dir)
    code, r = light(export_dir, XBT, vkey)
    assert code == 0 and r.entries_checked == 3 and r.fund["balance"] == "0.10000000"
    linked = rewrite(datas, [lg.signer], tweak=at(1, lambda o: o.update(chain_seq=0, chain_prev=b64(leaf(datas[0])))))
    fails(publish(tmp_path / "f1", linked, vkey, [lg.signer]), vkey, "seq 1: unexpected field 'chain_prev'")
    unlinked = rewrite(datas, [lg.signer], tweak=at(3, lambda o: (o.pop("chain_seq"), o.pop("chain_prev"))))
    fails(publish(tmp_path / "f2", unlinked, vkey, [lg.signer]), vkey, "seq 3: missing field 'chain_seq'")
    (export_dir / "since").write_bytes(b"0\n")  # "format 2 from the start": entry 0 is a contract entry
    fails(export_dir, vkey, "seq 0: ")


# --- heads ------------------------------------------------------------------------------------

def _xbt_head(fn):
    return lambda h: fn(h) if h["contract"] == XBT and h["seq"] == 7 else h


HEAD_LIES = {
    "balance": (_xbt_head(lambda h: dict(h, balance="9.00000000")),
                "seq 7: the head of XBTUSDTM says balance 9.00000000, its entries give 0.25000000"),
    "seq and hash of an earlier entry": (None, "the chain of XBTUSDTM does not end at its head (seq 6)"),
    "hash": (_xbt_head(lambda h: dict(h, hash=ZERO)), "the chain of XBTUSDTM does not end at its head (seq 7)"),
    "fewer entries": (_xbt_head(lambda h: dict(h, entries=3)), "does not end at its head (seq 7)"),
    "more entries": (_xbt_head(lambda h: dict(h, entries=5)), "entry bundle is truncated"),
    "no entries": (_xbt_head(lambda h: dict(h, entries=0)), "the head of XBTUSDTM has a bad entry count"),
    "entries as a string": (_xbt_head(lambda h: dict(h, entries="4")), "the head of XBTUSDTM has a bad entry count"),
    "another contract": (_xbt_head(lambda h: dict(h, contract=ETH)), "the head at fund index 0 is not that of XBTUSDTM"),
    "an extra field": (_xbt_head(lambda h: dict(h, note="x")), "the head at fund index 0 is not that of XBTUSDTM"),
    "non-canonical": (_xbt_head(lambda h: json.dumps(h).encode() + b"\n"), "not a canonical head line"),
    "not JSON": (_xbt_head(lambda h: b"head\n"), "the head of XBTUSDTM"),
}


@pytest.mark.parametrize("name", HEAD_LIES)
def test_a_lying_head_signed_in_the_state_entry_fails(log2, tmp_path, name):
    patch, pattern = HEAD_LIES[name]
    if patch is None:
        h6 = b64(leaf(log2.datas[6]))
        patch = _xbt_head(lambda h: dict(h, seq=6, hash=h6, balance="0.10000000"))
    forged = rewrite(log2.datas, [log2.signer], patch=patch)
    assert forged[:8] == log2.datas[:8] and forged[8] != log2.datas[8]  # only the state entry is re-signed
    pub = publish(tmp_path / "forged", forged, log2.vkey, [log2.signer], patch=patch)
    fails(pub, log2.vkey, pattern)


def _heads_tile(root: Path) -> Path:
    (tile,) = (root / "heads" / "0").iterdir()
    return tile


def test_a_heads_tile_rewritten_under_its_name_does_not_hash_to_it(log2):
    tile = _heads_tile(log2.pub)
    tile.write_bytes(tile.read_bytes().replace(b'"balance":"0.25000000"', b'"balance":"9.25000000"'))
    fails(log2.pub, log2.vkey, f"heads tile {tile.name} does not hash to its name")


def test_a_heads_tile_renamed_to_its_new_hash_is_not_the_state_entrys(log2):
    tile = _heads_tile(log2.pub)
    lines = tile.read_bytes().replace(b'"balance":"0.25000000"', b'"balance":"9.25000000"').splitlines(True)
    tile.unlink()
    (tile.parent / heads_root(lines).hex()).write_bytes(b"".join(lines))
    fails(log2.pub, log2.vkey, f"heads/0/{tile.name} is missing")


@pytest.mark.parametrize("edit, pattern", [
    (lambda b: b.splitlines(True)[0], "holds 1 heads, not 2"),
    (lambda b: b + b"x", "does not end with a newline"),
    (lambda b: b"", "holds 0 heads, not 2"),
])
def test_a_heads_tile_of_the_wrong_shape_fails(log2, edit, pattern):
    tile = _heads_tile(log2.pub)
    tile.write_bytes(edit(tile.read_bytes()))
    fails(log2.pub, log2.vkey, pattern)


def test_a_two_level_heads_tree_and_its_tiles(tmp_path):
    lg = _new(tmp_path)
    symbols = [f"F{i:03d}" for i in range(257)]
    lg.store.append([{"kind": "contract", "symbol": s, "currency": "USDT", "scale": 2, "multiplier": "1"}
                     for s in symbols], [lg.signer])
    lg.liquidation("F256", id="X", qty="1", bankruptcy_price="10", fill_price="11")
    lg.checkpoint()
    pub, vkey = tmp_path / "pub", lg.signer.verifier().vkey()
    export(lg.store, str(pub))
    lg.store.close()
    assert [light(pub, s, vkey)[1].fund["balance"] for s in ("F000", "F255", "F256")] == ["0.00", "0.00", "1.00"]
    (top,) = (pub / "heads" / "1").iterdir()
    names = top.read_bytes()
    top.write_bytes(names[32:] + names[:32])  # the two level-0 tiles swapped
    fails(pub, vkey, f"heads tile {top.name} does not hash to its name", symbol="F256")
    top.write_bytes(names + names[:32])
    fails(pub, vkey, f"heads tile {top.name} holds 96 bytes, not 64", symbol="F000")
    top.write_bytes(names)
    small = next(p for p in (pub / "heads" / "0").iterdir() if p.stat().st_size < 200)
    small.write_bytes(small.read_bytes().replace(b"1.00", b"9.00"))
    fails(pub, vkey, "does not hash to its name", symbol="F256")
    assert light(pub, "F000", vkey)[0] == 0  # fund 0 never reads that tile


# --- funds and since ----------------------------------------------------------------------------

@pytest.mark.parametrize("funds, code, pattern", [
    (b"ETHUSDTM\nXBTUSDTM\n", 1, "the head at fund index 1 is not that of XBTUSDTM"),
    (b"XBTUSDTM\n", 1, "`funds` does not list the 2 funds of the state entry"),
    (b"XBTUSDTM\nETHUSDTM\nSOLUSDTM\n", 1, "`funds` does not list the 2 funds"),
    (b"XBTUSDTM\nETHUSDTM", 1, "`funds` does not list the 2 funds"),
    (b"SOLUSDTM\nETHUSDTM\n", 2, "contract XBTUSDTM is not among the 2 funds of this log"),
    (b"\xff\xfe\x00\nETHUSDTM\n", 2, "is not among"),
    (b"X" * 10_000_000, 1, "funds is larger than"),
])
def test_a_lying_funds_file_fails(log2, funds, code, pattern):
    (log2.pub / "funds").write_bytes(funds)
    fails(log2.pub, log2.vkey, pattern, code=code)


@pytest.mark.parametrize("since, pattern", [
    (b"1\n", "seq 1: "),  # a contract entry, not a state entry
    (b"5\n", "seq 5: unexpected field 'chain_prev'"),  # a later state entry: it links to seq 0
    (b"8\n", "seq 8: unexpected field 'chain_prev'"),  # the last state entry
    (b"9\n", "`since` names seq 9, outside the tree of size 9"),
    (b"00\n", "`since` is not a seq"),
    (b"0", "`since` is not a seq"),
    (b"-1\n", "`since` is not a seq"),
    (b"", "`since` is not a seq"),
    (b"\xd9\xa3\n", "`since` is not a seq"),  # an Arabic-Indic digit
    (b"9" * 40 + b"\n", "since is larger than"),
])
def test_a_lying_since_file_fails(log2, since, pattern):
    (log2.pub / "since").write_bytes(since)
    fails(log2.pub, log2.vkey, pattern)


def test_since_at_a_contract_entry_is_named_as_not_a_state_entry(log2):
    (log2.pub / "since").write_bytes(b"1\n")
    fails(log2.pub, log2.vkey, "entry 1 is not a state entry")


def test_no_since_is_a_format_1_log_and_bad_input(log2, tmp_path):
    (log2.pub / "since").unlink()
    fails(log2.pub, log2.vkey, "publishes no `since`", code=2)
    (tmp_path / "f1").mkdir()
    lg = _new(tmp_path / "f1", log_format=1)
    lg.contract(XBT)
    lg.checkpoint()
    export(lg.store, str(tmp_path / "f1" / "pub"))
    fails(tmp_path / "f1" / "pub", lg.signer.verifier().vkey(), "publishes no `since`", code=2)
    lg.store.close()


# --- keys and checkpoints ------------------------------------------------------------------------

def test_a_checkpoint_signed_by_a_retired_key_fails(rotated):
    cp = note.Checkpoint(ORIGIN, 10, mth([leaf(d) for d in rotated.datas])).text()
    for retired in rotated.keys[:2]:
        (rotated.pub / "checkpoint").write_bytes(note.sign_note(cp, [retired]))
        fails(rotated.pub, rotated.vkey, "checkpoint of size 10 is signed by a retired log key")
    (rotated.pub / "checkpoint").write_bytes(note.sign_note(cp, [rotated.keys[1], rotated.keys[2]]))
    assert light(rotated.pub, XBT, rotated.vkey)[0] == 0  # the retired line beside the right one is ignored


@pytest.mark.parametrize("edit, pattern", [
    (lambda d, e: [e[0]], "entry bundle is truncated"),
    (lambda d, e: [e[1], e[0]], "chain _key is not in increasing seq order"),
    (lambda d, e: [e[0], d[4]], "seq 4: an entry of the key chain is not a key entry"),
    (lambda d, e: [e[0], e[0]], "not in increasing seq order"),
    (lambda d, e: [e[0], d[9]], "seq 9: the key chain reaches past the state entry"),
])
def test_a_forged_key_chain_fails(rotated, edit, pattern):
    path, items = chain_file(rotated.pub, 2, name="_key")
    path.write_bytes(bundle(edit(rotated.datas, items)))
    fails(rotated.pub, rotated.vkey, pattern)


def test_a_key_entry_left_out_of_the_key_chain_fails_on_the_key_in_force(rotated, tmp_path):
    """The operator re-signs the state entry with keys 1 (by the key in force,
    k2) and publishes a key chain without the second rotation."""
    def one_key(seq, o):
        if seq == 9:
            o.update(keys=1, key_seq=3, key_hash=b64(leaf(rotated.datas[3])))
    forged = rewrite(rotated.datas, rotated.keys, tweak=one_key)
    pub = publish(tmp_path / "forged", forged, rotated.vkey, [rotated.keys[2]], hide={6})
    fails(pub, rotated.vkey, "seq 9: signed by a key that may not sign here")


def test_a_state_entry_whose_key_count_lies_fails(rotated, tmp_path):
    forged = rewrite(rotated.datas, rotated.keys, tweak=at(9, lambda o: o.update(keys=1)))
    pub = publish(tmp_path / "forged", forged, rotated.vkey, [rotated.keys[2]])
    fails(pub, rotated.vkey, "chain/_key/000.p/1 is missing")
    (pub / chain_path("_key", 0, 1)).write_bytes(bundle([rotated.datas[3]]))
    fails(pub, rotated.vkey, "seq 9: ")


def _key_forgery(rotated, name):
    evil = note.generate_signer("evil.example")
    k0 = rotated.keys[0].verifier().vkey()
    return [evil], {
        "a key brought back": (6, lambda o: o.update(vkey=k0), "seq 6: a key entry may not bring back a key already used"),
        "a key of another name": (6, lambda o: o.update(vkey=evil.verifier().vkey()), "seq 6: the new key is named 'evil.example'"),
        "a key entry's chain_seq": (6, lambda o: o.update(chain_seq=2), "seq 6: chain_seq is '2' but the rules give '3'"),
        "a state's key_hash": (9, lambda o: o.update(key_hash=ZERO), "seq 9: key_hash is"),
        "a state's key_seq": (9, lambda o: o.update(key_seq=3), "seq 9: key_seq is '3' but the rules give '6'"),
        "a state of format 3": (9, lambda o: o.update(format=3), "seq 9: format 3 is not a format this verifier knows"),
        "a state's chain_seq": (9, lambda o: o.update(chain_seq=10), "seq 9: a state entry's chain_seq is not an earlier"),
    }[name]


@pytest.mark.parametrize("name", ["a key brought back", "a key of another name", "a key entry's chain_seq",
                                  "a state's key_hash", "a state's key_seq", "a state of format 3", "a state's chain_seq"])
def test_a_forged_key_or_state_entry_re_signed_fails(rotated, tmp_path, name):
    extra, (seq, fn, pattern) = _key_forgery(rotated, name)
    forged = rewrite(rotated.datas, rotated.keys + extra, tweak=at(seq, fn))
    last = rotated.keys[0] if name == "a key brought back" else extra[0] if "another name" in name else rotated.keys[2]
    fails(publish(tmp_path / "forged", forged, rotated.vkey, [last]), rotated.vkey, pattern)


def test_a_checkpoint_not_ending_with_a_state_entry_fails(log2, tmp_path):
    pub = publish(tmp_path / "short", log2.datas[:8], log2.vkey, [log2.signer])
    fails(pub, log2.vkey, "seq 7: a checkpoint of a format-2 log must end with a state entry")


def test_a_bigger_checkpoint_without_its_tiles_fails(log2):
    cp = note.Checkpoint(ORIGIN, 10, hashlib.sha256(b"x").digest()).text()
    (log2.pub / "checkpoint").write_bytes(note.sign_note(cp, [log2.signer]))
    fails(log2.pub, log2.vkey, "is missing")


def test_a_hash_tile_or_the_last_entry_changed_fails(log2):
    tile = log2.pub / tile_path(0, 0, 9)
    good = tile.read_bytes()
    tile.write_bytes(good[:32 * 6] + bytes(32) + good[32 * 7:])
    fails(log2.pub, log2.vkey, "the tiles do not hash up to the root of the tree of size 9")
    tile.write_bytes(good)
    bundle_file = log2.pub / entries_path(0, 9)
    bundle_file.write_bytes(bundle(log2.datas[:8] + [log2.datas[5]]))
    fails(log2.pub, log2.vkey, "seq 8: the entry is not the one the checkpointed tree holds at its seq")


def test_witnesses_must_have_cosigned(log2):
    w = note.generate_signer("witness.example", note.ALG_COSIGNATURE_V1)
    fails(log2.pub, log2.vkey, "0 valid cosignatures of the named witnesses, 1 required",
          witnesses=[w.verifier().vkey()])
    cp = (log2.pub / "checkpoint").read_bytes()
    text, _ = note.split_note(cp)
    (log2.pub / "checkpoint").write_bytes(cp + note.cosign(text, w, 1_700_000_000))
    code, r = light(log2.pub, XBT, log2.vkey, witnesses=[w.verifier().vkey()])
    assert code == 0 and r.cosigned_by == ["witness.example"]


def test_another_logs_pinned_key_fails(log2):
    other = note.generate_signer(ORIGIN).verifier().vkey()
    fails(log2.pub, other, "the source publishes the vkey")


# --- hostile inputs --------------------------------------------------------------------------------

HOSTILE = ["checkpoint", "since", "funds", "vkey", "chain/XBTUSDTM/000.p/4", "tile/entries/000.p/9",
           "tile/0/000.p/9", "heads"]


@pytest.mark.parametrize("rel", HOSTILE)
@pytest.mark.parametrize("what", ["directory", "garbage", "empty"])
def test_hostile_files_fail_cleanly(log2, rel, what):
    path = log2.pub / rel
    if rel == "heads":
        path = _heads_tile(log2.pub)
    path.unlink()
    if what == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"" if what == "empty" else os.urandom(300) + b"\n\x00\xff" * 50)
    code, msg = light(log2.pub, XBT, log2.vkey)
    assert code in (1, 2) and msg, (code, msg)


@pytest.mark.parametrize("args, pattern", [
    (["--contract", "xbt"], "--contract is not valid"),
    (["--contract", "_key"], "--contract is not valid"),
    (["--contract", "../../etc"], "--contract is not valid"),
    (["--contract", "A" * 33], "--contract is not valid"),
    (["--contract", XBT, "--vkey", "not a key"], ""),
    (["--contract", XBT, "--trusted", "x"], "does not take --trusted"),
])
def test_bad_usage_is_exit_2(log2, args, pattern):
    p = run_fundledger("verify", log2.pub, *args, timeout=60)
    err = p.stderr.decode()
    assert p.returncode == 2 and pattern in err and "Traceback" not in err, err
    assert err.count("\n") == 1


def test_cli_exit_codes_and_one_line_errors(log2, tmp_path):
    ok = run_fundledger("verify", log2.pub, "--contract", XBT, "--vkey", log2.vkey, "--json", timeout=60)
    assert ok.returncode == 0 and json.loads(ok.stdout)["fund"]["balance"] == "0.25000000"
    forged = rewrite(log2.datas, [log2.signer], tweak=at(6, lambda o: o.update(balance="0.20000000")))
    pub = publish(tmp_path / "forged", forged, log2.vkey, [log2.signer])
    p = run_fundledger("verify", pub, "--contract", XBT, "--vkey", log2.vkey, "--json", timeout=60)
    assert p.returncode == 1 and json.loads(p.stdout) == {
        "ok": False, "seq": 6, "reason": "balance is '0.20000000' but the rules give '0.10000000'"}
    (pub / "since").unlink()
    (pub / "since").mkdir()
    for source, code in ((pub, 1), (tmp_path / "nowhere", 2), (log2.db, 2)):
        p = run_fundledger("verify", source, "--contract", XBT, "--vkey", log2.vkey, timeout=60)
        err = p.stderr.decode()
        assert p.returncode == code and err.startswith("fundledger: ") and err.count("\n") == 1, err
        assert "Traceback" not in err


def test_a_fifo_or_a_symlink_out_of_the_export_never_hangs(log2, tmp_path):
    since = log2.pub / "since"
    since.unlink()
    os.mkfifo(since)
    p = run_fundledger("verify", log2.pub, "--contract", XBT, "--vkey", log2.vkey, timeout=30)
    assert p.returncode == 1 and b"since is not a regular file" in p.stderr and b"Traceback" not in p.stderr
    since.unlink()
    (tmp_path / "outside").write_bytes(b"0\n")
    since.symlink_to(tmp_path / "outside")
    fails(log2.pub, log2.vkey, "escapes the export directory", code=2)


# --- TRUST MODEL: what the light check cannot catch (docs/FORMAT.md, "What it does not prove") ------

def test_trust_model_a_liquidation_left_out_of_its_chain_passes_light_fails_full(log2, tmp_path):
    """TRUST MODEL. The operator keeps L-2 (a payout of 0.1) in the log but
    out of XBT's chain: L-3 names L-1, and the head, signed in the state
    entry, skips L-2. Every file is consistent with the signed checkpoint."""
    forged = rewrite(log2.datas, [log2.signer], hide={6})
    assert entry_obj(forged[6])["id"] == "L-2" and entry_obj(forged[7])["chain_seq"] == 3
    pub = publish(tmp_path / "forged", forged, log2.vkey, [log2.signer], hide={6})
    code, r = light(pub, XBT, log2.vkey)
    assert code == 0 and r.fund["balance"] == "0.35000000" and r.entries_checked == 3  # the honest one: 0.25
    full = lib_verify(pub)
    assert full["ok"] is False and full["seq"] == 7, full  # L-3: its balance and chain_seq skip L-2
    assert "balance is '0.35000000' but the rules give '0.25000000'" in full["reason"]


def test_trust_model_a_retired_key_holder_leaves_a_rotation_out(rotated, tmp_path):
    """TRUST MODEL. The holder of the retired key k1 publishes a log in which
    the hand-over to k2 (seq 6) is in the tree but out of the key chain, and
    signs everything after it, the state entry and the checkpoint with k1.
    The light check follows the keys the signed state entry counts; only the
    full verifier (or a reader who knows k2) sees the hand-over."""
    forged = rewrite(rotated.datas, rotated.keys, hide={6})
    assert forged[6] == rotated.datas[6] and entry_obj(forged[9])["keys"] == 1
    pub = publish(tmp_path / "forged", forged, rotated.vkey, [rotated.keys[1]], hide={6})
    for symbol in (XBT, ETH):
        code, r = light(pub, symbol, rotated.vkey)
        assert code == 0 and [s for s, _ in r.keys] == [0, 4]
    full = lib_verify(pub)
    assert full["ok"] is False and full["seq"] == 7


def test_trust_model_a_wrong_prev_is_not_read_by_the_light_check(log2, tmp_path):
    """TRUST MODEL. The light check authenticates each entry at its seq and
    compares it with the `prev` it carries: it never reads the prev chain."""
    forged = rewrite(log2.datas, [log2.signer], tweak=at(6, lambda o: o.update(prev=ZERO)))
    pub = publish(tmp_path / "forged", forged, log2.vkey, [log2.signer])
    assert light(pub, XBT, log2.vkey)[0] == 0
    full = lib_verify(pub)
    assert full["ok"] is False and full["seq"] == 6 and "prev" in full["reason"]


def test_trust_model_a_fund_is_checked_alone(log2, tmp_path):
    """TRUST MODEL. A forged ETH entry is no concern of XBT's light check."""
    forged = rewrite(log2.datas, [log2.signer], tweak=at(4, lambda o: o.update(balance="7.000000")))
    pub = publish(tmp_path / "forged", forged, log2.vkey, [log2.signer])
    assert light(pub, XBT, log2.vkey)[0] == 0
    fails(pub, log2.vkey, "seq 4: balance is '7.000000'", symbol=ETH)
    assert lib_verify(pub)["seq"] == 4
