"""Auditing witnesses (docs/WITNESS.md, "Auditing witnesses"), tested as
attacks.

The attacker is a dishonest operator: it holds the real log key, so every
checkpoint it asks the witness to cosign is signed by the key in force and
extends, append-only, the one the witness cosigned before; only the new
entries break a fund rule or a format-2 commitment. It publishes those
entries as tiles and entry bundles (the forger of tests/test_light_attacks.py
re-signs them with the real key). A plain witness cosigns such a
checkpoint; the auditing witness must refuse it, naming the seq and why,
over HTTP (a real `witness serve` process fetching from a real HTTP server
on loopback) and on the command line, leaving both its states as they were.
"""

from __future__ import annotations

import base64
import functools
import http.server
import os
import shutil
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import ORIGIN, run_fundledger
from tamper_util import bundle, bundle_entries, leaf, mth
from test_light_attacks import at, publish, rewrite
from test_witness_http import Server, submit

from ledger.errors import FormatError, InputError
from ledger.format import consistency, note
from ledger.format.policy import AUDIT_STATEMENT, parse_policy
from ledger.ops import api, witness, witness_audit, witness_state
from ledger.tlog import merkle
from ledger.tlog.proof import prove_consistency
from ledger.tlog.tiles import entries_path
from ledger.verify.light import check_fund_path
from ledger.verify.state import VerifierState
from publish.export import export

XBT = "XBTUSDTM"


def liq(i, qty="1", fill="39010", side="long", contract=XBT):
    return {"kind": "liquidation", "contract": contract, "id": f"L-{i}", "side": side, "qty": qty,
            "bankruptcy_price": "39000", "fill_price": fill}


# --- a static web server for the log's tiles, counting what it serves --------------------------


class Tiles:
    """The log's export directory served over HTTP on loopback (any web
    server would do), with every path and byte it served."""

    def __init__(self, root: Path):
        self.root, self.served = root, []
        tiles = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def copyfile(self, source, outputfile):
                data = source.read()
                tiles.served.append((self.path, len(data)))
                outputfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def take(self) -> list[tuple[str, int]]:
        out, self.served = self.served, []
        return out

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def tiles(tmp_path):
    t = Tiles(tmp_path / "site")
    (tmp_path / "site").mkdir()
    yield t
    t.close()


# --- the log, the auditing witness, and the forger ------------------------------------------------


class World:
    """A format-2 ledger published to ``site``, and an auditing witness of it."""

    def __init__(self, ledger, tmp_path: Path, url: str | None = None):
        self.ledger, self.tmp, self.site = ledger, tmp_path, tmp_path / "site"
        self.site.mkdir(exist_ok=True)
        self.key, self.state = str(tmp_path / "a.key"), str(tmp_path / "a.db")
        self.w = witness.init_witness(self.key, self.state, "audit.example", audit=True)
        ledger.contract(XBT, multiplier="0.001")
        ledger.append(*[liq(i, qty="1000") for i in range(5)])
        ledger.checkpoint()
        self.publish()
        witness.add_log(self.state, ledger.store.vkey, url or str(self.site))

    @property
    def store(self):
        return self.ledger.store

    def publish(self):
        export(self.store, str(self.site))

    def datas(self) -> list[bytes]:
        return [d for _, d in self.store.iter_entries(0, self.store.size())]

    def held(self) -> int:
        return witness.cosigned(self.state, ORIGIN).size

    def audited(self) -> int | None:
        path = witness_audit.state_path(self.state, ORIGIN)
        return VerifierState.load(path).tree_size if os.path.exists(path) else None

    def request(self) -> bytes:
        return api.consistency(self.store, old_size=self.held())

    def cosign(self, request: bytes | None = None) -> bytes:
        return witness.add_checkpoint(self.key, self.state, request or self.request())

    def grow(self, n: int, first: int, signer=None, **kw) -> None:
        self.store.append([liq(first + i, **kw) for i in range(n)], [signer or self.ledger.signer])
        self.store.add_checkpoint([signer or self.ledger.signer])
        self.publish()


@pytest.fixture
def world(ledger2, tmp_path):
    return World(ledger2, tmp_path)


