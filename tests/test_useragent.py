"""The device column's names for real user agents (models/useragent.py)."""

from __future__ import annotations

import time

import pytest

from models.useragent import Agent, describe, parse

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)

CASES = [
    (CHROME_WINDOWS, "Chrome 120 on Windows"),
    (SAFARI_IPHONE, "Safari 17 on iOS 17.4 (iPhone)"),
    ("Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0", "Firefox 125 on Android 14"),
    (CHROME_WINDOWS + " Edg/120.0.2210.91", "Edge 120 on Windows"),
    (
        "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
        "Samsung Internet 24 on Android 14 (Samsung SM-S918B)",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Safari/605.1.15",
        "Safari 17 on macOS",
    ),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", "Firefox 125 on Linux"),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1",
        "Chrome 120 on iOS 17.4 (iPad)",
    ),
    # An Android app: OkHttp's own agent, and the platform's (Dalvik) one.
    ("okhttp/4.12.0", "okhttp 4.12"),
    ("Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/UQ1A.240205.004)", "Dalvik 2.1 on Android 14 (Pixel 8)"),
    # Libraries and tools: named by their product token, never "Python 0" or "Other".
    ("python-requests/2.31.0", "python-requests 2.31"),
    ("python-httpx/0.27.0", "python-httpx 0.27"),
    ("Python/3.11 aiohttp/3.9.1", "aiohttp 3.9"),
    ("curl/8.5.0", "curl 8.5"),
    ("Tornado/6.4", "Tornado 6.4"),
    ("Mozilla/5.0 (compatible; Tornado/6.4)", "Tornado 6.4"),
    ("Go-http-client/1.1", "Go-http-client 1.1"),
    # iOS apps: their own agent, and CFNetwork's default.
    ("MyApp/3.1 (iPhone; iOS 17.4)", "MyApp 3.1 on iOS 17.4 (iPhone)"),
    ("MyApp/3.1 (iPhone; iOS 17.4; Scale/3.00)", "MyApp 3.1 on iOS 17.4 (iPhone)"),
    ("MyApp/1.2 CFNetwork/1494.0.7 Darwin/23.4.0", "MyApp 1.2 on iOS 17.4"),
    # Nothing usable.
    ("", "unknown"),
    (None, "unknown"),
    ("   ", "unknown"),
    ("garbage", "garbage"),
    ("<script>alert(1)</script>", "unknown"),
    ("=cmd|' /C calc'!A0", "unknown"),
    ("\x00\x01\x02", "unknown"),
]


@pytest.mark.parametrize(("ua", "expected"), CASES)
def test_real_agents_get_short_sensible_names(ua, expected):
    assert describe(ua) == expected


def test_parse_gives_browser_os_and_device_apart():
    assert parse(SAFARI_IPHONE) == Agent("Safari 17", "iOS 17.4", "iPhone")
    assert parse("python-httpx/0.27.0") == Agent("python-httpx 0.27", None, None)
    assert parse("") == Agent(None, None, None)


@pytest.mark.parametrize(
    "ua",
    [
        "A" * 100_000,
        "Mozilla/5.0 (" + "a; " * 50_000 + ")",
        "Mozilla/5.0 " + "(" * 20_000,
        "x/" + "9" * 10_000,
        "MyApp/3.1 (iPhone; iOS " + "1." * 5_000 + ")",
        "\u202e\u0645\u0631\u062d\u0628\u0627/1.0 \U0001f600",
    ],
)
def test_long_and_hostile_agents_are_quick_and_short(ua):
    started = time.perf_counter()
    name = describe(ua)
    assert time.perf_counter() - started < 0.5
    assert 0 < len(name) < 120
    assert "<" not in name and "=" not in name[:1]


def test_parses_are_cached():
    describe("SomeClient/1.0")
    started = time.perf_counter()
    for _ in range(10_000):
        describe("SomeClient/1.0")
    assert time.perf_counter() - started < 0.5
