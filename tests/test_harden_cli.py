"""The command line's rough edges: the help a new user sees, malformed state
and trusted files, repeated witnesses, ``verify --state`` on a live log, a
database no checkpoint covers yet, and the message for a mistyped field."""

from __future__ import annotations

import base64
import json
import os
import sqlite3

import pytest
from state_util import legacy_json, read_state
from click.testing import CliRunner
from conftest import ORIGIN, run_fundledger

from ledger.format import note
from ledger.verify import run as verify
from ledger.verify.checkpoint import MAX_CHECKPOINT_BYTES
from ledger.verify.state import MAX_STATE_BYTES, VerifierState
from ledger.cli import cli
from ledger.errors import InputError, VerificationError


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
    from ledger.ops import api
    from ledger.ops import witness

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


# --- malformed state and trusted files ----------------------------------------------------------


def _sparse(path, size: int) -> str:
    """A file of ``size`` bytes that takes no space (a hole)."""
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def _fifo(path) -> str:
    os.mkfifo(path)
    return str(path)


def _state_edit(edit):
    def make(saved: dict, path) -> str:
        obj = json.loads(json.dumps(saved))
        edit(obj)
        path.write_text(json.dumps(obj))
        return str(path)
    return make


def _raw(data: bytes):
    def make(saved, path) -> str:
        path.write_bytes(data)
        return str(path)
    return make


def _set(key, value):
    return _state_edit(lambda o: o.__setitem__(key, value))


def _fund(key, value):
    return _state_edit(lambda o: o["funds"][0].__setitem__(key, value))


BAD_STATES = {
    "empty": _raw(b""),
    "not JSON": _raw(b"{\"version\": 2,"),
    "not UTF-8": _raw(b"\xff\xfe{}"),
    "a JSON string": _raw(b'"state"'),
    "a JSON list": _raw(b"[1, 2]"),
    "JSON null": _raw(b"null"),
    "no version": _state_edit(lambda o: o.pop("version")),
    "unknown version": _set("version", 99),
    "a field missing": _state_edit(lambda o: o.pop("edge")),
    "an extra field": _set("extra", 1),
    "tree_size a string": _set("tree_size", "21"),
    "tree_size a boolean": _set("tree_size", True),
    "tree_size negative": _set("tree_size", -1),
    "tree_size too large": _set("tree_size", 1 << 64),
    "edge not a list": _set("edge", "AAAA"),
    "edge holds a number": _set("edge", [1, 2]),
    "edge not base64": _state_edit(lambda o: o["edge"].__setitem__(0, "!!not base64!!")),
    "edge hash short": _state_edit(lambda o: o["edge"].__setitem__(0, base64.b64encode(b"x" * 31).decode())),
    "prev short": _set("prev", base64.b64encode(b"x" * 31).decode()),
    "prev not base64": _set("prev", "***"),
    "seen not base64": _set("seen", "@@@@"),
    "seen not 8-byte hashes": _set("seen", base64.b64encode(b"x" * 7).decode()),
    "seen_key short": _set("seen_key", base64.b64encode(b"k" * 15).decode()),
    "seen_exact not pairs": _set("seen_exact", [["XBTUSDTM"]]),
    "seen_exact numbers": _set("seen_exact", [[1, 2]]),
    "keys empty": _set("keys", []),
    "keys not pairs": _set("keys", [["zero", "not a key"]]),
    "funds not a list": _set("funds", {}),
    "a fund not an object": _set("funds", ["XBTUSDTM"]),
    "a fund balance a string": _fund("balance", "20.00000000"),
    "a fund balance a float": _fund("balance", 2.5),
    "a fund balance negative": _fund("balance", -1),
    "a fund scale too large": _fund("scale", 99),
    "a fund type unknown": _fund("type", "quanto"),
    "a fund multiplier not a number": _fund("multiplier", "one"),
    "a fund field missing": _state_edit(lambda o: o["funds"][0].pop("paid")),
    "a fund last_time a number": _fund("last_time", 5),
    "over the size limit": lambda saved, path: _sparse(path, MAX_STATE_BYTES + 1),
    "a FIFO": lambda saved, path: _fifo(path),
    "another log's": _set("origin", "example.com/another-fund"),
}


