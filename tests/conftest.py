"""Shared fixtures: a fresh ledger in a temporary directory and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.ops import api
from ledger.cli import cli

ORIGIN = "example.com/test-fund"


@dataclass
class Ledger:
    dir: Path
    db: str
    key: str
    store: object
    signer: object

    def append(self, *records):
        return self.store.append(list(records), [self.signer])

    def contract(self, symbol="XBTUSDTM", currency="USDT", scale=8, type="linear", multiplier="1"):
        return self.append({"kind": "contract", "symbol": symbol, "currency": currency, "scale": scale,
                            "type": type, "multiplier": multiplier})

    def liquidation(self, contract="XBTUSDTM", id="L-1", side="long", qty="1",
                    bankruptcy_price="39000", fill_price="39100", **extra):
        return self.append({"kind": "liquidation", "contract": contract, "id": id, "side": side, "qty": qty,
                            "bankruptcy_price": bankruptcy_price, "fill_price": fill_price, **extra})

    def checkpoint(self):
        return self.store.add_checkpoint([self.signer])

    def cli(self, *args, input=None):
        """Run the CLI in-process against this ledger; returns click's Result."""
        env = {"FUNDLEDGER_DB": self.db, "FUNDLEDGER_KEY": self.key}
        return CliRunner().invoke(cli, list(args), input=input, env=env, catch_exceptions=False)


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    db, key = str(tmp_path / "fund.db"), str(tmp_path / "fund.key")
    store, signer = api.init_ledger(db, key, ORIGIN)
    yield Ledger(tmp_path, db, key, store, signer)
    store.close()


@pytest.fixture
def ledger2(tmp_path) -> Ledger:
    """A fresh ledger in format 2 (docs/FORMAT.md)."""
    db, key = str(tmp_path / "fund.db"), str(tmp_path / "fund.key")
    store, signer = api.init_ledger(db, key, ORIGIN, log_format=2)
    yield Ledger(tmp_path, db, key, store, signer)
    store.close()


def run_fundledger(*args, cwd=None, env=None, input=None, timeout=300):
    """Run the real ``fundledger`` console script in a subprocess."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *map(str, args)],
        cwd=cwd, env=e, input=input, capture_output=True, timeout=timeout,
    )


@pytest.fixture(autouse=True)
def _stop_site_verifiers(monkeypatch):
    """Stop every site verifier thread a test started: a thread left
    running can hold a lock that a later test's forked child then waits on
    for ever."""
    from publish.verified import SiteVerifier

    started = []
    start = SiteVerifier.start

    def tracked(self):
        started.append(self)
        return start(self)

    monkeypatch.setattr(SiteVerifier, "start", tracked)
    yield
    for v in started:
        v.stop()
    for v in started:
        if v._thread is not None:
            v._thread.join(timeout=10)