class MemTree:
    """Stored hashes of a list of entries (a HashReader), to prove consistency."""

    def __init__(self, datas: list[bytes]):
        self.h: dict[int, bytes] = {}
        for n, d in enumerate(datas):
            first = merkle.stored_hash_index(0, n)
            hs = merkle.stored_hashes_for_leaf(n, leaf(d), self)
            self.h.update(zip(range(first, first + len(hs)), hs))

    def read_hashes(self, indexes):
        return [self.h[i] for i in indexes]


def forged_request(datas: list[bytes], old: int, signers) -> bytes:
    """An add-checkpoint request for the log ``datas``, from ``old``, its
    checkpoint signed by ``signers`` (the real key)."""
    proof = prove_consistency(len(datas), old, MemTree(datas)) if old else []
    cp = note.sign_note(note.Checkpoint(ORIGIN, len(datas), mth([leaf(d) for d in datas])).text(), signers)
    return consistency.format_consistency(consistency.ConsistencyProof(old, tuple(proof), cp))


def forge(w: World, tweak, extra: int = 6, hide=()) -> tuple[list[bytes], bytes, int]:
    """The honest log cosigned at its size N, then ``extra`` new entries
    (and a state entry) re-signed with the real key with ``tweak`` applied,
    published to the site: (forged entries, request from N, N)."""
    w.cosign()
    n = w.held()
    honest_dir = w.tmp / "honest.db"
    src = sqlite3.connect(w.ledger.db)
    dst = sqlite3.connect(str(honest_dir))
    src.backup(dst)
    src.close()
    dst.close()
    from ledger.store.store import Store

    copy = Store.open(str(honest_dir))  # the honest future, whose inputs the forger re-signs
    copy.append([liq(100 + i, qty="700", fill="38000" if i % 2 else "39020") for i in range(extra)],
                [w.ledger.signer])
    copy.add_checkpoint([w.ledger.signer])
    datas = [d for _, d in copy.iter_entries(0, copy.size())]
    copy.close()
    forged = rewrite(datas, [w.ledger.signer], tweak=tweak, hide=hide)
    assert forged[:n] == w.datas()[:n]  # it extends what the witness cosigned
    shutil.rmtree(w.site)
    publish(w.site, forged, w.store.vkey, [w.ledger.signer], hide=hide)
    return forged, forged_request(forged, n, [w.ledger.signer]), n


ATTACKS = {
    # name: (the forgery, given the seq s of the first new entry; the seq it breaks, given s and the
    # size; the reason named). New entries: s credit, s+1 shortfall, s+2 credit, s+3 shortfall, ...
    "payout above the balance": (lambda s: at(s + 1, lambda o: o.update(paid="9999999.00000000", adl="0.00000000",
                                                                         balance="0.00000000")),
                                 lambda s, n: s + 1, "paid is '9999999.00000000' but the rules give"),
    "a credit never earned": (lambda s: at(s, lambda o: o.update(delta="5000.00000000")), lambda s, n: s,
                              "delta is '5000.00000000' but the rules give"),
    "a broken chain link": (lambda s: at(s + 2, lambda o: o.update(chain_seq=1)), lambda s, n: s + 2,
                            "chain_seq is '1' but the rules give"),
    "a wrong heads root": (lambda s: lambda seq, o: o.update(heads=base64.b64encode(bytes(32)).decode())
                           if o["kind"] == "state" and seq > s else None, lambda s, n: n - 1, "heads is"),
    "a duplicate liquidation id": (lambda s: at(s + 3, lambda o: o.update(id="L-1")), lambda s, n: s + 3,
                                   "duplicate: liquidation L-1 of XBTUSDTM is already recorded"),
}


# --- the attacks: by the file command ---------------------------------------------------------------


