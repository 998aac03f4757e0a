"""A short "browser on OS" for a User-Agent header, for the console's device column.

A handful of ordered patterns covers the browsers and HTTP clients that log in here;
anything else shows its first product token. Deliberately small: the full ua-parser
regex set is a large dependency for one table column.
"""

from __future__ import annotations

import re

BROWSERS = (
    ("Edge", r"Edg(?:e|A|iOS)?/(\d+)"),
    ("Opera", r"OPR/(\d+)"),
    ("Samsung Internet", r"SamsungBrowser/(\d+)"),
    ("Firefox", r"(?:Firefox|FxiOS)/(\d+)"),
    ("Chrome", r"(?:HeadlessChrome|Chrome|CriOS)/(\d+)"),
    ("Safari", r"Version/(\d+)[.\d]* (?:Mobile/\S+ )?Safari/"),
    ("curl", r"^curl/(\d+)"),
    ("Python", r"^(?:python-requests|python-httpx|Python-urllib|aiohttp)/(\d+)"),
    ("Tornado", r"Tornado/(\d+)"),
)
SYSTEMS = (
    ("iOS", r"iPhone|iPad|iPod"),
    ("Android", r"Android"),
    ("Windows", r"Windows"),
    ("macOS", r"Mac OS X|Macintosh"),
    ("ChromeOS", r"CrOS"),
    ("Linux", r"Linux|X11"),
)


def describe(user_agent: str | None) -> str:
    ua = (user_agent or "").strip()
    if not ua:
        return "unknown"
    browser = next((f"{name} {m.group(1)}" for name, rx in BROWSERS if (m := re.search(rx, ua))), None)
    system = next((name for name, rx in SYSTEMS if re.search(rx, ua)), None)
    if browser is None:
        browser = ua.split(" ")[0].split("/")[0][:40] or "unknown"
    return f"{browser} on {system}" if system else browser
