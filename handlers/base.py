"""Base handlers: what every response has in common, whatever it is.

`GatehouseHandler` is the base of every handler of ours (API, console, static files):
the services by name (`self.auth`, `self.sessions`, …, as JupyterHub's BaseHandler
has `self.users`), headers, client identity, the request's deadline, load shedding
and the shutdown's bookkeeping. `APIHandler` reads JSON, identifies the caller once in
`prepare()`, and turns domain exceptions into a status and an error code in
`write_error`. An API style subclasses it only to say how a result and an error are
wrapped (`envelope`, `error_envelope`) and, where its document says so, which status
an error gets.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import pymongo
from pymongo.errors import ConnectionFailure, PyMongoError
from tornado.web import HTTPError, RequestHandler, StaticFileHandler

from config import Config
from metrics import DEADLINES, SHED, observe_request
from models.common import Context, canonical_ip, ip_limit_key, parse_ip
from models.errors import (
    AccountExists,
    AdminQueryTimeout,
    ChallengeInvalid,
    CodeInvalid,
    DeadlineExceeded,
    DeliveryFailed,
    DomainError,
    Forbidden,
    InvalidCredentials,
    InvalidRequest,
    MfaEnrolmentRequired,
    MfaRequired,
    NotAuthenticated,
    NotFound,
    Overloaded,
    RateLimited,
    ReauthenticationRequired,
    TokenExpired,
    TokenInvalid,
    Unavailable,
)
from models.passkeys import PasskeyExists, PasskeyRejected, PasskeysOff
from models.validation import Field, parse_fields
from models.values import Account, Caller, Session

from .spec import PARAMS, STR, Schema, obj

if TYPE_CHECKING:
    from app import Gatehouse  # the composition root, which imports this module
    from models.accounts import Accounts
    from models.admin import Admin
    from models.auth import AuthService
    from models.common import Clock
    from models.events import EventLog
    from models.otp import CodeFlows
    from models.resolver import Resolver
    from models.sessions import Sessions
    from models.tokens import Tokens

access_log = logging.getLogger("gatehouse.access")
app_log = logging.getLogger("gatehouse")

F = TypeVar("F", bound=Callable[..., Awaitable[None]])

# Domain error → (HTTP status, stable error code). Order matters: subclasses first.
ERROR_TABLE: tuple[tuple[type[Exception], int, str], ...] = (
    (InvalidRequest, 400, "INVALID_REQUEST"),
    (InvalidCredentials, 401, "INVALID_CREDENTIALS"),
    # 401 where no document prescribes otherwise (RFC 6750); native answers 403 (003).
    (TokenExpired, 401, "TOKEN_EXPIRED"),
    (NotAuthenticated, 401, "NOT_AUTHENTICATED"),
    (TokenInvalid, 401, "INVALID_TOKEN"),
    (ReauthenticationRequired, 403, "REAUTHENTICATION_REQUIRED"),
    (MfaRequired, 403, "MFA_REQUIRED"),
    (MfaEnrolmentRequired, 403, "MFA_ENROLMENT_REQUIRED"),
    (ChallengeInvalid, 401, "MFA_CHALLENGE_INVALID"),
    (PasskeysOff, 404, "PASSKEYS_OFF"),
    (PasskeyRejected, 400, "PASSKEY_REJECTED"),
    (PasskeyExists, 409, "PASSKEY_EXISTS"),
    (Forbidden, 403, "FORBIDDEN"),
    (NotFound, 404, "NOT_FOUND"),
    (AccountExists, 409, "ACCOUNT_EXISTS"),
    (CodeInvalid, 400, "INVALID_CODE"),
    (RateLimited, 429, "RATE_LIMITED"),
    (DeliveryFailed, 503, "DELIVERY_FAILED"),
    (AdminQueryTimeout, 503, "QUERY_TIMEOUT"),
    (Unavailable, 503, "UNAVAILABLE"),
)
HTTP_CODES = {
    400: "INVALID_REQUEST",
    401: "NOT_AUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    503: "UNAVAILABLE",
}
HTTP_MESSAGES = {
    404: "no such endpoint",
    405: "method not allowed on this endpoint",
    413: "request body too large",
    415: "send the body as JSON (Content-Type: application/json)",
}
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
# C0 controls and DEL: never part of a file name, a URL we redirect to, or a header.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
SURROGATE_RE = re.compile("[\ud800-\udfff]")
MAX_JSON_DEPTH = 32  # our bodies are flat objects; a little room for future nesting
TOO_DEEP = f"the body is nested deeper than {MAX_JSON_DEPTH} levels"
NOT_UNICODE = "the body holds a string that is not valid Unicode (a lone surrogate)"
URL_TOKEN_PARAMS = ("access_token", "token", "refresh_token", "code", "password")
REALM = "gatehouse"  # RFC 6750's realm in every 401's WWW-Authenticate
# The request deadline's backstop fires this long after the database operations' own
# deadline, so a request waiting on MongoDB ends through the driver's timeout (which
# closes that connection cleanly) and the backstop only catches everything else.
BACKSTOP_GRACE = 0.1
SHED_RETRY_AFTER = 1  # seconds a shed client is asked to wait
# The methods a route may implement, in the order `Allow` and a preflight list them.
# HEAD is implemented wherever GET is (`GatehouseHandler.head`); OPTIONS only answers
# CORS preflights, so it is never listed.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allow_anonymous(method: F) -> F:
    """Mark a handler method as callable without a token (login, sign-up, health)."""
    method.__allow_anonymous__ = True  # type: ignore[attr-defined]
    return method


def is_one_of(presented: str, keys: Iterable[str]) -> bool:
    """Whether `presented` is one of `keys` (a service key, the metrics token). Every key
    is compared, each in constant time, so the answer's timing says nothing about which
    key came close; an empty key never matches."""
    raw = presented.encode()
    matched = False
    for key in keys:
        matched |= bool(key) and hmac.compare_digest(raw, key.encode())
    return matched


def declared_length(headers: Any) -> int | None:
    """A request's `Content-Length` as Tornado reads it (ASCII digits only; a list of
    equal values, as proxies sometimes repeat it, is that value), or None when there is
    none or it is not one. `str.isdigit` alone is no guard: "²" passes it and `int`
    refuses it, and a value of thousands of digits is over `int`'s limit."""
    pieces = {p.strip() for p in headers.get("Content-Length", "").split(",")}
    if len(pieces) != 1:
        return None
    (value,) = pieces
    if not (value.isascii() and value.isdigit()):
        return None
    return int(value) if len(value) <= 18 else 10**18  # past any limit either way


