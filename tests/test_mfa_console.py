"""Second factors at the console and in the admin API (issue 20): an administrator with a
factor logs in in two steps; an account's page shows its factors and each session's
assurance; an administrator can reset a user's factors (audited, the owner told)."""

from __future__ import annotations

import re

from tests.conftest import login, register
from tests.test_console import Console, console  # noqa: F401 - the fixture
from tests.test_mfa import challenge, enrol


async def test_an_admin_with_a_factor_logs_in_to_the_console_in_two_steps(console, admin, api, clock):  # noqa: F811
    app, _, _ = await enrol(api, admin["token"], clock)
    r = await console.login(admin["username"])
    assert r.status_code == 200 and 'action="/console/login/mfa"' in r.text
    assert "gh_console" not in r.headers.get("set-cookie", "")
    token = re.search(r'name="challenge" value="([^"]+)"', r.text).group(1)
    wrong = await console.post("/console/login/mfa", {"challenge": token, "code": "12345x", "next": "/console/"})
    assert wrong.status_code == 400 and "gh_console" not in wrong.headers.get("set-cookie", "")
    # An API login's challenge does not open the console (nor the console's the API).
    api_challenge = (await api.post("/auth/auth", {"username": admin["username"], "password": admin["password"]})).data
    r = await console.post(
        "/console/login/mfa", {"challenge": api_challenge["mfa"]["challenge"], "code": app.code(1), "next": "/console/"}
    )
    assert r.status_code == 401 and "gh_console" not in r.headers.get("set-cookie", "")
    r = await api.post("/auth/mfa/verify", {"challenge": token, "code": app.code(1)})
    assert r.status == 401 and r.data["code"] == "MFA_CHALLENGE_INVALID"
    token = re.search(r'name="challenge" value="([^"]+)"', (await console.login(admin["username"])).text).group(1)
    r = await console.post("/console/login/mfa", {"challenge": token, "code": app.code(1), "next": "/console/"})
    assert r.status_code == 303 and r.headers["location"] == "/console/"
    assert (await console.get("/console/")).status_code == 200
    # The console session is at aal2, as the admin API shows it.
    sessions = (await api.get(f"/admin/api/sessions?account={admin['id']}&kind=console", token=admin["token"])).data
    assert [(s["aal"], s["amr"]) for s in sessions["sessions"]] == [(2, ["pwd", "totp"])]
    # The dashboard counts second factors shown and refused.
    stats = (await api.get("/admin/api/stats", token=admin["token"])).data
    assert (stats["mfa_24h"], stats["failed_mfa_24h"]) == (1, 2)  # wrong: one confirming the app, one here
    assert "second factors shown in 24 h" in (await console.get("/console/")).text


async def test_an_admin_resets_a_users_factors(console, admin, api, clock, gatehouse):  # noqa: F811
    user = await register(api)
    await enrol(api, await login(api, user), clock)
    overview = (await api.get(f"/admin/api/accounts/{user['id']}", token=admin["token"])).data
    assert [f["confirmed"] for f in overview["factors"]] == [True] and overview["recoveryCodesLeft"] == 10
    assert (await console.login(admin["username"])).status_code == 303
    page = await console.get(f"/console/accounts/{user['id']}")
    assert "Second factors" in page.text and "Reset second factors" in page.text and "aal2" in page.text
    rows = (await console.get(f"/console/sessions/rows?account={user['id']}")).text
    assert 'title="pwd + totp">aal2<' in rows  # the sessions page shows each session's assurance
    await challenge(api, user)  # two steps until the reset
    r = await console.post(f"/console/accounts/{user['id']}/mfa-reset")
    assert r.status_code == 303
    r = await api.post("/auth/auth", {"username": user["username"], "password": user["password"]})
    assert r.status == 200, r.data
    [event] = await gatehouse.events.find(account_id=user["id"], type="mfa_reset")
    assert event["actor"] == f"admin:{admin['id']}" and event["removed"] == 2
    assert (await api.post(f"/admin/api/accounts/{user['id']}/mfa/reset", {}, token=admin["token"])).data == {
        "removed": 0
    }
