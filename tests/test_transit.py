"""Tampering in transit: a hostile web server between the log and its auditor.

An export directory is served over loopback HTTP by a server in a thread
(``http://127.0.0.1:<free port>/``) that can alter, replace, withhold or
stream any file. ``fundledger verify URL`` (the click command, and once the
real process) and ``verify_path(url)`` must fail with exit 1 and the right
reason when the server alters a hash tile, an entry bundle or the checkpoint,
serves an older checkpoint than one the auditor holds (rollback), or serves a
fork (another history signed with the real key). Receipts (check-receipt)
and consistency proofs (a witness) altered on the way are refused too.

The logs: ``main`` has 21 entries at its first checkpoint, then 300 (one full
level-0 tile, partial tiles at both levels); ``fork`` is a copy of main at 21
entries that grew a different history to 321 entries, signed with the same
key.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import resource
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from nacl.bindings import crypto_sign_seed_keypair

from ledger.ops import api
from ledger.format import note
from ledger.verify import run as verify
from ledger.ops import witness
from ledger.cli import cli
from ledger.errors import FundledgerError, VerificationError
from ledger.store.store import Store
from publish.export import export

from conftest import ORIGIN, run_fundledger


def liq(i, prefix="L", fill_shift=0):
    side = "short" if i % 4 == 0 else "long"
    fill = 39000 + ((i * 37) % 300 - 100) + fill_shift
    return {"kind": "liquidation", "contract": "XBTUSDTM", "id": f"{prefix}-{i}", "side": side, "qty": str(1 + i % 5),
            "bankruptcy_price": "39000", "fill_price": str(fill),
            "time": f"2026-11-23T18:{i // 60 % 60:02d}:{i % 60:02d}Z"}  # fixed times: the same bytes every run


# --- the hostile server ------------------------------------------------------------------


class Hostile(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), Handler)
        self.root = root
        self.reset()

    def reset(self) -> None:
        self.alter: dict = {}  # path -> bytes -> bytes, or an int status, or a generator factory
        self.sent: dict[str, int] = {}
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class Handler(http.server.BaseHTTPRequestHandler):
    server: Hostile

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        rel = self.path.lstrip("/")
        self.server.requests.append(rel)
        how = self.server.alter.get(rel)
        if isinstance(how, int):
            self.send_error(how)
            return
        if isinstance(how, Stream):
            self.send_response(200)
            self.end_headers()
            sent = 0
            try:
                for chunk in how.chunks():
                    self.wfile.write(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                self.server.sent[rel] = sent
            return
        path = (self.server.root / rel).resolve()
        if self.server.root.resolve() not in path.parents or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        if how is not None:
            data = how(data)
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@dataclass
class Stream:
    """An endless-ish body generated lazily: ``total`` bytes of ``fill``."""

    total: int
    fill: bytes = b"A"

    def chunks(self):
        block = self.fill * (65536 // len(self.fill))
        left = self.total
        while left > 0:
            n = min(left, len(block))
            yield block[:n]
            left -= n


# --- the logs ---------------------------------------------------------------------------------


@dataclass
class Logs:
    dir: Path
    key: str
    vkey: str
    main_db: str
    fork_db: str
    main_export: Path
    fork_export: Path
    cp21: bytes  # main (and fork) at 21 entries
    cp300: bytes  # main at 300
    fork321: bytes  # the fork at 321
    receipt: bytes  # entry 260 of main, in the tree of 300
    body0: bytes  # consistency 0 -> 21
    body1: bytes  # consistency 21 -> 300 (main)
    fork_body: bytes  # consistency 21 -> 321 (fork)


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Logs:
    d = tmp_path_factory.mktemp("transit")
    db, key = str(d / "main.db"), str(d / "fund.key")
    # a fixed key and fixed times: every file, receipt and proof is the same each run
    seed = hashlib.sha256(b"fundledger transit test key").digest()
    pk, _ = crypto_sign_seed_keypair(seed)
    signer = note.Signer(ORIGIN, note.key_id(ORIGIN, note.ALG_ED25519, pk), seed)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(signer.skey() + "\n")
    store = Store.create(db, ORIGIN, signer.verifier().vkey())
    store.append([{"kind": "contract", "symbol": "XBTUSDTM", "currency": "USDT", "scale": 8,
                   "time": "2026-11-23T17:00:00Z"}], [signer])
    store.append([liq(i) for i in range(20)], [signer])
    _, cp21, _ = store.add_checkpoint([signer])
    body0 = api.consistency(store, old_size=0)
    export(store, str(d / "main-export"))
    store.close()
    fork_db = str(d / "fork.db")
    shutil.copyfile(db, fork_db)
    store = Store.open(db)
    store.append([liq(i) for i in range(20, 299)], [signer])
    _, cp300, _ = store.add_checkpoint([signer])
    export(store, str(d / "main-export"))
    receipt = api.prove(store, 260)
    body1 = api.consistency(store, old_checkpoint=cp21)
    vkey = store.vkey
    store.close()
    fork = Store.open(fork_db)
    fork.append([liq(i, prefix="F", fill_shift=3) for i in range(20, 320)], [signer])
    _, fork321, _ = fork.add_checkpoint([signer])
    export(fork, str(d / "fork-export"))
    fork_body = api.consistency(fork, old_checkpoint=cp21)
    fork.close()
    return Logs(d, key, vkey, db, fork_db, d / "main-export", d / "fork-export", cp21, cp300, fork321,
                receipt, body0, body1, fork_body)


@pytest.fixture(scope="module")
def server(logs):
    srv = Hostile(logs.main_export)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def site(server, logs):
    server.reset()
    server.root = logs.main_export
    yield server
    server.reset()
    server.root = logs.main_export


def cli_verify(*args):
    """``fundledger verify ...`` in-process; (exit code, stdout, stderr)."""
    r = CliRunner().invoke(cli, ["verify", "--workers", "1", *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.stdout, r.stderr


def flip(offset: int, bit: int = 0):
    def f(data: bytes) -> bytes:
        b = bytearray(data)
        b[offset % len(b)] ^= 1 << bit
        return bytes(b)
    return f


# --- an honest server first ------------------------------------------------------------------


def test_the_honest_site_verifies(site, logs, tmp_path):
    r = verify.verify_path(site.url, workers=1)
    assert (r.tree_size, r.checkpoint_size) == (300, 300)
    assert "tile/0/000" in site.requests and "tile/entries/001.p/44" in site.requests
    # the real process too, pinned to the key and to the older checkpoint
    (tmp_path / "cp21").write_bytes(logs.cp21)
    p = run_fundledger("verify", site.url, "--vkey", logs.vkey, "--trusted", tmp_path / "cp21", timeout=60)
    assert p.returncode == 0, p.stderr
    assert b"tree size 300" in p.stdout


# --- altered files: exit 1 with the reason ---------------------------------------------------


def _swap_first_two_entries(data: bytes) -> bytes:
    n0 = int.from_bytes(data[:2], "big")
    e0 = data[: 2 + n0]
    n1 = int.from_bytes(data[2 + n0 : 4 + n0], "big")
    e1 = data[2 + n0 : 4 + n0 + n1]
    return e1 + e0 + data[4 + n0 + n1 :]


def _edit_an_amount(data: bytes) -> bytes:
    i = data.index(b'"balance":"') + len(b'"balance":"')
    return data[:i] + (b"9" if data[i : i + 1] != b"9" else b"8") + data[i + 1 :]


def _drop_last_entry(data: bytes) -> bytes:
    pos, last = 0, 0
    while pos < len(data):
        last = pos
        pos += 2 + int.from_bytes(data[pos : pos + 2], "big")
    return data[:last]


ALTERATIONS = {
    # hash tiles
    "tile/0/000 bit flipped": ("tile/0/000", flip(4000, 3), r"hash tile tile/0/000 does not match"),
    "tile/0/001.p/44 bit flipped": ("tile/0/001.p/44", flip(-1, 7), r"hash tile tile/0/001.p/44 does not match"),
    "tile/1/000.p/1 bit flipped": ("tile/1/000.p/1", flip(0, 0), r"hash tile tile/1/000.p/1 does not match"),
    "tile/0/000 truncated": ("tile/0/000", lambda d: d[:-32], r"hash tile tile/0/000 does not match"),
    "tile/0/000 withheld": ("tile/0/000", 404, r"tile/0/000 is missing"),
    "tile/0/000 server error": ("tile/0/000", 500, r"HTTP 500"),
    "tile/0/000 oversize": ("tile/0/000", lambda d: d + d, r"larger than 8192 bytes"),
    # entry bundles
    "entry amount edited": ("tile/entries/000", _edit_an_amount, r"signature does not verify|the rules give"),
    "entry signature bit flipped": ("tile/entries/001.p/44", flip(-10, 1), r"signature|not a signed note"),
    "entries swapped": ("tile/entries/000", _swap_first_two_entries, r"prev is not the hash|seq is"),
    "entry dropped": ("tile/entries/001.p/44", _drop_last_entry, r"entry bundle is truncated"),
    "bytes after the last entry": ("tile/entries/000", lambda d: d + b"\x00\x01x", r"bytes after its last entry"),
    "entry bundle withheld": ("tile/entries/001.p/44", 404, r"tile/entries/001.p/44 is missing"),
    # the checkpoint
    "checkpoint root edited": ("checkpoint", lambda d: d.replace(d.split(b"\n")[2], base64.b64encode(bytes(32))),
                               r"checkpoint: invalid signature"),
    "checkpoint size edited": ("checkpoint", lambda d: d.replace(b"\n300\n", b"\n299\n"), r"checkpoint: invalid signature"),
    "checkpoint signature bit flipped": ("checkpoint", flip(-20, 2), r"checkpoint: "),
    "checkpoint signature removed": ("checkpoint", lambda d: d[: d.index(b"\n\n") + 2] + b"\xe2\x80\x94 other.example AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
                                     r"checkpoint: no valid signature by a known key"),
    "checkpoint withheld": ("checkpoint", 404, r"no signed checkpoint"),
}


@pytest.mark.parametrize("case", list(ALTERATIONS))
def test_an_altered_file_fails_verification(site, case):
    path, how, reason = ALTERATIONS[case]
    site.alter[path] = how
    code, out, err = cli_verify(site.url)
    assert code == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert re.search(reason, lines[0]), lines[0]
    with pytest.raises(VerificationError, match=reason):
        verify.verify_path(site.url, workers=1)
    # JSON shape of the failure
    code, out, _ = cli_verify(site.url, "--json")
    j = json.loads(out)
    assert code == 1 and j["ok"] is False and re.search(reason, j["reason"])


def test_a_validly_signed_entry_from_another_history_is_caught(site, logs):
    """The fork's entry 299 is signed by the real key, with the right seq:
    spliced into main's bundle it breaks the prev chain."""
    fork_bundle = (logs.fork_export / "tile/entries/001.p/65").read_bytes()

    def entries(data):
        out, pos = [], 0
        while pos < len(data):
            n = int.from_bytes(data[pos : pos + 2], "big")
            out.append(data[pos : pos + 2 + n])
            pos += 2 + n
        return out

    foreign = entries(fork_bundle)[43]  # seq 299 of the fork

    def splice(data):
        e = entries(data)
        return b"".join(e[:43] + [foreign])

    site.alter["tile/entries/001.p/44"] = splice
    with pytest.raises(VerificationError, match="prev is not the hash") as ei:
        verify.verify_path(site.url, workers=1)
    assert ei.value.seq == 299


