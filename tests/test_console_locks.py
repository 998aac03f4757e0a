"""Login locks as operators see them (issue 22, "Locks and account state"): an account
locked by wrong passwords shows on its page and in the admin API with until when, why
and the failures counted; an administrator unlocks it (audited, with a reason) and its
owner gets in at once; the lock and the first refusal it makes are audit events, once,
however hard it is hammered; an unknown login name hammered the same way answers alike
and records nothing."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest

from models.auth import AuthService
from models.locks import LoginLocks
from models.ratelimit import RateLimits
from tests.conftest import PASSWORD, register, unique
from tests.test_console import Console, admin_console, console  # noqa: F401 - the fixtures
from tests.test_hardening import WRONG, statuses, without_time
from tests.test_scale_queries import Finds, assert_bounded, recorded  # noqa: F401 - the fixture

LOCKING = {"login_failures_per_account": 3, "login_failures_per_ip": 10_000, "login_failure_window": 60}


async def attempt(api, name: str, password: str = WRONG):
    return await api.post("/auth/auth", {"username": name, "password": password})


async def lock_out(api, name: str) -> None:
    """Three wrong passwords: the third check's slot locks the login name."""
    assert [(await attempt(api, name)).status for _ in range(3)] == [401, 401, 401]


async def lock_events(gatehouse, **query) -> list[dict]:
    found = gatehouse.db.events.find({"type": {"$in": ["account_locked", "login_locked", "unlock"]}, **query})
    return await found.to_list(None)


@pytest.mark.parametrize("settings", [LOCKING])
async def test_a_lock_shows_on_the_account_page_and_an_unlock_lets_the_owner_in(
    settings,
    api,
    admin,
    admin_console,  # noqa: F811
    gatehouse,
):
    user = await register(api)
    await lock_out(api, user["username"])
    assert (await attempt(api, user["username"], PASSWORD)).status == 429  # even the right password waits

    page = await admin_console.get(f"/console/accounts/{user['id']}")
    assert page.status_code == 200
    head = page.text.split('<dl class="facts">')[0]
    assert 'class="badge off" href="#login-lock">locked</a>' in head
    lock = (await api.get(f"/admin/api/accounts/{user['id']}", token=admin["token"])).data["lock"]
    assert lock["locked"] and lock["reason"] == "too many failed logins"
    assert (lock["failures"], lock["limit"], lock["window"], lock["strikes"]) == (3, 3, 60, 1)
    assert lock["duration"] == 60 and 0 < lock["secondsLeft"] <= 61 and lock["refused"] == 1
    until = datetime.fromtimestamp(lock["until"], tz=UTC).replace(microsecond=0).isoformat()
    assert re.search(rf'Locked until <time datetime="{re.escape(until[:16])}', page.text), until
    assert "Failed logins counted: 3 of 3 in the current 60 s window" in page.text
    assert "too many failed logins" in page.text
    assert f'href="/console/accounts/{user["id"]}/unlock?next=' in page.text
    confirm = (await admin_console.get(f"/console/accounts/{user['id']}/unlock")).text
    assert "Lift the login lock of" in confirm and 'name="reason"' in confirm and "Locked until" in confirm
    # The other facts of the account.
    for fact in ("Created", "Last login", "Identity tier", "Sign-up style", "Verified", "Live sessions"):
        assert f"<dt>{fact}</dt>" in page.text
    assert "<dt>Sign-up style</dt><dd>native</dd>" in page.text and "<dt>Live sessions</dt><dd>0</dd>" in page.text

    r = await admin_console.post(f"/console/accounts/{user['id']}/unlock", {"reason": "owner called from the desk"})
    assert r.status_code == 303 and r.headers["location"] == f"/console/accounts/{user['id']}?done=unlocked"
    assert (await attempt(api, user["username"], PASSWORD)).status == 200  # at once
    [event] = await lock_events(gatehouse, account_id=user["id"], type="unlock")
    assert event["actor"] == f"admin:{admin['id']}" and event["note"] == "owner called from the desk"
    assert event["was_locked"] is True and (event["failures"], event["strikes"]) == (3, 1)
    page = await admin_console.get(f"/console/accounts/{user['id']}?done=unlocked")
    assert "login lock and failed-login count were cleared" in page.text
    assert 'id="login-lock"' not in page.text and "<dt>Live sessions</dt><dd>1</dd>" in page.text
    assert (await api.get(f"/admin/api/accounts/{user['id']}", token=admin["token"])).data["lock"] is None
    # The day's strikes went too: the next lock is one window again, not two.
    await lock_out(api, user["username"])
    lock = (await api.get(f"/admin/api/accounts/{user['id']}", token=admin["token"])).data["lock"]
    assert (lock["strikes"], lock["duration"]) == (1, 60)


