"""CORS for browser apps on other origins (issue 18): `GATEHOUSE_CORS_ORIGINS`.

The rules with plain HTTP first (preflights, actual answers and errors, origins not on the
list, the routes that never grant CORS), then a real Chromium: a page served from a
second local origin signs up, logs in, asks `/auth/me`, refreshes and logs out with
`fetch`, and a page from an origin not on the list is refused by the browser itself.
"""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from devdb import free_port
from tests.conftest import PASSWORD, register, unique
from tests.test_deadlines import slow

APP_PORT = free_port()  # the browser app's own origin (a second local server)
OTHER_PORT = free_port()  # an origin that is not on the list
APP = f"http://127.0.0.1:{APP_PORT}"
OTHER = f"http://127.0.0.1:{OTHER_PORT}"
CORS = pytest.mark.parametrize("settings", [{"cors_origins": (APP, "https://app.example.com")}])


async def preflight(base_url: str, path: str, origin: str, method: str = "POST") -> httpx.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with httpx.AsyncClient() as http:
        return await http.request("OPTIONS", base_url + path, headers=headers)


async def get(base_url: str, path: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(base_url + path, headers=headers)


@pytest.mark.parametrize(
    "path",
    [
        "/auth/auth",
        "/auth/me",
        "/auth/token/refresh",
        "/api/auth/login/",
        "/auth/api/login/",
        "/auth/",
        "/api/v1/auth/login",
    ],
)
@CORS
async def test_a_preflight_from_a_listed_origin_is_answered_before_any_authentication(settings, base_url, path):
    r = await preflight(base_url, path, APP, method="GET" if path == "/auth/me" else "POST")
    assert r.status_code == 204, r.text
    assert r.headers["Access-Control-Allow-Origin"] == APP
    assert "POST" in r.headers["Access-Control-Allow-Methods"] or "GET" in r.headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert int(r.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in r.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in r.headers and r.content == b""


@CORS
async def test_answers_and_errors_carry_the_origin_and_expose_what_a_script_needs(settings, base_url, api):
    user = await register(api)
    async with httpx.AsyncClient(base_url=base_url, headers={"Origin": APP}) as http:
        ok = await http.post("/auth/auth", json={"username": user["username"], "password": PASSWORD})
        wrong = await http.post("/auth/auth", json={"username": user["username"], "password": "wrong-Pass-1"})
        anonymous = await http.get("/auth/me")
    for r in (ok, wrong, anonymous):
        assert r.headers["Access-Control-Allow-Origin"] == APP, (r.status_code, dict(r.headers))
        exposed = {h.strip().lower() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"retry-after", "x-request-id"} <= exposed
        assert "Origin" in r.headers["Vary"]
    assert (ok.status_code, wrong.status_code, anonymous.status_code) == (200, 401, 403)


@CORS
async def test_origins_not_on_the_list_and_the_operator_routes_get_no_cors_at_all(settings, base_url, admin):
    assert (await preflight(base_url, "/auth/auth", OTHER)).status_code == 405
    r = await get(base_url, "/auth/me", Origin=OTHER)
    assert "Access-Control-Allow-Origin" not in r.headers
    for path in ("/admin/api/sessions", "/console/sessions", "/console/login"):
        r = await preflight(base_url, path, APP, method="GET")
        assert r.status_code in (403, 405) and "Access-Control-Allow-Origin" not in r.headers, (path, r.status_code)
        r = await get(base_url, path, Origin=APP, Authorization=admin["token"])
        assert "Access-Control-Allow-Origin" not in r.headers, path


@CORS
async def test_no_cors_where_there_is_no_route_method_or_browser_business(settings, base_url, admin, caplog):
    """Unknown paths (anywhere, /admin/api and /console included), a method the route
    does not have, and the routes for operators' tools (metrics, service-key
    introspection): no preflight succeeds and no answer names the origin. drf's
    admin-only users/ answers its preflight like any route, with nothing logged."""
    for path in ("/admin/api/nope", "/console/nope", "/no/such/route", "/metrics", "/auth/introspect"):
        r = await preflight(base_url, path, APP, method="GET")
        assert r.status_code in (404, 405) and "Access-Control-Allow-Origin" not in r.headers, (path, r.status_code)
        r = await get(base_url, path, Origin=APP)
        assert "Access-Control-Allow-Origin" not in r.headers, path
    assert (await preflight(base_url, "/auth/auth", APP, method="DELETE")).status_code == 405
    r = await preflight(base_url, "/api/auth/users/", APP, method="GET")
    assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"] == APP
    assert [rec for rec in caplog.records if rec.levelname == "ERROR"] == []


async def test_without_the_setting_there_is_no_cors(base_url):
    """Unset (the default): no route answers a preflight, none names an origin."""
    assert (await preflight(base_url, "/auth/auth", APP)).status_code == 405
    r = await get(base_url, "/auth/me", Origin=APP)
    assert not [h for h in r.headers if h.lower().startswith("access-control-")]
    assert "Vary" not in r.headers


class AppPage(BaseHTTPRequestHandler):
    """The browser app: one page on its own origin, whose script is driven by the test."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = b"<!doctype html><title>app</title><p>browser app</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def app_pages():
    servers = [ThreadingHTTPServer(("127.0.0.1", port), AppPage) for port in (APP_PORT, OTHER_PORT)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield
    for server in servers:
        server.shutdown()
        server.server_close()


FLOW = """async ([base, name, password]) => {
  const json = {"Content-Type": "application/json"};
  const call = async (path, init) => {
    const r = await fetch(base + path, init);
    return {status: r.status, body: await r.json(), rid: r.headers.get("X-Request-ID")};
  };
  const signup = await call("/auth/register", {method: "POST", headers: json,
    body: JSON.stringify({username: name, password: password})});
  const login = await call("/auth/token", {method: "POST", headers: json,
    body: JSON.stringify({username: name, password: password})});
  const bearer = {"Authorization": "Bearer " + login.body.data.access_token};
  const me = await call("/auth/me", {headers: bearer});
  const refreshed = await call("/auth/token/refresh", {method: "POST", headers: json,
    body: JSON.stringify({refresh_token: login.body.data.refresh_token})});
  const bearer2 = {"Authorization": "Bearer " + refreshed.body.data.access_token};
  const logout = await call("/auth/logout", {method: "POST", headers: bearer2});
  const after = await call("/auth/me", {headers: bearer2});
  return {signup, login, me, refreshed, logout, after};
}"""

REFUSED = """async (base) => {
  try { await fetch(base + "/auth/me"); return "answered"; } catch (e) { return e.name; }
}"""


@CORS
async def test_a_browser_app_on_a_listed_origin_signs_up_logs_in_refreshes_and_logs_out(
    settings, base_url, app_pages, browser
):
    page = await (await browser.new_context()).new_page()
    await page.goto(APP + "/")
    name = unique("spa")
    seen = await page.evaluate(FLOW, [base_url, name, PASSWORD])
    assert seen["signup"]["status"] == 200, seen["signup"]
    assert seen["login"]["status"] == 200 and seen["login"]["rid"], seen["login"]  # an exposed header
    assert seen["me"]["status"] == 200 and seen["me"]["body"]["data"]["account"]["username"] == name, seen["me"]
    assert seen["refreshed"]["status"] == 200, seen["refreshed"]
    assert seen["logout"]["status"] == 200, seen["logout"]
    assert seen["after"]["status"] == 403, seen["after"]  # an error the script can read, too
    other = await (await browser.new_context()).new_page()
    await other.goto(OTHER + "/")
    assert await other.evaluate(REFUSED, base_url) == "TypeError"  # the browser's CORS refusal


@pytest.mark.parametrize("settings", [{"max_in_flight": 5, "request_deadline_ms": 8000, "cors_origins": (APP,)}])
async def test_fifty_parallel_preflights_in_an_overload_are_all_answered(settings, base_url, api, mongo_uri):
    """During an overload (at most 5 in flight, every find taking 6 s), 50 parallel
    preflights all get their 204 at once, and the requests they clear that are shed get a
    503 a script can read: the origin granted, Retry-After exposed."""
    user = await register(api)
    body = {"username": user["username"], "password": PASSWORD}
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:
        async with slow(mongo_uri, ["find"], 6000):
            origin = {"Origin": APP}
            logins = [asyncio.ensure_future(http.post("/auth/auth", json=body, headers=origin)) for _ in range(20)]
            await asyncio.sleep(0.5)  # the first logins now hold every slot
            started = asyncio.get_running_loop().time()
            preflights = await asyncio.gather(*(preflight(base_url, "/auth/auth", APP) for _ in range(50)))
            elapsed = asyncio.get_running_loop().time() - started
            answers = await asyncio.gather(*logins)
    assert [r.status_code for r in preflights] == [204] * 50
    assert all(r.headers["Access-Control-Allow-Origin"] == APP for r in preflights)
    # None waited on the database (6 s a find); 50 new connections on a busy 2-core
    # machine took up to 2.4 s.
    assert elapsed < 5, elapsed
    shed = [r for r in answers if r.status_code == 503 and r.headers.get("Retry-After")]
    assert shed, [r.status_code for r in answers]
    for r in shed:
        assert r.headers["Access-Control-Allow-Origin"] == APP
        assert "Retry-After" in r.headers["Access-Control-Expose-Headers"]
