"""A client generated from the served /openapi.json by openapi-python-client (what an
app team would run), driving the native style: register → login → /auth/me → the
session list → logout, and the token refused after it.

The generator runs with `--fail-on-warning`: a part of the document it cannot turn into
code fails here. It runs once per distinct document in a test run (about a second).
Every answer the generated code parses is also checked against the document by the
harness's `SpecChecker`, as the harness's own requests are.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD

_generated: dict[str, ModuleType] = {}


@pytest.fixture(scope="session")
def client_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    where = tmp_path_factory.mktemp("generated_clients")
    sys.path.insert(0, str(where))
    yield where
    sys.path.remove(str(where))


def generated_client(spec_text: str, where: Path) -> ModuleType:
    """The client package generated from this document (cached by its hash)."""
    digest = hashlib.sha256(spec_text.encode()).hexdigest()[:12]
    if digest not in _generated:
        package = f"gatehouse_client_{digest}"
        spec_path = where / f"{package}.json"
        spec_path.write_text(spec_text)
        config = where / "generator.json"
        config.write_text(json.dumps({"post_hooks": []}))  # no ruff pass over the generated code
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "openapi_python_client",
                "generate",
                "--path",
                str(spec_path),
                "--meta",
                "none",
                "--output-path",
                str(where / package),
                "--config",
                str(config),
                "--fail-on-warning",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        _generated[digest] = importlib.import_module(package)
    return _generated[digest]


def api_module(client: ModuleType, name: str) -> ModuleType:
    """One operation's generated module, by the name an app would import it by
    (`<tag>/<operationId in snake case>`): renaming an operation breaks such apps, and
    this test."""
    return importlib.import_module(f"{client.__name__}.api.{name}")


def model(client: ModuleType, name: str) -> Any:
    return getattr(importlib.import_module(f"{client.__name__}.models"), name)


def checked(api, method: str, path: str, answer: Any) -> Any:
    """The harness's check of a generated call's answer against the document."""
    body = json.loads(answer.content) if answer.content else None
    api.spec.check(method.upper(), path, int(answer.status_code), body)
    return answer


async def register_and_log_in(api, gen: ModuleType, anonymous: Any) -> tuple[int, Any]:
    """A new account through the generated `register` and `login`: its id and login."""
    register = api_module(gen, "native.native_register_handler_post")
    login = api_module(gen, "native.native_login_handler_post")
    name = f"gen{uuid.uuid4().hex[:10]}"
    body = model(gen, "NativeRegisterHandlerPostBody")(username=name, password=PASSWORD, email=f"{name}@example.test")
    r = checked(api, "post", "/auth/register", await register.asyncio_detailed(client=anonymous, body=body))
    assert r.status_code == 200, r.content
    account_id = r.parsed.data.id
    assert isinstance(account_id, int)
    body = model(gen, "NativeLoginHandlerPostBody")(username=name, password=PASSWORD)
    r = checked(api, "post", "/auth/auth", await login.asyncio_detailed(client=anonymous, body=body))
    assert r.status_code == 200, r.content
    session = r.parsed.data
    assert session.account.id == account_id and session.account.username == name
    return account_id, session


async def test_a_generated_client_registers_logs_in_lists_sessions_and_logs_out(api, base_url, client_dir):
    served = await api.get("/openapi.json")  # through the harness: it now checks every answer
    gen = generated_client(json.dumps(served.data), client_dir)
    me = api_module(gen, "native.native_me_handler_get")
    sessions = api_module(gen, "native.native_sessions_handler_get")
    logout = api_module(gen, "native.native_logout_handler_post")

    async with contextlib.AsyncExitStack() as stack:

        async def client(cls: type, **kw: Any) -> Any:
            made = cls(base_url=base_url, raise_on_unexpected_status=True, timeout=httpx.Timeout(30), **kw)
            return await stack.enter_async_context(made)

        anonymous = await client(gen.Client)
        account_id, session = await register_and_log_in(api, gen, anonymous)

        # The document's two ways to send the token: `Bearer <token>` (the generator's
        # default) and raw, as document 003 shows.
        bearer = await client(gen.AuthenticatedClient, token=session.token)
        raw = await client(gen.AuthenticatedClient, token=session.token, prefix="")
        for each in (bearer, raw):
            r = checked(api, "get", "/auth/me", await me.asyncio_detailed(client=each))
            assert r.status_code == 200, r.content
            assert r.parsed.data.account.id == account_id
            assert r.parsed.data.session == session.session

        r = checked(api, "get", "/auth/sessions", await sessions.asyncio_detailed(client=bearer))
        assert r.status_code == 200, r.content
        [listed] = r.parsed.data.sessions
        assert listed.id == session.session and listed.current is True and listed.revoked is False

        r = checked(api, "post", "/auth/logout", await logout.asyncio_detailed(client=bearer))
        assert r.status_code == 200, r.content

        # Logged out: the same token no longer opens /auth/me (document 003's 403), and
        # the generated code parses the error envelope the document gives it.
        error = model(gen, "ErrorNativeHandler")
        r = checked(api, "get", "/auth/me", await me.asyncio_detailed(client=bearer))
        assert r.status_code == 403, r.content
        assert isinstance(r.parsed, error) and r.parsed.code and r.parsed.data is None

        # No token at all: the same refusal, in the same documented envelope.
        r = checked(api, "get", "/auth/sessions", await sessions.asyncio_detailed(client=anonymous))
        assert r.status_code == 403 and isinstance(r.parsed, error)
