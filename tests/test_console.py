"""The console's pages over HTTP with a cookie-keeping client: login, XSRF, headers,
escaping, kicks and account actions. (The browser tests are in test_console_browser.py.)"""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from tests.conftest import PASSWORD, login, register

HOSTILE = "<script>alert(1)</script>"


class Console:
    """A browser-like client: keeps cookies, reads the XSRF token from the forms."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, follow_redirects=False, timeout=30)

    async def get(self, path: str, **kw) -> httpx.Response:
        r = await self.http.get(path, **kw)
        assert r.status_code < 500, r.text[:500]
        return r

    async def post(self, path: str, data: dict | None = None, *, xsrf: bool = True, **kw) -> httpx.Response:
        data = dict(data or {})
        if xsrf:
            data["_xsrf"] = await self.xsrf()
        r = await self.http.post(path, data=data, **kw)
        assert r.status_code < 500, r.text[:500]
        return r

    async def xsrf(self) -> str:
        page = await self.get("/console/")
        if page.status_code == 302:
            page = await self.get("/console/login")
        return re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)

    async def login(self, username: str, password: str = PASSWORD) -> httpx.Response:
        return await self.post("/console/login", {"username": username, "password": password, "next": "/console/"})


@pytest.fixture
async def console(base_url):
    c = Console(base_url)
    yield c
    await c.http.aclose()


@pytest.fixture
async def admin_console(console, admin):
    r = await console.login(admin["username"])
    assert r.status_code == 303 and r.headers["location"] == "/console/"
    return console


def assert_page_headers(r: httpx.Response) -> None:
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert "object-src 'none'" in csp and "base-uri 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-store"
    assert "server" not in r.headers
    assert r.headers["content-type"] == "text/html; charset=UTF-8"


async def test_anonymous_users_are_sent_to_the_login_page(console):
    for path in ("/console/", "/console/sessions?kind=jwt", "/console/accounts", "/console/events"):
        r = await console.get(path)
        assert r.status_code == 302, path
        assert r.headers["location"].startswith("/console/login?next=%2Fconsole%2F")
    r = await console.get("/console/login")
    assert r.status_code == 200 and 'name="password"' in r.text
    assert_page_headers(r)
    # A POST without a session is refused, not redirected.
    assert (await console.post("/console/accounts/1/kick")).status_code == 403


async def test_login_sets_a_protected_cookie_and_is_a_console_session(console, admin, api):
    r = await console.login(admin["username"])
    assert r.status_code == 303
    cookies = r.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookies if c.startswith("gh_console="))
    assert "HttpOnly" in session_cookie and "SameSite=Strict" in session_cookie and "Path=/console/" in session_cookie
    assert "Secure" not in session_cookie  # plain HTTP on loopback
    xsrf_cookie = next(c for c in console.http.cookies.jar if c.name == "gh_xsrf")
    assert xsrf_cookie.path == "/console/"
    page = await console.get("/console/")
    assert page.status_code == 200 and "live sessions" in page.text
    assert_page_headers(page)
    # It is a session like any other: listed with kind "console", and kickable.
    r = await api.get(f"/admin/api/sessions?account={admin['id']}&kind=console", token=admin["token"])
    [console_session] = r.data["sessions"]
    assert console_session["style"] == "console"
    await api.delete(f"/admin/api/sessions/{console_session['id']}", token=admin["token"])
    assert (await console.get("/console/")).status_code == 302


async def test_wrong_password_and_non_admins_cannot_log_in(console, api, gatehouse):
    user = await register(api)
    r = await console.login(user["username"], "not-the-password")
    assert r.status_code == 401 and "invalid username or password" in r.text
    assert "gh_console" not in r.headers.get("set-cookie", "")
    wrong = r
    # A non-admin's right password is answered exactly like a wrong one (the console is
    # no oracle for stolen credentials), and it counts as a failed login.
    r = await console.login(user["username"])
    assert r.status_code == 401 and "invalid username or password" in r.text
    assert "not an administrator" not in r.text
    assert r.text.replace(user["username"], "").count("invalid username or password") == wrong.text.count(
        "invalid username or password"
    )
    assert "gh_console=" not in ";".join(r.headers.get_list("set-cookie"))
    failed = await gatehouse.events.find(type="login_failed", account_id=user["id"])
    assert [e["reason"] for e in failed] == ["not_admitted", "wrong_password"]


async def test_an_admin_who_loses_the_role_gets_403(admin_console, admin, gatehouse):
    await gatehouse.db.accounts.update_one({"id": admin["id"]}, {"$set": {"roles": []}})
    r = await admin_console.get("/console/sessions")
    assert r.status_code == 403 and "administrators" in r.text
    assert_page_headers(r)


async def test_every_post_needs_the_xsrf_token(admin_console, api):
    user = await register(api)
    token = await login(api, user)
    session_id = (await api.get("/auth/me", token=token)).data["data"]["session"]
    for path in (
        f"/console/sessions/{session_id}/kick",
        f"/console/accounts/{user['id']}/kick",
        f"/console/accounts/{user['id']}/disable",
        "/console/logout",
    ):
        r = await admin_console.post(path, xsrf=False)
        assert r.status_code == 403, path
        assert "XSRF" in r.text
        r = await admin_console.post(path, {"_xsrf": "2|00|forged|1"}, xsrf=False)
        assert r.status_code == 403, path
    # Nothing changed: the user's session and account are intact, the admin still logged in.
    assert (await api.get("/auth/me", token=token)).status == 200
    assert (await admin_console.get("/console/")).status_code == 200


async def test_cross_site_posts_are_refused_even_with_a_token(admin_console, api):
    user = await register(api)
    token = await login(api, user)
    refused = ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"})
    for headers in refused:
        r = await admin_console.post(f"/console/accounts/{user['id']}/kick", headers=headers)
        assert r.status_code == 403 and "Cross-site" in r.text, headers
    assert (await api.get("/auth/me", token=token)).status == 200
    # The same form from our own origin works.
    own = str(admin_console.http.base_url).rstrip("/")
    headers = {"Origin": own, "Sec-Fetch-Site": "same-origin"}
    r = await admin_console.post(f"/console/accounts/{user['id']}/kick", headers=headers)
    assert r.status_code == 303


async def test_logout_is_a_post_that_ends_the_console_session(admin_console):
    r = await admin_console.post("/console/logout")
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    assert r.headers["clear-site-data"] == '"cache", "cookies", "storage"'
    assert (await admin_console.get("/console/")).status_code == 302


async def test_kick_from_the_sessions_page(admin_console, api):
    user = await register(api)
    token = await login(api, user)
    session_id = (await api.get("/auth/me", token=token)).data["data"]["session"]
    page = await admin_console.get(f"/console/sessions?account={user['username']}")
    assert page.status_code == 200
    assert f'id="s-{session_id}"' in page.text and "Kick all sessions of" in page.text
    r = await admin_console.post(
        f"/console/sessions/{session_id}/kick", {"next": f"/console/sessions?account={user['username']}"}
    )
    assert r.status_code == 303 and r.headers["location"].endswith("&done=kicked")
    assert (await api.get("/auth/me", token=token)).status == 403
    rows = await admin_console.get(f"/console/sessions/rows?account={user['username']}")
    assert rows.status_code == 200 and "kicked" in rows.text and "<html" not in rows.text
    # An open redirect through `next` is not possible.
    other = await login(api, user)
    sid = (await api.get("/auth/me", token=other)).data["data"]["session"]
    r = await admin_console.post(f"/console/sessions/{sid}/kick", {"next": "https://evil.example/"})
    assert r.headers["location"] == "/console/sessions?done=kicked"


async def test_hostile_text_is_shown_as_text(admin_console, api):
    user = await register(api, nickname=HOSTILE)
    await api.post("/auth/auth", {"username": user["username"], "password": PASSWORD}, headers={"User-Agent": HOSTILE})
    for path in (f"/console/accounts/{user['id']}", f"/console/sessions?account={user['id']}", "/console/accounts"):
        r = await admin_console.get(path)
        assert r.status_code == 200
        assert HOSTILE not in r.text, path
    r = await admin_console.get(f"/console/accounts/{user['id']}")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    r = await admin_console.get("/console/accounts?q=" + httpx.QueryParams({"x": HOSTILE})["x"])
    assert HOSTILE not in r.text


async def test_account_actions(admin_console, api, gatehouse, admin):
    user = await register(api)
    token = await login(api, user)
    r = await admin_console.post(f"/console/accounts/{user['id']}/disable")
    assert r.status_code == 303 and r.headers["location"] == f"/console/accounts/{user['id']}?done=disabled"
    assert (await api.get("/auth/me", token=token)).status == 403
    page = await admin_console.get(r.headers["location"])
    assert "disabled" in page.text and "Account disabled" in page.text
    await admin_console.post(f"/console/accounts/{user['id']}/enable")
    token = await login(api, user)
    await admin_console.post(f"/console/accounts/{user['id']}/kick")
    assert (await api.get("/auth/me", token=token)).status == 403
    r = await admin_console.post(f"/console/accounts/{user['id']}/reset")
    assert r.headers["location"].endswith("done=reset_sent")
    for _ in range(100):  # delivery runs on the queue's worker, just after the answer
        outbox = await admin_console.get("/console/outbox")
        if user["email"] in outbox.text:
            break
        await asyncio.sleep(0.05)
    assert user["email"] in outbox.text and "reset" in outbox.text
    events = await admin_console.get(f"/console/events?account={user['id']}")
    for kind in ("disable", "enable", "kick", "code_sent"):
        assert f">{kind}<" in events.text, kind
    assert f">{admin['username']} (admin)</a>" in events.text and "admin:" not in events.text


async def test_the_console_and_the_admin_api_show_an_account_alike(admin_console, api, admin, gatehouse, clock):
    """One read model (`Admin.account_overview`) for both: the live sessions and the
    kicked ones (marked, until they expire), newest activity first; never a session a
    credential change voided without revoking it; and the same recent events."""
    user = await register(api)
    voided = await login(api, user)
    clock.advance(1)
    kicked = await login(api, user)
    kicked_id = (await api.get("/auth/me", token=kicked)).data["data"]["session"]
    assert (await api.delete(f"/admin/api/sessions/{kicked_id}", token=admin["token"])).status == 200
    # A credential change whose revocations never ran: the first session is void, not revoked.
    voided_id = (await api.get("/auth/me", token=voided)).data["data"]["session"]
    await gatehouse.db.accounts.update_one({"id": user["id"]}, {"$inc": {"cred_epoch": 1}})
    clock.advance(1)
    live_id = (await api.get("/auth/me", token=await login(api, user))).data["data"]["session"]

    r = await api.get(f"/admin/api/accounts/{user['id']}", token=admin["token"])
    assert [(s["id"], s["revoked"]) for s in r.data["sessions"]] == [(live_id, False), (kicked_id, True)]
    events = [e["id"] for e in r.data["events"]]
    overview = await gatehouse.admin.account_overview(user["id"])
    assert [s.id for s in overview.sessions] == [live_id, kicked_id]
    assert [str(e["_id"]) for e in overview.events] == events and r.data["events"][0]["type"] == "login_ok"

    page = (await admin_console.get(f"/console/accounts/{user['id']}")).text
    assert f"/console/sessions/{live_id}/kick" in page and voided_id not in page
    assert f'<tr id="s-{kicked_id}" class="revoked">' in page and f'<tr id="s-{live_id}" class="">' in page
    # The sessions list of that one account (console and admin API) is the same read.
    listed = (await api.get(f"/admin/api/sessions?account={user['id']}", token=admin["token"])).data["sessions"]
    assert [s["id"] for s in listed] == [live_id, kicked_id]
    rows = (await admin_console.get(f"/console/sessions?account={user['id']}")).text
    assert re.findall(r'<tr id="s-([0-9a-f]{32})"', rows) == [live_id, kicked_id]


async def test_bad_input_gets_a_clear_error_page(admin_console):
    for path, status in (
        ("/console/sessions?kind=bogus", 400),
        ("/console/sessions?cursor=nonsense", 400),
        ("/console/sessions?sort=bogus&order=sideways", 400),
        ("/console/accounts?sort=bogus", 400),
        ("/console/accounts/99999999", 404),
        ("/console/events?since=yesterday", 400),
        ("/console/events?type=bogus", 400),
        ("/console/accounts?page=0", 400),
    ):
        r = await admin_console.get(path)
        assert r.status_code == status, (path, r.status_code)
        assert_page_headers(r)
        assert "Traceback" not in r.text and "<h1>" in r.text
    # No writes through GET: logout has none, an action's GET is its confirmation page.
    assert (await admin_console.get("/console/logout")).status_code == 405
    assert (await admin_console.get("/console/sessions/" + "a" * 32 + "/kick")).status_code == 404


async def test_events_filter_and_dashboard(admin_console, api):
    user = await register(api)
    await api.post("/auth/auth", {"username": user["username"], "password": "wrong-password-1"})
    r = await admin_console.get("/console/events?type=login_failed&since=2000-01-01T00:00")
    rows = r.text.split("<tbody>")[1]
    assert r.status_code == 200 and f">{user['username']}</a>" in rows and "login_ok" not in rows
    r = await admin_console.get("/console/")
    assert r.status_code == 200 and "failed logins in 24 h" in r.text and "<svg" in r.text


@pytest.mark.parametrize("settings", [{"trust_proxy": 1}])
async def test_cookies_are_secure_behind_an_https_proxy(settings, console, admin):
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    page = await console.http.get("/console/login", headers=https)
    xsrf_cookie = next(c for c in page.headers.get_list("set-cookie") if c.startswith("__Host-gh_xsrf="))
    assert "Secure" in xsrf_cookie and "Path=/;" in xsrf_cookie + ";" and "Domain" not in xsrf_cookie
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    r = await console.http.post(
        "/console/login",
        data={"username": admin["username"], "password": PASSWORD, "_xsrf": xsrf},
        headers={**https, "Cookie": xsrf_cookie.split(";")[0]},
    )
    assert r.status_code == 303, r.text[:300]
    # Over HTTPS: __Host- cookies (Secure, Path=/, no Domain), so no other host or path
    # can plant or shadow them.
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("__Host-gh_console="))
    assert "Secure" in cookie and "Path=/;" in cookie + ";" and "Domain" not in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "max-age=31536000" in r.headers["strict-transport-security"]
    page = await console.http.get("/console/", headers={**https, "Cookie": cookie.split(";")[0]})
    assert page.status_code == 200 and "live sessions" in page.text


async def test_static_files_have_baseline_headers(console):
    r = await console.get("/static/console.js")
    assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
    assert "server" not in r.headers


# ---- the sessions table's self-refresh is not activity (issue 14) ----------------------

REFRESH = {"X-Gatehouse-Refresh": "1"}  # what static/console.js sends on its polls


async def console_session(gatehouse, admin) -> dict:
    return await gatehouse.db.sessions.find_one({"account_id": admin["id"], "kind": "console", "revoked_at": None})


async def test_the_self_refresh_says_so(console):
    from handlers.console import REFRESH_HEADER

    assert REFRESH_HEADER in REFRESH
    js = (await console.get("/static/console.js")).text
    assert '"X-Gatehouse-Refresh": "1"' in js


@pytest.mark.parametrize("settings", [{"last_active_resolution": 0}])
async def test_a_self_refresh_does_not_move_last_active(admin_console, gatehouse, clock, admin):
    before = await console_session(gatehouse, admin)
    clock.advance(5)
    for path in ("/console/sessions/rows", "/console/sessions"):
        assert (await admin_console.get(path, headers=REFRESH)).status_code == 200
    unmoved = await console_session(gatehouse, admin)
    assert unmoved["last_active"] == before["last_active"] and unmoved["expires_at"] == before["expires_at"]
    # An ordinary page load is the operator at work: it moves.
    clock.advance(5)
    assert (await admin_console.get("/console/sessions")).status_code == 200
    moved = await console_session(gatehouse, admin)
    assert (moved["last_active"] - before["last_active"]).total_seconds() >= 10
    assert moved["expires_at"] > before["expires_at"]


@pytest.mark.parametrize("settings", [{"last_active_resolution": 0}])
async def test_an_untouched_console_tab_logs_out_at_the_idle_timeout(admin_console, gatehouse, clock, admin, config):
    idle = config.console.console_idle_seconds
    # The tab polls all along; until the idle deadline the session is alive ...
    for _ in range(3):
        clock.advance((idle - 60) / 3)
        assert (await admin_console.get("/console/sessions/rows", headers=REFRESH)).status_code == 200
    # ... and past it, polls and pages alike go to the login page.
    clock.advance(120)
    r = await admin_console.get("/console/sessions/rows", headers=REFRESH)
    assert r.status_code == 302 and r.headers["location"].startswith("/console/login?")
    r = await admin_console.get("/console/sessions")
    assert r.status_code == 302 and r.headers["location"].startswith("/console/login?")
    assert await console_session(gatehouse, admin) is None or (
        (await console_session(gatehouse, admin))["expires_at"] <= clock()
    )


@pytest.mark.parametrize("settings", [{"last_active_resolution": 0}])
async def test_an_operator_at_work_stays_logged_in(admin_console, clock, config):
    idle = config.console.console_idle_seconds
    for _ in range(3):
        clock.advance((idle - 60) / 3)
        assert (await admin_console.get("/console/sessions")).status_code == 200
    clock.advance(120)  # past the first deadline, not past the one the page loads moved
    assert (await admin_console.get("/console/sessions/rows", headers=REFRESH)).status_code == 200