def test_a_substituted_key_is_caught_when_pinned(site, logs):
    """The server swaps in its own key and re-signs the checkpoint: the
    entries still carry the real key's signatures, and with --vkey pinned
    the published key itself is refused, and without it the checkpoint."""
    evil = note.generate_signer(ORIGIN)

    def resign(data):
        text, _ = note.split_note(data)
        return note.sign_note(text, [evil])

    site.alter["vkey"] = lambda d: (evil.verifier().vkey() + "\n").encode()
    site.alter["checkpoint"] = resign
    code, _, err = cli_verify(site.url)
    assert code == 1 and "signed by a key that may not sign here" in err
    code, _, err = cli_verify(site.url, "--vkey", logs.vkey)
    assert code == 1 and "the source publishes the vkey" in err and "not the pinned" in err
    site.alter["vkey"] = 404  # publishing no key
    code, _, err = cli_verify(site.url, "--vkey", logs.vkey)
    assert code == 1 and "checkpoint: no valid signature by a known key" in err


def test_a_garbage_vkey_is_refused(site):
    site.alter["vkey"] = lambda d: b"<html>not found</html>\n"
    code, _, err = cli_verify(site.url)
    assert code in (1, 2) and len(err.strip().splitlines()) == 1 and "verifier key" in err


# --- rollback and fork ----------------------------------------------------------------------


