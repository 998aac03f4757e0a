"""The SDK's tests run against a live Gatehouse: the repository's own fixtures
(tests/conftest.py: SecantusDB, the app on a real port) are reused here, so these tests
live beside the package without being part of what `pip install ./client` installs.

Gatehouse is configured with an RSA signing key (so it publishes a JWKS) and a service
key (introspection, the admin API, the revocation feed)."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import tests.conftest as repo  # noqa: E402 - after ROOT is importable
from tests.conftest import PASSWORD, register  # noqa: E402,F401 - for the tests here

# The repository's fixtures (a real SecantusDB, the app on a real port), visible in this folder.
for _name in ("mongo_uri", "config", "clock", "admin_client_options", "gatehouse", "app", "base_url", "api"):
    globals()[_name] = getattr(repo, _name)

from gatehouse_client import AdminClient, GatehouseClient, TokenPair  # noqa: E402

SERVICE_KEY = "sdk-test-service-key-0123456789abcdef"
KID = "sdk-rsa"
RSA_PEM = (
    rsa.generate_private_key(public_exponent=65537, key_size=2048)
    .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    .decode()
)


@pytest.fixture
def settings() -> dict[str, Any]:
    return {"jwt_private_keys": ((KID, RSA_PEM),), "service_keys": (SERVICE_KEY,)}


@pytest.fixture
async def admin_client(base_url: str):
    async with AdminClient(base_url, SERVICE_KEY) as client:
        yield client


async def new_pair(api, base_url: str) -> tuple[dict, TokenPair]:
    """A fresh account and a JWT pair of it, through the SDK's own client."""
    user = await register(api)
    async with GatehouseClient(base_url) as gh:
        pair = await gh.login(user["username"], PASSWORD)
    return user, pair


# ---- the revocation feed: Gatehouse's own when it has one, else a fake one ---------------


class FakeFeed:
    """`GET /auth/revocations` as contract19.md describes it, on a real HTTP server in a
    thread: a log of entries, an integer cursor, long polls held on a condition, pages of
    `page_size` with `more`, 401 without the key, 400 for a bad cursor, and injected
    failures (`fail_next`)."""

    def __init__(self, key: str = SERVICE_KEY, page_size: int = 100) -> None:
        self.key = key
        self.page_size = page_size
        self.log: list[tuple[str, dict]] = []  # ("sessions" | "accounts", entry)
        self.cond = threading.Condition()
        self.failures: list[int] = []
        self.requests: list[dict] = []
        self.closed = False
        feed = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

            def do_GET(self) -> None:  # noqa: N802 - http.server's hook name
                feed.handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a watcher stopped while its poll was held: the connection is gone

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def publish_session(self, sid: str, account_id: int = 0) -> None:
        self._add("sessions", {"sid": sid, "account_id": account_id, "at": time.time()})

    def publish_account(self, account_id: int, uid: str, disabled: bool) -> None:
        self._add("accounts", {"account_id": account_id, "uid": uid, "disabled": disabled, "at": time.time()})

    def fail_next(self, *statuses: int) -> None:
        with self.cond:
            self.failures.extend(statuses)

    def _add(self, kind: str, entry: dict) -> None:
        with self.cond:
            self.log.append((kind, entry))
            self.cond.notify_all()

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        query = {k: v[0] for k, v in parse_qs(urlsplit(h.path).query).items()}
        self.requests.append(query)
        if urlsplit(h.path).path != "/auth/revocations":
            return self.answer(h, 404, {"error": "not_found"})
        if h.headers.get("Authorization") != f"Bearer {self.key}":
            return self.answer(h, 401, {"error": "invalid_token"})
        if not query.get("wait", "0").isdigit() or int(query.get("wait", "0")) > 25:  # as Gatehouse's feed
            return self.answer(h, 400, {"error": "invalid_request", "error_description": "'wait' must be 0..25"})
        wait = int(query.get("wait", "0"))
        with self.cond:
            if "since" not in query:
                start = len(self.log)
            elif query["since"].isdigit() and int(query["since"]) <= len(self.log):
                start = int(query["since"])
            else:
                return self.answer(h, 400, {"error": "invalid_request", "error_description": "'since' is no cursor"})
            self.cond.wait_for(lambda: self.closed or len(self.log) > start, timeout=wait if "since" in query else 0)
            page = self.log[start : start + self.page_size]
            more = start + len(page) < len(self.log)
            # An injected failure answers in place of the page (a held poll fails when it wakes).
            failure = self.failures.pop(0) if self.failures else None
        if failure:
            return self.answer(h, failure, {"error": "injected"})
        body = {
            "sessions": [e for k, e in page if k == "sessions"],
            "accounts": [e for k, e in page if k == "accounts"],
            "cursor": str(start + len(page)),
            "more": more,
        }
        self.answer(h, 200, body)

    def answer(self, h: BaseHTTPRequestHandler, status: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_feed():
    feed = FakeFeed()
    yield feed
    feed.close()


async def live_feed_status(base_url: str) -> int:
    async with httpx.AsyncClient() as http:
        r = await http.get(base_url + "/auth/revocations", headers={"Authorization": f"Bearer {SERVICE_KEY}"})
    return r.status_code


class Revocations:
    """Where a test's watcher reads the feed: Gatehouse's own `/auth/revocations` when
    this build has it (then a kick reaches the watcher by itself), else a FakeFeed that
    the test tells about each kick (`kicked`), as Gatehouse's feed would."""

    def __init__(self, url: str, fake: FakeFeed | None) -> None:
        self.url = url
        self.fake = fake
        self.live = fake is None

    def kicked(self, sid: str, account_id: int = 0) -> None:
        if self.fake is not None:
            self.fake.publish_session(sid, account_id)


@pytest.fixture
async def revocations(base_url: str):
    if await live_feed_status(base_url) == 200:
        yield Revocations(base_url, None)
        return
    feed = FakeFeed()
    yield Revocations(feed.url, feed)
    feed.close()


@pytest.fixture
async def live_feed(base_url: str) -> str:
    """Gatehouse's own feed, or a skip saying why there is none."""
    status = await live_feed_status(base_url)
    if status == 404:
        pytest.skip("this Gatehouse has no /auth/revocations yet (the lead's branch s19-feed is not merged)")
    assert status == 200, status
    return base_url


@pytest.fixture
async def verifiers():
    """Makes Verifiers (`verifiers(base_url, …)`) and closes each after the test, so no
    connection is left for the garbage collector (warnings are errors here)."""
    from gatehouse_client import Verifier

    made: list[Verifier] = []

    def make(*args: Any, **kw: Any) -> Verifier:
        made.append(Verifier(*args, **kw))
        return made[-1]

    yield make
    for verifier in made:
        await verifier.aclose()