@pytest.mark.parametrize("name", ATTACKS)
def test_a_signed_extending_checkpoint_breaking_a_rule_is_refused_by_the_file_command(world, name):
    make, where, reason = ATTACKS[name]
    w = world
    forged, req, n = forge(w, make(w.store.size()))
    bad = where(n, len(forged))
    # a plain witness of the same log cosigns it: it only checks growth
    plain_key, plain_state = str(w.tmp / "p.key"), str(w.tmp / "p.db")
    witness.init_witness(plain_key, plain_state, "plain.example")
    witness.add_log(plain_state, w.store.vkey)
    witness.add_checkpoint(plain_key, plain_state, forged_request(forged[:n], 0, [w.ledger.signer]))
    witness.add_checkpoint(plain_key, plain_state, req)
    assert witness.cosigned(plain_state, ORIGIN).size == len(forged)
    # the auditing witness refuses it, naming the seq and the reason: exit 1
    before = (w.held(), w.audited(), open(w.state, "rb").read())
    (w.tmp / "req").write_bytes(req)
    p = run_fundledger("witness", "add-checkpoint", w.tmp / "req", "--key", w.key, "--state", w.state)
    err = p.stderr.decode()
    assert p.returncode == 1 and p.stdout == b"", err
    assert f"seq {bad}: refused by the audit ({AUDIT_STATEMENT})" in err and reason in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(witness_audit.AuditFailed) as e:
        w.cosign(req)
    assert e.value.seq == bad and witness.http_status(e.value) == 422
    assert (w.held(), w.audited(), open(w.state, "rb").read()) == before == (n, n, before[2])


def test_a_host_hiding_the_earlier_entry_cannot_pass_a_duplicate_id(world):
    """The id set is keyed hashes; a hit is settled by reading the log
    again. The host serves the old bundle without the earlier L-1: those
    bytes do not give the root the witness cosigned, so it refuses."""
    w = world
    forged, req, n = forge(w, ATTACKS["a duplicate liquidation id"][0](w.store.size()))
    path = w.site / entries_path(0, len(forged))
    items = [e for _, e in bundle_entries(path.read_bytes())]
    items[3] = items[2]  # the earlier L-1, at seq 3: gone
    path.write_bytes(bundle(items))
    with pytest.raises(witness_audit.AuditFailed, match="served other entries before seq"):
        w.cosign(req)
    assert (w.held(), w.audited()) == (n, n)


def test_a_retired_key_past_its_rotation_fools_a_plain_witness_not_an_auditing_one(world, tmp_path):
    """The operator rotates the key but tells no witness, then signs with the
    retired key a checkpoint past the key entry. A plain witness that was
    never told holds the retired key as in force and cosigns; the auditing
    witness replays the key entry and refuses (the new key's signature is
    the one that counts)."""
    w = world
    w.cosign()
    plain_key, plain_state = str(tmp_path / "p.key"), str(tmp_path / "p.db")
    witness.init_witness(plain_key, plain_state, "plain.example")
    witness.add_log(plain_state, w.store.vkey)
    witness.add_checkpoint(plain_key, plain_state, api.consistency(w.store, old_size=0))
    n = w.held()
    _, new = api.rotate_key(w.store, w.ledger.signer, str(tmp_path / "new.key"))
    w.store.append([liq(50)], [new])
    w.store.add_checkpoint([new])
    w.publish()
    body = consistency.parse_consistency(api.consistency(w.store, old_size=n))
    cp = note.parse_signed_checkpoint(body.checkpoint)
    retired = consistency.format_consistency(consistency.ConsistencyProof(
        n, body.proof, note.sign_note(cp.text(), [w.ledger.signer])))
    witness.add_checkpoint(plain_key, plain_state, retired)  # fooled
    with pytest.raises(witness_audit.AuditFailed, match="signed by a retired log key"):
        w.cosign(retired)
    assert (w.held(), w.audited()) == (n, n)


# --- the honest log: several rounds, a rotation, the cost ---------------------------------------


def test_an_honest_log_is_cosigned_round_after_round_and_across_a_rotation(world, tmp_path):
    w = world
    sizes = []
    for r in range(3):
        line = w.cosign()
        cp = note.parse_signed_checkpoint(w.store.latest_checkpoint()[4])
        text, _ = note.split_note(w.store.latest_checkpoint()[4])
        assert note.verify_cosignature(text, note.parse_signature_lines(line)[0], w.w.verifier()) > 0
        sizes.append(w.held())
        assert w.held() == w.audited() == cp.tree_size
        w.grow(40 + r, 1000 * (r + 1), qty="300", fill="38990" if r % 2 else "39010")
    # a rotation: told with add-key, the key entry replayed by the audit
    seq, new = api.rotate_key(w.store, w.ledger.signer, str(tmp_path / "new.key"))
    w.grow(7, 9000, signer=new)
    req = w.request()
    (tmp_path / "req").write_bytes(req)
    (tmp_path / "key.proof").write_bytes(api.prove(w.store, seq))
    witness.add_key(w.key, w.state, req, (tmp_path / "key.proof").read_bytes())
    for r in range(2):
        assert w.held() == w.audited() == w.store.size()
        w.grow(5, 9100 + 10 * r, signer=new)
        w.cosign()
    assert w.held() == w.audited() == w.store.size() > sizes[-1]
    # the audit state is the verifier's: a full verify of the log agrees with it
    from ledger.verify.run import verify_path

    full = verify_path(str(w.site))
    state = VerifierState.load(witness_audit.state_path(w.state, ORIGIN))
    assert (state.tree_size, state.root) == (full.tree_size, base64.b64encode(full.root).decode())


