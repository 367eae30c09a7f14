"""The places of docs/FORMAT.md where a second implementation had to guess,
each settled by the text and held by the verifiers: key grammar, digit
limits, times, checkpoint lines, signature lines of known keys, partial
tiles, the published vkey, mark_price, scale 0, the order of checks and the
Ed25519 edge cases (known-answer vectors in tests/data/ed25519/)."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest

import tamper_util as tu
from conftest import ORIGIN, Ledger
from ledger.tlog import merkle
from ledger.tlog.tiles import parse_tile_path
from ledger.format import note
from ledger.errors import KeyFileError, RuleError
from ledger.rules.fund import FundBook, amount_str, parse_time
from publish.export import export as do_export

VECTORS = json.loads((Path(__file__).parent / "data" / "ed25519" / "vectors.json").read_text())
REFUSED = [bytes.fromhex(v["hex"]) for v in VECTORS["small_order"] + VECTORS["non_canonical"]]
IDENTITY = (1).to_bytes(32, "little")


def liq(i, contract="XBTUSDTM", side="long", qty="1", b="39000", f="39100", **extra):
    return {"kind": "liquidation", "contract": contract, "id": f"L-{i}", "side": side, "qty": qty,
            "bankruptcy_price": b, "fill_price": f, **extra}


CONTRACTS = [
    {"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8, "multiplier": "0.001"},
    {"kind": "contract", "symbol": "WHOLE", "currency": "USDT", "scale": 0, "multiplier": "1"},
]


@pytest.fixture
def small(ledger: Ledger) -> Ledger:
    """A closed ledger of 12 entries and a checkpoint, with a scale-0 fund."""
    ledger.store.append(CONTRACTS + [liq(i) for i in range(5)] + [liq(i, "WHOLE", f="39005") for i in range(5, 10)],
                        [ledger.signer])
    ledger.checkpoint()
    ledger.store.close()
    return ledger


def forge(db: str, dst: Path, seq: int, edit, signer) -> str:
    """A copy of ledger ``db`` whose entry ``seq`` is ``edit(obj)`` re-signed by
    ``signer`` (the log key: an operator's lie), then a new checkpoint."""
    return tu.forged_copy(db, dst, seq, edit, signer, ORIGIN)


# --- keys -------------------------------------------------------------------------------------


def test_a_vkey_whose_base64_holds_plus_parses_by_its_first_two_plus_signs():
    for n in range(200):
        v = note.generate_signer(ORIGIN).verifier()
        if "+" in v.vkey().split("+", 2)[2]:
            break
    else:
        pytest.fail("no key with '+' in its base64 in 200 tries")
    assert len(v.vkey().split("+")) > 3  # splitting on every '+' breaks it
    assert note.parse_vkey(v.vkey()) == v


def _vkey_of(public_key: bytes) -> str:
    kid = note.key_id(ORIGIN, note.ALG_ED25519, public_key)
    b64 = base64.b64encode(bytes([note.ALG_ED25519]) + public_key).decode()
    return f"{ORIGIN}+{kid.hex()}+{b64}"


def test_the_vectors_are_the_refused_points_and_libsodium_refuses_them_too():
    from nacl.bindings import crypto_core_ed25519_is_valid_point

    assert len(VECTORS["small_order"]) == 14 and len(VECTORS["non_canonical"]) == 38
    assert {v["order"] for v in VECTORS["small_order"]} == {1, 2, 4, 8}
    assert set(REFUSED) == set(note.REFUSED_POINTS) and len(set(REFUSED)) == 48
    assert not any(crypto_core_ed25519_is_valid_point(p) for p in REFUSED)


@pytest.mark.parametrize("point", REFUSED, ids=lambda p: p.hex()[:8] + ".." + p.hex()[-4:])
def test_a_vkey_with_a_small_order_or_non_canonical_point_is_refused(point):
    with pytest.raises(KeyFileError, match="small-order or non-canonical"):
        note.parse_vkey(_vkey_of(point))


@pytest.mark.parametrize("v", VECTORS["signatures"], ids=lambda v: v["what"][:40])
def test_signature_vectors(v):
    key = note.Verifier(ORIGIN, b"\0" * 4, bytes.fromhex(v["public_key"]))
    sig, msg = bytes.fromhex(v["signature"]), bytes.fromhex(v["message"])
    assert key.verify(msg, sig) is v["valid"]
    assert note.ed25519_shape_ok(key.public_key, sig) is v["valid"]


def test_an_invalid_s_is_refused_for_any_key():
    s = note.generate_signer(ORIGIN)
    sig = s.sign(b"text\n")
    high = sig[:32] + (int.from_bytes(sig[32:], "little") + note.ED25519_ORDER).to_bytes(32, "little")
    assert s.verifier().verify(b"text\n", sig) and not s.verifier().verify(b"text\n", high)


def rotate_to_identity(db: str, dst: Path, signer) -> tuple[str, int]:
    """A copy of ``db`` with a key entry handing the log to the identity
    point (whose signature R = identity, S = 0 satisfies the equation for
    every message), one entry and a checkpoint "signed" by it."""
    path = tu.copy_ledger(db, dst)
    conn = tu.open_rw(path)
    seq = conn.execute("SELECT MAX(seq) + 1 FROM entries").fetchone()[0]
    prev = merkle.leaf_hash(tu.entry_data(conn, seq - 1))
    vkey = _vkey_of(IDENTITY)
    kid = note.key_id(ORIGIN, note.ALG_ED25519, IDENTITY)
    fake = IDENTITY + bytes(32)

    def line(k: bytes, sig: bytes) -> bytes:
        return "\u2014 ".encode() + ORIGIN.encode() + b" " + base64.b64encode(k + sig) + b"\n"

    text = tu.canonical({"contract": "", "kind": "key", "prev": tu.b64(prev), "seq": seq,
                         "time": "2026-12-01T00:00:00Z", "vkey": vkey})
    own = note.sign_note(text, [signer])
    tu.append_raw(conn, own + line(kid, fake))
    data = tu.entry_data(conn, seq)
    balance = conn.execute("SELECT balance FROM entries WHERE contract = 'XBTUSDTM' AND kind = 'liquidation' "
                           "ORDER BY seq DESC LIMIT 1").fetchone()[0]
    # a liquidation the rules accept, "signed" by the new key
    obj = {"adl": "0.00000000", "balance": balance, "bankruptcy_price": "1", "contract": "XBTUSDTM",
           "delta": "0.00000000", "fill_price": "1", "id": "forged", "kind": "liquidation", "paid": "0.00000000",
           "prev": tu.b64(merkle.leaf_hash(data)), "qty": "1", "seq": seq + 1, "side": "long",
           "time": "2026-12-01T00:00:00Z"}
    tu.append_raw(conn, tu.canonical(obj) + b"\n" + line(kid, fake))
    datas = [d for (d,) in conn.execute("SELECT data FROM entries ORDER BY seq")]
    cp = note.Checkpoint(ORIGIN, len(datas), tu.mth([tu.leaf(d) for d in datas])).text()
    conn.execute("INSERT INTO checkpoints (id, tree_size, root, time, note) VALUES "
                 "((SELECT MAX(id) + 1 FROM checkpoints), ?, ?, ?, ?)",
                 (len(datas), note.parse_checkpoint(cp).root_hash, "2026-12-01T00:00:00Z",
                  cp + b"\n" + line(kid, fake)))
    conn.close()
    return path, seq


def test_a_key_entry_announcing_a_small_order_key_fails(small, tmp_path):
    path, seq = rotate_to_identity(small.db, tmp_path / "r.db", small.signer)
    rc, obj, err = tu.cli_verify(path)
    assert rc == 1 and obj["seq"] == seq and "small-order" in obj["reason"], (rc, obj, err)


# --- fields: multiplier, time, mark_price, scale 0 -------------------------------------------------


def test_the_digit_limits_apply_to_the_multiplier(small, tmp_path):
    book = FundBook()
    for bad in ("0.0000000000000000001", "1" * 31):
        with pytest.raises(RuleError, match="too many digits"):
            book.contract_entry(dict(CONTRACTS[0], multiplier=bad))
    book.contract_entry(dict(CONTRACTS[0], multiplier="0.000000000000000001"))  # 10**-18: the smallest
    book.contract_entry(dict(CONTRACTS[0], symbol="BIG", multiplier="9" * 30))
    path = forge(small.db, tmp_path / "m.db", 0, lambda o: o.update(multiplier="0.0000000000000000001"), small.signer)
    rc, obj, err = tu.cli_verify(path)
    assert rc == 1 and obj["seq"] == 0 and "too many digits" in obj["reason"], (rc, obj, err)


def test_time_years_0001_to_9999_and_no_leap_second():
    assert parse_time("0001-01-01T00:00:00Z") == "0001-01-01T00:00:00Z"
    assert parse_time("9999-12-31T23:59:59.999999999Z") == "9999-12-31T23:59:59.999999999Z"
    for bad in ("0000-01-01T00:00:00Z", "2016-12-31T23:59:60Z", "2016-12-31T24:00:00Z", "10000-01-01T00:00:00Z"):
        with pytest.raises(RuleError):
            parse_time(bad)


def test_a_leap_second_is_refused_by_the_verifier(small, tmp_path):
    path = forge(small.db, tmp_path / "t.db", 3, lambda o: o.update(time="2016-12-31T23:59:60Z"), small.signer)
    rc, obj, err = tu.cli_verify(path)
    assert rc == 1 and obj["seq"] == 3 and "time" in obj["reason"], (rc, obj, err)


def test_times_are_not_ordered(ledger):
    """Seq is the order; a late event, or one dated before its contract, is valid."""
    ledger.append(dict(CONTRACTS[0], time="2026-06-01T00:00:00Z"))
    ledger.append(liq(1, time="2026-05-01T00:00:00Z"), liq(2, time="2020-01-01T00:00:00Z"),
                  liq(3, time="2026-07-01T00:00:00Z"), liq(4, time="2026-06-30T23:59:59.5Z"))
    ledger.checkpoint()
    ledger.store.close()
    rc, obj, err = tu.cli_verify(ledger.db)
    assert rc == 0 and obj["ok"] and obj["size"] == 5, (rc, obj, err)


def test_mark_price_is_absent_not_null(small, tmp_path):
    book = FundBook()
    book.contract_entry(CONTRACTS[0])
    book.apply(dict(book.contract_entry(CONTRACTS[0]), seq=0, time=None))
    assert "mark_price" not in book.liquidation_entry(liq(1, mark_price=None))  # an input's null: absent
    path = forge(small.db, tmp_path / "n.db", 3, lambda o: o.update(mark_price=None), small.signer)
    rc, obj, err = tu.cli_verify(path)
    assert rc == 1 and obj["seq"] == 3 and obj["reason"] == "unexpected field 'mark_price'", (rc, obj, err)


def test_amounts_at_scale_0_have_no_point(small, tmp_path):
    assert amount_str(5, 0) == "5" and amount_str(-5, 0) == "-5" and amount_str(0, 0) == "0"
    conn = tu.open_rw(small.db)
    obj = tu.entry_obj(tu.entry_data(conn, 7))
    conn.close()
    assert obj["contract"] == "WHOLE" and obj["delta"] == "5" and obj["balance"] == "5" and obj["paid"] == "0"
    for spelling in ("5.", "5.0"):
        path = forge(small.db, tmp_path / f"z{len(spelling)}.db", 7, lambda o: o.update(balance=spelling), small.signer)
        rc, out, err = tu.cli_verify(path)
        assert rc == 1 and out["seq"] == 7 and "balance is" in out["reason"], (rc, out, err)


# --- checkpoints and signature lines ------------------------------------------------------------


def _checkpoint_of(L: Ledger) -> tuple[bytes, note.Checkpoint]:
    conn = tu.open_rw(L.db)
    data = conn.execute("SELECT note FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()[0]
    conn.close()
    text, _ = note.split_note(data)
    return data, note.parse_checkpoint(text)


def _export(L: Ledger, tmp_path: Path) -> Path:
    from ledger.store.store import Store

    s = Store.open(L.db)
    try:
        do_export(s, str(tmp_path / "pub"))
    finally:
        s.close()
    return tmp_path / "pub"


def _set_checkpoint(db: str, data: bytes) -> None:
    conn = tu.open_rw(db)
    conn.execute("UPDATE checkpoints SET note = ? WHERE id = (SELECT MAX(id) FROM checkpoints)", (data,))
    tu.restore_guards(conn)
    conn.close()


def test_checkpoint_extension_lines_and_unknown_signatures_are_ignored(small, tmp_path):
    data, cp = _checkpoint_of(small)
    text = note.Checkpoint(cp.origin, cp.tree_size, cp.root_hash, ("extension line: anything",)).text()
    other = note.generate_signer("someone.example/else")
    signed = note.sign_note(text, [small.signer, other])
    exp = _export(small, tmp_path)
    (exp / "checkpoint").write_bytes(signed)
    rc, obj, err = tu.cli_verify(exp)
    assert rc == 0 and obj["ok"], (rc, obj, err)


def test_a_repeated_line_by_the_log_key_is_ignored_as_x_mod_does(small, tmp_path):
    data, cp = _checkpoint_of(small)
    text, sigs = note.split_note(data)
    good = sigs[0].line
    bad = good[:-6] + (b"AAAA" if good[-6:-2] != b"AAAA" else b"BBBB") + good[-2:]
    exp = _export(small, tmp_path)
    (exp / "checkpoint").write_bytes(text + b"\n" + good + bad)
    rc, obj, err = tu.cli_verify(exp)
    assert rc == 0 and obj["ok"], (rc, obj, err)
    (exp / "checkpoint").write_bytes(text + b"\n" + bad + good)
    rc, obj, err = tu.cli_verify(exp)
    assert rc == 1 and "checkpoint: invalid signature by " + ORIGIN in obj["reason"], (rc, obj, err)


def test_an_invalid_cosignature_by_a_named_witness_fails_even_with_the_quorum(small, tmp_path):
    data, cp = _checkpoint_of(small)
    text, _ = note.split_note(data)
    w1 = note.generate_signer("w1.example", note.ALG_COSIGNATURE_V1)
    w2 = note.generate_signer("w2.example", note.ALG_COSIGNATURE_V1)
    good1 = note.cosign(text, w1, 1_700_000_000)
    good2 = note.cosign(text, w2, 1_700_000_000)
    raw = bytearray(base64.b64decode(good2.split(b" ")[-1]))
    raw[-1] ^= 1
    bad2 = good2.rsplit(b" ", 1)[0] + b" " + base64.b64encode(bytes(raw)) + b"\n"
    files = []
    for w in (w1, w2):
        p = tmp_path / f"{w.name}.vkey"
        p.write_text(w.verifier().vkey() + "\n")
        files += ["--witness", str(p)]
    _set_checkpoint(small.db, data + good1 + good2)
    rc, obj, err = tu.cli_verify(small.db, *files, "--quorum", "1")
    assert rc == 0 and obj["ok"], (rc, obj, err)
    _set_checkpoint(small.db, data + good1 + bad2)
    rc, obj, err = tu.cli_verify(small.db, *files, "--quorum", "1")
    assert rc == 1 and obj["reason"] == "checkpoint: invalid cosignature by " + \
        f"w2.example+{w2.key_id.hex()}", (rc, obj, err)
    assert len(err.strip().splitlines()) <= 1


# --- the published vkey ----------------------------------------------------------------------------


def test_a_published_vkey_other_than_the_pinned_one_fails(small, tmp_path):
    exp = _export(small, tmp_path)
    pinned = small.signer.verifier()
    other = note.generate_signer(ORIGIN).verifier()
    (exp / "vkey").write_text(other.vkey() + "\n")
    p = tu.run_fundledger("verify", str(exp), "--vkey", pinned.vkey(), "--workers", "1")
    err = p.stderr.decode()
    assert p.returncode == 1 and len(err.splitlines()) == 1, err
    assert f"{ORIGIN}+{other.key_id.hex()}" in err and f"{ORIGIN}+{pinned.key_id.hex()}" in err, err
    (exp / "vkey").write_text(pinned.vkey() + "\n")
    assert tu.run_fundledger("verify", str(exp), "--vkey", pinned.vkey(), "--workers", "1").returncode == 0


# --- partial tiles -------------------------------------------------------------------------------


@pytest.fixture
def grown(ledger: Ledger, tmp_path) -> tuple[Ledger, Path, Path]:
    """An export brought up to date at sizes 12 and then 300 (so it keeps the
    partial tiles of size 12), and the checkpoint of size 12."""
    exp = tmp_path / "pub"
    ledger.store.append(CONTRACTS + [liq(i) for i in range(10)], [ledger.signer])
    ledger.checkpoint()
    do_export(ledger.store, str(exp))
    old = tmp_path / "12.checkpoint"
    old.write_bytes((exp / "checkpoint").read_bytes())
    ledger.store.append([liq(i) for i in range(10, 298)], [ledger.signer])
    ledger.checkpoint()
    do_export(ledger.store, str(exp))
    ledger.store.close()
    assert (exp / "tile/0/000.p/12").exists() and (exp / "tile/entries/000.p/12").exists()
    return ledger, exp, old


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))


