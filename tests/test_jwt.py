"""JWT pairs: claims, verification against forgeries, rotation with reuse detection,
keys and JWKS, introspection."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from models.errors import TokenInvalid
from models.tokens import Tokens
from tests.conftest import PASSWORD, login, register

SERVICE_KEY = "svc-key-0123456789abcdefghij"


def pem(private) -> str:
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def claims_of(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


async def token_pair(api, user) -> dict:
    r = await api.post("/auth/token", {"username": user["username"], "password": PASSWORD})
    assert r.status == 200, r.data
    return r.data["data"]


async def test_token_login_makes_a_jwt_session(api, gatehouse):
    user = await register(api)
    pair = await token_pair(api, user)
    assert pair["token_type"] == "Bearer" and pair["expires_in"] == 900
    assert pair["refresh_expires_in"] == 14 * 86400
    claims = claims_of(pair["access_token"])
    account = await gatehouse.accounts.find_by_id(user["id"])
    assert claims["sub"] == account.uid and claims["typ"] == "access"
    assert claims["iss"] == "gatehouse" and claims["aud"] == "gatehouse"
    # The Gatehouse profile (issue 19): the account's integer id and roles; `type` repeats `typ`.
    assert (claims["account_id"], claims["roles"], claims["type"]) == (account.id, [], "access")
    assert claims["exp"] - claims["iat"] == 900 and claims["nbf"] == claims["iat"]
    assert len(claims["jti"]) == 32
    assert claims_of(pair["refresh_token"])["typ"] == "refresh"
    session = await gatehouse.sessions.find(claims["sid"])
    assert session.kind == "jwt" and session.style == "native"
    assert await gatehouse.db.refresh_tokens.count_documents({"sid": session.id}) == 1
    # the access token works wherever an opaque token does
    me = await api.get("/auth/me", token="Bearer " + pair["access_token"])
    assert me.status == 200 and me.data["data"]["account"]["username"] == user["username"]
    listed = (await api.get("/auth/sessions", token=pair["access_token"])).data["data"]["sessions"]
    assert [s["kind"] for s in listed] == ["jwt"] and listed[0]["current"] is True


async def test_logout_kills_access_and_refresh_at_once(api):
    user = await register(api)
    pair = await token_pair(api, user)
    assert (await api.post("/auth/logout", token=pair["access_token"])).status == 200
    assert (await api.get("/auth/me", token=pair["access_token"])).status == 403
    r = await api.post("/auth/token/refresh", {"refresh_token": pair["refresh_token"]})
    assert r.status == 401 and r.data["code"] == "INVALID_TOKEN"


async def test_a_kick_by_another_session_kills_the_jwt(api):
    user = await register(api)
    pair = await token_pair(api, user)
    opaque = await login(api, user)
    await api.post("/auth/sessions/revoke_others", token=opaque)
    assert (await api.get("/auth/me", token=pair["access_token"])).status == 403


async def test_refresh_rotates_and_the_old_token_dies(api, gatehouse):
    user = await register(api)
    pair = await token_pair(api, user)
    r = await api.post("/auth/token/refresh", {"refresh_token": pair["refresh_token"]})
    assert r.status == 200
    new = r.data["data"]
    assert new["refresh_token"] != pair["refresh_token"] and new["access_token"] != pair["access_token"]
    assert claims_of(new["refresh_token"])["sid"] == claims_of(pair["refresh_token"])["sid"]
    assert (await api.get("/auth/me", token=new["access_token"])).status == 200
    retired = await gatehouse.db.refresh_tokens.find_one({"_id": claims_of(pair["refresh_token"])["jti"]})
    assert retired["retired_at"] is not None and retired["replaced_by"] == claims_of(new["refresh_token"])["jti"]


async def test_concurrent_refreshes_give_one_new_family(api, gatehouse):
    user = await register(api)
    pair = await token_pair(api, user)
    body = {"refresh_token": pair["refresh_token"]}
    results = await asyncio.gather(*(api.post("/auth/token/refresh", body) for _ in range(10)))
    assert all(r.status == 200 for r in results), [r.data for r in results]
    jtis = {claims_of(r.data["data"]["refresh_token"])["jti"] for r in results}
    assert len(jtis) == 1  # every racer got the one current refresh token
    sid = claims_of(pair["access_token"])["sid"]
    assert await gatehouse.db.refresh_tokens.count_documents({"sid": sid}) == 2
    assert await gatehouse.db.sessions.count_documents({"account_id": user["id"]}) == 1
    assert await gatehouse.sessions.find_alive(sid) is not None


@pytest.mark.parametrize("settings", [{"refresh_reuse_grace": 0}])
async def test_replay_after_the_grace_period_revokes_the_session(api, gatehouse, settings):
    user = await register(api)
    pair = await token_pair(api, user)
    new = (await api.post("/auth/token/refresh", {"refresh_token": pair["refresh_token"]})).data["data"]
    await asyncio.sleep(1.1)
    r = await api.post("/auth/token/refresh", {"refresh_token": pair["refresh_token"]})
    assert r.status == 401 and r.data["code"] == "INVALID_TOKEN"
    # the thief's replay ended the legitimate holder's session too
    assert (await api.get("/auth/me", token=new["access_token"])).status == 403
    assert (await api.post("/auth/token/refresh", {"refresh_token": new["refresh_token"]})).status == 401
    events = await gatehouse.events.find(type="refresh_reuse")
    assert events and events[0]["session_id"] == claims_of(pair["access_token"])["sid"]
    session = await gatehouse.sessions.find(events[0]["session_id"])
    assert session.revoked_reason == "refresh_reuse"


async def test_token_types_never_stand_in_for_each_other(api):
    user = await register(api)
    pair = await token_pair(api, user)
    assert (await api.get("/auth/me", token=pair["refresh_token"])).status == 403
    r = await api.post("/auth/token/refresh", {"refresh_token": pair["access_token"]})
    assert r.status == 401


def hs256_with_header(header: dict, claims: dict, secret) -> str:
    """A token with any header at all (PyJWT refuses to write some)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    secret = secret if isinstance(secret, bytes) else secret.encode()
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


