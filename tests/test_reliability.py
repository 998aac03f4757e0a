"""Issue 15 (part): every multi-step operation is all-or-nothing and retry-safe, audit
events never fail a done operation, and all processes share the database's clock.

The failure tests use MongoDB's own fault injection (`configureFailPoint` /
`failCommand`): the k-th write of a flow fails once (k = 0, 1, 2, …), the client retries
what answered 503, and the final state and answers must be those of one success."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest

from app import Gatehouse
from models.common import Context, utcnow
from models.db import connect
from models.values import Session
from tests.conftest import PASSWORD, failpoint, failpoint_off, login, register, set_failpoint, unique_phone

NEW = "Brand-new-pass-7"
WRITES = ["insert", "update", "findAndModify", "delete"]
# Interrupted: a transient error that is no connection failure and that the driver does
# not retry by itself, so the operation's own ordering is what is tested.
TRANSIENT = 11601
QUIET = {"session_cache_ms": 0}  # no change feed: the flow's own writes, counted exactly


@pytest.fixture
async def fail_nth_write(mongo_uri, gatehouse):
    """`await fail(k)`: the k-th write (0-based) of the app from now on fails once."""
    gatehouse.queue.stop()  # the worker's claims would take the failure meant for the flow

    async def fail(k: int) -> None:
        await set_failpoint(mongo_uri, WRITES, mode={"skip": k, "times": 1}, errorCode=TRANSIENT)

    yield fail
    await failpoint_off(mongo_uri)


async def off(mongo_uri) -> None:
    await failpoint_off(mongo_uri)


async def with_one_retry(request):
    """The request, and once more if it answered 503 (what a client does)."""
    r = await request()
    return (await request()) if r.status == 503 else r, r.status


async def live_sessions(gatehouse, account_id: int) -> int:
    return await gatehouse.db.sessions.count_documents({"account_id": account_id, "revoked_at": None})


async def eventually(check, timeout: float = 8.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "never settled"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("k", range(6))
@pytest.mark.parametrize("settings", [dict(QUIET)])
async def test_sign_up_survives_a_failure_at_any_write(settings, k, api, gatehouse, fail_nth_write, mongo_uri):
    name = f"u{uuid.uuid4().hex[:10]}"
    await fail_nth_write(k)
    r, first = await with_one_retry(lambda: api.post("/auth/register", {"username": name, "password": PASSWORD}))
    await off(mongo_uri)
    assert r.status == 200, (first, r.data)  # never a 409 for the client's own retry
    assert await gatehouse.db.accounts.count_documents({"username": name}) == 1
    assert (await api.post("/auth/auth", {"username": name, "password": PASSWORD})).status == 200


@pytest.mark.parametrize("k", range(10))
@pytest.mark.parametrize("settings", [dict(QUIET)])
async def test_login_survives_a_failure_at_any_write(settings, k, api, gatehouse, fail_nth_write, mongo_uri):
    user = await register(api)
    await fail_nth_write(k)
    r, _ = await with_one_retry(lambda: api.post("/auth/auth", {"username": user["username"], "password": PASSWORD}))
    await off(mongo_uri)
    assert r.status == 200
    assert (await api.get("/auth/me", token=r.data["data"]["token"])).status == 200

    # A login that answered 503 leaves no live session behind (nobody has its token).
    async def one_live() -> bool:
        return await live_sessions(gatehouse, user["id"]) == 1

    await eventually(one_live)


@pytest.mark.parametrize("k", range(8))
@pytest.mark.parametrize("settings", [dict(QUIET)])
async def test_password_change_survives_a_failure_at_any_write(settings, k, api, gatehouse, fail_nth_write, mongo_uri):
    user = await register(api)
    mine, other = await login(api, user), await login(api, user)
    await fail_nth_write(k)
    r, first = await with_one_retry(
        lambda: api.post("/auth/password", {"password": PASSWORD, "new_password": NEW}, token=mine)
    )
    await off(mongo_uri)
    # One success: the change is done once, my session lives, the other is dead, and a
    # retry is never told that the (old) password is wrong after the change was made.
    assert r.status == 200, (first, r.data)
    assert (await api.get("/auth/me", token=mine)).status == 200
    assert (await api.get("/auth/me", token=other)).status == 403
    assert (await api.post("/auth/auth", {"username": user["username"], "password": NEW})).status == 200
    assert (await api.post("/auth/auth", {"username": user["username"], "password": PASSWORD})).status == 401


@pytest.mark.parametrize("k", range(12))
@pytest.mark.parametrize("settings", [dict(QUIET)])
async def test_reset_survives_a_failure_at_any_write(settings, k, sinks, api, gatehouse, fail_nth_write, mongo_uri):
    user = await register(api)
    token = await login(api, user)
    gatehouse.queue.start()
    await api.post("/auth/reset", {"username": user["username"]})
    code = await sinks.code_for(user["email"])
    gatehouse.queue.stop()
    body = {"username": user["username"], "password": NEW, "code": code}
    await fail_nth_write(k)
    r, first = await with_one_retry(lambda: api.post("/auth/reset", body))
    await off(mongo_uri)
    assert r.status == 200 and r.data["data"] == "Success", (first, r.data)  # never INVALID_CODE
    assert (await api.get("/auth/me", token=token)).status == 403
    assert (await api.post("/auth/auth", {"username": user["username"], "password": NEW})).status == 200


@pytest.mark.parametrize("k", range(8))
@pytest.mark.parametrize("settings", [dict(QUIET)])
async def test_refresh_survives_a_failure_at_any_write(settings, k, api, gatehouse, fail_nth_write, mongo_uri):
    user = await register(api)
    pair = (await api.post("/auth/token", {"username": user["username"], "password": PASSWORD})).data["data"]
    await fail_nth_write(k)
    r, first = await with_one_retry(lambda: api.post("/auth/token/refresh", {"refresh_token": pair["refresh_token"]}))
    await off(mongo_uri)
    assert r.status == 200, (first, r.data)  # a retry is never taken for token theft
    fresh = r.data["data"]
    assert (await api.get("/auth/me", token=fresh["access_token"])).status == 200
    r = await api.post("/auth/token/refresh", {"refresh_token": fresh["refresh_token"]})
    assert r.status == 200


@pytest.mark.parametrize("k", range(5))
@pytest.mark.parametrize("settings", [dict(QUIET)])
async def test_kick_and_disable_survive_a_failure_at_any_write(
    settings, k, api, gatehouse, admin, fail_nth_write, mongo_uri
):
    user = await register(api)
    token, other = await login(api, user), await login(api, user)
    session_id = (await api.get("/auth/me", token=other)).data["data"]["session"]
    await fail_nth_write(k)
    r, _ = await with_one_retry(lambda: api.delete(f"/auth/sessions/{session_id}", token=token))
    await off(mongo_uri)
    assert r.status == 200 and (await api.get("/auth/me", token=other)).status == 403
    await fail_nth_write(k)
    r, _ = await with_one_retry(lambda: api.post(f"/admin/api/accounts/{user['id']}/disable", token=admin["token"]))
    await off(mongo_uri)
    assert r.status == 200 and (await api.get("/auth/me", token=token)).status == 403
    gatehouse.followups.base = 0.05

    async def whole() -> bool:  # the audit trail of what was done is whole, in the end
        return {"kick", "disable"} <= {e["type"] for e in await gatehouse.events.find(account_id=user["id"])}

    await eventually(whole)


@pytest.mark.parametrize("settings", [dict(QUIET)])
async def test_a_failed_event_insert_never_fails_the_operation_and_is_written_later(
    settings, api, gatehouse, mongo_uri
):
    user = await register(api)
    token, other = await login(api, user), await login(api, user)
    session_id = (await api.get("/auth/me", token=other)).data["data"]["session"]
    gatehouse.followups.base = 0.05
    # A kick's one insert is its audit event (the revocation is an update).
    async with failpoint(mongo_uri, ["insert"], mode={"times": 1}, errorCode=TRANSIENT):
        r = await api.delete(f"/auth/sessions/{session_id}", token=token)
        assert r.status == 200

    async def written() -> bool:
        return bool(await gatehouse.events.find(account_id=user["id"], type="kick"))

    await eventually(written)
    assert len(await gatehouse.events.find(account_id=user["id"], type="kick")) == 1


# ---- one clock ---------------------------------------------------------------------------


@pytest.fixture
async def two_servers(mongo_uri, config):
    """Two Gatehouses over one database, the second on a machine whose clock is five
    minutes fast; both keep the database's time."""
    name = "gh_clock_" + uuid.uuid4().hex[:10]
    clients, houses = [], []
    for skew in (0, 300):
        client = connect(mongo_uri, config.database.db_timeout_ms)
        gh = Gatehouse(config, client[name])
        assert gh.db_clock is not None
        gh.db_clock.local = lambda skew=skew: utcnow() + timedelta(seconds=skew)
        await gh.setup(background=False)
        clients.append(client)
        houses.append(gh)
    yield houses
    for gh in houses:
        await gh.aclose()
    await clients[0].drop_database(name)
    for client in clients:
        await client.close()


