"""HTTP details (issue 18): HEAD wherever GET is, path ids of any length, the JSON 413
for bodies over the limit however they are sent, and /openapi.json compressed.

Bodies over the limit are sent over raw sockets where the test needs to control what
is written and when (a declared size never sent, a chunk that claims a gigabyte)."""

from __future__ import annotations

import asyncio
import gzip
import json
import tracemalloc

import httpx
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from tests.conftest import assert_error, login, register

# Headers that differ between any two answers, whatever the method.
PER_ANSWER = {"date", "x-request-id"}
MIB = 1024 * 1024


def comparable(headers) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.get_all() if k.lower() not in PER_ANSWER}


# ---- HEAD ------------------------------------------------------------------------------


async def test_head_answers_every_get_route_like_get_without_a_body(api, admin):
    user = await register(api)
    token = await login(api, user)
    cases = [
        ("/healthz", None),
        ("/readyz", None),
        ("/openapi.json", None),
        ("/auth/me", token),  # native, logged in
        ("/auth/me", None),  # native, 403 in its envelope
        ("/auth/sessions", token),
        ("/api/auth/users/", admin["token"]),  # drf
        (f"/api/auth/users/{user['id']}/", admin["token"]),
        ("/api/auth/users/", token),  # drf, 403 for a non-admin
        (f"/admin/api/accounts/{user['id']}", admin["token"]),  # admin API
        ("/admin/api/sessions", None),  # admin API, 401 with its challenge
        ("/auth/nothing-here", None),  # the catch-all 404
    ]
    for path, tok in cases:
        got = await api.get(path, token=tok)
        head = await api.request("HEAD", path, token=tok)  # the harness checks HEAD against GET's spec
        assert head.status == got.status, (path, head.status, got.status)
        assert head.body == b"", path
        assert comparable(head.headers) == comparable(got.headers), path
        if "X-Consumed-Content-Encoding" not in got.headers:  # the client unpacked /openapi.json
            assert int(head.headers["Content-Length"]) == len(got.body), path


async def test_head_on_the_console_metrics_and_static_files(base_url):
    async with httpx.AsyncClient(base_url=base_url) as http:
        for path in ("/console/login", "/console/", "/metrics", "/static/console.css"):
            got, head = await http.get(path), await http.head(path)
            assert head.status_code == got.status_code and head.content == b"", path
            assert head.headers["Content-Type"] == got.headers["Content-Type"], path
            if path != "/metrics":  # its figures change between two requests
                assert int(head.headers["Content-Length"]) == len(got.content), path


@pytest.mark.parametrize(
    "path",
    ["/auth/auth", "/api/auth/login/", "/auth/api/login/", "/auth/create", "/api/v1/auth/login", "/auth/token"],
)
async def test_head_on_a_post_only_route_is_405_naming_post(api, path):
    r = await api.request("HEAD", path)
    assert r.status == 405 and r.body == b""
    assert r.headers["Allow"] == "POST"


async def test_allow_lists_head_beside_get(api, admin):
    r = await api.post("/auth/me", {})
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert r.headers["Allow"] == "GET, HEAD"
    r = await api.delete("/healthz")
    assert r.status == 405 and r.headers["Allow"] == "GET, HEAD"
    r = await api.delete("/api/auth/users/", token=admin["token"])
    assert r.status == 405 and r.headers["Allow"] == "GET, HEAD, POST"


@pytest.mark.parametrize("settings", [{"cors_origins": ("https://app.example.com",)}])
async def test_a_preflight_for_head_is_granted_where_get_is(settings, base_url):
    headers = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "HEAD"}
    async with httpx.AsyncClient() as http:
        ok = await http.options(base_url + "/auth/me", headers=headers)
        refused = await http.options(base_url + "/auth/auth", headers=headers)
    assert ok.status_code == 204 and ok.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    assert refused.status_code == 405 and refused.headers["Allow"] == "POST"


