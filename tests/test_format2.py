"""Format 2 written by the ledger (docs/FORMAT.md, "Format 2"): a new log
that starts with a state entry, a format-1 log upgraded, imports, key
rotations and checkpoints, each checked entry by entry against the spec
with hashlib alone, and verified (accelerator and reference alike)."""

from __future__ import annotations

import base64
import hashlib
import io
import json

import pytest

from tamper_util import entry_obj, leaf, lib_verify, mth

from ledger.errors import StoreError
from ledger.ops import api
from ledger.verify.run import verify_path

EMPTY = base64.b64encode(hashlib.sha256(b"").digest()).decode()
LIQ = {"kind": "liquidation", "contract": "XBTUSDTM", "side": "long", "qty": "2",
       "bankruptcy_price": "39000", "fill_price": "38900"}
CONTRACT = {"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8, "multiplier": "0.001"}


def entries(store) -> list[bytes]:
    return [d for _, d in store.iter_entries(0, store.size())]


def b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def heads_root_of(datas: list[bytes], below: int) -> tuple[int, str]:
    """The spec's heads root at a state entry of seq ``below``, from the
    entries alone: (number of funds, base64 root)."""
    heads: dict[str, dict] = {}
    for seq, d in enumerate(datas[:below]):
        o = entry_obj(d)
        if o["kind"] == "contract":
            heads[o["contract"]] = {"balance": "0" if o["scale"] == 0 else "0." + "0" * o["scale"],
                                    "contract": o["contract"], "entries": 0}
        if o["kind"] in ("contract", "liquidation"):
            h = heads[o["contract"]]
            h["entries"] += 1
            h["seq"], h["hash"] = seq, b64(leaf(d))
            if o["kind"] == "liquidation":
                h["balance"] = o["balance"]
    lines = [json.dumps(h, sort_keys=True, separators=(",", ":")).encode() + b"\n" for h in heads.values()]
    return len(lines), b64(mth([leaf(line) for line in lines]) if lines else hashlib.sha256(b"").digest())


def check_spec(datas: list[bytes]) -> None:
    """Every format-2 rule the writer must follow, checked from the bytes."""
    last: dict[str, int] = {}
    first_state = next(i for i, d in enumerate(datas) if entry_obj(d)["kind"] == "state")
    for seq, d in enumerate(datas):
        o = entry_obj(d)
        chain = {"contract": o["contract"], "liquidation": o["contract"], "key": "_key", "state": "_state"}[o["kind"]]
        pred = last.get(chain)
        if seq > first_state and o["kind"] != "contract" and pred is not None:
            assert (o["chain_seq"], o["chain_prev"]) == (pred, b64(leaf(datas[pred]))), seq
        else:
            assert "chain_seq" not in o and "chain_prev" not in o, seq
        if o["kind"] == "state":
            assert entry_obj(datas[seq - 1])["kind"] != "state" if seq else True
            assert (o["funds"], o["heads"]) == heads_root_of(datas, seq)
            keys = [i for i in range(seq) if entry_obj(datas[i])["kind"] == "key"]
            assert o["keys"] == len(keys)
            if keys:
                assert (o["key_seq"], o["key_hash"]) == (keys[-1], b64(leaf(datas[keys[-1]])))
            else:
                assert "key_seq" not in o and "key_hash" not in o
        last[chain] = seq


def test_a_new_format_2_log_starts_with_a_state_entry(ledger2):
    (d,) = entries(ledger2.store)
    o = entry_obj(d)
    assert {k: o[k] for k in ("kind", "contract", "format", "funds", "heads", "keys")} == {
        "kind": "state", "contract": "", "format": 2, "funds": 0, "heads": EMPTY, "keys": 0}
    assert "chain_seq" not in o


def test_liquidations_name_their_predecessor_and_checkpoints_end_with_a_state(ledger2):
    ledger2.append(CONTRACT)
    ledger2.append(dict(LIQ, id="L-1"), dict(LIQ, id="L-2", fill_price="39100"))
    size, _, created = ledger2.checkpoint()
    assert created and size == 5
    again = ledger2.checkpoint()
    assert again[:1] == (5,) and not again[2] and ledger2.store.size() == 5  # an idle log does not grow
    ledger2.append(dict(LIQ, id="L-3", qty="1000"))  # a shortfall beyond the balance: ADL
    ledger2.checkpoint()
    datas = entries(ledger2.store)
    assert [entry_obj(d)["kind"] for d in datas] == [
        "state", "contract", "liquidation", "liquidation", "state", "liquidation", "state"]
    check_spec(datas)
    assert entry_obj(datas[2])["chain_seq"] == 1 and entry_obj(datas[5])["chain_seq"] == 3
    assert entry_obj(datas[6])["chain_seq"] == 4
    ledger2.store.close()
    result = lib_verify(ledger2.db)
    assert result["ok"] and result["size"] == 7


def test_a_format_1_log_upgrades_and_keeps_its_history(ledger):
    ledger.contract("XBTUSDTM", multiplier="0.001")
    ledger.contract("ETHUSDTM", scale=6)
    ledger.liquidation(id="A", fill_price="39100")
    ledger.checkpoint()
    seq = api.upgrade(ledger.store, ledger.signer)
    assert seq == 3
    ledger.liquidation(id="B", fill_price="38000")
    ledger.append({**LIQ, "contract": "ETHUSDTM", "id": "C"})
    ledger.checkpoint()
    datas = entries(ledger.store)
    check_spec(datas)
    assert entry_obj(datas[3])["funds"] == 2 and entry_obj(datas[4])["chain_seq"] == 2  # a format-1 predecessor
    assert entry_obj(datas[5])["chain_seq"] == 1
    with pytest.raises(StoreError, match="format 2 already"):
        api.upgrade(ledger.store, ledger.signer)
    ledger.store.close()
    result = lib_verify(ledger.db)
    assert result["ok"] and result["size"] == 7
    assert {c["contract"]: c["balance"] for c in result["contracts"]} == {
        "XBTUSDTM": "0.00000000", "ETHUSDTM": "0.000000"}


def test_import_into_a_format_2_log_is_all_or_nothing(ledger2):
    lines = [json.dumps(CONTRACT)] + [json.dumps(dict(LIQ, id=f"L-{i}", fill_price=str(38900 + 50 * (i % 5))))
                                      for i in range(300)]
    bad = io.BytesIO(("\n".join(lines[:100] + ['{"kind":"liquidation","contract":"NOPE"}']) + "\n").encode())
    with pytest.raises(Exception, match="line 101"):
        api.import_records(ledger2.store, ledger2.signer, bad)
    assert ledger2.store.size() == 1
    r = api.import_records(ledger2.store, ledger2.signer, io.BytesIO(("\n".join(lines) + "\n").encode()))
    assert r.tree_size == 302
    ledger2.checkpoint()
    check_spec(entries(ledger2.store))
    ledger2.store.close()
    assert lib_verify(ledger2.db)["ok"]


def test_key_entries_form_a_chain_the_state_names(ledger2):
    ledger2.append(CONTRACT)
    _, k1 = api.rotate_key(ledger2.store, ledger2.signer, str(ledger2.dir / "k1.key"))
    ledger2.store.append([dict(LIQ, id="L-1")], [k1])
    _, k2 = api.rotate_key(ledger2.store, k1, str(ledger2.dir / "k2.key"))
    ledger2.store.add_checkpoint([k2])
    datas = entries(ledger2.store)
    check_spec(datas)
    assert entry_obj(datas[-1])["keys"] == 2 and entry_obj(datas[4])["chain_seq"] == 2
    ledger2.store.close()
    assert lib_verify(ledger2.db)["ok"]


def test_resumed_verification_across_state_entries(ledger2, tmp_path):
    state = str(tmp_path / "v.state")
    ledger2.append(CONTRACT, dict(LIQ, id="L-1"))
    ledger2.checkpoint()
    assert verify_path(ledger2.db, state_path=state).as_json()["ok"]
    ledger2.append(dict(LIQ, id="L-2", fill_price="39100"))
    ledger2.checkpoint()
    again = verify_path(ledger2.db, state_path=state).as_json()
    assert again["ok"] and again["size"] == 6
    assert again.pop("entries_checked") == 2  # the L-2 liquidation and its state entry
    full = verify_path(ledger2.db).as_json()
    assert full.pop("entries_checked") == 6 and again == full
