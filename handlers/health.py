"""Liveness and readiness for the platform's router and for operators."""

from __future__ import annotations

from models.db import indexes_ready

from .base import APIHandler, allow_anonymous, is_db_outage


class HealthHandler(APIHandler):
    """The process is up and its IOLoop answers; says nothing about the database."""

    @allow_anonymous
    async def get(self) -> None:
        self.reply({"status": "ok"})


class ReadyHandler(APIHandler):
    """Ready when MongoDB answers and every index is in place."""

    @allow_anonymous
    async def get(self) -> None:
        try:
            await self.gh.db.command("ping")
            ready = await indexes_ready(self.gh.db)
        except Exception as e:  # noqa: BLE001 - any failure here means "not ready"
            if not is_db_outage(e):
                raise
            ready = False
        self.reply({"status": "ready" if ready else "not ready", "database": ready}, status=200 if ready else 503)


def routes() -> list[tuple[str, type]]:
    return [(r"/healthz", HealthHandler), (r"/readyz", ReadyHandler)]