@pytest.mark.parametrize("settings", [LOCKING])
async def test_failures_short_of_a_lock_are_shown_and_can_be_cleared(settings, api, admin, admin_console):  # noqa: F811
    user = await register(api)
    assert (await attempt(api, user["username"])).status == 401
    lock = (await api.get(f"/admin/api/accounts/{user['id']}", token=admin["token"])).data["lock"]
    assert not lock["locked"] and lock["until"] is None and lock["failures"] == 1
    page = (await admin_console.get(f"/console/accounts/{user['id']}")).text
    assert "1 of 3 in the current 60 s window" in page and "Locked until" not in page
    assert 'not locked; <a href="#login-lock">1 of 3 failed logins counted</a>' in page
    assert 'href="#login-lock">locked' not in page and f"/console/accounts/{user['id']}/unlock" in page
    assert (await admin_console.post(f"/console/accounts/{user['id']}/unlock")).status_code == 303
    assert (await api.get(f"/admin/api/accounts/{user['id']}", token=admin["token"])).data["lock"] is None


@pytest.mark.parametrize("settings", [LOCKING])
async def test_unlock_through_the_admin_api(settings, api, admin, gatehouse):
    user = await register(api)
    await lock_out(api, user["username"])
    path = f"/admin/api/accounts/{user['id']}/unlock"
    for bad in ("x" * 201,):  # (Tornado turns control characters in a query into spaces)
        r = await api.post(path + "?" + urlencode({"reason": bad}), {}, token=admin["token"])
        assert r.status == 400 and r.data["error"] == "INVALID_REQUEST", r.data
    assert (await attempt(api, user["username"], PASSWORD)).status == 429  # none of those unlocked it
    r = await api.post(path + "?reason=ticket%20%2042", {}, token=admin["token"])
    assert r.status == 200 and r.data == {"unlocked": user["id"], "wasLocked": True}
    assert (await attempt(api, user["username"], PASSWORD)).status == 200
    # Unlocking an account that is not locked changes nothing, and is audited all the same.
    r = await api.post(path, token=admin["token"])
    assert r.status == 200 and r.data == {"unlocked": user["id"], "wasLocked": False}
    unlocks = await lock_events(gatehouse, account_id=user["id"], type="unlock")
    assert [(e["was_locked"], e.get("note")) for e in sorted(unlocks, key=lambda e: e["at"])] == [
        (True, "ticket 42"),
        (False, None),
    ]
    assert all(e["actor"] == f"admin:{admin['id']}" for e in unlocks)
    r = await api.post("/admin/api/accounts/999999999/unlock", token=admin["token"])
    assert r.status == 404 and r.data["error"] == "NOT_FOUND"
    user_token = (await attempt(api, user["username"], PASSWORD)).data["data"]["token"]
    r = await api.post(path, token=user_token)
    assert r.status == 403 and r.data["error"] == "FORBIDDEN"
    events = (await api.get(f"/admin/api/events?account={user['id']}&type=unlock", token=admin["token"])).data
    assert len(events["events"]) == 2 and events["events"][0]["actor"] == f"admin:{admin['id']}"


async def hammer(api, name: str, n: int = 20) -> list:
    return await asyncio.gather(*(attempt(api, name) for _ in range(n)))


@pytest.mark.parametrize("settings", [LOCKING])
async def test_a_hammered_lock_is_audited_once_and_an_unknown_name_answers_alike(settings, api, admin, gatehouse):
    user, ghost = await register(api), unique("ghost")
    known_401, ghost_401 = await attempt(api, user["username"]), await attempt(api, ghost)
    assert without_time(known_401) == without_time(ghost_401)
    for name in (user["username"], ghost):
        assert [(await attempt(api, name)).status for _ in range(2)] == [401, 401]
    known, unknown = await hammer(api, user["username"]), await hammer(api, ghost)
    assert statuses(known) == statuses(unknown) == {429: 20}
    # Status, body and Retry-After: nothing tells a known name from an unknown one.
    assert {without_time(r)[:2] for r in known} == {without_time(r)[:2] for r in unknown}
    retry = {int(r.headers["Retry-After"]) for r in known + unknown}
    assert max(retry) - min(retry) <= 2, retry
    # One lock, one refusal audited for the account, however many were refused.
    events = await lock_events(gatehouse, account_id=user["id"])
    assert sorted(e["type"] for e in events) == ["account_locked", "login_locked"]
    locked = next(e for e in events if e["type"] == "account_locked")
    assert (locked["duration"], locked["strikes"], locked["outcome"]) == (60, 1, "locked")
    refused = next(e for e in events if e["type"] == "login_locked")
    assert refused["outcome"] == "refused" and refused["reason"] == "locked" and refused["ip"]
    # The unknown name's lock held just the same, and recorded no lock event at all.
    assert await lock_events(gatehouse, account_id={"$ne": user["id"]}) == []
    lock = (await api.get(f"/admin/api/accounts/{user['id']}", token=admin["token"])).data["lock"]
    assert lock["refused"] == 20
    # The audit log lists both, filterable by their types.
    for type in ("account_locked", "login_locked"):
        r = await api.get(f"/admin/api/events?account={user['id']}&type={type}", token=admin["token"])
        assert [e["type"] for e in r.data["events"]] == [type]


