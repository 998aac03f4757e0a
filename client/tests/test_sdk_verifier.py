"""The Verifier against a live Gatehouse: offline JWT checks through its JWKS, the
shared-secret HS256 option, and opaque tokens through /oauth/introspect."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from conftest import KID, PASSWORD, RSA_PEM, SERVICE_KEY, new_pair, register
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from gatehouse_client import GatehouseClient, InvalidToken, Principal, RevocationSet, Verifier


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def reason(verifier: Verifier, token: str | None) -> str:
    with pytest.raises(InvalidToken) as e:
        verifier.verify(token)
    return e.value.reason


async def test_an_access_token_gives_its_principal_sync_and_async(api, base_url, verifiers):
    user, pair = await new_pair(api, base_url)
    verifier = verifiers(base_url)
    principal = await verifier.averify(pair.access_token)
    claims = claims_of(pair.access_token)
    assert isinstance(principal, Principal)
    assert principal.uid == claims["sub"] and principal.session_id == claims["sid"]
    # `account_id` is the Gatehouse profile's claim (issue 19); tokens without it give None.
    assert principal.account_id == (user["id"] if "account_id" in claims else None)
    assert principal.roles == tuple(claims.get("roles", ()))
    assert principal.claims["iss"] == "gatehouse"
    with pytest.raises(TypeError):
        principal.claims["sub"] = "someone else"  # read-only
    # The sync entry point (Flask, Django), in a thread so this loop keeps serving.
    assert await asyncio.to_thread(verifier.verify, pair.access_token) == principal
    assert verifier.jwks_fetches == 1  # the keys were read once, then cached


async def test_refresh_expired_and_foreign_tokens_are_refused(api, base_url, clock, verifiers):
    _, pair = await new_pair(api, base_url)
    verifier = verifiers(base_url)
    await verifier.aprefetch()
    assert await asyncio.to_thread(reason, verifier, pair.refresh_token) == "invalid"
    assert await asyncio.to_thread(reason, verifier, None) == "missing"
    assert await asyncio.to_thread(reason, verifier, "a.b") == "invalid"
    assert await asyncio.to_thread(reason, verifier, "x.y.z") == "invalid"
    # Minted 2000 s ago: 900 s of life and 30 s of leeway are long gone.
    clock.advance(-2000)
    _, old = await new_pair(api, base_url)
    clock.advance(2000)
    assert await asyncio.to_thread(reason, verifier, old.access_token) == "expired"
    # Another audience or issuer than the token's.
    for other in (verifiers(base_url, audience="another-api"), verifiers(base_url, issuer="https://elsewhere")):
        assert await asyncio.to_thread(reason, other, pair.access_token) == "invalid"
    # A legacy-profile verifier (no audience expected) refuses a token that has one.
    assert await asyncio.to_thread(reason, verifiers(base_url, audience=None), pair.access_token) == "invalid"


async def test_forgeries_fail_because_each_key_has_its_own_algorithm(api, base_url, verifiers):
    _, pair = await new_pair(api, base_url)
    claims = claims_of(pair.access_token)
    verifier = verifiers(base_url)
    await verifier.aprefetch()
    public_pem = (
        serialization.load_pem_private_key(RSA_PEM.encode(), None)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = {"kid": KID, "typ": "at+jwt"}
    # HMAC keyed with the published public key (the classic RS256 -> HS256 confusion;
    # PyJWT will not sign it, so by hand).
    signing_input = b64(json.dumps({"alg": "HS256", **header}).encode()) + "." + b64(json.dumps(claims).encode())
    confused = signing_input + "." + b64(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())
    assert await asyncio.to_thread(reason, verifier, confused) == "invalid"
    # alg: none.
    unsigned = jwt.encode(claims, None, algorithm="none", headers=header)
    assert await asyncio.to_thread(reason, verifier, unsigned) == "invalid"
    # A good signature by a key Gatehouse does not publish, under its kid.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert await asyncio.to_thread(reason, verifier, jwt.encode(claims, other, "RS256", headers=header)) == "invalid"
    # The header must say at+jwt (RFC 9068): Gatehouse's own key, another typ.
    key = serialization.load_pem_private_key(RSA_PEM.encode(), None)
    plain = jwt.encode(claims, key, "RS256", headers={"kid": KID, "typ": "JWT"})
    assert await asyncio.to_thread(reason, verifier, plain) == "invalid"
    # Genuine at+jwt with a `typ: refresh` claim.
    mixed = jwt.encode({**claims, "typ": "refresh"}, key, "RS256", headers=header)
    assert await asyncio.to_thread(reason, verifier, mixed) == "invalid"
    assert (await verifier.averify(jwt.encode(claims, key, "RS256", headers=header))).uid == claims["sub"]


async def test_unknown_kids_refetch_the_jwks_at_most_once_per_cooldown(api, base_url, verifiers):
    _, pair = await new_pair(api, base_url)
    claims = claims_of(pair.access_token)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    verifier = verifiers(base_url, jwks_cooldown=30)
    await verifier.aprefetch()
    for n in range(20):
        token = jwt.encode(claims, other, "RS256", headers={"kid": f"made-up-{n}", "typ": "at+jwt"})
        with pytest.raises(InvalidToken):
            await verifier.averify(token)
    assert verifier.jwks_fetches == 1  # the first unknown kid came inside the cooldown too
    # Past the cooldown, an unknown kid reads the keys again (a rotated-in key is found).
    quick = verifiers(base_url, jwks_cooldown=0.2)
    await quick.aprefetch()
    token = jwt.encode(claims, other, "RS256", headers={"kid": "rotated-in", "typ": "at+jwt"})
    for pause, expected in ((0, 1), (0, 1), (0.25, 2), (0, 2)):
        await asyncio.sleep(pause)
        with pytest.raises(InvalidToken):
            await quick.averify(token)
        assert quick.jwks_fetches == expected
    assert (await quick.averify(pair.access_token)).session_id == claims["sid"]
    assert quick.jwks_fetches == 2  # a known kid costs nothing


@pytest.mark.parametrize("settings", [{"service_keys": (SERVICE_KEY,)}])
async def test_hs256_with_the_shared_secret_needs_no_request(api, base_url, config, verifiers):
    """Gatehouse with no asymmetric key signs HS256; an app holding the secret verifies
    offline. Unset GATEHOUSE_JWT_SECRET, the secret is derived from SECRET_KEY (README)."""
    _, pair = await new_pair(api, base_url)
    assert jwt.get_unverified_header(pair.access_token)["alg"] == "HS256"
    secret = hmac.new(config.secret_key.encode(), b"gatehouse/jwt/hs256", hashlib.sha256).digest()
    verifier = verifiers(secret=secret)  # no base_url: nothing is ever fetched
    principal = await asyncio.to_thread(verifier.verify, pair.access_token)
    assert principal.session_id == claims_of(pair.access_token)["sid"]
    assert await asyncio.to_thread(reason, verifiers(secret=b"x" * 32), pair.access_token) == "invalid"
    assert await asyncio.to_thread(reason, verifier, pair.refresh_token) == "invalid"


async def test_opaque_tokens_are_introspected_and_briefly_remembered(api, base_url, admin_client, verifiers):
    user = await register(api)
    r = await api.post("/auth/auth", {"username": user["username"], "password": PASSWORD})
    token, sid = r.data["data"]["token"], r.data["data"]["session"]
    verifier = verifiers(base_url, service_key=SERVICE_KEY, introspection_ttl=0.5)
    principal = await verifier.averify(token)
    assert principal.session_id == sid and principal.claims["token_use"] == "access_token"
    assert principal.uid == principal.claims["sub"]
    await admin_client.kick(sid)
    # Remembered for introspection_ttl: still accepted right after the kick...
    assert (await verifier.averify(token)).session_id == sid
    # ...unless the revocation set knows of the kick (the watcher's job)...
    known = RevocationSet()
    known.end_session(sid)
    told = verifiers(base_url, service_key=SERVICE_KEY, revocations=known)
    told._introspected = verifier._introspected  # the same remembered answer
    with pytest.raises(InvalidToken) as e:
        await told.averify(token)
    assert e.value.reason == "revoked"
    # ...and asked again once the answer is older than the TTL.
    await asyncio.sleep(0.6)
    with pytest.raises(InvalidToken) as e:
        await verifier.averify(token)
    assert e.value.reason == "invalid"
    # Without a service key an opaque token cannot be checked.
    assert await asyncio.to_thread(reason, verifiers(base_url), token) == "invalid"


async def test_gatehouse_unreachable_is_unavailable_not_invalid(api, base_url, verifiers):
    _, pair = await new_pair(api, base_url)
    down = verifiers("http://127.0.0.1:9", service_key=SERVICE_KEY, timeout=1)
    started = time.monotonic()
    assert await asyncio.to_thread(reason, down, pair.access_token) == "unavailable"
    assert await asyncio.to_thread(reason, down, "opaque-token-" + "x" * 30) == "unavailable"
    assert time.monotonic() - started < 5
    # A Gatehouse that refuses the service key: the app cannot check, it is not the user's fault.
    wrong_key = verifiers(base_url, service_key="not-the-key-0123456789")
    assert await asyncio.to_thread(reason, wrong_key, "opaque-token-" + "x" * 30) == "unavailable"


async def test_the_client_logs_in_and_the_verifier_agrees(api, base_url, verifiers):
    user = await register(api)
    async with GatehouseClient(base_url) as gh:
        pair = await gh.login(user["username"], PASSWORD)
        me = await gh.me()
    principal = await verifiers(base_url).averify(pair.access_token)
    assert me.session_id == principal.session_id and me.account.id == user["id"]


async def test_a_cold_start_under_load_reads_the_keys_once(api, base_url, verifiers):
    """Concurrent first requests (async tasks, and threads for the sync entry point) wait
    for the one read under way instead of failing or reading again."""
    _, pair = await new_pair(api, base_url)
    cold = verifiers(base_url)
    principals = await asyncio.gather(*(cold.averify(pair.access_token) for _ in range(20)))
    assert len({p.session_id for p in principals}) == 1 and cold.jwks_fetches == 1
    cold_sync = verifiers(base_url)
    principals = await asyncio.gather(*(asyncio.to_thread(cold_sync.verify, pair.access_token) for _ in range(8)))
    assert len({p.session_id for p in principals}) == 1 and cold_sync.jwks_fetches == 1


async def test_legacy_profile_tokens_read_user_id_and_refuse_their_refresh_tokens(api, base_url, verifiers):
    """The legacy profiles' shapes (contract19.md: no `aud`, the library's own type claim,
    an integer `user_id`), signed with Gatehouse's key: a verifier with `audience=None`."""
    _, pair = await new_pair(api, base_url)
    base = {
        k: v for k, v in claims_of(pair.access_token).items() if k not in ("aud", "typ", "type", "account_id", "roles")
    }
    key = serialization.load_pem_private_key(RSA_PEM.encode(), None)
    legacy = verifiers(base_url, audience=None)

    def sign(claims: dict, typ: str = "at+jwt") -> str:
        return jwt.encode(claims, key, "RS256", headers={"kid": KID, "typ": typ})

    anonymous = {k: v for k, v in base.items() if k != "sub"}  # drf and simple name the account by user_id only
    drf = await legacy.averify(sign({**anonymous, "token_type": "access", "user_id": 41, "typ": "access"}))
    phone = await legacy.averify(sign({**base, "type": "access", "fresh": True, "typ": "access"}))
    simple = await legacy.averify(sign({**anonymous, "type": "access_token", "user_id": 43, "typ": "access"}))
    assert (drf.account_id, phone.account_id, simple.account_id) == (41, None, 43)
    assert (drf.uid, phone.uid, simple.uid) == (None, base["sub"], None)
    with pytest.raises(InvalidToken):  # neither a uid nor an account id: nobody
        await legacy.averify(sign({**anonymous, "type": "access", "typ": "access"}))
    assert phone.claims["fresh"] is True
    assert (await legacy.averify(sign({**base, "account_id": 44, "user_id": 45, "roles": ["admin"]}))).account_id == 44
    for refresh in (
        {**base, "token_type": "refresh", "user_id": 41},
        {**base, "type": "refresh"},
        {**base, "typ": "refresh"},
    ):
        with pytest.raises(InvalidToken):
            await legacy.averify(sign(refresh))
    with pytest.raises(InvalidToken):
        await legacy.averify(sign({**base, "token_type": "access"}, typ="refresh+jwt"))
    # `roles` becomes a tuple of strings; anything else in it is dropped.
    odd = await legacy.averify(sign({**base, "roles": ["admin", 7, None, "ops"]}))
    assert odd.roles == ("admin", "ops") and odd.has_role("ops") and not odd.has_role("root")
