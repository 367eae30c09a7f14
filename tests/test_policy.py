"""Witness policies (c2sp.org/tlog-policy): the parser accepts the spec's
syntax and nothing else, the quorum is evaluated as the spec says, and
`fundledger verify --policy` holds a checkpoint to it, combined with the
log's own key history."""

from __future__ import annotations

import pytest
from conftest import run_fundledger

from ledger.errors import FormatError, InputError, VerificationError
from ledger.format import note
from ledger.format.policy import MAX_POLICY_BYTES, parse_policy
from ledger.ops import api, witness
from ledger.verify.light import check_fund_path
from ledger.verify.run import verify_path
from publish.export import export


def wkey(name: str) -> str:
    return note.generate_signer(name, note.ALG_COSIGNATURE_V1).verifier().vkey()


LOG = note.generate_signer("example.com/log").verifier().vkey()
X = [wkey(f"x{i}.example") for i in range(3)]
Y = [wkey(f"y{i}.example") for i in range(3)]
SPEC_EXAMPLE = f"""log {LOG}

witness X1 {X[0]}
witness X2 {X[1]}
witness X3 {X[2]}
group X-witnesses 2 X1 X2 X3

witness Y1 {Y[0]}
witness Y2 {Y[1]}
witness Y3 {Y[2]}
group Y-witnesses any Y1 Y2 Y3

group X-and-Y all X-witnesses Y-witnesses
quorum X-and-Y
"""


def test_the_spec_example_and_its_quorum():
    p = parse_policy(SPEC_EXAMPLE.encode())
    assert [v.vkey() for v, _ in p.logs] == [LOG] and len(p.witnesses) == 6 and p.quorum == "X-and-Y"
    assert p.groups["X-witnesses"].threshold == 2 and p.groups["Y-witnesses"].threshold == 1
    assert p.groups["X-and-Y"].threshold == 2
    assert p.satisfied({"X1", "X3", "Y2"})
    assert not p.satisfied({"X1", "Y1", "Y2", "Y3"})  # only one X
    assert not p.satisfied({"X1", "X2", "X3"})  # no Y
    assert p.unmet({"X1", "Y1"}) == ["X-and-Y (1 of 2 witnessed, 2 needed)", "X-witnesses (1 of 3 witnessed, 2 needed)"]


def test_comments_blank_lines_tabs_urls_and_quorum_none():
    text = f"  # a comment\n\n\tlog\t{LOG}  https://log.example/ \nwitness W {X[0]} https://w.example/sub\nquorum none\n"
    p = parse_policy(text.encode())
    assert p.logs[0][1] == "https://log.example/" and p.witnesses["W"].url == "https://w.example/sub"
    assert p.satisfied(set())
    single = parse_policy(f"witness W {X[0]}\nquorum W\n".encode())
    assert single.satisfied({"W"}) and not single.satisfied(set()) and single.unmet(set()) == ["W (no valid cosignature)"]


def test_names_are_opaque_octets():
    kelvin = "\u212a".encode()
    p = parse_policy(b"witness K " + X[0].encode() + b"\nwitness " + kelvin + b" " + X[1].encode()
                     + b"\ngroup g all K " + kelvin + b"\nquorum g\n")
    assert len(p.witnesses) == 2 and len(p.groups["g"].members) == 2


BAD = {
    "unknown keyword": f"logs {LOG}\nquorum none\n",
    "no quorum": f"log {LOG}\n",
    "two quorums": "quorum none\nquorum none\n",
    "quorum of an unknown name": f"witness W {X[0]}\nquorum V\n",
    "a forward reference": f"group g any W\nwitness W {X[0]}\nquorum g\n",
    "a quorum before its group": f"witness W {X[0]}\nquorum g\ngroup g any W\n",
    "the same key twice": f"witness W {X[0]}\nwitness V {X[0]}\nquorum W\n",
    "the same public key under another name": f"witness W {X[0]}\nwitness V {X[0].replace('x0.example', 'other')}\nquorum W\n",
    "a log key twice": f"log {LOG}\nlog {LOG}\nquorum none\n",
    "a name taken": f"witness W {X[0]}\nwitness W {X[1]}\nquorum W\n",
    "none as a name": f"witness none {X[0]}\nquorum none\n",
    "none as a member": f"witness W {X[0]}\ngroup g any none\nquorum g\n",
    "a member twice": f"witness W {X[0]}\ngroup g all W W\nquorum g\n",
    "a member of two groups": f"witness W {X[0]}\nwitness V {X[1]}\ngroup g any W\ngroup h any W V\nquorum h\n",
    "threshold 0": f"witness W {X[0]}\ngroup g 0 W\nquorum g\n",
    "threshold above n": f"witness W {X[0]}\ngroup g 2 W\nquorum g\n",
    "threshold with a leading zero": f"witness W {X[0]}\nwitness V {X[1]}\ngroup g 01 W V\nquorum g\n",
    "a group without members": "group g any\nquorum none\n",
    "a log key of a witness's type": f"log {X[0]}\nquorum none\n",
    "a witness key of a log's type": f"witness W {LOG}\nquorum W\n",
    "not a vkey": "witness W nonsense\nquorum W\n",
    "an extra item": f"witness W {X[0]} https://w.example/ more\nquorum W\n",
    "a comment after an item": "quorum none # trailing\n",
    "a carriage return": "quorum none\r\n",
    "a NUL": "quorum none\n\x00\n",
    "no newline at the end": "quorum none",
}