@pytest.mark.parametrize("settings", [LOCKING])
async def test_a_lock_taken_in_the_middle_of_a_burst_is_audited_once(settings, api, gatehouse):
    user = await register(api)
    results = await hammer(api, user["username"])
    assert statuses(results) == {401: 3, 429: 17}
    types = [e["type"] for e in await lock_events(gatehouse, account_id=user["id"])]
    assert types.count("account_locked") == 1 and types.count("login_locked") <= 1
    more = await hammer(api, user["username"])
    assert statuses(more) == {429: 20}
    types = [e["type"] for e in await lock_events(gatehouse, account_id=user["id"])]
    assert types.count("account_locked") == 1 and types.count("login_locked") == 1


@pytest.mark.parametrize("settings", [LOCKING])
async def test_unlock_needs_an_administrator_a_same_site_form_and_a_sane_reason(
    settings,
    api,
    base_url,
    admin_console,  # noqa: F811
    gatehouse,
):
    user = await register(api)
    await lock_out(api, user["username"])
    path = f"/console/accounts/{user['id']}/unlock"
    anonymous = Console(base_url)
    try:
        assert (await anonymous.post(path, xsrf=False)).status_code == 403
    finally:
        await anonymous.http.aclose()
    assert (await admin_console.post(path, headers={"Sec-Fetch-Site": "cross-site"})).status_code == 403
    assert (await admin_console.post(path, xsrf=False)).status_code == 403
    for reason in (
        "x" * 201,
        "y" * 150 + "\n" + "z" * 60,
    ):  # (line breaks become spaces; Tornado turns other control characters into spaces)
        r = await admin_console.post(path, {"reason": reason})
        assert r.status_code == 400 and "reason" in r.text and "<html" in r.text.lower()
    assert (await attempt(api, user["username"], PASSWORD)).status == 429  # still locked
    assert await lock_events(gatehouse, account_id=user["id"], type="unlock") == []
    r = await admin_console.get("/console/accounts/999999999")
    assert r.status_code == 404
    r = await admin_console.post("/console/accounts/999999999/unlock", {"reason": "nobody"})
    assert r.status_code == 404 and "<html" in r.text.lower()
    r = await admin_console.post(path, {"reason": " " * 3})  # blank: no note
    assert r.status_code == 303
    [event] = await lock_events(gatehouse, account_id=user["id"], type="unlock")
    assert "note" not in event


async def test_a_page_of_accounts_reads_its_locks_in_one_bounded_query(gatehouse, recorded, clock):  # noqa: F811
    db, finds = recorded
    rule = AuthService.failures_per_account.fget(gatehouse.auth)  # the service's own rule
    locks = LoginLocks(RateLimits(db, clock), rule)
    ids = list(range(5_000_000, 5_000_050))
    for account_id in ids[::7]:
        await gatehouse.auth.locks.limits.lock(f"login:account={account_id}", 60, "test")
    await gatehouse.db.limits.insert_many(
        [{"_id": f"lock:login:account={i}", "until": clock(), "expires_at": clock()} for i in range(1, 3000)]
    )
    found = await locks.statuses(ids)
    assert sorted(i for i, s in found.items() if s.locked) == ids[::7]
    assert len(finds.finds) == 1
    await assert_bounded(db, finds, "_id_", most=3 * len(ids) + 5)
    assert await locks.statuses([]) == {}


@pytest.mark.parametrize("settings", [LOCKING])
async def test_logins_racing_twenty_parallel_unlocks(settings, api, admin, gatehouse):
    """20 unlocks at once, with 20 logins by the owner racing them: every answer is a
    200 or the lock's 429 (never a 500), every unlock is audited, and once they are
    done the owner logs in."""
    user = await register(api)
    await lock_out(api, user["username"])
    path = f"/admin/api/accounts/{user['id']}/unlock"
    unlocks = [api.post(path, {}, token=admin["token"]) for _ in range(20)]
    logins = [attempt(api, user["username"], PASSWORD) for _ in range(20)]
    answers = await asyncio.gather(*unlocks, *logins)
    assert [r.status for r in answers[:20]] == [200] * 20
    assert {r.status for r in answers[20:]} <= {200, 429}, [r.status for r in answers[20:]]
    assert len(await lock_events(gatehouse, account_id=user["id"], type="unlock")) == 20
    assert (await attempt(api, user["username"], PASSWORD)).status == 200
