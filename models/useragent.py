"""What a User-Agent header says about the client: browser, OS and device, for the
console's device column and the audit log's CSV.

Browsers are parsed by ua-parser (uap-core's maintained regexes, refreshed with each
`ua-parser-builtins` release). Those rules know browsers and a few well-known HTTP
clients, but an app's or a library's own agent (`python-httpx/0.27.0`,
`MyApp/3.1 (iPhone; iOS 17.4)`, `Tornado/6.4`) is best named by its first product token,
so anything that does not present itself as a browser (`Mozilla/…`) is named that way,
with the OS and device the parser found in the rest of the string.

Parses are cached: a list of sessions or events names hundreds of agents, mostly the
same few.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import ua_parser

# The longest agent parsed (events store 512 characters; longer is never informative).
MAX_LEN = 512
# A product token, `name/version` (RFC 9110 section 10.1.5), at the start of the agent.
PRODUCT_RE = re.compile(r"([A-Za-z][A-Za-z0-9._+-]{0,39})(?:/v?(\d{1,6})(?:\.(\d{1,6}))?)?")
COMPATIBLE_RE = re.compile(r"\(compatible; ?([^;)]{1,80})")
# Runtimes that some libraries put first (`Python/3.11 aiohttp/3.9.1`): the next token
# names the client better.
RUNTIMES = frozenset({"python", "java", "dart", "go", "node", "ruby", "php"})
BROWSER_NAMES = {
    "Mobile Safari": "Safari",
    "Mobile Safari UI/WKWebView": "Safari web view",
    "Chrome Mobile": "Chrome",
    "Chrome Mobile iOS": "Chrome",
    "Chrome Mobile WebView": "Chrome web view",
    "HeadlessChrome": "Headless Chrome",
    "Firefox Mobile": "Firefox",
    "Firefox iOS": "Firefox",
    "Edge Mobile": "Edge",
    "Opera Mobile": "Opera",
}
OS_NAMES = {"Mac OS X": "macOS", "Chrome OS": "ChromeOS", "Other": None}
# Systems whose version in agents is frozen or ambiguous (Windows 11 sends "NT 10.0",
# Safari and Chrome on every macOS send 10_15_7): their number would mislead.
UNVERSIONED_OS = frozenset({"Windows", "macOS", "Linux", "ChromeOS", "Ubuntu", "Fedora"})
# Device families that say nothing the OS does not.
VAGUE_DEVICES = frozenset(
    {"Other", "Generic Smartphone", "Generic Tablet", "Generic Feature Phone", "Mac", "iOS-Device", "Spider", "K"}
)


@dataclass(frozen=True)
class Agent:
    """A parsed user agent: each part None when the agent does not say."""

    browser: str | None
    os: str | None
    device: str | None

    def describe(self) -> str:
        """`Chrome 120 on Windows`, `MyApp 3.1 on iOS 17.4 (iPhone)`, `curl 8.5`."""
        text = self.browser or "unknown"
        if self.os:
            text += f" on {self.os}"
        if self.device:
            text += f" ({self.device})"
        return text


def describe(user_agent: str | None) -> str:
    """A short "Browser N on OS (device)" for a list's device column ("unknown" when
    the agent says nothing usable)."""
    return parse(user_agent).describe()


def parse(user_agent: str | None) -> Agent:
    return _parse((user_agent or "").strip()[:MAX_LEN])


@lru_cache(maxsize=4096)
def _parse(ua: str) -> Agent:
    if not ua:
        return Agent(None, None, None)
    found = ua_parser.parse(ua)
    is_browser = ua.startswith("Mozilla/") or ua.startswith("Opera/")
    browser = (_browser(found.user_agent) or _compatible(ua) if is_browser else None) or _product(ua)
    if browser is None:
        browser = _browser(found.user_agent)
    return Agent(browser, _os(found.os), _device(found.device))


def _browser(agent: ua_parser.UserAgent | None) -> str | None:
    if agent is None or agent.family in ("Other", ""):
        return None
    name = BROWSER_NAMES.get(agent.family, agent.family)
    return f"{name} {agent.major}" if agent.major else name


def _product(ua: str) -> str | None:
    """The agent's first product token as `name major.minor` (a leading runtime
    skipped when a versioned token follows); None when it does not start with one."""
    words = ua.split(None, 2)
    first = PRODUCT_RE.match(words[0])
    if first is None:
        return None
    if first.group(1).lower() in RUNTIMES and len(words) > 1:
        second = PRODUCT_RE.match(words[1])
        first = second if second is not None and second.group(2) else first
    name, major, minor = first.groups()
    if major is None:
        return name
    return f"{name} {major}.{minor}" if minor is not None else f"{name} {major}"


def _compatible(ua: str) -> str | None:
    """`Mozilla/5.0 (compatible; Tornado/6.4)`: the client named inside."""
    m = COMPATIBLE_RE.search(ua)
    return _product(m.group(1)) if m else None


def _os(os: ua_parser.OS | None) -> str | None:
    if os is None:
        return None
    name = OS_NAMES.get(os.family, os.family)
    if name is None or name in UNVERSIONED_OS or not os.major:
        return name
    return f"{name} {os.major}.{os.minor}" if os.minor else f"{name} {os.major}"


def _device(device: ua_parser.Device | None) -> str | None:
    if device is None or device.family in VAGUE_DEVICES:
        return None
    return device.family[:40]