@dataclass
class Forge:
    """What a forger starts from: a genuine access token, its claims and our signing key."""

    token: str
    good: dict
    key: Any
    now: int

    def sign(self, claims: dict, **headers: Any) -> str:
        key = self.key
        return jwt.encode(claims, key.signing_key, algorithm="HS256", headers={"kid": key.kid, **headers})

    def with_foreign_key(self, **headers: Any) -> str:
        return jwt.encode(self.good, "x" * 32, algorithm="HS256", headers={"kid": self.key.kid, **headers})

    def tampered(self) -> str:
        header, _, signature = self.token.split(".")
        payload = base64.urlsafe_b64encode(json.dumps({**self.good, "sub": "someone-else"}).encode()).rstrip(b"=")
        return f"{header}.{payload.decode()}.{signature}"


FORGERIES: dict[str, Callable[[Forge], str]] = {
    "alg none": lambda f: jwt.encode(f.good, None, algorithm="none", headers={"kid": f.key.kid}),
    "wrong aud": lambda f: f.sign({**f.good, "aud": "another-app"}),
    "wrong iss": lambda f: f.sign({**f.good, "iss": "gatehouse-evil"}),
    "partial iss": lambda f: f.sign({**f.good, "iss": "gate"}),
    "expired": lambda f: f.sign({**f.good, "iat": f.now - 4000, "nbf": f.now - 4000, "exp": f.now - 3600}),
    "not yet valid": lambda f: f.sign({**f.good, "nbf": f.now + 3600}),
    "no sid": lambda f: f.sign({k: v for k, v in f.good.items() if k != "sid"}),
    "tampered": lambda f: f.tampered(),
    "unknown kid": lambda f: jwt.encode(
        f.good, f.key.signing_key, algorithm="HS256", headers={"kid": "../../etc/passwd"}
    ),
    "other secret": lambda f: f.with_foreign_key(),
    "garbage": lambda f: "a.b.c",
    # Keys offered by the token itself are never fetched or trusted (RFC 8725 §3.10).
    "jwk header": lambda f: f.with_foreign_key(jwk={"kty": "oct", "k": "eHh4"}),
    "jku header": lambda f: f.with_foreign_key(jku="http://evil/"),
    "x5u header": lambda f: f.with_foreign_key(x5u="http://evil/"),
    "operator kid": lambda f: hs256_with_header(
        {"alg": "HS256", "typ": "JWT", "kid": {"$ne": None}}, f.good, f.key.signing_key
    ),
    "no kid": lambda f: jwt.encode(f.good, f.key.signing_key, algorithm="HS256"),
}


@pytest.mark.parametrize("forgery", FORGERIES)
async def test_forged_and_invalid_access_tokens_are_refused(api, gatehouse, forgery):
    user = await register(api)
    access = (await token_pair(api, user))["access_token"]
    assert (await api.get("/auth/me", token=access)).status == 200  # the genuine one works
    forge = Forge(access, claims_of(access), gatehouse.tokens.keys.signing, int(time.time()))
    assert (await api.get("/auth/me", token=FORGERIES[forgery](forge))).status == 403


