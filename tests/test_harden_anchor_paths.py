"""Attacks on the writer's anchor through the paths the anchor tests do not
take: a key rotation on a truncated log, a contract added to one, a forged
summary row for a contract that was never signed, and a truncation after a
rotation (the new key inherits the old key's anchor)."""

from __future__ import annotations

import json
import sqlite3

from test_harden_writer import Writer, fingerprint, make_writer, one_line_failure, truncate

from ledger.verify.run import verify_path


def _truncated(tmp_path):
    """A log of 7 entries and a checkpoint, cut back to its first 3 entries
    by someone holding the database file only (the anchor is untouched)."""
    w = make_writer(tmp_path / "w", liquidations=2)  # entries 0..2
    young = w.rows("contracts")
    for i in range(3, 7):
        assert w.liquidation(i).exit_code == 0
    w.ok("checkpoint")
    assert w.anchored_size() == 7
    truncate(w.db, 3, young)
    return w


def test_key_rotate_on_a_truncated_log_is_refused_before_signing(tmp_path):
    """Item 4: the key must never sign a rewritten history. `key rotate`
    signs a key entry (with the current key) at the head the database shows."""
    w = _truncated(tmp_path)
    before = fingerprint(w.db)
    r = w.run("key", "rotate", "--new-key", str(tmp_path / "w" / "new.key"))
    one_line_failure(r, 1, "refusing to sign")
    assert fingerprint(w.db) == before


def test_contract_add_on_a_truncated_log_is_refused(tmp_path):
    w = _truncated(tmp_path)
    before = fingerprint(w.db)
    r = w.run("contract", "add", "ETHUSDTM", "--currency", "USDT", "--scale", "2")
    one_line_failure(r, 1, "refusing to sign", "entries were removed")
    assert fingerprint(w.db) == before


def test_a_forged_summary_row_for_an_unsigned_contract_signs_nothing(tmp_path):
    w = make_writer(tmp_path / "w", liquidations=2)
    with sqlite3.connect(w.db) as c:
        row = list(c.execute("SELECT * FROM contracts").fetchone())
        row[0] = "FAKEUSDTM"
        c.execute(f"INSERT INTO contracts VALUES ({','.join('?' * len(row))})", row)
    n = len(w.rows("entries"))
    r = w.run("liquidation", "FAKEUSDTM", "--id", "F-1", "--side", "long", "--qty", "1",
              "--bankruptcy-price", "100", "--fill-price", "101", "--time", "2026-11-23T19:00:00Z")
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert len(w.rows("entries")) == n
    with sqlite3.connect(w.db) as c:
        c.execute("DELETE FROM contracts WHERE symbol = 'FAKEUSDTM'")
    verify_path(w.db)


def test_key_rotate_on_a_truncated_log_leaves_no_new_key(tmp_path):
    w = _truncated(tmp_path)
    new_key = tmp_path / "w" / "new.key"
    w.run("key", "rotate", "--new-key", str(new_key))
    assert not new_key.exists() and not (tmp_path / "w" / "new.key.anchor").exists()


def _rotated(tmp_path):
    """A log of 3 entries and a checkpoint, rotated to new.key (entry 3)."""
    w = make_writer(tmp_path / "w", liquidations=2)
    w.ok("checkpoint")
    new_key = str(tmp_path / "w" / "new.key")
    w.ok("key", "rotate", "--new-key", new_key)
    return w, new_key


def test_the_new_key_inherits_the_anchor(tmp_path):
    """After a rotation the new key's anchor begins where the old one ends
    (the key entry and the new key included), with every liquidation id:
    the new key never trusts the database on first use."""
    w, new_key = _rotated(tmp_path)
    old = json.loads(open(w.anchor, "rb").read())
    new = json.loads(open(new_key + ".anchor", "rb").read())
    assert old["tree_size"] == new["tree_size"] == 4
    assert new["keys"][-1][0] == 4 and len(new["keys"]) == 2
    assert new == old
    assert open(new_key + ".anchor.ids", "rb").read() == open(w.anchor + ".ids", "rb").read()
    assert len(open(new_key + ".anchor.ids", "rb").read()) == 8 * 2


def test_the_new_key_refuses_a_log_truncated_after_the_rotation(tmp_path):
    """Truncated back to before the key entry (its summary rows put back,
    the database still naming the new key), the log must be refused by the
    new key's anchor rather than trusted once from entry 0."""
    w, new_key = _rotated(tmp_path)
    young = w.rows("contracts")
    w.key = new_key
    for i in range(3, 6):
        assert w.liquidation(i).exit_code == 0
    truncate(w.db, 3, young)
    before = fingerprint(w.db)
    r = w.run("checkpoint")
    one_line_failure(r, 1, "refusing to sign", "entries were removed")
    assert fingerprint(w.db) == before


def test_a_rotated_log_goes_on_with_the_new_key(tmp_path):
    w, new_key = _rotated(tmp_path)
    w.key = new_key
    assert w.liquidation(7).exit_code == 0
    w.ok("checkpoint")
    assert json.loads(open(new_key + ".anchor", "rb").read())["tree_size"] == 5
    verify_path(w.db)
