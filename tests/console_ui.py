"""Helpers for the console's browser tests: axe-core, the phone-width checks (no
sideways scroll, 44 px tap targets), screenshots, and a quick seed of a console an
operator would recognise (300 accounts named in many scripts, 1,100 sessions from a
spread of real devices and apps).

axe-core comes from npm (package.json, installed by scripts/setup's `npm ci`). It is
evaluated through the DevTools protocol (`page.evaluate`), which the page's CSP
(`script-src 'self'`) does not govern, so the pages are checked under their real CSP:
no `bypass_csp` context is needed, and a CSP violation the console itself causes still
shows up in the tests' console-error checks.
"""

from __future__ import annotations

import os
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import phonenumbers

from bench import seed
from models.validation import email_key, username_key
from tests.conftest import ROOT, login, register

PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1366, "height": 800}
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
FAILING_IMPACTS = ("serious", "critical")

# ---- axe-core -------------------------------------------------------------------------

_AXE_RUN = """async (impacts) => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations.filter(v => impacts.includes(v.impact)).map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map(n => n.target.join(" ") + (n.any[0] ? " — " + n.any[0].message : "")),
  }));
}"""


async def axe_violations(page, impacts: tuple[str, ...] = FAILING_IMPACTS, limit: int = 5) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now, one
    readable line each ("color-contrast (serious): Elements must meet ...: 12 nodes:
    <selector> — <why>; ..."), so `assert await axe_violations(page) == []` fails
    saying what to fix. The first `limit` nodes of each rule are named."""
    if not AXE.exists():
        raise RuntimeError(f"{AXE} is missing: run scripts/setup (npm ci installs axe-core)")
    if not await page.evaluate("typeof window.axe === 'object'"):
        await page.evaluate(AXE.read_text())
    found = await page.evaluate(_AXE_RUN, list(impacts))
    lines = []
    for v in found:
        nodes = "; ".join(v["nodes"][:limit]) + (" ..." if len(v["nodes"]) > limit else "")
        lines.append(f"{v['id']} ({v['impact']}): {v['help']}: {len(v['nodes'])} node(s): {nodes}")
    return lines


# ---- phone width --------------------------------------------------------------------------


async def assert_no_sideways_scroll(page) -> None:
    """The page itself does not scroll sideways (a wide table may scroll in its box)."""
    wide = await page.evaluate(
        "[document.scrollingElement.scrollWidth, window.innerWidth,"
        " [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)"
        "  .slice(0, 3).map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : ''))]"
    )
    assert wide[0] <= wide[1] + 1, f"{page.url}: scrolls sideways ({wide[0]} > {wide[1]} px), widest: {wide[2]}"


# Controls an operator taps. Exempt, as WCAG 2.5.8 exempts them: links inside a
# sentence (a `p`, a `dd` or a `figcaption`), and hidden ones (the skip link until it
# is focused). A checkbox or radio is measured by its label, the thing one taps.
_TAP_TARGETS = """(minPx) => {
  const sel = "main a, main button, main input:not([type=hidden]), main select, main textarea, main summary,"
    + " header a, header button, header summary, header input, header select";
  const out = [];
  for (const el of document.querySelectorAll(sel)) {
    if (el.closest("p, dd, figcaption") && el.tagName === "A") continue;
    let box = el;
    if ((el.type === "checkbox" || el.type === "radio") && el.closest("label")) box = el.closest("label");
    const r = box.getBoundingClientRect();
    const style = getComputedStyle(box);
    if (r.width <= 1 || r.height <= 1 || style.visibility === "hidden" || !el.checkVisibility()) continue;
    if (r.height + 0.5 < minPx) {
      const name = (el.innerText || el.value || el.getAttribute("aria-label") || el.name || "").trim().slice(0, 30);
      out.push(`${el.tagName.toLowerCase()} "${name}" ${Math.round(r.width)}x${Math.round(r.height)}`);
    }
  }
  return out;
}"""


async def assert_tap_targets(page, min_px: int = 44) -> None:
    """Every visible button, link, input, select and summary in the header and `main`
    is at least `min_px` tall (Apple's and WCAG 2.5.5's 44 px), but for the exempt ones
    above."""
    small = await page.evaluate(_TAP_TARGETS, min_px)
    assert small == [], f"{page.url}: tap targets under {min_px} px: {small[:8]}{' ...' if len(small) > 8 else ''}"


async def screenshot(page, name: str, tmp_path: Path, full_page: bool = True) -> Path:
    """A screenshot (of the whole page, or of the first screen): docs/<name> with
    GATEHOUSE_SCREENSHOT=1 (the README's pictures: console.png at laptop width,
    console-phone.png at phone width), else in the test's tmp directory."""
    shot = ROOT / "docs" / name if os.environ.get("GATEHOUSE_SCREENSHOT") == "1" else tmp_path / name
    await page.screenshot(path=str(shot), full_page=full_page)
    assert shot.stat().st_size > 10_000
    return shot


# ---- a console worth looking at -----------------------------------------------------------

# (ASCII username stem, nickname as its owner writes it): usernames are ASCII
# (models/validation.py), nicknames any script.
PEOPLE = (
    ("zoe.simkova", "Zoë Šimková"),
    ("francois", "François Lefèvre"),
    ("joao", "João Gonçalves"),
    ("bjork", "Björk Guðmundsdóttir"),
    ("lukasz", "Łukasz Żółkiewski"),
    ("mueller", "Jürgen Müller"),
    ("nuno", "Núñez Peña"),
    ("dmitri", "Дмитрий Иванов"),
    ("olena", "Олена Шевченко"),
    ("anastasia", "Анастасия Ёлкина"),
    ("eleni", "Ελένη Παπαδοπούλου"),
    ("giorgos", "Γιώργος Νικολάου"),
    ("wang.fang", "王芳"),
    ("li.wei", "李伟"),
    ("tanaka", "田中 太郎"),
    ("suzuki", "鈴木 花子"),
    ("minjun", "김민준"),
    ("seoyeon", "이서연"),
    ("ahmed", "أحمد الفارسي"),
    ("fatima", "فاطمة الزهراء"),
    ("yosef", "יוסף כהן"),
    ("noa", "נועה לוי"),
    ("priya", "प्रिया शर्मा"),
    ("somchai", "สมชาย ใจดี"),
    ("armen", "Արմեն Պետրոսյան"),
    ("nino", "ნინო ბერიძე"),
    ("kwame", "Kwame Mensah"),
    ("sven", "Sven Ødegård"),
)

# User agents as they arrive: desktop and mobile browsers, scripts, an Android HTTP
# library, an iOS app.
_BLINK = "AppleWebKit/537.36 (KHTML, like Gecko)"
_MOBILE = "Mobile Safari/537.36"
_WEBKIT = "AppleWebKit/605.1.15 (KHTML, like Gecko)"
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) " + _BLINK + " Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4_1) " + _WEBKIT + " Version/17.4.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) " + _BLINK + " Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.67",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) " + _WEBKIT + " Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) " + _BLINK + " Chrome/124.0.6367.82 " + _MOBILE,
    "Mozilla/5.0 (Linux; Android 13; SM-S918B) " + _BLINK + " SamsungBrowser/24.0 Chrome/117.0.0.0 " + _MOBILE,
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) " + _WEBKIT + " CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1",
    "python-httpx/0.27.0",
    "python-requests/2.31.0",
    "okhttp/4.12.0",
    "MyApp/3.1 (iPhone; iOS 17.4)",
    "curl/8.5.0",
)
PHONE_FORMS = ("+1201555{:04d}", "+4915123{:06d}", "+8190{:08d}", "+7916{:07d}", "+336{:08d}", "+9665{:08d}",
               "+30210{:07d}", "+86138{:08d}", "+55119{:08d}", "+346{:08d}")  # fmt: skip