def test_an_older_checkpoint_is_a_rollback_for_an_auditor_who_holds_a_newer(site, logs, tmp_path):
    site.alter["checkpoint"] = lambda d: logs.cp21  # genuine, signed, older; its partial tiles are still there
    # on its own the old view is consistent: only a held checkpoint reveals the rollback
    assert verify.verify_path(site.url, workers=1).tree_size == 21
    held = tmp_path / "held.checkpoint"
    held.write_bytes(logs.cp300)
    code, _, err = cli_verify(site.url, "--trusted", str(held))
    assert code == 1 and "rollback" in err and "fewer than the trusted 300" in err
    p = run_fundledger("verify", site.url, "--trusted", held, timeout=60)
    assert p.returncode == 1 and b"rollback" in p.stderr and b"Traceback" not in p.stderr


def test_a_fork_signed_with_the_real_key_fails_against_a_held_checkpoint(site, logs, tmp_path):
    site.root = logs.fork_export
    # the fork is self-consistent and signed with the real key...
    r = verify.verify_path(site.url, vkey=logs.vkey, workers=1)
    assert r.tree_size == 321
    # ...and shares main's first 21 entries
    (tmp_path / "cp21").write_bytes(logs.cp21)
    assert verify.verify_path(site.url, trusted_path=str(tmp_path / "cp21"), workers=1).tree_size == 321
    # but an auditor holding main's checkpoint at 300 sees the rewrite
    held = tmp_path / "held.checkpoint"
    held.write_bytes(logs.cp300)
    code, out, err = cli_verify(site.url, "--vkey", logs.vkey, "--trusted", str(held))
    assert code == 1 and "does not extend the trusted checkpoint" in err, err
    # and an auditor of the fork holding its 321 rejects main (older and different)
    site.root = logs.main_export
    held.write_bytes(logs.fork321)
    code, _, err = cli_verify(site.url, "--trusted", str(held))
    assert code == 1 and "rollback" in err


