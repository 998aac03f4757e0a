"""What an attacker-review of the console found, kept as tests: digits that are not
ASCII, times out of any calendar's range, formulas hidden behind a separator in the CSV
export, a search's pages repeating a row, the account page's events link matching other
accounts, and a password typed into the login-name box kept in the log."""

# ruff: noqa: F811 - the console fixtures, imported from test_console, are parameters here
from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import timedelta
from urllib.parse import quote

from tests.conftest import login, register
from tests.test_console import admin_console, console  # noqa: F401 - fixtures

ETHIOPIC_ONE = "\u1369"  # str.isdigit() says yes, int() says no


async def test_digits_int_refuses_are_a_search_like_any_text(admin_console, api, admin):
    for path in ("/console/accounts?q=", "/console/sessions?q=", "/console/events?q=", "/console/sessions?account="):
        r = await admin_console.get(path + ETHIOPIC_ONE)
        assert r.status_code == 200, path
    for path in ("/admin/api/accounts?q=", "/admin/api/sessions?q=", "/admin/api/events?q="):
        assert (await api.get(path + ETHIOPIC_ONE, token=admin["token"])).status == 200, path
    r = await api.get("/admin/api/sessions?account=" + ETHIOPIC_ONE, token=admin["token"])
    assert r.status == 404


async def test_times_out_of_range_are_a_400(admin_console, api, admin):
    for query in ("until=0001-01-01T00:00", "since=9999-12-31T23:59", "until=1969-12-31T23:59"):
        r = await admin_console.get("/console/events?" + query)
        assert r.status_code == 400 and "between 1970 and 2200" in r.text, query
        assert (await admin_console.get("/console/events.csv?" + query)).status_code == 400
    for query in ("until=0001-01-01T00:00:00%2B00:00", "since=9999-12-31T23:59:59-14:00"):
        r = await api.get("/admin/api/events?" + query, token=admin["token"])
        assert r.status == 400 and r.data["error"] == "INVALID_REQUEST", query


async def test_a_formula_behind_a_separator_stays_text_in_the_csv(admin_console, api, admin):  # noqa: E501
    user = await register(api)
    note = quote("x;=1+2;=cmd|' /C calc'!A0")  # an operator's reason, pasted from somewhere
    assert (
        await api.post(f"/admin/api/accounts/{user['id']}/disable?reason={note}", {}, token=admin["token"])
    ).status == 200
    text = (await admin_console.get("/console/events.csv?type=disable")).text
    assert ";=" not in text and "cmd" in text
    line = next(row for row in text.splitlines() if "cmd" in row)
    assert line.startswith('"') and line.count('","') >= 8  # every cell quoted
    cells = next(csv.reader(io.StringIO(line)))
    assert all(not re.search(r"[;,\t|]\s*[=+\-@]", c) for c in cells), cells


async def test_a_searchs_pages_never_repeat_a_row(admin_console, api, admin, gatehouse):
    user = await register(api)
    await login(api, user)
    template = await gatehouse.db.sessions.find_one({"account_id": user["id"]})
    copies = []
    for i in range(59):
        at = template["last_active"] - timedelta(seconds=i + 1)
        copies.append({**template, "_id": uuid.uuid4().hex, "token_hash": uuid.uuid4().hex, "last_active": at})
    await gatehouse.db.sessions.insert_many(copies)
    seen: list[str] = []
    url = f"/admin/api/sessions?q={user['username']}"
    while url:
        page = (await api.get(url, token=admin["token"])).data
        seen += [s["id"] for s in page["sessions"]]
        url = f"/admin/api/sessions?q={user['username']}&cursor={page['next']}" if page["next"] else None
    assert len(seen) == len(set(seen)) == 60


async def test_the_account_pages_events_link_shows_that_account_only(admin_console, api, admin, gatehouse):
    a = await register(api)
    b = await register(api, nickname=f"{a['id']} fan club")
    await login(api, a)
    await login(api, b)
    page = (await admin_console.get(f"/console/accounts/{a['id']}")).text
    assert f'href="/console/events?account={a["id"]}"' in page
    events = (await admin_console.get(f"/console/events?account={a['id']}")).text
    ids = set(re.findall(r'<a href="/console/accounts/(\d+)"', events)) - {str(admin["id"])}
    assert ids == {str(a["id"])}
    api_events = (await api.get(f"/admin/api/events?account={a['id']}", token=admin["token"])).data["events"]
    assert {e["account_id"] for e in api_events} == {a["id"]}


async def test_a_password_typed_as_the_login_name_is_not_kept(api, admin, gatehouse):
    await api.post("/auth/auth", {"username": "Hunter2-Secret!Pass", "password": "whatever-1"})
    await api.post("/auth/auth", {"username": "nobody.here@example.org", "password": "whatever-1"})
    tried = [e.get("login") async for e in gatehouse.db.events.find({"type": "login_failed", "account_id": None})]
    assert "hu… (19 characters)" in tried and "nobody.here@example.org" in tried
    assert not any("secret" in (t or "") for t in tried)