async def test_servers_with_skewed_clocks_write_and_compare_one_time(two_servers):
    a, b = two_servers
    assert abs((a.clock() - b.clock()).total_seconds()) < 1.0
    assert abs((utcnow() - a.clock()).total_seconds()) < 2.0  # the database's time here


@pytest.mark.parametrize("settings", [{"refresh_reuse_grace": 0}])
async def test_rotation_and_reuse_detection_hold_across_skewed_servers(settings, two_servers):
    a, b = two_servers
    ctx = Context(ip="127.0.0.1", style="native")
    await a.auth.register(ctx, password=PASSWORD, username="skewed")
    login_ = await a.auth.login_jwt("skewed", PASSWORD, ctx)
    assert login_.pair is not None and login_.pair.refresh is not None
    rotated = await b.auth.refresh(login_.pair.refresh, ctx)  # the fast server rotates
    assert rotated.refresh
    await a.resolver.resolve(rotated.access)  # its access token is good on the other
    await asyncio.sleep(1.1)
    # The retired token replayed on the correct server after the grace: theft.
    from models.errors import TokenInvalid

    with pytest.raises(TokenInvalid):
        await a.auth.refresh(login_.pair.refresh, ctx)
    session = await a.sessions.find(login_.session.id)
    assert session.revoked_reason == "refresh_reuse"