@pytest.mark.parametrize("text", BAD.values(), ids=BAD.keys())
def test_anything_else_is_refused_naming_why(text):
    with pytest.raises(FormatError):
        parse_policy(text.encode())


def test_limits():
    with pytest.raises(FormatError, match="at most"):
        parse_policy(b"#" * MAX_POLICY_BYTES + b"\nquorum none\n")
    many = "".join(f"witness W{i} {wkey(f'w{i}.example')}\n" for i in range(65)) + "quorum W0\n"
    with pytest.raises(FormatError, match="at most 64"):
        parse_policy(many.encode())


# --- verify --policy -------------------------------------------------------------


@pytest.fixture
def cosigned(ledger2, tmp_path):
    """A format-2 log whose checkpoint two of three witnesses cosigned, exported."""
    ledger2.append({"kind": "contract", "symbol": "AAA", "currency": "USDT", "scale": 2, "multiplier": "1"})
    ledger2.append(*[{"kind": "liquidation", "contract": "AAA", "id": f"L-{i}", "side": "long", "qty": "1",
                      "bankruptcy_price": "100", "fill_price": "99.5"} for i in range(20)])
    ledger2.checkpoint()
    keys = []
    for i in range(3):
        key, state = str(tmp_path / f"w{i}.key"), str(tmp_path / f"w{i}.json")
        keys.append(witness.init_witness(key, state, f"w{i}.example").verifier())
        witness.add_log(state, ledger2.store.vkey)
        if i < 2:
            line = witness.add_checkpoint(key, state, api.consistency(ledger2.store, old_size=0))
            api.attach_cosignatures(ledger2.store, line, [keys[i]])
    out = str(tmp_path / "out")
    export(ledger2.store, out)
    return ledger2, out, keys


def write_policy(tmp_path, text: str) -> str:
    path = tmp_path / "policy.txt"
    path.write_text(text)
    return str(path)


def test_verify_holds_the_checkpoint_to_the_policy(cosigned, tmp_path):
    ledger2, out, keys = cosigned
    w = "".join(f"witness W{i} {k.vkey()}\n" for i, k in enumerate(keys))
    two = write_policy(tmp_path, f"log {ledger2.store.vkey}\n{w}group g 2 W0 W1 W2\nquorum g\n")
    r = verify_path(out, policy_path=two)
    assert sorted(r.cosignatures) == ["w0.example", "w1.example"]
    assert check_fund_path(out, "AAA", policy_path=two).cosigned_by == ["w0.example", "w1.example"]
    three = write_policy(tmp_path, f"log {ledger2.store.vkey}\n{w}group g all W0 W1 W2\nquorum g\n")
    with pytest.raises(VerificationError, match=r"quorum: g \(2 of 3 witnessed, 3 needed\)"):
        verify_path(out, policy_path=three)
    with pytest.raises(VerificationError, match="quorum"):
        check_fund_path(out, "AAA", policy_path=three)


def test_the_log_key_in_force_must_be_in_the_policy(cosigned, tmp_path):
    ledger2, out, keys = cosigned
    other = note.generate_signer(ledger2.store.origin).verifier().vkey()  # same origin, another key
    p = write_policy(tmp_path, f"log {other}\nwitness W0 {keys[0].vkey()}\nquorum W0\n")
    with pytest.raises(VerificationError, match="not among the policy's logs"):
        verify_path(out, policy_path=p)
    with pytest.raises(VerificationError, match="not among the policy's logs"):
        check_fund_path(out, "AAA", policy_path=p)
    anylog = write_policy(tmp_path, f"witness W0 {keys[0].vkey()}\nquorum W0\n")  # no log lines: any log
    assert verify_path(out, policy_path=anylog).cosignatures == ["w0.example"]


def test_the_cli_says_it_in_one_line(cosigned, tmp_path):
    ledger2, out, keys = cosigned
    p = write_policy(tmp_path, f"witness W2 {keys[2].vkey()}\nquorum W2\n")
    r = run_fundledger("verify", out, "--policy", p)
    assert r.returncode == 1 and r.stderr.decode().count("\n") == 1 and b"W2 (no valid cosignature)" in r.stderr
    bad = write_policy(tmp_path, "quorum nobody\n")
    r = run_fundledger("verify", out, "--policy", bad)
    assert r.returncode == 2 and b"policy line 1" in r.stderr and r.stderr.decode().count("\n") == 1
    r = run_fundledger("verify", out, "--policy", p, "--witness", keys[0].vkey())
    assert r.returncode == 2 and b"not both" in r.stderr
    with pytest.raises(InputError):
        verify_path(out, policy_path=str(tmp_path / "missing.txt"))
