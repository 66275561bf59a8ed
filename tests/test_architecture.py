"""Imports point one way: app, train and bench use core; core uses none of them."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "core"
ABOVE_CORE = ("app", "train", "bench", "tests")


def imported_modules(source: str) -> set[str]:
    """Every module an ``import`` or ``from ... import`` names, at any depth (lazy imports too)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_imported_modules_sees_lazy_imports() -> None:
    source = "import os\ndef f():\n    from train.metadata import x\n    import bench.load\n"
    assert imported_modules(source) == {"os", "train.metadata", "bench.load"}


def test_core_imports_nothing_above_it() -> None:
    offenders = {
        f"{path.name}: {module}"
        for path in sorted(CORE.glob("*.py"))
        for module in imported_modules(path.read_text(encoding="utf-8"))
        if module.split(".")[0] in ABOVE_CORE
    }
    assert not offenders, f"core must not import app/train/bench/tests: {sorted(offenders)}"
