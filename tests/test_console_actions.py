# ruff: noqa: F811 - the console fixtures, imported from test_console, are parameters here
"""The console's destructive actions: a GET shows a confirmation page naming what the
action acts on and changes nothing; the POST does it, with the operator's reason in the
audit event. The operator's own session is marked, and acting on it warns and logs out."""

from __future__ import annotations

import re

from tests.conftest import login, register
from tests.test_console import admin_console, assert_page_headers, console  # noqa: F401 - fixtures


async def session_of(api, token: str) -> str:
    return (await api.get("/auth/me", token=token)).data["data"]["session"]


async def own_console_session(api, admin) -> str:
    r = await api.get(f"/admin/api/sessions?account={admin['id']}&kind=console&active=true", token=admin["token"])
    [mine] = r.data["sessions"]
    return mine["id"]


async def events_of(api, admin, account_id: int, type: str) -> list[dict]:
    r = await api.get(f"/admin/api/events?account={account_id}&type={type}", token=admin["token"])
    return r.data["events"]


async def test_a_kick_is_confirmed_naming_the_session_and_records_the_reason(admin_console, api, admin, gatehouse):
    user = await register(api)
    token = await login(api, user)
    sid = await session_of(api, token)
    page = await admin_console.get(f"/console/sessions/{sid}/kick?next=/console/sessions%3Fkind%3Dopaque")
    assert page.status_code == 200
    assert_page_headers(page)
    text = page.text
    for fact in (user["username"], "127.0.0.1", "Tornado", "just now", "Kick session", 'name="reason"'):
        assert fact in text, fact
    assert "your own" not in text
    assert (await api.get("/auth/me", token=token)).status == 200  # the GET changed nothing

    r = await admin_console.post(
        f"/console/sessions/{sid}/kick", {"reason": "  phone  stolen ", "next": "/console/sessions?kind=opaque"}
    )
    assert r.status_code == 303 and r.headers["location"] == "/console/sessions?kind=opaque&done=kicked"
    assert (await api.get("/auth/me", token=token)).status in (401, 403)
    [event] = await events_of(api, admin, user["id"], "kick")
    doc = await gatehouse.db.events.find_one({"type": "kick", "account_id": user["id"]})
    assert doc["note"] == "phone stolen" and doc["actor"] == f"admin:{admin['id']}"
    assert doc["target"]["kind"] == "opaque" and doc["target"]["ip"] == "127.0.0.1"
    assert "Tornado" in doc["target"]["user_agent"] and event["id"] == str(doc["_id"])
    # Its confirmation page now says it has ended, with nothing to press.
    again = (await admin_console.get(f"/console/sessions/{sid}/kick")).text
    assert "already ended" in again and 'type="submit" class="danger"' not in again


async def test_a_reason_too_long_is_a_400_and_changes_nothing(admin_console, api):
    user = await register(api)
    token = await login(api, user)
    sid = await session_of(api, token)
    r = await admin_console.post(f"/console/sessions/{sid}/kick", {"reason": "x" * 201})
    assert r.status_code == 400 and "at most 200" in r.text
    assert_page_headers(r)
    r = await admin_console.post(f"/console/accounts/{user['id']}/disable", {"reason": "y" * 201})
    assert r.status_code == 400
    assert (await api.get("/auth/me", token=token)).status == 200


async def test_the_operators_own_session_is_marked_and_kicking_it_warns_and_logs_out(admin_console, api, admin):
    mine = await own_console_session(api, admin)
    sessions = (await admin_console.get("/console/sessions")).text
    row = re.search(rf'<tr id="s-{mine}".*?</tr>', sessions, re.S).group(0)
    assert "this is you" in row and "your own console session" in row
    others = re.findall(r'<tr id="s-[0-9a-f]{32}".*?</tr>', sessions, re.S)
    assert sum("this is you" in r for r in others) == 1
    account_page = (await admin_console.get(f"/console/accounts/{admin['id']}")).text
    assert account_page.count("this is you") == 2  # the account's title and its session's row

    confirm = (await admin_console.get(f"/console/sessions/{mine}/kick")).text
    assert "This is your own console session" in confirm and "logs you out" in confirm
    r = await admin_console.post(f"/console/sessions/{mine}/kick", {"next": "/console/sessions"})
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    assert (await admin_console.get("/console/sessions")).status_code == 302


