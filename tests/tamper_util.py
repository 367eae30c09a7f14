"""Helpers for tests/test_tamper.py: an independent model of the fund rules
and of the RFC 6962 root (no ledger code), and the tools an attacker with
write access to the database, the export directory or the signing key uses.

The model deliberately shares nothing with ``ledger.rules.fund`` / ``ledger.tlog.merkle``:
it works on ``fractions.Fraction`` and hashlib, straight from the brief.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import shutil
import sqlite3
from fractions import Fraction
from pathlib import Path

from conftest import run_fundledger

# --- independent model of the fund rules --------------------------------------------


def _amount(x: Fraction, scale: int) -> str:
    """``x`` (already a multiple of 10**-scale) with exactly ``scale`` digits."""
    units = x * 10**scale
    if units.denominator != 1:
        raise ValueError(f"{x} is not at scale {scale}")
    u = int(units)
    sign = "-" if u < 0 else ""
    u = abs(u)
    if scale == 0:
        return f"{sign}{u}"
    return f"{sign}{u // 10**scale}.{u % 10**scale:0{scale}d}"


class Model:
    """Every fund's state, recomputed from the records with Fractions."""

    def __init__(self):
        self.funds: dict[str, dict] = {}
        self.seen: set = set()
        self.events = {"credit": 0, "payout": 0, "adl": 0, "drained": set()}

    def apply(self, seq: int, rec: dict) -> None:
        if rec["kind"] == "contract":
            self.funds[rec["symbol"]] = {
                "contract": rec["symbol"], "currency": rec["currency"], "type": rec.get("type", "linear"),
                "scale": rec["scale"], "multiplier": Fraction(rec.get("multiplier", "1")),
                "multiplier_str": rec.get("multiplier", "1"),
                "balance": Fraction(0), "credited": Fraction(0), "paid": Fraction(0), "adl": Fraction(0),
                "liquidations": 0, "last_seq": seq, "last_time": rec["time"], "last_price": None,
            }
            return
        f = self.funds[rec["contract"]]
        assert (rec["contract"], rec["id"]) not in self.seen
        self.seen.add((rec["contract"], rec["id"]))
        q, m = Fraction(rec["qty"]), f["multiplier"]
        b, fill = Fraction(rec["bankruptcy_price"]), Fraction(rec["fill_price"])
        if f["type"] == "linear":
            delta = q * m * (fill - b)
        else:
            delta = q * m * (1 / b - 1 / fill)
        if rec["side"] == "short":
            delta = -delta
        unit = Fraction(1, 10 ** f["scale"])
        delta = math.floor(delta / unit) * unit  # floor to the scale
        if delta >= 0:
            f["balance"] += delta
            f["credited"] += delta
            if delta > 0:
                self.events["credit"] += 1
        else:
            short = -delta
            paid = min(short, f["balance"])
            f["paid"] += paid
            f["adl"] += short - paid
            if paid:
                self.events["payout"] += 1
            if short - paid:
                self.events["adl"] += 1
            if f["balance"] > 0 and paid == f["balance"]:
                self.events["drained"].add(rec["contract"])
            f["balance"] -= paid
        f["liquidations"] += 1
        f["last_seq"] = seq
        f["last_time"] = rec["time"]
        f["last_price"] = rec.get("mark_price", rec["fill_price"])

    def summaries(self) -> list[dict]:
        out = []
        for sym in sorted(self.funds):
            f = self.funds[sym]
            s = f["scale"]
            if f["currency"] in ("USD", "USDT", "USDC"):
                usd = _amount(Fraction(math.floor(f["balance"] * 100), 100), 2)
            elif f["last_price"] is None:
                usd = None
            else:
                usd = _amount(Fraction(math.floor(f["balance"] * Fraction(f["last_price"]) * 100), 100), 2)
            out.append({
                "contract": sym, "currency": f["currency"], "type": f["type"], "scale": s,
                "multiplier": f["multiplier_str"], "balance": _amount(f["balance"], s), "balance_usd": usd,
                "credited": _amount(f["credited"], s), "paid": _amount(f["paid"], s), "adl": _amount(f["adl"], s),
                "liquidations": f["liquidations"], "last_seq": f["last_seq"], "last_time": f["last_time"],
                "last_price": f["last_price"],
            })
        return out


# --- independent RFC 6962 ---------------------------------------------------------------


def leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 MTH over leaf hashes."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1 << ((n - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


# --- running the verifier -------------------------------------------------------------------


