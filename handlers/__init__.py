"""The route table: each module contributes its routes, filtered by the enabled API
styles, and the table ends with a JSON 404 for unknown paths."""

from __future__ import annotations

from config import Config

from . import health, native


def routes(config: Config) -> list[tuple[str, type]]:
    table: list[tuple[str, type]] = []
    table += health.routes()
    if "native" in config.api_styles:
        table += native.routes(config.test_endpoints)
    return table
