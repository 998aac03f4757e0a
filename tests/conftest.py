"""Test harness: the real app, in-process, against a real database.

SecantusDB is started once per run (or TEST_MONGODB_URI is used); every test gets a
fresh database of its own, so tests never see each other's accounts or counters. The
app runs on the test's own event loop (pytest-asyncio), and the Gatehouse, with its
AsyncMongoClient, is built inside that loop: an async client belongs to the loop that
created it.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import load_config  # noqa: E402
from models.core import Gatehouse  # noqa: E402
from models.db import EmbeddedMongo, connect, free_port  # noqa: E402
from server import make_app, make_server  # noqa: E402

PASSWORD = "Correct-horse-42"


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory):
    if os.environ.get("TEST_MONGODB_URI"):
        yield os.environ["TEST_MONGODB_URI"]
        return
    embedded = EmbeddedMongo(tmp_path_factory.mktemp("secantus") / "db")
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


@pytest.fixture
async def gatehouse(mongo_uri: str, config):
    name = "gh_test_" + uuid.uuid4().hex[:12]
    client = connect(mongo_uri, config.db_timeout_ms)
    gh = Gatehouse(config, client[name])
    await gh.setup()
    yield gh
    await client.drop_database(name)
    await client.close()
    gh.close()


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
        data = None
        if r.body:
            assert r.headers["Content-Type"].startswith("application/json"), r.headers["Content-Type"]
            assert "charset" in r.headers["Content-Type"].lower()
            data = json.loads(r.body)
            assert b"Traceback" not in r.body
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