# --- receipts -----------------------------------------------------------------------------------


def _alter_line(receipt: bytes, startswith: bytes | None, index: int | None, fn) -> bytes:
    lines = receipt.split(b"\n")
    if index is None:
        index = next(i for i, l in enumerate(lines) if l.startswith(startswith))
    lines[index] = fn(lines[index])
    return b"\n".join(lines)


def _b64_bitflip(prefix: bytes, byte: int, bit: int = 0):
    """Flip one bit of the decoded value and re-encode canonically, so the
    receipt still parses and the cryptography has to catch it."""
    def fn(line: bytes) -> bytes:
        raw = bytearray(base64.b64decode(line[len(prefix):]))
        raw[byte % len(raw)] ^= 1 << bit
        return prefix + base64.b64encode(bytes(raw))
    return fn


def _flip_entry_signature(entry: bytes) -> bytes:
    """The entry with one bit of its Ed25519 signature flipped, the
    signature line re-encoded canonically."""
    text, (sig,) = note.split_note(entry, 65535)
    raw = bytearray(sig.key_id + sig.signature)
    raw[10] ^= 0x01
    return text + b"\n" + "— ".encode() + sig.name.encode() + b" " + base64.b64encode(bytes(raw)) + b"\n"


def _proof_line_index(receipt: bytes) -> int:
    lines = receipt.split(b"\n")
    return next(i for i, l in enumerate(lines) if l.startswith(b"index ")) + 3


