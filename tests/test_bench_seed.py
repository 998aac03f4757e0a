"""The scale benchmark's bulk documents (bench/seed.py) are ones the server accepts: a
small seed through the same functions, then an admin list, an account page, the events
page and a login of a seeded account all work. The benchmark itself is too slow for CI;
this keeps its shapes from drifting silently."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from bench import seed
from tests.conftest import PASSWORD, login, register


async def templates(api, gatehouse) -> tuple[dict, dict, dict]:
    user = await register(api)
    await login(api, user)
    db = gatehouse.db
    account = await db.accounts.find_one({"id": user["id"]})
    session = await db.sessions.find_one({"account_id": user["id"], "kind": "opaque"})
    event = await db.events.find_one({"account_id": user["id"], "type": "login_ok"})
    return account, session, event


async def test_seeded_documents_are_listed_and_log_in(api, gatehouse, admin):
    account, session, event = await templates(api, gatehouse)
    db, rng, now = gatehouse.db, random.Random(1), datetime.now(UTC)
    first = (await db.counters.find_one_and_update({"_id": "accounts"}, {"$inc": {"seq": 200}}))["seq"] + 1
    ids = list(range(first, first + 200))
    for batch in seed.batches(seed.accounts(account, first, 200, "seedsmoke"), 64):
        await db.accounts.insert_many(batch, ordered=False)
    owners = list(seed.session_owners(ids, 500, rng))
    for batch in seed.batches(seed.sessions(session, iter(owners), now, rng), 128):
        await db.sessions.insert_many(batch, ordered=False)
    for batch in seed.batches(seed.events(event, ids, 1000, now, rng), 256):
        await db.events.insert_many(batch, ordered=False)
    token = "Bearer " + admin["token"]

    r = await api.get("/admin/api/sessions?limit=200", token=token)
    assert r.status == 200 and len(r.data["sessions"]) == 200 and r.data["next"]
    assert {s["kind"] for s in r.data["sessions"]} == {"opaque", "jwt"}
    busy = max(set(owners), key=owners.count)
    r = await api.get(f"/admin/api/accounts/{busy}", token=token)
    assert r.status == 200 and len(r.data["sessions"]) > 1 and r.data["events"] is not None
    r = await api.get("/admin/api/events?type=login_failed", token=token)
    assert r.status == 200 and r.data["events"] and r.data["next"]
    r = await api.get("/admin/api/accounts?q=seedsmoke1", token=token)
    assert r.status == 200 and r.data["count"] == 111  # seedsmoke1, 10-19, 100-199
    assert await login(api, {"username": "seedsmoke7", "password": PASSWORD})
