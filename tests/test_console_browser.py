"""The console in a real headless Chromium (Debian's package, driven by Playwright):
log in, watch an API login appear without a reload, kick it, see the API refuse the
token."""

from __future__ import annotations

import re

import pytest

from tests.conftest import PASSWORD, failpoint, login, register


async def open_console(browser, base_url: str, admin: dict, width: int = 1280, height: int = 860):
    context = await browser.new_context(
        viewport={"width": width, "height": height}, user_agent="Gatehouse browser test"
    )
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    await page.goto(base_url + "/console/sessions")
    assert "/console/login" in page.url  # anonymous: sent to the login page
    await page.fill("input[name=username]", admin["username"])
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/sessions")
    return page, problems


async def show_new_sessions(page, timeout: int = 15_000) -> None:
    """Wait for the sessions page to announce new sessions, and show them."""
    notice = page.locator("#new-sessions")
    await notice.wait_for(state="visible", timeout=timeout)
    await notice.locator("button:text('Show')").click()
    await notice.wait_for(state="hidden", timeout=5_000)


async def test_a_new_login_appears_is_kicked_and_its_token_refused(browser, base_url, api, admin, tmp_path):
    page, problems = await open_console(browser, base_url, admin)
    assert await page.locator("h1").inner_text() == "Sessions"

    # A login through the API is announced without a reload (the table polls), and
    # shows when asked: rows never move under the operator's pointer by themselves.
    user = await register(api, nickname="Mallory <b>")
    token = await login(api, user)
    session_id = (await api.get("/auth/me", token=token)).data["data"]["session"]
    await show_new_sessions(page)
    row = page.locator(f"#s-{session_id}")
    await row.wait_for(timeout=5_000)
    assert user["username"] in await row.inner_text()
    assert "live" in await row.inner_text()
    assert "Tornado" in await row.inner_text()  # the device column, from the API client's user agent
    # One console session (ours) is listed too, kind "console".
    assert await page.locator("tr:has(span.badge:text-is('console'))").count() >= 1

    # The README's pictures come from tests/test_console_a11y.py (a seeded console).
    shot = tmp_path / "console.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # Kick it from its row: a confirmation page names it; the page comes back showing the kick.
    await row.locator("a:text('Kick')").click()
    await page.wait_for_url(re.compile(rf"/console/sessions/{session_id}/kick\?next="))
    assert user["username"] in await page.locator(".confirm .target").inner_text()
    await page.fill("textarea[name=reason]", "test kick")
    await page.click("button:text('Kick session')")
    await page.wait_for_url("**done=kicked")
    assert "Session kicked." in await page.locator(".flash").inner_text()
    assert "kicked" in await page.locator(f"#s-{session_id}").inner_text()
    assert await page.locator(f"#s-{session_id} a.button").count() == 0

    # ... and the API refuses the token at once.
    assert (await api.get("/auth/me", token=token)).status == 403
    assert problems == [], problems  # no script errors, no CSP violations


async def test_account_page_and_phone_width(browser, base_url, api, admin):
    user = await register(api, nickname="<script>alert('x')</script>")
    page, problems = await open_console(browser, base_url, admin, width=390, height=844)
    await page.goto(f"{base_url}/console/accounts?q={user['username']}")
    await page.click(f"a[href='/console/accounts/{user['id']}'] >> nth=0")
    await page.wait_for_url(f"**/console/accounts/{user['id']}")
    # The hostile nickname is text on the page, and no script ran.
    assert "<script>alert('x')</script>" in await page.locator(".facts").inner_text()
    # At phone width the page does not scroll sideways; wide tables scroll inside their box.
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, overflow
    await page.click("a.button:text('Disable')")
    await page.click("button:text('Disable account')")
    await page.wait_for_url("**done=disabled")
    assert "Account disabled" in await page.locator(".flash").inner_text()
    r = await api.post("/auth/auth", {"username": user["username"], "password": PASSWORD})
    assert r.status == 401
    assert problems == [], problems


