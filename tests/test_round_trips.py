"""What each operation costs in database commands, counted by a PyMongo CommandListener
on the test's own client, so a later change cannot add round trips silently; and what a
flood of invalid tokens costs (at most one lookup each, nothing once known, then 429)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from pymongo import monitoring

from app import Gatehouse
from models.db import connect
from models.misses import DeadKeys, MissBudget
from tests.conftest import PASSWORD, assert_error, login, register

# The client's own housekeeping, not an operation's round trips.
HOUSEKEEPING = {"hello", "ismaster", "isMaster", "ping", "endSessions", "buildInfo"}


class Commands(monitoring.CommandListener):
    """Every command sent to one database while `counting()` is open."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.seen: list[tuple[str, str]] | None = None

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.seen is None or event.database_name != self.database or event.command_name in HOUSEKEEPING:
            return
        self.seen.append((event.command_name, str(event.command.get(event.command_name))))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    @contextlib.contextmanager
    def counting(self) -> Iterator[list[tuple[str, str]]]:
        self.seen = seen = []
        try:
            yield seen
        finally:
            self.seen = None


@pytest.fixture
async def gatehouse(mongo_uri: str, config, clock):
    """The conftest's Gatehouse, on a client with a command listener (`gh.commands`)."""
    name = "gh_test_" + uuid.uuid4().hex[:12]
    commands = Commands(name)
    client = connect(mongo_uri, config.database.db_timeout_ms, event_listeners=[commands])
    gh = Gatehouse(config, client[name], clock)
    await gh.setup()
    gh.commands = commands
    yield gh
    await gh.aclose()
    await client.drop_database(name)
    await client.close()


async def quiet(gh) -> None:
    """Stop the background work (change feed, delivery worker, clock), so what is counted
    is the request's own commands."""
    tasks = [t for t in (gh.resolver.feed.task, gh.queue.task) if t is not None]
    gh.resolver.stop()
    gh.queue.stop()
    if gh.db_clock is not None:
        gh.db_clock.stop()
    await asyncio.gather(*tasks, return_exceptions=True)


def bearer(token: str) -> str:
    return "Bearer " + token


# ---- invalid tokens -------------------------------------------------------------------

BUDGET = 40
FLOOD = {"trust_proxy": 1, "invalid_tokens_per_minute": BUDGET}


