"""Key files (ledger/ops/keys.py): created 0600, refused when others can read
them, malformed or missing, or when they do not belong to the ledger; the
private key never enters the database."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from ledger.ops import api
from ledger.ops import keys
from ledger.format import note
from ledger.errors import InputError, KeyFileError, StoreError
from ledger.store.schema import Reader
from ledger.store.store import Store

ORIGIN = "example.com/test-fund"


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_key_file_created_0600(tmp_path, umask):
    p = str(tmp_path / "fund.key")
    old = os.umask(umask)
    try:
        signer = keys.create_key_file(p, ORIGIN)
    finally:
        os.umask(old)
    assert mode(p) == 0o600
    with open(p) as f:
        text = f.read()
    assert text == signer.skey() + "\n"
    assert text.startswith(f"PRIVATE+KEY+{ORIGIN}+")
    again = keys.load_key_file(p)
    assert again.verifier().vkey() == signer.verifier().vkey()
    assert again.seed == signer.seed


def test_create_key_file_never_overwrites(tmp_path):
    p = tmp_path / "fund.key"
    p.write_text("keep me")
    with pytest.raises(KeyFileError, match="already exists"):
        keys.create_key_file(str(p), ORIGIN)
    assert p.read_text() == "keep me"


def test_init_ledger_creates_key_0600(tmp_path):
    db, key = str(tmp_path / "f.db"), str(tmp_path / "f.key")
    store, signer = api.init_ledger(db, key, ORIGIN)
    store.close()
    assert mode(key) == 0o600
    assert keys.load_key_file(key).verifier().vkey() == Reader.open(db).vkey


@pytest.mark.parametrize("perm", [0o644, 0o640, 0o604, 0o660, 0o606, 0o620, 0o610, 0o601, 0o602])
def test_key_readable_by_others_refused(tmp_path, perm):
    p = str(tmp_path / "fund.key")
    keys.create_key_file(p, ORIGIN)
    os.chmod(p, perm)
    with pytest.raises(KeyFileError) as e:
        keys.load_key_file(p)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"{perm:04o}" in msg and "chmod 600" in msg
    assert "PRIVATE" not in msg


@pytest.mark.parametrize("perm", [0o600, 0o400, 0o700])
def test_owner_only_modes_accepted(tmp_path, perm):
    p = str(tmp_path / "fund.key")
    keys.create_key_file(p, ORIGIN)
    os.chmod(p, perm)
    assert keys.load_key_file(p).name == ORIGIN


def test_missing_key(tmp_path):
    with pytest.raises(KeyFileError, match="no such key file"):
        keys.load_key_file(str(tmp_path / "nope.key"))


def test_key_is_a_directory(tmp_path):
    d = tmp_path / "dir.key"
    d.mkdir(mode=0o700)
    with pytest.raises(KeyFileError):
        keys.load_key_file(str(d))


def _write_key(tmp_path, content: bytes) -> str:
    p = str(tmp_path / "bad.key")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    os.chmod(p, 0o600)
    return p


def _valid_skey() -> str:
    return note.generate_signer(ORIGIN).skey()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n",
        b"garbage",
        b"\x00\xff\xfe binary",
        b"PRIVATE+KEY+",
        b"PRIVATE+KEY+example.com/test-fund+00000000+AAAA",
        b"x" * 5000,  # too large
        None,  # a verifier key instead of the private key
        "two lines",  # a valid key followed by another line
        "wrong id",  # a valid key with a wrong key id
        "short seed",
        "trailing space",
    ],
)
def test_malformed_key_files_refused(tmp_path, content):
    sk = _valid_skey()
    if content is None:
        content = note.parse_skey(sk).verifier().vkey().encode() + b"\n"
    elif content == "two lines":
        content = (sk + "\n" + sk + "\n").encode()
    elif content == "wrong id":
        parts = sk.split("+")
        parts[3] = "00000000" if parts[3] != "00000000" else "11111111"
        content = "+".join(parts).encode()
    elif content == "short seed":
        parts = sk.split("+", 4)
        parts[4] = base64.b64encode(b"\x01" + b"\x00" * 16).decode()
        content = "+".join(parts).encode()
    elif content == "trailing space":
        content = (sk + " \n").encode()
    p = _write_key(tmp_path, content)
    with pytest.raises(KeyFileError) as e:
        keys.load_key_file(p)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400
    # the message never echoes the secret
    assert sk.split("+", 4)[4] not in msg


def test_key_errors_are_input_errors():
    assert issubclass(KeyFileError, InputError) and KeyFileError.exit_code == 2


def test_wrong_key_for_ledger_refused(ledger):
    other_dir = ledger.dir / "other"
    other_dir.mkdir()
    other_key = str(other_dir / "fund.key")
    keys.create_key_file(other_key, "example.com/test-fund")  # same name, another key
    other = keys.load_key_file(other_key)
    ledger.contract()
    size = ledger.store.size()
    rec = {"kind": "liquidation", "contract": "XBTUSDTM", "id": "L-1", "side": "long", "qty": "1",
           "bankruptcy_price": "39000", "fill_price": "39100"}
    with pytest.raises(StoreError):
        ledger.store.append([rec], [other])
    with pytest.raises(StoreError):
        ledger.store.add_checkpoint([other])
    # a key for another origin
    with pytest.raises(StoreError):
        ledger.store.append([rec], [note.generate_signer("example.com/another-log")])
    assert ledger.store.size() == size
    assert ledger.store.latest_checkpoint() is None


def test_private_key_never_in_database(ledger):
    ledger.contract()
    ledger.contract(symbol="XBTUSDM", currency="XBT", type="inverse", multiplier="100")
    for i in range(50):
        ledger.liquidation(contract="XBTUSDTM" if i % 2 else "XBTUSDM", id=f"L-{i}", fill_price=str(38900 + i * 7))
    ledger.checkpoint()
    seed = ledger.signer.seed
    skey = ledger.signer.skey()
    needles = {
        "raw seed": seed,
        "seed base64": base64.b64encode(seed),
        "alg||seed base64": base64.b64encode(b"\x01" + seed),
        "skey": skey.encode(),
        "seed hex": seed.hex().encode(),
        "seed base64 without padding": base64.b64encode(seed).rstrip(b"="),
        "urlsafe base64": base64.urlsafe_b64encode(b"\x01" + seed).rstrip(b"="),
        "expanded secret key": ledger.signer._sk,
    }
    files = [ledger.db + suffix for suffix in ("", "-wal", "-shm") if os.path.exists(ledger.db + suffix)]
    assert ledger.db + "-wal" in files  # the WAL is searched too, while it holds data
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        for what, needle in needles.items():
            assert needle not in data, f"{what} found in {path}"
    # and after a full checkpoint of the WAL into the main file
    ledger.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(ledger.db, "rb") as f:
        data = f.read()
    for what, needle in needles.items():
        assert needle not in data, f"{what} found in {ledger.db}"


def test_key_is_a_fifo_without_writer(tmp_path):
    import threading

    p = str(tmp_path / "fifo.key")
    os.mkfifo(p, 0o600)
    outcome = {}

    def load():
        try:
            keys.load_key_file(p)
            outcome["result"] = "loaded"
        except KeyFileError as e:
            outcome["result"] = e
        except BaseException as e:  # noqa: BLE001
            outcome["result"] = e

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(2)
    hung = t.is_alive()
    if hung:  # unblock the reader: open and close the write end
        fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(5)
    assert not hung, "load_key_file blocked on a FIFO"
    assert isinstance(outcome.get("result"), KeyFileError)
