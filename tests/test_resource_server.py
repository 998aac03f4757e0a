"""A resource server that checks our tokens with a stock library (issue 18): PyJWT's
`PyJWKClient` fetches /.well-known/jwks.json and `jwt.decode` checks the signature, `iss`
and, for the Gatehouse profile (native, v1), `aud`. Access tokens of every style pass
(header `typ: at+jwt`, RFC 9068). Refresh tokens are refused whatever their style: the
Gatehouse profile's carry an audience of their own; the legacy profiles' (drf, phone)
carry no `aud` at all (issue 19), and their library's type claim tells them apart."""

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


# Each profile as its back end checks it: the audience (Gatehouse's), or the library's
# own claim naming the kind (simplejwt's `token_type`, flask-jwt-extended's `type`).
CHECKS = {
    native_pair: ("gatehouse", None),
    v1_pair: ("gatehouse", None),
    drf_pair: (None, "token_type"),
    phone_pair: (None, "type"),
}


@pytest.mark.parametrize("pair_of", CHECKS)
async def test_pyjwkclient_accepts_access_tokens_and_refuses_refresh_tokens(sinks, api, base_url, settings, pair_of):
    access, refresh = await pair_of(api, sinks)
    audience, kind_claim = CHECKS[pair_of]
    jwks = jwt.PyJWKClient(base_url + "/.well-known/jwks.json")

    def verify(token: str, audience: str | None = audience) -> dict:  # the resource server (sync: in a thread)
        key = jwks.get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer="gatehouse")
        if kind_claim and claims.get(kind_claim) != "access":
            raise jwt.InvalidTokenError(f"{kind_claim} is not access")
        return claims

    claims = await asyncio.to_thread(verify, access)
    assert claims["typ"] == "access" and claims["sid"]
    assert jwt.get_unverified_header(access)["typ"] == "at+jwt"
    assert jwt.get_unverified_header(refresh)["typ"] == "refresh+jwt" and claims_of(refresh)["typ"] == "refresh"
    if audience:
        with pytest.raises(jwt.InvalidAudienceError):
            await asyncio.to_thread(verify, refresh)
        assert claims_of(refresh)["aud"] == "gatehouse/refresh"
    else:
        with pytest.raises(jwt.InvalidTokenError, match=f"{kind_claim} is not access"):
            await asyncio.to_thread(verify, refresh)
        assert claims_of(refresh)[kind_claim] == "refresh" and "aud" not in claims_of(refresh)
        # No audience: a verifier that insists on one refuses the legacy profiles' tokens.
        with pytest.raises(jwt.MissingRequiredClaimError):
            await asyncio.to_thread(verify, access, "gatehouse")
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