def test_the_cost_follows_the_new_entries_and_url_checkpoint_is_never_read(ledger2, tmp_path, tiles):
    """Over HTTP, from the log's web server: the bundles of the new entries
    and nothing else (no checkpoint, no vkey, no hash tile, no old bundle
    but the one the old size ends in)."""
    w = World(ledger2, tmp_path, url=tiles.url)
    w.grow(600, 10)  # 607 entries and states: bundles 0..2
    w.cosign()
    assert w.held() == w.store.size()
    tiles.take()
    old = w.held()
    for extra in (5, 300, 900):
        w.grow(extra, 10_000 + old)
        new = w.store.size()
        w.cosign()
        served = tiles.take()
        want = {"/" + entries_path(i, min(256, new - 256 * i)) for i in range(old // 256, -(-new // 256))}
        assert {p for p, _ in served} == want and len(served) == len(want), (served, want)
        assert sum(b for _, b in served) == sum((w.site / p.lstrip("/")).stat().st_size for p in want)
        assert w.held() == w.audited() == new
        old = new


# --- crashes and races ----------------------------------------------------------------------------


def test_a_crash_before_the_commit_leaves_both_states_behind(world, monkeypatch):
    w = world
    w.cosign()
    n = w.held()
    w.grow(20, 100)

    def crash(*a):
        raise KeyboardInterrupt  # the process stops between the audit and the commit

    monkeypatch.setattr(witness_state, "swap", crash)
    with pytest.raises(KeyboardInterrupt):
        w.cosign()
    monkeypatch.undo()
    assert (w.held(), w.audited()) == (n, n)
    w.cosign()
    assert w.held() == w.audited() == w.store.size()


def test_a_crash_after_the_commit_leaves_the_audit_behind_and_the_next_round_catches_up(world, monkeypatch):
    w = world
    w.cosign()
    n = w.held()
    w.grow(20, 100)
    monkeypatch.setattr(witness_audit.Audit, "save", lambda self: False)  # the process stops right after the commit
    w.cosign()
    monkeypatch.undo()
    assert (w.held(), w.audited()) == (w.store.size(), n)  # behind, never ahead
    mid = w.held()
    w.grow(7, 200)
    checked = []
    real = witness_audit.audit

    def spy(*a, **k):
        r = real(*a, **k)
        checked.append(r.entries)
        return r

    monkeypatch.setattr(witness_audit, "audit", spy)
    w.cosign()
    assert checked == [w.store.size() - n] and w.store.size() > mid
    assert w.held() == w.audited() == w.store.size()


def test_an_audit_state_ahead_of_the_cosigned_one_is_refused(world):
    """The witness's state restored from an older copy, its audit state
    not: the audit would skip what it never cosigned. Refused (503, exit 2)."""
    w = world
    w.cosign()
    n = w.held()
    older = open(w.state, "rb").read()
    w.grow(3, 100)
    w.cosign()
    open(w.state, "wb").write(older)
    w.grow(2, 200)
    with pytest.raises(witness_state.WitnessStateError, match=f"ahead of the size {n} cosigned"):
        w.cosign()
    assert w.held() == n


def test_concurrent_requests_over_http_never_part_the_two_states(ledger2, tmp_path, tiles):
    """Requests for the log and for a fork of it (same key, both
    published... to the one URL the witness reads: the log's), all from the
    same size at once: one is cosigned, every other gets 409 or 503, and
    the audit state is then exactly the cosigned one."""
    w = World(ledger2, tmp_path, url=tiles.url)
    s = Server(w.key, w.state, "--rate", "1000", "--burst", "1000", "--max-concurrent", "16")
    try:
        assert submit(s.url, api.consistency(w.store, old_size=0))[0] == 200
        n = w.held()
        reqs = []
        for k in range(4):
            w.grow(1 + k, 500 + 10 * k)
            reqs.append(api.consistency(w.store, old_size=n))
        forged = rewrite(w.datas(), [w.ledger.signer], tweak=at(n + 1, lambda o: o.update(delta="1.00000000")))
        reqs.append(forged_request(forged, n, [w.ledger.signer]))
        reqs = reqs * 3
        barrier = threading.Barrier(len(reqs))

        def go(r):
            barrier.wait()
            return submit(s.url, r, timeout=60)[0]

        with ThreadPoolExecutor(len(reqs)) as pool:
            statuses = list(pool.map(go, reqs))
        assert statuses.count(200) == 1 and set(statuses) <= {200, 409, 422, 503}, statuses
        winner = reqs[statuses.index(200)]
        assert winner != reqs[4]  # never the forged one
        held = witness.cosigned(w.state, ORIGIN)
        assert held.checkpoint.encode() == consistency.parse_consistency(winner).checkpoint
        state = VerifierState.load(witness_audit.state_path(w.state, ORIGIN))
        assert (state.tree_size, state.root) == (held.size, base64.b64encode(held.root).decode())
    finally:
        s.stop()


# --- over HTTP: a real witness serve process -------------------------------------------------------


def test_over_http_attacks_are_422_with_the_seq_and_the_honest_log_is_cosigned(ledger2, tmp_path, tiles):
    w = World(ledger2, tmp_path, url=tiles.url)
    s = Server(w.key, w.state, "--rate", "1000", "--burst", "1000")
    try:
        assert submit(s.url, api.consistency(w.store, old_size=0))[0] == 200
        meta = httpx.get(s.url + "metadata").json()
        assert meta["auditing"] and meta["vkey"] == w.w.verifier().vkey()
        assert [st["name"] for st in meta["statements"]] == ["cosignature/v1", AUDIT_STATEMENT]
        assert meta["logs"] == [{"origin": ORIGIN, "size": w.held(), "audited_from": tiles.url}]
        n = w.held()
        future = w.datas() + _more(w, 4)
        for name, (make, where, reason) in ATTACKS.items():
            forged = rewrite(future, [w.ledger.signer], tweak=make(n))
            shutil.rmtree(w.site)
            publish(w.site, forged, w.store.vkey, [w.ledger.signer])
            status, body, _ = submit(s.url, forged_request(forged, n, [w.ledger.signer]))
            assert status == 422 and body.startswith(f"seq {where(n, len(forged))}: ".encode()), (name, body)
            assert reason.encode() in body, (name, body)
            assert (w.held(), w.audited()) == (n, n)
        # the tiles of the next checkpoint not published yet: 503 (retry later), nothing cosigned
        w.store.append([liq(9999)], [w.ledger.signer])
        w.store.add_checkpoint([w.ledger.signer])
        shutil.rmtree(w.site)
        w.site.mkdir()
        r = httpx.post(s.url + "add-checkpoint", content=api.consistency(w.store, old_size=n))
        assert r.status_code == 503 and b"not published" in r.content and r.headers["retry-after"]
        assert w.held() == n
        w.publish()
        assert submit(s.url, api.consistency(w.store, old_size=n))[0] == 200
    finally:
        err = s.stop()
    assert err.count(" 422 seq ") == len(ATTACKS) and " 503 " in err


def _more(w: World, n: int) -> list[bytes]:
    """``n`` honest new entries and a state entry, as the writer would sign
    them next (from a copy of the ledger)."""
    from ledger.store.store import Store

    path = w.tmp / f"more-{w.store.size()}.db"
    src, dst = sqlite3.connect(w.ledger.db), sqlite3.connect(str(path))
    src.backup(dst)
    src.close()
    dst.close()
    copy = Store.open(str(path))
    size = copy.size()
    copy.append([liq(7000 + size + i, qty="500", fill="38000" if i % 2 else "39050") for i in range(n)],
                [w.ledger.signer])
    copy.add_checkpoint([w.ledger.signer])
    out = [d for _, d in copy.iter_entries(size, copy.size())]
    copy.close()
    return out


# --- one key, one statement ------------------------------------------------------------------------


def test_an_auditing_key_never_cosigns_plainly_and_a_plain_one_never_audits(world, tmp_path):
    w = world
    with pytest.raises(InputError, match="auditing witness"):
        witness.add_log(w.state, note.generate_signer("other.example/log").verifier().vkey())
    pk, ps = str(tmp_path / "p.key"), str(tmp_path / "p.db")
    witness.init_witness(pk, ps, "plain.example")
    with pytest.raises(InputError, match="cosigns plainly"):
        witness.add_log(ps, w.store.vkey, str(w.site))
    # the auditing state cosigns with its own key only
    with pytest.raises(witness_state.WitnessStateError, match="auditing witness"):
        witness.add_checkpoint(pk, w.state, w.request())
    p = run_fundledger("witness", "serve", "--port", "0", "--key", pk, "--state", w.state, timeout=30)
    assert p.returncode == 2 and b"auditing witness" in p.stderr
    p = run_fundledger("witness", "add-log", w.store.vkey, "--audit", str(tmp_path / "nowhere"), "--key", pk,
                       "--state", ps)
    assert p.returncode == 2 and b"not an http(s) URL or a directory" in p.stderr


# --- what readers are told ----------------------------------------------------------------------------


def test_the_policy_names_auditing_witnesses_in_a_comment_and_the_light_check_names_them(world):
    w = world
    line = w.cosign()
    api.attach_cosignatures(w.store, line, [w.w.verifier()])
    w.publish()
    plain = note.generate_signer("plain.example", note.ALG_COSIGNATURE_V1).verifier().vkey()
    policy = (f"log {w.store.vkey}\nwitness a {w.w.verifier().vkey()}\nwitness p {plain}\n"
              f"#{AUDIT_STATEMENT} a\ngroup g any a p\nquorum g\n")
    assert parse_policy(policy.encode()).auditors == {"a"}
    for bad in (f"#{AUDIT_STATEMENT} nobody\n", f"#{AUDIT_STATEMENT} a\n", f"#{AUDIT_STATEMENT}\n"):
        with pytest.raises(FormatError, match="names one witness"):
            parse_policy((policy + bad).encode())
    (w.tmp / "policy.txt").write_text(policy)
    r = check_fund_path(str(w.site), XBT, w.store.vkey, policy_path=str(w.tmp / "policy.txt"))
    assert r.audited_by == ["audit.example"] and "attested by the auditing witness audit.example" in r.completeness()
    # the same witness given as a plain --witness: cosigned, but not an audit
    r = check_fund_path(str(w.site), XBT, w.store.vkey, witnesses=[w.w.verifier().vkey()])
    assert r.cosigned_by == ["audit.example"] and r.audited_by == []
    assert "rests on the operator's word alone" in r.as_json()["completeness"]
    p = run_fundledger("verify", w.site, "--vkey", w.store.vkey, "--contract", XBT, "--auditor", w.w.verifier().vkey())
    out = p.stdout.decode()
    assert p.returncode == 0 and "audited by audit.example" in out and "the chain is complete" in out, out
    p = run_fundledger("verify", w.site, "--vkey", w.store.vkey, "--contract", XBT, "--auditor", plain)
    assert p.returncode == 1 and b"0 valid cosignatures" in p.stderr
    p = run_fundledger("verify", w.site, "--vkey", w.store.vkey, "--contract", XBT)
    assert p.returncode == 0 and "no auditing witness cosigned" in p.stdout.decode()


# --- a hostile host for the tiles -----------------------------------------------------------------


class Hostile:
    """An HTTP server on loopback that answers every request its own way:
    ``stall`` (headers, then nothing), ``huge`` (a bundle far over the
    limit, announced by its length) or ``drip`` (one byte a second)."""

    def __init__(self, how: str):
        import socket

        self.how, self.sock = how, socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.conns = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        import time

        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            try:
                c.recv(65536)
                if self.how == "huge":
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1 << 30) + b"\0" * 65536)
                elif self.how == "stall":
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
                else:
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                    for _ in range(30):
                        c.sendall(b"\0")
                        time.sleep(0.5)
            except OSError:
                pass

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize("how,pattern", [("huge", "larger than"), ("stall", "stalled"),
                                         ("drip", "within the request deadline")])
