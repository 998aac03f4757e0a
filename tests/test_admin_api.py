"""The admin API: every call, for an admin, a service key, a non-admin and nobody."""

from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import PASSWORD, login, register, unique_phone

SERVICE_KEY = "svc-" + "k" * 40


def assert_admin_error(r, status: int, code: str) -> None:
    assert r.status == status, (r.status, r.data)
    assert r.data["error"] == code and r.data["message"], r.data


async def test_non_admins_get_403_and_nobody_gets_401(api):
    user = await register(api)
    token = await login(api, user)
    for method, path in [
        ("GET", "/admin/api/sessions"),
        ("GET", "/admin/api/accounts"),
        ("GET", f"/admin/api/accounts/{user['id']}"),
        ("POST", f"/admin/api/accounts/{user['id']}/kick"),
        ("POST", f"/admin/api/accounts/{user['id']}/disable"),
        ("GET", "/admin/api/events"),
        ("GET", "/admin/api/stats"),
    ]:
        assert_admin_error(await api.request(method, path, token=token), 403, "FORBIDDEN")
        assert_admin_error(await api.request(method, path), 401, "NOT_AUTHENTICATED")
        assert_admin_error(await api.request(method, path, token="Bearer nonsense"), 401, "NOT_AUTHENTICATED")
    # The non-admin's own session was not touched by any of that.
    assert (await api.get("/auth/me", token=token)).status == 200


async def test_kicking_a_session_refuses_its_token_at_once(api, admin):
    user = await register(api)
    token = await login(api, user)
    other = await login(api, user)
    r = await api.get(f"/admin/api/sessions?account={user['username']}", token="Bearer " + admin["token"])
    assert r.status == 200 and r.data["next"] is None
    listed = r.data["sessions"]
    assert len(listed) == 2
    assert {s["account"]["username"] for s in listed} == {user["username"]}
    assert all(s["kind"] == "opaque" and s["style"] == "native" and not s["revoked"] for s in listed)
    me = (await api.get("/auth/me", token=token)).data["data"]["session"]
    r = await api.delete(f"/admin/api/sessions/{me}", token=admin["token"])
    assert r.status == 200 and r.data == {"kicked": me}
    assert (await api.get("/auth/me", token=token)).status == 403
    assert (await api.get("/auth/me", token=other)).status == 200
    # The kicked session stays listed, marked, with who kicked it; `active` hides it.
    r = await api.get(f"/admin/api/sessions?account={user['id']}", token=admin["token"])
    kicked = next(s for s in r.data["sessions"] if s["id"] == me)
    assert kicked["revoked"] and kicked["revokedReason"] == "kicked" and kicked["revokedBy"] == f"admin:{admin['id']}"
    r = await api.get(f"/admin/api/sessions?account={user['id']}&active=true", token=admin["token"])
    assert [s["id"] for s in r.data["sessions"]] != [] and me not in [s["id"] for s in r.data["sessions"]]
    events = await api.get(f"/admin/api/events?account={user['id']}&type=kick", token=admin["token"])
    assert events.data["events"][0]["actor"] == f"admin:{admin['id']}"
    assert events.data["events"][0]["session_id"] == me
    assert_admin_error(await api.delete("/admin/api/sessions/" + "0" * 32, token=admin["token"]), 404, "NOT_FOUND")


async def test_kick_all_disable_and_enable(api, admin):
    user = await register(api)
    tokens = [await login(api, user) for _ in range(3)]
    r = await api.post(f"/admin/api/accounts/{user['id']}/kick", token=admin["token"])
    assert r.status == 200 and r.data == {"kicked": 3}
    assert all([(await api.get("/auth/me", token=t)).status == 403 for t in tokens])

    token = await login(api, user)
    r = await api.post(f"/admin/api/accounts/{user['id']}/disable", token=admin["token"])
    assert r.status == 200 and r.data["account"]["disabled"] is True and r.data["sessionsEnded"] == 1
    assert (await api.get("/auth/me", token=token)).status == 403
    failed = await api.post("/auth/auth", {"username": user["username"], "password": PASSWORD})
    assert failed.status == 401
    r = await api.post(f"/admin/api/accounts/{user['id']}/enable", token=admin["token"])
    assert r.status == 200 and r.data["account"]["disabled"] is False and r.data["sessionsEnded"] == 0
    await login(api, user)
    types = [
        e["type"] for e in (await api.get(f"/admin/api/accounts/{user['id']}", token=admin["token"])).data["events"]
    ]
    assert {"disable", "enable", "kick", "login_ok", "login_failed"} <= set(types)
    assert_admin_error(await api.post("/admin/api/accounts/999999/kick", token=admin["token"]), 404, "NOT_FOUND")


async def test_account_search_and_detail(api, admin):
    phone = unique_phone()
    user = await register(api, phone=phone, nickname="<script>alert(1)</script>")
    await login(api, user)
    for q in (user["username"][:6], user["email"], phone, str(user["id"])):
        r = await api.get(f"/admin/api/accounts?q={q.replace('+', '%2B')}", token=admin["token"])
        assert r.status == 200, r.data
        assert user["id"] in [a["id"] for a in r.data["accounts"]], q
    r = await api.get(f"/admin/api/accounts/{user['id']}", token=admin["token"])
    assert r.data["account"]["nickname"] == "<script>alert(1)</script>"  # JSON carries it verbatim
    assert "password_hash" not in r.data["account"]
    assert len(r.data["sessions"]) == 1 and r.data["events"][0]["type"] == "login_ok"
    r = await api.get("/admin/api/accounts?q=nobody-like-this", token=admin["token"])
    assert r.data == {"accounts": [], "count": 0, "capped": False, "page": 1, "pages": 1, "matchedBy": {}}
    assert_admin_error(await api.get("/admin/api/accounts/123456789", token=admin["token"]), 404, "NOT_FOUND")


