"""The command line's rough edges: the help a new user sees, malformed state
and trusted files, repeated witnesses, ``verify --state`` on a live log, a
database no checkpoint covers yet, and the message for a mistyped field."""

from __future__ import annotations

import base64
import json
import os

import pytest
from click.testing import CliRunner
from conftest import ORIGIN, run_fundledger

from ledger import entry, merkle, note, verify
from ledger.cli import cli
from ledger.errors import InputError, VerificationError
from ledger.fund import FundBook


def invoke(ledger, *args, input=None):
    """Run the CLI in-process; an unexpected exception is kept in
    ``result.exception`` (a traceback in real life)."""
    env = {"FUNDLEDGER_DB": ledger.db, "FUNDLEDGER_KEY": ledger.key}
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, env=env, catch_exceptions=True,
                              prog_name="fundledger")


def one_line(r, code: int) -> str:
    """The run exited ``code`` with exactly one ``fundledger:`` line on stderr."""
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    assert isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.stderr.startswith("fundledger: ") and r.stderr.count("\n") == 1, repr(r.stderr)
    return r.stderr


def liquidations(start: int, n: int) -> list[dict]:
    return [{"kind": "liquidation", "contract": "XBTUSDTM", "id": f"L-{i}", "side": "short" if i % 3 else "long",
             "qty": "2", "bankruptcy_price": "40000", "fill_price": str(39990 + (i % 7) * 5)}
            for i in range(start, start + n)]


@pytest.fixture
def log(ledger):
    """A ledger of a contract and 20 liquidations with a checkpoint at 21."""
    ledger.contract()
    ledger.append(*liquidations(0, 20))
    ledger.checkpoint()
    return ledger


# --- help for a command line without a command ------------------------------------------------


@pytest.mark.parametrize("args,usage", [
    ([], "Usage: fundledger [OPTIONS] COMMAND"),
    (["contract"], "Usage: fundledger contract [OPTIONS] COMMAND"),
    (["key"], "Usage: fundledger key [OPTIONS] COMMAND"),
    (["witness"], "Usage: fundledger witness [OPTIONS] COMMAND"),
])
def test_a_group_without_a_command_prints_its_readable_help(ledger, args, usage):
    r = invoke(ledger, *args)
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit)
    lines = r.stderr.splitlines()
    assert lines[0] == usage + " [ARGS]...", lines[:3]
    assert "Commands:" in lines and len(lines) > 5  # the help as click lays it out, not one squashed line
    assert not r.stderr.startswith("fundledger: ")


def test_fundledger_alone_prints_help_in_a_real_process(tmp_path):
    r = run_fundledger(cwd=tmp_path)
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert err.splitlines()[0] == "Usage: fundledger [OPTIONS] COMMAND [ARGS]..."
    assert "  verify " in err and "Traceback" not in err


def test_a_real_mistake_is_still_one_line(ledger):
    assert "No such command 'contracts'" in one_line(invoke(ledger, "contracts"), 2)
    assert "No such command 'ad'" in one_line(invoke(ledger, "contract", "ad"), 2)


# --- the message for a field of the wrong JSON type -------------------------------------------


def test_a_string_scale_is_named_as_a_string(log):
    """A contract entry re-signed with "scale": "8" (a string, the rules give
    the number 8): the reason says what is wrong, not "'8' but '8'"."""
    import tamper_util as t

    conn = t.open_rw(log.db)
    obj = t.entry_obj(t.entry_data(conn, 0))
    assert obj["scale"] == 8
    obj["scale"] = "8"
    t.set_data(conn, 0, t.sign(t.canonical(obj), log.signer), sync=True)
    conn.commit()
    conn.close()
    with pytest.raises(VerificationError) as e:
        verify.verify_path(log.db)
    assert e.value.seq == 0
    assert e.value.reason == 'scale is a string "8" but the rules give a number 8'
    r = invoke(log, "verify")
    assert one_line(r, 1) == 'fundledger: seq 0: scale is a string "8" but the rules give a number 8\n'


# --- a witness given twice ----------------------------------------------------------------------


@pytest.fixture
def cosigned(log, tmp_path):
    """``(ledger, witness vkey, witness vkey file)``: the latest checkpoint
    carries one witness's cosignature."""
    from ledger import api, witness

    key, state = str(tmp_path / "w.key"), str(tmp_path / "w.json")
    w = witness.init_witness(key, state, "witness.example", str(tmp_path / "w.vkey"))
    witness.add_log(state, log.store.vkey)
    line = witness.add_checkpoint(key, state, api.consistency(log.store, old_size=0))
    api.attach_cosignatures(log.store, line, [w.verifier()])
    return log, w.verifier().vkey(), str(tmp_path / "w.vkey")


def test_one_witness_given_twice_does_not_make_a_quorum_of_two(cosigned):
    log, wk, wfile = cosigned
    assert invoke(log, "verify", "--witness", wk).exit_code == 0
    for again in (wk, wfile):  # the same key inline twice, or inline and as its file
        err = one_line(invoke(log, "verify", "--witness", wk, "--witness", again, "--quorum", "2"), 2)
        assert "is given twice: each witness counts once" in err
    with pytest.raises(InputError, match="given twice"):
        verify.verify_path(log.db, witnesses=[wk, wk], quorum=2)


def test_one_witness_key_under_two_names_is_one_witness(cosigned):
    """The same public key renamed is still one witness: refused too."""
    log, wk, _ = cosigned
    v = note.parse_vkey(wk)
    renamed = note.Verifier("other.example", note.key_id("other.example", v.alg, v.public_key), v.public_key,
                            v.alg).vkey()
    assert note.parse_vkey(renamed).public_key == v.public_key
    err = one_line(invoke(log, "verify", "--witness", wk, "--witness", renamed, "--quorum", "2"), 2)
    assert "given twice" in err
