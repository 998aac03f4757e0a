"""Checks a real response against the server's own /openapi.json.

Every request the test suite makes goes through `SpecChecker.check`, so the published
description is held to what the server really answers: an undocumented status, a
missing key or an extra one fails the test that saw it.
"""

from __future__ import annotations

import re
from typing import Any

from jsonschema import Draft202012Validator

# (method, path template, status) of every answer checked in this test run.
SEEN: set[tuple[str, str, str]] = set()
DOCUMENTED: set[tuple[str, str, str]] = set()


def unexercised() -> list[str]:
    """Documented success answers no test has seen (read at the end of a full run)."""
    return sorted(" ".join(k) for k in DOCUMENTED - SEEN)


class SpecChecker:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.paths: list[tuple[re.Pattern[str], str]] = []
        for template in spec["paths"]:
            body = re.sub(r"\\\{([a-z_]+)\\\}", r"[^/]+", re.escape(template.rstrip("/") or "/"))
            self.paths.append((re.compile(f"^{body}/?$"), template))
        self.validators: dict[int, Draft202012Validator] = {}
        for template, item in spec["paths"].items():
            for method, op in item.items():
                DOCUMENTED.update((method, template, s) for s in op["responses"] if s.startswith("2"))

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        for regex, template in self.paths:
            if regex.match(path):
                op = self.spec["paths"][template].get(method.lower())
                return (template, op) if op else None
        return None

    def check(self, method: str, path: str, status: int, body: Any) -> None:
        if method.upper() == "HEAD":
            # HEAD is GET without the body (RFC 9110), so /openapi.json does not list it,
            # as most generators do not: its status must be one GET documents.
            assert body is None, f"HEAD {path} answered a body"
            method = "GET"
            found = self.operation(method, path.split("?")[0])
            if found is not None:
                template, op = found
                assert str(status) in op["responses"], f"HEAD {template} answered {status}, not in /openapi.json"
                return
        found = self.operation(method, path.split("?")[0])
        if found is None:
            # Undocumented path or method: only "no such thing" (or a refused URL token).
            assert status in (400, 404, 405), f"{method} {path} is not in /openapi.json but answered {status}"
            return
        template, op = found
        response = op["responses"].get(str(status))
        assert response is not None, f"{method} {template} answered {status}, not in /openapi.json: {body!r:.300}"
        if "content" not in response:  # documented as an answer without a body
            assert body is None, f"{method} {template} {status} is documented without a body, got {body!r:.300}"
            SEEN.add((method.lower(), template, str(status)))
            return
        schema = response["content"]["application/json"]["schema"]
        validator = self.validators.get(id(schema))
        if validator is None:
            validator = Draft202012Validator({**schema, "components": self.spec["components"]})
            self.validators[id(schema)] = validator
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
        where = f"{method} {template} {status}"
        assert not errors, f"{where} does not match /openapi.json: {errors[0].message} in {body!r:.300}"
        SEEN.add((method.lower(), template, str(status)))
