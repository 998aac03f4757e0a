"""Hostile edges of issue 18's additions, found by an independent review: Content-Length
values BodyLimit must survive, odd credentials and bodies on the OAuth endpoints, the
routes that must never grant CORS, and what a revoke with a long-dead JWT may cost."""

from __future__ import annotations

import asyncio
import base64

import pytest

from tests.conftest import failpoint, login, register
from tests.test_http_details import MIB, post_head, raw_exchange, read_rest
from tests.test_oauth import FORM, KEYS, SERVICE_KEY, basic, form, introspect, revoke

APP = "http://127.0.0.1:3999"


@pytest.mark.parametrize("length", [b"\xb2", b"\xb9\xb3", b"9" * 5000])
async def test_a_content_length_that_is_no_integer_is_answered_not_a_traceback(base_url, api, caplog, length):
    # "²" is str.isdigit() but not int(); 5000 digits are over int()'s limit. Either
    # raised in BodyLimit.headers_received: an "Uncaught exception" traceback logged per
    # request and the connection dropped with no answer.
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /auth/auth HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: "
        + length
        + b"\r\n\r\n{}"
    )
    await writer.drain()
    answer = await read_rest(reader)
    writer.close()
    assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 413")), answer[:200]
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    assert (await api.get("/healthz")).status == 200


async def test_a_content_length_beyond_any_real_size_is_refused_at_once(base_url):
    """Past 2**62 bytes (`BodyLimit.UNCAPPED`) Tornado refuses the request itself, before
    any handler: its bare 400 and a closed connection, nothing read (README, "HTTP
    details"). Every other size over the limit gets the route's JSON 413."""
    answer, _ = await raw_exchange(base_url, post_head("/auth/auth", Content_Length="9" * 30))
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]