def is_db_outage(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionFailure) or (isinstance(exc, PyMongoError) and exc.timeout)


def check_json(value: Any) -> None:
    """Refuse JSON that Python parses but nothing after the parser should meet: nesting
    deeper than `MAX_JSON_DEPTH`, and strings (keys included) holding a lone surrogate
    (`"\\ud800"`), which json accepts and every later UTF-8 encode (bcrypt, BSON, the
    log) fails on. Iterative, so the check itself cannot recurse too deeply; only
    containers go on the stack, so a long flat array costs one pass."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        container, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidRequest(TOO_DEEP)
        if isinstance(container, dict):
            if any(not key.isascii() and SURROGATE_RE.search(key) for key in container):
                raise InvalidRequest(NOT_UNICODE)
            container = container.values()
        for item in container:
            if isinstance(item, str):
                if not item.isascii() and SURROGATE_RE.search(item):
                    raise InvalidRequest(NOT_UNICODE)
            elif isinstance(item, (dict, list)):
                pending.append((item, depth + 1))


def translate(exc: BaseException | None, status_code: int) -> tuple[int, str, str]:
    """(status, code, message) for any exception a request may end with."""
    if isinstance(exc, DomainError):
        for cls, status, code in ERROR_TABLE:
            if isinstance(exc, cls):
                return status, code, exc.message
    if isinstance(exc, PyMongoError):
        # Any database error fails closed: a counter that cannot be reserved, a write that
        # failed. 503 in the style's envelope, never a 500 and never an unthrottled pass.
        return 503, "UNAVAILABLE", Unavailable.default_message
    if isinstance(exc, HTTPError):
        status = exc.status_code
        return status, HTTP_CODES.get(status, "ERROR"), exc.log_message or HTTP_MESSAGES.get(status, "request failed")
    if status_code >= 500:
        return 500, "INTERNAL_ERROR", "internal error; it has been logged"
    return status_code, HTTP_CODES.get(status_code, "ERROR"), HTTP_MESSAGES.get(status_code, "request failed")


class GatehouseHandler(RequestHandler):
    """The base of every handler: the services by name, headers, client identity and
    logging, the request's deadline, load shedding and the shutdown's bookkeeping."""

    # The API style a request is made in, as sessions and the audit log record it.
    style = "native"
    answered_late = False
    # Whether requests to this handler run under GATEHOUSE_REQUEST_DEADLINE_MS, and whether
    # they are refused when too many are in flight (never the probes an operator needs
    # to see an overload: /healthz, /readyz, /metrics).
    has_deadline = True
    sheddable = True
    _deadline: asyncio.Timeout | None = None

    def initialize(self, **kwargs: Any) -> None:
        # Requests in flight: a graceful shutdown waits for them to finish (and answers
        # the ones still running at its deadline), and an overload is refused early
        # (`shed_if_overloaded`).
        self.application.settings.setdefault("inflight", set()).add(self)
        super().initialize(**kwargs)

    def on_finish(self) -> None:
        self.application.settings["inflight"].discard(self)

    async def head(self, *args: str, **kwargs: str) -> None:
        """HEAD is GET without the body (RFC 9110 9.3.2), for every route with a GET:
        the same handler runs, with the same checks and the same status and headers
        (Content-Length included); Tornado's `flush` drops the body of an answer to
        HEAD. Where there is no GET, `RequestHandler.get` answers 405."""
        result = self.get(*args, **kwargs)
        if result is not None:
            await result

    def body_too_large(self) -> bool:
        """Whether the request's body is over GATEHOUSE_MAX_BODY_BYTES, by its declared
        `Content-Length` or by what was read. The connection (`routing.BodyLimit`)
        keeps such a body out of memory and still runs the handler, so the client gets
        this route's 413 rather than Tornado's bare 400."""
        limit = self.config.server.max_body_bytes
        declared = declared_length(self.request.headers)
        return len(self.request.body or b"") > limit or (declared is not None and declared > limit)

    def flush(self, include_footers: bool = False) -> Any:
        if self.application.settings.get("draining"):
            # Shutting down: the client must not send another request on this connection
            # (the server reads none; see lifecycle.DrainingHTTPServer). Once the headers
            # are out this changes nothing.
            self.set_header("Connection", "close")
        return super().flush(include_footers)

    def answer_late(self) -> None:
        """The shutdown's deadline came first: a 503 now rather than no answer at all.
        Whatever the request was still doing is abandoned, and its errors unlogged."""
        self.answered_late = True
        error = Unavailable("the server is shutting down; try again")
        self.send_error(503, exc_info=(Unavailable, error, None))

    def shed_if_overloaded(self) -> None:
        """Refuse (503, Retry-After) a request that arrives while more than
        GATEHOUSE_MAX_IN_FLIGHT are in flight, before it does any work: against a slow
        database, requests would otherwise pile up in memory, each waiting its deadline."""
        bound = self.config.server.max_in_flight
        if bound and self.sheddable and len(self.application.settings["inflight"]) > bound:
            SHED.inc()
            raise Overloaded(retry_after=SHED_RETRY_AFTER)

    async def _execute(self, transforms: Any, *args: bytes, **kwargs: bytes) -> None:
        """Tornado's request execution (reading the body, `prepare`, the method) under the
        request's deadline. The request's database operations share one budget, the
        deadline or GATEHOUSE_DB_TIMEOUT_MS if that is shorter (`pymongo.timeout`, the
        driver's client-side operation timeout, carried by a context variable into every
        await of this request), and a backstop cancels whatever else the request waits
        on at its deadline (the bcrypt queue, say). Tornado answers a request its
        backstop cancelled with `send_error`, which `failure` reads as
        `DeadlineExceeded`: one whole 503 in the style's envelope, never half an answer."""
        budget = self.config.server.request_deadline_ms / 1000 if self.has_deadline else 0
        if not budget:
            await super()._execute(transforms, *args, **kwargs)
            return
        started = time.monotonic()
        with pymongo.timeout(min(budget, self.config.database.db_timeout_ms / 1000)):
            try:
                async with asyncio.timeout(budget + BACKSTOP_GRACE) as self._deadline:
                    await super()._execute(transforms, *args, **kwargs)
            except TimeoutError:
                pass  # answered already (Tornado's cancellation path); logged below
        elapsed = time.monotonic() - started
        # The driver may give up a round trip before the deadline rather than send a
        # command it cannot finish: a 503 that close to the deadline is the deadline's.
        if elapsed >= budget - BACKSTOP_GRACE and self.get_status() == 503:
            DEADLINES.inc()
            app_log.warning(
                "request deadline (%d ms) passed: answered 503 after %d ms; rid=%s",
                self.config.server.request_deadline_ms,
                1000 * elapsed,
                self.request_id,
            )

    def failure(self, kwargs: Mapping[str, Any]) -> BaseException | None:
        """The exception a request ended with, as `write_error` gets it. A request its
        deadline's backstop cancelled reaches `write_error` as a bare 500 (Tornado's
        cancellation path): it is a `DeadlineExceeded`."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if exc is None and self._deadline is not None and self._deadline.expired():
            return DeadlineExceeded()
        return exc

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Tracebacks at ERROR only for bugs. Domain outcomes and HTTP errors are in the
        access log already; a database error (an outage, a timeout, a command that
        failed) is one warning line: the answer was a deliberate 503."""
        if isinstance(value, (DomainError, HTTPError)) or self.answered_late:
            return  # expected outcomes (the access log has the status), or abandoned at shutdown
        if isinstance(value, PyMongoError):
            what = "unavailable" if is_db_outage(value) else f"error (code {getattr(value, 'code', None)})"
            app_log.warning("database %s: %s; rid=%s", what, type(value).__name__, self.request_id)
            return
        super().log_exception(typ, value, tb)

    # ---- the services, by name ---------------------------------------------------------

    @property
    def gatehouse(self) -> Gatehouse:
        """The composition root (app.py), as the application's settings carry it."""
        return self.application.settings["gatehouse"]

    @property
    def config(self) -> Config:
        return self.application.settings["config"]

    @property
    def clock(self) -> Clock:
        """The database's clock: `self.clock()` is now."""
        return self.gatehouse.clock

    @property
    def auth(self) -> AuthService:
        return self.gatehouse.auth

    @property
    def flows(self) -> CodeFlows:
        """The one-time-code flows: sign-up by phone, code logins, resets, proofs."""
        return self.gatehouse.flows

    @property
    def accounts(self) -> Accounts:
        return self.gatehouse.accounts

    @property
    def sessions(self) -> Sessions:
        return self.gatehouse.sessions

    @property
    def tokens(self) -> Tokens:
        return self.gatehouse.tokens

    @property
    def resolver(self) -> Resolver:
        """Token → caller, through the per-process session cache."""
        return self.gatehouse.resolver

    @property
    def admin(self) -> Admin:
        """What administrators read: session lists, the audit log, the dashboard."""
        return self.gatehouse.admin

    @property
    def events(self) -> EventLog:
        return self.gatehouse.events

    # ---- the request ---------------------------------------------------------------------

    @property
    def request_id(self) -> str:
        rid = getattr(self, "_request_id", None)
        if rid is None:
            incoming = self.request.headers.get("X-Request-ID", "")
            trusted = self.config.server.trust_proxy and REQUEST_ID_RE.match(incoming)
            # 128 random bits as 32 hex digits (uuid4's shape, without building a UUID).
            rid = self._request_id = incoming if trusted else secrets.token_hex(16)
        return rid

    @property
    def client_ip(self) -> str:
        """The client address; X-Forwarded-For is believed only behind configured proxies,
        and then only the hop our own proxy appended (a client can prepend anything).
        Canonical (`canonical_ip`): `::ffff:192.0.2.1` is `192.0.2.1`, and an IPv6
        address has one spelling, so no limit or log can be dodged by respelling it."""
        hops = self.config.server.trust_proxy
        if hops:
            forwarded = [h.strip() for h in self.request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
            # A hop that is no address (garbage from a misconfigured proxy) is not a
            # client key of its own: the connection's peer stands in for it.
            if len(forwarded) >= hops and parse_ip(forwarded[-hops][:64]) is not None:
                return canonical_ip(forwarded[-hops][:64])
        return canonical_ip(self.request.remote_ip or "")

    @property
    def is_https(self) -> bool:
        if self.config.server.trust_proxy:
            proto = self.request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip()
            if proto:
                return proto == "https"
        return self.request.protocol == "https"

    def ip_key(self) -> str:
        """The client's per-IP limit key (`Context.ip_key`), without building a Context."""
        return ip_limit_key(self.client_ip)

    def context(self) -> Context:
        return Context(
            ip=self.client_ip,
            user_agent=self.request.headers.get("User-Agent", "")[:512],
            style=self.style,
            request_id=self.request_id,
        )

    def common_headers(self) -> None:
        self.clear_header("Server")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Request-ID", self.request_id)
        self.set_header("Referrer-Policy", "no-referrer")
        if self.is_https:
            self.set_header("Strict-Transport-Security", "max-age=31536000; includeSubDomains")


class APIHandler(GatehouseHandler):
    """JSON in, JSON out, token auth (no cookies, hence no XSRF)."""

    SUPPORTED_METHODS = ("GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS")

    # Whether browser apps on the origins of GATEHOUSE_CORS_ORIGINS may call this route.
    # The admin API never: an administrator's token is no business of a browser app.
    cors = True
    CORS_ALLOWED_HEADERS = "Authorization, Content-Type, X-Request-ID"
    CORS_EXPOSED_HEADERS = "Retry-After, X-Request-ID, WWW-Authenticate"
    CORS_MAX_AGE = 600  # seconds a browser may keep a preflight's answer

    def set_default_headers(self) -> None:
        self.common_headers()
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.cors_headers()

    def cors_origin(self) -> str | None:
        """The request's `Origin` when this route grants it CORS, else None."""
        origin = self.request.headers.get("Origin")
        return origin if self.cors and origin and origin in self.config.server.cors_origins else None

    def cors_headers(self) -> None:
        """On every answer of a CORS route, errors included (they are built through
        `set_default_headers` too): the allowed origin echoed, what a script may read,
        and `Vary: Origin` so a cache never hands one origin's answer to another. No
        `Allow-Credentials`: tokens travel in `Authorization`, never in cookies."""
        if not (self.cors and self.config.server.cors_origins):
            return
        self.set_header("Vary", "Origin")
        origin = self.cors_origin()
        if origin:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Expose-Headers", self.CORS_EXPOSED_HEADERS)

    def answer_preflight(self) -> bool:
        """A CORS preflight from an allowed origin, answered before anything else (no
        token, no body): 204 with the route's methods. False when it is none."""
        asked = self.request.headers.get("Access-Control-Request-Method")
        if self.request.method != "OPTIONS" or not asked:
            return False
        methods = [m for m in METHODS if self._implements(m)]
        if self.cors_origin() is None or asked.upper() not in methods:
            return False  # as without CORS: a 405, and no CORS headers
        self.set_status(204)
        self.clear_header("Content-Type")
        self.set_header("Access-Control-Allow-Methods", ", ".join(methods))
        self.set_header("Access-Control-Allow-Headers", self.CORS_ALLOWED_HEADERS)
        self.set_header("Access-Control-Max-Age", str(self.CORS_MAX_AGE))
        self.finish()
        return True

    def check_xsrf_cookie(self) -> None:
        """The API authenticates by a header token, never a cookie, so a cross-site form
        cannot act as anyone here: there is nothing for XSRF to forge."""

    def compute_etag(self) -> None:
        """No ETag: every answer is `no-store`, so there is nothing to revalidate, and a
        hash of a body carrying a token is not worth computing on every request."""
        return None

    # ---- the caller ----------------------------------------------------------------

    _caller: Caller | None = None
    _token: str | None = None
    _token_failed = False  # the token in Authorization was looked at and is not a live one

    @property
    def caller(self) -> Caller:
        """The caller behind the request's token (authenticated routes only)."""
        if self._caller is None:
            raise RuntimeError("no caller: the route is anonymous, or a service key authenticated it")
        return self._caller

    @property
    def caller_or_none(self) -> Caller | None:
        """The caller, or None where a service key (or nothing) authenticated the request."""
        return self._caller

    @property
    def current_account(self) -> Account:
        return self.caller.account

    @property
    def current_session(self) -> Session:
        return self.caller.session

    def bearer_token(self) -> str | None:
        """The token in Authorization: raw (as API 003 shows) or `Bearer <token>`."""
        header = self.request.headers.get("Authorization", "").strip()
        if not header:
            return None
        scheme, _, rest = header.partition(" ")
        if rest and scheme.lower() in ("bearer", "token", "jwt"):
            header = rest.strip()
        return header if 0 < len(header) <= 4096 else None

    def presents_secret(self, keys: Iterable[str]) -> bool:
        """Whether the request's token is one of `keys` (a service key, the metrics
        token); see `is_one_of`."""
        return is_one_of(self.bearer_token() or "", keys)

    async def authenticate(self) -> None:
        """Identify the caller once per request; `NotAuthenticated` when there is none."""
        token = self.bearer_token()
        if not token:
            raise NotAuthenticated()
        try:
            self._caller = await self.resolve_token(token)
        except (NotAuthenticated, TokenInvalid):
            self._token_failed = True  # for the 401's challenge (`bearer_challenge`)
            raise
        self._token = token

    async def optional_caller(self, *, strict: bool = True) -> Caller | None:
        """The caller behind the token a request on an anonymous route may carry, or None
        without one. A token that is sent but invalid (or that this address may not have
        looked up now: `RateLimited`) is raised when `strict`, else treated as absent."""
        if not self.bearer_token():
            return None
        try:
            await self.authenticate()
        except (NotAuthenticated, RateLimited):
            if strict:
                raise
            return None
        return self._caller

    async def resolve_token(self, token: str) -> Caller:
        return await self.resolver.resolve(token, client=self.ip_key)

    async def prepare(self) -> None:
        # A preflight does no work, so it is answered even in an overload: shed, the
        # browser would report a bare network error, while the request it clears gets a
        # 503 whose Retry-After the script can read.
        if self.answer_preflight():
            return
        self.shed_if_overloaded()
        for name in URL_TOKEN_PARAMS:
            if name in self.request.query_arguments:
                raise InvalidRequest(f"'{name}' is not accepted in the URL; send it in a header or the JSON body")
        if self.body_too_large():
            raise HTTPError(413, f"request body over {self.config.server.max_body_bytes} bytes")
        if not self._implements(self.request.method):
            raise HTTPError(405)  # OPTIONS included, unless a preflight CORS allows (above)
        for name, value in self.path_kwargs.items():
            if not re.fullmatch(PARAMS[name], value):
                raise NotFound(f"no such {name.replace('_', ' ')}")
        method = getattr(self, "get" if self.request.method == "HEAD" else self.request.method.lower())
        if not getattr(method, "__allow_anonymous__", False):
            await self.authenticate()

    # ---- the request body ------------------------------------------------------------

    def is_json_request(self) -> bool:
        ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        return ctype == "application/json" or ctype.endswith("+json")

    _json: dict[str, Any] | None = None

    def json_body(self) -> dict[str, Any]:
        """The body as a JSON object. No body at all is an empty object; a body that is
        not JSON, or JSON that is not an object, is a 400/415. Every style reads its body
        here, so hostile but well-formed JSON (see `check_json`) ends here too. Parsed
        once per request."""
        if self._json is None:
            self._json = self.parse_json_body()
        return self._json

    def parse_json_body(self) -> dict[str, Any]:
        body = self.request.body or b""
        ctype = self.request.headers.get("Content-Type", "")
        if not body.strip():
            return {}
        if ctype and not self.is_json_request():
            raise HTTPError(415)
        try:
            data = json.loads(body)
        except RecursionError:  # thousands of `[`: the C parser gives up before we can look
            raise InvalidRequest(TOO_DEEP) from None
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequest("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise InvalidRequest("the body must be a JSON object")
        check_json(data)
        return data

    def fields(self, spec: Mapping[str, Field]) -> dict[str, Any]:
        return parse_fields(self.json_body(), spec)

    # ---- answers ---------------------------------------------------------------------

    def envelope(self, data: Any) -> Any:
        """How this style wraps a successful result."""
        return data

    def error_envelope(self, status: int, code: str, message: str, exc: BaseException | None) -> Any:
        """How this style wraps an error."""
        return {"error": message}

    def error_status(self, status: int, code: str, exc: BaseException | None) -> int:
        """A style may move an error to the status its document prescribes."""
        return status

    @classmethod
    def ok_schema(cls, data: Schema) -> Schema:
        """The schema of `envelope(data)`, for /openapi.json."""
        return data

    @classmethod
    def error_schema(cls) -> Schema:
        """The schema of every `error_envelope`, for /openapi.json."""
        return obj({"error": STR})

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(self.envelope(data), separators=(",", ":")))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = self.failure(kwargs)
        status, code, message = translate(exc, status_code)
        status = self.error_status(status, code, exc)
        if isinstance(exc, (RateLimited, Overloaded)):
            self.set_header("Retry-After", str(exc.retry_after))
        if status == 405:
            self.set_header("Allow", ", ".join(m for m in METHODS if self._implements(m)))
        # Error responses are built fresh: headers set by the handler before failing
        # (a token in a body, say) must not survive into them.
        self.clear_header("Content-Type")
        self.set_default_headers()
        if status == 401:
            self.set_header("WWW-Authenticate", self.bearer_challenge())
        self.set_status(status)
        body = self.error_envelope(status, code, message, exc)
        # Only our own errors' details: PyMongo's errors have a `details` too (the
        # server's raw answer), which no client may see.
        details = exc.details if isinstance(exc, DomainError) else None
        if details and isinstance(body, dict):
            body.update(details)  # an MFA challenge, what a step-up needs: for every style
        self.finish(json.dumps(body, separators=(",", ":")))

    def bearer_challenge(self) -> str:
        """RFC 6750's challenge on every 401: `error="invalid_token"` when the token in
        `Authorization` was looked at and is not (or no longer) a live one; otherwise (a
        login, or a bad refresh token in a body beside a good header) the bare one."""
        challenge = f'Bearer realm="{REALM}"'
        if self._token_failed:
            challenge += ', error="invalid_token"'
        return challenge

    def _implements(self, method: str) -> bool:
        name = "get" if method.upper() == "HEAD" else method.lower()
        return getattr(type(self), name, None) not in (None, getattr(RequestHandler, name, None))


class StaticHandler(GatehouseHandler, StaticFileHandler):
    """The console's CSS and JS, with the same baseline headers as everything else.
    No deadline (a large file is streamed in chunks: a 503 cannot follow its headers),
    and never shed (no database, and the console must still render)."""

    has_deadline = False
    sheddable = False
    head = StaticFileHandler.head  # Tornado's own: stats the file, reads nothing

    def set_default_headers(self) -> None:
        self.common_headers()

    def parse_url_path(self, url_path: str) -> str:
        # A NUL reaches the file system calls as a ValueError (a 500); no file of ours
        # has a control character in its name, so such a path is simply not there.
        if CONTROL_RE.search(url_path):
            raise HTTPError(404)
        return super().parse_url_path(url_path)


def log_request(handler: RequestHandler) -> None:
    """One line per request: never the query string, headers, tokens or bodies."""
    status = handler.get_status()
    seconds = handler.request.request_time()
    latency_ms = 1000.0 * seconds
    caller = getattr(handler, "_caller", None)
    # The route's template, not the raw path: bounded label values, no ids in metrics.
    route = handler.application.settings.get("route_names", {}).get(type(handler), "unmatched")
    observe_request(route, handler.request.method, status, seconds)
    record = {
        "rid": getattr(handler, "_request_id", None) or "-",
        "method": handler.request.method,
        "route": route,
        "path": handler.request.path[:200],
        "status": status,
        "ms": round(latency_ms, 2),
        "ip": getattr(handler, "client_ip", handler.request.remote_ip),
        "account": caller.account.id if caller else None,
    }
    # A 503 is a deliberate answer (database down or slow, deadline, overload): a warning.
    level = logging.INFO if status < 500 else logging.WARNING if status == 503 else logging.ERROR
    config = handler.settings.get("config")
    if config is not None and config.server.log_format == "json":
        access_log.log(level, json.dumps(record, separators=(",", ":")))
    else:
        access_log.log(
            level,
            "{status} {method} {path} {ms:.1f}ms route={route} ip={ip} account={account} rid={rid}".format(**record),
        )