def test_a_corrupted_older_partial_hash_tile_fails(grown):
    _, exp, _ = grown
    assert tu.cli_verify(exp)[0] == 0
    _flip(exp / "tile/0/000.p/12", 5 * 32)
    rc, obj, err = tu.cli_verify(exp)
    assert rc == 1 and obj["seq"] == 5 and obj["reason"] == "hash tile tile/0/000.p/12 does not match the entries", \
        (rc, obj, err)


def test_a_corrupted_older_partial_entry_bundle_fails(grown):
    _, exp, _ = grown
    p = exp / "tile/entries/000.p/12"
    items = [e for _, e in tu.bundle_entries(p.read_bytes())]
    items[7] = items[7].replace(b'"qty":"1"', b'"qty":"2"')
    p.write_bytes(tu.bundle(items))
    rc, obj, err = tu.cli_verify(exp)
    assert rc == 1 and obj["seq"] == 7 and \
        obj["reason"] == "entry bundle tile/entries/000.p/12 does not match the entries", (rc, obj, err)


def test_a_width_256_partial_tile_is_no_tile_and_is_not_looked_at(grown):
    _, exp, _ = grown
    with pytest.raises(Exception, match="1..255"):
        parse_tile_path("tile/0/000.p/256")
    (exp / "tile/0/000.p/256").write_bytes(b"junk")
    (exp / "tile/entries/000.p/256").write_bytes(b"junk")
    rc, obj, err = tu.cli_verify(exp)
    assert rc == 0 and obj["ok"], (rc, obj, err)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_an_older_partial_tile_implied_by_the_trusted_checkpoint_is_checked_over_http(grown, tmp_path):
    _, exp, old = grown
    served = tmp_path / "served"
    shutil.copytree(exp, served)
    # a URL cannot be listed: only the trusted size's partial tiles are known
    _flip(served / "tile/0/000.p/12", 3 * 32)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        rc, obj, err = tu.cli_verify(url)
        assert rc == 0, (rc, obj, err)  # without the older size, the older tile is not known
        rc, obj, err = tu.cli_verify(url, "--trusted", old)
        assert rc == 1 and obj["seq"] == 3 and "tile/0/000.p/12" in obj["reason"], (rc, obj, err)
    finally:
        server.shutdown()
        server.server_close()


