"""Liveness and readiness for the platform's router and for operators."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from metrics import ACTIVE, registry
from models.errors import NotAuthenticated

from .base import APIHandler, allow_anonymous, is_db_outage
from .spec import BOOL, INT, STR, Route, const, doc, obj

WORKERS = obj({"expected": INT, "serving": INT, "missing": INT})
READY = obj({"status": STR, "database": BOOL, "workers": WORKERS}, optional=("workers",))


class HealthHandler(APIHandler):
    """The process is up and its IOLoop answers; says nothing about the database."""

    tag = "service"  # in /openapi.json

    sheddable = False  # an operator must see an overload while it lasts

    @allow_anonymous
    @doc("Liveness: the process answers", ok=obj({"status": const("ok")}))
    async def get(self) -> None:
        self.reply({"status": "ok"})


class ReadyHandler(APIHandler):
    """Ready when MongoDB answers, every index is in place and, with `--processes N`,
    all N workers serve (`workers` says how many are missing). A draining process is
    not ready: the router should send it nothing new."""

    tag = "service"  # in /openapi.json

    sheddable = False  # an operator must see an overload while it lasts

    @allow_anonymous
    @doc(
        "Readiness: MongoDB answers, every index exists and every worker process serves",
        ok=READY,
        extra={503: READY},
    )
    async def get(self) -> None:
        try:
            database = await self.gatehouse.ready()
        except Exception as e:  # noqa: BLE001 - any failure here means "not ready"
            if not is_db_outage(e):
                raise
            database = False
        answer: dict = {"database": database}
        ready = database
        roster = self.settings.get("roster")
        if roster is not None:
            serving = roster.serving()
            missing = max(roster.expected - serving, 0)
            answer["workers"] = {"expected": roster.expected, "serving": serving, "missing": missing}
            ready = ready and not missing
        draining = self.settings.get("draining", False)
        answer["status"] = "draining" if draining else "ready" if ready else "not ready"
        self.reply(answer, status=200 if ready and not draining else 503)

    def error_envelope(self, status: int, code: str, message: str, exc: BaseException | None) -> Any:
        # Whatever ended it (a database error, the request deadline), a 503 here means
        # "not ready", in the shape the probes read.
        if status == 503:
            return {"status": "not ready", "database": False}
        return super().error_envelope(status, code, message, exc)


class MetricsHandler(APIHandler):
    """Open by default, like most exporters; GATEHOUSE_METRICS_TOKEN makes it need
    `Authorization: Bearer <token>`."""

    cors = False  # for the operator's scraper, never for a browser app

    sheddable = False  # an operator must see an overload while it lasts

    @allow_anonymous
    async def get(self) -> None:
        wanted = self.config.server.metrics_token
        if wanted and not self.presents_secret((wanted,)):
            self._token_failed = self.bearer_token() is not None  # the challenge's invalid_token
            raise NotAuthenticated("/metrics needs the GATEHOUSE_METRICS_TOKEN bearer token")
        ACTIVE.set(await self.sessions.count_live())
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(registry()))


def routes() -> list[Route]:
    return [
        Route("/healthz", HealthHandler, slash=False),
        Route("/readyz", ReadyHandler, slash=False),
    ]


def unlisted_routes() -> list[tuple[str, type]]:
    """Routes /openapi.json does not describe: /metrics answers in Prometheus's text format."""
    return [(r"/metrics", MetricsHandler)]
