"""The entry kinds, each defined once: its fields, their types and grammars.

An entry's text is one line of RFC 8785 canonical JSON (docs/FORMAT.md,
"Entries"): the members sorted by key, no whitespace, every value an integer
or a string of printable ASCII. :data:`KINDS` holds, per kind, every field
of the text with the grammar of its canonical spelling; from that one
definition this module derives, once at import time:

* :meth:`Kind.encode`, the writer's encoder (``entry.entry_text``);
* :meth:`Kind.fill`, the importer's templates: the text before and after
  the ``prev`` value, which the chain signer fills in (ledger/store/sign.py);
* :attr:`Kind.pattern`, the verifier's fast pattern: a regex that matches
  the canonical text of a well-formed entry whose strings need no escaping,
  one named group per field.

So a new field is one edit here (and the rule that computes it). The
grammars give the shape of a value; what depends on the state (a known
symbol, the amounts the rules give at the contract's scale) is the rules'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _json_str
from typing import Callable

from ledger.errors import InvariantError

# --- limits -------------------------------------------------------------------

MAX_INT_DIGITS = 30  # digits before the point of a quantity or price
MAX_FRAC_DIGITS = 18  # digits after the point of a quantity or price
MAX_SCALE = 18  # digits after the point of a fund amount
MAX_ID_LENGTH = 128  # a liquidation id, printable ASCII
MAX_SYMBOL_LENGTH = 32
MAX_CURRENCY_LENGTH = 16
PREV_B64_LENGTH = 44  # the prev value: standard base64 of a 32-byte leaf hash
SIDES = ("long", "short")
CONTRACT_TYPES = ("linear", "inverse")

# --- value grammars (unanchored; a string's body, without its quotes) ----------

SEQ = r"0|[1-9][0-9]*"
PREV = r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]="  # canonical base64 of 32 bytes
TIME = (  # RFC 3339 UTC, canonical: what parse_time returns unchanged, but for the calendar
    r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]{0,8}[1-9])?Z"
)
SYMBOL = rf"[A-Z0-9][A-Z0-9._-]{{0,{MAX_SYMBOL_LENGTH - 1}}}"
CURRENCY = rf"[A-Z0-9]{{1,{MAX_CURRENCY_LENGTH}}}"
SCALE = r"[0-9]|1[0-8]"
POSITIVE = (  # a canonical decimal above zero: what positive_decimal returns unchanged
    rf"[1-9][0-9]{{0,{MAX_INT_DIGITS - 1}}}(?:\.[0-9]{{0,{MAX_FRAC_DIGITS - 1}}}[1-9])?"
    rf"|0\.[0-9]{{0,{MAX_FRAC_DIGITS - 1}}}[1-9]"
)
AMOUNT = rf"-?(?:0|[1-9][0-9]*)(?:\.[0-9]{{1,{MAX_SCALE}}})?"  # the digits after the point: the scale's
PRINTABLE = r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?"  # no leading or trailing space
ID = rf"[\x21-\x7e](?:[\x20-\x7e]{{0,{MAX_ID_LENGTH - 2}}}[\x21-\x7e])?"
ID_VERBATIM = rf'[!#-\[\]-~](?:[ !#-\[\]-~]{{0,{MAX_ID_LENGTH - 2}}}[!#-\[\]-~])?'  # ID without " or \
VERBATIM = r'[ !#-\[\]-~]*'  # any string JSON writes verbatim: printable ASCII but " and \
VKEY = r"[\x21-\x2a\x2c-\x7e]+\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}"  # name+key id+base64(0x01 || key)
VKEY_VERBATIM = r'[!#-*,-\[\]-~]+\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}'


@dataclass(frozen=True)
class Field:
    """One member of an entry's JSON object."""

    name: str
    grammar: str
    """The canonical spelling of the value (a string's body, unquoted)."""
    integer: bool = False
    """A JSON integer, else a JSON string."""
    optional: bool = False
    """Absent when the entry has none: never ``null``."""
    escaped: bool = False
    """The value may hold ``"`` or ``\\``, which JSON escapes: the templates
    take its JSON string, quotes included."""
    fast: str | None = None
    """What the verifier's fast pattern takes for the value, when not the
    grammar: an escaped field's values that need no escape; an amount as
    any verbatim string (its digits depend on the scale: the verifier
    compares it with what the rules give)."""