def _phone(rng: random.Random, taken: set[str]) -> str:
    while True:
        form = rng.choice(PHONE_FORMS)
        number = form.format(rng.randrange(10 ** int(form[-3])))  # the width in "{:0Nd}"
        if number not in taken and phonenumbers.is_valid_number(phonenumbers.parse(number)):
            taken.add(number)
            return number


def people(template: dict, first_id: int, count: int, rng: random.Random) -> list[dict]:
    """`count` accounts shaped like `template`, named after PEOPLE (a number after the
    name keeps each unique); a tenth are phone-only (no username, like API 001's)."""
    made, phones = [], set()
    base = {k: v for k, v in template.items() if k not in ("_id", "username", "username_key", "email", "email_key")}
    created = template["created"]
    for i in range(count):
        stem, nick = PEOPLE[i % len(PEOPLE)]
        doc = {**base, "id": first_id + i, "uid": str(uuid.uuid4()), "nickname": nick, "phone": _phone(rng, phones)}
        doc["created"] = created - timedelta(days=rng.uniform(0, 400))
        if i % 10 != 9:
            name = f"{stem}{i // len(PEOPLE) or ''}"
            email = f"{name}@{rng.choice(('example.test', 'mail.example', 'corp.example'))}"
            doc.update(username=name, username_key=username_key(name), email=email, email_key=email_key(email))
        doc["email_verified"] = "email" in doc and rng.random() < 0.6
        doc["phone_verified"] = rng.random() < 0.7
        made.append(doc)
    return made