@pytest.mark.parametrize("settings", [{"login_failures_per_account": 2}])
async def test_a_lock_written_by_a_fast_server_lasts_as_long_on_the_other(settings, two_servers, config):
    a, b = two_servers
    ctx = Context(ip="127.0.0.1", style="native")
    await a.auth.register(ctx, password=PASSWORD, username="locked")
    from models.errors import InvalidCredentials

    for _ in range(2):
        with pytest.raises(InvalidCredentials):
            await b.auth.check_password("locked", "Wrong-horse-00", ctx)
    account = await a.accounts.find_by_login("locked")
    left = await a.limits.locked_for(f"login:account={account.id}")
    assert abs(left - config.throttle.login_failure_window) <= 3, left


def test_a_carried_session_holds_only_across_the_change_that_carried_it():
    from models.values import Account, CredCarry

    def session(sid: str, epoch: int) -> Session:
        now = utcnow()
        return Session(sid, 1, "opaque", "native", now, now, 60, now, now, cred_epoch=epoch)

    changer = session("s1", 4)  # its move to epoch 5 has not landed yet
    account = Account(1, "u1", cred_epoch=5, cred_carry=CredCarry("s1", 4))
    assert account.holds_session(changer)
    assert not account.holds_session(session("s2", 4))  # another old session
    # A later takeover, disable or change moves the epoch again: the carry is void.
    assert not replace(account, cred_epoch=6).holds_session(changer)
    # From before epochs existed: a document without the field reads as epoch 0.
    assert Account.from_doc({"id": 1, "uid": "u1"}).holds_session(session("s3", 0))


@pytest.mark.parametrize("settings", [{"session_cache_ms": 0, "request_deadline_ms": 2000}])
async def test_background_retries_outlive_the_requests_deadline(settings, api, gatehouse, mongo_uri):
    """A follow-up retried after its request's deadline passed still lands (it runs in a
    context of its own, not under the request's `pymongo.timeout`)."""
    user = await register(api)
    token, other = await login(api, user), await login(api, user)
    session_id = (await api.get("/auth/me", token=other)).data["data"]["session"]
    gatehouse.queue.stop()
    gatehouse.followups.base = 2.1  # the first retry comes after the request's 2 s
    async with failpoint(mongo_uri, ["insert"], mode={"times": 1}, errorCode=TRANSIENT):
        assert (await api.delete(f"/auth/sessions/{session_id}", token=token)).status == 200

    async def written() -> bool:
        return bool(await gatehouse.events.find(account_id=user["id"], type="kick"))

    await eventually(written)


@pytest.mark.parametrize("k", range(2, 12))
@pytest.mark.parametrize("settings", [dict(QUIET)])
async def test_a_phone_sign_up_cut_short_is_rolled_back_and_can_be_retried(
    settings, k, sinks, api, gatehouse, mongo_uri
):
    """Document 001's sign-up: the database going down from its k-th write on leaves no
    half-made account once it is back, so the client's retry is not "already exists"."""
    gatehouse.queue.stop()
    gatehouse.followups.base = 0.05
    phone = unique_phone()
    await set_failpoint(mongo_uri, WRITES, mode={"skip": k}, errorCode=TRANSIENT)
    first = await api.post("/auth/api/Register/", {"phonenumber": phone})
    await failpoint_off(mongo_uri)
    if first.status == 503:

        async def rolled_back() -> bool:
            return await gatehouse.db.accounts.count_documents({"phone": phone}) == 0

        await eventually(rolled_back)
        first = await api.post("/auth/api/Register/", {"phonenumber": phone})
    assert first.status == 200, first.data
    assert await gatehouse.db.accounts.count_documents({"phone": phone}) == 1


@pytest.mark.parametrize("trial", range(3))
async def test_two_resets_with_one_code_never_contradict_the_password_in_effect(trial, sinks, api, gatehouse):
    user = await register(api)
    await api.post("/auth/reset", {"username": user["username"]})
    code = await sinks.code_for(user["email"])
    passwords = ("Alpha-pass-1234x", "Bravo-pass-5678y")
    answers = await asyncio.gather(
        *(api.post("/auth/reset", {"username": user["username"], "password": p, "code": code}) for p in passwords)
    )
    assert sorted(r.status for r in answers) == [200, 400]
    for answer, password in zip(answers, passwords, strict=True):
        login_status = (await api.post("/auth/auth", {"username": user["username"], "password": password})).status
        assert (answer.status == 200) == (login_status == 200), (answer.data, login_status)
