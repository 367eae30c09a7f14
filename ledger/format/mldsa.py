"""ML-DSA-44 witness cosignatures: c2sp.org/tlog-cosignature v1.1, the
``subtree/v1`` signature type 0x06.

A pure module (no I/O, no clock; key generation takes its seed from the
caller). :mod:`ledger.format.note` holds the keys and the signature lines
and calls in here for what is particular to ML-DSA-44; the signature itself
is FIPS 204 ML-DSA-44 in its *pure* form with an *empty* context string
(not HashML-DSA), by the ``cryptography`` package (48 or later).

What the spec fixes (tlog-cosignature v1.1, sections "Format" and
"ML-DSA-44 signed message"):

* the key id is ``SHA-256(name || 0x0A || 0x06 || 1312-byte public key)[:4]``,
  and a vkey is ``<name>+<key id>+base64(0x06 || 1312-byte public key)``;
* the signature line holds ``key id || timestamped_signature``, that is
  ``key id || u64 big-endian timestamp || 2420-byte ML-DSA-44 signature``
  (4 + 8 + 2420 = 2432 bytes, 3244 base64 characters);
* the signed message is the binary ``cosigned_message`` of
  :func:`cosigned_message`, not text: it commits to the cosigner's name,
  the log's origin and the tree (start, end, root hash), and *not* to a
  checkpoint's extension lines.

Where the spec is silent, the choices made here:

* the private key is the 32-byte FIPS 204 key-generation seed (xi), written
  as the other key types are: ``PRIVATE+KEY+<name>+<key id>+base64(0x06 ||
  seed)`` (Go's x/mod note has no ML-DSA type, so no tool fixes this);
* a verifier accepts a timestamp of 0 (allowed by the spec: "no statement
  as to the tree being the largest observed"), as any other below 2**63;
* only checkpoints are cosigned and verified (``start`` = 0); a subtree with
  another start has no checkpoint form, and nothing here reads one.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey, MLDSA44PublicKey

from ledger.errors import FormatError, KeyFileError
from ledger.format.strict import check_uint63

__all__ = [
    "ALG_MLDSA44", "PUBLIC_KEY_SIZE", "SEED_SIZE", "SIGNATURE_SIZE", "COSIGNATURE_SIZE", "LABEL", "NAME",
    "check_name", "cosigned_message", "keypair", "sign", "verify",
]

ALG_MLDSA44 = 0x06
"""The signed-note signature type of an ML-DSA-44 (subtree/v1) cosignature."""
NAME = "ML-DSA-44"
PUBLIC_KEY_SIZE = 1312
SEED_SIZE = 32
SIGNATURE_SIZE = 2420
COSIGNATURE_SIZE = 8 + SIGNATURE_SIZE
"""A timestamped_signature: a big-endian u64 timestamp, then the ML-DSA-44 signature."""
LABEL = b"subtree/v1\n\x00"
"""The 12-byte label that starts every cosigned_message."""
_MAX_U64 = (1 << 64) - 1
_HASH_SIZE = 32


def _opaque8(value: bytes, what: str) -> bytes:
    """``opaque value<1..2^8-1>`` (RFC 8446 section 3.4): a one-byte length,
    then the bytes."""
    if not 1 <= len(value) <= 0xFF:
        raise FormatError(f"{what} is {len(value)} bytes: an ML-DSA-44 cosignature needs 1 to 255")
    return bytes([len(value)]) + value


def check_name(name: str) -> None:
    """An ML-DSA-44 cosigner's name is 1 to 255 bytes of UTF-8, since the
    message holds it as ``opaque cosigner_name<1..2^8-1>``: KeyFileError for
    a longer one (a key by that name could sign nothing)."""
    if not 1 <= len(name.encode("utf-8")) <= 0xFF:
        raise KeyFileError(f"an ML-DSA-44 cosigner's name is 1 to 255 bytes, not {len(name.encode('utf-8'))}")


def cosigned_message(cosigner_name: str, timestamp: int, origin: str, start: int, end: int, root_hash: bytes) -> bytes:
    """The message an ML-DSA-44 cosignature signs (tlog-cosignature v1.1,
    "ML-DSA-44 signed message"), in the RFC 8446 section 3 presentation
    language, integers big-endian::

        struct {
            uint8 label[12] = "subtree/v1\\n\\0";
            opaque cosigner_name<1..2^8-1>;   // UTF-8, one length byte first
            uint64 timestamp;
            opaque log_origin<1..2^8-1>;      // the checkpoint's origin line, no newline
            uint64 start;                     // 0 for a checkpoint
            uint64 end;                       // the tree size for a checkpoint
            uint8 hash[32];                   // the root hash
        } cosigned_message;

    FormatError for a name or origin of 0 or over 255 bytes, a timestamp not
    below 2**63, ``start`` above ``end`` or over 2**64 - 1, a non-zero
    timestamp with a non-zero start (the spec forbids it), or a hash that is
    not 32 bytes."""
    check_uint63(timestamp, "cosignature timestamp")
    for v, what in ((start, "subtree start"), (end, "subtree end")):
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= _MAX_U64:
            raise FormatError(f"{what} must be an integer from 0 to 2**64 - 1")
    if start > end:
        raise FormatError("subtree start is above its end")
    if start != 0 and timestamp != 0:
        raise FormatError("a subtree that does not start at 0 is cosigned with timestamp 0")
    if not isinstance(root_hash, bytes) or len(root_hash) != _HASH_SIZE:
        raise FormatError("the subtree hash must be 32 bytes")
    return b"".join((
        LABEL,
        _opaque8(cosigner_name.encode("utf-8"), "the cosigner name"),
        timestamp.to_bytes(8, "big"),
        _opaque8(origin.encode("utf-8"), "the log origin"),
        start.to_bytes(8, "big"),
        end.to_bytes(8, "big"),
        root_hash,
    ))


def keypair(seed: bytes) -> tuple[bytes, MLDSA44PrivateKey]:
    """The 1312-byte public key and the private key of a 32-byte seed
    (FIPS 204 ML-DSA.KeyGen_internal(xi))."""
    if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
        raise KeyFileError(f"an ML-DSA-44 seed must be {SEED_SIZE} bytes")
    sk = MLDSA44PrivateKey.from_seed_bytes(seed)
    return sk.public_key().public_bytes_raw(), sk


def sign(private_key: MLDSA44PrivateKey, message: bytes) -> bytes:
    """A 2420-byte ML-DSA-44 signature of ``message``: pure ML-DSA, empty
    context (FIPS 204 algorithm 2 with ctx = ""), hedged (randomized) as
    the library does by default, so two signatures of one message differ."""
    return private_key.sign(bytes(message))


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Pure ML-DSA-44 with an empty context (FIPS 204 algorithm 3) of
    ``signature`` over ``message`` by the 1312-byte ``public_key``."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        MLDSA44PublicKey.from_public_bytes(bytes(public_key)).verify(bytes(signature), bytes(message))
    except (InvalidSignature, ValueError):
        return False
    return True