_COMMON = (
    Field("seq", SEQ, integer=True),
    Field("prev", PREV),
    Field("time", TIME),
)


@dataclass(frozen=True)
class Kind:
    """An entry kind: its fields in canonical (RFC 8785) order, ``kind``,
    ``seq``, ``prev`` and ``time`` included, and what is derived from them."""

    name: str
    fields: tuple[Field, ...]
    encode: Callable[..., bytes] = field(init=False, repr=False, compare=False)
    fill: Callable[..., tuple[str, str]] = field(init=False, repr=False, compare=False)
    pattern: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if names != sorted(names) or len(set(names)) != len(names) or all(f.optional for f in self.fields):
            raise InvariantError(f"kind {self.name}: fields must be unique, sorted, one of them required")
        object.__setattr__(self, "encode", _compile(_encoder_source(self), f"encode_{self.name}"))
        object.__setattr__(self, "fill", _compile(_fill_source(self), f"fill_{self.name}"))
        object.__setattr__(self, "pattern", re.compile(_pattern_source(self)))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


# --- derivations ------------------------------------------------------------------
#
# The encoder and the templates are Python functions generated from the
# fields (as dataclasses and namedtuple generate theirs): one f-string per
# combination of the optional fields, so that they cost what a hand-written
# f-string costs, with keyword-only parameters named after the fields.


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()  # the encoder's default for an optional field: absent


def _integer(value: object) -> int:
    """A JSON integer value, refusing what json.dumps would write otherwise (a bool)."""
    if type(value) is not int:
        raise TypeError(f"not an integer: {type(value).__name__}")
    return value


def _compile(source: str, name: str):
    namespace = {"_json_str": _json_str, "_integer": _integer, "_ABSENT": _ABSENT}
    exec(compile(source, f"<ledger.format.kinds {name}>", "exec"), namespace)
    return namespace[name]


def _fstring(pieces: list[tuple[bool, str]]) -> str:
    """The source of an f-string of ``(is_expression, text)`` pieces."""
    out = []
    for is_expr, text in pieces:
        if is_expr:
            out.append("{" + text + "}")
        else:
            out.append(text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
                       .replace("{", "{{").replace("}", "}}"))
    return "f'" + "".join(out) + "'"


def _member(f: Field, kind: Kind, token: bool) -> list[tuple[bool, str]]:
    """The pieces of one ``"name":value``. ``token``: the value's JSON token
    is computed (the encoder); else a string goes in as given, inside quotes
    unless it may need escaping (then as its JSON string: the templates)."""
    key = (False, f'"{f.name}":')
    if f.name == "kind":
        return [key, (False, f'"{kind.name}"')]
    if f.integer:
        return [key, (True, f"_integer({f.name})" if token else f.name)]
    if token:
        return [key, (True, f"_json_str({f.name})")]
    if f.escaped:
        return [key, (True, f.name)]
    return [key, (False, '"'), (True, f.name), (False, '"')]


def _joined(members: list[list[tuple[bool, str]]]) -> list[tuple[bool, str]]:
    out: list[tuple[bool, str]] = []
    for i, m in enumerate(members):
        out += ([(False, ",")] if i else []) + m
    return out


def _dispatch(kind: Kind, absent: str, body) -> list[str]:
    """A function body returning ``body(present fields)`` for the
    combination of optional fields given (``absent % name`` tests one)."""
    optional = [f for f in kind.fields if f.optional]
    lines = []
    for mask in range(1, 1 << len(optional)):  # every combination with an absent field
        gone = [f for i, f in enumerate(optional) if mask >> i & 1]
        test = " and ".join(absent % f.name if f in gone else f"not ({absent % f.name})" for f in optional)
        lines += [f"    if {test}:", f"        return {body([f for f in kind.fields if f not in gone])}"]
    return lines + [f"    return {body(list(kind.fields))}"]


