"""The documentation is part of the product: it must be complete and true.

* docs/CLI.md is exactly what ``python -m ledger.clidoc`` generates;
* every command's help carries an ``Example:`` and every example runs;
* every command is written about in the README or the operator/auditor guides;
* every ``sh`` block of README.md and docs/*.md runs, each in a fresh
  directory.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from ledger import clidoc

ROOT = Path(__file__).resolve().parent.parent
PROSE = [ROOT / "README.md", ROOT / "docs" / "OPERATOR.md", ROOT / "docs" / "AUDITOR.md"]
BIN = str(Path(sys.executable).parent)

# Help examples that cannot run inside a test, and why.
NOT_RUN = {
    "fundledger serve": "blocks serving HTTP; tests/test_site.py runs the site",
    "fundledger witness serve": "blocks serving HTTP; tests/test_witness_http.py and docs/WITNESS.md run it",
    "fundledger run": "blocks serving HTTP; tests/test_service.py runs it",
}


def leaf_commands():
    return [(name, cmd) for name, cmd in clidoc.commands() if not isinstance(cmd, click.Group)]


def example(cmd: click.Command) -> str | None:
    m = re.search(r"^\s*Example: (fundledger .+)$", cmd.help or "", re.M)
    return m.group(1).strip() if m else None


def test_cli_reference_is_current():
    assert (ROOT / "docs" / "CLI.md").read_text() == clidoc.render(), (
        "docs/CLI.md is stale: run `python -m ledger.clidoc > docs/CLI.md`"
    )


@pytest.mark.parametrize("name,cmd", leaf_commands(), ids=[n for n, _ in leaf_commands()])
def test_every_command_has_an_example_and_is_documented(name, cmd):
    assert example(cmd), f"{name}: its help has no 'Example: fundledger ...' line"
    prose = "\n".join(p.read_text() for p in PROSE if p.exists())
    assert name in prose, f"{name} is not described in README.md, docs/OPERATOR.md or docs/AUDITOR.md"


def sh(script: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    env.pop("FUNDLEDGER_DB", None)
    env.pop("FUNDLEDGER_KEY", None)
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def sh_blocks(path: Path) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", path.read_text(), re.M | re.S)


DOC_FILES = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if sh_blocks(p)]


@pytest.mark.parametrize("path", DOC_FILES, ids=[p.name for p in DOC_FILES])
def test_every_shell_block_runs(path, tmp_path):
    for i, block in enumerate(sh_blocks(path)):
        cwd = tmp_path / f"block-{i + 1}"  # each block starts in a fresh directory
        cwd.mkdir()
        r = sh(block, cwd)
        assert r.returncode == 0, f"{path.name} block {i + 1} failed:\n{block}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"


def test_every_help_example_runs(tmp_path):
    """One scenario, in which the help examples run in a sensible order."""
    order = [
        "fundledger init", "fundledger contract add", "fundledger liquidation", "fundledger import",
        "fundledger balance", "fundledger history", "fundledger adl", "fundledger checkpoint", "fundledger export",
        "fundledger prove", "fundledger check-receipt", "fundledger consistency", "fundledger verify", "fundledger monitor", "fundledger upgrade",
        "fundledger witness init", "fundledger witness add-log", "fundledger witness add-checkpoint",
        "fundledger attach-cosignatures", "fundledger key rotate", "fundledger witness add-key", "fundledger key add-mldsa",
        "fundledger demo",
    ]
    commands = dict(leaf_commands())
    missing = set(commands) - set(order) - set(NOT_RUN)
    assert not missing, f"add the examples of {sorted(missing)} to this scenario"
    # Files the examples name, made the way a user would make them.
    prepare = {
        "fundledger import": "python -c \"import json\nfor i in range(50):\n print(json.dumps({'kind':'liquidation',"
        "'contract':'XBTUSDTM','id':f'B-{i}','side':'long','qty':'100','bankruptcy_price':'39000',"
        "'fill_price':str(39000 + (i % 5) * 10 - 15)}))\" > liquidations.jsonl",
        "fundledger prove": "cp public/checkpoint yesterday.checkpoint && "
        "fundledger liquidation XBTUSDTM --id L-2 --side short --qty 5 --bankruptcy-price 40000 "
        "--fill-price 39990 && fundledger checkpoint && fundledger export public/",
        "fundledger witness add-checkpoint": "fundledger consistency --old-size 0 --out request.txt",
        # the witness's cosigned checkpoint; the key entry is the entry at its size
        "fundledger witness add-key": "fundledger checkpoint --key fund-2027.key && python -c \"import sqlite3\n"
        "cp, size = sqlite3.connect('witness.db').execute('SELECT checkpoint, size FROM log').fetchone()\n"
        "open('cosigned.checkpoint', 'w').write(cp)\nprint(size)\" > key-seq && "
        "fundledger consistency cosigned.checkpoint --out request.txt && "
        "fundledger prove $(cat key-seq) --out key-entry.proof",
        # a log made before format 2, beside the scenario's (which init made in format 2)
        "fundledger upgrade": "fundledger init --format 1 example.com/old-fund && "
        "fundledger contract add XBTUSDTM --currency USDT --scale 8",
    }
    where = {"fundledger upgrade": tmp_path / "old"}
    where["fundledger upgrade"].mkdir()
    for name in order:
        ex = example(commands[name])
        cwd = where.get(name, tmp_path)
        if name in prepare:
            r = sh(prepare[name], cwd)
            assert r.returncode == 0, f"preparing {name}: {r.stderr}"
        r = sh(ex, cwd)
        assert r.returncode == 0, f"example of {name} failed: {ex}\n{r.stdout}\n{r.stderr}"
    for name, why in NOT_RUN.items():
        ex = example(commands[name])
        shlex.split(ex)  # at least well formed
        assert why