def cli_verify(source, *extra) -> tuple[int, dict | None, str]:
    """``fundledger verify SOURCE --json --workers N ...`` with N = 1 (the
    accelerator, in one process) and N = 0 (the reference alone): the two
    must give the same exit code and JSON. (exit code, JSON, stderr)."""
    runs = [_cli_verify_once(source, workers, extra) for workers in ("1", "0")]
    assert runs[0][:2] == runs[1][:2], runs
    return runs[0]


def _cli_verify_once(source, workers: str, extra) -> tuple[int, dict | None, str]:
    p = run_fundledger("verify", str(source), "--json", "--workers", workers, *map(str, extra), timeout=120)
    out = p.stdout.decode()
    try:
        obj = json.loads(out) if out.strip() else None
    except ValueError:
        obj = None
    return p.returncode, obj, p.stderr.decode()


def lib_verify(source, trusted=None) -> dict:
    """The same through ``ledger.verify.run.verify_path`` in-process (fast), as
    the CLI prints it: by the accelerator (workers=1) and by the reference
    alone (workers=0), which must agree exactly."""
    runs = [_lib_verify_once(source, trusted, workers) for workers in (1, 0)]
    assert runs[0] == runs[1], runs
    return runs[0]


def _lib_verify_once(source, trusted, workers: int) -> dict:
    from ledger.errors import VerificationError
    from ledger.verify.report import failure_json
    from ledger.verify.run import verify_path

    try:
        return verify_path(str(source), trusted_path=None if trusted is None else str(trusted),
                           workers=workers).as_json()
    except VerificationError as e:
        return failure_json(e)


# --- the attacker's tools: database ---------------------------------------------------------

TRIGGERS = [f"{t}_{w}" for t in ("entries", "tree", "checkpoints") for w in ("no_update", "no_delete")]
TRIGGERS += ["entries_insert", "tree_insert", "checkpoints_next_only"]


def copy_ledger(src: str, dst: Path) -> str:
    """A fresh copy of a (closed) ledger database."""
    shutil.copyfile(src, dst)
    return str(dst)


def open_rw(db: str) -> sqlite3.Connection:
    """A plain sqlite3 connection with the append-only triggers and the
    liquidation-id unique index dropped (autocommit)."""
    conn = sqlite3.connect(db, isolation_level=None)
    for t in TRIGGERS:
        conn.execute(f"DROP TRIGGER IF EXISTS {t}")
    conn.execute("DROP INDEX IF EXISTS entries_liquidation")
    return conn


def entry_data(conn, seq: int) -> bytes:
    return conn.execute("SELECT data FROM entries WHERE seq = ?", (seq,)).fetchone()[0]


def split_entry(data: bytes) -> tuple[bytes, bytes]:
    """(text, signature block) of a signed note."""
    i = data.rfind(b"\n\n")
    return data[: i + 1], data[i + 2 :]


def entry_obj(data: bytes) -> dict:
    return json.loads(split_entry(data)[0])


def canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def sign(text: bytes, signer) -> bytes:
    from ledger.format import note

    return note.sign_note(text, [signer])


def set_data(conn, seq: int, data: bytes, sync: bool = False) -> None:
    """Replace entry ``seq``'s bytes. With ``sync`` the attacker also keeps
    every derived column, the stored Merkle hashes and the summary table in
    line with the new bytes (only ``data`` then carries the lie)."""
    conn.execute("UPDATE entries SET data = ? WHERE seq = ?", (data, seq))
    if sync:
        resync(conn)


def resync(conn) -> None:
    """Recompute ``leaf_hash`` and the derived columns of every entry from its
    ``data`` as the writer would store them (as far as the JSON says), and
    rebuild the ``tree`` table from the leaf hashes (the stored hashes above
    the leaves, as the writer keeps them)."""
    from ledger.tlog import merkle
    from ledger.store.schema import tree_rows_of

    rows = conn.execute("SELECT seq, data FROM entries ORDER BY seq").fetchall()
    cache: dict[int, bytes] = {}

    class R:
        def read_hashes(self, idx):
            return [cache[i] for i in idx]

    conn.execute("BEGIN")
    conn.execute("DELETE FROM tree")
    for n, (seq, data) in enumerate(rows):
        h = leaf(data)
        obj = entry_obj(data)
        conn.execute(
            "UPDATE entries SET leaf_hash=?, time=?, kind=?, contract=?, liquidation_id=?, side=?, qty=?, "
            "bankruptcy_price=?, fill_price=?, mark_price=?, delta=?, paid=?, adl=?, balance=? WHERE seq=?",
            (h, obj.get("time"), obj.get("kind") or "", obj.get("contract", ""), obj.get("id"), obj.get("side"),
             obj.get("qty"), obj.get("bankruptcy_price"), obj.get("fill_price"), obj.get("mark_price"),
             obj.get("delta"), obj.get("paid"), obj.get("adl"), obj.get("balance"), seq),
        )
        first = merkle.stored_hash_index(0, n)
        hashes = merkle.stored_hashes_for_leaf(n, h, R())
        cache.update(zip(range(first, first + len(hashes)), hashes))
        conn.executemany("INSERT INTO tree (id, hash) VALUES (?, ?)", tree_rows_of(n, hashes))
    conn.execute("COMMIT")


