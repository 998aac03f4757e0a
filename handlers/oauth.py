"""Standard OAuth endpoints beside the native ones (issue 18), for the clients apps
really use: RFC 7662 introspection, RFC 7009 revocation and RFC 8414 metadata.

They speak OAuth's dialect rather than a document's: `application/x-www-form-urlencoded`
bodies (RFC 6749 appendix B), answers at the top level (no envelope), and errors as RFC
6749's error object, `{"error": "invalid_request", "error_description": "…"}`. Always
routed, whichever API styles are enabled (like /healthz and /openapi.json). The native
`/auth/introspect` and `/auth/revoke` stay as they were; both doors reach the same domain
operations (`AuthService.inspect`, the session store).
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from models.errors import InvalidRequest, NotAuthenticated
from models.validation import Field, parse_fields

from .base import REALM, APIHandler, allow_anonymous, is_one_of
from .spec import INT, STR, Route, Schema, array, const, doc, obj

# RFC 6749 5.2's error codes by status (`slow_down`: RFC 8628's "ask again later",
# registered for OAuth errors; `temporarily_unavailable`: RFC 6749 4.1.2.1's).
OAUTH_ERRORS = {
    400: "invalid_request",
    401: "invalid_client",
    404: "invalid_request",
    405: "invalid_request",
    413: "invalid_request",
    429: "slow_down",
    503: "temporarily_unavailable",
}
SERVER_ERROR = "server_error"
FORM = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 32  # `token`, `token_type_hint`, perhaps a client's `client_id`: a few
# Any string is a token to ask about: one that is not ours (too long included) is simply
# inactive, or not revoked. The body's own limit bounds it.
TOKEN = Field(str, required=True, max_len=64 * 1024)
# RFC 7009's `access_token` / `refresh_token`, or anything a client sends: a hint we may
# ignore (RFC 7009 2.1), and do, since every token of ours says what it is.
TOKEN_TYPE_HINT = Field(str, max_len=64)
FIELDS = {"token": TOKEN, "token_type_hint": TOKEN_TYPE_HINT}
HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")

# What each style logs in and refreshes with, as RFC 8414's extension
# `gatehouse_token_endpoints` lists them for the styles that are enabled.
TOKEN_ROUTES: dict[str, dict[str, str]] = {
    "native": {"login": "/auth/token", "refresh": "/auth/token/refresh", "opaque_login": "/auth/auth"},
    "drf": {"login": "/api/auth/login/", "refresh": "/api/auth/refresh/"},
    "phone": {"code_request": "/auth/api/login/", "login": "/auth/api/login/verify/"},
    "simple": {"login": "/auth/"},
    "v1": {"login": "/api/v1/auth/login", "refresh": "/api/v1/auth/refresh"},
}
JWKS_PATH = "/.well-known/jwks.json"


class OAuthHandler(APIHandler):
    """Form bodies in, top-level JSON out, RFC 6749's error object for every error."""

    style = "oauth"
    tag = "oauth"

    def error_status(self, status: int, code: str, exc: BaseException | None) -> int:
        # RFC 6749 5.2: a request the endpoint cannot read is a 400 invalid_request,
        # whatever was wrong with it (a JSON body included).
        return 400 if status == 415 else status

    def error_envelope(self, status: int, code: str, message: str, exc: BaseException | None) -> Any:
        return {"error": OAUTH_ERRORS.get(status, SERVER_ERROR), "error_description": message}

    @classmethod
    def error_schema(cls) -> Schema:
        codes = sorted({*OAUTH_ERRORS.values(), SERVER_ERROR})
        return obj({"error": {"enum": codes}, "error_description": STR})

    _form: dict[str, str] | None = None

    def form_body(self) -> dict[str, str]:
        """The body's parameters (parsed once). Not a form, not UTF-8, or a parameter sent
        twice (RFC 6749 3.2: "MUST NOT be included more than once") is a 400."""
        if self._form is None:
            self._form = self.parse_form_body()
        return self._form

    def parse_form_body(self) -> dict[str, str]:
        ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != FORM:
            raise InvalidRequest(f"send the parameters as {FORM} (RFC 6749 appendix B)")
        try:
            pairs = parse_qsl(
                (self.request.body or b"").decode("utf-8"),
                keep_blank_values=True,
                errors="strict",
                max_num_fields=MAX_FORM_FIELDS,
            )
        except UnicodeDecodeError:
            raise InvalidRequest("the body is not valid UTF-8") from None
        except ValueError:
            raise InvalidRequest(f"the body has more than {MAX_FORM_FIELDS} parameters") from None
        form: dict[str, str] = {}
        for name, value in pairs:
            if name in form:
                raise InvalidRequest(f"'{name}' is sent more than once")
            form[name] = value
        return form

    def fields(self, spec: dict[str, Field]) -> dict[str, Any]:  # type: ignore[override]
        return parse_fields(self.form_body(), spec)

    def base_url(self) -> str:
        """This server's own URL as its client reached it: the scheme from `is_https`
        (X-Forwarded-Proto only behind a trusted proxy), the host from `Host`. Gatehouse
        has no public-URL setting; a `Host` that is no host name is a 400."""
        host = self.request.host
        if not HOST_RE.match(host):
            raise InvalidRequest("the Host header is not a host name")
        return f"{'https' if self.is_https else 'http'}://{host}"