def test_a_hostile_tiles_host_gets_a_503_in_bounded_time_and_nothing_cosigned(ledger2, tmp_path, monkeypatch,
                                                                               how, pattern):
    import time

    from ledger.verify import transport

    monkeypatch.setattr(witness_audit, "DEADLINES", transport.Deadlines(request_s=3.0, stall_s=1.0))
    monkeypatch.setattr(witness_audit, "_SOURCES", {})
    h = Hostile(how)
    try:
        w = World(ledger2, tmp_path, url=h.url)
        t0 = time.monotonic()
        with pytest.raises(witness_audit.AuditUnavailable, match=pattern) as e:
            w.cosign()
        assert time.monotonic() - t0 < 10 and witness.http_status(e.value) == 503
        assert (w.held(), w.audited()) == (0, None)
    finally:
        h.close()


def test_kill_9_at_random_moments_never_leaves_the_audit_state_ahead(ledger2, tmp_path):
    """A real `witness add-checkpoint` process auditing some 3,000 entries,
    killed with SIGKILL at seeded random moments (a full run measured
    first): its files always open, the audit state is never ahead of the
    cosigned size, and the request sent again (or the next one) brings
    both to the log's size."""
    import random
    import signal
    import subprocess
    import sys
    import time

    w = World(ledger2, tmp_path)
    w.grow(3000, 10)
    req = tmp_path / "req"
    req.write_bytes(w.request())
    pristine = open(w.state, "rb").read()
    audit_dir = w.state + ".audit"
    cmd = [sys.executable, "-m", "ledger.cli", "witness", "add-checkpoint", str(req), "--key", w.key,
           "--state", w.state, "--out", str(tmp_path / "reply")]

    def reset():
        shutil.rmtree(audit_dir, ignore_errors=True)
        open(w.state, "wb").write(pristine)

    t0 = time.monotonic()
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    full = time.monotonic() - t0
    assert w.held() == w.audited() == w.store.size()
    rng = random.Random(20261203)
    outcomes = set()
    for _ in range(8):
        reset()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.1, full))
        p.send_signal(signal.SIGKILL)
        p.wait()
        held, audited = w.held(), w.audited()
        assert audited is None or audited <= held, (held, audited)
        outcomes.add((held == w.store.size(), audited == w.store.size()))
        if held < w.store.size():
            assert subprocess.run(cmd, capture_output=True).returncode == 0
        else:  # cosigned: the next round audits from wherever the audit state is
            w.grow(5, 100_000 + rng.randrange(10**6))
            req.write_bytes(w.request())
            assert subprocess.run(cmd, capture_output=True).returncode == 0
        assert w.held() == w.audited() == w.store.size()
        req.write_bytes(api.consistency(w.store, old_size=0))  # the next trial: from the pristine state again
    assert (False, False) in outcomes  # some kills fell before the commit


