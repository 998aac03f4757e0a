"""Every route in one place, and the Tornado application that serves them.

`routes` is the API's table (what /openapi.json describes): each module contributes its
own routes, filtered by the enabled API styles (a disabled style's paths fall through to
the JSON 404, `NotFoundHandler`). The console and /metrics are routed beside it.
"""

from __future__ import annotations

from typing import Any

from tornado import httputil
from tornado.web import Application, HTTPError

from config import Config

from . import (
    admin_api,
    console,
    console_actions,
    health,
    mfa,
    native,
    oauth,
    openapi,
    passkey_page,
    passkeys,
    revocations,
    style_drf,
    style_phone,
    style_simple,
    style_v1,
)
from .base import StaticHandler, allow_anonymous, declared_length
from .native import NativeHandler
from .spec import Route

STYLE_ROUTES = {
    "drf": style_drf.routes,
    "phone": style_phone.routes,
    "simple": style_simple.routes,
    "v1": style_v1.routes,
}


def routes(config: Config) -> list[Route]:
    enabled = set(config.server.api_styles)
    # Always routed, whichever styles are enabled: health, the documents, the standard
    # OAuth endpoints, second factors (every style's MFA accounts finish their logins
    # there) and the admin API.
    table = (
        health.routes() + openapi.routes() + oauth.routes() + revocations.routes() + mfa.routes() + passkeys.routes()
    )
    table += admin_api.routes()
    if "native" in enabled:
        table += native.routes(config.server.test_endpoints)
    for style, style_routes in STYLE_ROUTES.items():
        if style in enabled:
            table += style_routes()
    if {"native", "simple"} <= enabled:
        # Documents 002 and 003 share POST /auth/reset: one handler serves both.
        shared = style_simple.shared_routes()
        paths = {r.path for r in shared}
        table = shared + [r for r in table if r.path not in paths]
    return table


class NotFoundHandler(NativeHandler):
    """The last route: a JSON 404 for any unknown path, whatever the method."""

    cors = False  # no route here to call: no preflight, and never under /console or /admin

    @allow_anonymous
    async def get(self, *args: Any) -> None:
        raise HTTPError(404)

    post = delete = put = patch = get


class BodyLimit(httputil.HTTPMessageDelegate):
    """Keeps a request body over GATEHOUSE_MAX_BODY_BYTES out of memory, and still
    answers it with the route's own JSON 413 (`GatehouseHandler.body_too_large`).

    Tornado's own cap (`max_body_size`) answers a bare `400 Bad Request` before any
    handler runs. Here, past the limit, the body is read and dropped as it arrives
    (never buffered), and the route answers 413 once it has all arrived: most HTTP/1.1
    clients write the whole body before they read an answer, and a connection closed
    under a client still writing is reset, losing the answer on its way. A body over
    `DRAIN_FACTOR` times the limit (declared, or as read) is not worth reading: it is
    answered at once and the connection closed after the answer, as is one whose client
    waits for `100 Continue` (RFC 9110 10.1.1) — that client has sent nothing yet."""

    __slots__ = ("answered", "conn", "drain", "inner", "limit", "over", "received")

    DRAIN_FACTOR = 64  # 64 MiB with the default limit; Tornado's body_timeout bounds the time
    # Past the limit, Tornado's own cap must not fire: it would write its bare 400.
    UNCAPPED = 1 << 62

    def __init__(self, inner: httputil.HTTPMessageDelegate, conn: httputil.HTTPConnection, limit: int) -> None:
        self.inner, self.conn, self.limit, self.drain = inner, conn, limit, limit * self.DRAIN_FACTOR
        self.received = 0
        self.over = self.answered = False

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> Any:
        result = self.inner.headers_received(start_line, headers)
        declared = declared_length(headers)
        if "Transfer-Encoding" in headers:
            # Counted here as it arrives. (Tornado checks each chunk's declared size
            # against its cap before reading it.)
            self.conn.set_max_body_size(self.UNCAPPED)  # type: ignore[attr-defined]
        elif declared is not None and declared > self.limit:
            self.conn.set_max_body_size(self.UNCAPPED)  # type: ignore[attr-defined]
            self.over = True
            if declared > self.drain or headers.get("Expect", "").lower() == "100-continue":
                headers.pop("Expect", None)  # no `100 Continue` inviting a body we refuse
                self.answer()
        return result

    def data_received(self, chunk: bytes) -> Any:
        self.received += len(chunk)
        if self.over:
            if self.received > self.drain:
                self.answer()
            return None
        # The chunk that crosses the limit still goes in (at most one more read, 64 KiB),
        # so the handler sees a body over the limit; nothing after it does.
        self.over = self.received > self.limit
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        self.answer()

    def on_connection_close(self) -> None:
        self.inner.on_connection_close()

    def answer(self) -> None:
        """Run the handler on the body read so far (once)."""
        if not self.answered:
            self.answered = True
            self.inner.finish()


class GatehouseApplication(Application):
    """Tornado's router tries each pattern in turn (twenty regular expressions before
    `/auth/me`). A path with no parameters is first looked up in a dict, which gives the
    handler the ordered patterns would have given: a path goes in only when the first
    pattern matching it is its own route's."""

    def __init__(self, handlers: list, **settings: Any) -> None:
        super().__init__(handlers, **settings)
        self.exact: dict[str, type] = {}
        for route in settings["routes"]:
            if "{" in route.path:
                continue
            base = route.path.rstrip("/") or "/"
            for path in {base, base + "/"} if route.slash else {base}:
                first = next((r for r in self.wildcard_router.rules if r.matcher.regex.match(path)), None)
                if first is not None and first.target is route.handler:
                    self.exact.setdefault(path, route.handler)

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        delegate = super().start_request(server_conn, request_conn)
        return BodyLimit(delegate, request_conn, self.settings["body_limit"])

    def find_handler(self, request: Any, **kwargs: Any) -> Any:
        handler = self.exact.get(request.path)
        if handler is not None:
            return self.get_handler_delegate(request, handler)
        return super().find_handler(request, **kwargs)


def make_application(config: Config, /, **settings: Any) -> GatehouseApplication:
    """The application serving every route `config` enables; `settings` are Tornado's."""
    table = routes(config)
    extra = health.unlisted_routes() + console_actions.routes() + console.routes()
    extra += passkey_page.routes()  # HTML, like the console: not in /openapi.json
    route_names = {r.handler: r.path for r in table}
    route_names.update({handler: pattern for pattern, handler in extra})
    route_names[StaticHandler] = "/static/"
    return GatehouseApplication(
        [(r.pattern, r.handler) for r in table] + extra,
        routes=table,
        route_names=route_names,
        body_limit=config.server.max_body_bytes,
        static_handler_class=StaticHandler,
        default_handler_class=NotFoundHandler,
        **settings,
    )
