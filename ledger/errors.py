"""Typed failures.

Every expected failure is a subclass of :class:`FundledgerError`. The CLI turns
them into one line on stderr and an exit code: 2 for bad input or usage
(nothing was written), 1 for a failed verification. Broken internal
invariants raise :class:`InvariantError`; they are never ``assert``ed, since
asserts vanish under ``python -O``.
"""

from __future__ import annotations


class FundledgerError(Exception):
    """Base of every expected failure."""

    exit_code = 2


class InputError(FundledgerError):
    """Bad input or usage: exit 2, nothing written."""


class FormatError(InputError):
    """Bytes that do not parse as the one accepted spelling of a format."""


class LimitError(InputError):
    """Input over one of the documented size or count limits."""


class KeyFileError(InputError):
    """A missing, malformed or too widely readable key file."""


class RuleError(InputError):
    """An append that the fund rules forbid (unknown contract, bad numbers...)."""


class StoreError(InputError):
    """The database is missing, not a fundledger ledger, or refuses the write."""


class VerificationError(FundledgerError):
    """Verification failed: exit 1. ``seq`` is the first bad entry, if any."""

    exit_code = 1

    def __init__(self, reason: str, seq: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.seq = seq

    def __str__(self) -> str:
        if self.seq is None:
            return self.reason
        return f"seq {self.seq}: {self.reason}"


class ProofError(VerificationError):
    """An inclusion or consistency proof does not verify."""


class SignatureError(VerificationError):
    """A signed note carries no valid signature by a required key."""


class InvariantError(Exception):
    """A broken internal invariant: a bug, never a user's mistake."""