async def test_a_repeated_content_length_over_the_limit_gets_the_json_413(base_url):
    size = 5 * MIB
    chunk = b"x" * 65536
    head = post_head("/auth/auth", Content_Length=f"{size}, {size}")
    answer, _ = await raw_exchange(base_url, head, [chunk] * (size // len(chunk)))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


async def test_the_connection_serves_the_next_request_after_a_drained_413(base_url):
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    size = 2 * MIB
    writer.write(post_head("/auth/auth", Content_Length=str(size)) + b"x" * size)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    await writer.drain()
    data = b""
    for _ in range(50):
        try:
            more = await asyncio.wait_for(reader.read(65536), 2)
        except TimeoutError:
            break
        if not more:
            break
        data += more
        if data.count(b"HTTP/1.1 ") >= 2 and data.endswith(b"}"):
            break
    writer.close()
    assert data.startswith(b"HTTP/1.1 413"), data[:100]
    assert b"HTTP/1.1 200" in data, data


BASIC_JUNK = [
    "Basic",
    "Basic ",
    "Basic ====",
    "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
    "Basic " + base64.b64encode("ünï:cødé".encode()).decode(),
    "Basic " + "A" * 20000,
    "Basic " + base64.b64encode(b"id:" + b"k" * 6000).decode(),
    "basic\t" + base64.b64encode(f"x:{SERVICE_KEY}".encode()).decode(),
    "Basic " + base64.b64encode(b"nocolon").decode(),
    "Bearer " + "k" * 5000,
]


@pytest.mark.parametrize("settings", [KEYS])
@pytest.mark.parametrize("auth", BASIC_JUNK)
async def test_weird_basic_values_are_401_invalid_client(api, auth):
    r = await introspect(api, "whatever", auth=auth)
    assert r.status == 401 and r.data["error"] == "invalid_client", (auth[:30], r.status, r.data)


@pytest.mark.parametrize("settings", [KEYS])
async def test_wrong_bearer_service_key_challenge_says_invalid_token(api):
    r = await introspect(api, "whatever", auth="Bearer wrong-key-0123456789abcdefgh")
    assert r.status == 401
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"], r.headers["WWW-Authenticate"]


@pytest.mark.parametrize("settings", [KEYS])
@pytest.mark.parametrize(
    "ctype",
    [
        "application/x-www-form-urlencoded; charset=ISO-8859-1",
        "APPLICATION/X-WWW-FORM-URLENCODED",
        "application/x-www-form-urlencoded;",
        " application/x-www-form-urlencoded ; charset=utf-8",
    ],
)
async def test_content_type_variants_are_read(api, ctype):
    token = await login(api, await register(api))
    r = await api.post(
        "/oauth/introspect", raw=form(token=token), headers={"Content-Type": ctype, "Authorization": basic(SERVICE_KEY)}
    )
    assert r.status == 200 and r.data["active"] is True, (ctype, r.status, r.data)


@pytest.mark.parametrize("settings", [KEYS])
async def test_hostile_form_bodies_never_500(api):
    auth = {"Authorization": basic(SERVICE_KEY)}
    bodies = [
        b"token=%00",
        b"token",
        b"=x&token=y",
        b"token=a;token=b",
        b"token=" + b"%" * 1000,
        b"token=" + b"a.b.c" * 10000,
        b"token=x&token_type_hint=" + b"h" * 100,
        b"\xff\xfe",
        b"token=%E2%82",
        b"token=" + b"." * 2,
        b"token=a.b.c&token_type_hint=refresh_token",
    ]
    for path in ("/oauth/introspect", "/oauth/revoke"):
        for body in bodies:
            r = await api.post(path, raw=body, headers={**FORM, **auth})
            assert r.status in (200, 400), (path, body[:30], r.status, r.data)


@pytest.mark.parametrize("settings", [{"cors_origins": (APP,), **KEYS}])
async def test_no_cors_where_it_must_never_be(api, admin):
    origin = {"Origin": APP}
    for method, path in [
        ("POST", "/oauth/introspect"),
        ("GET", "/metrics"),
        ("GET", "/admin/api/sessions"),
        ("GET", "/console/login"),
        ("GET", "/nowhere"),
        ("GET", "/auth/introspect"),
        ("GET", "/static/console.css"),
    ]:
        pre = await api.client.fetch(
            api.base + path,
            method="OPTIONS",
            raise_error=False,
            headers={
                **origin,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert "Access-Control-Allow-Origin" not in pre.headers, (path, pre.code)
        kw = {"body": b"", "allow_nonstandard_methods": True} if method == "POST" else {}
        real = await api.client.fetch(api.base + path, method=method, raise_error=False, headers=origin, **kw)
        assert "Access-Control-Allow-Origin" not in real.headers, (path, real.code)


async def test_an_old_jwt_whose_session_is_gone_costs_one_read_not_one_per_revoke(api, gatehouse, mongo_uri, clock):
    """A genuine but long-expired JWT (its session removed by the TTL index) passes
    `possessed_sid` forever (verify_exp=False); nothing remembers that its session is
    gone, so every revoke with it costs a read, from any address, without a budget."""
    from tests.test_jwt import claims_of
    from tests.test_resource_server import native_pair

    access, _ = await native_pair(api, None)
    sid = claims_of(access)["sid"]
    clock.advance(gatehouse.config.sessions.session_max_seconds + 7200)
    await gatehouse.sessions.coll.delete_one({"_id": sid})  # what the TTL index does
    assert (await revoke(api, access)).status == 200  # first time: its one read
    await api.get("/openapi.json")
    async with failpoint(mongo_uri, ["find"], errorCode=2):
        r = await revoke(api, access)
    assert r.status == 200, (r.status, r.data)  # answered without reading again


async def test_head_on_oauth_routes(api):
    r = await api.request("HEAD", "/oauth/revoke")
    assert r.status == 405 and r.headers["Allow"] == "POST" and r.body == b""
    got = await api.get("/.well-known/oauth-authorization-server")
    head = await api.request("HEAD", "/.well-known/oauth-authorization-server")
    assert head.status == got.status == 200 and head.body == b""
    assert int(head.headers["Content-Length"]) == len(got.body)
