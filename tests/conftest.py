"""Test harness: the real app, in-process, against a real database.

SecantusDB is started once per run (or TEST_MONGODB_URI is used); every test gets a
fresh database of its own, so tests never see each other's accounts or counters. The
app runs on the test's own event loop (pytest-asyncio), and the Gatehouse, with its
AsyncMongoClient, is built inside that loop: an async client belongs to the loop that
created it.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import os
import re
import shutil
import sys
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import Clients, make_app, make_server  # noqa: E402
from config import load_config  # noqa: E402
from devdb import EmbeddedMongo, free_port  # noqa: E402
from models.common import utcnow  # noqa: E402
from tests.openapi_check import SpecChecker  # noqa: E402

PASSWORD = "Correct-horse-42"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With GATEHOUSE_SPEC_COVERAGE=1 (scripts/test sets it for the full run), every
    success answer in /openapi.json must have been produced and checked by some test."""
    if os.environ.get("GATEHOUSE_SPEC_COVERAGE") == "1" and exitstatus == 0:
        from tests.openapi_check import unexercised

        missing = unexercised()
        if missing:
            print("\n/openapi.json answers no test produced:\n  " + "\n  ".join(missing))
            session.exitstatus = 1


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory):
    if os.environ.get("TEST_MONGODB_URI"):
        yield os.environ["TEST_MONGODB_URI"]
        return
    embedded = EmbeddedMongo(tmp_path_factory.mktemp("secantus") / "db", test_commands=True)
    yield embedded.start()
    embedded.stop()


@pytest.fixture
def settings() -> dict[str, Any]:
    """Overrides of the Config for one test (tests change this dict, or parametrize it)."""
    return {}


@pytest.fixture
def config(tmp_path: Path, settings: dict[str, Any]):
    env = {
        "GATEHOUSE_ENV": "development",
        "GATEHOUSE_DATA_DIR": str(tmp_path),
        "SECRET_KEY": "test-secret-" + "x" * 40,
        "GATEHOUSE_BCRYPT_ROUNDS": "4",
        "GATEHOUSE_TEST_ENDPOINTS": "1",
    }
    return load_config(env, **settings)


class Clock:
    """The domain's clock, which a test may move forward (`advance`) to get past a
    window or a lock without waiting. Real time otherwise."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def admin_client_options() -> dict[str, Any]:
    """More options for the administrator reads' client (a test may listen to it)."""
    return {}


@pytest.fixture
async def gatehouse(mongo_uri: str, config, clock: Clock, admin_client_options: dict[str, Any]):
    """Built as the server builds it: a client each for authentication, administrator
    reads and the change feed (`Clients`)."""
    name = "gh_test_" + uuid.uuid4().hex[:12]
    clients = Clients.connect(mongo_uri, config, **admin_client_options)
    gh = clients.gatehouse(config, name, clock)
    try:
        await gh.setup()
        yield gh
        await gh.aclose()
        await clients.main.drop_database(name)
    finally:
        await clients.close()  # also when the database failed the test: no socket left open


@dataclass
class Response:
    status: int
    headers: Any
    body: bytes
    data: Any = field(default=None)

    def json(self) -> Any:
        return self.data


