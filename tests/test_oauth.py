"""The standard OAuth endpoints (issue 18): RFC 7662 introspection, RFC 7009 revocation
and RFC 8414 metadata, driven by a real OAuth library (authlib) as resource servers and
public clients use it, and by hand where the rules are about the edges.

authlib's clients here are httpx-based: the introspecting resource server is sync (its
`ResourceProtector` is), so it runs in a thread; the revoking public client is authlib's
`AsyncOAuth2Client`, on the test's loop like the server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import warnings
from urllib.parse import quote, urlencode

import httpx
import jwt
import pytest
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.oauth2.rfc6749 import ResourceProtector
from authlib.oauth2.rfc6749.requests import JsonRequest
from authlib.oauth2.rfc6750 import InvalidTokenError
from authlib.oauth2.rfc7662 import IntrospectTokenValidator
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

from models.common import Context
from tests.conftest import PASSWORD, failpoint, login, register, unique
from tests.test_jwt import claims_of, pem, rsa_key
from tests.test_resource_server import drf_pair, native_pair, phone_pair, v1_pair

with warnings.catch_warnings():
    # authlib 1.9 asks for httpx2 beside its httpx clients, warning once on import; the
    # clients work on the httpx the suite already has.
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuth2Client

# RFC 6749 2.3.1 form-encodes a client secret before HTTP Basic encodes it: a key with
# characters that encoding changes shows both spellings are accepted.
SERVICE_KEY = "svc+key/with=odd:chars-0123456789"
KEYS = {"service_keys": (SERVICE_KEY, "a-second-service-key-0123456789")}
APP = "http://127.0.0.1:3999"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def form(**fields: str) -> bytes:
    return urlencode(fields).encode()


def basic(secret: str, client_id: str = "resource-server") -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


async def introspect(api, token: str, auth: str | None = basic(SERVICE_KEY), **extra: str):
    headers = dict(FORM, **({"Authorization": auth} if auth else {}))
    return await api.post("/oauth/introspect", raw=form(token=token, **extra), headers=headers)


async def revoke(api, token: str, **headers: str):
    return await api.post("/oauth/revoke", raw=form(token=token), headers={**FORM, **headers})


async def opaque_token(api, sinks) -> tuple[str, None]:
    return await login(api, await register(api)), None


async def simple_token(api, sinks) -> tuple[str, None]:
    user = await register(api)
    r = await api.post("/auth/", {"username": user["username"], "password": PASSWORD})
    return r.data["access_token"], None


EVERY_STYLE = pytest.mark.parametrize(
    "tokens_of", [opaque_token, native_pair, drf_pair, phone_pair, v1_pair, simple_token]
)
WITH_REFRESH = pytest.mark.parametrize("pair_of", [native_pair, drf_pair, phone_pair, v1_pair])


class GatehouseIntrospection(IntrospectTokenValidator):
    """A resource server's validator as authlib's documentation writes it: introspect
    the bearer token (HTTP Basic, `client_secret_basic`), then refuse what is not an
    active access token (`token_use`, Hydra's name, tells a refresh token apart)."""

    def __init__(self, url: str, secret: str) -> None:
        super().__init__(realm="api")
        self.url, self.secret = url, secret

    def introspect_token(self, token_string: str) -> dict:
        with OAuth2Client(client_id="resource-server", client_secret=self.secret) as client:
            r = client.introspect_token(self.url, token=token_string, token_type_hint="access_token")
            r.raise_for_status()
            return r.json()

    def validate_token(self, token, scopes, request) -> None:
        super().validate_token(token, scopes, request)
        if token.get("token_use") != "access_token":
            raise InvalidTokenError(realm=self.realm)


def protector(base_url: str, secret: str = SERVICE_KEY) -> ResourceProtector:
    rs = ResourceProtector()
    rs.register_token_validator(GatehouseIntrospection(base_url + "/oauth/introspect", secret))
    return rs


async def protected_call(rs: ResourceProtector, token: str) -> dict:
    """What the resource server does with a request carrying `token` (in a thread:
    authlib's resource protector is synchronous)."""
    request = JsonRequest("GET", "https://api.example.test/thing", headers={"Authorization": f"Bearer {token}"})
    return await asyncio.to_thread(rs.validate_request, None, request)


# ---- introspection ------------------------------------------------------------------------


@EVERY_STYLE
@pytest.mark.parametrize("settings", [KEYS])
async def test_authlib_resource_server_introspects_tokens_of_every_style(sinks, api, base_url, gatehouse, tokens_of):
    access, refresh = await tokens_of(api, sinks)
    rs = protector(base_url)
    facts = await protected_call(rs, access)
    session = (await api.get("/auth/me", token=access)).data["data"]
    account = await gatehouse.accounts.find_by_id(session["account"]["id"])
    assert facts["active"] is True and facts["token_type"] == "Bearer" and facts["token_use"] == "access_token"
    assert facts["sub"] == account.uid and facts["sid"] == session["session"]
    assert facts["account_id"] == account.id and facts["roles"] == sorted(account.roles)
    assert facts["username"] in (account.username, account.email, account.phone)
    assert facts["iss"] == gatehouse.config.jwt.jwt_issuer and facts["exp"] > facts["iat"]
    if access.count(".") == 2:  # a JWT: its own claims, never a hard-coded audience (none: a legacy profile's)
        claims = claims_of(access)
        assert (facts.get("aud"), facts["jti"], facts["exp"]) == (claims.get("aud"), claims["jti"], claims["exp"])
    else:
        assert facts["aud"] == gatehouse.config.jwt.jwt_audience and facts["jti"] == facts["sid"]
    # The same answer, checked against /openapi.json by the harness.
    r = await introspect(api, access)
    assert r.status == 200 and r.data == facts
    if refresh is None:
        return
    r = await introspect(api, refresh, token_type_hint="refresh_token")
    assert r.data["active"] is True and r.data["token_use"] == "refresh_token" and r.data["token_type"] == "Bearer"
    assert r.data.get("aud") == claims_of(refresh).get("aud")  # from the token (a legacy profile's: none)
    assert "aud" not in facts or r.data["aud"] == "gatehouse/refresh" != facts["aud"]
    assert r.data["sid"] == facts["sid"]
    with pytest.raises(InvalidTokenError):  # a resource server never takes it for an access token
        await protected_call(rs, refresh)


@pytest.mark.parametrize("settings", [KEYS])
async def test_kicked_expired_retired_malformed_and_unknown_tokens_are_just_inactive(
    sinks, api, base_url, gatehouse, clock, admin
):
    console = await gatehouse.auth.login_password(admin["username"], PASSWORD, Context(), kind="console")
    user = await register(api)
    kicked_opaque = await login(api, user)
    kicked_access, kicked_refresh = await native_pair(api, sinks)
    # kicked: the native pair's account
    kicked_account = claims_of(kicked_access)["sub"]
    account = await gatehouse.accounts.find_by_uid(kicked_account)
    await gatehouse.auth.kick_all(account.id, Context(), by="test")
    await gatehouse.auth.kick_all(user["id"], Context(), by="test")
    # retired: a refresh token rotated away
    access, refresh = await v1_pair(api, sinks)
    rotated = await api.post("/api/v1/auth/refresh", {"refresh_token": refresh})
    assert rotated.status == 200
    forged = jwt.encode({**claims_of(access)}, "not-our-key-" * 4, algorithm="HS256", headers={"kid": "x"})
    inactive = [
        kicked_opaque,
        kicked_access,
        kicked_refresh,
        refresh,  # retired
        console.token,  # a console session's token is not an API token
        forged,
        "a.b.c",
        "no-such-token",
        unique("opaque") * 40,
        "x" * 10_000,
        "é-not-ascii-ü",
    ]
    rs = protector(base_url)
    for token in inactive:
        r = await introspect(api, token)
        assert (r.status, r.data) == (200, {"active": False}), token[:40]
        with pytest.raises(InvalidTokenError):
            await protected_call(rs, token)
    # expired: past the access token's life, and past every session's
    live_access, live_refresh = await native_pair(api, sinks)
    opaque = await login(api, await register(api))
    assert (await introspect(api, live_access)).data["active"] is True
    clock.advance(gatehouse.config.jwt.lifetime("native").access + gatehouse.config.jwt.jwt_leeway + 1)
    assert (await introspect(api, live_access)).data == {"active": False}
    assert (await introspect(api, live_refresh)).data["active"] is True  # its own, longer life
    clock.advance(gatehouse.config.sessions.session_max_seconds + 1)
    for token in (live_refresh, opaque):
        assert (await introspect(api, token)).data == {"active": False}


@pytest.mark.parametrize("settings", [KEYS])
async def test_introspection_needs_a_service_key_by_basic_or_bearer(api, base_url):
    token = await login(api, await register(api))
    good = [
        basic(SERVICE_KEY),
        basic(quote(SERVICE_KEY, safe=""), client_id="rs%20one"),  # RFC 6749 2.3.1's form-encoding
        basic("a-second-service-key-0123456789", client_id=""),
        "Bearer " + SERVICE_KEY,
    ]
    for auth in good:
        r = await introspect(api, token, auth=auth)
        assert r.status == 200 and r.data["active"] is True, auth
    bad = [
        None,
        basic("wrong-key-0123456789abcdefgh"),
        basic(SERVICE_KEY[:-1]),
        "Basic " + base64.b64encode(SERVICE_KEY.encode()).decode(),  # no client id and no colon
        "Basic not*base64",
        "Bearer wrong-key-0123456789abcdefgh",
        "Bearer " + token,  # a user's token is no service key
        "Digest " + SERVICE_KEY,
    ]
    for auth in bad:
        r = await introspect(api, token, auth=auth)
        assert r.status == 401 and r.data["error"] == "invalid_client" and r.data["error_description"], auth
        challenge = r.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="gatehouse"') and 'Basic realm="gatehouse"' in challenge
    # authlib's client with a wrong secret sees the same refusal
    rs = protector(base_url, secret="wrong-key-0123456789abcdefgh")
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await protected_call(rs, token)
    assert refused.value.response.status_code == 401


async def test_without_service_keys_nobody_introspects(api):
    token = await login(api, await register(api))
    r = await introspect(api, token, auth="Bearer ")
    assert r.status == 401 and r.data["error"] == "invalid_client"
    r = await introspect(api, token, auth=basic(""))
    assert r.status == 401


@pytest.mark.parametrize("settings", [KEYS])
async def test_requests_that_are_not_rfc_forms_are_400_invalid_request(api):
    token = await login(api, await register(api))
    auth = {"Authorization": basic(SERVICE_KEY)}
    cases = [
        (json.dumps({"token": token}).encode(), {"Content-Type": "application/json"}),
        (form(token=token), {"Content-Type": "text/plain"}),
        (b"", FORM),  # no token
        (form(token=""), FORM),
        (b"token=a&token=b", FORM),  # RFC 6749 3.2: never twice
        (b"token=%ff%fe", FORM),  # not UTF-8
        ("&".join(f"p{i}=1" for i in range(40)).encode() + b"&token=x", FORM),
    ]
    for path in ("/oauth/introspect", "/oauth/revoke"):
        for body, headers in cases:
            r = await api.post(path, raw=body, headers={**headers, **auth})
            assert r.status == 400 and r.data["error"] == "invalid_request", (path, body[:40], r.data)
            assert r.data["error_description"]
        r = await api.post(path + "?token=" + token, raw=form(token=token), headers={**FORM, **auth})
        assert r.status == 400 and r.data["error"] == "invalid_request"  # never a token in a URL
        r = await api.get(path)
        assert r.status == 405 and r.data["error"] == "invalid_request"


# ---- revocation ---------------------------------------------------------------------------


async def authlib_revoke(base_url: str, token: str, hint: str | None = None) -> httpx.Response:
    """A public client (no secret: `revocation_endpoint_auth_method` none) revoking
    with authlib, as an SPA or a mobile app logs out."""
    async with AsyncOAuth2Client(client_id="spa") as client:
        return await client.revoke_token(base_url + "/oauth/revoke", token=token, token_type_hint=hint)


async def events_of(gatehouse, sid: str) -> list[dict]:
    return [e for e in await gatehouse.events.find(type="logout") if e["session_id"] == sid]


@WITH_REFRESH
async def test_a_public_client_logs_out_with_only_its_refresh_token(sinks, api, base_url, gatehouse, pair_of):
    access, refresh = await pair_of(api, sinks)
    sid = claims_of(access)["sid"]
    assert (await api.get("/auth/me", token=access)).status == 200
    r = await authlib_revoke(base_url, refresh, hint="refresh_token")
    assert r.status_code == 200 and r.content == b""
    session = await gatehouse.sessions.find(sid)
    assert session.revoked_at is not None and session.revoked_reason == "logout"
    assert session.revoked_by == f"account:{session.account_id}"
    [event] = await events_of(gatehouse, sid)  # audited like a logout
    assert event["style"] == "oauth" and event["account_id"] == session.account_id
    # The whole session is over: its access token, its refresh token.
    assert (await api.get("/auth/me", token=access)).status == 403
    assert (await api.post("/auth/token/refresh", {"refresh_token": refresh})).status == 401
    # Again: the same answer, nothing more happens.
    assert (await authlib_revoke(base_url, refresh)).status_code == 200
    assert len(await events_of(gatehouse, sid)) == 1


@pytest.mark.parametrize("pair_of", [native_pair, v1_pair])
async def test_an_expired_access_token_still_ends_its_session(sinks, api, base_url, gatehouse, clock, pair_of):
    """Its signature proves the client held it: a client whose access token expired (and
    that has no refresh token at hand) can still log out."""
    access, refresh = await pair_of(api, sinks)
    sid = claims_of(access)["sid"]
    style = (await gatehouse.sessions.find(sid)).style
    clock.advance(gatehouse.config.jwt.lifetime(style).access + gatehouse.config.jwt.jwt_leeway + 1)
    r = await api.get("/auth/me", token=access)
    assert r.status == 403 and r.data["code"] == "TOKEN_EXPIRED"
    r = await authlib_revoke(base_url, access, hint="access_token")
    assert r.status_code == 200 and r.content == b""
    assert (await gatehouse.sessions.find(sid)).revoked_reason == "logout"
    r = await api.post("/api/v1/auth/refresh", {"refresh_token": refresh})
    assert r.status == 401


async def test_an_opaque_token_is_revoked_and_only_its_own_session_ends(api, base_url, gatehouse):
    user = await register(api)
    token, other = await login(api, user), await login(api, user)
    r = await revoke(api, token)
    assert r.status == 200 and r.body == b"" and "Content-Type" not in r.headers
    assert (await api.get("/auth/me", token=token)).status == 403
    assert (await api.get("/auth/me", token=other)).status == 200
    assert (await revoke(api, token)).status == 200  # dead already: the same answer


@pytest.mark.parametrize("settings", [KEYS])
async def test_junk_is_answered_200_and_changes_nothing(api, gatehouse):
    user = await register(api)
    token = await login(api, user)
    key = gatehouse.tokens.keys.signing
    forged = jwt.encode(
        {"sid": "0" * 32, "typ": "access"}, "not-our-key-" * 4, algorithm="HS256", headers={"kid": key.kid}
    )
    for junk in ("a.b.c", "no-such-token", forged, token + "x", "x" * 10_000, SERVICE_KEY):
        r = await revoke(api, junk)
        assert (r.status, r.body) == (200, b""), junk[:40]
    assert (await api.get("/auth/me", token=token)).status == 200
    assert await gatehouse.events.find(type="logout") == []


async def test_a_junk_jwt_costs_no_database_read(api, mongo_uri):
    """With every `find` failing, a JWT whose signature fails is still answered (it never
    reached the database), while an unknown opaque token, which needs its one read, gets
    the outage's 503."""
    await api.get("/openapi.json")  # the harness's spec, fetched before the outage
    async with failpoint(mongo_uri, ["find"], errorCode=2):
        r = await revoke(api, "eyJhbGciOiJIUzI1NiJ9.eyJzaWQiOiJ4In0.c2ln")
        assert r.status == 200
        r = await revoke(api, "an-unknown-opaque-token")
        assert r.status == 503 and r.data["error"] == "temporarily_unavailable"


@pytest.mark.parametrize("settings", [{"invalid_tokens_per_minute": 10}])
async def test_a_flood_of_junk_opaque_tokens_from_one_address_ends_in_429s(api, base_url, settings):
    access, _ = await native_pair(api, None)
    results = await asyncio.gather(*(revoke(api, f"junk-{i}-{unique()}") for i in range(50)))
    statuses = [r.status for r in results]
    assert set(statuses) <= {200, 429}, statuses
    # The budget is reserved before each read: 10 a minute (20 if the window turned).
    assert statuses.count(200) <= 20 and statuses.count(429) >= 30, statuses
    for r in results:
        if r.status == 429:
            assert r.data["error"] == "slow_down" and int(r.headers["Retry-After"]) > 0
    # A JWT costs no lookup of the budget's kind: it still logs out.
    assert (await revoke(api, access)).status == 200
    assert (await api.get("/auth/me", token=access)).status == 403


# ---- metadata -----------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [KEYS])
async def test_metadata_names_endpoints_that_work(api, base_url, gatehouse):
    r = await api.get("/.well-known/oauth-authorization-server")
    assert r.status == 200
    meta = r.data
    assert meta["issuer"] == gatehouse.config.jwt.jwt_issuer
    assert meta["introspection_endpoint"] == base_url + "/oauth/introspect"
    assert meta["revocation_endpoint"] == base_url + "/oauth/revoke"
    assert meta["jwks_uri"] == base_url + "/.well-known/jwks.json"
    assert meta["introspection_endpoint_auth_methods_supported"] == ["client_secret_basic", "Bearer"]
    assert meta["revocation_endpoint_auth_methods_supported"] == ["none"]
    assert "token_endpoint" not in meta and meta["response_types_supported"] == []
    assert meta["gatehouse_token_signing_alg_values_supported"][0] == "HS256"
    assert set(meta["gatehouse_token_endpoints"]) == {"native", "drf", "phone", "simple", "v1"}
    # Every URL it names is served: the JWKS, a login and a refresh of each style…
    async with httpx.AsyncClient() as http:
        assert (await http.get(meta["jwks_uri"])).status_code == 200
        for style, endpoints in meta["gatehouse_token_endpoints"].items():
            for name, url in endpoints.items():
                r = await http.post(url, json={})
                assert r.status_code not in (404, 405), (style, name, url, r.status_code)
    # …and the standard endpoints, through authlib's own client.
    user = await register(api)
    r = await api.post("/api/v1/auth/login", {"user": user["username"], "password": PASSWORD})
    access = r.data["result"]["access_token"]
    with OAuth2Client(client_id="rs", client_secret=SERVICE_KEY) as client:
        facts = (await asyncio.to_thread(client.introspect_token, meta["introspection_endpoint"], token=access)).json()
    assert facts["active"] is True
    async with AsyncOAuth2Client(client_id="spa") as client:
        assert (await client.revoke_token(meta["revocation_endpoint"], token=access)).status_code == 200
    assert (await api.get("/auth/me", token=access)).status == 403


@pytest.mark.parametrize(
    "settings",
    [{"trust_proxy": 1, "jwt_issuer": "https://auth.example.test", "jwt_private_keys": (("rsa-1", pem(rsa_key())),)}],
)
async def test_metadata_behind_an_https_proxy_passes_authlibs_checks(api, settings):
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9", "Host": "auth.example.test"}
    r = await api.get("/.well-known/oauth-authorization-server", headers=headers)
    meta = AuthorizationServerMetadata(r.data)
    assert meta["introspection_endpoint"] == "https://auth.example.test/oauth/introspect"
    for field in (
        "issuer",
        "jwks_uri",
        "introspection_endpoint",
        "introspection_endpoint_auth_methods_supported",
        "revocation_endpoint",
        "revocation_endpoint_auth_methods_supported",
        "grant_types_supported",
    ):
        getattr(meta, f"validate_{field}")()
    assert meta["gatehouse_token_signing_alg_values_supported"] == ["RS256", "HS256"]
    # The choices README states: no RFC 6749 token endpoint, no authorization endpoint.
    with pytest.raises(ValueError, match="token_endpoint"):
        meta.validate_token_endpoint()
    with pytest.raises(ValueError, match="response_types_supported"):
        meta.validate_response_types_supported()
    r = await api.get("/.well-known/oauth-authorization-server", headers={"Host": "evil.test;x='y'"})
    assert r.status == 400 and r.data["error"] == "invalid_request"


@pytest.mark.parametrize("settings", [{"api_styles": ("drf",)}])
async def test_metadata_follows_the_enabled_styles_and_the_endpoints_stay(api, base_url):
    meta = (await api.get("/.well-known/oauth-authorization-server")).data
    assert "jwks_uri" not in meta  # served by the native style, which is off
    assert meta["gatehouse_token_endpoints"] == {
        "drf": {"login": base_url + "/api/auth/login/", "refresh": base_url + "/api/auth/refresh/"}
    }
    r = await api.post("/api/auth/login/", {"username": "nobody", "password": PASSWORD})
    assert r.status == 401
    assert (await revoke(api, "whatever")).status == 200
    assert (await introspect(api, "whatever")).status == 401  # no service keys configured


# ---- CORS and the published description ---------------------------------------------------


@pytest.mark.parametrize("settings", [{"cors_origins": (APP,), **KEYS}])
async def test_browser_apps_may_revoke_and_read_metadata_but_never_introspect(base_url, settings):
    pre = {"Origin": APP, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    async with httpx.AsyncClient(base_url=base_url) as http:
        r = await http.options("/oauth/revoke", headers=pre)
        assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"] == APP
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        r = await http.post("/oauth/revoke", content=form(token="junk"), headers={**FORM, "Origin": APP})
        assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == APP
        r = await http.get("/.well-known/oauth-authorization-server", headers={"Origin": APP})
        assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == APP
        r = await http.options("/oauth/introspect", headers=pre)
        assert r.status_code == 405 and "Access-Control-Allow-Origin" not in r.headers
        auth = {"Authorization": basic(SERVICE_KEY), "Origin": APP}
        r = await http.post("/oauth/introspect", content=form(token="junk"), headers={**FORM, **auth})
        assert r.status_code == 200 and r.json() == {"active": False}
        assert not [h for h in r.headers if h.lower().startswith("access-control-")]


async def test_openapi_describes_form_bodies_auth_and_the_empty_answer(api):
    spec = (await api.get("/openapi.json")).data
    introspect_op = spec["paths"]["/oauth/introspect"]["post"]
    revoke_op = spec["paths"]["/oauth/revoke"]["post"]
    for op in (introspect_op, revoke_op):
        assert list(op["requestBody"]["content"]) == ["application/x-www-form-urlencoded"]
        assert "415" not in op["responses"]  # a body that is no form is RFC 6749's 400
    assert introspect_op["security"] == [{"clientBasic": []}, {"serviceKey": []}]
    assert spec["components"]["securitySchemes"]["clientBasic"]["scheme"] == "basic"
    assert revoke_op["security"] == [] and "content" not in revoke_op["responses"]["200"]
    assert spec["paths"]["/.well-known/oauth-authorization-server"]["get"]["security"] == []


async def test_the_native_introspection_and_revocation_are_unchanged(api):
    """The native routes keep their envelope and their rules (issue 18)."""
    user = await register(api)
    token = await login(api, user)
    r = await api.post("/auth/revoke", {"token": token})
    assert r.status == 403  # needs a caller, unlike RFC 7009's
    r = await api.post("/auth/revoke", {"token": token}, token=token)
    assert r.status == 200 and r.data["code"] == "SUCCESS" and r.data["data"] is None
    assert (await api.get("/auth/me", token=token)).status == 403


async def test_thirty_parallel_revokes_racing_thirty_refreshes_end_the_session_once(api, gatehouse):
    """The same refresh token revoked 30 times at once while 30 refreshes of it race:
    every revoke is an empty 200, the session ends once (one logout event), and once the
    revokes have answered no token of the session works, whichever refreshes won."""
    access, refresh = await native_pair(api, None)
    sid = claims_of(access)["sid"]
    body = {"refresh_token": refresh}
    answers = await asyncio.gather(
        *(revoke(api, refresh) for _ in range(30)), *(api.post("/auth/token/refresh", body) for _ in range(30))
    )
    revokes, refreshes = answers[:30], answers[30:]
    assert [(r.status, r.body) for r in revokes] == [(200, b"")] * 30
    assert all(r.status in (200, 401) for r in refreshes), [r.status for r in refreshes]
    assert len(await events_of(gatehouse, sid)) == 1
    issued = [r.data["data"] for r in refreshes if r.status == 200]
    for token in [access] + [pair["access_token"] for pair in issued]:
        assert (await api.get("/auth/me", token=token)).status == 403
    for token in [refresh] + [pair["refresh_token"] for pair in issued]:
        assert (await api.post("/auth/token/refresh", {"refresh_token": token})).status == 401