@pytest.mark.parametrize("make", BAD_STATES.values(), ids=BAD_STATES.keys())
def test_a_malformed_verifier_state_is_one_line_and_exit_2(log, tmp_path, make):
    good = tmp_path / "good.state"
    assert invoke(log, "verify", "--state", good).exit_code == 0
    log.append(*liquidations(20, 3))
    log.checkpoint()
    bad = make(legacy_json(good), tmp_path / "bad.state")  # the JSON states older versions saved
    before = os.stat(bad)
    err = one_line(invoke(log, "verify", "--state", bad), 2)
    assert "bad.state" in err or "the saved" in err
    after = os.stat(bad)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
    with pytest.raises(InputError):
        verify.verify_path(log.db, state_path=bad)
    # the good state still resumes
    assert invoke(log, "verify", "--state", good).exit_code == 0


# the same damage in the state row of an SQLite state (the "seen" and "version"
# of a JSON state are the ids table and a column there)
ROW_CASES = {k: v for k, v in BAD_STATES.items()
             if k not in ("over the size limit", "a FIFO", "no version", "unknown version")
             and not k.startswith("seen not")}


@pytest.mark.parametrize("make", ROW_CASES.values(), ids=ROW_CASES.keys())
def test_a_malformed_state_row_is_one_line_and_exit_2(log, tmp_path, make):
    good = tmp_path / "good.state"
    assert invoke(log, "verify", "--state", good).exit_code == 0
    text = open(make(legacy_json(good), tmp_path / "edit.json"), "rb").read().decode("utf-8", "replace")
    try:
        obj = json.loads(text)
        if isinstance(obj, dict):
            obj.pop("version", None), obj.pop("seen", None)
            text = json.dumps(obj)
    except ValueError:
        pass
    bad = tmp_path / "bad.state"
    bad.write_bytes(good.read_bytes())
    conn = sqlite3.connect(bad)
    conn.execute("UPDATE state SET body = ?", (text,))
    conn.commit()
    conn.close()
    before = bad.read_bytes()
    err = one_line(invoke(log, "verify", "--state", bad), 2)
    assert "bad.state" in err or "the saved" in err
    assert bad.read_bytes() == before


def test_a_directory_as_state_is_one_line_and_exit_2(log, tmp_path):
    (tmp_path / "dir").mkdir()
    one_line(invoke(log, "verify", "--state", tmp_path / "dir"), 2)
    with pytest.raises(InputError, match="not a regular file"):
        verify.verify_path(log.db, state_path=str(tmp_path / "dir"))
    one_line(invoke(log, "verify", "--state", tmp_path / "nowhere" / "s.state"), 2)