def _encoder_source(kind: Kind) -> str:
    """``encode_<kind>(*, kind, <fields>) -> bytes``: the text, canonical
    JSON and a newline; ``prev`` is the base64 string, ``kind`` is not read
    (the caller chose the kind by it), an optional field left out is absent.
    TypeError for a value of the wrong type."""
    def body(present: list[Field]) -> str:
        members = _joined([_member(f, kind, True) for f in present])
        return _fstring([(False, "{")] + members + [(False, "}\n")]) + ".encode('ascii')"
    params = ", ".join(f.name + ("=_ABSENT" if f.optional else "") for f in kind.fields)
    text = [f"def encode_{kind.name}(*, {params}):"] + _dispatch(kind, "%s is _ABSENT", body)
    return "\n".join(text) + "\n"


def _fill_source(kind: Kind) -> str:
    """``fill_<kind>(*, <fields but kind and prev>) -> (pre, post)``: the
    text before the ``prev`` value (up to its opening quote) and after it
    (from its closing quote, without the newline); an optional field given
    as None is absent."""
    def body(present: list[Field]) -> str:
        members = [_member(f, kind, False) for f in present]
        i = [f.name for f in present].index("prev")
        pre = _joined(members[:i] + [[(False, '"prev":"')]])
        post = [(False, '"')] + _joined([[]] + members[i + 1:]) if i + 1 < len(present) else [(False, '"')]
        return f"({_fstring([(False, '{')] + pre)}, {_fstring(post + [(False, '}')])})"
    params = ", ".join(f.name + ("=None" if f.optional else "")
                       for f in kind.fields if f.name not in ("kind", "prev"))
    text = [f"def fill_{kind.name}(*, {params}):"] + _dispatch(kind, "%s is None", body)
    return "\n".join(text) + "\n"


def _pattern_source(kind: Kind) -> str:
    """The regex of :attr:`Kind.pattern`: the members in order, an optional
    one as an optional group with its comma (after it when it comes before
    the first required member), and the final newline."""
    out = []
    first = next(i for i, f in enumerate(kind.fields) if not f.optional)
    for i, f in enumerate(kind.fields):
        if f.name == "kind":
            value = f'"{re.escape(kind.name)}"'
        else:
            value = f"(?P<{f.name}>{f.fast or f.grammar})"
            if not f.integer:
                value = f'"{value}"'
        member = f'"{f.name}":' + value
        member = member + "," if i < first else ("," if i > first else "") + member
        out.append(f"(?:{member})?" if f.optional else member)
    return "{" + "".join(out) + "}\n"


# --- the kinds --------------------------------------------------------------------


def _kind(name: str, own: tuple[Field, ...]) -> Kind:
    fields = (*_COMMON, Field("kind", re.escape(name)), *own)
    return Kind(name, tuple(sorted(fields, key=lambda f: f.name)))


CONTRACT = _kind("contract", (
    Field("contract", SYMBOL),
    Field("currency", CURRENCY),
    Field("scale", SCALE, integer=True),
    Field("type", "|".join(CONTRACT_TYPES)),
    Field("multiplier", POSITIVE),
))
LIQUIDATION = _kind("liquidation", (
    Field("contract", SYMBOL),
    Field("id", ID, escaped=True, fast=ID_VERBATIM),
    Field("side", "|".join(SIDES)),
    Field("qty", POSITIVE),
    Field("bankruptcy_price", POSITIVE),
    Field("fill_price", POSITIVE),
    Field("mark_price", POSITIVE, optional=True),
    Field("delta", AMOUNT, fast=VERBATIM),
    Field("paid", AMOUNT, fast=VERBATIM),
    Field("adl", AMOUNT, fast=VERBATIM),
    Field("balance", AMOUNT, fast=VERBATIM),
))
KEY = _kind("key", (
    Field("contract", ""),
    Field("vkey", VKEY, escaped=True, fast=VKEY_VERBATIM),
))
KINDS: dict[str, Kind] = {k.name: k for k in (CONTRACT, LIQUIDATION, KEY)}

