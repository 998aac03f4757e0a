"""Rules of shape the code keeps (see README "Layout"): checked here so a change that
breaks one fails CI rather than a review."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 60
SKIP = {".venv", "node_modules", ".git", "var"}


def python_files() -> list[Path]:
    return [p for p in ROOT.rglob("*.py") if not SKIP & set(p.relative_to(ROOT).parts)]


def test_no_function_is_longer_than_sixty_lines():
    long = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over 60 lines:\n" + "\n".join(long)


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_dependencies_point_one_way():
    """handlers → models → the database; delivery beside the domain (neither imports
    the other); only the composition root (app.py) and main (server.py) see everything."""
    rules = {
        "models": {"handlers", "delivery", "app", "server"},
        "delivery": {"models", "handlers", "app", "server"},
        "handlers": {"delivery", "server"},
    }
    wrong = []
    for package, forbidden in rules.items():
        for path in (ROOT / package).rglob("*.py"):
            bad = imports_of(path) & forbidden
            if bad:
                wrong.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    for module in ("config.py", "logs.py", "metrics.py"):
        ours = imports_of(ROOT / module) & {"models", "handlers", "delivery", "app", "server", "config"}
        if ours - {module.removesuffix(".py")}:
            wrong.append(f"{module} imports {sorted(ours)}")
    assert not wrong, "\n".join(wrong)
