"""The apps' own back ends, unchanged, as resource servers (issue 19): each API document
was written for a back end whose other endpoints check tokens with a library, and those
libraries — at their default settings apart from the key — accept Gatehouse's tokens of
that style:

- 000 (drf): Django REST framework + djangorestframework-simplejwt, HS256 with Django's
  `SECRET_KEY` (= GATEHOUSE_JWT_SECRET), and RS256 through Gatehouse's JWKS (`JWK_URL`);
- 001 (phone): Flask + flask-jwt-extended, HS256 with `JWT_SECRET_KEY`, and RS256 with a
  `decode_key_loader` fed by PyJWT's `PyJWKClient`;
- 002 (simple): a hand-rolled `jwt.decode(token, secret, algorithms=["HS256"])`.

Django's settings are configured once per process: here, at import, unless something
configured them before (then its `SECRET_KEY` is the shared secret). Everything Django
runs on one thread of its own (`in_django`): its ORM refuses to run beside an event loop,
and its in-memory database belongs to one connection, so one thread. Whatever fetches our
JWKS runs off the event loop, which is serving it.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import django
import jwt
import pytest
from django.conf import settings as django_settings

if not django_settings.configured:
    django_settings.configure(
        SECRET_KEY="django-insecure-" + "gatehouse-shared-secret-" * 2,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        USE_TZ=True,
        LOGGING_CONFIG=None,  # leave the process's logging as the other tests expect it
    )
    django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from flask import Flask, jsonify  # noqa: E402
from flask_jwt_extended import JWTManager, get_jwt, get_jwt_identity, jwt_required  # noqa: E402
from rest_framework.permissions import IsAuthenticated  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.test import APIRequestFactory  # noqa: E402
from rest_framework.views import APIView  # noqa: E402
from rest_framework_simplejwt.authentication import (  # noqa: E402
    JWTAuthentication,
    JWTStatelessUserAuthentication,
)

from tests.conftest import PASSWORD, unique  # noqa: E402
from tests.test_jwt import claims_of, pem, rsa_key  # noqa: E402
from tests.test_resource_server import drf_pair, native_pair, phone_pair  # noqa: E402

SECRET = django_settings.SECRET_KEY  # the Django app's, shared with Gatehouse
SHARED = {"jwt_secret": SECRET}
RSA = {"jwt_private_keys": (("rsa-legacy", pem(rsa_key())),)}
JWKS_PATH = "/.well-known/jwks.json"

DJANGO = ThreadPoolExecutor(max_workers=1, thread_name_prefix="django")


async def in_django(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(DJANGO, fn, *args)


@pytest.fixture(scope="module", autouse=True)
def django_db():
    """The Django app's user table, in memory, on the Django thread; closed after the module."""
    DJANGO.submit(call_command, "migrate", run_syncdb=True, verbosity=0).result()
    yield
    DJANGO.submit(lambda: connection.close()).result()  # looked up on the Django thread: its connection
    DJANGO.shutdown()


# ---- 000: Django REST framework + simplejwt --------------------------------------------


class Whoami(APIView):
    permission_classes = [IsAuthenticated]

    def get(self, request):
        return Response({"id": request.user.id, "class": type(request.user).__name__})


def drf_view(authentication: type) -> Callable:
    return Whoami.as_view(authentication_classes=[authentication])


def drf_call(authentication: type, token: str) -> tuple[int, dict]:
    """What the Django app answers to a request carrying `token` (on the Django thread)."""
    request = APIRequestFactory().get("/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}")
    response = drf_view(authentication)(request)
    return response.status_code, dict(response.data)


def ensure_django_user(account_id: int) -> None:
    """The Django app's own user row, with the id Gatehouse gave the account."""
    get_user_model().objects.update_or_create(id=account_id, defaults={"username": f"user{account_id}"})


