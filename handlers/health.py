"""Liveness and readiness for the platform's router and for operators."""

from __future__ import annotations

from models.db import indexes_ready

from .base import APIHandler, allow_anonymous, is_db_outage
from .openapi import OpenApiHandler
from .spec import BOOL, STR, Route, const, doc, obj

READY = obj({"status": STR, "database": BOOL})


class HealthHandler(APIHandler):
    """The process is up and its IOLoop answers; says nothing about the database."""

    @allow_anonymous
    @doc("Liveness: the process answers", ok=obj({"status": const("ok")}))
    async def get(self) -> None:
        self.reply({"status": "ok"})


class ReadyHandler(APIHandler):
    """Ready when MongoDB answers and every index is in place."""

    @allow_anonymous
    @doc("Readiness: MongoDB answers and every index exists", ok=READY, extra={503: READY})
    async def get(self) -> None:
        try:
            await self.gh.db.command("ping")
            ready = await indexes_ready(self.gh.db)
        except Exception as e:  # noqa: BLE001 - any failure here means "not ready"
            if not is_db_outage(e):
                raise
            ready = False
        self.reply({"status": "ready" if ready else "not ready", "database": ready}, status=200 if ready else 503)


def routes() -> list[Route]:
    return [
        Route("/healthz", HealthHandler, slash=False),
        Route("/readyz", ReadyHandler, slash=False),
        Route("/openapi.json", OpenApiHandler, slash=False),
    ]
