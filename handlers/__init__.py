"""The route table: each module contributes its routes, filtered by the enabled API
styles (a disabled style's paths fall through to the JSON 404)."""

from __future__ import annotations

from config import Config

from . import admin_api, health, native, style_drf, style_phone, style_simple, style_v1
from .spec import Route

STYLE_ROUTES = {
    "drf": style_drf.routes,
    "phone": style_phone.routes,
    "simple": style_simple.routes,
    "v1": style_v1.routes,
}


def routes(config: Config) -> list[Route]:
    enabled = set(config.server.api_styles)
    table = health.routes() + admin_api.routes()
    if "native" in enabled:
        table += native.routes(config.server.test_endpoints)
    for style, style_routes in STYLE_ROUTES.items():
        if style in enabled:
            table += style_routes()
    if {"native", "simple"} <= enabled:
        # Documents 002 and 003 share POST /auth/reset; one handler serves both.
        table = [r for r in table if r.path != "/auth/reset"]
        table.insert(0, Route("/auth/reset", style_simple.SharedResetHandler))
    return table
