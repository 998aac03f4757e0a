"""Administrator work is isolated from authentication (issue 17).

Administrator reads (console pages, the admin API, drf's `users/`) go through a client
of their own ("gatehouse-admin", a small pool), each under its own time limit and in
one of a few slots per process (`models/bounded.py`). Here `failCommand` blocks that
client's reads (`appName` "gatehouse-admin": SecantusDB, like mongod, scopes a fail point
to one client's connections) for longer than the limit, standing in for a list that
scans half a million sessions. Then: the pages give up at their limit and say so; logins
and whoami, on the main client, keep their pace (compared with a baseline measured in
the same test, not with fixed milliseconds); the change feed, on its own client, keeps
confirming, so the session cache keeps serving; and no more than the configured number
of administrator reads ever run at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import pytest
from pymongo.monitoring import CommandFailedEvent, CommandListener, CommandStartedEvent, CommandSucceededEvent

from tests.conftest import PASSWORD, failpoint, login, register
from tests.test_console import Console

LIMIT_MS = 1000  # the administrator reads' time limit in these tests
SLOTS = 2
BLOCK_MS = 3000  # how long the fail point holds each administrator read: past the limit
MARGIN = 1.5  # seconds an answer may come after its limit on a loaded machine
SETTINGS = {"admin_query_timeout_ms": LIMIT_MS, "admin_query_concurrency": SLOTS}
pytestmark = pytest.mark.parametrize("settings", [SETTINGS])
GAVE_UP = "took too long"


class InFlight(CommandListener):
    """How many commands the administrator reads' client has on the wire at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.started_names: list[str] = []
        self.max_time_ms: list[Any] = []  # what each command asked the database for

    def started(self, event: CommandStartedEvent) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        self.started_names.append(event.command_name)
        self.max_time_ms.append(event.command.get("maxTimeMS"))

    def succeeded(self, event: CommandSucceededEvent) -> None:
        self.now -= 1

    def failed(self, event: CommandFailedEvent) -> None:
        self.now -= 1


@pytest.fixture
def in_flight() -> InFlight:
    return InFlight()


@pytest.fixture
def admin_client_options(in_flight: InFlight) -> dict[str, Any]:
    return {"event_listeners": [in_flight]}


@pytest.fixture
async def operator(base_url: str, admin: dict):
    """A logged-in console (cookies and all)."""
    console = Console(base_url)
    r = await console.login(admin["username"])
    assert r.status_code == 303
    yield console
    await console.http.aclose()


def stuck(mongo_uri: str):
    """Every read of the administrator client held for BLOCK_MS."""
    return failpoint(
        mongo_uri, ["find", "aggregate"], app="gatehouse-admin", blockConnection=True, blockTimeMS=BLOCK_MS
    )


async def timed(request: Any) -> tuple[Any, float]:
    started = time.monotonic()
    r = await request
    return r, time.monotonic() - started


def admin_api(base_url: str) -> httpx.AsyncClient:
    # Its own connections: a queue in the test's HTTP client would look like one in the server.
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
    return httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits)


async def hot_path(api, users: list[dict], tokens: list[str]) -> float:
    """Seconds for a burst of whoami (every token, three times) and a login per user,
    all at once; every answer must be a 200."""
    started = time.monotonic()
    answers = await asyncio.gather(
        *(api.get("/auth/me", token=t) for t in tokens * 3),
        *(api.post("/auth/auth", {"username": u["username"], "password": PASSWORD}) for u in users),
    )
    assert [r.status for r in answers] == [200] * len(answers), [(r.status, r.data) for r in answers]
    return time.monotonic() - started


async def test_stuck_admin_lists_give_up_at_their_limit_and_say_so(base_url, api, admin, operator, mongo_uri, caplog):
    """The console's sessions page and the admin API's session list answer 503 at about
    the administrator limit (1 s here, the request deadline is 5 s), in their own
    shapes and with a message that says what happened; one warning each, no error; and
    both work again once the database is quick."""
    async with stuck(mongo_uri):
        page, page_s = await timed(operator.http.get("/console/sessions"))
        r, api_s = await timed(api.get("/admin/api/sessions", token=admin["token"]))
    for elapsed in (page_s, api_s):
        assert LIMIT_MS / 1000 - 0.2 <= elapsed <= LIMIT_MS / 1000 + MARGIN, elapsed
    assert page.status_code == 503 and page.headers["content-type"] == "text/html; charset=UTF-8"
    assert GAVE_UP in page.text and "narrow the filter" in page.text and "Traceback" not in page.text
    assert r.status == 503 and r.data["error"] == "QUERY_TIMEOUT" and GAVE_UP in r.data["message"], r.data
    assert [rec for rec in caplog.records if rec.levelno >= logging.ERROR] == []
    gave_up = [rec for rec in caplog.records if "admin read sessions gave up" in rec.getMessage()]
    assert len(gave_up) == 2 and all(rec.levelno == logging.WARNING for rec in gave_up)
    assert not any("request deadline" in rec.getMessage() for rec in caplog.records)
    assert (await operator.http.get("/console/sessions")).status_code == 200
    assert (await api.get("/admin/api/sessions", token=admin["token"])).status == 200