INTROSPECTION = {
    "anyOf": [
        obj({"active": const(False)}),
        obj(
            {
                "active": const(True),
                "token_type": const("Bearer"),
                "token_use": {"enum": ["access_token", "refresh_token"]},
                "sub": STR,
                "exp": INT,
                "iat": INT,
                "iss": STR,
                "aud": {"anyOf": [STR, array(STR)]},
                "jti": STR,
                "sid": STR,
                "account_id": INT,
                "roles": array(STR),
                "username": STR,
                "aal": {"enum": [1, 2]},
                "amr": array(STR),
                "auth_time": INT,
            },
            # `aud`: a token's own; the legacy profiles' tokens carry none (README "JWT pairs").
            optional=("username", "aud"),
        ),
    ]
}


class ServiceClientHandler(OAuthHandler):
    """A route for the apps' back ends, which authenticate with a service key, sent as
    the client secret of HTTP Basic (any client id: RFC 6749's `client_secret_basic`) or
    as a Bearer token."""

    cors = False  # a service key (which also opens the admin API) never sits in a browser
    security = ("clientBasic", "serviceKey")  # in /openapi.json

    async def authenticate(self) -> None:
        if not self.presents_service_key():
            # A Bearer key that is not one of ours is a token that failed: invalid_token.
            self._token_failed = not self.uses_basic() and self.bearer_token() is not None
            raise NotAuthenticated(
                "this route needs client authentication: HTTP Basic with a service key"
                " (GATEHOUSE_SERVICE_KEYS) as the client secret, or the key as a Bearer token"
            )

    def uses_basic(self) -> bool:
        return self.request.headers.get("Authorization", "").strip().partition(" ")[0].lower() == "basic"

    def presents_service_key(self) -> bool:
        keys = self.config.server.service_keys
        credentials = self.request.headers.get("Authorization", "").strip().partition(" ")[2]
        if not self.uses_basic():
            return self.presents_secret(keys)
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except ValueError:  # not base64, or not UTF-8
            return False
        _, colon, secret = decoded.partition(":")
        # RFC 6749 2.3.1 form-encodes the secret before Basic encodes it; most clients
        # (authlib's, curl's -u) do not. Both spellings are compared, each in constant time.
        return bool(colon) and is_one_of(secret, keys) | is_one_of(unquote_plus(secret), keys)

    def bearer_challenge(self) -> str:
        # RFC 6749 5.2: a client that failed to authenticate is told each scheme it may use.
        return f'{super().bearer_challenge()}, Basic realm="{REALM}", charset="UTF-8"'


