"""`/openapi.json`: an OpenAPI 3.1 description of every enabled route, built from the
same route table, `Field` tables and envelopes the server uses (see `spec.py`)."""

from __future__ import annotations

import gzip
import json
from typing import Any

from config import Config

from .base import APIHandler, allow_anonymous
from .spec import (
    BOOL,
    EPOCH,
    INT,
    PARAM_RE,
    PARAMS,
    STR,
    Op,
    Route,
    Schema,
    array,
    const,
    doc,
    field_schema,
    fields_schema,
    nullable,
    obj,
    ref,
)

METHODS = ("get", "post", "put", "patch", "delete")
FORM = "application/x-www-form-urlencoded"
STATUS_TEXT = {
    200: "OK",
    201: "Created",
    400: "Invalid request",
    401: "Missing, invalid or expired credentials",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict with an existing account",
    413: "Request body too large",
    415: "Body is not JSON",
    429: "Too many attempts; see Retry-After",
    503: (
        "Database or delivery unavailable, the request ran out of time (an administrator read: its own,"
        " shorter limit), or too many requests in flight; retry later"
    ),
}

ACCOUNT: dict[str, Schema] = {
    "id": INT,
    "uid": STR,
    "username": nullable(STR),
    "email": nullable(STR),
    "phone": nullable(STR),
    "nickname": STR,
    "identity": INT,
    "phone_verified": BOOL,
    "email_verified": BOOL,
    "disabled": BOOL,
    "roles": array(STR),
    "created": nullable(EPOCH),
}

SESSION: dict[str, Schema] = {
    "id": STR,
    "kind": {"enum": ["opaque", "jwt", "console", "enrol"]},
    "style": nullable(STR),
    "created": EPOCH,
    "lastActive": EPOCH,
    "expires": EPOCH,
    "ip": nullable(STR),
    "userAgent": nullable(STR),
    "revoked": BOOL,
    "aal": {"enum": [1, 2]},
    "amr": array(STR),
    "authTime": EPOCH,
}

# What an error may add for the client to go on (`DomainError.details`), in every style.
DETAILS: dict[str, Schema] = {
    "mfa": ref("MfaChallenge"),
    "mfa_enrolment": ref("MfaEnrolment"),
    "reauthenticate": ref("ReauthenticationNeeds"),
}

# Objects several routes answer with.
COMPONENTS: dict[str, Schema] = {
    "PublicAccount": obj(
        {"id": INT, "nickname": STR, "username": nullable(STR), "email": nullable(STR), "phone": nullable(STR)}
    ),
    "Account": obj(ACCOUNT),
    "User": obj({**ACCOUNT, "is_active": BOOL}),
    "Session": obj({**SESSION, "current": BOOL}, optional=("current",)),
    "Factor": obj(
        {
            "id": STR,
            "type": const("totp"),
            "name": STR,
            "created": EPOCH,
            "confirmed": BOOL,
            "lastUsed": nullable(EPOCH),
        }
    ),
    "Passkey": obj(
        {
            "id": STR,
            "name": STR,
            "created": EPOCH,
            "lastUsed": nullable(EPOCH),
            "transports": array(STR),
            "backedUp": BOOL,
        }
    ),
    "MfaChallenge": obj(
        {
            "challenge": STR,
            "factors": array({"enum": ["totp", "webauthn", "recovery"]}),
            "expires_in": INT,
            "verify": const("/auth/mfa/verify"),
        }
    ),
    "MfaEnrolment": obj({"token": STR, "session": STR, "expires_in": INT, "enrol": const("/auth/mfa/totp")}),
    "ReauthenticationNeeds": obj(
        {"aal": {"enum": [1, 2]}, "within_seconds": INT, "factors": array(STR), "route": STR},
        optional=("within_seconds", "factors"),
    ),
    "TokenPair": obj(
        {
            "access_token": STR,
            "refresh_token": STR,
            "token_type": {"const": "Bearer"},
            "expires_in": INT,
            "refresh_expires_in": INT,
        }
    ),
}


