"""Strict readers shared by the C2SP formats (notes, receipts, witness requests).

Each accepts exactly one spelling and raises only FormatError or
LimitError: canonical standard base64, decimals without leading zeros below
2**63, UTF-8 text without control characters, and the hash lines of a
proof body (a receipt's inclusion proof, a witness request's consistency
proof) up to the blank line before its checkpoint note.
"""

from __future__ import annotations

import base64
import binascii
import re

from ledger.errors import FormatError, LimitError

MAX_TREE_SIZE = (1 << 63) - 1
"""Largest tree size, leaf index, old size or cosignature timestamp."""
MAX_PROOF_HASHES = 63
"""Most hash lines in a receipt or an add-checkpoint request."""
HASH_SIZE = 32

_CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f]")
_DECIMAL = re.compile(rb"0|[1-9][0-9]{0,18}")
_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def b64decode(s: str, what: str, err: type[Exception] = FormatError) -> bytes:
    """Canonical standard base64 (with padding) or ``err``."""
    if not _B64.fullmatch(s):
        raise err(f"{what}: not canonical standard base64")
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise err(f"{what}: not canonical standard base64") from None
    if base64.b64encode(raw).decode("ascii") != s:
        raise err(f"{what}: not canonical standard base64")
    return raw


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def parse_decimal(b: bytes, what: str) -> int:
    """ASCII decimal without leading zeros, below 2**63."""
    if not _DECIMAL.fullmatch(b):
        raise FormatError(f"{what}: not a decimal number without leading zeros")
    n = int(b)
    if n > MAX_TREE_SIZE:
        raise FormatError(f"{what}: {n} is not below 2**63")
    return n


def check_uint63(n: object, what: str) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0 or n > MAX_TREE_SIZE:
        raise FormatError(f"{what}: must be an integer in [0, 2**63)")
    return n


def check_text_bytes(b: bytes, what: str) -> str:
    """Valid UTF-8 without ASCII control characters other than newline."""
    if not isinstance(b, bytes):
        raise FormatError(f"{what}: must be bytes")
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{what}: not valid UTF-8") from None
    m = _CONTROL.search(b)
    if m:
        raise FormatError(f"{what}: control character 0x{m.group()[0]:02x} at byte {m.start()}")
    return s


def check_line_str(s: object, what: str) -> bytes:
    """A non-empty str line (no newline, no control character) as UTF-8."""
    if not isinstance(s, str) or not s:
        raise FormatError(f"{what}: must be a non-empty string")
    try:
        b = s.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(f"{what}: not encodable as UTF-8") from None
    if b"\n" in b or _CONTROL.search(b):
        raise FormatError(f"{what}: contains a control character")
    return b


def check_size(data: object, max_bytes: int, what: str) -> None:
    if not isinstance(data, bytes):
        raise FormatError(f"{what}: must be bytes")
    if len(data) > max_bytes:
        raise LimitError(f"{what} of {len(data)} bytes is over the {max_bytes}-byte limit")


def check_proof_hashes(proof: object, what: str) -> tuple[bytes, ...]:
    """A proof as given to a formatter: a tuple of at most MAX_PROOF_HASHES 32-byte hashes."""
    if not isinstance(proof, tuple):
        raise FormatError(f"{what} must be a tuple of hashes")
    if len(proof) > MAX_PROOF_HASHES:
        raise LimitError(f"{what} has {len(proof)} hashes, over the limit of {MAX_PROOF_HASHES}")
    for h in proof:
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise FormatError(f"{what}: every hash must be 32 bytes")
    return proof


def format_hashes_then_note(head: list[bytes], proof: tuple[bytes, ...], checkpoint: bytes, max_bytes: int,
                            what: str) -> bytes:
    """``head``, one base64 line per proof hash, an empty line, then the
    checkpoint note verbatim: the inverse of :func:`parse_hashes_then_note`,
    refused whole over ``max_bytes``."""
    out = head + [b64(h).encode("ascii") + b"\n" for h in proof] + [b"\n", checkpoint]
    data = b"".join(out)
    if len(data) > max_bytes:
        raise LimitError(f"{what} of {len(data)} bytes is over the {max_bytes}-byte limit")
    return data


def parse_hashes_then_note(lines: list[bytes], start: int, data: bytes, offset: int, what: str) -> tuple[tuple[bytes, ...], bytes]:
    """Hash lines from ``lines[start]`` up to an empty line; the rest of
    ``data`` (from byte ``offset`` of that line) is the checkpoint note."""
    proof: list[bytes] = []
    i = start
    while True:
        if i >= len(lines) - 1:  # the last element follows the final newline
            raise FormatError(f"{what}: no empty line before the checkpoint")
        line = lines[i]
        offset += len(line) + 1
        if not line:
            break
        if len(proof) == MAX_PROOF_HASHES:
            raise LimitError(f"{what} has over {MAX_PROOF_HASHES} proof hashes")
        h = b64decode(line.decode("ascii", "replace"), f"{what} proof hash")
        if len(h) != HASH_SIZE:
            raise FormatError(f"{what} proof hash is {len(h)} bytes, not 32")
        proof.append(h)
        i += 1
    return tuple(proof), data[offset:]
