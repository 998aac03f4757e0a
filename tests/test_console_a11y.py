"""Every console page, in a real Chromium at laptop width (1366×800) and phone width
(390×844), over a console worth looking at (300 accounts named in many scripts, 1,100
sessions from many devices): axe-core finds no serious or critical violation, the
page does not scroll sideways, the skip link is the first stop and lands in `main`,
and at phone width every control is at least 44 px tall. Then the keyboard: Tab
reaches the nav, the filters and the table's actions in that order, each with a
visible focus indicator. Writes docs/console.png and docs/console-phone.png with
GATEHOUSE_SCREENSHOT=1."""

from __future__ import annotations

import fnmatch
import time

from tests.conftest import PASSWORD
from tests.console_ui import (
    LAPTOP,
    PHONE,
    USER_AGENTS,
    assert_no_sideways_scroll,
    assert_tap_targets,
    axe_violations,
    screenshot,
    seed_console,
)


def console_pages(seeded: dict) -> list[str]:
    busy = seeded["busy"]
    return [
        "/console/",
        "/console/sessions",
        f"/console/sessions?account={busy}",
        "/console/accounts",
        "/console/accounts?q=dmitri",
        f"/console/accounts/{busy}",
        "/console/events",
        "/console/outbox",
        "/console/accounts/999999",  # the console's own error page
    ]


# Pages whose tables do not carry data-label yet (their templates are being changed in
# other branches): at phone width their cards show values without column names. Empty
# this once those land; every page's table cells must then be labelled.
UNLABELLED_YET: tuple[str, ...] = ()

_UNLABELLED = """() => [...document.querySelectorAll("table.data tbody td")]
  .filter(td => !td.classList.contains("empty") && !td.classList.contains("act") && !td.querySelector("form"))
  .filter(td => getComputedStyle(td, "::before").content !== JSON.stringify(td.dataset.label || "\u0000"))
  .slice(0, 3).map(td => td.outerHTML.slice(0, 60))"""


async def unlabelled_cells(page, url: str) -> list[str]:
    """At phone width each data cell shows its column's name (td::before, from
    data-label)."""
    if any(fnmatch.fnmatch(url.split("?")[0], pattern) for pattern in UNLABELLED_YET):
        return []
    cells = await page.evaluate(_UNLABELLED)
    return [f"cells without a shown data-label: {cells}"] if cells else []


async def log_in(page, base_url: str, admin: dict) -> None:
    await page.fill("input[name=username]", admin["username"])
    await page.fill("input[name=password]", PASSWORD)
    await page.click("main button[type=submit]")
    await page.wait_for_url("**/console/")


_SKIP_LINK = """() => {
  const all = "a[href], button, input:not([type=hidden]), select, textarea, summary, [tabindex]";
  const focusable = [...document.querySelectorAll(all)]
    .filter(e => e.tabIndex >= 0 && !e.disabled);
  const first = focusable[0];
  return first ? first.outerHTML.slice(0, 80) : null;
}"""


async def skip_link_problems(page) -> list[str]:
    """The first focusable element is the skip link; following it focuses `main`."""
    first = await page.evaluate(_SKIP_LINK)
    if not first or 'href="#main"' not in first:
        return [f"the first focusable element is not the skip link: {first}"]
    await page.focus("a[href='#main']")
    await page.keyboard.press("Enter")
    focused = await page.evaluate("document.activeElement.id + ':' + document.activeElement.tagName")
    return [] if focused == "main:MAIN" else [f"the skip link moved focus to {focused}, not main"]


async def check_page(page, url: str, phone: bool) -> list[str]:
    """What is wrong with one page as it is now, as lines (empty: nothing)."""
    problems = list(await axe_violations(page))
    for check in [assert_no_sideways_scroll] + ([assert_tap_targets] if phone else []):
        try:
            await check(page)
        except AssertionError as e:
            problems.append(str(e))
    if phone:
        problems += await unlabelled_cells(page, url)
    problems += await skip_link_problems(page)
    return [f"{'phone' if phone else 'laptop'} {url}: {p}" for p in problems]


async def sweep(browser, base_url: str, admin: dict, pages: list[str], viewport: dict, tmp_path) -> list[str]:
    """The login page logged out, then every console page logged in, in one context."""
    phone = viewport == PHONE
    agent = USER_AGENTS[4] if phone else USER_AGENTS[0]  # an iPhone's Safari, a Windows Chrome
    context = await browser.new_context(viewport=viewport, user_agent=agent)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "404" not in m.text else None)
    await page.goto(base_url + "/console/login")
    problems = await check_page(page, "/console/login", phone)
    await log_in(page, base_url, admin)
    for url in pages:
        await page.goto(base_url + url)
        problems += await check_page(page, url, phone)
    await page.goto(base_url + "/console/sessions")
    # The README's pictures; at phone width the first screen (the whole page is 50 cards long).
    await screenshot(page, "console-phone.png" if phone else "console.png", tmp_path, full_page=not phone)
    await context.close()
    return problems + [f"script error: {e}" for e in errors]


