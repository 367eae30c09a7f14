"""Witness policies in the c2sp.org/tlog-policy format: which logs, which
witnesses, and the quorum of cosignatures a checkpoint needs.

    log <vkey> [<url>]                 # an Ed25519 (0x01) log key
    witness <name> <vkey> [<url>]      # 0x04 (Ed25519) or 0x06 (ML-DSA-44)
    group <name> all|any|<k> <name>...
    quorum <name>|none

One line each, items separated by spaces and tabs; blank lines and lines
starting with ``#`` are ignored, but for fundledger's one convention on
top of the spec (a comment to any other parser):

    #fundledger-audit/v1 <witness name>

says that the witness of that policy name is an auditing witness: its
cosignature also makes the statement :data:`AUDIT_STATEMENT` (see
:data:`AUDIT_STATEMENT_TEXT`). The name must be a witness of the policy
(defined anywhere in it), each at most once. A group or the quorum names only what
earlier lines define (so no cycles), a name is a member of a group at most
once in the whole file, no key appears twice (the same public key under another name or key
id counts as the same key), and there is exactly one quorum line. Parsing
accepts that one spelling, within the limits below (the spec recommends
supporting at least 32 of each), and raises FormatError naming the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ledger.errors import FormatError, FundledgerError
from ledger.format import note

MAX_POLICY_BYTES = 64 << 10
MAX_LOGS = MAX_WITNESSES = MAX_GROUPS = 64
_ALLOWED = re.compile(rb"[\t\n\x20-\x7e\x80-\xff]*")
NONE = "none"
WITNESS_ALGS = (note.ALG_COSIGNATURE_V1, note.ALG_MLDSA44)
"""A witness vkey is Ed25519 cosignature/v1 (0x04) or ML-DSA-44 (0x06)."""
AUDIT_STATEMENT = "fundledger-audit/v1"
AUDIT_STATEMENT_TEXT = (
    "every entry of the log up to the checkpoint's tree size passed the full fundledger verification "
    "(docs/FORMAT.md, \"The verification algorithm\"): every fund rule, every format-2 chain link, state "
    "entry and heads root, and every key rotation, replayed by the witness before it cosigned; "
    "besides the cosignature/v1 statement that the tree extends every tree of the log it cosigned before"
)
AUDIT_COMMENT = "#" + AUDIT_STATEMENT


@dataclass(frozen=True)
class Witness:
    name: str
    verifier: note.Verifier
    url: str | None


@dataclass(frozen=True)
class Group:
    name: str
    threshold: int  # at least this many members must have witnessed
    members: tuple[str, ...]


@dataclass
class Policy:
    logs: list[tuple[note.Verifier, str | None]] = field(default_factory=list)
    witnesses: dict[str, Witness] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    quorum: str = NONE
    auditors: set[str] = field(default_factory=set)  # policy names marked #fundledger-audit/v1

    def auditor_keys(self) -> list[note.Verifier]:
        """The keys of the witnesses this policy calls auditing witnesses."""
        return [self.witnesses[n].verifier for n in sorted(self.auditors)]

    def satisfied(self, cosigned: set[str]) -> bool:
        """Whether the witnesses named in ``cosigned`` (policy names) meet the quorum."""
        return self.witnessed(self.quorum, cosigned)

    def witnessed(self, name: str, cosigned: set[str]) -> bool:
        """Whether witness or group ``name`` witnessed, given ``cosigned``."""
        if name == NONE:
            return True
        group = self.groups.get(name)
        if group is None:
            return name in cosigned
        return sum(self.witnessed(m, cosigned) for m in group.members) >= group.threshold

    def unmet(self, cosigned: set[str]) -> list[str]:
        """The quorum and the groups under it that did not witness, outermost first."""
        out: list[str] = []

        def walk(name: str) -> None:
            if name in self.groups and not self.witnessed(name, cosigned):
                g = self.groups[name]
                got = sum(self.witnessed(m, cosigned) for m in g.members)
                out.append(f"{name} ({got} of {len(g.members)} witnessed, {g.threshold} needed)")
                for m in g.members:
                    walk(m)
        if not self.satisfied(cosigned) and self.quorum not in self.groups:
            out.append(f"{self.quorum} (no valid cosignature)")
        walk(self.quorum)
        return out


def _key(v: note.Verifier) -> tuple[int, bytes]:
    return (v.alg, v.public_key)


def _vkey(text: str, what: str, algs: tuple[int, ...], lineno: int) -> note.Verifier:
    try:
        v = note.parse_vkey(text)
    except FundledgerError as e:
        raise FormatError(f"policy line {lineno}: the {what} key is not a vkey ({e})") from None
    if v.alg not in algs:
        want = " or ".join(f"{a:#04x}" for a in algs)
        raise FormatError(f"policy line {lineno}: the {what} key has type {v.alg:#04x}, not {want}")
    return v


def parse_policy(data: bytes) -> Policy:
    """The policy in ``data``; FormatError for anything else."""
    if len(data) > MAX_POLICY_BYTES:
        raise FormatError(f"a policy is at most {MAX_POLICY_BYTES} bytes")
    if not _ALLOWED.fullmatch(data):
        raise FormatError("a policy holds a control character other than tab and newline")
    if data and not data.endswith(b"\n"):
        raise FormatError("a policy's last line does not end with a newline")
    policy, keys, quorums, members = Policy(), set(), 0, set()
    audited: list[tuple[int, list[str]]] = []
    for lineno, raw in enumerate(data.decode("utf-8", "surrogateescape").split("\n")[:-1], 1):
        items = raw.replace("\t", " ").split()
        if items and items[0] == AUDIT_COMMENT:
            audited.append((lineno, items[1:]))
        if not items or items[0].startswith("#"):
            continue
        keyword, args = items[0], items[1:]
        if keyword == "log":
            _log_line(policy, args, keys, lineno)
        elif keyword == "witness":
            _witness_line(policy, args, keys, lineno)
        elif keyword == "group":
            _group_line(policy, args, members, lineno)
        elif keyword == "quorum":
            quorums += 1
            if len(args) != 1 or not (args[0] == NONE or args[0] in policy.witnesses or args[0] in policy.groups):
                raise FormatError(f"policy line {lineno}: quorum names no witness or group defined above")
            policy.quorum = args[0]
        else:
            raise FormatError(f"policy line {lineno}: unknown keyword {keyword[:20]!r}")
    if quorums != 1:
        raise FormatError(f"a policy has exactly one quorum line, not {quorums}")
    for lineno, args in audited:
        if len(args) != 1 or args[0] not in policy.witnesses or args[0] in policy.auditors:
            raise FormatError(f"policy line {lineno}: `{AUDIT_COMMENT} <name>` names one witness of the "
                              "policy, once")
        policy.auditors.add(args[0])
    return policy


def _log_line(policy: Policy, args: list[str], keys: set, lineno: int) -> None:
    if not 1 <= len(args) <= 2 or len(policy.logs) >= MAX_LOGS:
        raise FormatError(f"policy line {lineno}: a log line is `log <vkey> [<url>]` (at most {MAX_LOGS})")
    v = _vkey(args[0], "log", (note.ALG_ED25519,), lineno)
    if _key(v) in keys:
        raise FormatError(f"policy line {lineno}: this key is already in the policy")
    keys.add(_key(v))
    policy.logs.append((v, args[1] if len(args) == 2 else None))


def _witness_line(policy: Policy, args: list[str], keys: set, lineno: int) -> None:
    if not 2 <= len(args) <= 3 or len(policy.witnesses) >= MAX_WITNESSES:
        raise FormatError(f"policy line {lineno}: a witness line is `witness <name> <vkey> [<url>]` "
                          f"(at most {MAX_WITNESSES})")
    name = args[0]
    if name == NONE or name in policy.witnesses or name in policy.groups:
        raise FormatError(f"policy line {lineno}: the name {name[:40]!r} is taken")
    v = _vkey(args[1], "witness", WITNESS_ALGS, lineno)
    if _key(v) in keys:
        raise FormatError(f"policy line {lineno}: this key is already in the policy")
    keys.add(_key(v))
    policy.witnesses[name] = Witness(name, v, args[2] if len(args) == 3 else None)


def _group_line(policy: Policy, args: list[str], used: set, lineno: int) -> None:
    if len(args) < 3 or len(policy.groups) >= MAX_GROUPS:
        raise FormatError(f"policy line {lineno}: a group line is `group <name> all|any|<k> <name>...` "
                          f"(at most {MAX_GROUPS})")
    name, k, members = args[0], args[1], args[2:]
    if name == NONE or name in policy.witnesses or name in policy.groups:
        raise FormatError(f"policy line {lineno}: the name {name[:40]!r} is taken")
    for m in members:
        if m not in policy.witnesses and m not in policy.groups:
            raise FormatError(f"policy line {lineno}: member {m[:40]!r} is not defined above")
    if len(set(members)) != len(members) or used & set(members):
        raise FormatError(f"policy line {lineno}: a name is a member of a group at most once")
    used.update(members)
    if k == "all":
        threshold = len(members)
    elif k == "any":
        threshold = 1
    elif re.fullmatch(r"[1-9][0-9]{0,3}", k) and int(k) <= len(members):
        threshold = int(k)
    else:
        raise FormatError(f"policy line {lineno}: the threshold is all, any or a number from 1 to {len(members)}")
    policy.groups[name] = Group(name, threshold, tuple(members))