RECEIPT_ALTERATIONS = {
    "index + 1": (b"index ", lambda l: b"index 261", r"inclusion proof|seq"),
    "index bit flipped": (b"index ", lambda l: l[:-1] + bytes([l[-1] ^ 1]), r"inclusion proof|seq|receipt"),
    "index beyond the tree": (b"index ", lambda l: b"index 300", r"receipt: .*not below the tree size"),
    "proof hash bit flipped": (None, _b64_bitflip(b"", 5, 6), r"inclusion proof does not lead to the root"),
    "proof line not base64": (None, lambda l: l[:-2] + b"!=", r"receipt: .*base64"),
    "extra: entry bit flipped": (b"extra ", _b64_bitflip(b"extra ", 40, 1), r"signature|receipt"),
    "extra: signature bit flipped": (b"extra ", lambda l: b"extra " + base64.b64encode(_flip_entry_signature(
        base64.b64decode(l[len(b"extra "):]))), r"invalid signature"),
    "checkpoint signature bit flipped": (b"\xe2\x80\x94 ", None, r"checkpoint: invalid signature"),
}


@pytest.mark.parametrize("case", list(RECEIPT_ALTERATIONS))
def test_an_altered_receipt_is_refused(logs, tmp_path, case):
    start, fn, reason = RECEIPT_ALTERATIONS[case]
    r = logs.receipt
    if case == "checkpoint signature bit flipped":
        sig_line = r.split(b"\n")[-2]
        name, b64 = sig_line.rsplit(b" ", 1)
        raw = bytearray(base64.b64decode(b64))
        raw[20] ^= 0x10
        altered = r.replace(sig_line, name + b" " + base64.b64encode(bytes(raw)))
    elif start is None:
        altered = _alter_line(r, None, _proof_line_index(r), fn)
    else:
        altered = _alter_line(r, start, None, fn)
    assert altered != r
    path = tmp_path / "receipt"
    path.write_bytes(altered)
    res = CliRunner().invoke(cli, ["check-receipt", str(path), "--vkey", logs.vkey])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(reason, lines[0]), lines


def test_the_genuine_receipt_checks(logs, tmp_path):
    (tmp_path / "r").write_bytes(logs.receipt)
    res = CliRunner().invoke(cli, ["check-receipt", str(tmp_path / "r"), "--vkey", logs.vkey])
    assert res.exit_code == 0 and "entry 260 is in the log of size 300" in res.stdout


def _every_bit_flip(data: bytes):
    for i in range(len(data)):
        for bit in range(8):
            b = bytearray(data)
            b[i] ^= 1 << bit
            yield i, bit, bytes(b)


@pytest.fixture(scope="module")
def receipt_flips(logs):
    """check_receipt on all 8 x len(receipt) one-bit alterations:
    ``(byte, bit, exit code or 0 if it verified, message)``."""
    v = note.parse_vkey(logs.vkey)
    out = []
    for i, bit, altered in _every_bit_flip(logs.receipt):
        try:
            api.check_receipt(altered, v)
        except FundledgerError as e:  # anything else propagates: a crash fails the tests
            out.append((i, bit, e.exit_code, str(e)[:80]))
            continue
        out.append((i, bit, 0, "verified"))
    return out


def test_no_single_bit_flip_of_a_receipt_verifies(receipt_flips, logs):
    """None of the one-bit alterations verifies; every one is an expected,
    typed failure (never a crash)."""
    assert len(receipt_flips) == 8 * len(logs.receipt)
    verified = [f for f in receipt_flips if f[2] == 0]
    assert not verified, verified[:5]


def test_every_single_bit_flip_of_a_receipt_is_a_verification_failure(receipt_flips):
    """check-receipt turns a malformed receipt into a verification failure
    (exit 1, "receipt: ..."): an altered receipt is exit 1 whatever the bit."""
    exit2 = [f for f in receipt_flips if f[2] != 1]
    assert not exit2, f"{len(exit2)} of {len(receipt_flips)} flips do not give exit 1: {exit2[:5]}"


