"""C2SP signed notes, keys, checkpoints and cosignatures.

A pure module (no I/O, no clock) implementing, byte for byte:

* c2sp.org/signed-note: notes, Ed25519 signatures (type 0x01), key ids, and
  the golang.org/x/mod/sumdb/note key encodings (vkey / skey);
* c2sp.org/tlog-checkpoint: the checkpoint note text;
* c2sp.org/tlog-cosignature v1.1: Ed25519 ``cosignature/v1`` (type 0x04)
  and ML-DSA-44 ``subtree/v1`` (type 0x06, its message and signature in
  :mod:`ledger.format.mldsa`).

Receipts (tlog-proof) are in :mod:`ledger.format.receipt`, witness requests
(tlog-witness add-checkpoint) in :mod:`ledger.format.consistency`, the
strict readers they share with this module in :mod:`ledger.format.strict`.

Every parser accepts exactly one spelling of its format and raises only
:class:`~ledger.errors.FundledgerError` subclasses: ``FormatError`` for
anything else, ``LimitError`` for input over a limit below,
``KeyFileError`` for a malformed key string, ``SignatureError`` when no
valid signature by a required key is present.

Choices where the specs are silent (the strict reading each time):

* Base64 is RFC 4648 section 4 standard base64 *with* padding, and must be
  canonical: decoding and re-encoding gives back the same string (no
  non-zero padding bits, no whitespace, no missing ``=``).
* Decimal numbers (tree size, index, old size) are ASCII ``0`` or
  ``[1-9][0-9]*`` and below 2**63.
* Key names (signature lines, vkeys, skeys) must, beyond the spec's
  "non-empty, no Unicode space, no '+'", also be printable
  (``str.isprintable``): no format characters such as U+200B or U+FEFF.
* Key-id hex in vkeys and skeys is exactly 8 *lowercase* hex digits (the
  spelling Go's ``%08x`` writes).
* Ed25519: before the equation, a public key or R that is a small-order
  point or a non-canonical encoding, and an S not below L, are refused
  (:data:`REFUSED_POINTS`, :func:`ed25519_shape_ok`); a vkey holding such a
  key does not parse. libsodium refuses them too; WebCrypto, OpenSSL and Go
  do not all do so, hence the explicit rule.
* A note's signature lines are read as golang.org/x/mod/sumdb/note's Open
  reads them: the first line by each known (name, key id) is verified and
  a failure fails the note; a later line by the same key is ignored, as is
  a line by an unknown key.
* At most MAX_SIGNATURES (100, as note.go) signature lines per note.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Sequence

from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair

from ledger.errors import FormatError, KeyFileError, LimitError, SignatureError
from ledger.format import mldsa
from ledger.format.ed25519 import ED25519_ORDER, REFUSED_POINTS, ed25519_shape_ok
from ledger.format.strict import (
    MAX_TREE_SIZE,
    b64,
    b64decode,
    check_line_str,
    check_size,
    check_text_bytes,
    check_uint63,
    parse_decimal,
)

__all__ = [
    "ALG_ED25519", "ALG_COSIGNATURE_V1", "ALG_MLDSA44", "SIG_PREFIX", "KEY_ID_SIZE", "ED25519_SIG_SIZE", "COSIGNATURE_SIZE",
    "sig_b64_length", "sig_line_length", "MAX_NOTE_BYTES", "MAX_SIGNATURES", "COSIGNATURE_HEADER", "ED25519_ORDER",
    "REFUSED_POINTS", "ed25519_shape_ok", "key_id", "check_key_name", "Verifier", "Signer", "generate_signer",
    "parse_vkey", "parse_skey", "NoteSignature", "sign_note", "split_note", "open_note", "parse_signature_lines",
    "Checkpoint", "parse_checkpoint", "parse_signed_checkpoint", "cosignature_message", "cosign",
    "verify_cosignature"
]

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
ALG_MLDSA44 = mldsa.ALG_MLDSA44
_ALGS = (ALG_ED25519, ALG_COSIGNATURE_V1, ALG_MLDSA44)
_COSIGNERS = (ALG_COSIGNATURE_V1, ALG_MLDSA44)
_PUBLIC_KEY_SIZES = {ALG_ED25519: 32, ALG_COSIGNATURE_V1: 32, ALG_MLDSA44: mldsa.PUBLIC_KEY_SIZE}
_MAX_KEY_B64 = 4 * -(-(1 + mldsa.PUBLIC_KEY_SIZE) // 3)  # 1752: the longest key a vkey holds

MAX_NOTE_BYTES = 1 << 20
"""Largest checkpoint note, receipt or witness request accepted."""
MAX_SIGNATURES = 100
"""Most signature lines in one note (note.go's limit; the spec asks >= 16)."""
COSIGNATURE_HEADER = b"cosignature/v1"

SIG_PREFIX = "\u2014 ".encode()
"""A signature line starts with an em dash and a space."""
KEY_ID_SIZE = 4
"""The key hash before each signature: SHA-256(name || 0x0A || type || key)[:4]."""
ED25519_SIG_SIZE = 64
COSIGNATURE_SIZE = 8 + ED25519_SIG_SIZE
"""A cosignature/v1: a big-endian u64 timestamp, then the Ed25519 signature."""
_HASH_SIZE = 32
_KEY_SIZE = 32


def sig_b64_length(signature_size: int = ED25519_SIG_SIZE) -> int:
    """Characters of the base64 of a signature line's key id and signature:
    92 for Ed25519 (4 + 64 bytes), 104 for a cosignature/v1 (4 + 72)."""
    return 4 * -(-(KEY_ID_SIZE + signature_size) // 3)


def sig_line_length(name: str, signature_size: int = ED25519_SIG_SIZE) -> int:
    """Bytes of one signature line ``— <name> <base64>`` by ``name``, its
    newline included."""
    return len(SIG_PREFIX) + len(name.encode("utf-8")) + 1 + sig_b64_length(signature_size) + 1


_HEX8 = re.compile(r"[0-9a-f]{8}")


# ---------------------------------------------------------------------------
# Keys


def key_id(name: str, alg: int, public_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || alg || public_key)[:4]`` (c2sp.org/signed-note)."""
    if not isinstance(alg, int) or isinstance(alg, bool) or not 0 <= alg <= 0xFF:
        raise FormatError("signature type must be one byte")
    if not isinstance(name, str):
        raise FormatError("key name must be a string")
    try:
        nb = name.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError("key name is not encodable as UTF-8") from None
    return hashlib.sha256(nb + b"\n" + bytes([alg]) + bytes(public_key)).digest()[:KEY_ID_SIZE]


def check_key_name(name: str) -> None:
    """Non-empty, no '+', no (Unicode) whitespace, printable; FormatError otherwise."""
    if name in _GOOD_NAMES:
        return
    _check_key_name(name)
    if len(_GOOD_NAMES) < 1024:
        _GOOD_NAMES.add(name)


_GOOD_NAMES: set[str] = set()  # names already checked (key names repeat on every line)


def _check_key_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise FormatError("key name must be a non-empty string")
    if "+" in name:
        raise FormatError(f"key name {name!r} contains '+'")
    if any(c.isspace() for c in name):
        raise FormatError(f"key name {name!r} contains whitespace")
    if not name.isprintable():
        raise FormatError(f"key name {name!r} contains a non-printable character")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(f"key name {name!r} is not encodable as UTF-8") from None


def _check_alg(alg: object) -> None:
    if alg not in _ALGS or isinstance(alg, bool):
        raise KeyFileError(f"unsupported signature type {alg!r}: only 0x01 (Ed25519), 0x04 (cosignature/v1)"
                           " and 0x06 (ML-DSA-44 cosignature)")


def _same_family(alg: int, other: int) -> None:
    """Ed25519 keys serve as 0x01 or 0x04; an ML-DSA-44 key only as 0x06."""
    _check_alg(other)
    if (alg == ALG_MLDSA44) != (other == ALG_MLDSA44):
        raise KeyFileError(f"a key of type {alg:#04x} cannot be used as type {other:#04x}")


def _keypair(alg: int, seed: bytes):
    if alg == ALG_MLDSA44:
        return mldsa.keypair(seed)
    return crypto_sign_seed_keypair(seed)


@dataclass(frozen=True)
class Verifier:
    """A public key. ``key_id`` is taken as given (not recomputed here, so a
    bare Ed25519 check may use a placeholder); :func:`parse_vkey` checks it."""

    name: str
    key_id: bytes
    public_key: bytes
    alg: int = ALG_ED25519

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if not isinstance(self.key_id, bytes) or len(self.key_id) != KEY_ID_SIZE:
            raise KeyFileError("key id must be 4 bytes")
        _check_alg(self.alg)
        if self.alg == ALG_MLDSA44:
            mldsa.check_name(self.name)
        size = _PUBLIC_KEY_SIZES[self.alg]
        if not isinstance(self.public_key, bytes) or len(self.public_key) != size:
            raise KeyFileError(f"a type {self.alg:#04x} public key must be {size} bytes")

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Raw Ed25519 (RFC 8032, libsodium) of ``signature`` over ``message``,
        after the explicit checks of :func:`ed25519_shape_ok`; for a 0x06
        key, pure ML-DSA-44 with an empty context (:func:`mldsa.verify`)."""
        if self.alg == ALG_MLDSA44:
            return mldsa.verify(self.public_key, message, signature)
        if not ed25519_shape_ok(self.public_key, signature):
            return False
        try:
            crypto_sign_open(bytes(signature) + bytes(message), self.public_key)
        except Exception:  # nacl BadSignatureError, or a libsodium refusal
            return False
        return True

    def vkey(self) -> str:
        """``<name>+<8 hex key id>+<base64(alg || public_key)>``."""
        return f"{self.name}+{self.key_id.hex()}+{b64(bytes([self.alg]) + self.public_key)}"

    def with_alg(self, alg: int) -> "Verifier":
        """The same name and public key for another signature type (new key
        id): 0x01 and 0x04 for an Ed25519 key, KeyFileError across families."""
        _same_family(self.alg, alg)
        return Verifier(self.name, key_id(self.name, alg, self.public_key), self.public_key, alg)


@dataclass(frozen=True)
class Signer:
    """A private key: a 32-byte seed (Ed25519, or the ML-DSA-44 key-generation
    seed for type 0x06). The key id must match."""

    name: str
    key_id: bytes
    seed: bytes = field(repr=False)
    alg: int = ALG_ED25519
    _pk: bytes = field(init=False, repr=False, compare=False)
    _sk: object = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_key_name(self.name)
        _check_alg(self.alg)
        if not isinstance(self.seed, bytes) or len(self.seed) != 32:
            raise KeyFileError("a private key seed must be 32 bytes")
        if not isinstance(self.key_id, bytes) or len(self.key_id) != KEY_ID_SIZE:
            raise KeyFileError("key id must be 4 bytes")
        if self.alg == ALG_MLDSA44:
            mldsa.check_name(self.name)
        pk, sk = _keypair(self.alg, self.seed)
        if key_id(self.name, self.alg, pk) != self.key_id:
            raise KeyFileError(f"key id {self.key_id.hex()} does not match the key")
        object.__setattr__(self, "_pk", pk)
        object.__setattr__(self, "_sk", sk)

    def sign(self, message: bytes) -> bytes:
        """A 64-byte raw Ed25519 signature of ``message`` (0x06: 2420-byte ML-DSA-44)."""
        if self.alg == ALG_MLDSA44:
            return mldsa.sign(self._sk, message)
        return crypto_sign(bytes(message), self._sk)[:ED25519_SIG_SIZE]

    def verifier(self) -> Verifier:
        return Verifier(self.name, self.key_id, self._pk, self.alg)

    def skey(self) -> str:
        """``PRIVATE+KEY+<name>+<8 hex key id>+<base64(alg || seed)>`` (x/mod note)."""
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{b64(bytes([self.alg]) + self.seed)}"

    def with_alg(self, alg: int) -> "Signer":
        """The same name and seed for another signature type (new key id),
        within one family as :meth:`Verifier.with_alg`."""
        _same_family(self.alg, alg)
        return Signer(self.name, key_id(self.name, alg, self._pk), self.seed, alg)


def generate_signer(name: str, alg: int = ALG_ED25519) -> Signer:
    """A new key named ``name`` from 32 bytes of ``os.urandom``."""
    check_key_name(name)
    _check_alg(alg)
    seed = os.urandom(32)
    pk, _ = _keypair(alg, seed)
    return Signer(name, key_id(name, alg, pk), seed, alg)


def _strip_one_newline(s: object, what: str) -> str:
    if not isinstance(s, str):
        raise KeyFileError(f"{what} must be a string")
    return s[:-1] if s.endswith("\n") else s


def _parse_key_parts(name: str, hex_id: str, b64: str, what: str) -> tuple[int, bytes, bytes]:
    try:
        check_key_name(name)
    except FormatError as e:
        raise KeyFileError(f"malformed {what}: {e}") from None
    if not _HEX8.fullmatch(hex_id):
        raise KeyFileError(f"malformed {what}: key id is not 8 lowercase hex digits")
    if len(b64) > _MAX_KEY_B64:
        raise KeyFileError(f"malformed {what}: the key is over {_MAX_KEY_B64} base64 characters")
    raw = b64decode(b64, f"malformed {what}", KeyFileError)
    if not raw:
        raise KeyFileError(f"malformed {what}: no key")
    _check_alg(raw[0])
    size = 1 + (_PUBLIC_KEY_SIZES[raw[0]] if what == "verifier key" else _KEY_SIZE)
    if len(raw) != size:
        raise KeyFileError(f"malformed {what}: a type {raw[0]:#04x} key is {size} bytes, not {len(raw)}")
    if raw[0] != ALG_MLDSA44 and raw[1:] in REFUSED_POINTS and what == "verifier key":
        raise KeyFileError(f"malformed {what}: the public key is a small-order or non-canonical Ed25519 point")
    return raw[0], raw[1:], bytes.fromhex(hex_id)


def parse_vkey(s: str) -> Verifier:
    """Parse ``<name>+<8 hex>+<base64(alg || key)>``, the key 32 bytes (0x01,
    0x04) or 1312 bytes (0x06, ML-DSA-44); one optional trailing newline
    tolerated, nothing else; the key id must match. KeyFileError on any
    other spelling, or a base64 key over 1752 characters (not decoded)."""
    s = _strip_one_newline(s, "verifier key")
    parts = s.split("+", 2)  # base64 may itself contain '+'
    if len(parts) != 3:
        raise KeyFileError("malformed verifier key: expected <name>+<key id>+<key>")
    alg, pk, kid = _parse_key_parts(*parts, "verifier key")
    name = parts[0]
    if key_id(name, alg, pk) != kid:
        raise KeyFileError(f"verifier key id {kid.hex()} does not match the key")
    return Verifier(name, kid, pk, alg)


def parse_skey(s: str) -> Signer:
    """Parse ``PRIVATE+KEY+<name>+<8 hex>+<base64(alg || seed)>`` (one optional
    trailing newline tolerated, nothing else); the key id must match the
    derived public key. KeyFileError on any other spelling."""
    s = _strip_one_newline(s, "signer key")
    parts = s.split("+", 4)
    if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
        raise KeyFileError("malformed signer key: expected PRIVATE+KEY+<name>+<key id>+<key>")
    alg, seed, kid = _parse_key_parts(parts[2], parts[3], parts[4], "signer key")
    return Signer(parts[2], kid, seed, alg)


# ---------------------------------------------------------------------------
# Signed notes


@dataclass(frozen=True)
class NoteSignature:
    """One parsed signature line."""

    name: str
    key_id: bytes
    signature: bytes
    """The bytes after the key id (Ed25519: 64; cosignature/v1: 8 + 64)."""
    line: bytes
    """The line as it appeared, from the em dash to the final newline."""


def _format_sig_line(name: str, kid: bytes, sig: bytes) -> bytes:
    return SIG_PREFIX + name.encode("utf-8") + b" " + b64(kid + sig).encode("ascii") + b"\n"


def _parse_sig_line(line: bytes) -> NoteSignature:
    """``line`` without its final newline."""
    if not line.startswith(SIG_PREFIX):
        raise FormatError("signature line does not start with an em dash and a space")
    rest = line[len(SIG_PREFIX) :].decode("utf-8")  # caller checked UTF-8
    name, sep, b64 = rest.partition(" ")
    if not sep:
        raise FormatError("signature line has no space between key name and signature")
    check_key_name(name)
    raw = b64decode(b64, f"signature by {name}")
    if len(raw) <= KEY_ID_SIZE:
        raise FormatError(f"signature by {name} is too short")
    return NoteSignature(name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:], line + b"\n")


def _parse_sig_block(sigs: bytes) -> list[NoteSignature]:
    """Signature lines, each ending in a newline; at least one."""
    if not sigs or not sigs.endswith(b"\n"):
        raise FormatError("note does not end with a signature line and a newline")
    lines = sigs[:-1].split(b"\n")
    if len(lines) > MAX_SIGNATURES:
        raise LimitError(f"{len(lines)} signatures is over the limit of {MAX_SIGNATURES}")
    return [_parse_sig_line(line) for line in lines]


def split_note(msg: bytes, max_bytes: int = MAX_NOTE_BYTES) -> tuple[bytes, list[NoteSignature]]:
    """Split a signed note into its text (with its final newline) and its
    signature lines, verifying nothing. The text ends at the *last* blank
    line. FormatError unless the whole note is valid UTF-8 without control
    characters other than newline and every signature line is
    ``— <name> <base64(key id || signature)>\\n``; LimitError over
    ``max_bytes`` or MAX_SIGNATURES."""
    check_size(msg, max_bytes, "note")
    check_text_bytes(msg, "note")
    i = msg.rfind(b"\n\n")
    if i < 0:
        raise FormatError("note has no blank line before its signatures")
    return msg[: i + 1], _parse_sig_block(msg[i + 2 :])


def parse_signature_lines(data: bytes, max_bytes: int = MAX_NOTE_BYTES) -> list[NoteSignature]:
    """One or more signature lines alone, e.g. an add-checkpoint response body."""
    check_size(data, max_bytes, "signature lines")
    check_text_bytes(data, "signature lines")
    return _parse_sig_block(data)


def _check_note_text(text: bytes) -> None:
    check_size(text, MAX_NOTE_BYTES, "note text")
    check_text_bytes(text, "note text")
    if not text.endswith(b"\n"):
        raise FormatError("note text must end with a newline")


def sign_note(text: bytes, signers: Sequence[Signer]) -> bytes:
    """``text || "\\n" ||`` one ``— <name> <base64(key id || Ed25519 sig)>\\n``
    per signer, in order. ``text`` must be UTF-8 without control characters
    other than newline and end in a newline (it may contain blank lines).
    Signers must be Ed25519 (0x01) keys: cosignatures need a timestamp, see
    :func:`cosign`."""
    _check_note_text(text)
    signers = list(signers)
    if not signers:
        raise FormatError("a signed note needs at least one signer")
    if len(signers) > MAX_SIGNATURES:
        raise LimitError(f"{len(signers)} signers is over the limit of {MAX_SIGNATURES}")
    out = [text, b"\n"]
    for s in signers:
        if not isinstance(s, Signer):
            raise KeyFileError("not a Signer")
        if s.alg != ALG_ED25519:
            raise KeyFileError(f"key {s.name} is not an Ed25519 (0x01) note key; use cosign()")
        out.append(_format_sig_line(s.name, s.key_id, s.sign(text)))
    msg = b"".join(out)
    if len(msg) > MAX_NOTE_BYTES:
        raise LimitError(f"signed note of {len(msg)} bytes is over the {MAX_NOTE_BYTES}-byte limit")
    return msg


def _index_verifiers(verifiers: Sequence[Verifier]) -> dict[tuple[str, bytes], Verifier]:
    known: dict[tuple[str, bytes], Verifier] = {}
    for v in verifiers:
        k = (v.name, v.key_id)
        if k in known and known[k] != v:
            raise KeyFileError(f"ambiguous key {v.name}+{v.key_id.hex()}: two different keys")
        known[k] = v
    return known


def _verify_sig(text: bytes, sig: NoteSignature, v: Verifier) -> bool:
    if v.alg in _COSIGNERS:
        try:
            verify_cosignature(text, sig, v)
        except (SignatureError, FormatError):
            return False
        return True
    return v.verify(text, sig.signature)


def open_note(msg: bytes, verifiers: Sequence[Verifier], max_bytes: int = MAX_NOTE_BYTES) -> tuple[bytes, list[Verifier]]:
    """Parse ``msg`` (as :func:`split_note`) and verify it. Returns the text
    and the verifiers whose signature verified (once each, in order of first
    signature). The first signature line whose (name, key id) is a known
    verifier's must verify, else SignatureError; a later line by the same
    key is ignored without being checked, as are lines of unknown keys
    (golang.org/x/mod/sumdb/note's Open does both). A verifier of type 0x04
    or 0x06 checks a cosignature over the text (:func:`verify_cosignature`).
    SignatureError("no valid signature by a known key") if none verified."""
    text, sigs = split_note(msg, max_bytes)
    known = _index_verifiers(verifiers)
    good: list[Verifier] = []
    for sig in sigs:
        v = known.get((sig.name, sig.key_id))
        if v is None or v in good:
            continue
        if not _verify_sig(text, sig, v):
            raise SignatureError(f"invalid signature by {sig.name}+{sig.key_id.hex()}")
        good.append(v)
    if not good:
        raise SignatureError("no valid signature by a known key")
    return text, good


# ---------------------------------------------------------------------------
# Checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """The text of a c2sp.org/tlog-checkpoint note."""

    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_line_str(self.origin, "checkpoint origin")
        check_uint63(self.tree_size, "tree size")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != _HASH_SIZE:
            raise FormatError("root hash must be 32 bytes")
        if not isinstance(self.extensions, tuple):
            raise FormatError("extensions must be a tuple of strings")
        for e in self.extensions:
            check_line_str(e, "checkpoint extension line")

    def text(self) -> bytes:
        """``<origin>\\n<size>\\n<base64 root>\\n`` then ``<extension>\\n`` each."""
        lines = [self.origin, str(self.tree_size), b64(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines).encode("utf-8")


def parse_checkpoint(text: bytes) -> Checkpoint:
    """Parse a checkpoint note *text* (not the signed note): at least three
    non-empty newline-terminated lines; origin non-empty; size ASCII decimal
    without leading zeros below 2**63; root canonical base64 of 32 bytes;
    extension lines non-empty."""
    _check_note_text(text)
    lines = text[:-1].split(b"\n")
    if len(lines) < 3:
        raise FormatError("checkpoint has fewer than three lines")
    if any(not line for line in lines):
        raise FormatError("checkpoint has an empty line")
    size = parse_decimal(lines[1], "checkpoint tree size")
    root = b64decode(lines[2].decode("ascii", "replace"), "checkpoint root hash")
    if len(root) != _HASH_SIZE:
        raise FormatError(f"checkpoint root hash is {len(root)} bytes, not 32")
    return Checkpoint(
        lines[0].decode("utf-8"), size, root, tuple(line.decode("utf-8") for line in lines[3:])
    )


def parse_signed_checkpoint(note: bytes, max_bytes: int = MAX_NOTE_BYTES) -> Checkpoint:
    """The checkpoint of a signed checkpoint note, its signatures not verified."""
    text, _ = split_note(note, max_bytes)
    return parse_checkpoint(text)


# ---------------------------------------------------------------------------
# Cosignatures


def cosignature_message(checkpoint_text: bytes, timestamp: int) -> bytes:
    """``cosignature/v1\\ntime <timestamp>\\n`` followed by the checkpoint text
    (the note body with its final newline, no signature lines): what an
    Ed25519 (0x04) cosignature signs."""
    check_uint63(timestamp, "cosignature timestamp")
    parse_checkpoint(checkpoint_text)
    return COSIGNATURE_HEADER + b"\ntime " + str(timestamp).encode("ascii") + b"\n" + checkpoint_text


def _cosigned_bytes(checkpoint_text: bytes, name: str, alg: int, timestamp: int) -> bytes:
    """What a cosignature of type ``alg`` by ``name`` signs: 0x04 the text of
    :func:`cosignature_message`; 0x06 the binary ``subtree/v1`` message of
    :func:`mldsa.cosigned_message` over (origin, 0, size, root), extension
    lines left out as the spec says."""
    if alg == ALG_COSIGNATURE_V1:
        return cosignature_message(checkpoint_text, timestamp)
    cp = parse_checkpoint(checkpoint_text)
    return mldsa.cosigned_message(name, timestamp, cp.origin, 0, cp.tree_size, cp.root_hash)


def cosign(checkpoint_text: bytes, signer: Signer, timestamp: int) -> bytes:
    """One signature line ``— <name> base64(key id || u64be timestamp ||
    signature)\\n`` (a tlog-cosignature timestamped_signature): an Ed25519
    signature over :func:`cosignature_message` for a 0x04 key, an ML-DSA-44
    one over the subtree/v1 message for a 0x06 key. KeyFileError for any
    other key."""
    if not isinstance(signer, Signer) or signer.alg not in _COSIGNERS:
        raise KeyFileError("cosign needs a cosignature/v1 (0x04) or ML-DSA-44 (0x06) key")
    msg = _cosigned_bytes(checkpoint_text, signer.name, signer.alg, timestamp)
    return _format_sig_line(signer.name, signer.key_id, timestamp.to_bytes(8, "big") + signer.sign(msg))


def verify_cosignature(checkpoint_text: bytes, sig: NoteSignature, verifier: Verifier) -> int:
    """The timestamp of a valid cosignature ``sig`` by ``verifier`` on
    ``checkpoint_text``, of the verifier's type (0x04 Ed25519, 0x06
    ML-DSA-44). SignatureError if the name or key id differ, the signature
    is not 8 + 64 (0x06: 8 + 2420) bytes, the timestamp is not below 2**63,
    or the signature does not verify; KeyFileError if ``verifier`` is of
    neither type; FormatError if the text is not a checkpoint (for 0x06,
    also one whose origin is over 255 bytes)."""
    if verifier.alg not in _COSIGNERS:
        raise KeyFileError(f"key {verifier.name} is not a cosignature (0x04 or 0x06) key")
    label = f"{sig.name}+{sig.key_id.hex()}"
    if sig.name != verifier.name or sig.key_id != verifier.key_id:
        raise SignatureError(f"cosignature {label} is not by {verifier.name}+{verifier.key_id.hex()}")
    size = COSIGNATURE_SIZE if verifier.alg == ALG_COSIGNATURE_V1 else mldsa.COSIGNATURE_SIZE
    if len(sig.signature) != size:
        raise SignatureError(f"cosignature {label} is {len(sig.signature)} bytes, not {size}")
    t = int.from_bytes(sig.signature[:8], "big")
    if t > MAX_TREE_SIZE:
        raise SignatureError(f"cosignature {label} timestamp is not below 2**63")
    if not verifier.verify(_cosigned_bytes(checkpoint_text, verifier.name, verifier.alg, t), sig.signature[8:]):
        raise SignatureError(f"invalid cosignature by {label}")
    return t
