"""The per-process session cache: zero staleness for what this process ends, a 1 s
bound for what another process ends, and a bounded size."""

from __future__ import annotations

import pytest

from tests.conftest import PASSWORD, login, register


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def monotonic(gatehouse) -> FakeMonotonic:
    clock = FakeMonotonic()
    gatehouse.sessions.cache.monotonic = clock
    return clock


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


async def test_another_process_s_kick_is_seen_within_the_ttl(api, gatehouse, monotonic):
    user = await register(api)
    token = await login(api, user)
    assert (await api.get("/auth/me", token=token)).status == 200
    # Another process revokes it: only MongoDB changes, this process's cache does not know.
    await gatehouse.db.sessions.update_many({"account_id": user["id"]}, {"$set": {"revoked_at": gatehouse.clock()}})
    monotonic.now += 0.5
    assert (await api.get("/auth/me", token=token)).status == 200  # within the bound: still cached
    monotonic.now += 0.5
    assert (await api.get("/auth/me", token=token)).status == 403  # 1 s later: read again, refused


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


@pytest.mark.parametrize("settings", [{"session_cache_size": 3}])
async def test_the_cache_is_bounded(settings, api, gatehouse):
    user = await register(api)
    for _ in range(6):
        assert (await api.get("/auth/me", token=await login(api, user))).status == 200
    assert len(gatehouse.sessions.cache.entries) == 3


@pytest.mark.parametrize("settings", [{"session_cache_ms": 0}])
async def test_a_zero_ttl_turns_the_cache_off(settings, api, gatehouse):
    user = await register(api)
    token = await login(api, user)
    assert (await api.get("/auth/me", token=token)).status == 200
    assert len(gatehouse.sessions.cache.entries) == 0
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
