"""Hostile but well-formed input (issue 14): every one gets a 4xx in its route's own
envelope, never a 500, and leaves no ERROR record with a traceback in the log.

Deeply nested JSON and lone surrogates reach one place (`APIHandler.json_body`); control
characters in a path (static files included) are a 404; control characters in the
console's `next=` send the browser to a safe default instead of into a header.
"""

from __future__ import annotations

import json
import logging
import re

import httpx
import pytest

from handlers.base import MAX_JSON_DEPTH
from tests.conftest import PASSWORD, assert_error

# One login route per API style and the field its login name goes in; `assert_style_400`
# checks the error envelope its document prescribes.
STYLES = {
    "native": ("/auth/auth", "username"),
    "drf": ("/api/auth/login/", "username"),
    "phone": ("/auth/api/login/", "phone"),
    "simple": ("/auth/", "username"),
    "v1": ("/api/v1/auth/login", "user"),
}


def assert_style_400(style: str, r) -> None:
    assert r.status == 400, (style, r.status, r.data)
    if style == "native":
        assert_error(r, 400, "INVALID_REQUEST")
    elif style == "drf":
        assert set(r.data) == {"detail"} and r.data["detail"]
    elif style == "phone":
        assert set(r.data) == {"error"} and r.data["error"]
    elif style == "simple":
        assert r.data["error"] == "invalid_request" and r.data["message"]
    else:
        assert r.data["code"] == 40001 and r.data["error"] == "invalid_request" and r.data["desc"]
        assert r.data["result"] == {k: r.data[k] for k in ("code", "error", "desc")}


@pytest.fixture
def no_tracebacks(caplog):
    """Fails the test if the app logged an ERROR (a 500's access line, or a traceback)."""
    caplog.set_level(logging.INFO)
    yield caplog
    records = caplog.get_records("setup") + caplog.get_records("call")
    ours = [r for r in records if r.name.split(".")[0] in ("tornado", "gatehouse")]
    assert any(r.name == "gatehouse.access" for r in ours), "the access log was not captured"
    errors = [r for r in ours if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]


def raw_post(api, path: str, body: bytes):
    return api.post(path, raw=body, headers={"Content-Type": "application/json"})


# ---- JSON bodies ---------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 100_000, id="100000-unclosed-brackets"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="100000-brackets"),
        pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, id="100000-objects"),
        pytest.param(b'{"username": ' + b"[" * 5000 + b"]" * 5000 + b"}", id="5000-deep-value"),
    ],
)
async def test_deeply_nested_json_is_a_400(api, no_tracebacks, style, body):
    path, _ = STYLES[style]
    r = await raw_post(api, path, body)
    assert_style_400(style, r)


def nested(depth: int) -> bytes:
    """A JSON object whose containers nest `depth` deep (the object itself counts)."""
    return b'{"username": "someone", "x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize("style", STYLES)
async def test_nesting_is_capped_at_a_sane_depth(api, no_tracebacks, style):
    path, _ = STYLES[style]
    r = await raw_post(api, path, nested(MAX_JSON_DEPTH + 1))
    assert_style_400(style, r)
    assert "nested" in json.dumps(r.data)
    # At the cap itself the body is read, and the route answers as it would anyway
    # (this login has no password: a 400 for the missing field, not for nesting).
    r = await raw_post(api, path, nested(MAX_JSON_DEPTH))
    assert r.status == 400 and "nested" not in json.dumps(r.data)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"NAME": "\\ud800", "password": "Correct-horse-42"}', id="in-the-login-name"),
        pytest.param(b'{"NAME": "someone", "password": "Correct-horse\\udc00-42"}', id="in-the-password"),
        pytest.param(b'{"NAME": "someone", "password": "x", "\\ud800": 1}', id="in-a-key"),
        pytest.param(b'{"NAME": "someone", "password": "x", "extra": [{"deep": "\\udfff"}]}', id="nested"),
        pytest.param(b'{"NAME": "someone", "password": "x", "raw": "\xed\xa0\x80"}', id="utf-8-encoded"),
    ],
)
async def test_lone_surrogates_are_a_400(api, no_tracebacks, style, body):
    path, name = STYLES[style]
    r = await raw_post(api, path, body.replace(b"NAME", name.encode()))
    assert_style_400(style, r)


async def test_a_valid_surrogate_pair_is_ordinary_text(api, no_tracebacks):
    # "\ud83d\ude00" is one character (😀), not a lone surrogate: a wrong password, not a 400.
    r = await raw_post(api, "/auth/auth", b'{"username": "someone", "password": "pass\\ud83d\\ude00word"}')
    assert_error(r, 401, "INVALID_CREDENTIALS")


# ---- control characters in paths -------------------------------------------------------

