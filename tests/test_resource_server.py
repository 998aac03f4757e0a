"""A resource server that checks our tokens with a stock library (issue 18): PyJWT's
`PyJWKClient` fetches /.well-known/jwks.json and `jwt.decode` checks the signature, `iss`
and `aud`. Access tokens of every style pass (header `typ: at+jwt`, RFC 9068); refresh
tokens carry an audience of their own and are refused, whatever their style."""

from __future__ import annotations

import asyncio

import jwt
import pytest

from tests.conftest import PASSWORD, register
from tests.test_jwt import claims_of, pem, rsa_key
from tests.test_styles import drf_user, phone_user

pytestmark = pytest.mark.parametrize("settings", [{"jwt_private_keys": (("rsa-rs", pem(rsa_key())),)}])


async def native_pair(api, sinks) -> tuple[str, str]:
    user = await register(api)
    r = await api.post("/auth/token", {"username": user["username"], "password": PASSWORD})
    return r.data["data"]["access_token"], r.data["data"]["refresh_token"]


async def drf_pair(api, sinks) -> tuple[str, str]:
    user = await drf_user(api)
    r = await api.post("/api/auth/login/", {"username": user["phone"], "password": PASSWORD})
    return r.data["access"], r.data["refresh"]


async def phone_pair(api, sinks) -> tuple[str, str]:
    phone, _ = await phone_user(api, sinks)
    sinks.messages.clear()
    uid = (await api.post("/auth/api/login/", {"phone": phone})).data["user_id"]
    r = await api.post("/auth/api/login/verify/", {"code": await sinks.code_for(phone), "user_id": uid})
    return r.data["access_token"], r.data["refresh_token"]


async def v1_pair(api, sinks) -> tuple[str, str]:
    user = await register(api)
    r = await api.post("/api/v1/auth/login", {"user": user["username"], "password": PASSWORD})
    return r.data["result"]["access_token"], r.data["result"]["refresh_token"]


@pytest.mark.parametrize("pair_of", [native_pair, drf_pair, phone_pair, v1_pair])
async def test_pyjwkclient_accepts_access_tokens_and_refuses_refresh_tokens(sinks, api, base_url, settings, pair_of):
    access, refresh = await pair_of(api, sinks)
    jwks = jwt.PyJWKClient(base_url + "/.well-known/jwks.json")

    def verify(token: str) -> dict:  # what the resource server runs (sync: in a thread)
        key = jwks.get_signing_key_from_jwt(token)
        return jwt.decode(token, key.key, algorithms=["RS256"], audience="gatehouse", issuer="gatehouse")

    claims = await asyncio.to_thread(verify, access)
    assert claims["typ"] == "access" and claims["sid"]
    assert jwt.get_unverified_header(access)["typ"] == "at+jwt"
    with pytest.raises(jwt.InvalidAudienceError):
        await asyncio.to_thread(verify, refresh)
    assert jwt.get_unverified_header(refresh)["typ"] == "refresh+jwt"
    assert claims_of(refresh)["aud"] == "gatehouse/refresh" and claims_of(refresh)["typ"] == "refresh"
    # And Gatehouse itself never takes one for the other.
    assert (await api.get("/auth/me", token=refresh)).status == 403
    assert (await api.get("/auth/me", token=access)).status == 200


async def test_a_refresh_token_minted_before_its_own_audience_still_refreshes(api, gatehouse, settings):
    """Tokens issued by the previous version carry the access audience and a plain
    `typ: JWT` header: they stay refresh tokens (their `typ` claim says so) until they
    expire, so upgrading logs nobody out."""
    access, refresh = await native_pair(api, None)
    key = gatehouse.tokens.keys.signing
    old = jwt.encode(
        {**claims_of(refresh), "aud": "gatehouse"}, key.signing_key, algorithm=key.alg, headers={"kid": key.kid}
    )
    r = await api.post("/auth/token/refresh", {"refresh_token": old})
    assert r.status == 200, r.data
    old_access = jwt.encode(
        {**claims_of(access), "aud": "gatehouse/refresh"}, key.signing_key, algorithm=key.alg, headers={"kid": key.kid}
    )
    assert (await api.get("/auth/me", token=old_access)).status == 403  # the access audience only
