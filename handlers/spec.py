"""What each route is, for both Tornado and `/openapi.json`.

A route is declared once by its documented path (`/auth/sessions/{session_id}`); the
Tornado pattern is derived from it. A handler method says what it answers with `@doc`,
and its request body is the same `Field` table it parses, so the published schema
cannot drift from the parser. Envelopes come from the style's handler class
(`ok_schema` / `error_schema`), since a style is exactly an envelope.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from models.validation import Field

Schema = dict[str, Any]
F = TypeVar("F", bound=Callable[..., Any])

# Path parameters and what they match.
PARAMS = {
    "session_id": "[0-9a-f]{32}",
    "user_id": "[0-9]{1,12}",
    "account_id": "[0-9]{1,12}",
    "factor_id": "[0-9a-f]{32}",
    "passkey_id": "[A-Za-z0-9_-]{1,1400}",  # a WebAuthn credential id, base64url
}
PARAM_RE = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Route:
    """A documented path and its handler; `slash` makes a trailing slash optional, as
    the documents disagree on whether they write one."""

    path: str
    handler: type
    slash: bool = True

    @property
    def pattern(self) -> str:
        base = self.path.rstrip("/") or "/"
        escaped = re.escape(base).replace(r"\{", "{").replace(r"\}", "}")
        # Any segment, of any length, reaches the handler, which answers a malformed id
        # with a 404 in its own style's envelope (`PARAMS`, checked in
        # APIHandler.prepare) rather than the generic one. (Tornado's header limit
        # bounds a path: a long one costs a single linear match.)
        pattern = PARAM_RE.sub(lambda m: f"(?P<{m.group(1)}>[^/]+)", escaped)
        return pattern + "/?" if self.slash and base != "/" else pattern


@dataclass(frozen=True)
class Op:
    summary: str
    ok: Schema | None = None  # the success payload before the style's envelope
    status: int = 200
    body: Mapping[str, Field] | None = None
    query: Mapping[str, Field] | None = None
    errors: tuple[int, ...] = ()  # statuses beyond the ones every route can answer
    raw: bool = False  # the payload is sent without the style's envelope
    extra: Mapping[int, Schema] = field(default_factory=dict)  # other non-error answers
    form: bool = False  # the body is `application/x-www-form-urlencoded` (OAuth), not JSON
    empty: bool = False  # the success answer has no body at all (RFC 7009's revocation)


def doc(summary: str, **kw: Any) -> Callable[[F], F]:
    """Describe a handler method for /openapi.json."""

    def mark(method: F) -> F:
        method.__op__ = Op(summary, **kw)  # type: ignore[attr-defined]
        return method

    return mark


# ---- small schema vocabulary --------------------------------------------------------

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
BOOL: Schema = {"type": "boolean"}
NULL: Schema = {"type": "null"}
EPOCH: Schema = {"type": "integer", "description": "seconds since 1970-01-01 UTC"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, NULL]}


def const(value: Any) -> Schema:
    return {"const": value}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def obj(props: Mapping[str, Schema], optional: tuple[str, ...] = (), *, closed: bool = True) -> Schema:
    """An object with exactly these keys (all required unless named in `optional`)."""
    schema: Schema = {"type": "object", "properties": dict(props), "required": [k for k in props if k not in optional]}
    if closed:
        schema["additionalProperties"] = False
    return schema


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def field_schema(f: Field) -> Schema:
    if f.kind is dict:  # a WebAuthn credential, as the browser's toJSON() gives it
        return {"type": "object", "additionalProperties": True}
    if f.kind is bool:
        return {"type": "boolean"}
    if f.kind is int:
        schema: Schema = {"type": "integer"}
        if f.lo is not None:
            schema["minimum"] = f.lo
        if f.hi is not None:
            schema["maximum"] = f.hi
        return schema
    schema = {"type": "string", "maxLength": f.max_len}
    if not f.allow_empty and f.required:
        schema["minLength"] = 1
    if f.digits_as_int_ok:
        return {"anyOf": [schema, {"type": "integer", "minimum": 0}]}
    return schema


def fields_schema(spec: Mapping[str, Field]) -> Schema:
    """The JSON body a `Field` table accepts (other keys are ignored, so allowed)."""
    return {
        "type": "object",
        "properties": {name: field_schema(f) for name, f in spec.items()},
        "required": [name for name, f in spec.items() if f.required],
    }
