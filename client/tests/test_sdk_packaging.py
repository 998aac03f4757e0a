"""What `pip install ./client` brings: the core needs PyJWT and httpx only; each
framework comes with its adapter's extra, and no core module imports a framework."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

CLIENT = Path(__file__).resolve().parent.parent
FRAMEWORKS = {"tornado", "fastapi", "starlette", "flask", "django", "rest_framework"}
ADAPTERS = {"tornado.py", "fastapi.py", "flask.py", "django.py"}


def test_the_core_depends_on_pyjwt_and_httpx_only():
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert [d.split(">")[0].split("[")[0] for d in project["dependencies"]] == ["pyjwt", "httpx"]
    assert set(project["optional-dependencies"]) == {"tornado", "fastapi", "flask", "django"}
    assert any(d.startswith("djangorestframework") for d in project["optional-dependencies"]["django"])


def test_no_core_module_imports_a_framework():
    for path in (CLIENT / "gatehouse_client").glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
        if path.name not in ADAPTERS:  # (the Tornado mixin needs no import of Tornado at all)
            frameworks = imported & FRAMEWORKS
            assert not frameworks, f"{path.name} imports {frameworks}: the core must install without them"