async def drf_tokens(api, gatehouse, sinks) -> tuple[str, str, int]:
    access, refresh = await drf_pair(api, sinks)
    account = await gatehouse.accounts.find_by_id(claims_of(access)["user_id"])
    assert account is not None and "sub" not in claims_of(access)  # see tests/test_shared_secret.py
    await in_django(ensure_django_user, account.id)
    return access, refresh, account.id


@pytest.mark.parametrize("settings", [SHARED])
async def test_simplejwt_at_its_defaults_accepts_drf_access_tokens(sinks, api, gatehouse, settings):
    access, refresh, account_id = await drf_tokens(api, gatehouse, sinks)
    claims = claims_of(access)
    assert claims["token_type"] == "access" and "aud" not in claims and isinstance(claims["user_id"], int)
    assert (claims_of(refresh)["token_type"], claims_of(refresh)["user_id"]) == ("refresh", account_id)
    for authentication, user_class in ((JWTAuthentication, "User"), (JWTStatelessUserAuthentication, "TokenUser")):
        assert await in_django(drf_call, authentication, access) == (
            200,
            {"id": account_id, "class": user_class},
        )
        status, body = await in_django(drf_call, authentication, refresh)
        assert status == 401 and body["code"] == "token_not_valid"  # "not valid for any token type"
    # A token of another style is no simplejwt token (no token_type), even with the right key.
    native = (await api.post("/auth/token", await native_login(api))).data["data"]["access_token"]
    assert (await in_django(drf_call, JWTStatelessUserAuthentication, native))[0] == 401


async def native_login(api) -> dict:
    name = unique("n")
    r = await api.post("/auth/register", {"username": name, "password": PASSWORD, "email": f"{name}@example.test"})
    assert r.status == 200, r.data
    return {"username": name, "password": PASSWORD}


def simplejwt_rs256(base_url: str, authentication: type, token: str) -> tuple[int, dict]:
    """simplejwt with `ALGORITHM: RS256` and `JWK_URL` (our JWKS), on the Django thread.
    simplejwt builds its token backend once, at import: rebuilt under the settings, and
    again after them."""
    from rest_framework_simplejwt import state

    try:
        with override_settings(SIMPLE_JWT={"ALGORITHM": "RS256", "JWK_URL": base_url + JWKS_PATH}):
            importlib.reload(state)
            return drf_call(authentication, token)
    finally:
        importlib.reload(state)


@pytest.mark.parametrize("settings", [RSA])
async def test_simplejwt_verifies_drf_tokens_through_the_jwks(sinks, api, gatehouse, base_url, settings):
    access, refresh, account_id = await drf_tokens(api, gatehouse, sinks)
    assert jwt.get_unverified_header(access)["alg"] == "RS256"
    for authentication in (JWTAuthentication, JWTStatelessUserAuthentication):
        status, body = await in_django(simplejwt_rs256, base_url, authentication, access)
        assert (status, body["id"]) == (200, account_id)
        assert (await in_django(simplejwt_rs256, base_url, authentication, refresh))[0] == 401
    # Back at the HS256 defaults, the RS256 token is refused.
    assert (await in_django(drf_call, JWTStatelessUserAuthentication, access))[0] == 401


# ---- 001: Flask + flask-jwt-extended ------------------------------------------------------


def flask_app(*, jwks_url: str | None = None) -> Flask:
    """The 001 back end: flask-jwt-extended at its defaults (headers), HS256 with the
    shared secret; or RS256 with each token's key from our JWKS."""
    app = Flask("legacy001")
    app.config["JWT_SECRET_KEY"] = SECRET
    manager = JWTManager(app)
    if jwks_url:
        app.config["JWT_ALGORITHM"] = "RS256"
        jwks = jwt.PyJWKClient(jwks_url)

        @manager.decode_key_loader
        def key_of(header: dict, payload: dict):  # the key named by the (unverified) kid
            return jwks.get_signing_key(header["kid"]).key

    @app.get("/me")
    @jwt_required()
    def me():
        return jsonify(user_id=get_jwt_identity(), fresh=get_jwt()["fresh"])

    @app.post("/change-phone")
    @jwt_required(fresh=True)
    def change_phone():
        return jsonify(user_id=get_jwt_identity())

    return app


