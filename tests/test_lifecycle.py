"""Stopping and keeping alive, against real processes: a drain under keep-alive load,
and a shutdown with the database down."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from models.db import EmbeddedMongo, free_port
from tests.procs import ServerProcess
from tests.test_ops import PASSWORD, new_user


@pytest.fixture
def servers():
    started: list[ServerProcess] = []
    yield started
    for s in started:
        s.stop()


async def test_sigterm_under_keep_alive_load_answers_every_request_it_read(servers, mongo_uri):
    """Ten keep-alive clients for about three seconds, SIGTERM in the middle: every
    request that was written got a complete answer (the others were refused before they
    were sent), answers during the drain told the client to close, and the process
    exited 0 within the grace."""
    grace = 10
    server = ServerProcess(
        mongo_uri, GATEHOUSE_SHUTDOWN_GRACE=str(grace), GATEHOUSE_LOGINS_PER_IP_HOUR="1000000"
    ).start()
    servers.append(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        # One account per client: logins of one account in parallel meet its failure
        # budget, reserved before each password check.
        users = [await new_user(http) for _ in range(10)]
    answered: list[tuple[float, int, str]] = []  # (when, status, Connection header)
    refused: list[str] = []  # failed before the request was written
    unanswered: list[str] = []  # written, and no answer: must stay empty
    end = time.monotonic() + 3.0

    async def client(n: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        name, token = users[n]
        async with httpx.AsyncClient(base_url=server.url, timeout=15, limits=limits) as http:
            i = 0
            while time.monotonic() < end:
                i += 1
                written = False

                async def trace(event: str, info: dict) -> None:
                    nonlocal written
                    if event == "http11.send_request_headers.complete":
                        written = True

                try:
                    if (n + i) % 5 == 0:  # a body on a reused connection, and a slower request
                        r = await http.post(
                            "/auth/auth",
                            json={"username": name, "password": PASSWORD},
                            extensions={"trace": trace},
                        )
                    else:
                        r = await http.get("/auth/me", headers={"Authorization": token}, extensions={"trace": trace})
                except httpx.TransportError as e:
                    (unanswered if written else refused).append(f"{type(e).__name__}: {e}")
                    await asyncio.sleep(0.05)
                    continue
                answered.append((time.monotonic(), r.status_code, r.headers.get("Connection", "")))

    clients = [asyncio.create_task(client(n)) for n in range(10)]
    await asyncio.sleep(1.5)
    term_at = time.monotonic()
    server.signal(signal.SIGTERM)
    await asyncio.gather(*clients)
    code = await asyncio.to_thread(server.wait, grace + 5)
    exited_after = time.monotonic() - term_at
    assert unanswered == [], unanswered[:5]
    assert {status for _, status, _ in answered} == {200}
    after = [conn for when, _, conn in answered if when > term_at]
    assert any(conn.lower() == "close" for conn in after), "no answer during the drain said Connection: close"
    assert refused, "the server went on accepting after SIGTERM"
    assert all("ConnectError" in e for e in refused), refused[:5]
    assert code == 0, server.output()[-3000:]
    assert exited_after < grace
    out = server.output()
    assert "draining requests in flight" in out and "stopped" in out and "Traceback" not in out


async def test_shutdown_with_the_database_down_answers_and_exits_in_time(servers, tmp_path):
    """MongoDB stopped, a request waiting on it (database timeout far past the grace)
    and an idle keep-alive connection: SIGTERM still ends in time: the request gets a 503,
    the idle connection is closed, the MongoDB client's close is cut short, exit 0."""
    db = EmbeddedMongo(tmp_path / "db", port=free_port())
    uri = db.start()
    grace = 4
    server = ServerProcess(
        uri, GATEHOUSE_SHUTDOWN_GRACE=str(grace), GATEHOUSE_DB_TIMEOUT_MS="20000", GATEHOUSE_SESSION_CACHE_MS="0"
    )
    servers.append(server.start())
    try:
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=30) as http,
            httpx.AsyncClient(base_url=server.url, timeout=30) as idle,
        ):
            _, token = await new_user(http)
            assert (await idle.get("/healthz")).status_code == 200  # kept alive, then idle
            db.stop()
            waiting = asyncio.create_task(http.get("/auth/me", headers={"Authorization": token}))
            await asyncio.sleep(0.5)  # in its handler, waiting for MongoDB
            term_at = time.monotonic()
            server.signal(signal.SIGTERM)
            r = await waiting
            code = await asyncio.to_thread(server.wait, grace + 10)
            exited_after = time.monotonic() - term_at
            with pytest.raises(httpx.ConnectError):  # the idle connection was closed, and nothing listens
                await idle.get("/healthz")
    finally:
        db.stop()
    assert r.status_code == 503 and r.json()["code"] == "UNAVAILABLE", r.text
    assert code == 0, server.output()[-3000:]
    assert exited_after < grace + 2, f"exit took {exited_after:.1f} s"
    out = server.output()
    assert "answered 1 request(s) still running at the shutdown deadline with 503" in out
    assert "Traceback" not in out