async def test_openapi_does_not_list_head(api):
    spec = (await api.get("/openapi.json")).data
    assert not any("head" in item for item in spec["paths"].values())


# ---- path ids of any length -----------------------------------------------------------


@pytest.mark.parametrize("length", [201, 500, 5000])
async def test_ids_of_any_length_get_their_routes_own_404(api, admin, length):
    user = await register(api)
    token = await login(api, user)
    # native: its envelope and code
    r = await api.delete("/auth/sessions/" + "a" * length, token=token)
    assert_error(r, 404, "NOT_FOUND")
    # drf: DRF's detail
    r = await api.get("/api/auth/users/" + "1" * length + "/", token=admin["token"])
    assert r.status == 404 and r.data == {"detail": "Not found."}
    # the admin API: {error, message}, for an account id and a session id
    r = await api.get("/admin/api/accounts/" + "7" * length, token=admin["token"])
    assert r.status == 404 and r.data["error"] == "NOT_FOUND" and "account" in r.data["message"]
    r = await api.delete("/admin/api/sessions/" + "f" * length, token=admin["token"])
    assert r.status == 404 and r.data["error"] == "NOT_FOUND" and "session" in r.data["message"]


# ---- bodies over the limit --------------------------------------------------------------


async def raw_exchange(base_url: str, head: bytes, body_chunks=(), *, read_first: bool = False) -> tuple[bytes, int]:
    """Send `head` then the body chunks, stopping as soon as an answer has arrived when
    `read_first`; returns (the whole answer until the server closes or a 2 s lull, the
    body bytes written)."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    sent = 0
    try:
        writer.write(head)
        await writer.drain()
        for chunk in body_chunks:
            if read_first:
                try:
                    first = await asyncio.wait_for(reader.read(65536), 0.001)
                except TimeoutError:
                    first = None
                if first is not None:
                    return first + await read_rest(reader), sent
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
        return await read_rest(reader), sent
    finally:
        writer.close()


async def read_rest(reader: asyncio.StreamReader) -> bytes:
    data = b""
    while True:
        try:
            more = await asyncio.wait_for(reader.read(65536), 2)
        except (TimeoutError, ConnectionError):
            return data
        if not more:
            return data
        data += more
        if b"\r\n\r\n" in data:
            head, _, rest = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                None,
            )
            if length is not None and len(rest) >= length:
                return data


def parse(answer: bytes) -> tuple[int, dict[str, str], object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


def post_head(path: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: application/json"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_body_declared_far_over_the_limit_is_answered_413_before_it_is_sent(base_url, api):
    # A gigabyte declared, nothing sent: the answer comes at once, in the route's style.
    answer, _ = await raw_exchange(base_url, post_head("/api/auth/login/", Content_Length=str(1 << 30)))
    status, headers, body = parse(answer)
    assert status == 413 and headers["content-type"].startswith("application/json")
    assert body == {"detail": f"request body over {MIB} bytes"}
    assert (await api.get("/healthz")).status == 200  # the server is fine


async def test_a_client_waiting_for_100_continue_gets_the_413_instead(base_url):
    head = post_head("/auth/auth", Content_Length=str(2 * MIB), Expect="100-continue")
    answer, _ = await raw_exchange(base_url, head)
    assert not answer.startswith(b"HTTP/1.1 100")
    status, _, body = parse(answer)
    assert status == 413 and body["code"] == "PAYLOAD_TOO_LARGE" and body["data"] is None


async def test_fifty_megabytes_get_a_clean_413_without_being_held_in_memory(base_url, api):
    chunk = b"x" * 65536
    count = 50 * MIB // len(chunk)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        answer, sent = await raw_exchange(
            base_url, post_head("/auth/auth", Content_Length=str(count * len(chunk))), [chunk] * count
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    status, headers, body = parse(answer)
    # Within the drain allowance the whole body is read (and dropped), so a client that
    # writes everything before reading gets its answer rather than a reset.
    assert sent == 50 * MIB and status == 413 and body["code"] == "PAYLOAD_TOO_LARGE"
    assert peak < 8 * MIB, f"{peak / MIB:.1f} MiB allocated while receiving 50 MiB"
    assert (await api.get("/healthz")).status == 200


@pytest.mark.parametrize("settings", [{"max_body_bytes": 4096}])
async def test_a_body_over_the_drain_allowance_is_answered_before_it_is_all_read(settings, base_url):
    # 4 KiB limit: bodies are drained up to 256 KiB; this one declares 10 MiB.
    chunk = b"y" * 16384
    answer, sent = await raw_exchange(
        base_url, post_head("/api/v1/auth/login", Content_Length=str(10 * MIB)), [chunk] * 640, read_first=True
    )
    status, _, body = parse(answer)
    assert status == 413 and body["code"] != 0 and "4096" in body["desc"], body
    assert sent < 10 * MIB


async def test_a_chunked_body_over_the_limit_gets_the_routes_413(base_url):
    async def stream():
        for _ in range(80):  # 5 MiB, chunked (no Content-Length)
            yield b"z" * 65536

    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(
            base_url + "/auth/api/login/", content=stream(), headers={"Content-Type": "application/json"}
        )
    assert r.request.headers["Transfer-Encoding"] == "chunked"
    assert r.status_code == 413 and r.json() == {"error": f"request body over {MIB} bytes"}


@pytest.mark.parametrize("settings", [{"max_body_bytes": 4096}])
async def test_a_chunk_claiming_a_gigabyte_gets_the_413_not_tornados_400(settings, base_url, api):
    head = post_head("/auth/auth", Transfer_Encoding="chunked") + b"40000000\r\n"  # one chunk of 1 GiB
    answer, sent = await raw_exchange(base_url, head, [b"w" * 16384] * 640, read_first=True)
    status, _, body = parse(answer)
    assert status == 413 and body["code"] == "PAYLOAD_TOO_LARGE"
    assert sent < 10 * MIB
    assert (await api.get("/healthz")).status == 200


async def test_an_oversized_console_form_is_413(base_url):
    async with httpx.AsyncClient(base_url=base_url) as http:
        r = await http.post("/console/login", content=b"username=" + b"a" * (2 * MIB))
    assert r.status_code == 413 and r.headers["Content-Type"].startswith("text/html")


# ---- /openapi.json compressed -----------------------------------------------------------


async def test_openapi_is_gzip_compressed_when_the_client_accepts_it(base_url):
    client = AsyncHTTPClient()

    async def fetch(encoding: str | None):
        headers = {"Accept-Encoding": encoding} if encoding else {}
        return await client.fetch(HTTPRequest(base_url + "/openapi.json", headers=headers, decompress_response=False))

    plain, packed, refused = await fetch(None), await fetch("br, gzip;q=0.5"), await fetch("gzip;q=0, identity")
    assert "Content-Encoding" not in plain.headers and "Content-Encoding" not in refused.headers
    assert packed.headers["Content-Encoding"] == "gzip"
    for r in (plain, packed, refused):
        assert "Accept-Encoding" in r.headers["Vary"]
    assert len(packed.body) < len(plain.body) / 4
    assert gzip.decompress(packed.body) == plain.body == refused.body
    assert json.loads(plain.body)["openapi"] == "3.1.0"


async def test_other_answers_are_never_compressed(api, base_url):
    # BREACH: an answer carrying a token must not be compressed, whatever the client accepts.
    user = await register(api)
    async with httpx.AsyncClient() as http:
        r = await http.post(
            base_url + "/auth/auth",
            json={"username": user["username"], "password": user["password"]},
            headers={"Accept-Encoding": "gzip"},
        )
    assert r.status_code == 200 and "Content-Encoding" not in r.headers