async def test_every_page_is_accessible_at_laptop_and_phone_width(browser, base_url, api, admin, gatehouse, tmp_path):
    started = time.monotonic()
    seeded = await seed_console(gatehouse, api)
    pages = console_pages(seeded)
    problems = []
    for viewport in (LAPTOP, PHONE):
        problems += await sweep(browser, base_url, admin, pages, viewport, tmp_path)
    assert problems == [], "\n" + "\n".join(problems)
    print(f"a11y sweep of {len(pages) + 1} pages at 2 widths: {time.monotonic() - started:.1f} s")


_FOCUS = """() => {
  const e = document.activeElement;
  const s = getComputedStyle(e);
  const where = e.closest("header nav") ? "nav" : e.closest("form.filters") ? "filters"
    : e.closest("table") ? "table" : e.closest("header") ? "header" : e.closest("main") ? "main" : "other";
  const outline = s.outlineStyle !== "none" && parseFloat(s.outlineWidth) >= 2;
  return { where, tag: e.tagName.toLowerCase(), text: (e.innerText || e.name || "").trim().slice(0, 20),
           visible: outline || s.boxShadow !== "none" };
}"""


async def test_the_keyboard_reaches_nav_filters_and_table_actions_with_visible_focus(
    browser, base_url, api, admin, gatehouse
):
    await seed_console(gatehouse, api, accounts=30, sessions=60, events=20)
    context = await browser.new_context(viewport=LAPTOP)
    page = await context.new_page()
    await page.goto(base_url + "/console/login")
    await log_in(page, base_url, admin)
    await page.goto(base_url + "/console/sessions")
    stops = []
    for _ in range(40):
        await page.keyboard.press("Tab")
        stop = await page.evaluate(_FOCUS)
        stops.append(stop)
        if stop["where"] == "table" and stop["text"].startswith("Kick"):
            break
    places = [s["where"] for s in stops]
    assert stops[0]["text"] == "Skip to content", stops[0]
    assert "nav" in places and "filters" in places and places[-1] == "table", places
    assert places.index("nav") < places.index("filters") < places.index("table"), places
    assert stops[-1]["text"].startswith("Kick"), stops[-1]
    invisible = [s for s in stops if not s["visible"]]
    assert invisible == [], invisible
    await context.close()


# The markup the console's notices, confirmations and badges are meant to have (see
# static/console.css), checked here before the pages carry it: an announcement, the
# "session ended" banner, the "you" and "locked" badges, a confirmation naming what it
# acts on with a reason and a danger button, and table rows (kicked; the operator's own,
# with a link-styled action) as cards.
STYLE_KIT_HTML = """
<p class="notice" role="status">3 new sessions <a href="#">Show</a></p>
<p class="notice ended" role="alert"><strong>Your console session has ended.</strong>
  <a href="/console/login">Log in again</a></p>
<p><span class="you">this is you</span> <span class="badge locked">locked until 10:42</span>
  <span class="badge on">live</span></p>
<section class="confirm">
  <h1>Kick this session?</h1>
  <dl class="target"><dt>Account</dt><dd>Дмитрий Иванов (dmitri)</dd><dt>Device</dt><dd>Safari 17 on iOS</dd>
    <dt>IP</dt><dd>203.0.113.7</dd><dt>Age</dt><dd>3 days</dd></dl>
  <p class="self">This is your own session: kicking it logs you out.</p>
  <form method="post" action="#">
    <label>Reason (optional, goes into the audit log) <textarea name="reason"></textarea></label>
    <div class="buttons"><button type="submit" class="danger solid">Kick session</button><a href="#">Cancel</a></div>
  </form>
</section>
<div class="table-wrap"><table class="data">
  <thead><tr><th>Account</th><th>Kind</th><th><span class="visually-hidden">Actions</span></th></tr></thead>
  <tbody>
    <tr class="revoked"><td data-label="Account"><a href="#">gone</a></td><td data-label="Kind">jwt</td>
      <td class="act"></td></tr>
    <tr class="mine"><td data-label="Account"><a href="#">me</a> <span class="you">you</span></td>
      <td data-label="Kind">opaque</td>
      <td class="act"><a class="button danger small" href="#">Kick…</a></td></tr>
  </tbody>
</table></div>
"""


async def test_the_style_kit_for_notices_confirmations_and_badges_is_accessible(browser, base_url, admin, tmp_path):
    for viewport in (LAPTOP, PHONE):
        context = await browser.new_context(viewport=viewport)
        page = await context.new_page()
        await page.goto(base_url + "/console/login")
        await log_in(page, base_url, admin)
        await page.goto(base_url + "/console/outbox")
        await page.evaluate(
            "html => document.querySelector('main').insertAdjacentHTML('afterbegin', html)", STYLE_KIT_HTML
        )
        assert await axe_violations(page) == []
        await assert_no_sideways_scroll(page)
        if viewport == PHONE:
            await assert_tap_targets(page)
            label = await page.evaluate("getComputedStyle(document.querySelector('tr.mine td'), '::before').content")
            assert label == '"Account"'
        await page.screenshot(path=str(tmp_path / f"style-kit-{viewport['width']}.png"), full_page=True)
        await context.close()