async def test_kick_all_on_the_operators_own_account_warns_and_logs_out(admin_console, api, admin):
    confirm = (await admin_console.get(f"/console/accounts/{admin['id']}/kick")).text
    assert "your own account" in confirm and "logs you out" in confirm and "Live sessions" in confirm
    r = await admin_console.post(f"/console/accounts/{admin['id']}/kick", {"reason": "rotation"})
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    assert (await admin_console.get("/console/")).status_code == 302
    assert (await api.get("/auth/me", token=admin["token"])).status in (401, 403)


async def test_account_actions_confirm_naming_the_account(admin_console, api, admin, gatehouse):
    user = await register(api)
    await login(api, user)
    base = f"/console/accounts/{user['id']}"
    for action, words in (
        ("kick", ("Kick every session of", "Live sessions", "1")),
        ("disable", ("Disable", user["username"])),
        ("reset", ("password-reset code", "Sent to")),
        ("mfa-reset", ("second factor", "0 authenticator app(s)")),
    ):
        page = await admin_console.get(f"{base}/{action}")
        assert page.status_code == 200, action
        assert all(w in page.text for w in words), (action, words)
        assert "your own" not in page.text
    own = (await admin_console.get(f"/console/accounts/{admin['id']}/disable")).text
    assert "you cannot disable it" in own
    assert (await admin_console.post(f"/console/accounts/{admin['id']}/disable")).status_code == 400

    r = await admin_console.post(f"{base}/disable", {"reason": "fraud report #12", "next": base})
    assert r.status_code == 303
    doc = await gatehouse.db.events.find_one({"type": "disable", "account_id": user["id"]})
    assert doc["note"] == "fraud report #12" and doc["sessions_ended"] == 1
    # Unknown accounts and sessions: the console's 404 page, not a confirmation.
    assert (await admin_console.get("/console/accounts/99999999/kick")).status_code == 404


async def test_unknown_console_paths_get_the_consoles_own_404_page(admin_console, console, base_url):
    import httpx

    for path in ("/console/nope", "/console/accounts/abc", "/console/sessions/xyz/kick", "/console/static/x.js"):
        r = await admin_console.get(path)
        assert r.status_code == 404, path
        assert_page_headers(r)
        assert "There is no such page in the console." in r.text and "Log out" in r.text
    async with httpx.AsyncClient(base_url=base_url) as anonymous:
        r = await anonymous.get("/console/nope")
        assert r.status_code == 404 and "Log in" in r.text
        assert_page_headers(r)


async def test_the_alive_check_answers_without_keeping_the_session_alive(admin_console, api, admin, gatehouse):
    mine = await own_console_session(api, admin)
    before = (await gatehouse.db.sessions.find_one({"_id": mine}))["last_active"]
    r = await admin_console.get("/console/alive", headers={"X-Gatehouse-Refresh": "1"})
    assert r.status_code == 204
    assert (await gatehouse.db.sessions.find_one({"_id": mine}))["last_active"] == before
    await api.delete(f"/admin/api/sessions/{mine}", token=admin["token"])
    r = await admin_console.get("/console/alive", headers={"X-Gatehouse-Refresh": "1"})
    assert r.status_code == 302 and r.headers["location"].startswith("/console/login")


async def test_the_admin_api_takes_the_same_reason(api, admin, gatehouse):
    user = await register(api)
    sid = await session_of(api, await login(api, user))
    r = await api.delete(f"/admin/api/sessions/{sid}?reason=lost%20laptop", token=admin["token"])
    assert r.status == 200
    [event] = await events_of(api, admin, user["id"], "kick")
    assert event["note"] == "lost laptop" and event["target"]["kind"] == "opaque"
    assert event["target"]["ip"] == "127.0.0.1" and event["target"]["created"]
    r = await api.post(f"/admin/api/accounts/{user['id']}/disable?reason=" + "z" * 201, {}, token=admin["token"])
    assert r.status == 400 and r.data["error"] == "INVALID_REQUEST"
    assert not (await gatehouse.accounts.get(user["id"])).disabled
    r = await api.post(f"/admin/api/accounts/{user['id']}/kick?reason=audit", {}, token=admin["token"])
    assert r.status == 200
    notes = [e["note"] for e in await events_of(api, admin, user["id"], "kick")]
    assert notes == ["audit", "lost laptop"]
