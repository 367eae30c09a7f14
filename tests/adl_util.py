"""An independent reading of docs/FORMAT.md, "Auto-deleveraging", for the
tests of the browser verifier: the commitments, the ranked queue, its root
and consistency proofs, and the fields of a lot contract's liquidations and
adl entries, with fractions (no code of the ledger's rules). ``Sim`` writes
entry objects (unsigned) as a format-2 log would hold them."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from fractions import Fraction


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def dec_str(x: Fraction) -> str:
    """The canonical spelling of a finite decimal."""
    sign = "-" if x < 0 else ""
    x = abs(x)
    digits = 0
    while (x * 10**digits).denominator != 1:
        digits += 1
        assert digits <= 60, x
    units = int(x * 10**digits)
    if not digits:
        return f"{sign}{units}"
    whole, frac = divmod(units, 10**digits)
    return f"{sign}{whole}.{str(frac).rjust(digits, '0').rstrip('0')}"


def amount(units: int, scale: int) -> str:
    sign, units = ("-", -units) if units < 0 else ("", units)
    if not scale:
        return f"{sign}{units}"
    return f"{sign}{units // 10**scale}.{str(units % 10**scale).rjust(scale, '0')}"


def account_commitment(account: str, salt: str) -> bytes:
    return hashlib.sha256(b"fundledger-adl-account/v1\n" + account.encode() + b"\n" + salt.encode()).digest()


def position_commitment(account_c: bytes, contract: str, liquidation_id: str) -> bytes:
    return hashlib.sha256(b"fundledger-adl-position/v1\n" + account_c + contract.encode() + b"\n" + liquidation_id.encode()).digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while 2 * k < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def consistency_proof(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 2.1.4.1: PROOF(m, D[n])."""
    def sub(m: int, d: list[bytes], whole: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if whole else [mth(d)]
        k = 1
        while 2 * k < n:
            k *= 2
        if m <= k:
            return sub(m, d[:k], whole) + [mth(d[k:])]
        return sub(m - k, d[k:], False) + [mth(d[:k])]
    return sub(m, leaves, True)


class Position:
    def __init__(self, commitment: bytes, size: str, pnl_ratio: str, leverage: str):
        self.commitment, self.size, self.pnl_ratio, self.leverage = commitment, size, pnl_ratio, leverage
        self.score = dec_str(Fraction(pnl_ratio) * Fraction(leverage))

    def leaf(self) -> str:
        return f"{b64(self.commitment)} {self.size} {self.pnl_ratio} {self.leverage} {self.score}"

    def closed(self, qty: str) -> str:
        return f"{b64(self.commitment)} {self.size} {qty} {self.pnl_ratio} {self.leverage} {self.score}"


def ranked(positions: list[Position]) -> list[Position]:
    return sorted(positions, key=lambda p: (-Fraction(p.score), p.commitment))


def movement(ctype: str, side: str, qty: Fraction, mult: Fraction, b: Fraction, f: Fraction) -> Fraction:
    d = qty * mult * ((f - b) if ctype == "linear" else (1 / b - 1 / f))
    return d if side == "long" else -d


class Sim:
    """Entry objects of a format-2 log whose first state entry is at seq 0."""

    ZERO = b64(bytes(32))

    def __init__(self):
        self.seq = 1  # seq 0: the first state entry, not written here
        self.entries: list[dict] = []
        self.funds: dict[str, dict] = {}
        self.time = "2026-12-04T12:00:00Z"

    def add(self, obj: dict) -> dict:
        obj = dict(obj, seq=self.seq, prev=self.ZERO, time=self.time)
        fund = self.funds.get(obj["contract"])
        if fund is not None and obj["kind"] != "contract":
            obj["chain_seq"], obj["chain_prev"] = fund["seq"], fund["leaf"]
        self.entries.append({"seq": self.seq, "obj": obj})
        self.seq += 1
        return obj

    def text(self, obj: dict) -> bytes:
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"

    def moved(self, obj: dict) -> None:
        f = self.funds[obj["contract"]]
        f["seq"], f["leaf"] = obj["seq"], b64(leaf_hash(self.text(obj)))

    def contract(self, symbol: str, scale: int, ctype: str, mult: str, lot: str | None, currency: str = "USDT") -> dict:
        rec = {"kind": "contract", "contract": symbol, "currency": currency, "scale": scale, "type": ctype, "multiplier": mult}
        if lot is not None:
            rec["lot"] = lot
        obj = self.add(rec)
        self.funds[symbol] = {"scale": scale, "type": ctype, "mult": Fraction(mult), "lot": lot and Fraction(lot),
                              "balance": 0, "seq": obj["seq"], "leaf": b64(leaf_hash(self.text(obj)))}
        return obj

    def liquidation(self, symbol: str, lid: str, side: str, qty: str, b: str, f: str,
                    queue: list[Position] | None = None, split: list[int] | None = None, **extra) -> list[dict]:
        """The liquidation and, when the fund cannot pay a lot contract's
        shortfall, its adl entries (closed from the top of ``queue``, ranked
        here; ``split``: the positions of each adl entry, or a function of
        the number of positions closed that gives them)."""
        fund = self.funds[symbol]
        scale = fund["scale"]
        mv = lambda q: movement(fund["type"], side, q, fund["mult"], Fraction(b), Fraction(f))
        delta = math.floor(mv(Fraction(qty)) * 10**scale)
        B = fund["balance"]
        rec = {"kind": "liquidation", "contract": symbol, "id": lid, "side": side, "qty": qty,
               "bankruptcy_price": b, "fill_price": f, **extra}
        adl_lots = 0
        if fund["lot"] is not None and delta < 0 and -delta > B:
            lot = fund["lot"]
            n = Fraction(qty) / lot
            assert n.denominator == 1
            s1 = -mv(lot) * 10**scale
            k = min(int(n), math.floor(B / s1))
            d_m = math.floor(mv(k * lot) * 10**scale)
            paid = -d_m
            adl_lots = int(n) - k
            adl_qty = adl_lots * lot
            q = ranked(queue)
            closed, left = [], adl_qty
            for p in q:
                if left <= 0:
                    break
                take = min(Fraction(p.size), left)
                closed.append((p, dec_str(take)))
                left -= take
            assert left == 0, "the queue holds too little"
            shown = q[:len(closed) + 1]
            leaves = [leaf_hash(p.leaf().encode()) for p in q]
            rec.update(adl_qty=dec_str(adl_qty), queue_root=b64(mth(leaves)), queue_size=len(q),
                       delta=amount(d_m, scale), paid=amount(paid, scale), adl=amount(-delta - paid, scale),
                       balance=amount(B - paid, scale))
            fund["balance"] = B - paid
            obj = self.add(rec)
            self.moved(obj)
            out = [obj]
            split = split(len(closed)) if callable(split) else split or [len(closed)]
            assert sum(split) == len(closed)
            at = 0
            for i, count in enumerate(split):
                part = closed[at:at + count]
                at += count
                a = {"kind": "adl", "contract": symbol, "liquidation": lid, "event": obj["seq"],
                     "side": "short" if side == "long" else "long", "price": b,
                     "positions": ",".join(p.closed(qty) for p, qty in part)}
                if i == len(split) - 1:
                    if len(closed) < len(q):
                        a["next"] = q[len(closed)].leaf()
                    if len(shown) < len(q):
                        a["queue_proof"] = " ".join(b64(h) for h in consistency_proof(len(shown), leaves))
                a = self.add(a)
                self.moved(a)
                out.append(a)
            return out
        if delta >= 0:
            paid, adl, bal = 0, 0, B + delta
        else:
            paid = min(-delta, B)
            adl, bal = -delta - paid, B - paid
        rec.update(delta=amount(delta, scale), paid=amount(paid, scale), adl=amount(adl, scale), balance=amount(bal, scale))
        fund["balance"] = bal
        obj = self.add(rec)
        self.moved(obj)
        return [obj]


# --- a log of lot contracts and ADL events, written by the importer -------------------------


def queue(contract: str, lid: str, specs: list[tuple[str, str, str]]) -> list[Position]:
    return [Position(position_commitment(account_commitment(f"acct-{i}", f"salt-{i}"), contract, lid), *spec)
            for i, spec in enumerate(specs)]


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


INPUTS = {
    "contract": ("currency", "scale", "type", "multiplier", "lot"),
    "liquidation": ("contract", "id", "side", "qty", "bankruptcy_price", "fill_price", "mark_price",
                    "adl_qty", "queue_root", "queue_size"),
    "adl": ("contract", "liquidation", "positions", "next", "queue_proof"),
}
COMPUTED = ("delta", "paid", "adl", "balance", "event", "side", "price", "chain_seq", "adl_qty", "queue_root", "next", "queue_proof")


def record(obj: dict) -> dict:
    """The import record of an entry: its kind and inputs."""
    r = {"kind": obj["kind"], **{k: obj[k] for k in INPUTS[obj["kind"]] if k in obj}}
    if obj["kind"] == "contract":
        r["symbol"] = obj["contract"]
    return r


def write_log(directory, origin: str, sim: Sim):
    """``sim``'s records imported into a new format-2 log (its first state
    entry at seq 0, so each entry at the seq ``sim`` gave it), and a
    checkpoint: (database, signer, the entries' objects)."""
    import io

    import tamper_util as tu
    from ledger.ops import api

    db = str(directory / "fund.db")
    store, signer = api.init_ledger(db, str(directory / "fund.key"), origin, log_format=2)
    lines = "".join(json.dumps(record(e["obj"])) + "\n" for e in sim.entries).encode()
    api.import_records(store, signer, io.BytesIO(lines))
    store.add_checkpoint([signer])
    written = [tu.entry_obj(data) for _, data in store.iter_entries(0, store.size())]
    store.close()
    for e in sim.entries:  # the importer wrote what the independent reading gives
        for k in COMPUTED:
            assert written[e["seq"]].get(k) == e["obj"].get(k), (e["seq"], k, written[e["seq"]].get(k), e["obj"].get(k))
    return db, signer, written