async def test_an_untouched_sessions_tab_logs_out_at_the_idle_timeout(browser, base_url, admin, clock, config):
    """The table's polls (every 3 s) are not the operator at work: they do not keep the
    console session alive, and once it has idled out the tab shows the login page."""
    page, problems = await open_console(browser, base_url, admin)

    def is_poll(response) -> bool:
        return "/console/sessions/rows" in response.url

    clock.advance(config.console.console_idle_seconds - 60)
    async with page.expect_response(is_poll, timeout=15_000) as polled:
        pass
    poll = await polled.value
    assert poll.status == 200 and await poll.request.header_value("x-gatehouse-refresh") == "1"
    assert page.url.endswith("/console/sessions")
    # A touching poll would have moved the deadline by now; this one did not. The tab says
    # the session has ended, hides the sessions, and offers to log in again.
    clock.advance(120)
    ended = page.locator(".notice.ended")
    await ended.wait_for(timeout=15_000)
    assert "Your console session has ended" in await ended.inner_text()
    assert not await page.locator("#session-rows").is_visible()
    await ended.locator("a:text('Log in again')").click()
    await page.wait_for_url("**/console/login?next=%2Fconsole%2Fsessions")
    assert await page.locator("input[name=password]").count() == 1
    assert problems == [], problems


@pytest.mark.parametrize("settings", [{"admin_query_timeout_ms": 500}])
async def test_a_refresh_the_database_cannot_answer_in_time_says_so_and_keeps_the_rows(
    browser, base_url, api, admin, mongo_uri
):
    """The administrators' reads held in the database past their limit: the table keeps
    its rows, the note says why and since when, and once the database is quick the
    table refreshes again and the note is back to normal."""
    page, problems = await open_console(browser, base_url, admin)
    rows = await page.locator("#session-rows tr").count()
    note = page.locator("#refresh-note")
    assert await note.inner_text() == "Refreshes every few seconds"
    async with failpoint(
        mongo_uri, ["find", "aggregate"], app="gatehouse-admin", blockConnection=True, blockTimeMS=1500
    ):
        await page.locator("#refresh-note:has-text('took too long')").wait_for(timeout=20_000)
        text = await note.inner_text()
        assert "these rows are from" in text and "Trying again in 6 s" in text, text
        assert await page.locator("#session-rows tr").count() == rows
    user = await register(api)
    session_id = (await api.get("/auth/me", token=await login(api, user))).data["data"]["session"]
    await show_new_sessions(page, timeout=40_000)
    await page.locator(f"#s-{session_id}").wait_for(timeout=5_000)
    assert await note.inner_text() == "Refreshes every few seconds"
    # The browser reports each 503 as a failed resource; nothing else went wrong.
    assert all("503" in p for p in problems), problems


async def test_a_refresh_never_moves_the_row_under_the_pointer(browser, base_url, api, admin):
    """New sessions arriving during a refresh are announced, not inserted: the row under
    the pointer and the order of the rows stay; with a control focused, no refresh runs."""
    users = [await register(api) for _ in range(4)]
    for user in users:
        await login(api, user)
    page, problems = await open_console(browser, base_url, admin)
    rows = page.locator("#session-rows tr[id]")
    before = await rows.evaluate_all("rs => rs.map(r => r.id)")
    assert len(before) >= 5
    box = await rows.nth(2).bounding_box()
    await page.mouse.move(box["x"] + 40, box["y"] + box["height"] / 2)
    x, y = box["x"] + 40, box["y"] + box["height"] / 2
    under = f"() => document.elementFromPoint({x}, {y}).closest('tr').id"
    assert await page.evaluate(under) == before[2]

    for user in users[:3]:
        await login(api, user)
    notice = page.locator("#new-sessions")
    await notice.wait_for(state="visible", timeout=15_000)
    assert "3 new sessions" in await notice.inner_text()
    assert await page.evaluate(under) == before[2]
    assert await rows.evaluate_all("rs => rs.map(r => r.id)") == before

    # A focused control pauses the refresh: no poll while the account filter has focus.
    await page.focus("input[name=q]")
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/console/sessions/rows" in r.url else None)
    await page.wait_for_timeout(7_000)
    assert polls == []
    await page.locator("input[name=q]").blur()
    await page.wait_for_timeout(4_000)
    assert polls, "the refresh did not resume once the control lost focus"
    await notice.locator("button").click()
    assert (await rows.evaluate_all("rs => rs.map(r => r.id)"))[3:] == before
    assert problems == [], problems


async def test_the_dashboard_refreshes_itself(browser, base_url, api, admin):
    page, problems = await open_console(browser, base_url, admin)
    await page.goto(base_url + "/console/")
    count = page.locator("#stat-active-sessions")
    shown = int(await count.inner_text())
    await login(api, await register(api))
    await page.wait_for_function(
        "n => Number(document.getElementById('stat-active-sessions').textContent) > n", arg=shown, timeout=30_000
    )
    assert page.url.endswith("/console/")  # no reload: the regions were redrawn in place
    assert problems == [], problems
