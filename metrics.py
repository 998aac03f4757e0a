"""`/metrics` in the Prometheus text format, and what feeds it.

Requests are counted in the access-log hook (one place sees every request); domain
outcomes (logins, codes, kicks, refresh reuse) come from the audit log's listener, which
the composition root (`app.py`) wires, so a new event type needs no new wiring. With
several processes, prometheus-client's multiprocess mode sums them: `workers.py` calls
`use_directory` before it forks.

Safe to import at any time. prometheus-client decides between in-process values and
per-process files (multiprocess mode) once, at its own import, from the environment
variable PROMETHEUS_MULTIPROC_DIR, and a metric keeps the kind of value it was created
with. So no metric is created at import here: each name below stands for its metric,
and every metric is created together on the first use of any of them. `use_directory`
sets the variable and re-selects the value class, and refuses once metrics exist.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values

_created: dict[str, Any] = {}


def _create() -> dict[str, Any]:
    """Every metric, created once, on first use (see the module's docstring)."""
    if _created:
        return _created
    latency_buckets = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
    _created.update(
        REQUESTS=Counter("gatehouse_http_requests_total", "HTTP requests answered", ["route", "method", "status"]),
        LATENCY=Histogram(
            "gatehouse_http_request_duration_seconds",
            "Time to answer, by route",
            ["route", "method"],
            buckets=latency_buckets,
        ),
        EVENTS=Counter("gatehouse_events_total", "Audit events recorded", ["type", "outcome"]),
        LOGINS=Counter("gatehouse_logins_total", "Logins, by outcome", ["outcome"]),
        CODES=Counter("gatehouse_codes_total", "One-time codes sent or failed to send", ["outcome"]),
        REUSE=Counter("gatehouse_refresh_reuse_total", "Refresh tokens replayed after rotation (session revoked)"),
        KICKS=Counter("gatehouse_kicks_total", "Kick operations (one session or all of an account)"),
        MFA=Counter(
            "gatehouse_mfa_total",
            "Second-factor codes checked, by factor (totp, recovery) and outcome",
            ["factor", "outcome"],
        ),
        # Counted by the supervisor of `--processes N` itself, into the same directory.
        WORKER_RESTARTS=Counter("gatehouse_worker_restarts_total", "Worker processes started again after one died"),
        SHED=Counter("gatehouse_shed_requests_total", "Requests refused at once (503) because too many were in flight"),
        DEADLINES=Counter(
            "gatehouse_request_deadline_exceeded_total", "Requests answered 503 because their deadline passed"
        ),
        ACTIVE=Gauge(
            "gatehouse_active_sessions",
            "Live sessions (unrevoked, unexpired), from counters at scrape",
            multiprocess_mode="livemostrecent",
        ),
    )
    return _created


class _Metric:
    """Stands for the metric of its name; creates every metric on first use."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(_create()[self.name], attr)


REQUESTS = _Metric("REQUESTS")
LATENCY = _Metric("LATENCY")
EVENTS = _Metric("EVENTS")
LOGINS = _Metric("LOGINS")
CODES = _Metric("CODES")
REUSE = _Metric("REUSE")
KICKS = _Metric("KICKS")
MFA = _Metric("MFA")
WORKER_RESTARTS = _Metric("WORKER_RESTARTS")
SHED = _Metric("SHED")
DEADLINES = _Metric("DEADLINES")
ACTIVE = _Metric("ACTIVE")


def use_directory(path: Path) -> None:
    """Multiprocess mode: every process (and every process forked from this one) writes
    its metrics under `path`, and /metrics in any of them sums them all. Before any
    metric is used: a metric created earlier would keep counting in this process only."""
    if _created:
        raise RuntimeError("metrics.use_directory() after metrics were created: they would not be shared")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    values.ValueClass = values.get_value_class()


def mark_process_dead(pid: int) -> None:
    """A worker died: its live gauges leave the sum (the supervisor calls this)."""
    multiprocess.mark_process_dead(pid)


# A client may send any token as the method; anything else is one label, so label
# values (and the series they create) stay bounded.
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    key = (route, method if method in METHODS else "OTHER", status)
    series = _series.get(key)
    if series is None:  # looked up once per combination, not on every request
        series = _series[key] = (REQUESTS.labels(key[0], key[1], str(status)), LATENCY.labels(key[0], key[1]))
    series[0].inc()
    series[1].observe(seconds)


def observe_event(type: str, outcome: str, fields: Mapping[str, Any]) -> None:
    EVENTS.labels(type, outcome).inc()
    if type in ("mfa_verified", "mfa_failed"):
        MFA.labels(str(fields.get("factor", "")), outcome).inc()
    if type in ("login_ok", "login_failed"):
        LOGINS.labels("ok" if type == "login_ok" else "failed").inc()
    elif type in ("code_sent", "code_failed"):
        CODES.labels("sent" if type == "code_sent" else "failed").inc()
    elif type == "refresh_reuse":
        REUSE.inc()
    elif type == "kick":
        KICKS.inc()


def registry() -> CollectorRegistry:
    _create()  # a scrape lists every metric, used yet or not
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return merged
    return REGISTRY