async def test_leeway_accepts_slightly_expired_tokens(gatehouse, api):
    user = await register(api)
    pair = await token_pair(api, user)
    key = gatehouse.tokens.keys.signing
    now = int(time.time())
    claims = {**claims_of(pair["access_token"]), "exp": now - 5}
    token = jwt.encode(claims, key.signing_key, algorithm="HS256", headers={"kid": key.kid})
    assert (await api.get("/auth/me", token=token)).status == 200


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize(
    "settings, alg",
    [
        ({"jwt_private_keys": (("rsa-1", pem(rsa_key())),)}, "RS256"),
        ({"jwt_private_keys": (("ec-1", pem(ec.generate_private_key(ec.SECP256R1()))),)}, "ES256"),
        ({"jwt_private_keys": (("ed-1", pem(ed25519.Ed25519PrivateKey.generate())),)}, "EdDSA"),
    ],
)
async def test_jwks_verifies_our_tokens_with_a_stock_library(api, settings, alg):
    user = await register(api)
    pair = await token_pair(api, user)
    jwks = (await api.get("/.well-known/jwks.json")).data
    assert [k["alg"] for k in jwks["keys"]] == [alg]
    assert all("d" not in k for k in jwks["keys"])  # public parts only
    kid = jwt.get_unverified_header(pair["access_token"])["kid"]
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    claims = jwt.decode(pair["access_token"], key.key, algorithms=[alg], audience="gatehouse", issuer="gatehouse")
    assert claims["typ"] == "access"
    assert (await api.get("/auth/me", token=pair["access_token"])).status == 200


@pytest.mark.parametrize("settings", [{"jwt_private_keys": (("rsa-1", pem(rsa_key())),)}])
async def test_hs256_signed_with_the_public_key_is_refused(api, gatehouse, settings):
    user = await register(api)
    pair = await token_pair(api, user)
    signing = gatehouse.tokens.keys.signing
    public_pem = signing.verifying_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import hashlib
    import hmac as hmac_mod

    # PyJWT itself refuses PEM keys as HMAC secrets, so forge the signature by hand.
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode()).rstrip(b"=")
    body = pair["access_token"].split(".")[1].encode()
    sig = base64.urlsafe_b64encode(hmac_mod.new(public_pem, header + b"." + body, hashlib.sha256).digest()).rstrip(b"=")
    forged = b".".join([header, body, sig]).decode()
    assert (await api.get("/auth/me", token=forged)).status == 403


async def test_key_rotation_keeps_old_tokens_valid(gatehouse, api):
    user = await register(api)
    old_key = pem(rsa_key())
    old_tokens = Tokens(
        replace(gatehouse.config.jwt, jwt_private_keys=(("old", old_key),)),
        gatehouse.config.secret_key,
        gatehouse.db,
        gatehouse.clock,
        gatehouse.sessions,
        gatehouse.events,
    )
    new_tokens = Tokens(
        replace(gatehouse.config.jwt, jwt_private_keys=(("new", pem(rsa_key())), ("old", old_key))),
        gatehouse.config.secret_key,
        gatehouse.db,
        gatehouse.clock,
        gatehouse.sessions,
        gatehouse.events,
    )
    account = await gatehouse.accounts.find_by_id(user["id"])
    login_ = await gatehouse.auth.login_jwt(user["username"], PASSWORD, gatehouse_ctx())
    pair = await old_tokens.issue_pair(account, login_.session, "native")
    assert new_tokens.decode(pair.access, "access")["sid"] == login_.session.id
    assert (
        jwt.get_unverified_header((await new_tokens.issue_pair(account, login_.session, "native")).access)["kid"]
        == "new"
    )
    retired = Tokens(
        replace(gatehouse.config.jwt, jwt_private_keys=(("new", pem(rsa_key())),)),
        gatehouse.config.secret_key,
        gatehouse.db,
        gatehouse.clock,
        gatehouse.sessions,
        gatehouse.events,
    )
    with pytest.raises(TokenInvalid):
        retired.decode(pair.access, "access")


def gatehouse_ctx():
    from models.common import Context

    return Context(ip="127.0.0.1", style="native")


@pytest.mark.parametrize("settings", [{"service_keys": (SERVICE_KEY,)}])
async def test_introspection(api, settings):
    user = await register(api)
    opaque = await login(api, user)
    pair = await token_pair(api, user)
    r = await api.post("/auth/introspect", {"token": opaque})
    assert r.status == 403
    r = await api.post("/auth/introspect", {"token": opaque}, token="Bearer " + opaque)
    assert r.status == 403  # a user's token is not a service key
    svc = "Bearer " + SERVICE_KEY
    for token, kind in ((opaque, "opaque"), (pair["access_token"], "jwt"), (pair["refresh_token"], "jwt")):
        r = await api.post("/auth/introspect", {"token": token}, token=svc)
        assert r.data["data"]["active"] is True and r.data["data"]["kind"] == kind
    for token in ("no-such-token", "a.b.c"):
        assert (await api.post("/auth/introspect", {"token": token}, token=svc)).data["data"] == {"active": False}
    await api.post("/auth/logout", token=pair["access_token"])
    await api.post("/auth/logout", token=opaque)
    for token in (opaque, pair["access_token"], pair["refresh_token"]):
        assert (await api.post("/auth/introspect", {"token": token}, token=svc)).data["data"] == {"active": False}