def flask_calls(app: Flask, token: str) -> tuple[tuple[int, Any], tuple[int, Any]]:
    """`@jwt_required()` and `@jwt_required(fresh=True)`'s answers to `token`."""
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    plain, fresh = client.get("/me", headers=headers), client.post("/change-phone", headers=headers)
    return (plain.status_code, plain.get_json()), (fresh.status_code, fresh.get_json())


async def refreshed(api, refresh: str) -> str:
    """An access token from a refresh (phone has no refresh route: the native one serves
    every rotating style, and mints in the session's own profile)."""
    r = await api.post("/auth/token/refresh", {"refresh_token": refresh})
    assert r.status == 200, r.data
    return r.data["data"]["access_token"]


async def check_flask(api, app: Flask, sinks) -> None:
    access, refresh = await phone_pair(api, sinks)
    uid = claims_of(access)["sub"]
    claims = claims_of(access)
    assert (claims["type"], claims["fresh"], "aud" in claims) == ("access", True, False)
    assert (claims_of(refresh)["type"], claims_of(refresh)["fresh"]) == ("refresh", False)
    plain, fresh = await asyncio.to_thread(flask_calls, app, access)
    assert plain == (200, {"user_id": uid, "fresh": True}) and fresh == (200, {"user_id": uid})
    # A token from a refresh is not fresh: the library's own meaning.
    later = await refreshed(api, refresh)
    assert claims_of(later)["fresh"] is False and claims_of(later)["sub"] == uid
    plain, fresh = await asyncio.to_thread(flask_calls, app, later)
    assert plain == (200, {"user_id": uid, "fresh": False})
    assert fresh == (401, {"msg": "Fresh token required"})
    # A refresh token never passes for an access token.
    plain, _ = await asyncio.to_thread(flask_calls, app, refresh)
    assert plain == (422, {"msg": "Only non-refresh tokens are allowed"})


@pytest.mark.parametrize("settings", [SHARED])
async def test_flask_jwt_extended_accepts_phone_tokens(sinks, api, settings):
    await check_flask(api, flask_app(), sinks)


@pytest.mark.parametrize("settings", [RSA])
async def test_flask_jwt_extended_verifies_phone_tokens_through_the_jwks(sinks, api, base_url, settings):
    await check_flask(api, flask_app(jwks_url=base_url + JWKS_PATH), sinks)


# ---- 002: a plain PyJWT check ---------------------------------------------------------------


@pytest.mark.parametrize("settings", [SHARED])
async def test_a_plain_pyjwt_check_reads_simple_tokens(api, gatehouse, settings):
    name = unique("s")
    r = await api.post("/auth/create", {"username": name, "password": PASSWORD, "email": f"{name}@example.test"})
    assert r.status == 200, r.data
    token = (await api.post("/auth/", {"username": name, "password": PASSWORD})).data["access_token"]
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])  # what 002's back end runs
    account = await gatehouse.accounts.find_by_login(name)
    assert (claims["user_id"], claims["type"]) == (account.id, "access_token")
    assert claims["exp"] > claims["iat"] and "sub" not in claims
    assert (await api.get("/auth/me", token=token)).status == 200  # and Gatehouse takes it too


# ---- Gatehouse checks each token by the profile of its session's style ------------------------


def resign(gatehouse, token: str, change: Callable[[dict], dict]) -> str:
    """`token` with its claims changed, signed with our own key (what only a holder of the
    key could make): the signature is good, the shape is the question."""
    key = gatehouse.tokens.keys.signing
    header = {"kid": key.kid, "typ": jwt.get_unverified_header(token)["typ"]}
    return jwt.encode(change(claims_of(token)), key.signing_key, algorithm=key.alg, headers=header)