PATHS = [
    "/static/%00",
    "/static/console.css%00",
    "/static/%00console.css",
    "/static/console.js%0d%0a",
    "/static/%01",
    "/static/%7f",
    "/console/%00",
    "/console/login%00",
    "/console/sessions%0d%0aSet-Cookie:x",
    "/console/accounts/1%00",
    "/auth/sessions/%00",
    "/auth/%00",
    "/api/v1/%00",
    "/api/auth/users/%00/",
    "/admin/api/sessions/%00",
    "/%00",
]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("path", PATHS)
async def test_control_characters_in_a_path_are_not_found(base_url, admin, no_tracebacks, method, path):
    async with httpx.AsyncClient(base_url=base_url) as client:
        r = await client.request(method, path, headers={"Authorization": admin["token"]})
    assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:200])
    if method == "GET":
        # 405 where the route exists but not for GET (/auth/sessions/<id>).
        assert r.status_code in (400, 404, 405), (path, r.status_code)
    assert "set-cookie" not in r.headers
    assert b"Traceback" not in r.content


async def test_static_files_are_still_served(base_url, no_tracebacks):
    async with httpx.AsyncClient(base_url=base_url) as client:
        r = await client.get("/static/console.css")
    assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"


# ---- the console's next= ---------------------------------------------------------------

HOSTILE_NEXT = [
    "/console/\r\nSet-Cookie: x=1",
    "/console/\nLocation: https://evil.example/",
    "/console/\x00\r\nSet-Cookie: x=1",
    "/console/\x1b[31m",
    "/console/\u20ac",
    "/console/\\evil.example",
    "//evil.example/console/",
    "https://evil.example/console/",
]


class ConsoleClient:
    """Just enough of a browser for the console: cookies and the form's XSRF token."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, follow_redirects=False, timeout=30)

    async def xsrf(self, page: str = "/console/login") -> str:
        page = await self.http.get(page)
        return re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)

    async def login(self, username: str, next_url: str) -> httpx.Response:
        data = {"username": username, "password": PASSWORD, "_xsrf": await self.xsrf()}
        return await self.http.post("/console/login", params={"next": next_url}, data=data)


@pytest.fixture
async def console(base_url):
    client = ConsoleClient(base_url)
    yield client
    await client.http.aclose()


def assert_safe_redirect(r: httpx.Response) -> None:
    assert r.status_code in (302, 303), (r.status_code, r.text[:200])
    assert r.headers["location"] == "/console/"
    cookies = r.headers.get_list("set-cookie")
    assert not any(c.lower().startswith("x=") for c in cookies), cookies


@pytest.mark.parametrize("next_url", HOSTILE_NEXT)
async def test_a_hostile_next_on_login_goes_to_the_dashboard(console, admin, no_tracebacks, next_url):
    # The login page itself renders (the value is only ever a hidden field) ...
    page = await console.http.get("/console/login", params={"next": next_url})
    assert page.status_code == 200
    assert 'name="next" value="/console/"' in page.text
    # ... logging in sends the browser to the dashboard, not into a split header ...
    assert_safe_redirect(await console.login(admin["username"], next_url))
    # ... and so does the login page once logged in (the GET redirect).
    assert_safe_redirect(await console.http.get("/console/login", params={"next": next_url}))


async def test_a_safe_next_is_still_followed(console, admin, no_tracebacks):
    r = await console.login(admin["username"], "/console/sessions?kind=jwt&active=1")
    assert r.status_code == 303 and r.headers["location"] == "/console/sessions?kind=jwt&active=1"


async def test_a_hostile_next_after_a_form_post_stays_in_the_console(console, admin, api, no_tracebacks):
    assert (await console.login(admin["username"], "/console/")).status_code == 303
    data = {"_xsrf": await console.xsrf("/console/"), "next": "/console/\r\nSet-Cookie: x=1"}
    r = await console.http.post(f"/console/accounts/{admin['id']}/enable", data=data)
    assert r.status_code == 303 and r.headers["location"].startswith(f"/console/accounts/{admin['id']}?done=")


async def test_invalid_utf8_in_a_console_form_is_a_400(console, admin, no_tracebacks):
    # A form can only carry a surrogate as invalid UTF-8; Tornado's strict decoding of
    # form fields refuses it, so the console never holds a string it cannot encode.
    token = await console.xsrf()
    body = b"username=%ED%A0%80&password=x&_xsrf=" + token.encode()
    r = await console.http.post(
        "/console/login", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 400 and "text/html" in r.headers["content-type"]


# ---- query values ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["%00", "%0d%0a", "%1b", "%ff", "%ed%a0%80"])
async def test_control_characters_and_bad_utf8_in_query_values(api, admin, console, no_tracebacks, value):
    # Tornado turns C0 controls in arguments into spaces and refuses invalid UTF-8
    # (a surrogate included) with a 400; nothing reaches a query or a page unchecked.
    for path in ("/admin/api/accounts?q=", "/admin/api/sessions?account=", "/admin/api/events?cursor="):
        r = await api.get(path + value, token=admin["token"])
        assert r.status in (200, 400, 404), (path, r.status, r.data)
    assert (await console.login(admin["username"], "/console/")).status_code == 303
    for path in ("/console/accounts?q=", "/console/sessions?account=", "/console/events?since="):
        r = await console.http.get(path + value)
        assert r.status_code in (200, 400, 404), (path, r.status_code)
