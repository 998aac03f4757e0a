"""Every admin list query is a bounded range of the index meant for it, and the
dashboard's figures come from counters, not from counting collections.

The stores run on a client that records the commands they send; each recorded `find`
is then explained (executionStats) on the same database, with thousands of documents
seeded outside the page's range: the plan must be an IXSCAN of the intended index, and
the keys it examines bounded by the page plus a small constant. (On the embedded
database keys examined are all keys in the filter's range, limit or not: exactly what
this bounds.)"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient, monitoring

from app import Clients
from models.accounts import Accounts
from models.events import EventLog
from models.sessions import Sessions
from models.stats import RECOUNTED, Stats
from tests.conftest import failpoint, login, register

PAGE = 20
SLACK = 15  # the page's look-ahead and the recent documents of other kinds
OLD = 3000  # seeded outside every first range
LIFETIME = timedelta(days=30)


class Finds(monitoring.CommandListener):
    def __init__(self) -> None:
        self.finds: list[dict] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in ("find", "aggregate"):
            self.finds.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
async def recorded(mongo_uri, gatehouse):
    finds = Finds()
    client = AsyncMongoClient(mongo_uri, tz_aware=True, event_listeners=[finds])
    yield client[gatehouse.db.name], finds
    await client.close()


def ixscan(plan: dict) -> dict | None:
    if plan.get("stage") == "IXSCAN":
        return plan
    inner = plan.get("inputStage")
    return ixscan(inner) if inner else None


def stages(plan: dict) -> list[str]:
    inner = plan.get("inputStage")
    return [plan.get("stage", "")] + (stages(inner) if inner else [])


async def assert_bounded(db, finds: Finds, index: str | tuple[str, ...], most: int = PAGE + SLACK) -> None:
    """Every recorded find is an IXSCAN of `index` (or one of them) examining at most
    `most` keys."""
    assert finds.finds, "no query recorded"
    for find in finds.finds:
        names = ("find", "filter", "sort", "projection", "limit", "aggregate", "pipeline", "cursor")
        command = {k: v for k, v in find.items() if k in names}
        explained = await db.command({"explain": command, "verbosity": "executionStats"})
        if "stages" in explained:  # an aggregate: its first $match's plan
            explained = {**explained, **explained["stages"][0]["$cursor"]}
        plan = explained["queryPlanner"]["winningPlan"]
        scan = ixscan(plan)
        allowed = index if isinstance(index, tuple) else (index,)
        assert scan is not None and scan["indexName"] in allowed, (command, plan)
        assert explained["executionStats"]["totalKeysExamined"] <= most, (command, explained["executionStats"])
        if explained.get("serverInfo", {}).get("host") != "secantus":
            # mongod: the index order is the sort. (The embedded database reports a SORT
            # for any two-key sort; there it sorts the bounded range bounded above.)
            assert "SORT" not in stages(plan), plan
    finds.finds.clear()


def session_doc(account_id: int, kind: str, last_active: datetime, now: datetime) -> dict[str, Any]:
    return {
        "_id": uuid.uuid4().hex,
        "account_id": account_id,
        "kind": kind,
        "style": "native",
        "created": last_active,
        "last_active": last_active,
        "idle_seconds": 7 * 86400,
        "absolute_expires_at": now + LIFETIME,
        "expires_at": now + timedelta(days=7),
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0",
        "revoked_at": None,
        "cred_epoch": 0,
        "token_hash": uuid.uuid4().hex * 2,
    }


async def test_session_lists_are_bounded_ranges(gatehouse, recorded):
    db, finds = recorded
    now = gatehouse.clock()
    old = [session_doc(1000 + i % 500, "jwt", now - timedelta(days=2, seconds=i), now) for i in range(OLD)]
    recent = [session_doc(9, ("opaque", "jwt")[i % 2], now - timedelta(seconds=10 * i), now) for i in range(PAGE + 5)]
    await gatehouse.db.sessions.insert_many(old + recent)
    sessions = Sessions(db, gatehouse.clock, 60, max_lifetime=LIFETIME, stats=Stats(db, LIFETIME))

    page = await sessions.listing(limit=PAGE + 1)
    assert [s.id for s in page] == [d["_id"] for d in recent[: PAGE + 1]]
    await assert_bounded(db, finds, "last_active_id")
    last = page[PAGE - 1]
    rest = await sessions.listing(after=(last.last_active, last.id), limit=PAGE + 1)
    assert [s.id for s in rest] == [d["_id"] for d in recent[PAGE:]] + [d["_id"] for d in old[: PAGE + 1 - 5]]
    await assert_bounded(db, finds, "last_active_id", most=OLD)  # reaching the old ones: 2 days back
    assert len(await sessions.listing(live_only=True, limit=PAGE + 1)) == PAGE + 1
    await assert_bounded(db, finds, "last_active_id")
    jwt = await sessions.listing(kind="jwt", limit=5)
    assert all(s.kind == "jwt" for s in jwt) and len(jwt) == 5
    await assert_bounded(db, finds, "kind_last_active")
    mine = await sessions.listing(account_id=9, limit=PAGE + 1)
    assert len(mine) == PAGE + 1
    await assert_bounded(db, finds, "account_last_active", most=len(recent))


async def test_the_second_slice_reads_only_what_the_first_did_not(gatehouse, recorded):
    db, finds = recorded
    now = gatehouse.clock()
    # Nothing in the last 40 minutes: the walk widens (10 s, then 4 times as far back
    # each time) to the slice that holds the page, and never reads the 3,000 sessions
    # of two days ago.
    hour_ago = [session_doc(5, "opaque", now - timedelta(minutes=50, seconds=i), now) for i in range(PAGE)]
    old = [session_doc(6, "opaque", now - timedelta(days=2, seconds=i), now) for i in range(OLD)]
    await gatehouse.db.sessions.insert_many(hour_ago + old)
    sessions = Sessions(db, gatehouse.clock, 60, max_lifetime=LIFETIME, stats=Stats(db, LIFETIME))
    assert len(await sessions.listing(limit=PAGE)) == PAGE
    await assert_bounded(db, finds, "last_active_id", most=PAGE)


async def test_event_pages_are_bounded_ranges(gatehouse, recorded):
    db, finds = recorded
    now = gatehouse.clock()

    def event(at: datetime, type: str, account_id: int) -> dict:
        return {
            "_id": ObjectId(),
            "type": type,
            "at": at,
            "expires_at": at + timedelta(days=90),
            "account_id": account_id,
        }

    old = [event(now - timedelta(days=3, seconds=i), "login_ok", 1000 + i % 300) for i in range(OLD)]
    recent = [event(now - timedelta(seconds=i), ("refresh", "login_failed")[i % 2], 7) for i in range(PAGE + 5)]
    await gatehouse.db.events.insert_many(old + recent)
    events = EventLog(db, gatehouse.clock, 90, stats=Stats(db, LIFETIME))

    page = await events.page(limit=PAGE)
    assert [e["_id"] for e in page] == [e["_id"] for e in recent[:PAGE]]
    await assert_bounded(db, finds, "at")
    failed = await events.page(type="login_failed", limit=5)
    assert [e["type"] for e in failed] == ["login_failed"] * 5
    await assert_bounded(db, finds, "type_at")
    assert len(await events.page(account_id=7, limit=PAGE)) == PAGE
    await assert_bounded(db, finds, "account_at")
    assert len(await events.page(after=(page[-1]["at"], page[-1]["_id"]), limit=5)) == 5
    await assert_bounded(db, finds, "at")


async def test_account_pages_are_bounded_ranges(gatehouse, recorded):
    db, finds = recorded
    now = gatehouse.clock()
    docs = [{"id": 10_000 + i, "uid": str(uuid.uuid4()), "username": f"user{i}", "created": now} for i in range(OLD)]
    for doc in docs:
        doc["username_key"] = doc["username"]
    docs += [{"id": 20_000 + i, "uid": str(uuid.uuid4()), "username": f"Zed{i}", "created": now} for i in range(5)]
    for doc in docs[OLD:]:
        doc["username_key"] = doc["username"].lower()
    await gatehouse.db.accounts.insert_many(docs)
    await gatehouse.db.counters.update_one({"_id": "accounts"}, {"$set": {"seq": 20_004}}, upsert=True)
    accounts = Accounts(db, gatehouse.hasher, gatehouse.clock, "US")

    deep = await accounts.search(page=520, limit=PAGE)  # ids 10,381 … 10,400
    assert [a.id for a in deep.accounts] == list(range(10_381, 10_401)) and deep.more
    finds.finds = [f for f in finds.finds if f["find"] == "accounts"]  # not the id counter's read
    await assert_bounded(db, finds, "id_unique", most=PAGE)
    found = await accounts.search(q="Zed")
    assert [a.username for a in found.accounts] == [f"Zed{i}" for i in range(5)] and found.count == 5
    # The prefix's range, then the page's accounts by id.
    await assert_bounded(db, finds, ("username_key_unique", "id_unique"), most=5)
    wide = await accounts.search(q="u", limit=PAGE)
    assert wide.count == 1000 and wide.capped and len(wide.accounts) == PAGE
    # A one-character prefix reads its second-letter slices in turn (`_prefix_slices`):
    # here all 3,000 names share "us", so one slice holds them all. mongod stops at the
    # limit (1,001); the embedded database walks the slice.
    await assert_bounded(db, finds, ("username_key_unique", "id_unique"), most=OLD)


async def test_the_live_count_reads_counters_and_one_hour_of_expiries(gatehouse, recorded):
    db, finds = recorded
    now = gatehouse.clock()
    later = [session_doc(3, "jwt", now - timedelta(minutes=5), now) for _ in range(OLD)]  # expire in 7 days
    soon = [{**session_doc(4, "jwt", now, now), "expires_at": now + timedelta(seconds=1)} for _ in range(3)]
    await gatehouse.db.sessions.insert_many(later + soon)
    sessions = Sessions(db, gatehouse.clock, 60, max_lifetime=LIFETIME, stats=Stats(db, LIFETIME))
    await sessions.count_live()  # seeded behind the counters' back: only the reads matter here
    sessions_reads = [f for f in finds.finds if f["aggregate"] == "sessions"]
    finds.finds = [f for f in finds.finds if f["aggregate"] == "stats"]
    await assert_bounded(db, finds, "series_hour")
    finds.finds = sessions_reads
    await assert_bounded(db, finds, "expires_ttl", most=len(soon))


async def test_the_dashboard_counts_as_things_happen(api, admin, gatehouse, clock):
    async def stats() -> dict:
        return await gatehouse.admin.dashboard()

    before = await stats()
    user = await register(api)
    token = await login(api, user)
    await login(api, user)
    await api.post("/auth/auth", {"username": user["username"], "password": "wrong-password-1"})
    now = await stats()
    assert now["active_sessions"] == before["active_sessions"] + 2
    assert now["active_accounts_24h"] == before["active_accounts_24h"] + 1
    assert now["logins_24h"] == before["logins_24h"] + 2
    assert now["failed_logins_24h"] == before["failed_logins_24h"] + 1
    assert (await api.post("/auth/logout", token=token)).status == 200
    assert (await stats())["active_sessions"] == before["active_sessions"] + 1
    kicked = await api.post(f"/admin/api/accounts/{user['id']}/kick", token=admin["token"])
    assert kicked.data == {"kicked": 1}
    assert (await stats())["active_sessions"] == before["active_sessions"]
    # Eight days on, every session has expired by its idle time (a week), and the
    # logins and the activity have left the 24 hours.
    clock.advance(8 * 86400)
    later = await stats()
    assert later["logins_24h"] == 0 and later["failed_logins_24h"] == 0
    assert later["active_sessions"] == 0 and later["active_accounts_24h"] == 0


# What the seeded data of the recount test amounts to.
RECOUNT_TRUTH = {
    "active_sessions": 302,
    "logins_24h": 70,
    "failed_logins_24h": 12,
    "mfa_24h": 5,
    "failed_mfa_24h": 3,
    "accounts": 3,
}


async def test_a_recount_sets_the_counters_from_the_data_and_twice_is_once(gatehouse, clock, mongo_uri, config):
    """Sessions and events the counters never saw (a restore, an import, data from
    before the counters): the first process to start on that database recounts them in
    the background (one process only: the marker), and `recount` sets the figures to
    the data however wrong the buckets were, the same when run again."""
    now = gatehouse.clock()
    ended = {**session_doc(9, "opaque", now, now), "revoked_at": now}
    soon = {**session_doc(8, "jwt", now, now), "expires_at": now + timedelta(hours=2)}
    live = [session_doc(10 + i % 40, "opaque", now - timedelta(minutes=i % 600), now) for i in range(300)]
    stale = session_doc(11, "opaque", now - timedelta(days=3), now)  # live, not active in the last day
    await gatehouse.db.sessions.insert_many([ended, soon, stale, *live])
    counted = [("login_ok", 70), ("login_failed", 12), ("mfa_verified", 5), ("mfa_failed", 3)]
    await gatehouse.db.events.insert_many(
        [
            {"_id": ObjectId(), "type": type, "at": now - timedelta(minutes=17 * i), "account_id": 5}
            for type, n in counted
            for i in range(n)
        ]
        + [{"_id": ObjectId(), "type": "login_ok", "at": now - timedelta(days=2), "account_id": 5}]
    )
    await gatehouse.db.accounts.insert_many([{"id": 9000 + i, "uid": f"imported-{i}"} for i in range(3)])
    truth = RECOUNT_TRUTH

    def figures(found: dict) -> dict:
        return {k: found[k] for k in truth}

    before = await gatehouse.admin.dashboard()  # seeded behind the counters' back
    assert figures(before) == {**dict.fromkeys(truth, 0), "accounts": 3}  # (no figure kept yet: the count)
    # A second process starting on this database (the first, `gatehouse`, found it
    # empty and set the marker): it has nothing to do.
    clients = Clients.connect(mongo_uri, config)
    second = clients.gatehouse(config, gatehouse.db.name, clock)
    await second.setup()
    assert second.recounting is None
    await second.aclose()
    # An old database: no marker. The next start recounts, once, in the background.
    await gatehouse.db.stats.delete_one({"_id": RECOUNTED})
    await gatehouse.db.stats.update_many({"series": "expiring"}, {"$inc": {"n": 1000}})  # whatever they held
    starts = [clients.gatehouse(config, gatehouse.db.name, clock) for _ in range(2)]
    for started in starts:
        await started.setup()
    recounts = [s.recounting for s in starts if s.recounting is not None]
    assert len(recounts) == 1
    await recounts[0]
    for started in starts:
        await started.aclose()
    await clients.close()
    found = await gatehouse.admin.dashboard()
    assert figures(found) == truth
    assert abs(found["active_accounts_24h"] - 42) <= 2  # accounts 10..49, 8 and 9: a sketch
    await gatehouse.recount()
    assert figures(await gatehouse.admin.dashboard()) == truth
    # And from then on the counters follow what happens.
    await gatehouse.sessions.revoke(soon["_id"], "logout")
    await gatehouse.accounts.delete(9000)
    followed = await gatehouse.admin.dashboard()
    assert followed["active_sessions"] == 301 and followed["accounts"] == 2


async def test_a_recount_the_database_fails_says_so_and_is_claimed_again(gatehouse, mongo_uri, caplog):
    """A recount the database fails is logged, answers False (the command line exits 1),
    and gives the marker back, so the next process to start runs it again."""
    assert await gatehouse.db.stats.find_one({"_id": RECOUNTED}) is not None  # set by this start
    async with failpoint(mongo_uri, ["aggregate"], errorCode=2):
        assert await gatehouse.recount() is False
    assert await gatehouse.db.stats.find_one({"_id": RECOUNTED}) is None
    assert any("did not finish (OperationFailure)" in rec.getMessage() for rec in caplog.records)
    assert await gatehouse.stats.claim_recount(gatehouse.clock())