# --- consistency proofs and the witness ----------------------------------------------------


@pytest.fixture
def wit(logs, tmp_path):
    key, state = str(tmp_path / "w.key"), str(tmp_path / "w.db")
    witness.init_witness(key, state, "witness.example")
    witness.add_log(state, logs.vkey)
    witness.add_checkpoint(key, state, logs.body0)  # the witness holds 21
    return key, state


def test_no_single_bit_flip_of_a_consistency_proof_is_cosigned(logs, wit):
    """Every one-bit alteration of the 21 -> 300 add-checkpoint body is
    refused with a typed error and leaves the witness's state untouched;
    the genuine body is cosigned afterwards."""
    key, state = wit
    before = Path(state).read_bytes()
    body = logs.body1
    for i, bit, altered in _every_bit_flip(body):
        try:
            witness.add_checkpoint(key, state, altered)
        except FundledgerError:
            continue
        raise AssertionError(f"body with byte {i} bit {bit} flipped was cosigned")
    assert Path(state).read_bytes() == before
    line = witness.add_checkpoint(key, state, body)
    assert note.parse_signature_lines(line)[0].name == "witness.example"


def test_an_altered_proof_hash_is_refused_by_the_witness_cli(logs, wit, tmp_path):
    key, state = wit
    lines = logs.body1.split(b"\n")
    raw = bytearray(base64.b64decode(lines[1]))
    raw[0] ^= 1
    lines[1] = base64.b64encode(bytes(raw))
    req = tmp_path / "req"
    req.write_bytes(b"\n".join(lines))
    before = Path(state).read_bytes()
    res = CliRunner().invoke(cli, ["witness", "add-checkpoint", str(req), "--key", key, "--state", state])
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1, res.output
    assert Path(state).read_bytes() == before and res.stdout == ""


def test_the_witness_refuses_the_fork_once_it_holds_main(logs, wit):
    key, state = wit
    witness.add_checkpoint(key, state, logs.body1)  # main at 300
    before = Path(state).read_bytes()
    with pytest.raises(witness.WitnessConflict):
        witness.add_checkpoint(key, state, logs.fork_body)  # proves from 21: stale
    # the same fork body rewritten to claim old size 300: the proof cannot hold
    forged = b"old 300\n" + logs.fork_body.split(b"\n", 1)[1]
    with pytest.raises(VerificationError):
        witness.add_checkpoint(key, state, forged)
    assert Path(state).read_bytes() == before


# --- a server that never stops talking ----------------------------------------------------


def test_an_endless_checkpoint_is_cut_at_the_limit(site):
    """The server streams 100 MB for `checkpoint`: the verifier stops at its
    1 MiB limit (exit 1), its memory does not grow by anything like 100 MB,
    and the server could not push more than the limit plus socket buffers."""
    site.alter["checkpoint"] = Stream(100 << 20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, _, err = cli_verify(site.url)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert code == 1 and "checkpoint is larger than 1048576 bytes" in err
    assert (after - before) < 40 * 1024, f"max RSS grew by {after - before} KiB"
    # the handler thread finishes once the client has closed its end
    for _ in range(100):
        if "checkpoint" in site.sent:
            break
        threading.Event().wait(0.05)
    assert site.sent.get("checkpoint", 0) < 40 << 20, site.sent


def test_an_endless_entry_bundle_is_cut_at_the_limit(site):
    site.alter["tile/entries/000"] = Stream(100 << 20, b"\xff")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(VerificationError, match="larger than"):
        verify.verify_path(site.url, workers=1)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # the bundle limit is 256 x (2 + 65535) bytes, about 16 MiB
    assert (after - before) < 80 * 1024, f"max RSS grew by {after - before} KiB"


def test_a_dead_server_is_bad_input_not_a_traceback():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    code, _, err = cli_verify(f"http://127.0.0.1:{port}/")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