# What a route's `Authorization` may carry, by name; a handler class lists the ones its
# authenticated routes accept in `security` (default: `USER`).
SECURITY_SCHEMES: dict[str, Schema] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A session token or a JWT access token as `Authorization: Bearer <token>`.",
    },
    "token": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "The same token sent raw in `Authorization`, as document 003 shows.",
    },
    "serviceKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A service key from `GATEHOUSE_SERVICE_KEYS` as `Authorization: Bearer <key>`.",
    },
    "clientBasic": {
        "type": "http",
        "scheme": "basic",
        "description": (
            "RFC 6749's `client_secret_basic`: any client id, and a service key from `GATEHOUSE_SERVICE_KEYS`"
            " as the client secret."
        ),
    },
}
USER = ("bearer", "token")

# Operations are tagged with their handler's `tag`, else its style.
TAGS: dict[str, str] = {
    "native": "Document 003: the native API (opaque session tokens, sessions, one-time codes, JWT pairs)",
    "drf": "Document 000: the Django REST framework / simplejwt style (trailing slashes as the document writes them)",
    "phone": "Document 001: phone number and SMS code, JSON only (trailing slashes as the document writes them)",
    "simple": "Document 002: username and password with JWTs",
    "v1": "Document 004: `/api/v1/auth/…` with `{code, result, redirect}` answers",
    "admin": "The admin API: an administrator's session token or a service key",
    "service": "Health, readiness and the documents that describe the server (OpenAPI, JWKS)",
    "oauth": (
        "Standard OAuth endpoints beside the native ones: RFC 7662 introspection, RFC 7009 revocation and"
        " RFC 8414 metadata (form bodies, RFC 6749 error objects)"
    ),
}


def with_details(schema: Schema) -> Schema:
    """An error envelope that may also carry `DETAILS` (each object in an `anyOf`)."""
    if "anyOf" in schema:
        return {**schema, "anyOf": [with_details(s) for s in schema["anyOf"]]}
    if schema.get("type") != "object" or "properties" not in schema:
        return schema
    return {**schema, "properties": {**schema["properties"], **DETAILS}}


def error_name(handler: type) -> str:
    """Errors are named after the class that defines their envelope."""
    owner = next(c for c in handler.__mro__ if "error_schema" in c.__dict__)
    return f"Error.{owner.__name__}"


def operation(route: Route, method: str, op: Op, anonymous: bool) -> dict[str, Any]:
    handler = route.handler
    statuses = {400, 413, 503, *op.errors}
    if PARAM_RE.search(route.path):
        statuses.add(404)  # a malformed or unknown id
    if op.body is not None:
        statuses.add(handler.error_status(None, 415, "UNSUPPORTED_MEDIA_TYPE", None))
    if not anonymous:
        # 429: an address over its budget of unknown tokens (`models/misses.py`).
        statuses |= {401, 429, handler.error_status(None, 401, "NOT_AUTHENTICATED", None)}
    ok = op.ok if op.ok is not None else {}
    success: dict[str, Any] = {"description": STATUS_TEXT.get(op.status, "OK")}
    if not op.empty:
        success["content"] = {"application/json": {"schema": ok if op.raw else handler.ok_schema(ok)}}
    responses: dict[str, Any] = {str(op.status): success}
    for status, schema in op.extra.items():
        responses[str(status)] = {
            "description": STATUS_TEXT[status],
            "content": {"application/json": {"schema": schema}},
        }
    error = ref(error_name(handler))
    for status in sorted(statuses - {op.status, *op.extra}):
        responses[str(status)] = {
            "description": STATUS_TEXT[status],
            "content": {"application/json": {"schema": error}},
        }
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{handler.style}.{handler.__name__}.{method}",
        "tags": [getattr(handler, "tag", handler.style)],
        "responses": responses,
        # Anonymous operations say so (`[]`), so no linter or client takes them for
        # ones that need the document's default.
        "security": [] if anonymous else [{name: []} for name in getattr(handler, "security", USER)],
    }
    if op.body is not None:
        out["requestBody"] = {
            "required": any(f.required for f in op.body.values()),
            "content": {FORM if op.form else "application/json": {"schema": fields_schema(op.body)}},
        }
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": f"^{PARAMS[name]}$"}}
        for name in PARAM_RE.findall(route.path)
    ]
    params += [
        {"name": name, "in": "query", "required": f.required, "schema": field_schema(f)}
        for name, f in (op.query or {}).items()
    ]
    if params:
        out["parameters"] = params
    return out


