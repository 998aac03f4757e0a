"""One GATEHOUSE_JWT_SECRET serves every legacy style at once, so each legacy back end,
at its library's defaults, must refuse the other styles' tokens — above all their
refresh tokens, which live far longer than access tokens:

- flask-jwt-extended (001) takes any token with a `sub` and no `type: refresh` for an
  access token (it checks `aud` only when told one): drf's and simple's tokens carry no
  `sub` ("Missing claim: sub"), and refresh tokens of the other profiles say
  `type: refresh`. Access tokens of native and v1 — the same accounts, by the same uid —
  it does take (the README says so);
- simplejwt (000) wants `token_type: access`, which only drf's tokens carry;
- 002's hand-rolled check must read `type` (its document's sample has it): drf's tokens
  also carry an integer `user_id`, and only `type` tells them apart (the README says so).
simplejwt and PyJWT's plain `jwt.decode` refuse the Gatehouse profile's `aud`."""

from __future__ import annotations

import asyncio

import jwt
import pytest

from tests.conftest import PASSWORD, unique
from tests.test_legacy_backends import SECRET, SHARED, claims_of, drf_call, flask_app, flask_calls
from tests.test_resource_server import drf_pair, native_pair, phone_pair

pytestmark = pytest.mark.parametrize("settings", [SHARED])


async def simple_pair(api, sinks) -> tuple[str]:
    """Document 002 has access tokens only."""
    name = unique("s")
    r = await api.post("/auth/create", {"username": name, "password": PASSWORD, "email": f"{name}@example.test"})
    assert r.status == 200, r.data
    return ((await api.post("/auth/", {"username": name, "password": PASSWORD})).data["access_token"],)


OTHERS_OF = {"phone": (drf_pair, simple_pair, native_pair), "drf": (phone_pair, simple_pair, native_pair)}


@pytest.mark.parametrize("pair", OTHERS_OF["phone"], ids=lambda f: f.__name__)
async def test_flask_jwt_extended_refuses_other_styles_refresh_tokens_and_legacy_tokens(sinks, api, settings, pair):
    access, *refresh = await pair(api, sinks)
    for token in refresh:
        (status, body), (fresh, _) = await asyncio.to_thread(flask_calls, flask_app(), token)
        assert status != 200 and fresh != 200, (claims_of(token), body)
    (status, body), (fresh, _) = await asyncio.to_thread(flask_calls, flask_app(), access)
    assert fresh != 200  # no other profile's token is ever fresh
    if pair is native_pair:  # the same account, by its uid: what the library's defaults allow
        assert (status, body["user_id"]) == (200, claims_of(access)["sub"])
    else:
        assert (status, body) == (422, {"msg": "Missing claim: sub"})


@pytest.mark.parametrize("pair", OTHERS_OF["drf"], ids=lambda f: f.__name__)
async def test_simplejwt_refuses_every_other_styles_tokens(sinks, api, settings, pair):
    from rest_framework_simplejwt.authentication import JWTStatelessUserAuthentication

    for token in await pair(api, sinks):
        # The stateless class reads no user table: any thread will do (the Django thread
        # of test_legacy_backends is shut down with that module).
        status, body = await asyncio.to_thread(drf_call, JWTStatelessUserAuthentication, token)
        assert status == 401, (claims_of(token), body)


def simple_backend(token: str) -> int | None:
    """Document 002's back end: the account id of a simple access token, else None."""
    try:
        claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    except jwt.PyJWTError:
        return None
    return claims["user_id"] if claims.get("type") == "access_token" else None


@pytest.mark.parametrize("pair", [drf_pair, phone_pair, native_pair, simple_pair], ids=lambda f: f.__name__)
async def test_a_simple_back_end_that_reads_type_takes_only_simple_access_tokens(sinks, api, settings, pair):
    access, *refresh = await pair(api, sinks)
    assert [simple_backend(token) for token in refresh] == [None] * len(refresh)
    assert (simple_backend(access) is not None) is (pair is simple_pair), claims_of(access)