def append_raw(conn, data: bytes) -> int:
    """Append forged entry bytes at the end, with its derived row and stored
    hashes (as the writer would). Returns its seq."""
    seq = conn.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM entries").fetchone()[0]
    obj = entry_obj(data)
    conn.execute(
        "INSERT INTO entries (seq, data, leaf_hash, time, kind, contract, liquidation_id, side, qty, "
        "bankruptcy_price, fill_price, mark_price, delta, paid, adl, balance) VALUES "
        "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (seq, data, leaf(data), obj.get("time"), obj.get("kind") or "", obj.get("contract", ""), obj.get("id"),
         obj.get("side"), obj.get("qty"), obj.get("bankruptcy_price"), obj.get("fill_price"),
         obj.get("mark_price"), obj.get("delta"), obj.get("paid"), obj.get("adl"), obj.get("balance")),
    )
    resync(conn)
    return seq


def sign_checkpoint(conn, signer, origin: str) -> bytes:
    """Sign a checkpoint over every entry in the table (root recomputed
    independently) and store it as the latest one."""
    from ledger.format import note

    datas = [d for (d,) in conn.execute("SELECT data FROM entries ORDER BY seq")]
    root = mth([leaf(d) for d in datas])
    text = note.Checkpoint(origin, len(datas), root).text()
    signed = note.sign_note(text, [signer])
    conn.execute(
        "INSERT INTO checkpoints (id, tree_size, root, time, note) VALUES "
        "((SELECT COALESCE(MAX(id), 0) + 1 FROM checkpoints), ?, ?, ?, ?)",
        (len(datas), root, "2026-12-01T00:00:00Z", signed),
    )
    return signed


# --- the attacker's tools: export directory ------------------------------------------------------


def resign_entry(conn, seq: int, edit, signer, origin: str) -> None:
    """Entry ``seq`` edited by ``edit(obj)`` and signed with ``signer`` (the
    log key: an operator's lie), the database brought in line, a new
    checkpoint signed over it."""
    obj = entry_obj(entry_data(conn, seq))
    edit(obj)
    set_data(conn, seq, sign(canonical(obj), signer), sync=True)
    sign_checkpoint(conn, signer, origin)


def forged_copy(db: str, dst: Path, seq: int, edit, signer, origin: str) -> str:
    """A copy of ledger ``db`` with entry ``seq`` forged by :func:`resign_entry`."""
    path = copy_ledger(db, dst)
    conn = open_rw(path)
    try:
        resign_entry(conn, seq, edit, signer, origin)
    finally:
        conn.close()
    return path


def copy_export(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def bundle_entries(data: bytes) -> list[tuple[int, bytes]]:
    """(offset of the entry's bytes, entry bytes) of each entry in a bundle."""
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 2], "big")
        out.append((pos + 2, data[pos + 2 : pos + 2 + n]))
        pos += 2 + n
    return out


def bundle(entries: list[bytes]) -> bytes:
    return b"".join(len(e).to_bytes(2, "big") + e for e in entries)


def bundle_path(root: Path, seq: int, size: int) -> Path:
    index = seq // 256
    width = min(256, size - index * 256)
    from ledger.tlog.tiles import entries_path

    return root / entries_path(index, width)


def edit_bundle_entry(root: Path, seq: int, size: int, fn) -> None:
    """Replace entry ``seq`` in its bundle by ``fn(old bytes)``."""
    p = bundle_path(root, seq, size)
    items = [e for _, e in bundle_entries(p.read_bytes())]
    items[seq % 256] = fn(items[seq % 256])
    p.write_bytes(bundle(items))


def restore_guards(conn) -> None:
    """Put back what :func:`open_rw` dropped, exactly as the writer makes
    them: what a key holder who rewrote history does last, since a ledger
    without its triggers or index fails verification."""
    from ledger.store.schema import SCHEMA
    from ledger.store.schema import TRIGGERS as TRIGGER_SQL

    conn.executescript(TRIGGER_SQL)
    index = next(s for s in SCHEMA.split(";") if "INDEX entries_liquidation" in s)
    conn.execute(index)