def build_spec(routes: list[Route], config: Config) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    components = dict(COMPONENTS)
    for route in routes:
        item: dict[str, Any] = {}
        for method in METHODS:
            fn = getattr(route.handler, method, None)
            op = getattr(fn, "__op__", None)
            if op is None:
                continue
            item[method] = operation(route, method, op, getattr(fn, "__allow_anonymous__", False))
            components[error_name(route.handler)] = with_details(route.handler.error_schema())
        if item:
            paths[route.path] = item
    ops = [op for item in paths.values() for op in item.values()]
    tags = sorted({tag for op in ops for tag in op["tags"]})
    schemes = {name for op in ops for requirement in op["security"] for name in requirement}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Gatehouse",
            "version": "1",
            "description": "Sign-up, login and sessions. Enabled API styles: " + ", ".join(config.server.api_styles),
            # No license has been chosen for Gatehouse: all rights reserved.
            "license": {"name": "Proprietary", "identifier": "LicenseRef-Proprietary"},
        },
        # Relative to where this document is served: the server that serves it.
        "servers": [{"url": "/", "description": "This server"}],
        "tags": [{"name": tag, "description": TAGS.get(tag, f"The {tag} routes")} for tag in tags],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {name: s for name, s in SECURITY_SCHEMES.items() if name in schemes},
        },
    }


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an `Accept-Encoding` takes gzip (RFC 9110 12.5.3): `gzip`, `x-gzip` or
    `*`, unless refused with `q=0`."""
    for item in accept_encoding.split(","):
        name, *params = (part.strip().lower() for part in item.split(";"))
        if name in ("gzip", "x-gzip", "*"):
            q = next((p[2:] for p in params if p.startswith("q=")), "1")
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


class OpenApiHandler(APIHandler):
    """The document, built once per process and kept both plain and gzip-compressed
    (some 90 KB of JSON, which gzip makes 16 times smaller).

    Only this route compresses. Tornado's `compress_response` would compress every
    answer, and a compressed answer that carries a secret (a token beside text an
    attacker can choose) leaks it through its length (BREACH): this document holds no
    secret, the other routes' answers do."""

    tag = "service"

    @allow_anonymous
    @doc("This document", ok={"type": "object"}, raw=True)
    async def get(self) -> None:
        cached = self.settings.get("openapi")
        if cached is None:
            plain = json.dumps(build_spec(self.settings["routes"], self.config)).encode()
            cached = self.settings["openapi"] = (plain, gzip.compress(plain, mtime=0))
        plain, packed = cached
        self.set_header("Cache-Control", "public, max-age=300")
        self.add_header("Vary", "Accept-Encoding")
        if accepts_gzip(self.request.headers.get("Accept-Encoding", "")):
            self.set_header("Content-Encoding", "gzip")
            self.finish(packed)
        else:
            self.finish(plain)


def routes() -> list[Route]:
    return [Route("/openapi.json", OpenApiHandler, slash=False)]


def main(argv: list[str] | None = None) -> int:
    """`python -m handlers.openapi [OUT]`: write the document without a server or a
    database, for every style and the test-only routes (everything a server can serve),
    to OUT or stdout. `scripts/test` lints it."""
    import sys

    from config import load_config

    from .routing import routes as route_table

    args = sys.argv[1:] if argv is None else argv
    env = {"GATEHOUSE_ENV": "development", "SECRET_KEY": "x" * 48, "GATEHOUSE_TEST_ENDPOINTS": "1"}
    config = load_config(env)
    text = json.dumps(build_spec(route_table(config), config), indent=2) + "\n"
    if args:
        with open(args[0], "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