def devices(sessions: list[dict], rng: random.Random) -> None:
    """Give each session a device and an address: a spread of real user agents, IPv4
    and IPv6."""
    for s in sessions:
        s["user_agent"] = rng.choice(USER_AGENTS)
        if rng.random() < 0.8:
            net = rng.choice((203, 198, 192, 81, 5))
            s["ip"] = f"{net}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        else:
            s["ip"] = f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(1, 65536):x}"


async def seed_console(gatehouse, api, *, accounts: int = 300, sessions: int = 1100, events: int = 1500,
                       rng_seed: int = 22) -> dict[str, Any]:  # fmt: skip
    """Insert a console's worth of data directly (a second or two, where the API would
    take minutes): copies of an account, session and event the server itself wrote
    through its API (bench/seed.py), renamed and given devices; a reset code sent to
    the template account puts a message in the (development) outbox. Then the
    dashboard's counters are recounted. Returns {"ids": [account ids], "busy": an account id with
    several sessions, "user": the template account's login (username, password)}."""
    rng, db, now = random.Random(rng_seed), gatehouse.db, datetime.now(UTC)
    user = await register(api)
    await login(api, user)
    r = await api.post("/auth/reset", {"username": user["username"]})  # a message in the outbox
    assert r.status == 200, r.data
    account = await db.accounts.find_one({"id": user["id"]})
    session = await db.sessions.find_one({"account_id": user["id"], "kind": "opaque"})
    event = await db.events.find_one({"account_id": user["id"], "type": "login_ok"})
    first = (await db.counters.find_one_and_update({"_id": "accounts"}, {"$inc": {"seq": accounts}}))["seq"] + 1
    ids = list(range(first, first + accounts))
    await db.accounts.insert_many(people(account, first, accounts, rng), ordered=False)
    owners = list(seed.session_owners(ids, sessions, rng))
    made = list(seed.sessions(session, iter(owners), now, rng))
    devices(made, rng)
    await db.sessions.insert_many(made, ordered=False)
    await db.events.insert_many(list(seed.events(event, ids, events, now, rng)), ordered=False)
    await gatehouse.recount()
    return {"ids": ids, "busy": max(set(owners), key=owners.count), "user": user}
