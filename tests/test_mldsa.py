"""ML-DSA-44 witness cosignatures (c2sp.org/tlog-cosignature v1.1, type 0x06):
keys, vkeys, the binary subtree/v1 message, signature lines, and refusals.

A second implementation checks the same bytes in tests/test_interop_mldsa.py;
tests/vectors/mldsa/ holds cosignatures it made (see PROVENANCE.md there).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey, MLDSA44PublicKey

from ledger.errors import FormatError, KeyFileError, SignatureError
from ledger.format import mldsa, note

VECTORS = Path(__file__).parent / "vectors" / "mldsa"
ROOT = hashlib.sha256(b"root").digest()
ORIGIN = "example.com/fundledger"


def fixed(name: str = "witness.example/pq", n: int = 1) -> note.Signer:
    seed = hashlib.sha256(f"mldsa/{name}/{n}".encode()).digest()
    pk, _ = mldsa.keypair(seed)
    return note.Signer(name, note.key_id(name, note.ALG_MLDSA44, pk), seed, note.ALG_MLDSA44)


W = fixed()
WV = W.verifier()


def cp_text(size: int = 10, ext: tuple[str, ...] = (), origin: str = ORIGIN, root: bytes = ROOT) -> bytes:
    return note.Checkpoint(origin, size, root, ext).text()


def sig_of(line: bytes) -> note.NoteSignature:
    (sig,) = note.parse_signature_lines(line)
    return sig


# --- keys -----------------------------------------------------------------------


def test_key_sizes_key_id_and_vkey_spelling():
    pk = WV.public_key
    assert len(pk) == 1312 and W.alg == WV.alg == 0x06 and len(W.seed) == 32
    assert WV.key_id == hashlib.sha256(W.name.encode() + b"\n\x06" + pk).digest()[:4]
    name, kid, b64 = WV.vkey().split("+", 2)
    assert (name, kid) == (W.name, WV.key_id.hex())
    assert base64.b64decode(b64, validate=True) == b"\x06" + pk
    assert note.parse_vkey(WV.vkey()) == WV and note.parse_vkey(WV.vkey() + "\n") == WV
    assert note.parse_skey(W.skey()).verifier() == WV
    assert W.skey().startswith(f"PRIVATE+KEY+{W.name}+{WV.key_id.hex()}+")
    assert base64.b64decode(W.skey().split("+", 4)[4]) == b"\x06" + W.seed


def test_the_seed_is_the_fips_204_key_generation_seed():
    """The key file's 32 bytes give the same key pair as the library's own
    ML-DSA-44 seed import: the file holds the seed xi, not an expanded key."""
    sk = MLDSA44PrivateKey.from_seed_bytes(W.seed)
    assert sk.public_key().public_bytes_raw() == WV.public_key
    assert sk.private_bytes_raw() == W.seed


def test_generated_keys_differ_and_round_trip():
    a, b = (note.generate_signer("w.example", note.ALG_MLDSA44) for _ in range(2))
    assert a.seed != b.seed and a.verifier().public_key != b.verifier().public_key
    assert note.parse_skey(a.skey()) == a


def test_a_key_of_the_wrong_size_or_family_is_refused():
    pk = WV.public_key
    for raw in (b"\x06" + pk[:-1], b"\x06" + pk + b"\0", b"\x06" + pk[:32], b"\x04" + pk, b"\x06"):
        bad = f"{W.name}+{WV.key_id.hex()}+{base64.b64encode(raw).decode()}"
        with pytest.raises(KeyFileError):
            note.parse_vkey(bad)
    expanded = base64.b64encode(b"\x06" + pk).decode()
    with pytest.raises(KeyFileError):  # an ML-DSA skey holds the 32-byte seed only
        note.parse_skey(f"PRIVATE+KEY+{W.name}+{WV.key_id.hex()}+{expanded}")
    with pytest.raises(KeyFileError, match="over 1752"):  # refused before it is decoded
        note.parse_vkey(WV.vkey() + "AAAA")
    wrong_id = WV.vkey().replace(WV.key_id.hex(), "00000000")
    with pytest.raises(KeyFileError, match="does not match"):
        note.parse_vkey(wrong_id)
    with pytest.raises(KeyFileError):
        WV.with_alg(note.ALG_COSIGNATURE_V1)
    with pytest.raises(KeyFileError):
        note.generate_signer("w.example", note.ALG_COSIGNATURE_V1).with_alg(note.ALG_MLDSA44)
    with pytest.raises(KeyFileError):  # an Ed25519-sized key under type 0x06
        note.Verifier(W.name, WV.key_id, bytes(32), note.ALG_MLDSA44)


def test_a_name_over_255_bytes_cannot_be_an_ml_dsa_cosigner():
    long = "w" * 256
    with pytest.raises(KeyFileError, match="255"):
        note.generate_signer(long, note.ALG_MLDSA44)
    with pytest.raises(KeyFileError, match="255"):
        note.Verifier(long, note.key_id(long, 6, WV.public_key), WV.public_key, note.ALG_MLDSA44)
    assert fixed("w" * 255).verifier().name == "w" * 255


# --- the signed message -----------------------------------------------------------


def test_the_subtree_v1_message_layout():
    msg = mldsa.cosigned_message("w.example", 1679315147, "example.com/behind-the-sofa", 0, 20852163, ROOT)
    want = (b"subtree/v1\n\x00"
            + b"\x09w.example"
            + (1679315147).to_bytes(8, "big")
            + b"\x1bexample.com/behind-the-sofa"
            + bytes(8)
            + (20852163).to_bytes(8, "big")
            + ROOT)
    assert msg == want and len(mldsa.LABEL) == 12
    assert len(msg) == 12 + 1 + 9 + 8 + 1 + 27 + 8 + 8 + 32


def test_the_message_commits_to_name_origin_size_root_and_time_not_extensions():
    base = mldsa.cosigned_message("w", 5, "o", 0, 10, ROOT)
    for other in (mldsa.cosigned_message("v", 5, "o", 0, 10, ROOT), mldsa.cosigned_message("w", 6, "o", 0, 10, ROOT),
                  mldsa.cosigned_message("w", 5, "p", 0, 10, ROOT), mldsa.cosigned_message("w", 5, "o", 0, 11, ROOT),
                  mldsa.cosigned_message("w", 5, "o", 0, 10, bytes(32))):
        assert other != base
    line = note.cosign(cp_text(ext=("one extension",)), W, 5)
    assert note.verify_cosignature(cp_text(ext=("another",)), sig_of(line), WV) == 5
    assert note.verify_cosignature(cp_text(), sig_of(line), WV) == 5


@pytest.mark.parametrize("args", [
    ("", 0, "o", 0, 1, ROOT), ("w", 0, "", 0, 1, ROOT), ("w" * 256, 0, "o", 0, 1, ROOT),
    ("w", 0, "o" * 256, 0, 1, ROOT), ("w", 2**63, "o", 0, 1, ROOT), ("w", -1, "o", 0, 1, ROOT),
    ("w", 0, "o", 2, 1, ROOT), ("w", 0, "o", 0, 2**64, ROOT), ("w", 1, "o", 4, 8, ROOT),
    ("w", 0, "o", 0, 1, ROOT[:31]), ("w", 0, "o", True, 1, ROOT),
], ids=["empty name", "empty origin", "long name", "long origin", "time 2**63", "negative time", "start > end",
        "end 2**64", "time with start", "short hash", "bool start"])
def test_the_message_refuses_what_the_struct_cannot_hold(args):
    with pytest.raises(FormatError):
        mldsa.cosigned_message(*args)


def test_a_subtree_that_does_not_start_at_0_has_time_0():
    assert mldsa.cosigned_message("w", 0, "o", 4, 8, ROOT)[12:].startswith(b"\x01w" + bytes(8))


# --- cosignatures ---------------------------------------------------------------------


def test_cosign_and_verify_a_checkpoint():
    text = cp_text(ext=("ext",))
    line = note.cosign(text, W, 1_700_000_000)
    assert line.startswith("\u2014 witness.example/pq ".encode()) and line.endswith(b"\n")
    sig = sig_of(line)
    assert sig.key_id == WV.key_id and len(sig.signature) == 8 + 2420 == mldsa.COSIGNATURE_SIZE
    assert len(line) == note.sig_line_length(W.name, mldsa.COSIGNATURE_SIZE)
    assert int.from_bytes(sig.signature[:8], "big") == 1_700_000_000
    # the raw signature is pure ML-DSA-44, empty context, over the subtree/v1 message
    msg = mldsa.cosigned_message(W.name, 1_700_000_000, ORIGIN, 0, 10, ROOT)
    MLDSA44PublicKey.from_public_bytes(WV.public_key).verify(sig.signature[8:], msg)
    assert note.verify_cosignature(text, sig, WV) == 1_700_000_000
    # hedged: a second cosignature of the same message differs and verifies too
    again = note.cosign(text, W, 1_700_000_000)
    assert again != line and note.verify_cosignature(text, sig_of(again), WV) == 1_700_000_000


def test_time_zero_and_size_zero_verify():
    empty = hashlib.sha256(b"").digest()
    text = cp_text(size=0, root=empty)
    assert note.verify_cosignature(text, sig_of(note.cosign(text, W, 0)), WV) == 0


def test_open_note_checks_ml_dsa_cosigners_beside_the_log_key():
    log = note.generate_signer(ORIGIN)
    text = cp_text()
    signed = note.sign_note(text, [log]) + note.cosign(text, W, 7)
    assert note.open_note(signed, [WV])[1] == [WV]
    assert note.open_note(signed, [log.verifier(), WV])[1] == [log.verifier(), WV]
    other = fixed(n=2).verifier()  # same name, another key: its line is ignored, so nothing verifies
    with pytest.raises(SignatureError, match="no valid signature"):
        note.open_note(signed, [other])


def flip(b: bytes, i: int) -> bytes:
    return b[:i] + bytes([b[i] ^ 1]) + b[i + 1:]


def test_every_tampering_fails():
    text = cp_text()
    sig = sig_of(note.cosign(text, W, 99))

    def bad(s: bytes) -> note.NoteSignature:
        return note.NoteSignature(sig.name, sig.key_id, s, b"")

    for i in (0, 7, 8, 100, 8 + 2419):  # timestamp, first and last signature bytes
        with pytest.raises(SignatureError):
            note.verify_cosignature(text, bad(flip(sig.signature, i)), WV)
    for s in (sig.signature[:-1], sig.signature + b"\0", sig.signature[:72]):
        with pytest.raises(SignatureError, match="bytes, not 2428"):
            note.verify_cosignature(text, bad(s), WV)
    with pytest.raises(SignatureError, match="not below 2"):
        note.verify_cosignature(text, bad(b"\x80" + sig.signature[1:]), WV)
    for other in (cp_text(size=11), cp_text(origin="example.com/other"), cp_text(root=bytes(32))):
        with pytest.raises(SignatureError):
            note.verify_cosignature(other, sig, WV)
    # the same key under another name: the message holds the name, so it fails
    renamed = note.Verifier("witness.example/pr", note.key_id("witness.example/pr", 6, WV.public_key),
                            WV.public_key, note.ALG_MLDSA44)
    with pytest.raises(SignatureError, match="invalid cosignature"):
        note.verify_cosignature(text, note.NoteSignature(renamed.name, renamed.key_id, sig.signature, b""), renamed)
    with pytest.raises(SignatureError, match="is not by"):
        note.verify_cosignature(text, sig, renamed)


def test_the_two_cosignature_types_are_not_confused():
    ed = note.generate_signer(W.name, note.ALG_COSIGNATURE_V1)
    text = cp_text()
    ed_sig = sig_of(note.cosign(text, ed, 5))
    with pytest.raises(SignatureError):  # an Ed25519 line read as the ML-DSA key's: wrong id and size
        note.verify_cosignature(text, note.NoteSignature(W.name, WV.key_id, ed_sig.signature, b""), WV)
    with pytest.raises(SignatureError):
        note.verify_cosignature(text, note.NoteSignature(ed.name, ed.key_id, sig_of(note.cosign(text, W, 5)).signature,
                                                         b""), ed.verifier())
    with pytest.raises(KeyFileError):
        note.cosign(text, note.generate_signer(W.name), 5)  # a plain note key cosigns nothing
    with pytest.raises(KeyFileError):
        note.sign_note(text, [W])  # nor does a cosigner sign notes


def test_an_origin_over_255_bytes_has_no_ml_dsa_cosignature():
    text = cp_text(origin="o" * 256)
    with pytest.raises(FormatError, match="255"):
        note.cosign(text, W, 5)


# --- known answers made by a second implementation ------------------------------------------


def test_cosignatures_made_by_noble_verify():
    """tests/vectors/mldsa/noble-cosignatures.json: keys and cosignatures
    made by @noble/post-quantum from fixed seeds (PROVENANCE.md there)."""
    data = json.loads((VECTORS / "noble-cosignatures.json").read_text("utf-8"))
    assert data["vectors"]
    for v in data["vectors"]:
        key = note.parse_vkey(v["vkey"])
        seed = bytes.fromhex(v["seed"])
        assert mldsa.keypair(seed)[0] == key.public_key  # the same seed gives the same key here
        text = v["checkpoint"].encode()
        cp = note.parse_checkpoint(text)
        msg = mldsa.cosigned_message(key.name, v["timestamp"], cp.origin, 0, cp.tree_size, cp.root_hash)
        assert msg.hex() == v["message"]
        sig = sig_of(v["line"].encode())
        assert note.verify_cosignature(text, sig, key) == v["timestamp"]
        with pytest.raises(SignatureError):
            note.verify_cosignature(text, note.NoteSignature(sig.name, sig.key_id, flip(sig.signature, 50), b""), key)