def test_a_state_of_this_log_that_it_does_not_extend_fails_verification(log, tmp_path):
    """Well-formed and of this origin, but from another history: exit 1."""
    from ledger.store.store import Store

    good = tmp_path / "good.state"
    assert invoke(log, "verify", "--state", good).exit_code == 0
    other = Store.create(str(tmp_path / "fork.db"), log.store.origin, log.store.vkey)
    other.append([{"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8}], [log.signer])
    forked = liquidations(0, 25)
    forked[7]["fill_price"] = "40500"
    other.append(forked, [log.signer])
    other.add_checkpoint([log.signer])
    other.close()
    r = invoke(log, "verify", str(tmp_path / "fork.db"), "--state", good)
    one_line(r, 1)


def test_a_malformed_state_in_a_real_process(log, tmp_path):
    state = tmp_path / "s.state"
    state.write_text('{"version": 2, "tree_size": "5"}')
    r = run_fundledger("verify", "--db", log.db, "--state", state)
    err = r.stderr.decode()
    assert r.returncode == 2 and err.startswith("fundledger: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def _checkpoint_of(origin: str, signer=None) -> bytes:
    signer = signer or note.generate_signer(origin)
    return note.sign_note(note.Checkpoint(origin, 1, bytes(32)).text(), [signer])


BAD_TRUSTED = {
    "empty": lambda log, p: p.write_bytes(b""),
    "text": lambda log, p: p.write_bytes(b"hello\n"),
    "binary": lambda log, p: p.write_bytes(bytes(range(256))),
    "an entry, not a checkpoint": lambda log, p: p.write_bytes(log.store.entry(0)),
    "a checkpoint without signature": lambda log, p: p.write_bytes(log.store.latest_checkpoint()[4].split(b"\n\n")[0] + b"\n"),
    "over the size limit": lambda log, p: _sparse(p, MAX_CHECKPOINT_BYTES + 1),
    "a FIFO": lambda log, p: _fifo(p),
    "another origin, with --vkey": lambda log, p: p.write_bytes(_checkpoint_of("example.com/another-fund")),
}


@pytest.mark.parametrize("make", BAD_TRUSTED.values(), ids=BAD_TRUSTED.keys())
def test_a_trusted_file_that_is_plainly_not_a_checkpoint_is_exit_2(log, tmp_path, make):
    path = tmp_path / "trusted"
    make(log, path)
    vkey = ["--vkey", log.store.vkey]
    err = one_line(invoke(log, "verify", "--trusted", path, *vkey), 2)
    assert "trusted" in err
    with pytest.raises(InputError):
        verify.verify_path(log.db, log.store.vkey, trusted_path=str(path))


def test_a_trusted_directory_or_missing_file_is_exit_2(log, tmp_path):
    (tmp_path / "dir").mkdir()
    one_line(invoke(log, "verify", "--trusted", tmp_path / "dir"), 2)
    one_line(invoke(log, "verify", "--trusted", tmp_path / "missing"), 2)
    with pytest.raises(InputError, match="not a regular file"):
        verify.verify_path(log.db, trusted_path=str(tmp_path / "dir"))


def test_a_trusted_checkpoint_the_log_does_not_back_is_exit_1(log, tmp_path):
    """Checkpoints that are checkpoints: their failures are alarms."""
    path = tmp_path / "trusted"
    # another origin, the log key published by the source: the source may be an impostor
    path.write_bytes(_checkpoint_of("example.com/another-fund"))
    assert "origin" in one_line(invoke(log, "verify", "--trusted", path), 1)
    # this origin, but signed by a key that is not the log's
    path.write_bytes(_checkpoint_of(ORIGIN))
    one_line(invoke(log, "verify", "--trusted", path, "--vkey", log.store.vkey), 1)
    # this log's key, but a root the log does not have at that size
    path.write_bytes(_checkpoint_of(ORIGIN, log.signer))
    assert "rewritten" in one_line(invoke(log, "verify", "--trusted", path, "--vkey", log.store.vkey), 1)
    # and the real one passes
    path.write_bytes(log.store.latest_checkpoint()[4])
    assert invoke(log, "verify", "--trusted", path, "--vkey", log.store.vkey).exit_code == 0


def _legacy_json(path):
    """The state at ``path`` (SQLite) as earlier versions wrote it (JSON)."""
    from ledger.ops import witness_state

    with witness_state.opened(str(path)) as conn:
        logs = witness_state.all_logs(conn)
    return {"logs": {log.origin: {"vkey": log.keys[0][1], "size": log.size, "checkpoint": log.checkpoint,
                                  "root": base64.b64encode(log.root).decode(),
                                  "keys": [{"vkey": v, "from_size": f} for f, v in log.keys]} for log in logs}}


def _witness_edit(edit):
    """A JSON state of an earlier version, edited: refused when migrated."""
    def make(path):
        obj = _legacy_json(path)
        edit(obj)
        path.write_text(json.dumps(obj))
    return make


def _sql_edit(sql):
    def make(path):
        conn = sqlite3.connect(path)
        conn.executescript(sql)
        conn.close()
    return make


def _sqlite_not_a_state(path):
    path.unlink()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.close()


def _log_field(key, value):
    def edit(o):
        (log,) = o["logs"].values()
        if value is KeyError:
            del log[key]
        else:
            log[key] = value
    return _witness_edit(edit)


BAD_WITNESS_STATES = {
    "empty": lambda p: p.write_bytes(b""),
    "not JSON": lambda p: p.write_bytes(b"{"),
    "not UTF-8": lambda p: p.write_bytes(b"\xff"),
    "a JSON list": lambda p: p.write_bytes(b"[]"),
    "logs a list": lambda p: p.write_bytes(b'{"logs": []}'),
    "a log a string": _witness_edit(lambda o: o["logs"].update({ORIGIN: "x"})),
    "vkey missing": _log_field("vkey", KeyError),
    "vkey not a key": _log_field("vkey", "not a key"),
    "vkey of another log": _log_field("vkey", note.generate_signer("other.example").verifier().vkey()),
    "size missing": _log_field("size", KeyError),
    "size a string": _log_field("size", "0"),
    "size negative": _log_field("size", -1),
    "size a boolean": _log_field("size", False),
    "root not base64": _log_field("root", "%%%"),
    "root short": _log_field("root", base64.b64encode(b"r" * 31).decode()),
    "root a number": _log_field("root", 0),
    "checkpoint a number": _log_field("checkpoint", 7),
    "over the size limit": lambda p: _sparse(p, (16 << 20) + 1),
    "a FIFO": lambda p: (os.unlink(p), _fifo(p)),
    "SQLite, not a state": _sqlite_not_a_state,
    "SQLite, root short": _sql_edit("UPDATE log SET root = 'cnI='"),
    "SQLite, keys not JSON": _sql_edit("UPDATE log SET keys = '['"),
    "SQLite, no key": _sql_edit("UPDATE log SET keys = '[]'"),
    "SQLite, key of another log": _sql_edit("UPDATE log SET keys = '[{\"vkey\": \"%s\", \"from_size\": 0}]'"
                                            % note.generate_signer("other.example").verifier().vkey()),
    "SQLite, another format": _sql_edit("UPDATE witness_meta SET value = 'other'"),
    "SQLite, truncated": lambda p: p.write_bytes(p.read_bytes()[:200]),
}


@pytest.mark.parametrize("make", BAD_WITNESS_STATES.values(), ids=BAD_WITNESS_STATES.keys())
def test_a_malformed_witness_state_is_one_line_and_exit_2(log, tmp_path, make):
    from ledger.ops import api

    w = {"--key": str(tmp_path / "w.key"), "--state": str(tmp_path / "w.json")}
    wargs = [x for kv in w.items() for x in kv]
    assert invoke(log, "witness", "init", "witness.example", *wargs).exit_code == 0
    assert invoke(log, "witness", "add-log", log.store.vkey, *wargs).exit_code == 0
    (tmp_path / "req").write_bytes(api.consistency(log.store, old_size=0))
    state = tmp_path / "w.json"
    make(state)
    before = os.stat(state)
    for args in (["add-checkpoint", tmp_path / "req"], ["add-log", note.generate_signer("b.example").verifier().vkey()]):
        err = one_line(invoke(log, "witness", *args, *wargs), 2)
        assert "w.json" in err
        after = os.stat(state)
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def test_a_witness_state_in_a_missing_directory_is_exit_2(log, tmp_path):
    err = one_line(invoke(log, "witness", "add-log", log.store.vkey, "--state", tmp_path / "no" / "w.json"), 2)
    assert "w.json" in err


# --- verify --state on a log with entries after its checkpoint ----------------------------------


def _comparable(state: dict) -> dict:
    """A saved state less its random id-hash key and the hashes made with it."""
    return {k: v for k, v in state.items() if k not in ("seen_key", "ids")}


def test_state_is_saved_at_the_checkpoint_when_entries_follow_it(log, tmp_path):
    from publish.export import export

    export(log.store, str(tmp_path / "at-21"))  # the log as it was at its checkpoint
    log.append(*liquidations(20, 10))  # a live log: entries after the checkpoint at 21
    state = tmp_path / "s.state"
    r = invoke(log, "verify", "--state", state)
    assert r.exit_code == 0, r.output
    assert "checkpoint at size 21" in r.stdout
    assert "10 entries after it: checked, not yet covered by a checkpoint" in r.stdout
    assert f"state saved in {state} at the checkpoint of size 21" in r.stdout
    saved = read_state(state)
    assert saved["tree_size"] == 21 and len(saved["ids"]) == 20
    # exactly the state a run that stopped at the checkpoint keeps
    verify.verify_path(str(tmp_path / "at-21"), state_path=str(tmp_path / "ref.state"))
    assert _comparable(saved) == _comparable(read_state(tmp_path / "ref.state"))
    # and it resumes: the next run reads only what the new checkpoint adds
    log.checkpoint()
    again = verify.verify_path(log.db, state_path=str(state))
    assert again.entries_checked == 10 and again.tree_size == 31
    full = verify.verify_path(log.db)
    assert again.root == full.root and again.as_json()["contracts"] == full.as_json()["contracts"]


@pytest.mark.parametrize("workers", [1, 2])
def test_state_at_a_checkpoint_inside_a_chunk_matches_a_run_that_stopped_there(ledger, tmp_path, workers):
    """Several chunks, the checkpoint in the middle of one, worker processes:
    the funds and ids kept are those at the checkpoint, not at the end."""
    from publish.export import export

    ledger.contract()
    ledger.append(*liquidations(0, 1500))
    ledger.checkpoint()
    export(ledger.store, str(tmp_path / "at-cp"))
    ledger.append(*liquidations(1500, 700))
    state = tmp_path / "s.state"
    r = verify.verify_path(ledger.db, workers=workers, state_path=str(state))
    assert r.tree_size == 2201 and r.checkpoint_size == 1501 and r.entries_checked == 2201
    verify.verify_path(str(tmp_path / "at-cp"), state_path=str(tmp_path / "ref.state"))
    saved = read_state(state)
    assert _comparable(saved) == _comparable(read_state(tmp_path / "ref.state")) and len(saved["ids"]) == 1500
    # the ids kept are those of the first 1500 liquidations: a replay of a later id is not "seen"
    book, *_ = VerifierState.load(str(state)).restore()
    assert ("XBTUSDTM", "L-1499") in book.seen and ("XBTUSDTM", "L-1500") not in book.seen
    ledger.checkpoint()
    assert verify.verify_path(ledger.db, workers=workers, state_path=str(state)).entries_checked == 700


# --- a database no checkpoint covers yet ---------------------------------------------------------


@pytest.fixture
def new_log(ledger):
    """A contract and five liquidations, never checkpointed."""
    ledger.contract()
    ledger.append(*liquidations(0, 5))
    return ledger


def test_a_database_without_a_checkpoint_verifies_and_says_so(new_log):
    r = invoke(new_log, "verify")
    assert r.exit_code == 0, r.output
    assert "verified 6 entries" in r.stdout
    assert "no signed checkpoint covers these entries yet" in r.stdout
    j = json.loads(invoke(new_log, "verify", "--json").stdout)
    assert j["ok"] is True and j["checkpoint_size"] is None
    assert j["size"] == 6 and j["entries_checked"] == 6 and j["contracts"][0]["liquidations"] == 5
    import tamper_util as t

    leaves = [t.leaf(new_log.store.entry(seq)) for seq in range(6)]
    assert j["root"] == base64.b64encode(t.mth(leaves)).decode()


def test_a_database_without_a_checkpoint_in_a_real_process(new_log):
    r = run_fundledger("verify", "--db", new_log.db, "--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["ok"] is True and j["checkpoint_size"] is None and j["size"] == 6


def test_an_empty_database_without_a_checkpoint_verifies(ledger):
    j = json.loads(invoke(ledger, "verify", "--json").stdout)
    assert j["ok"] is True and j["size"] == 0 and j["checkpoint_size"] is None


def test_a_database_without_a_checkpoint_is_still_checked_in_full(new_log):
    """No checkpoint is no excuse: a wrong amount, re-signed, still fails."""
    import tamper_util as t

    conn = t.open_rw(new_log.db)
    obj = t.entry_obj(t.entry_data(conn, 3))
    obj["balance"] = obj["balance"].replace("0.", "1.", 1) if obj["balance"].startswith("0.") else "1" + obj["balance"]
    t.set_data(conn, 3, t.sign(t.canonical(obj), new_log.signer), sync=True)
    conn.commit()
    conn.close()
    r = invoke(new_log, "verify")
    assert "seq 3" in one_line(r, 1)
    j = json.loads(invoke(new_log, "verify", "--json").stdout)
    assert j["ok"] is False and j["seq"] == 3


def test_an_export_without_a_checkpoint_still_fails(log, tmp_path):
    from publish.export import export

    export(log.store, str(tmp_path / "out"))
    os.unlink(tmp_path / "out" / "checkpoint")
    assert "no signed checkpoint" in one_line(invoke(log, "verify", tmp_path / "out", "--vkey", log.store.vkey), 1)


def test_without_a_checkpoint_what_needs_one_fails(new_log, tmp_path, cosigned_elsewhere):
    """A trusted checkpoint, witnesses or a saved state mean the log had a
    checkpoint: a database without one now fails (exit 1)."""
    trusted, wk, state = cosigned_elsewhere
    for args in (["--trusted", trusted], ["--witness", wk], ["--state", state]):
        assert "no signed checkpoint" in one_line(invoke(new_log, "verify", *args), 1)


@pytest.fixture
def cosigned_elsewhere(tmp_path):
    """A checkpoint file, a witness key and a saved state of the test origin,
    from another ledger of it."""
    from conftest import Ledger

    from ledger.ops import api

    d = tmp_path / "elsewhere"
    d.mkdir()
    store, signer = api.init_ledger(str(d / "fund.db"), str(d / "fund.key"), ORIGIN)
    other = Ledger(d, str(d / "fund.db"), str(d / "fund.key"), store, signer)
    other.contract()
    other.checkpoint()
    (d / "trusted").write_bytes(store.latest_checkpoint()[4])
    verify.verify_path(other.db, state_path=str(d / "s.state"))
    wk = note.generate_signer("witness.example", note.ALG_COSIGNATURE_V1).verifier().vkey()
    store.close()
    return str(d / "trusted"), wk, str(d / "s.state")


def test_state_asked_for_without_a_checkpoint_says_why_none_is_saved(new_log, tmp_path):
    state = tmp_path / "s.state"
    r = invoke(new_log, "verify", "--state", state)
    assert r.exit_code == 0, r.output
    assert r.stderr == f"fundledger: no state saved in {str(state)!r}: no signed checkpoint covers the entries yet\n"
    assert not state.exists()
    r = invoke(new_log, "verify", "--state", state, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"] is True and "no state saved" in r.stderr
    assert not state.exists()


def test_a_file_name_cannot_forge_a_second_error_line(log, tmp_path):
    bad = tmp_path / "x\nfundledger: verified"
    bad.write_text("not a state")
    for args in (["verify", "--state", bad], ["verify", "--trusted", bad],
                 ["witness", "add-log", log.store.vkey, "--state", bad]):
        one_line(invoke(log, *args), 2)
