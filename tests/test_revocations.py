"""The revocation feed (issue 19): `GET /auth/revocations` tells the apps' back ends,
within about a second, which sessions ended and which accounts changed, from a cursor,
each change in exactly one page."""

from __future__ import annotations

import asyncio
import time

import pytest

import models.revocations
from tests.conftest import login, register
from tests.test_oauth import KEYS, SERVICE_KEY, basic

pytestmark = pytest.mark.parametrize("settings", [KEYS])
BEARER = {"Authorization": "Bearer " + SERVICE_KEY}


async def feed(api, since: str | None = None, wait: int = 0, **headers: str):
    query = "&".join(f"{k}={v}" for k, v in (("since", since), ("wait", wait)) if v)
    return await api.get("/auth/revocations" + ("?" + query if query else ""), headers=headers or BEARER)


async def collect(api, cursor: str, until_sids: set[str], seconds: float = 8.0) -> tuple[list[dict], str]:
    """Every session entry from `cursor` on until `until_sids` have all come (or time is up)."""
    entries: list[dict] = []
    deadline = time.monotonic() + seconds
    while not until_sids <= {e["sid"] for e in entries} and time.monotonic() < deadline:
        r = await feed(api, cursor, wait=2)
        assert r.status == 200, r.data
        entries += r.data["sessions"]
        cursor = r.data["cursor"]
    return entries, cursor


async def test_a_feed_starts_from_now_and_needs_a_service_key(api, settings):
    user = await register(api)
    await api.post("/auth/logout", token=await login(api, user))  # before the subscriber came
    r = await feed(api)
    assert r.status == 200 and r.data["sessions"] == [] and r.data["accounts"] == [] and r.data["more"] is False
    assert r.data["cursor"].startswith("r1.")
    for headers in ({"Authorization": "Bearer wrong-key-000000000000000000"}, {"Authorization": basic("nope")}):
        r = await feed(api, **headers)
        assert r.status == 401 and r.data["error"] == "invalid_client"
        assert r.headers["WWW-Authenticate"].startswith('Bearer realm="gatehouse"')
    r = await api.get("/auth/revocations", token=await login(api, user))  # a user's token is no service key
    assert r.status == 401
    r = await feed(api, **{"Authorization": basic(SERVICE_KEY)})
    assert r.status == 200


async def test_a_logout_and_a_kick_arrive_once(api, settings):
    cursor = (await feed(api)).data["cursor"]
    user, other = await register(api), await register(api)
    logged_out, kicked = await login(api, user), await login(api, other)
    sid_out = (await api.get("/auth/me", token=logged_out)).data["data"]["session"]
    sid_kicked = (await api.get("/auth/me", token=kicked)).data["data"]["session"]
    await api.post("/auth/logout", token=logged_out)
    r = await api.delete(f"/admin/api/sessions/{sid_kicked}", headers=BEARER)
    assert r.status == 200, r.data
    entries, cursor = await collect(api, cursor, {sid_out, sid_kicked})
    assert sorted(e["sid"] for e in entries) == sorted([sid_out, sid_kicked])  # each once
    assert {e["sid"]: e["account_id"] for e in entries} == {sid_out: user["id"], sid_kicked: other["id"]}
    r = await feed(api, cursor)
    assert r.status == 200 and r.data["sessions"] == []  # nothing twice


async def test_a_held_request_learns_of_a_kick_within_about_a_second(api, settings):
    user = await register(api)
    token = await login(api, user)
    sid = (await api.get("/auth/me", token=token)).data["data"]["session"]
    cursor = (await feed(api)).data["cursor"]
    await asyncio.sleep(0.6)  # the cursor's instant has settled: the held request sees nothing yet
    held = asyncio.ensure_future(feed(api, cursor, wait=10))
    await asyncio.sleep(1.0)
    assert not held.done()  # held: nothing new
    kicked_at = time.monotonic()
    await api.post("/auth/logout", token=token)
    r = await held
    elapsed = time.monotonic() - kicked_at
    assert r.status == 200 and [e["sid"] for e in r.data["sessions"]] == [sid], r.data
    assert elapsed < 2.5, elapsed  # SETTLE (0.5 s) plus one look (0.25 s), with room for a noisy machine


async def test_a_disabled_account_is_in_the_feed(api, settings):
    cursor = (await feed(api)).data["cursor"]
    user = await register(api)
    assert (await api.post(f"/admin/api/accounts/{user['id']}/disable", headers=BEARER)).status == 200
    seen: list[dict] = []
    for _ in range(8):
        r = await feed(api, cursor, wait=2)
        seen += r.data["accounts"]
        cursor = r.data["cursor"]
        if any(a["account_id"] == user["id"] and a["disabled"] for a in seen):
            break
    [entry] = [a for a in seen if a["account_id"] == user["id"] and a["disabled"]]
    assert entry["uid"] and isinstance(entry["at"], float)


async def test_pages_are_bounded_and_every_change_comes_exactly_once(api, settings, monkeypatch):
    monkeypatch.setattr(models.revocations, "PAGE", 3)
    cursor = (await feed(api)).data["cursor"]
    user = await register(api)
    tokens = [await login(api, user) for _ in range(8)]
    sids = {(await api.get("/auth/me", token=t)).data["data"]["session"] for t in tokens}
    for token in tokens[:3]:
        await api.post("/auth/logout", token=token)
    r = await api.post(f"/admin/api/accounts/{user['id']}/kick", headers=BEARER)  # the other five at once
    assert r.data["kicked"] == 5
    pages, entries = 0, []
    while not sids <= {e["sid"] for e in entries} and pages < 40:
        r = await feed(api, cursor, wait=2)
        pages += 1
        entries += r.data["sessions"]
        assert len(r.data["sessions"]) <= 3 or r.data["more"]  # a full page beyond 3: one millisecond's
        cursor = r.data["cursor"]
    assert sorted(e["sid"] for e in entries) == sorted(sids)


BAD = ["since=x", "since=r1.abc", "since=r1.99999999999999999", "since=r1.99999999999999", "wait=26", "wait=-1"]


@pytest.mark.parametrize("query", BAD)
async def test_bad_queries_are_400s(api, settings, query):
    r = await api.get("/auth/revocations?" + query, headers=BEARER)
    assert r.status == 400 and r.data["error"] == "invalid_request", r.data


async def test_twenty_parallel_kicks_each_come_exactly_once(api, settings):
    """Twenty sessions kicked at once, by logout and by the admin API in parallel (so
    their stamps crowd the same milliseconds): the feed gives each exactly once."""
    cursor = (await feed(api)).data["cursor"]
    user = await register(api)
    tokens = [await login(api, user) for _ in range(20)]
    sids = [(await api.get("/auth/me", token=t)).data["data"]["session"] for t in tokens]
    await asyncio.gather(
        *(api.post("/auth/logout", token=t) for t in tokens[:10]),
        *(api.delete(f"/admin/api/sessions/{sid}", headers=BEARER) for sid in sids[10:]),
    )
    entries, _ = await collect(api, cursor, set(sids))
    assert sorted(e["sid"] for e in entries) == sorted(sids)
