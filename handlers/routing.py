"""Every route in one place, and the Tornado application that serves them.

`routes` is the API's table (what /openapi.json describes): each module contributes its
own routes, filtered by the enabled API styles (a disabled style's paths fall through to
the JSON 404, `NotFoundHandler`). The console and /metrics are routed beside it.
"""

from __future__ import annotations

from typing import Any

from tornado.web import Application, HTTPError

from config import Config

from . import admin_api, console, health, native, openapi, style_drf, style_phone, style_simple, style_v1
from .base import StaticHandler, allow_anonymous
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
    table = health.routes() + openapi.routes() + admin_api.routes()
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

    def find_handler(self, request: Any, **kwargs: Any) -> Any:
        handler = self.exact.get(request.path)
        if handler is not None:
            return self.get_handler_delegate(request, handler)
        return super().find_handler(request, **kwargs)


def make_application(config: Config, /, **settings: Any) -> GatehouseApplication:
    """The application serving every route `config` enables; `settings` are Tornado's."""
    table = routes(config)
    extra = health.unlisted_routes() + console.routes()
    route_names = {r.handler: r.path for r in table}
    route_names.update({handler: pattern for pattern, handler in extra})
    route_names[StaticHandler] = "/static/"
    return GatehouseApplication(
        [(r.pattern, r.handler) for r in table] + extra,
        routes=table,
        route_names=route_names,
        static_handler_class=StaticHandler,
        default_handler_class=NotFoundHandler,
        **settings,
    )