# --- format 2 (docs/FORMAT.md, "Format 2: fund chains and states") ----------------
#
# Entries after a log's first ``state`` entry name their chain predecessor.
# These kinds are distinct from format 1's, so that format 1's fast
# patterns never match a format-2 entry.

FORMAT_2 = 2
_CHAIN = (Field("chain_seq", SEQ, integer=True), Field("chain_prev", PREV))
_CHAIN_OPTIONAL = (Field("chain_seq", SEQ, integer=True, optional=True), Field("chain_prev", PREV, optional=True))

LIQUIDATION_2 = _kind("liquidation", tuple(f for f in LIQUIDATION.fields if f.name not in ("kind", *(c.name for c in _COMMON))) + _CHAIN)
KEY_2 = _kind("key", (
    Field("contract", ""),
    Field("vkey", VKEY, escaped=True, fast=VKEY_VERBATIM),
) + _CHAIN_OPTIONAL)
STATE = _kind("state", (
    Field("contract", ""),
    Field("format", "2", integer=True),
    Field("funds", SEQ, integer=True),
    Field("heads", PREV),
    Field("keys", SEQ, integer=True),
    Field("key_seq", SEQ, integer=True, optional=True),
    Field("key_hash", PREV, optional=True),
) + _CHAIN_OPTIONAL)
KINDS_2: dict[str, Kind] = {k.name: k for k in (CONTRACT, LIQUIDATION_2, KEY_2, STATE)}

# --- ADL allocation (docs/FORMAT.md, "Auto-deleveraging") --------------------------
#
# A lot contract's contract entry, an ADL liquidation (the liquidation of
# format 2 with the ADL fields) and the ``adl`` entries that allocate it.
# Each is its own Kind, so that no fast pattern of the kinds above matches
# one of them: the verifier's accelerator leaves them to the reference.

MAX_POSITIONS = 256  # positions in one adl entry
MAX_QUEUE_SIZE = 1 << 20  # positions in one ADL event's ranked queue
MAX_QUEUE_PROOF = 64  # hashes in a queue proof
SCORE = (  # a canonical decimal above zero, the exact product of two POSITIVE decimals
    r"[1-9][0-9]{0,59}(?:\.[0-9]{0,35}[1-9])?|0\.[0-9]{0,35}[1-9]"
)
_POS_VALUE = rf"(?:{POSITIVE})"
QUEUE_LEAF = rf"{PREV} {_POS_VALUE} {_POS_VALUE} {_POS_VALUE} (?:{SCORE})"  # commitment size pnl_ratio leverage score
POSITION = rf"{PREV} {_POS_VALUE} {_POS_VALUE} {_POS_VALUE} {_POS_VALUE} (?:{SCORE})"  # ... with qty after size
POSITIONS = rf"{POSITION}(?:,{POSITION}){{0,{MAX_POSITIONS - 1}}}"
QUEUE_PROOF = rf"{PREV}(?: {PREV}){{0,{MAX_QUEUE_PROOF - 1}}}"

CONTRACT_LOT = _kind("contract", tuple(f for f in CONTRACT.fields if f.name not in ("kind", "seq", "prev", "time"))
                     + (Field("lot", POSITIVE),))
LIQUIDATION_ADL = _kind("liquidation", tuple(f for f in LIQUIDATION_2.fields
                                             if f.name not in ("kind", "seq", "prev", "time")) + (
    Field("adl_qty", POSITIVE),
    Field("queue_root", PREV),
    Field("queue_size", SEQ, integer=True),
))
ADL = _kind("adl", (
    Field("contract", SYMBOL),
    Field("liquidation", ID, escaped=True, fast=ID_VERBATIM),
    Field("event", SEQ, integer=True),
    Field("side", "|".join(SIDES)),
    Field("price", POSITIVE),
    Field("positions", POSITIONS),
    Field("next", QUEUE_LEAF, optional=True),
    Field("queue_proof", QUEUE_PROOF, optional=True),
) + _CHAIN)
KINDS_ADL: dict[str, Kind] = {k.name: k for k in (CONTRACT_LOT, LIQUIDATION_ADL, ADL)}