class Api:
    """Requests against the running app, checking on every response what must always
    hold: a JSON body with a charset, nosniff, a request id, no server banner."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.client = AsyncHTTPClient()
        self.spec: SpecChecker | None = None

    async def request(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Response:
        hdrs = dict(headers or {})
        body = raw
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        if token is not None:
            hdrs["Authorization"] = token
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        req = HTTPRequest(
            self.base + path,
            method=method,
            body=body,
            headers=hdrs,
            allow_nonstandard_methods=True,
            request_timeout=30,
        )
        r = await self.client.fetch(req, raise_error=False)
        assert r.code != 599, f"transport error: {r.error}"
        assert r.code < 500 or r.code == 503, f"{method} {path} answered {r.code}: {r.body[:500]!r}"
        assert r.headers.get("X-Content-Type-Options") == "nosniff"
        assert r.headers.get("X-Request-ID")
        assert "Server" not in r.headers
        if r.code == 401:  # RFC 6750: every 401 says how to authenticate
            assert r.headers.get("WWW-Authenticate", "").startswith('Bearer realm="gatehouse"'), dict(r.headers)
        data = None
        if r.body:
            assert r.headers["Content-Type"].startswith("application/json"), r.headers["Content-Type"]
            assert "charset" in r.headers["Content-Type"].lower()
            data = json.loads(r.body)
            assert b"Traceback" not in r.body
        if self.spec is None:
            served = await self.client.fetch(self.base + "/openapi.json")
            self.spec = SpecChecker(json.loads(served.body))
        self.spec.check(method, path, r.code, data)
        return Response(r.code, r.headers, r.body, data)

    async def get(self, path: str, **kw: Any) -> Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, json_body: Any = None, **kw: Any) -> Response:
        return await self.request("POST", path, json_body, **kw)

    async def delete(self, path: str, json_body: Any = None, **kw: Any) -> Response:
        return await self.request("DELETE", path, json_body, **kw)


@pytest.fixture
def app(config, gatehouse):
    return make_app(config, gatehouse)


@pytest.fixture
async def base_url(app, config):
    server = make_server(app, config)
    port = free_port()
    server.listen(port, "127.0.0.1")
    yield f"http://127.0.0.1:{port}"
    server.stop()
    await server.close_all_connections()


@pytest.fixture
def api(base_url: str) -> Api:
    return Api(base_url)


_counter = iter(range(1, 10**9))


def unique(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def unique_phone() -> str:
    n = next(_counter)
    return f"+1415{2000000 + (uuid.uuid4().int + n) % 7999999:07d}"


@pytest.fixture
def servers():
    """Real server processes (tests/procs.py) a test starts: stopped after it."""
    started: list = []
    yield started
    for server in started:
        server.stop()


# ---- MongoDB's fault injection (configureFailPoint / failCommand) --------------------------


async def set_failpoint(
    mongo_uri: str, commands: list[str], *, mode: Any = "alwaysOn", app: str = "gatehouse", **data: Any
) -> None:
    """Make the app's commands named in `commands` fail as `data` says (`errorCode`,
    `blockConnection`, …), scoped to one of the app's clients (appName "gatehouse":
    authentication and writes; "gatehouse-admin": administrator reads; "gatehouse-feed":
    the change feed), so the test's own client keeps working. Skips when the database
    refuses test commands."""
    from pymongo import AsyncMongoClient
    from pymongo.errors import OperationFailure

    control = AsyncMongoClient(mongo_uri, appname="gatehouse-test-control")
    try:
        await control.admin.command(
            "configureFailPoint",
            "failCommand",
            mode=mode,
            data={"failCommands": commands, "appName": app, **data},
        )
    except OperationFailure as e:
        pytest.skip(f"this database does not allow fault injection (start mongod with enableTestCommands): {e}")
    finally:
        await control.close()


async def failpoint_off(mongo_uri: str) -> None:
    from pymongo import AsyncMongoClient

    control = AsyncMongoClient(mongo_uri, appname="gatehouse-test-control")
    try:
        await control.admin.command("configureFailPoint", "failCommand", mode="off")
    finally:
        await control.close()


@contextlib.asynccontextmanager
async def failpoint(
    mongo_uri: str, commands: list[str], *, mode: Any = "alwaysOn", app: str = "gatehouse", **data: Any
):
    """`set_failpoint` while the block runs."""
    await set_failpoint(mongo_uri, commands, mode=mode, app=app, **data)
    try:
        yield
    finally:
        await failpoint_off(mongo_uri)


def assert_error(r: Response, status: int, code: str) -> None:
    """An error in the native envelope: status, stable code, a message, no data."""
    assert r.status == status, (r.status, r.data)
    assert r.data["code"] == code, r.data
    assert r.data["data"] is None
    assert isinstance(r.data["message"], str) and r.data["message"]


@pytest.fixture
async def admin(api: Api, gatehouse) -> dict:
    """An administrator: {"username", "password", "id", "token"} (an opaque session)."""
    name = unique("admin")
    await gatehouse.ensure_admin(name, PASSWORD)
    account = await gatehouse.accounts.find_by_login(name)
    user = {"username": name, "password": PASSWORD, "id": account.id}
    user["token"] = await login(api, user)
    return user


async def register(api: Api, **fields: Any) -> dict:
    """Register through the native API; returns the request body (with the password)."""
    name = unique("user")
    body = {"username": name, "password": PASSWORD, "email": f"{name}@example.test", "phone": unique_phone()}
    body.update(fields)
    r = await api.post("/auth/register", body)
    assert r.status == 200, r.data
    body["id"] = r.data["data"]["id"]
    return body


async def login(api: Api, user: dict, password: str | None = None) -> str:
    r = await api.post("/auth/auth", {"username": user["username"], "password": password or user["password"]})
    assert r.status == 200, r.data
    return r.data["data"]["token"]


# ---- real sinks for SMS (HTTP webhook) and e-mail (SMTP) ---------------------------------


class Sinks:
    """What arrived at the SMS webhook and the SMTP server, with helpers to read codes."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.lock = threading.Lock()
        self.sms_status = 200
        self.sms_auth: list[str | None] = []

    def add(self, channel: str, to: str, body: str, **extra: Any) -> None:
        with self.lock:
            self.messages.append({"channel": channel, "to": to, "body": body, **extra})

    def to(self, destination: str) -> list[dict]:
        with self.lock:
            return [m for m in self.messages if destination.lower() in m["to"].lower()]

    async def wait_for(self, destination: str, count: int = 1, timeout: float = 5.0) -> list[dict]:
        """The messages to `destination` once `count` have arrived: delivery runs off the
        request path (the queue's worker), so an answer comes before its message does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            arrived = self.to(destination)
            if len(arrived) >= count:
                return arrived
            await asyncio.sleep(0.02)
        raise AssertionError(f"{len(self.to(destination))} of {count} messages arrived for {destination}")

    async def code_for(self, destination: str, timeout: float = 5.0) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            # The latest message with a code (security notices carry none).
            for message in reversed(self.to(destination)):
                match = re.search(r"(?<!\d)(\d{6,10})(?!\d)", message["body"])
                if match:
                    return match.group(1)
            await asyncio.sleep(0.02)
        raise AssertionError(f"nothing arrived for {destination}")


@pytest.fixture
def sinks(settings: dict[str, Any]):
    from aiosmtpd.controller import Controller

    box = Sinks()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            box.sms_auth.append(self.headers.get("Authorization"))
            if box.sms_status == 200:
                data = json.loads(raw)
                box.add("sms", data["to"], data["body"], purpose=data.get("purpose"))
            self.send_response(box.sms_status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    class SmtpSink:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
            msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
            texts = {
                part.get_content_type(): part.get_content()
                for part in msg.walk()
                if part.get_content_maintype() == "text"
            }
            box.add(
                "email",
                ",".join(envelope.rcpt_tos),
                texts.get("text/plain", ""),
                subject=msg["Subject"],
                html=texts.get("text/html"),
                sender=envelope.mail_from,
            )
            return "250 OK"

    smtp_port = free_port()
    controller = Controller(SmtpSink(), hostname="127.0.0.1", port=smtp_port)
    controller.start()
    added = {
        "sms_webhook_url": f"http://127.0.0.1:{httpd.server_address[1]}/sms",
        "smtp_url": f"smtp://127.0.0.1:{smtp_port}",
        "mail_from": "gatehouse@example.test",
    }
    added = {k: v for k, v in added.items() if k not in settings}
    settings.update(added)
    yield box
    # A parametrized settings dict is shared by every case: leave it as it came.
    for key in added:
        settings.pop(key, None)
    controller.stop()
    httpd.shutdown()
    httpd.server_close()


# ---- a real browser: Debian's Chromium, driven by Playwright --------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a sandboxed CI machine with a closed network (see scripts/setup).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser():
    """A headless Chromium. Without one installed the test is skipped, saying why,
    unless GATEHOUSE_REQUIRE_BROWSER=1 (the full `scripts/test` run), where it fails."""
    if not Path(CHROMIUM).exists() and os.environ.get("GATEHOUSE_REQUIRE_BROWSER") != "1":
        pytest.skip("Debian's chromium is not installed (scripts/setup installs it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()