# --- the order of checks ----------------------------------------------------------------------------


def _resign_with_bad_signature(obj: dict, signer) -> bytes:
    data = tu.sign(tu.canonical(obj), signer)
    text, sig = tu.split_entry(data)
    raw = bytearray(base64.b64decode(sig.split(b" ")[-1]))
    raw[10] ^= 1
    return text + b"\n" + sig.rsplit(b" ", 1)[0] + b" " + base64.b64encode(bytes(raw)) + b"\n"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_entry_breaking_two_checks_is_named_by_the_first_in_the_stated_order(small, tmp_path, workers):
    path = tu.copy_ledger(small.db, tmp_path / "two.db")
    conn = tu.open_rw(path)
    obj = tu.entry_obj(tu.entry_data(conn, 4))
    obj["balance"] = tu_bump(obj["balance"])  # a rules fault and a bad signature: the rules are named
    tu.set_data(conn, 4, _resign_with_bad_signature(obj, small.signer), sync=True)
    obj = tu.entry_obj(tu.entry_data(conn, 8))
    obj["prev"] = tu.b64(bytes(32))  # a chain fault and a rules fault: the chain is named
    obj["delta"] = "0"
    tu.set_data(conn, 8, tu.sign(tu.canonical(obj), small.signer), sync=True)
    tu.sign_checkpoint(conn, small.signer, ORIGIN)
    conn.close()
    p = tu.run_fundledger("verify", path, "--json", "--workers", workers)
    out = json.loads(p.stdout)
    assert p.returncode == 1 and out["seq"] == 4 and out["reason"].startswith("balance is "), out
    conn = tu.open_rw(path)
    obj = tu.entry_obj(tu.entry_data(conn, 4))
    obj["balance"] = tu_bump(obj["balance"], -1)
    tu.set_data(conn, 4, _resign_with_bad_signature(obj, small.signer), sync=True)
    tu.sign_checkpoint(conn, small.signer, ORIGIN)
    conn.close()
    p = tu.run_fundledger("verify", path, "--json", "--workers", workers)
    out = json.loads(p.stdout)
    assert p.returncode == 1 and out["seq"] == 4 and out["reason"] == "signature does not verify", out
    # a signature fault at 4 is named before a chain fault at 8 (the seq order first)


def tu_bump(amount: str, by: int = 1) -> str:
    whole, _, frac = amount.partition(".")
    units = int(whole + frac) + by
    return amount_str(units, len(frac))


def test_check_order_is_stated_in_format_md():
    text = (Path(__file__).parent.parent / "docs" / "FORMAT.md").read_text()
    for needle in ("### The order of checks", "small-order", "x/mod", "`.p/256`", "leap second",
                   "not ordered", "`mark_price`", "scale 0", "extension lines"):
        assert needle in text, needle
