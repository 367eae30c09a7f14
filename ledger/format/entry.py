"""Entry encoding: one line of RFC 8785 canonical JSON in a C2SP signed note.

An entry's *text* is ``canonical_json(fields) + "\\n"`` where ``fields`` holds
``seq`` (the leaf index), ``prev`` (standard base64 of the RFC 6962 leaf hash
``SHA-256(0x00 || previous entry bytes)``, 32 zero bytes for seq 0),
``time`` (RFC 3339 UTC), ``kind``, ``contract`` and the kind's own fields
(see docs/FORMAT.md). The entry's *bytes* are that text signed as a C2SP
signed note by the log key; those exact bytes are the Merkle leaf.

Canonical JSON: every value in an entry is an integer below 2**53 or a string
of printable ASCII, so RFC 8785 reduces to ``json.dumps`` with sorted keys,
no whitespace and ``ensure_ascii``; tests check this against the ``rfc8785``
reference implementation. An entry of a known kind is written by that kind's
encoder, derived from its definition in :mod:`ledger.format.kinds` (tests
check it against ``canonical_json``). The verifier never trusts this
equivalence alone: it rebuilds each entry and compares bytes.
"""

from __future__ import annotations

import base64
import json

from ledger.format import note
from ledger.format.kinds import KINDS, KINDS_2, KINDS_ADL
from ledger.errors import FormatError, LimitError

MAX_ENTRY_BYTES = 65535  # an entry bundle length prefix is a uint16
ZERO_HASH = bytes(32)

_dumps = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
).encode


def canonical_json(obj: dict) -> bytes:
    """RFC 8785 canonical JSON of an object whose strings are ASCII."""
    return _dumps(obj).encode("ascii")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def entry_text(fields: dict, seq: int, prev_hash: bytes, time: str) -> bytes:
    """The signed text of entry ``seq``: canonical JSON of ``fields`` plus
    ``seq``, ``prev`` and ``time``, and a final newline. Fields of a known
    kind's shape go through its derived encoder; any other object (tests
    make them) through :func:`canonical_json`, which that encoder equals."""
    name = fields.get("kind") if type(fields.get("kind")) is str else None
    for kinds in (KINDS, KINDS_2, KINDS_ADL):  # (format 1's kinds first: the common case)
        kind = kinds.get(name)
        if kind is not None:
            try:
                return kind.encode(**fields, seq=seq, prev=b64(prev_hash), time=time)
            except TypeError:  # a field missing, unknown or of the wrong type
                pass
    obj = dict(fields)
    obj["seq"] = seq
    obj["prev"] = b64(prev_hash)
    obj["time"] = time
    return canonical_json(obj) + b"\n"


def sign_entry(text: bytes, signers) -> bytes:
    """The entry's bytes: ``text`` as a signed note. Refuses an entry over
    MAX_ENTRY_BYTES (it could not be bundled)."""
    data = note.sign_note(text, signers)
    if len(data) > MAX_ENTRY_BYTES:
        raise LimitError(f"entry of {len(data)} bytes is over the {MAX_ENTRY_BYTES}-byte limit")
    return data


def _no_float(s: str):
    raise FormatError(f"a JSON float is not allowed: {s[:40]}")


def _no_constant(s: str):
    raise FormatError(f"{s} is not allowed")


def _unique_keys(pairs):
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise FormatError(f"duplicate key {k[:40]!r}")
        obj[k] = v
    return obj


_decoder = json.JSONDecoder(
    parse_float=_no_float, parse_constant=_no_constant, object_pairs_hook=_unique_keys
)


_JSON_SPACE = " \t\n\r"  # RFC 8259 whitespace, and nothing else


def parse_json_object(line: str | bytes) -> dict:
    """Parse one JSON object strictly: no floats, NaN or infinities, no
    duplicate keys, nothing after it. Raises FormatError."""
    try:
        if isinstance(line, bytes):
            line = line.decode("utf-8")
        line = line.strip(_JSON_SPACE)
        obj, end = _decoder.raw_decode(line)
    except FormatError:
        raise
    except UnicodeDecodeError:
        raise FormatError("not UTF-8") from None
    except (ValueError, RecursionError) as e:
        raise FormatError(f"broken JSON: {str(e)[:80]}") from None
    if end != len(line):
        raise FormatError("extra data after the JSON object")
    if not isinstance(obj, dict):
        raise FormatError("not a JSON object")
    return obj


def parse_entry_text(text: bytes) -> dict:
    """The JSON object of an entry's text (one line and a newline)."""
    if not text.endswith(b"\n") or b"\n" in text[:-1]:
        raise FormatError("entry text is not exactly one line")
    return parse_json_object(text[:-1])