def test_a_request_refused_anyway_does_not_wait_for_another_requests_audit(world, tmp_path):
    """While one request holds the log's audit lock, an unsigned or stale
    request is refused at once (403, 409), and a good one waits, then gets
    a 503 to retry: nobody can queue in front of the log for nothing."""
    import time

    w = world
    w.cosign()
    w.grow(3, 100)
    good = w.request()
    stale = api.consistency(w.store, old_size=0)
    body = consistency.parse_consistency(good)
    cp = note.parse_signed_checkpoint(body.checkpoint)
    forged = consistency.format_consistency(consistency.ConsistencyProof(
        body.old_size, body.proof, note.sign_note(cp.text(), [note.generate_signer(ORIGIN)])))
    with witness_audit.locked(w.state, ORIGIN):
        t0 = time.monotonic()
        with pytest.raises(witness.WitnessConflict):
            w.cosign(stale)
        with pytest.raises(witness.NotSigned):
            w.cosign(forged)
        assert time.monotonic() - t0 < 1
        with pytest.raises(witness_audit.AuditUnavailable, match="another request is auditing"):
            w.cosign(good)
        assert time.monotonic() - t0 >= witness_audit.LOCK_WAIT_S
    w.cosign(good)
    assert w.held() == w.audited() == w.store.size()
