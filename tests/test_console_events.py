"""The audit log as an operator reads it (/console/events and its CSV, /admin/api/events):
names instead of ids, the login name an unknown account's failed login tried, kick
targets and notes, filters by outcome, IP and time range (typed in the browser's zone),
presets, the CSV export and its defence against spreadsheet formulas, and bad filters as
400 pages."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from urllib.parse import urlencode

import pytest

from handlers.console import EventsCsvHandler, form_time, form_zone
from models.admin import resume_cursor
from models.common import Context
from tests.conftest import register
from tests.test_console import assert_page_headers, console  # noqa: F401 - the fixture

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)


@pytest.fixture
async def admin_console(console, admin):  # noqa: F811 - `console` is the imported fixture
    r = await console.login(admin["username"])
    assert r.status_code == 303
    return console


def rows_of(html: str) -> str:
    return html.split("<tbody>")[1].split("</tbody>")[0]


class Cells(HTMLParser):
    """Every <td> of `table.data`, with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.in_data = False
        self.tds: list[dict] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "data" in (attrs.get("class") or "").split():
            self.in_data = True
        elif tag == "td" and self.in_data:
            self.tds.append(attrs)

    def handle_endtag(self, tag):
        if tag == "table":
            self.in_data = False


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


async def test_rows_name_accounts_and_the_acting_admin(admin_console, api, admin, gatehouse):
    user = await register(api)
    await admin_console.post(f"/console/accounts/{user['id']}/disable")
    # An account that no longer exists, kicked by an administrator who no longer exists.
    await gatehouse.events.record("kick", Context(ip="10.0.0.1"), account_id=987654, actor="admin:987655")
    await gatehouse.events.record("refresh_reuse", None, account_id=user["id"], actor="gatehouse")
    r = await admin_console.get("/console/events")
    assert r.status_code == 200
    rows = rows_of(r.text)
    assert f'<a href="/console/accounts/{user["id"]}">{user["username"]}</a>' in rows
    assert f'<a href="/console/accounts/{admin["id"]}">{admin["username"]} (admin)</a>' in rows
    assert "#987654 (deleted)" in rows and "#987655 (deleted) (admin)" in rows
    assert "/console/accounts/987654" not in rows  # no link to a 404
    assert ">system<" in rows and "admin:" not in rows
    # Every cell of the table says which column it is (the phone layout stacks them).
    parser = Cells()
    parser.feed(r.text)
    labels = {td.get("data-label") for td in parser.tds}
    assert parser.tds and None not in labels
    assert {"When", "Event", "Account", "Outcome", "By", "IP", "Device"} <= labels
    # The dashboard's recent events name them too.
    assert f">{user['username']}</a>" in (await admin_console.get("/console/")).text


async def test_an_unknown_account_s_failed_login_shows_the_name_tried(admin_console, api, admin):
    user = await register(api)
    known = await api.post("/auth/auth", {"username": user["username"], "password": "Wrong-password-1"})
    unknown = await api.post("/auth/auth", {"username": "  Nobody.Here@Example.ORG ", "password": "Wrong-password-1"})
    # The answer tells nothing: the same status and body; only the log differs.
    assert known.status == unknown.status == 401
    # (document 003's envelope carries the second it answered in: that may tick between them)
    assert {**known.data, "time": 0} == {**unknown.data, "time": 0}
    r = await admin_console.get("/console/events?" + urlencode({"type": "login_failed"}))
    rows = rows_of(r.text)
    assert '<span class="muted">tried:</span> <span class="mono">nobody.here@example.org</span>' in rows
    assert "unknown_account" in rows and f">{user['username']}</a>" in rows
    # In the admin API too, and truncated to 64 characters.
    await api.post("/auth/auth", {"username": "x" * 300, "password": "Wrong-password-1"})
    events = (await api.get("/admin/api/events?type=login_failed&limit=10", token=admin["token"])).data
    tried = [e["login"] for e in events["events"] if e["reason"] == "unknown_account"]
    # (a name of no username, e-mail or phone shape may be a password: two characters kept)
    assert tried == ["xx… (128 characters)", "nobody.here@example.org"]
    assert all(e["login"] is None for e in events["events"] if e["reason"] != "unknown_account")


async def test_a_kick_names_the_session_and_shows_the_operator_s_note(admin_console, gatehouse, admin):
    user_id = admin["id"]
    created = datetime(2026, 11, 30, 9, 15, tzinfo=UTC)
    target = {"kind": "opaque", "ip": "10.0.0.1", "user_agent": CHROME, "created": created}
    await gatehouse.events.record(
        "kick", None, account_id=user_id, actor=f"admin:{admin['id']}", note="lost <phone>", target=target
    )
    rows = rows_of((await admin_console.get("/console/events?type=kick")).text)
    assert "opaque session, Chrome 120 on Windows, 10.0.0.1, started 2026-11-30 09:15 UTC" in rows
    assert "Reason: <q>lost &lt;phone&gt;</q>" in rows