async def test_sessions_page_with_a_cursor_and_filter_by_kind(api, admin):
    user = await register(api)
    for _ in range(5):
        await login(api, user)
    pair = await api.post("/auth/token", {"username": user["username"], "password": PASSWORD})
    assert pair.status == 200
    seen: list[str] = []
    cursor = ""
    while True:
        r = await api.get(f"/admin/api/sessions?account={user['id']}&limit=2{cursor}", token=admin["token"])
        seen += [s["id"] for s in r.data["sessions"]]
        if r.data["next"] is None:
            break
        cursor = "&cursor=" + r.data["next"]
    assert len(seen) == len(set(seen)) == 6
    r = await api.get(f"/admin/api/sessions?account={user['id']}&kind=jwt", token=admin["token"])
    assert [s["kind"] for s in r.data["sessions"]] == ["jwt"]
    forged = [forged_cursor(ms, "x") for ms in (10**20, -(10**20))]  # out of the calendar's range
    for bad in ("kind=nope", "limit=0", "limit=1000", "cursor=%%%", "cursor=WzFd", "active=maybe", *forged):
        assert_admin_error(await api.get(f"/admin/api/sessions?{bad}", token=admin["token"]), 400, "INVALID_REQUEST")
    assert_admin_error(await api.get("/admin/api/sessions?account=ghost", token=admin["token"]), 404, "NOT_FOUND")


def forged_cursor(ms: object, last_id: str) -> str:
    """A cursor the server did not write: well-formed, with a time no page could hold."""
    return "cursor=" + base64.urlsafe_b64encode(json.dumps([ms, last_id]).encode()).decode().rstrip("=")


async def test_events_filters(api, admin):
    user = await register(api)
    await api.post("/auth/auth", {"username": user["username"], "password": "wrong-password-1"})
    r = await api.get(f"/admin/api/events?account={user['username']}&type=login_failed", token=admin["token"])
    assert r.status == 200
    [event] = r.data["events"]
    assert event["outcome"] == "failed" and event["reason"] and event["ip"] == "127.0.0.1"
    assert "wrong-password-1" not in str(r.data)
    r = await api.get(
        f"/admin/api/events?account={user['id']}&since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z",
        token=admin["token"],
    )
    assert r.data == {"events": [], "next": None, "matchedBy": {}}
    forged = [forged_cursor(ms, "0" * 24) for ms in (10**20, 1e300)]  # no time a cursor could hold
    for bad in ("type=nope", "since=yesterday", "since=2026-01-01T00:00:00", "cursor=eyJ4Ijox", *forged):
        assert_admin_error(await api.get(f"/admin/api/events?{bad}", token=admin["token"]), 400, "INVALID_REQUEST")
    page = await api.get("/admin/api/events?limit=1", token=admin["token"])
    nxt = await api.get(f"/admin/api/events?limit=1&cursor={page.data['next']}", token=admin["token"])
    assert nxt.data["events"][0]["id"] != page.data["events"][0]["id"]


async def test_stats(api, admin):
    user = await register(api)
    await login(api, user)
    await api.post("/auth/auth", {"username": user["username"], "password": "wrong-password-1"})
    r = await api.get("/admin/api/stats", token=admin["token"])
    assert r.status == 200
    assert r.data["active_sessions"] == 2  # the admin's and the user's
    assert r.data["active_accounts_24h"] == 2
    assert r.data["logins_24h"] == 2 and r.data["failed_logins_24h"] == 1
    assert len(r.data["by_hour"]) == 24
    assert sum(h["login_ok"] for h in r.data["by_hour"]) == 2
    assert r.data["by_hour"][-1]["login_failed"] == 1


@pytest.mark.parametrize("settings", [{"service_keys": (SERVICE_KEY,)}])
async def test_a_service_key_works_and_is_the_actor(settings, sinks, api):
    user = await register(api)
    token = await login(api, user)
    r = await api.post(f"/admin/api/accounts/{user['id']}/kick", token="Bearer " + SERVICE_KEY)
    assert r.status == 200 and r.data == {"kicked": 1}
    assert (await api.get("/auth/me", token=token)).status == 403
    r = await api.post(f"/admin/api/accounts/{user['id']}/reset", token=SERVICE_KEY)
    assert r.status == 200 and r.data == {"sent": True, "channel": "email"}
    code = await sinks.code_for(user["email"])
    r = await api.post("/auth/reset", {"username": user["username"], "password": "Fresh-pass-word-9", "code": code})
    assert r.status == 200
    r = await api.get(f"/admin/api/events?account={user['id']}&type=kick", token=SERVICE_KEY)
    assert r.data["events"][0]["actor"] == "service"


async def test_an_admin_cannot_disable_their_own_account(api, admin):
    r = await api.post(f"/admin/api/accounts/{admin['id']}/disable", token=admin["token"])
    assert_admin_error(r, 400, "INVALID_REQUEST")
    assert (await api.get("/auth/me", token=admin["token"])).status == 200
