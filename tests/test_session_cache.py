"""The per-process session cache: zero staleness for what this process ends, a 1 s
bound for what another process ends, and a bounded size."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from models.accounts import Accounts
from models.common import utcnow
from models.session_cache import SessionCache
from models.sessions import Sessions
from models.values import Account, Caller, Session
from tests.conftest import PASSWORD, login, register


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def monotonic(gatehouse) -> FakeMonotonic:
    """Cache time under the test's control; the change feed then looks only when the
    test calls `gatehouse.resolver.feed.poll()`."""
    task = gatehouse.resolver.feed.task
    gatehouse.resolver.feed.stop()
    if task is not None:
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)
    clock = FakeMonotonic()
    gatehouse.resolver.cache.monotonic = clock
    gatehouse.resolver.cache.confirmed = float("-inf")  # a look made on real time before
    return clock


def another_process(gatehouse) -> Sessions:
    """The same database through a store that tells no cache of ours: another process."""
    return Sessions(gatehouse.db, gatehouse.clock, gatehouse.config.sessions.last_active_resolution)


def another_process_accounts(gatehouse) -> Accounts:
    return Accounts(gatehouse.db, gatehouse.hasher, gatehouse.clock, gatehouse.config.phone_region)


async def test_what_this_process_ends_is_refused_at_once_even_when_cached(api, admin, monotonic):
    user = await register(api)
    tokens = [await login(api, user) for _ in range(4)]
    pair = (await api.post("/auth/token", {"username": user["username"], "password": PASSWORD})).data["data"]
    jwt = "Bearer " + pair["access_token"]
    for t in [*tokens, jwt]:
        assert (await api.get("/auth/me", token=t)).status == 200  # now cached
    me = (await api.get("/auth/me", token=tokens[0])).data["data"]["session"]
    await api.delete(f"/admin/api/sessions/{me}", token=admin["token"])
    assert (await api.get("/auth/me", token=tokens[0])).status == 403
    await api.post("/auth/logout", token=tokens[1])
    assert (await api.get("/auth/me", token=tokens[1])).status == 403
    await api.post("/auth/password", {"password": PASSWORD, "new_password": "Changed-pass-word-7"}, token=tokens[2])
    assert (await api.get("/auth/me", token=tokens[3])).status == 403
    assert (await api.get("/auth/me", token=jwt)).status == 403
    assert (await api.get("/auth/me", token=tokens[2])).status == 200  # the session that changed it stays
    await api.post(f"/admin/api/accounts/{user['id']}/disable", token=admin["token"])
    assert (await api.get("/auth/me", token=tokens[2])).status == 403


async def test_another_process_s_kick_is_seen_at_the_next_look_of_the_change_feed(api, gatehouse, monotonic):
    user = await register(api)
    tokens = [await login(api, user) for _ in range(2)]
    for t in tokens:
        assert (await api.get("/auth/me", token=t)).status == 200  # cached
    me = (await api.get("/auth/me", token=tokens[0])).data["data"]["session"]
    await another_process(gatehouse).revoke(me, "kicked")
    assert (await api.get("/auth/me", token=tokens[0])).status == 200  # not looked yet
    assert await gatehouse.resolver.feed.poll() == 1
    assert (await api.get("/auth/me", token=tokens[0])).status == 403
    assert (await api.get("/auth/me", token=tokens[1])).status == 200  # the other session is untouched
    assert await gatehouse.resolver.feed.poll() == 0  # seen once, not dropped again
    # An account change made elsewhere (a disable) reaches every session of the account.
    await another_process_accounts(gatehouse).set_disabled(user["id"], True)
    assert (await api.get("/auth/me", token=tokens[1])).status == 200
    await gatehouse.resolver.feed.poll()
    assert (await api.get("/auth/me", token=tokens[1])).status == 403


async def test_without_a_successful_look_entries_expire_after_the_ttl(api, gatehouse, monotonic):
    user = await register(api)
    token = await login(api, user)
    await gatehouse.resolver.feed.poll()
    assert (await api.get("/auth/me", token=token)).status == 200
    # Another process revokes it, and this process cannot look (say MongoDB is slow).
    await gatehouse.db.sessions.update_many({"account_id": user["id"]}, {"$set": {"revoked_at": gatehouse.clock()}})
    monotonic.now += 0.75
    assert (await api.get("/auth/me", token=token)).status == 200  # within the bound: still cached
    monotonic.now += 0.25
    assert (await api.get("/auth/me", token=token)).status == 403  # 1 s since anything was confirmed
    # A look keeps an entry valid past the ttl of its own read.
    token = await login(api, user)
    assert (await api.get("/auth/me", token=token)).status == 200
    for _ in range(3):
        monotonic.now += 0.5
        await gatehouse.resolver.feed.poll()
    await gatehouse.db.accounts.update_one({"id": user["id"]}, {"$set": {"nickname": "behind its back"}})
    assert (await api.get("/auth/me", token=token)).data["data"]["account"]["nickname"] == ""


async def test_a_session_kept_alive_by_another_process_is_not_refused(api, gatehouse, monotonic, clock):
    user = await register(api)
    token = await login(api, user)
    assert (await api.get("/auth/me", token=token)).status == 200
    session = (await api.get("/auth/me", token=token)).data["data"]["session"]
    # Another process saw this session in use and pushed its idle deadline on.
    await gatehouse.db.sessions.update_one({"_id": session}, {"$set": {"expires_at": clock() + timedelta(days=9)}})
    clock.advance(gatehouse.config.sessions.session_idle_seconds + 1)  # this process's copy says: expired
    await gatehouse.resolver.feed.poll()
    assert (await api.get("/auth/me", token=token)).status == 200


async def test_a_cached_request_reads_nothing_from_mongodb(api, gatehouse, monotonic):
    user = await register(api)
    token = await login(api, user)
    assert (await api.get("/auth/me", token=token)).status == 200
    # Remove the documents behind the cache's back: the cached answer still comes, which
    # only happens when no read was made.
    await gatehouse.db.accounts.update_one({"id": user["id"]}, {"$set": {"nickname": "changed"}})
    r = await api.get("/auth/me", token=token)
    assert r.status == 200 and r.data["data"]["account"]["nickname"] == ""
    monotonic.now += 1.0
    assert (await api.get("/auth/me", token=token)).data["data"]["account"]["nickname"] == "changed"


async def test_a_token_in_use_is_read_again_in_the_background_before_it_expires(api, gatehouse, monotonic):
    user = await register(api)
    token = await login(api, user)
    assert (await api.get("/auth/me", token=token)).status == 200
    await gatehouse.db.accounts.update_one({"id": user["id"]}, {"$set": {"nickname": "changed"}})
    monotonic.now += 0.875  # near the bound: answered from the cache, read again behind it
    r = await api.get("/auth/me", token=token)
    assert r.data["data"]["account"]["nickname"] == ""
    await asyncio.gather(*gatehouse.resolver.cache.tasks)
    r = await api.get("/auth/me", token=token)
    assert r.data["data"]["account"]["nickname"] == "changed"
    # The entry is as old as that re-read, so the 1 s bound holds from it, not from the first.
    monotonic.now += 0.875
    await gatehouse.db.sessions.update_many({"account_id": user["id"]}, {"$set": {"revoked_at": gatehouse.clock()}})
    await gatehouse.db.accounts.update_one({"id": user["id"]}, {"$set": {"nickname": "again"}})
    assert (await api.get("/auth/me", token=token)).data["data"]["account"]["nickname"] == "changed"
    await asyncio.gather(*gatehouse.resolver.cache.tasks)  # the background re-read sees the revocation
    assert (await api.get("/auth/me", token=token)).status == 403


class Loader:
    """A stand-in for the database read (the cache's own contract, not our storage): it
    counts calls and answers when released."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def __call__(self) -> Caller | None:
        self.calls += 1
        n = self.calls
        await self.release.wait()
        now = utcnow()
        session = Session("s1", 7, "opaque", "native", now, now, 60, now, now, user_agent=f"read {n}")
        return Caller(Account(7, "uid-7"), session)


async def settle() -> None:
    """Let the tasks just started reach their first wait."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_requests_without_an_entry_share_one_read():
    cache, load = SessionCache(1000, 10), Loader()
    waiting = [asyncio.ensure_future(cache.lookup("k", load)) for _ in range(20)]
    await settle()
    load.release.set()
    answers = await asyncio.gather(*waiting)
    assert load.calls == 1 and all(a == answers[0] for a in answers)
    assert await cache.lookup("k", load) == answers[0] and load.calls == 1


async def test_a_read_under_way_when_a_session_ends_is_not_stored_or_joined():
    cache, load = SessionCache(1000, 10), Loader()
    before = asyncio.ensure_future(cache.lookup("k", load))
    await settle()
    cache.forget(session_id="s1")  # a kick lands while that read is in flight
    after = asyncio.ensure_future(cache.lookup("k", load))
    await settle()
    assert load.calls == 2  # the later request did not join the older read
    load.release.set()
    assert (await before).session.user_agent == "read 1" and (await after).session.user_agent == "read 2"
    assert cache.entries["k"][1].session.user_agent == "read 2"  # only the read that started after the kick is kept


async def test_a_failed_read_reaches_every_waiter_and_stores_nothing():
    cache = SessionCache(1000, 10)

    async def down() -> None:
        await settle()
        raise ConnectionError("database down")

    waiting = [asyncio.ensure_future(cache.lookup("k", down)) for _ in range(3)]
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert not cache.entries and not cache.reading


@pytest.mark.parametrize("settings", [{"session_cache_size": 3}])
async def test_the_cache_is_bounded(settings, api, gatehouse):
    user = await register(api)
    for _ in range(6):
        assert (await api.get("/auth/me", token=await login(api, user))).status == 200
    assert len(gatehouse.resolver.cache.entries) == 3


@pytest.mark.parametrize("settings", [{"session_cache_ms": 0}])
async def test_a_zero_ttl_turns_the_cache_off(settings, api, gatehouse):
    user = await register(api)
    token = await login(api, user)
    assert (await api.get("/auth/me", token=token)).status == 200
    assert len(gatehouse.resolver.cache.entries) == 0
    await gatehouse.db.sessions.update_many({"account_id": user["id"]}, {"$set": {"revoked_at": gatehouse.clock()}})
    assert (await api.get("/auth/me", token=token)).status == 403


@pytest.mark.parametrize("settings", [{"jwt_leeway": 0}])
async def test_a_remembered_jwt_still_expires_on_time(settings, api, gatehouse):
    import asyncio
    import time

    import jwt as pyjwt

    user = await register(api)
    pair = (await api.post("/auth/token", {"username": user["username"], "password": PASSWORD})).data["data"]
    claims = pyjwt.decode(pair["access_token"], options={"verify_signature": False})
    key = gatehouse.tokens.keys.signing
    short = pyjwt.encode(
        {**claims, "exp": int(time.time()) + 2}, key.signing_key, algorithm=key.alg, headers={"kid": key.kid}
    )
    assert (await api.get("/auth/me", token="Bearer " + short)).status == 200  # verified and remembered
    assert short in gatehouse.tokens._verified
    await asyncio.sleep(3.1)
    assert (await api.get("/auth/me", token="Bearer " + short)).status == 403
    assert short not in gatehouse.tokens._verified