def from_ip(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


def without_counters(seen: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The operation's own commands, less the dashboard's counters (`stats`), which the
    tests pin separately."""
    return [c for c in seen if c[1] != "stats"]


@pytest.mark.parametrize("settings", [FLOOD])
async def test_a_flood_of_random_tokens_costs_one_read_each_then_nothing(api, gatehouse):
    user = await register(api)
    token = await login(api, user)
    assert (await api.get("/auth/me", token=token, headers=from_ip("203.0.113.9"))).status == 200
    await quiet(gatehouse)
    statuses = []
    with gatehouse.commands.counting() as seen:
        for _ in range(200):
            r = await api.get("/auth/me", token=secrets.token_urlsafe(32), headers=from_ip("203.0.113.9"))
            statuses.append(r.status)
    # One indexed find by token hash per token, until the address's budget is spent.
    assert seen == [("find", "sessions")] * BUDGET
    assert statuses == [403] * BUDGET + [429] * (200 - BUDGET)
    assert_error(r, 429, "RATE_LIMITED")
    assert 1 <= int(r.headers["Retry-After"]) <= 61
    # Another /64 of IPv6 or another address is unaffected; the same /64 is not.
    r = await api.get("/auth/me", token=secrets.token_urlsafe(32), headers=from_ip("203.0.113.10"))
    assert r.status == 403
    # The throttled address's valid tokens still work: a cached one, and a JWT (its
    # signature proves it ours, so it gets its one read by sid).
    assert (await api.get("/auth/me", token=token, headers=from_ip("203.0.113.9"))).status == 200
    pair = (await api.post("/auth/token", {"username": user["username"], "password": PASSWORD})).data["data"]
    r = await api.get("/auth/me", token=bearer(pair["access_token"]), headers=from_ip("203.0.113.9"))
    assert r.status == 200
    # The drf style answers its own envelope.
    r = await api.get("/api/auth/users/", token=bearer(secrets.token_urlsafe(32)), headers=from_ip("203.0.113.9"))
    assert r.status == 429 and "detail" in r.data


@pytest.mark.parametrize("settings", [FLOOD])
async def test_ipv6_addresses_share_their_64s_budget(api, gatehouse):
    for i in range(BUDGET):
        r = await api.get("/auth/me", token=secrets.token_urlsafe(32), headers=from_ip(f"2001:db8:1:2::{i + 1:x}"))
        assert r.status == 403
    r = await api.get("/auth/me", token=secrets.token_urlsafe(32), headers=from_ip("2001:db8:1:2:ffff::1"))
    assert r.status == 429
    r = await api.get("/auth/me", token=secrets.token_urlsafe(32), headers=from_ip("2001:db8:1:3::1"))
    assert r.status == 403


@pytest.mark.parametrize("settings", [FLOOD])
async def test_revoked_and_forged_tokens_cost_nothing_after_the_first_read(api, gatehouse):
    user = await register(api)
    opaque = await login(api, user)
    pair = (await api.post("/auth/token", {"username": user["username"], "password": PASSWORD})).data["data"]
    access = bearer(pair["access_token"])
    assert (await api.post("/auth/logout", token=opaque)).status == 200
    assert (await api.post("/auth/logout", token=access)).status == 200
    forged = access[:-4] + ("AAAA" if not access.endswith("AAAA") else "BBBB")
    await quiet(gatehouse)
    with gatehouse.commands.counting() as seen:
        for _ in range(150):
            for token in (opaque, access, forged):
                r = await api.get("/auth/me", token=token, headers=from_ip("198.51.100.7"))
                assert r.status == 403, r.data
    # One read each for the two revoked sessions (then remembered), none for a forgery;
    # and a client with a stale token is never throttled for it.
    assert sorted(seen) == [("find", "sessions"), ("find", "sessions")]
    # Remembered misses are not counted against the address.
    r = await api.get("/auth/me", token=secrets.token_urlsafe(32), headers=from_ip("198.51.100.7"))
    assert r.status == 403


@pytest.mark.parametrize("settings", [FLOOD])
async def test_an_expired_session_costs_one_read_then_nothing(api, gatehouse, clock):
    """A client that keeps polling with a token whose session expired (idle): one read
    finds it expired, then it is remembered (an hour): no more reads, and the polls
    never count against the address, so its next good token works."""
    opaque = await login(api, await register(api))
    clock.advance(gatehouse.config.sessions.session_idle_seconds + 1)
    await quiet(gatehouse)
    with gatehouse.commands.counting() as seen:
        for _ in range(BUDGET + 10):
            assert (await api.get("/auth/me", token=opaque, headers=from_ip("198.51.100.8"))).status == 403
    assert without_counters(seen) == [("find", "sessions")], seen
    fresh = await login(api, await register(api))
    assert (await api.get("/auth/me", token=fresh, headers=from_ip("198.51.100.8"))).status == 200


def test_remembered_revocations_expire_with_their_session(clock):
    dead = DeadKeys(100, clock)
    dead.add("tok:x", clock() + timedelta(seconds=30))
    assert "tok:x" in dead
    clock.advance(31)
    assert "tok:x" not in dead and not dead.keys
    dead.add("tok:past", clock() - timedelta(seconds=1))
    assert "tok:past" not in dead
    for i in range(dead.size + 5):
        dead.add(f"tok:{i}", clock() + timedelta(hours=1))
    assert len(dead.keys) == dead.size and "tok:0" not in dead and f"tok:{dead.size + 4}" in dead


def test_the_miss_budget_is_windowed_and_bounded():
    now = [60.0]
    budget = MissBudget(2, size=3, monotonic=lambda: now[0])
    budget.count("a")
    assert not budget.exhausted("a")
    budget.count("a")
    assert budget.exhausted("a") == 61
    now[0] = 119.5
    assert budget.exhausted("a") == 1
    now[0] = 120.0  # a new window: counts start again
    assert not budget.exhausted("a")
    for client in "abcde":
        budget.count(client)
        budget.count(client)
    assert len(budget.counts) == 3  # new addresses past the bound are not tracked
    assert budget.exhausted("a") and not budget.exhausted("e")


# ---- round trips per operation ----------------------------------------------------------


async def test_jwt_refresh_round_trips(api, gatehouse):
    user = await register(api)
    pair = (await api.post("/auth/token", {"username": user["username"], "password": PASSWORD})).data["data"]
    await quiet(gatehouse)
    with gatehouse.commands.counting() as seen:
        r = await api.post("/auth/token/refresh", {"refresh_token": pair["refresh_token"]})
    assert r.status == 200, r.data
    # Was 6: session, refresh record and account read one after the other, the
    # successor inserted, the old record retired, the event.
    assert seen == [("aggregate", "sessions"), ("update", "refresh_tokens"), ("insert", "events")]
    # The drf style does not rotate: the record is read instead of retired.
    r = await api.post("/api/auth/login/", {"username": user["phone"], "password": PASSWORD})
    with gatehouse.commands.counting() as seen:
        r = await api.post("/api/auth/refresh/", {"refresh": r.data["refresh"]})
    assert r.status == 200, r.data
    assert seen == [("aggregate", "sessions"), ("find", "refresh_tokens"), ("insert", "events")]


async def test_a_refresh_that_is_activity_writes_last_active_too(api, gatehouse, clock):
    user = await register(api)
    pair = (await api.post("/auth/token", {"username": user["username"], "password": PASSWORD})).data["data"]
    await quiet(gatehouse)
    clock.advance(gatehouse.config.sessions.last_active_resolution + 1)
    with gatehouse.commands.counting() as seen:
        r = await api.post("/auth/token/refresh", {"refresh_token": pair["refresh_token"]})
    assert r.status == 200, r.data
    # The lastActive write (and, when it moves the session's expiry into another hour,
    # a counter update: not counted here, so an hour boundary cannot fail the test).
    assert ("findAndModify", "sessions") in seen and len(without_counters(seen)) == 4, seen


async def test_reset_completion_round_trips(sinks, api, gatehouse):
    user = await register(api)
    await api.post("/auth/reset", {"username": user["username"]})
    code = await sinks.code_for(user["email"])
    await quiet(gatehouse)
    with gatehouse.commands.counting() as seen:
        r = await api.post("/auth/reset", {"username": user["username"], "password": "Brand-new-pass-7", "code": code})
    assert r.status == 200, r.data
    # Was 20: the slots given back and the cooldown ended one command each (now one).
    # 19 since issue 20: the reset proves the e-mail, a takeover, which deletes the
    # squatter's second factors (the account's own `mfa` is cleared in the same write);
    # 20 since issue 21: its passkeys are deleted before its sessions end, the rest after.
    assert ("update", "stats") not in seen, seen  # no live session ended: no counter moves
    assert len(without_counters(seen)) == 20, seen
    assert seen[-3:] == [("findAndModify", "codes"), ("update", "limits"), ("delete", "codes")]


async def test_code_login_round_trips(sinks, api, gatehouse):
    from tests.test_codes import verified_phone_user

    user = await verified_phone_user(api, sinks)
    sinks.messages.clear()
    await api.post("/auth/otp", {"phone": user["phone"], "purpose": "login"})
    code = await sinks.code_for(user["phone"])
    await quiet(gatehouse)
    with gatehouse.commands.counting() as seen:
        r = await api.post("/auth/otp/verify", {"phone": user["phone"], "code": code, "purpose": "login"})
    assert r.status == 200, r.data
    # Was 13 (8 of them the code's): the slots given back and the cooldown ended in one
    # command instead of three.
    code_part = [c for c in seen if c[1] in ("limits", "codes")]
    assert code_part == [
        ("findAndModify", "limits"),  # the login slot of this address
        ("findAndModify", "limits"),  # a slot under the wrong-code cap of this address ...
        ("findAndModify", "limits"),  # ... and of this destination, before any comparison
        ("findAndModify", "codes"),  # an attempt taken on the code
        ("findAndModify", "codes"),  # the code spent
        ("update", "limits"),  # the slots back, the cooldown ended
    ]
    # Beside them, the dashboard's counters: one command for the new session's expiry
    # hour, one for the login's hourly bucket (models/stats.py).
    assert seen.count(("update", "stats")) == 2, seen
    assert len(without_counters(seen)) == 11, seen


async def test_phone_login_verify_round_trips(sinks, api, gatehouse):
    from tests.test_styles import phone_user

    phone, _ = await phone_user(api, sinks)
    sinks.messages.clear()
    uid = (await api.post("/auth/api/login/", {"phone": phone})).data["user_id"]
    code = await sinks.code_for(phone)
    await quiet(gatehouse)
    with gatehouse.commands.counting() as seen:
        r = await api.post("/auth/api/login/verify/", {"code": code, "user_id": uid})
    assert r.status == 200, r.data
    # Was 16: the code was read (`find`) before the attempt that reads it anyway.
    assert seen.count(("update", "stats")) == 2, seen  # the session's expiry hour, the login's hour
    assert ("find", "codes") not in seen and len(without_counters(seen)) == 15, seen
    # No pending code: still "log in first", and the wrong-code caps are not charged.
    r = await api.post("/auth/api/login/verify/", {"code": code, "user_id": uid})
    assert r.status == 400 and r.data == {"error": "login first"}, r.data
    ip_slots = await gatehouse.db.limits.find({"_id": {"$regex": "^code_fail_"}}).to_list()
    assert all(doc["n"] == 0 for doc in ip_slots), ip_slots
