"""The layers of the tree, held: who may import whom, what the verifier of an
export or a URL loads, and the size limits on modules and functions.

From the bottom up: ``ledger/errors.py``; ``tlog`` (the Merkle tree),
``format`` (signed notes, entries, receipts) and ``rules`` (the fund rules),
all pure; ``store`` (SQLite: ``schema`` read-only, the writer beside it);
``verify`` (formats, rules and the read-only schema only); ``publish`` (reads,
never writes); the operator's layer, ``ops`` and ``cli``, on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# package -> the packages it may import (besides itself and the standard library)
BASE = {"ledger.errors"}
PURE = BASE | {"ledger.tlog", "ledger.format", "ledger.rules"}
READ = PURE | {"ledger.store.schema"}
ALLOWED = {
    "ledger": set(),  # the package itself (matched exactly: it holds no code)
    "ledger.errors": set(),
    "ledger.tlog": BASE,
    "ledger.format": BASE | {"ledger.tlog"},
    "ledger.rules": BASE | {"ledger.tlog", "ledger.format"},
    "ledger.store.schema": PURE,
    "ledger.store": READ,
    "ledger.verify": READ,
    "publish": READ | {"ledger.verify"},
    "ledger.ops": READ | {"ledger.store", "ledger.verify", "publish"},
    "ledger.cli": READ | {"ledger.store", "ledger.verify", "publish", "ledger.ops"},
    "ledger.clidoc": {"ledger.cli"},
}
# the reference verifier stands on the formats, the rules and the checkpoint checks alone
REFERENCE_ALLOWED = PURE | {"ledger.verify.checkpoint"}
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 70
MAX_REFERENCE_LINES = 400


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted([*ROOT.joinpath("ledger").rglob("*.py"), *ROOT.joinpath("publish").rglob("*.py")]):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def layer_of(module: str) -> str:
    """The most specific entry of ALLOWED that ``module`` falls under."""
    best = ""
    for layer in ALLOWED:
        inside = module == layer or module.startswith(layer + ".") and layer != "ledger"
        if inside and len(layer) > len(best):
            best = layer
    assert best, f"{module} is in no layer: add it to ALLOWED"
    return best


def imports_of(path: Path) -> set[str]:
    """Every ledger/publish module ``path`` imports, at the top or inside a
    function (a lazy import is still a dependency)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
            out.update(n if n in modules() else node.module for n in names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.split(".")[0] in ("ledger", "publish")}


def test_every_import_follows_the_layers():
    wrong = []
    for name, path in modules().items():
        own = layer_of(name)
        for target in imports_of(path):
            theirs = layer_of(target)
            if theirs != own and theirs not in ALLOWED[own]:
                wrong.append(f"{name} imports {target} ({own} may not import {theirs})")
    assert not wrong, "\n".join(wrong)


def test_the_reference_verifier_stands_alone():
    path = modules()["ledger.verify.reference"]
    wrong = [t for t in imports_of(path) if layer_of(t) not in REFERENCE_ALLOWED and t not in REFERENCE_ALLOWED]
    assert not wrong, wrong
    assert "ProcessPool" not in path.read_text() and "threading" not in path.read_text()


def test_the_table_catches_a_forbidden_import():
    """The check itself can fail: the writer is not the verifier's to import."""
    assert layer_of("ledger.store.store") == "ledger.store"
    assert "ledger.store" not in ALLOWED["ledger.verify"]
    assert layer_of("ledger.store.schema") in ALLOWED["ledger.verify"]
    assert "ledger.ops" not in ALLOWED["publish"] and "ledger.store" not in ALLOWED["publish"]


def test_sizes():
    """No module over 600 lines, no function over 70, the reference under 400."""
    wrong = []
    for name, path in modules().items():
        src = path.read_text()
        lines = src.count("\n")
        limit = MAX_REFERENCE_LINES if name == "ledger.verify.reference" else MAX_MODULE_LINES
        if lines > limit:
            wrong.append(f"{name}: {lines} lines (limit {limit})")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    wrong.append(f"{name}.{node.name}: {n} lines (limit {MAX_FUNCTION_LINES})")
    assert not wrong, "\n".join(wrong)


def test_stored_hash_index_math_lives_in_the_merkle_module():
    """``2n - popcount(n)`` and its kin are named functions of ledger/tlog;
    nowhere else is a stored-hash index worked out by hand."""
    wrong = [name for name, path in modules().items()
             if not name.startswith("ledger.tlog") and "bit_count()" in path.read_text()]
    assert not wrong, wrong