class OAuthIntrospectHandler(ServiceClientHandler):
    """RFC 7662 for resource servers holding a service key."""

    @doc(
        "RFC 7662: is this token active, and whose is it? (client authentication: a service key)",
        body=FIELDS,
        form=True,
        ok=INTROSPECTION,
        raw=True,
    )
    async def post(self) -> None:
        f = self.fields(FIELDS)
        self.reply(await self.auth.oauth_introspection(f["token"]))


class OAuthRevokeHandler(OAuthHandler):
    """RFC 7009 for any client, public ones included: the token presented is the
    credential, and its session ends. The same empty 200 for every token, ours or not,
    live or not; an address sending too many unknown opaque tokens gets a 429."""

    @allow_anonymous
    @doc(
        "RFC 7009: revoke a token (opaque, access or refresh, expired access tokens included); its session ends",
        body=FIELDS,
        form=True,
        empty=True,
        errors=(429,),
    )
    async def post(self) -> None:
        f = self.fields(FIELDS)
        await self.auth.revoke_presented(f["token"], self.context())
        self.clear_header("Content-Type")
        self.finish()


METADATA = obj(
    {
        "issuer": STR,
        "jwks_uri": STR,
        "introspection_endpoint": STR,
        "introspection_endpoint_auth_methods_supported": array(STR),
        "revocation_endpoint": STR,
        "revocation_endpoint_auth_methods_supported": array(STR),
        "response_types_supported": array(STR),
        "grant_types_supported": array(STR),
        "gatehouse_token_signing_alg_values_supported": array(STR),
        "gatehouse_token_endpoints": {
            "type": "object",
            "description": "Each enabled style's routes that hand out tokens, by name (login, refresh, …)",
            "additionalProperties": {"type": "object", "additionalProperties": STR},
        },
    },
    optional=("jwks_uri",),
)


class OAuthMetadataHandler(OAuthHandler):
    """RFC 8414's authorization server metadata: where the standard endpoints are, how
    to authenticate to them, how our tokens are signed, and (`gatehouse_*`, an extension)
    where each enabled style logs in and refreshes. No `token_endpoint`: Gatehouse has no
    RFC 6749 token endpoint (no `grant_type` requests), and a style's login route named
    as one would send standard clients where they fail; hence empty
    `grant_types_supported` and `response_types_supported` too (README, "Standard OAuth
    endpoints")."""

    @allow_anonymous
    @doc("RFC 8414: this authorization server's metadata", ok=METADATA, raw=True)
    async def get(self) -> None:
        base = self.base_url()
        served = {route.path for route in self.settings["routes"]}
        answer: dict[str, Any] = {"issuer": self.config.jwt.jwt_issuer}
        if JWKS_PATH in served:
            answer["jwks_uri"] = base + JWKS_PATH
        answer.update(
            {
                "introspection_endpoint": base + "/oauth/introspect",
                # `Bearer`: from RFC 8414's second registry (OAuth Access Token Types).
                "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "Bearer"],
                "revocation_endpoint": base + "/oauth/revoke",
                "revocation_endpoint_auth_methods_supported": ["none"],
                "response_types_supported": [],
                "grant_types_supported": [],
                "gatehouse_token_signing_alg_values_supported": self.tokens.keys.algorithms(),
                "gatehouse_token_endpoints": {
                    style: {name: base + path for name, path in paths.items() if path in served}
                    for style, paths in TOKEN_ROUTES.items()
                    if style in self.config.server.api_styles
                },
            }
        )
        self.reply(answer)


def routes() -> list[Route]:
    return [
        Route("/oauth/introspect", OAuthIntrospectHandler),
        Route("/oauth/revoke", OAuthRevokeHandler),
        Route("/.well-known/oauth-authorization-server", OAuthMetadataHandler, slash=False),
    ]
