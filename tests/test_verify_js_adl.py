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

from adl_util import Sim, b64, leaf_hash, scenario, write_log

NODE = shutil.which("node") or shutil.which("nodejs")
if NODE is None:
    pytest.skip("node is not installed (apt-get install nodejs)", allow_module_level=True)
JS = os.path.join(os.path.dirname(__file__), "js")


def replay(cases: list[dict]) -> list[dict]:
    r = subprocess.run([NODE, os.path.join(JS, "book_replay.js")], input=json.dumps(cases),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


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
    "a commitment not of 32 bytes": ("L1", 1, lambda o, _: position(o, 0, 0, "AAAA"),
                                     "position 0: the commitment is not the base64 of 32 bytes: AAAA"),
    "a size not canonical": ("L1", 1, lambda o, _: position(o, 0, 1, "4.0"),
                             "position 0: size is not a canonical positive decimal: 4.0"),
    "a leverage of zero": ("L1", 1, lambda o, _: position(o, 0, 4, "0"), "position 0: leverage is not a canonical positive decimal: 0"),
    "a queue proof hash not of 32 bytes": ("L2", 1, lambda o, _: o.update(queue_proof=o["queue_proof"] + " AAAA"),
                                           "a queue_proof hash is not the base64 of 32 bytes: AAAA"),
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


# --- the same breaks in a signed log: the browser's rules and the Python verifier agree -----------

@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    return write_log(tmp_path_factory.mktemp("adl-signed"), "example.com/adl-rules", scenario())


def forge_from(db: str, dst, signer, seq: int, change) -> list[tuple[int, bytes]]:
    """A copy of ``db`` with entry ``seq`` changed and every later entry's
    ``prev`` and chain link made again, all re-signed by the log key, and a
    checkpoint: the lie of an operator. Returns (path, [(seq, bytes)])."""
    import tamper_util as tu

    from ledger.tlog import merkle

    path = tu.copy_ledger(db, dst)
    conn = tu.open_rw(path)
    datas = [bytes(d) for (d,) in conn.execute("SELECT data FROM entries ORDER BY seq")]
    objs = [tu.entry_obj(d) for d in datas]
    change(objs[seq], objs)
    for i in range(seq, len(objs)):
        o = objs[i]
        if i > seq:
            o["prev"] = b64(merkle.leaf_hash(datas[i - 1]))
            if "chain_seq" in o:
                o["chain_prev"] = b64(merkle.leaf_hash(datas[o["chain_seq"]]))
        datas[i] = tu.sign(tu.canonical(o), signer)
        conn.execute("UPDATE entries SET data = ? WHERE seq = ?", (datas[i], i))
    tu.resync(conn)
    tu.sign_checkpoint(conn, signer, "example.com/adl-rules")
    conn.close()
    return path, datas


def liquidation_of_old(o: dict, objs: list[dict]) -> None:
    """Entry ``o`` (an adl entry) made a liquidation of another fund."""
    old = next(x for x in objs if x.get("id") == "O1")
    keep = {k: o[k] for k in ("seq", "prev", "time")}
    o.clear()
    o.update(old, id="O2", **keep)


SIGNED = dict(BROKEN, **{"another fund's liquidation in between": ("L1", 1, liquidation_of_old, None)})
IN_PLACE = sorted(n for n in SIGNED if n not in ("an entry in between", "an adl entry with no event"))


@pytest.mark.parametrize("name", IN_PLACE)
def test_the_browser_rules_and_the_python_verifier_agree(signed, tmp_path, name):
    """Each break of BROKEN, made in a signed log: the Python verifier and
    verify.js's rules fail at the same seq, for the same reason (the
    Python one quotes values, the browser's does not)."""
    import tamper_util as tu

    from ledger.tlog import merkle

    db, signer, written = signed
    lid, offset, change, _ = SIGNED[name]
    seq = next(i for i, o in enumerate(written) if o.get("id") == lid) + offset
    path, datas = forge_from(db, tmp_path / "forged.db", signer, seq, change)
    python = tu.lib_verify(path)
    entries = [{"seq": i, "obj": tu.entry_obj(d), "leaf": b64(merkle.leaf_hash(d))} for i, d in enumerate(datas)]
    (js,) = replay([{"name": name, "since": 0, "entries": entries}])
    assert not js["ok"] and python["ok"] is False, (js, python)
    unquoted = lambda m: m.replace("'", "")  # noqa: E731
    assert (js["seq"], unquoted(js["error"])) == (python["seq"], unquoted(python["reason"])), (js, python)


def random_events(seed: int, events: int) -> Sim:
    """Lot contracts (linear and inverse, whole and fractional lots) whose
    funds grow by surpluses and meet shortfalls, each ADL event's queue
    random (tied scores included), its positions split over adl entries at
    random."""
    import random
    from fractions import Fraction

    from adl_util import dec_str, queue

    rnd = random.Random(seed)
    s = Sim()
    specs = [("LIN1", "linear", "0.001", "1"), ("LIN2", "linear", "0.01", "0.25"), ("INV1", "inverse", "1", "5"),
             ("INV2", "inverse", "100", "0.001")]
    for sym, ctype, mult, lot in specs:
        s.contract(sym, 8, ctype, mult, lot, currency="USDT" if ctype == "linear" else "XBT")
    for i in range(events):
        sym, ctype, mult, lot = rnd.choice(specs)
        lot_f = Fraction(lot)
        lots = rnd.randint(1, 40)
        qty = dec_str(lots * lot_f)
        b = str(rnd.randint(20000, 60000))
        side = rnd.choice(["long", "short"])
        if rnd.random() < 0.4:  # a surplus
            f = str(int(b) + rnd.randint(1, 3000) * (1 if side == "long" else -1))
            s.liquidation(sym, f"S{i}", side, dec_str(lot_f * rnd.randint(1, 400)), b, f)
            continue
        f = dec_str(Fraction(int(b)) + Fraction(rnd.randint(1, 900000), 100) * (-1 if side == "long" else 1))
        ranks, total = [], 0
        while total < lots or rnd.random() < 0.5:
            size = rnd.randint(1, max(1, lots // 3))
            pnl = dec_str(Fraction(rnd.choice([1, 5, 25, rnd.randint(1, 999)]), 100))
            lev = dec_str(Fraction(rnd.choice([10, rnd.randint(1, 250)]), 10))
            ranks.append((dec_str(size * lot_f), pnl, lev))
            total += size
        cut = rnd.random()
        s.liquidation(sym, f"A{i}", side, qty, b, f, queue=queue(sym, f"A{i}", ranks),
                      split=lambda k: [k] if k < 2 or cut < 0.5 else [max(1, int(k * cut) - 1), k - max(1, int(k * cut) - 1)])
    return s


@pytest.mark.parametrize("seed", [1, 2, 7])
def test_random_events_agree_three_ways(tmp_path, seed):
    """The independent reading (adl_util), the Python writer (which checks
    and computes every field on import) and verify.js's rules, on random
    ADL events: the same fields, and the browser's rules pass the signed
    log and reach the same balances."""
    import tamper_util as tu

    from ledger.tlog import merkle

    sim = random_events(seed, 60)
    assert sum(e["obj"]["kind"] == "adl" for e in sim.entries) >= 10
    db, _, written = write_log(tmp_path, f"example.com/adl-random-{seed}", sim)
    from ledger.store.schema import Reader

    store = Reader.open(db)
    datas = [d for _, d in store.iter_entries(0, store.size())]
    store.close()
    entries = [{"seq": i, "obj": tu.entry_obj(d), "leaf": b64(merkle.leaf_hash(d))} for i, d in enumerate(datas)]
    (js,) = replay([{"name": "random", "since": 0, "entries": entries}])
    assert js["ok"], js
    for sym, f in js["funds"].items():
        last = max(i for i, o in enumerate(written) if o["contract"] == sym)
        assert f["seq"] == last
        balances = [o["balance"] for o in written if o["contract"] == sym and "balance" in o]
        assert f["balance"] == (balances[-1] if balances else "0.00000000")