def without(claims: dict, *names: str) -> dict:
    return {k: v for k, v in claims.items() if k not in names}


def as_drf(c: dict) -> dict:
    return {**without(c, "aud", "sub", "type", "account_id"), "token_type": c["typ"], "user_id": c["account_id"]}


def as_gatehouse(c: dict) -> dict:
    shaped = {**without(c, "token_type", "user_id"), "aud": "gatehouse", "type": c["typ"]}
    return {**shaped, "sub": "an-account-uid", "account_id": c["user_id"]}


RESHAPED = {
    "native without its aud": ("native", lambda c: without(c, "aud")),
    "native shaped as drf's": ("native", as_drf),
    "native shaped as phone's": ("native", lambda c: {**without(c, "aud", "account_id"), "fresh": True}),
    "drf with an aud": ("drf", lambda c: {**c, "aud": "gatehouse"}),
    "drf with a sub": ("drf", lambda c: {**c, "sub": "an-account-uid"}),
    "native without its sub": ("native", lambda c: without(c, "sub")),
    "drf shaped as Gatehouse's": ("drf", as_gatehouse),
    "drf shaped as simple's": ("drf", lambda c: {**without(c, "token_type"), "type": "access_token"}),
    "drf whose token_type is the other kind's": (
        "drf",
        lambda c: {**c, "token_type": "refresh" if c["typ"] == "access" else "access"},
    ),
}
PAIRS = {"native": native_pair, "drf": drf_pair}
REFRESH_ROUTES = {"native": ("/auth/token/refresh", "refresh_token"), "drf": ("/api/auth/refresh/", "refresh")}


@pytest.mark.parametrize("case", RESHAPED)
async def test_a_token_not_shaped_as_its_sessions_profile_is_refused(sinks, api, gatehouse, case):
    style, change = RESHAPED[case]
    access, refresh = await PAIRS[style](api, sinks)
    assert (await api.get("/auth/me", token=resign(gatehouse, access, change))).status == 403
    assert (await api.get("/auth/me", token=access)).status == 200
    path, name = REFRESH_ROUTES[style]
    assert (await api.post(path, {name: resign(gatehouse, refresh, change)})).status == 401
    assert (await api.post(path, {name: refresh})).status == 200
    # Nor does introspection vouch for it.
    facts = await gatehouse.auth.introspect(resign(gatehouse, access, change))
    assert facts == {"active": False}


def previous_version(uid: str) -> Callable[[dict], dict]:
    """The claims the version before the profiles put in every style's tokens."""

    def change(c: dict) -> dict:
        kept = without(c, "token_type", "user_id", "account_id", "roles", "fresh")
        aud = "gatehouse" if c["typ"] == "access" else "gatehouse/refresh"
        return {**kept, "sub": uid, "aud": aud, "type": c["typ"]}

    return change


@pytest.mark.parametrize("style", PAIRS)
async def test_tokens_of_the_previous_version_work_until_they_expire(sinks, api, gatehouse, style):
    access, refresh = await PAIRS[style](api, sinks)
    claims = claims_of(access)
    account = await gatehouse.accounts.find_by_id(claims.get("account_id") or claims["user_id"])
    old = previous_version(account.uid)
    old_access, old_refresh = resign(gatehouse, access, old), resign(gatehouse, refresh, old)
    assert (await api.get("/auth/me", token=old_access)).status == 200
    assert (await gatehouse.auth.introspect(old_access))["aud"] == "gatehouse"
    path, name = REFRESH_ROUTES[style]
    r = await api.post(path, {name: old_refresh})
    assert r.status == 200, r.data
    new = r.data.get("access") or r.data["data"]["access_token"]
    assert ("aud" in claims_of(new)) is (style == "native")  # the new one in the style's own profile