async def test_authentication_keeps_its_pace_and_the_cache_its_feed_while_admin_reads_are_stuck(
    base_url, api, admin, gatehouse, mongo_uri, caplog
):
    """Console tabs and scripts keep asking for lists that the database holds: logins and
    whoami stay 200 and within a generous multiple of their own pace without them, and
    the change feed keeps confirming (the cache keeps serving) throughout."""
    users = [await register(api) for _ in range(3)]
    tokens = [await login(api, u) for u in users]
    baseline = min([await hot_path(api, users, tokens) for _ in range(2)])
    feed, cache = gatehouse.resolver.feed, gatehouse.resolver.cache
    async with stuck(mongo_uri), admin_api(base_url) as http:
        headers = {"Authorization": admin["token"]}

        async def tab() -> list[int]:
            # A console tab or a script asking again as soon as it is answered.
            seen = []
            while len(seen) < 3:
                seen.append((await http.get("/admin/api/sessions", headers=headers)).status_code)
            return seen

        tabs = [asyncio.ensure_future(tab()) for _ in range(6)]
        await asyncio.sleep(0.3)  # the first lists are now held by the database
        confirmed = cache.confirmed
        loaded = [await hot_path(api, users, tokens) for _ in range(2)]
        await asyncio.sleep(LIMIT_MS / 1000)
        assert cache.confirmed > confirmed and not feed.failing  # the feed kept looking
        statuses = [s for seen in await asyncio.gather(*tabs) for s in seen]
    assert set(statuses) == {503}, statuses
    assert max(loaded) <= 4 * baseline + 0.5, (baseline, loaded)
    assert not any("change feed failed" in rec.getMessage() for rec in caplog.records)


async def test_at_most_the_configured_number_of_admin_reads_run_at_once(
    base_url, admin, gatehouse, mongo_uri, in_flight
):
    """Eight lists at once with two slots: the administrator client never has more than
    two commands on the wire, each carrying `maxTimeMS` within the limit (so the database
    stops too), the others wait for a slot only within their own limit (then 503, saying
    the console is busy), and nobody waits past it."""
    async with stuck(mongo_uri), admin_api(base_url) as http:
        headers = {"Authorization": admin["token"]}
        answers = await asyncio.gather(*(timed(http.get("/admin/api/sessions", headers=headers)) for _ in range(8)))
    assert in_flight.started_names and in_flight.peak <= SLOTS, (in_flight.peak, in_flight.started_names)
    assert gatehouse.admin_limit.peak <= SLOTS
    assert all(isinstance(ms, int) and 0 < ms <= LIMIT_MS for ms in in_flight.max_time_ms), in_flight.max_time_ms
    for r, elapsed in answers:
        assert r.status_code == 503 and r.json()["error"] == "QUERY_TIMEOUT", r.text
        assert elapsed <= LIMIT_MS / 1000 + MARGIN, elapsed
    messages = {r.json()["message"] for r, _ in answers}
    assert any(GAVE_UP in m for m in messages) and any("at once" in m for m in messages), messages


async def test_the_change_feed_has_its_own_client_and_recovers_by_itself_saying_so_once(
    api, gatehouse, mongo_uri, caplog
):
    """The feed looks through its own small client; when its looks are slow it gives each
    up at its own bound (never queuing more), warns once, and when they are quick again
    it reads again by itself and says so once. Whoami stays 200 throughout (read from
    the database while the cache cannot be confirmed)."""
    caplog.set_level(logging.INFO, logger="gatehouse")
    feed = gatehouse.resolver.feed
    main = gatehouse.db.client
    assert feed.db.client is not main and feed.db.client is not gatehouse.admin.accounts.coll.database.client
    assert feed.db.client.options.pool_options.max_pool_size <= 2
    token = await login(api, await register(api))
    async with failpoint(mongo_uri, ["find"], app="gatehouse-feed", blockConnection=True, blockTimeMS=2000):
        for _ in range(4):
            assert (await api.get("/auth/me", token=token)).status == 200
            await asyncio.sleep(0.5)
        assert feed.failing
    for _ in range(40):
        if not feed.failing:
            break
        await asyncio.sleep(0.1)
    assert not feed.failing
    assert (await api.get("/auth/me", token=token)).status == 200
    lines = [rec for rec in caplog.records if "change feed" in rec.getMessage()]
    assert [rec.levelno for rec in lines] == [logging.WARNING, logging.INFO], [rec.getMessage() for rec in lines]
    assert "reading again after" in lines[1].getMessage()
