"""What a verification established, and how a failure is reported."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ledger.errors import VerificationError
from ledger.rules.fund import FundBook

if TYPE_CHECKING:
    from ledger.verify.state import VerifierState


@dataclass
class Report:
    """What a successful verification established."""

    tree_size: int
    root: bytes
    book: FundBook
    checkpoint_size: int | None  # None: no signed checkpoint covers the entries yet (a database only)
    entries_checked: int
    source: str
    key_source: str
    cosignatures: list[str] = field(default_factory=list)
    state: "VerifierState | None" = None
    unverified_cosignatures: list[str] = field(default_factory=list)
    state_note: str | None = None  # why no state was kept, when one was asked for

    def as_json(self) -> dict:
        return {
            "ok": True,
            "size": self.tree_size,
            "root": base64.b64encode(self.root).decode(),
            "checkpoint_size": self.checkpoint_size,  # null: no checkpoint covers the entries
            "entries_checked": self.entries_checked,
            "source": self.source,
            "key": self.key_source,
            "cosignatures": self.cosignatures,
            "unverified_cosignatures": self.unverified_cosignatures,
            "contracts": [f.summary() for _, f in sorted(self.book.funds.items())],
        }


def failure_json(e: VerificationError) -> dict:
    return {"ok": False, "seq": e.seq, "reason": e.reason}