async def test_filters_outcome_ip_and_time_range(admin_console, api, admin, gatehouse, clock):
    await gatehouse.events.record("login_ok", Context(ip="203.0.113.7"), account_id=admin["id"])
    await gatehouse.events.record("login_ok", Context(ip="10.1.2.3"), account_id=admin["id"])
    await gatehouse.events.record("login_failed", Context(ip="10.1.2.30"), outcome="failed", reason="wrong_password")
    clock.advance(3 * 3600)  # the three above are now three hours old
    await gatehouse.events.record("login_failed", Context(ip="10.1.2.3"), outcome="failed", reason="disabled")
    await admin_console.login(admin["username"])  # the console session idled out meanwhile

    async def shown(**query) -> str:
        r = await admin_console.get("/console/events?" + urlencode(query))
        assert r.status_code == 200, r.text[:300]
        return rows_of(r.text)

    failed = await shown(outcome="failed")
    assert "wrong_password" in failed and "disabled" in failed and "login_ok" not in failed
    assert "10.1.2.30" not in await shown(ip="10.1.2.3")  # a whole address is that address
    by_prefix = await shown(ip="10.1.")
    assert "10.1.2.3" in by_prefix and "10.1.2.30" in by_prefix and "203.0.113.7" not in by_prefix
    combined = await shown(ip="10.1.2.3", outcome="failed", last="24h")
    assert "disabled" in combined and "wrong_password" not in combined and "login_ok" not in combined
    # The presets end now: the last hour holds only the newest.
    recent = await shown(last="1h")
    assert "disabled" in recent and "wrong_password" not in recent and "203.0.113.7" not in recent
    # A range typed in the browser's zone: Tokyo is UTC+9 all year.
    now = clock()
    tokyo = ZoneTokyo(now)
    older = await shown(since=tokyo(now - timedelta(hours=4)), until=tokyo(now - timedelta(hours=2)), tz="Asia/Tokyo")
    assert "wrong_password" in older and "disabled" not in older
    # The same range as ISO 8601 with a zone, and in UTC without one (no JavaScript).
    utc = await shown(since=(now - timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M"))
    assert "wrong_password" in utc and "disabled" in utc
    iso = await shown(until=(now - timedelta(hours=2)).isoformat())
    assert "wrong_password" in iso and "disabled" not in iso


def ZoneTokyo(now: datetime):  # noqa: N802 - reads as a type in the test above
    return lambda when: (when + timedelta(hours=9)).strftime("%Y-%m-%dT%H:%M")


async def test_the_form_keeps_its_filters_and_offers_presets(admin_console):
    r = await admin_console.get(
        "/console/events?" + urlencode({"q": "nobody-at-all", "outcome": "failed", "tz": "UTC"})
    )
    assert r.status_code == 200  # an unknown account is an empty result, not a 404
    assert 'value="nobody-at-all"' in r.text and "No account matches <q>nobody-at-all</q>" in r.text
    assert "No events match." in r.text
    assert '<option value="failed" selected>' in r.text
    for key in ("1h", "24h", "7d"):
        assert "last=" + key in r.text
    assert 'href="/console/events.csv?q=nobody-at-all&amp;outcome=failed&amp;tz=UTC"' in r.text
    # Without a zone, the form says its times are UTC.
    assert "(UTC)" in (await admin_console.get("/console/events")).text
    # A preset fills the range, in the form's zone.
    r = await admin_console.get("/console/events?last=1h&tz=Asia/Tokyo")
    since = re.search(r'name="since" value="([^"]*)"', r.text).group(1)
    assert abs(datetime.fromisoformat(since) - datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=8)) < timedelta(
        minutes=2
    )
    assert '<a href="/console/events?tz=Asia%2FTokyo&amp;last=1h" aria-current="true">' in r.text


def test_form_times_are_read_in_the_browser_s_zone():
    berlin = form_zone("Europe/Berlin")
    assert form_time("since", "2026-01-15T10:00", berlin) == datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
    assert form_time("since", "2026-07-15T10:00", berlin) == datetime(2026, 7, 15, 8, 0, tzinfo=UTC)  # summer time
    assert form_time("since", "2026-07-15T10:00:30", None) == datetime(2026, 7, 15, 10, 0, 30, tzinfo=UTC)
    assert form_time("since", "2026-07-15T10:00:00-04:00", berlin) == datetime(2026, 7, 15, 14, 0, tzinfo=UTC)
    for junk in ("../../etc/passwd", "Mars/Olympus", "", None, "A" * 64):
        assert form_zone(junk) is None


@pytest.mark.parametrize(
    "query",
    [
        {"outcome": "maybe"},
        {"ip": "zz"},
        {"ip": "10.0.0.1/8"},
        {"since": "yesterday"},
        {"since": "2026-13-45T10:00"},
        {"until": "2026-01-01T00:00", "since": "2026-02-01T00:00"},
        {"last": "2d"},
        {"type": "bogus"},
        {"cursor": "nonsense"},
        {"since": "2026-01-01T00:00:00"},  # no zone
    ],
)
async def test_bad_filters_are_a_400_page(admin_console, query):
    if query == {"since": "2026-01-01T00:00:00"}:
        query = {"since": "2026-01-01T00:00:00.5"}  # neither the form's shape nor ISO with a zone
    paths = ("/console/events",) if "cursor" in query else ("/console/events", "/console/events.csv")
    for path in paths:  # (the export starts from the newest: it takes no cursor)
        r = await admin_console.get(path + "?" + urlencode(query))
        assert r.status_code == 400, (path, query, r.status_code)
        assert_page_headers(r)
        assert "<h1>" in r.text and "Traceback" not in r.text


async def test_the_admin_api_takes_the_same_filters(api, admin, gatehouse, clock):
    await gatehouse.events.record("login_ok", Context(ip="10.9.0.1"), account_id=admin["id"])
    await gatehouse.events.record("login_failed", Context(ip="10.9.0.2"), outcome="failed", reason="wrong_password")
    clock.advance(60)
    until = clock().isoformat()
    clock.advance(60)
    await gatehouse.events.record("login_failed", Context(ip="10.9.0.3"), outcome="failed", reason="disabled")

    async def ips(**query) -> list[str]:
        r = await api.get("/admin/api/events?" + urlencode(query), token=admin["token"])
        assert r.status == 200, r.data
        return [e["ip"] for e in r.data["events"]]

    assert await ips(ip="10.9.") == ["10.9.0.3", "10.9.0.2", "10.9.0.1"]
    assert await ips(ip="10.9.", outcome="failed") == ["10.9.0.3", "10.9.0.2"]
    assert await ips(ip="10.9.", until=until) == ["10.9.0.2", "10.9.0.1"]
    for bad in ({"outcome": "maybe"}, {"ip": "x"}, {"until": "tomorrow"}):
        r = await api.get("/admin/api/events?" + urlencode(bad), token=admin["token"])
        assert r.status == 400, (bad, r.data)


async def test_a_rare_match_stops_at_its_budget_and_resumes(admin, gatehouse):
    for i in range(30):
        await gatehouse.events.record("refresh", Context(ip=f"192.0.2.{i}"), account_id=admin["id"])
    await gatehouse.events.record("login_failed", Context(ip="198.51.100.1"), outcome="failed")
    for i in range(30):
        await gatehouse.events.record("refresh", Context(ip=f"192.0.2.{i}"), account_id=admin["id"])
    pages, cursor, found = 0, None, []
    while True:
        page = await gatehouse.admin.events(ip="198.51.100.", limit=5, cursor=cursor, budget=10)
        found += page.items
        pages += 1
        cursor = page.next
        if cursor is None:
            break
        assert pages < 50
    # More than one page (the budget stopped the first ones), the one match found once.
    assert pages > 1 and [e["ip"] for e in found] == ["198.51.100.1"]


def test_a_resume_cursor_skips_no_event_of_its_millisecond():
    from models.admin import after_event

    at = datetime(2026, 12, 1, 8, 0, 0, 123400, tzinfo=UTC)
    resumed_at, last_id = after_event(resume_cursor(at))
    # Stored times are whole milliseconds: nothing lies in [at, 08:00:00.124) but .124 itself.
    assert resumed_at == datetime(2026, 12, 1, 8, 0, 0, 124000, tzinfo=UTC) and str(last_id) == "0" * 24
    exact = datetime(2026, 12, 1, 8, 0, 0, 123000, tzinfo=UTC)
    assert after_event(resume_cursor(exact))[0] == exact


async def test_the_csv_export_is_the_filtered_view(admin_console, api, admin, gatehouse):
    user = await register(api)
    await api.post("/auth/auth", {"username": user["username"], "password": "Wrong-password-1"})
    await api.post("/auth/auth", {"username": "ghost-user", "password": "Wrong-password-1"})
    await gatehouse.events.record("login_ok", Context(ip="10.0.0.9", user_agent=CHROME), account_id=user["id"])
    r = await admin_console.get("/console/events.csv?outcome=failed")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="gatehouse-events-\d{8}-\d{6}\.csv"', r.headers["content-disposition"])
    rows = read_csv(r.text)
    assert rows[0] == [
        "time",
        "type",
        "outcome",
        "reason",
        "account id",
        "account name",
        "actor",
        "ip",
        "device",
        "note",
    ]
    body = rows[1:]
    assert {row[1] for row in body} == {"login_failed"} and len(body) >= 2
    mine = next(row for row in body if row[4] == str(user["id"]))
    assert mine[5] == user["username"] and mine[3] == "wrong_password"
    assert datetime.fromisoformat(mine[0]).tzinfo is not None
    ghost = next(row for row in body if row[3] == "unknown_account")
    assert ghost[4] == "" and ghost[5] == "tried: ghost-user"
    ok = read_csv((await admin_console.get(f"/console/events.csv?type=login_ok&q={user['username']}")).text)
    assert len(ok) == 2 and ok[1][7] == "10.0.0.9" and ok[1][8] == "Chrome 120 on Windows"
    # An unknown account: the header alone.
    assert read_csv((await admin_console.get("/console/events.csv?q=nobody-at-all")).text) == [rows[0]]


async def test_csv_cells_never_start_a_formula(admin_console, gatehouse, admin):
    notes = ['=HYPERLINK("http://evil")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "plain"]
    for note in notes:
        await gatehouse.events.record("disable", Context(ip="10.0.0.1"), account_id=admin["id"], note=note)
    await gatehouse.events.record("enable", Context(user_agent="=cmd|' /C calc'!A0"), account_id=admin["id"])
    rows = read_csv((await admin_console.get("/console/events.csv")).text)
    cells = [cell for row in rows[1:] for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    written = [row[9] for row in rows[1:] if row[1] == "disable"]
    assert sorted(written) == sorted("'" + n if n != "plain" else n for n in notes)


async def test_a_capped_export_says_so(admin_console, gatehouse, admin, monkeypatch):
    for _ in range(4):
        await gatehouse.events.record("refresh", None, account_id=admin["id"])
    monkeypatch.setattr(EventsCsvHandler, "export_cap", 3)
    rows = read_csv((await admin_console.get("/console/events.csv?type=refresh")).text)
    assert len(rows) == 1 + 3 + 1 and rows[-1][0].startswith("# capped at 3 events")


async def test_the_export_needs_a_console_login(console):  # noqa: F811 - the fixture
    r = await console.get("/console/events.csv")
    assert r.status_code == 302 and r.headers["location"].startswith("/console/login?")


async def test_times_are_local_with_utc_for_hover_keyboard_and_screen_readers(browser, base_url, admin, gatehouse):
    """In Chromium set to Tokyo (UTC+9): each <time> shows Tokyo's time; the UTC time
    is its title, a tooltip on keyboard focus, and its accessible description (what a
    screen reader reads after the text, per Chromium's accessibility tree). The filter
    form reads typed times as Tokyo's."""
    from tests.conftest import PASSWORD

    await gatehouse.events.record("login_ok", Context(ip="10.0.0.5"), account_id=admin["id"])
    context = await browser.new_context(timezone_id="Asia/Tokyo", locale="en-GB")
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    await page.goto(base_url + "/console/login?next=/console/events")
    await page.fill("input[name=username]", admin["username"])
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/events")
    time = page.locator("table.data time").first
    iso = await time.get_attribute("datetime")
    tokyo = datetime.fromisoformat(iso).astimezone(UTC) + timedelta(hours=9)
    assert tokyo.strftime("%H:%M:%S") in await time.inner_text()
    title = await time.get_attribute("title")
    assert title.startswith(datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S UTC"))
    # Keyboard: focusable, and the tooltip shows on focus.
    await time.focus()
    tip = page.locator("#" + await time.get_attribute("aria-describedby"))
    assert await tip.inner_text() == title and (await tip.bounding_box())["width"] > 20
    # A screen reader: the node's description is the UTC text.
    cdp = await context.new_cdp_session(page)
    tree = await cdp.send("Accessibility.getFullAXTree")
    local = await time.inner_text()
    node = next(n for n in tree["nodes"] if n.get("name", {}).get("value") == local and n.get("description"))
    assert node["description"]["value"] == title
    # The filter form: the hidden zone is the browser's, and a preset shows Tokyo's time.
    assert await page.locator("input[name=tz]").input_value() == "Asia/Tokyo"
    await page.click("text=Last hour")
    since = await page.locator("input[name=since]").input_value()
    expected = datetime.now(UTC) + timedelta(hours=9) - timedelta(hours=1)
    assert abs(datetime.fromisoformat(since) - expected.replace(tzinfo=None)) < timedelta(minutes=2)
    assert "(local time, Asia/Tokyo)" in await page.locator("[data-zone-hint]").first.inner_text()
    assert problems == []
    await context.close()
