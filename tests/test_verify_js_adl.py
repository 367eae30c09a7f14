"""The ADL allocation rule of lot contracts (docs/FORMAT.md,
"Auto-deleveraging") in the browser verifier's own code
(publish/static/verify.js, its Book) run under node: entries written by an
independent reading of the rule (tests/adl_util.py) pass, and each way of
breaking it fails at its seq with a message naming the problem. The same
code runs in the browser (tests/test_browser_adl.py)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess

import pytest

from adl_util import Position, Sim, account_commitment, b64, leaf_hash, position_commitment

NODE = shutil.which("node") or shutil.which("nodejs")
if NODE is None:
    pytest.skip("node is not installed (apt-get install nodejs)", allow_module_level=True)
JS = os.path.join(os.path.dirname(__file__), "js")


def queue(contract: str, lid: str, specs: list[tuple[str, str, str]]) -> list[Position]:
    return [Position(position_commitment(account_commitment(f"acct-{i}", f"salt-{i}"), contract, lid), *spec)
            for i, spec in enumerate(specs)]


def replay(cases: list[dict]) -> list[dict]:
    r = subprocess.run([NODE, os.path.join(JS, "book_replay.js")], input=json.dumps(cases),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def scenario() -> Sim:
    """A lot contract with three ADL events (one over two adl entries, one
    with next and a queue proof, one closing its whole queue), a fractional
    lot on an inverse contract, and a contract without a lot."""
    s = Sim()
    s.contract("XBTLOT", 8, "linear", "0.001", "1")
    s.contract("XBTINV", 8, "inverse", "1", "0.5", currency="XBT")
    s.contract("OLD", 8, "linear", "0.001", None)
    s.liquidation("XBTLOT", "S1", "long", "40", "39000", "39500")  # +20
    s.liquidation("OLD", "O1", "long", "10", "39000", "30000")  # shortfall 90, balance 0: adl 90, no allocation
    s.liquidation("XBTLOT", "L1", "long", "10", "39000", "30000", split=[1, 2],
                  queue=queue("XBTLOT", "L1", [("3", "0.5", "10"), ("4", "0.25", "20"), ("5", "0.1", "3"), ("2", "0.01", "2")]))
    s.liquidation("XBTLOT", "S2", "short", "100", "39000", "38000")  # +100
    s.liquidation("XBTLOT", "L2", "short", "30", "39000", "44000",  # 5 a lot: 20 lots covered, adl 10
                  queue=queue("XBTLOT", "L2", [(str(2 + i % 4), f"0.{i + 1}", str(1 + i % 3)) for i in range(11)]))
    s.liquidation("XBTLOT", "L3", "long", "7", "39000", "29000",  # balance 2.x, 10 a lot: all 7 by ADL
                  queue=queue("XBTLOT", "L3", [("4", "1", "2"), ("3", "1.5", "1")]))
    s.liquidation("XBTINV", "I0", "long", "100000", "39000", "39001")
    s.liquidation("XBTINV", "I1", "long", "25", "39000", "30000",  # 17 lots of 0.5 covered: adl_qty 16.5
                  queue=queue("XBTINV", "I1", [("10", "0.3", "2"), ("5.5", "0.2", "2"), ("3", "0.1", "1"), ("1", "0.1", "0.5")]))
    s.liquidation("XBTLOT", "S3", "long", "1", "39000", "39001")
    return s


def by_id(s: Sim, lid: str) -> int:
    return next(i for i, e in enumerate(s.entries) if e["obj"].get("id") == lid)


def test_genuine_events_pass_full_and_chain_alone():
    s = scenario()
    kinds = [e["obj"]["kind"] for e in s.entries]
    assert kinds.count("adl") == 5, kinds
    l2 = s.entries[by_id(s, "L2") + 1]["obj"]
    assert "next" in l2 and "queue_proof" in l2
    l3 = s.entries[by_id(s, "L3") + 1]["obj"]
    assert "next" not in l3 and "queue_proof" not in l3
    lot_chain = [e for e in s.entries if e["obj"]["contract"] == "XBTLOT"]
    full, alone = replay([{"name": "full", "since": 0, "entries": s.entries},
                          {"name": "chain", "since": 0, "entries": lot_chain}])
    assert full["ok"] and alone["ok"], (full, alone)
    assert full["funds"]["XBTLOT"] == alone["funds"]["XBTLOT"]
    assert full["funds"]["XBTLOT"]["entries"] == len(lot_chain)
    assert full["funds"]["OLD"]["balance"] == "0.00000000"


def mutate(s: Sim, index: int, change) -> list[dict]:
    """The entries with entry ``index`` changed, and every chain link after
    it made again (as an operator re-signing them would)."""
    entries = copy.deepcopy(s.entries)
    change(entries[index]["obj"], entries)
    at = {}
    for e in entries:
        o = e["obj"]
        if "chain_seq" in o and o["chain_seq"] in at:
            o["chain_prev"] = b64(leaf_hash(s.text(at[o["chain_seq"]])))
        at[o["seq"]] = o
    return entries


def position(obj: dict, rank: int, value: int, new: str) -> None:
    ps = [p.split(" ") for p in obj["positions"].split(",")]
    ps[rank][value] = new
    obj["positions"] = ",".join(" ".join(p) for p in ps)


def swap_positions(obj: dict) -> None:
    ps = obj["positions"].split(",")
    obj["positions"] = ",".join([ps[1], ps[0]] + ps[2:])


BROKEN = {
    "a score that is not the product": ("L1", 1, lambda o, _: position(o, 0, 5, "6"), "position 0: score 6 is not pnl_ratio * leverage = 5"),
    "a qty above the size": ("L1", 1, lambda o, _: position(o, 0, 2, "5"), "position 0 closes 5, more than the 4 it held"),
    "a qty short of adl_qty": ("L1", 2, lambda o, _: position(o, 0, 2, "2"), "position 1 is closed for 2 of 3, yet the allocation goes on"),
    "more than adl_qty": ("L1", 2, lambda o, _: position(o, 1, 2, "2"), "the positions add up to more than adl_qty at position 2"),
    "ranks out of order": ("L2", 1, lambda o, _: swap_positions(o), "position 1 (score 2.7) ranks above position 0 (score 1.8): out of queue order"),
    "a commitment twice": ("L2", 1, lambda o, _: position(o, 1, 0, o["positions"].split(" ")[0]), "position 1: its commitment appears twice in the event"),
    "more ADL than the minimum": ("L1", 0, lambda o, _: o.update(adl_qty="9"), "adl_qty 9 is more than the minimum 8 the balance requires"),
    "less ADL than the minimum": ("L2", 0, lambda o, _: o.update(adl_qty="9"), "adl_qty 9 is less than the 10 the balance requires"),
    "no ADL fields": ("L1", 0, lambda o, _: [o.pop(k) for k in ("adl_qty", "queue_root", "queue_size")],
                      "the fund holds 20.00000000 and the shortfall is 90.00000000: ADL of 8 is needed"),
    "ADL when the fund could pay": ("S2", 0, lambda o, _: o.update(adl_qty="1", queue_root=o["chain_prev"], queue_size=1),
                                    "ADL when the fund could still pay: it holds 2.00000000 and the shortfall is 0.00000000"),
    "a wrong delta": ("L1", 0, lambda o, _: o.update(delta="-90.00000000"), "delta is -90.00000000 but the rules give -18.00000000"),
    "a qty off the lot": ("I1", 0, lambda o, _: o.update(qty="25.2"), "qty 25.2 is not a multiple of the lot size 0.5"),
    "a size off the lot": ("I1", 1, lambda o, _: position(o, 0, 1, "10.2"), "position 0: size 10.2 is not a multiple of the lot size 0.5"),
    "no next": ("L2", 1, lambda o, _: o.pop("next"), "the queue has 11 positions and 3 are closed: next must give the first one spared"),
    "next on a queue closed whole": ("L3", 1, lambda o, _: o.update(next=o["positions"].split(",")[0]), "next after the whole queue is closed"),
    "next on an event's first entry": ("L1", 1, lambda o, _: o.update(next="x"), "next and queue_proof belong on the event's last"),
    "a next ranked above": ("L2", 1, lambda o, _: o.update(next=o["next"].replace(o["next"].split(" ")[-1], "9")), "next: score 9 is not pnl_ratio * leverage"),
    "no queue proof": ("L2", 1, lambda o, _: o.pop("queue_proof"), "queue_proof is needed: 4 of the queue's 11 positions are shown"),
    "a wrong queue proof": ("L2", 1, lambda o, _: o.update(queue_proof=" ".join([o["chain_prev"]] + o["queue_proof"].split(" ")[1:])),
                            "queue_proof does not show the 4 positions shown to be the top of the queue of queue_root"),
    "a wrong queue root": ("L1", 0, lambda o, _: o.update(queue_root=o["chain_prev"]), "the positions shown are the whole queue, and their root is not queue_root"),
    "a wrong queue size": ("L3", 0, lambda o, _: o.update(queue_size=3), "the queue has 3 positions and 2 are closed: next must give"),
    "another event": ("L1", 1, lambda o, _: o.update(event=o["event"] - 1), "event is"),
    "the same side": ("L1", 1, lambda o, _: o.update(side="long"), "side is long but the rules give short"),
    "another price": ("L1", 1, lambda o, _: o.update(price="39001"), "price is 39001 but the rules give 39000"),
    "an entry in between": ("L1", 1, lambda o, es: es.insert(es.index(next(e for e in es if e["obj"] is o)), es.pop()),
                            "liquidation L1 of XBTLOT (seq 6) awaits its ADL allocation: the next record must be its adl record"),
    "an adl entry with no event": ("S3", 0, lambda o, es: es[-1].update(obj=dict(copy.deepcopy(es[by_id_in(es, "L3") + 1]["obj"]), seq=o["seq"])),
                                   "an adl record must follow the ADL liquidation it allocates, or its previous adl record"),
}


def by_id_in(entries: list[dict], lid: str) -> int:
    return next(i for i, e in enumerate(entries) if e["obj"].get("id") == lid)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_rule_fails_at_its_seq(name):
    lid, offset, change, message = BROKEN[name]
    s = scenario()
    i = by_id(s, lid) + offset
    entries = mutate(s, i, change)
    (r,) = replay([{"name": name, "since": 0, "entries": entries}])
    assert not r["ok"], r
    assert message in r["error"], r["error"]


def test_lot_in_format_1_and_adl_on_a_contract_without_lot():
    s = Sim()
    s.contract("XBTLOT", 8, "linear", "0.001", "1")
    (r,) = replay([{"name": "f1", "since": 5, "entries": s.entries}])
    assert not r["ok"] and r["error"].startswith("unexpected field 'lot'"), r
    s = scenario()
    old = by_id(s, "O1")
    adl = copy.deepcopy(s.entries[by_id(s, "L1") + 1]["obj"])
    entries = s.entries[:old + 1] + [{"seq": s.entries[old]["seq"] + 1, "obj": dict(adl, contract="OLD")}]
    (r,) = replay([{"name": "old", "since": 0, "entries": entries}])
    assert not r["ok"] and "must follow the ADL liquidation it allocates" in r["error"], r


def test_a_chain_with_a_gap_inside_an_event_fails():
    """The light check sees one fund's chain: an adl entry not at the seq
    right after its event's previous entry shows another entry between."""
    s = scenario()
    chain = [copy.deepcopy(e) for e in s.entries if e["obj"]["contract"] == "XBTLOT"]
    i = next(k for k, e in enumerate(chain) if e["obj"].get("id") == "L1") + 2
    for e in chain[i:]:
        e["seq"] += 1
        e["obj"]["seq"] += 1
    (r,) = replay([{"name": "gap", "since": 0, "entries": chain}])
    assert not r["ok"] and r["error"] == "an ADL liquidation of XBTLOT is not followed at once by its allocation", r


def test_the_queue_proof_check_agrees_with_transparency_dev_vectors():
    r = subprocess.run([NODE, os.path.join(JS, "consistency_vectors.js")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("ok "), (r.stdout, r.stderr)
