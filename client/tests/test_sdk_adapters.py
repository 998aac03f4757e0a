"""Each framework adapter in a real app of that framework, driven by the framework's own
test client, against a live Gatehouse and a revocation feed (Gatehouse's own when this
build has one, else the fake one told of each kick): a valid token passes and the
handler sees account id, uid, session id and roles; no token gets the bare challenge; a
refresh token and an expired token get `error="invalid_token"`; a kicked session's
still-unexpired token is refused within the bound. Sync test clients (Flask's, DRF's
request factory) run in a thread: Gatehouse serves on this test's event loop."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import pytest
from conftest import SERVICE_KEY, new_pair
from gatehouse_client import Principal, RevocationWatcher, Verifier
from test_sdk_revocations import WORST, report

Call = Callable[[str | None], Awaitable[tuple[int, Any, dict]]]  # token -> (status, headers, body)
BARE = 'Bearer realm="gatehouse"'
INVALID = 'Bearer realm="gatehouse", error="invalid_token"'


def view(principal: Principal) -> dict:
    return {
        "account_id": principal.account_id,
        "uid": principal.uid,
        "session_id": principal.session_id,
        "roles": list(principal.roles),
    }


def auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture
async def verifier(base_url, revocations):
    watcher = RevocationWatcher(revocations.url, SERVICE_KEY)
    await watcher.start()
    verifier = Verifier(base_url, revocations=watcher.revocations)
    # The keys are read now, on this loop: the apps below then verify with no request of
    # their own (Starlette's TestClient runs the app on a loop of its own).
    await verifier.aprefetch()
    yield verifier
    await watcher.stop()
    await verifier.aclose()


async def check_adapter(call: Call, api, base_url, clock, admin_client, revocations) -> None:
    user, pair = await new_pair(api, base_url)
    status, headers, body = await call(pair.access_token)
    assert status == 200, body
    claims = jwt.decode(pair.access_token, options={"verify_signature": False})
    assert body == {
        "account_id": user["id"] if "account_id" in claims else None,
        "uid": claims["sub"],
        "session_id": claims["sid"],
        "roles": claims.get("roles", []),
    }
    status, headers, _ = await call(None)
    assert (status, headers["WWW-Authenticate"]) == (401, BARE)
    status, headers, _ = await call(pair.refresh_token)
    assert status == 401 and headers["WWW-Authenticate"].startswith(INVALID)
    clock.advance(-2000)
    _, old = await new_pair(api, base_url)
    clock.advance(2000)
    status, headers, _ = await call(old.access_token)
    assert status == 401 and headers["WWW-Authenticate"].startswith(INVALID)
    assert "expired" in headers["WWW-Authenticate"]
    # Kicked: refused within the bound, its signature and exp still good.
    await admin_client.kick(claims["sid"])
    kicked_at = time.monotonic()
    revocations.kicked(claims["sid"], user["id"])
    while True:
        status, headers, _ = await call(pair.access_token)
        if status == 401:
            break
        assert status == 200 and time.monotonic() - kicked_at < WORST, "still accepted past the bound"
        await asyncio.sleep(0.01)
    report(f"kicked -> 401 ({'live' if revocations.live else 'fake'} feed)", [time.monotonic() - kicked_at])
    assert headers["WWW-Authenticate"].startswith(INVALID) and "ended" in headers["WWW-Authenticate"]


async def test_tornado_mixin(api, base_url, clock, admin_client, revocations, verifier):
    import tornado.httpserver
    import tornado.web
    from gatehouse_client.tornado import GatehouseAuthMixin
    from tornado.httpclient import AsyncHTTPClient
    from tornado.testing import bind_unused_port

    class WhoAmI(GatehouseAuthMixin, tornado.web.RequestHandler):
        async def get(self) -> None:
            self.write(view(self.principal))

    app = tornado.web.Application([("/whoami", WhoAmI)], gatehouse_verifier=verifier)
    sock, port = bind_unused_port()
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets([sock])
    client = AsyncHTTPClient()

    async def call(token: str | None):
        r = await client.fetch(f"http://127.0.0.1:{port}/whoami", headers=auth(token), raise_error=False)
        return r.code, r.headers, json.loads(r.body)

    try:
        await check_adapter(call, api, base_url, clock, admin_client, revocations)
    finally:
        server.stop()
        await server.close_all_connections()


async def test_fastapi_dependency(api, base_url, clock, admin_client, revocations, verifier):
    import httpx
    from fastapi import Depends, FastAPI
    from gatehouse_client.fastapi import GatehouseBearer

    app = FastAPI()
    gatehouse = GatehouseBearer(verifier)

    @app.get("/whoami")
    async def whoami(principal: Principal = Depends(gatehouse)) -> dict:
        return view(principal)

    # FastAPI's async test client (its docs' "Async Tests"): the app runs on this loop.
    # (Starlette's sync TestClient now wants the separate httpx2 package.)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:

        async def call(token: str | None):
            r = await client.get("/whoami", headers=auth(token))
            return r.status_code, r.headers, r.json()

        await check_adapter(call, api, base_url, clock, admin_client, revocations)


async def test_flask_decorator(api, base_url, clock, admin_client, revocations, verifier):
    from flask import Flask
    from gatehouse_client.flask import current_principal, gatehouse_required

    app = Flask(__name__)

    @app.get("/whoami")
    @gatehouse_required(verifier)
    def whoami(principal: Principal) -> dict:
        assert current_principal() is principal
        return view(principal)

    client = app.test_client()

    async def call(token: str | None):
        r = await asyncio.to_thread(client.get, "/whoami", headers=auth(token))
        return r.status_code, r.headers, r.get_json()

    await check_adapter(call, api, base_url, clock, admin_client, revocations)


def django_view():
    """A DRF view using the authentication class as settings.py would name it."""
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "rest_framework"],
            DATABASES={},
            USE_TZ=True,
            SECRET_KEY="sdk-tests-only-" + "x" * 40,
        )
        import django

        django.setup()
    from gatehouse_client.django import GatehouseAuthentication, GatehouseUser
    from rest_framework.permissions import IsAuthenticated
    from rest_framework.response import Response
    from rest_framework.views import APIView

    class WhoAmI(APIView):
        authentication_classes = [GatehouseAuthentication]
        permission_classes = [IsAuthenticated]

        def get(self, request):
            assert isinstance(request.user, GatehouseUser) and request.user.id == request.auth.account_id
            return Response(view(request.auth))

    return WhoAmI.as_view()


async def test_django_rest_framework_authentication(api, base_url, clock, admin_client, revocations, verifier):
    whoami = await asyncio.to_thread(django_view)
    from django.test import override_settings
    from rest_framework.test import APIRequestFactory

    factory = APIRequestFactory()

    def get(token: str | None):
        extra = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
        with override_settings(GATEHOUSE_VERIFIER=verifier):
            response = whoami(factory.get("/whoami", **extra))
        response.render()
        return response.status_code, response.headers, json.loads(response.content)

    async def call(token: str | None):
        return await asyncio.to_thread(get, token)

    await check_adapter(call, api, base_url, clock, admin_client, revocations)


async def test_django_plain_view_decorator(api, base_url, clock, admin_client, revocations, verifier):
    await asyncio.to_thread(django_view)  # configures Django once
    from django.test import RequestFactory, override_settings
    from gatehouse_client.django import gatehouse_required

    @gatehouse_required
    def whoami(request):
        from django.http import JsonResponse

        assert request.user.id == request.gatehouse_principal.account_id
        return JsonResponse(view(request.gatehouse_principal))

    factory = RequestFactory()

    def get(token: str | None):
        extra = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
        with override_settings(GATEHOUSE_VERIFIER=verifier):
            response = whoami(factory.get("/whoami", **extra))
        return response.status_code, response.headers, json.loads(response.content)

    async def call(token: str | None):
        return await asyncio.to_thread(get, token)

    await check_adapter(call, api, base_url, clock, admin_client, revocations)
