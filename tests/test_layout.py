"""The shape the indexing seam was redesigned to keep (issue 12): small modules, a thin CLI command."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nvrag"


def test_no_module_is_over_400_lines_and_the_ray_engine_is_at_most_300() -> None:
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 400} == {}
    assert sizes["indexer/ray_engine.py"] <= 300


def test_the_index_command_body_is_at_most_40_lines() -> None:
    tree = ast.parse((PACKAGE / "app" / "cli_index.py").read_text())
    (command,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "index"]
    body = command.body[1:] if isinstance(command.body[0], ast.Expr) else command.body  # after the docstring
    lines = body[-1].end_lineno - body[0].lineno + 1  # type: ignore[operator]
    assert lines <= 40, lines


def test_nothing_outside_the_store_imports_lance_or_lancedb() -> None:
    """The import-linter contract, checked here too on the source text (lazy imports included)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "store":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("lance", "lancedb")]
    assert offenders == []
