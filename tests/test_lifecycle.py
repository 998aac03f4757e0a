"""Stopping and keeping alive, against real processes: a drain under keep-alive load,
a shutdown with the database down, and the supervisor of `--processes N` (restarts
with backoff, counted and logged; readiness while a worker is missing; giving up on a
crash loop; no connections taken before a worker can serve)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import httpx
import pytest

from devdb import EmbeddedMongo, free_port
from tests.procs import ServerProcess
from tests.test_ops import PASSWORD, fresh_connection_client, metric_sum, new_user


class KeepAliveLoad:
    """Clients on one keep-alive connection each, sending until `until` (and past it, for
    at most ten seconds, until one of them is refused: on a slow machine the drain can
    outlast `until`); every request is sorted by what became of it."""

    def __init__(self, url: str, users: list[tuple[str, str]], until: float) -> None:
        self.url, self.users, self.until = url, users, until
        self.answered: list[tuple[float, int, str]] = []  # (when, status, Connection header)
        self.refused: list[str] = []  # failed before the request was written
        self.unanswered: list[str] = []  # written, and no answer: must stay empty

    def sending(self) -> bool:
        now = time.monotonic()
        return now < self.until or (not self.refused and now < self.until + 10)

    async def client(self, n: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        name, token = self.users[n]
        async with httpx.AsyncClient(base_url=self.url, timeout=15, limits=limits) as http:
            i = 0
            while self.sending():
                i += 1
                written = False

                async def trace(event: str, info: dict) -> None:
                    nonlocal written
                    if event == "http11.send_request_headers.complete":
                        written = True

                try:
                    if (n + i) % 5 == 0:  # a body on a reused connection, and a slower request
                        body = {"username": name, "password": PASSWORD}
                        r = await http.post("/auth/auth", json=body, extensions={"trace": trace})
                    else:
                        r = await http.get("/auth/me", headers={"Authorization": token}, extensions={"trace": trace})
                except httpx.TransportError as e:
                    (self.unanswered if written else self.refused).append(f"{type(e).__name__}: {e}")
                    await asyncio.sleep(0.05)
                    continue
                self.answered.append((time.monotonic(), r.status_code, r.headers.get("Connection", "")))


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
    load = KeepAliveLoad(server.url, users, until=time.monotonic() + 3.0)
    clients = [asyncio.create_task(load.client(n)) for n in range(10)]
    await asyncio.sleep(1.5)
    term_at = time.monotonic()
    server.signal(signal.SIGTERM)
    await asyncio.gather(*clients)
    code = await asyncio.to_thread(server.wait, grace + 5)
    exited_after = time.monotonic() - term_at
    refused = load.refused
    assert load.unanswered == [], load.unanswered[:5]
    assert {status for _, status, _ in load.answered} == {200}
    after = [conn for when, _, conn in load.answered if when > term_at]
    assert any(conn.lower() == "close" for conn in after), "no answer during the drain said Connection: close"
    assert refused, "the server went on accepting after SIGTERM"
    assert any("ConnectError" in e for e in refused), refused[:5]  # nothing listens any more
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


# ---- supervision --------------------------------------------------------------------


def workers_of(server: ServerProcess) -> list[int]:
    return server.children()


async def wait_replaced(server: ServerProcess, gone: int, count: int = 2, bound: float = 30) -> list[int]:
    """Until `count` workers run, `gone` not among them, and /readyz says all serve."""
    deadline = time.monotonic() + bound
    while True:
        pids = workers_of(server)
        if len(pids) == count and gone not in pids:
            try:
                if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                    return pids
            except httpx.TransportError:
                pass
        assert server.proc is not None and server.proc.poll() is None, server.output()[-3000:]
        assert time.monotonic() < deadline, f"worker {gone} not replaced in {bound} s:\n" + server.output()[-3000:]
        await asyncio.sleep(0.1)


async def test_workers_killed_fifteen_times_are_replaced_counted_and_logged(servers, mongo_uri):
    server = ServerProcess(
        mongo_uri,
        "--processes",
        "2",
        GATEHOUSE_WORKER_MAX_CRASHES="100",
        GATEHOUSE_WORKER_RESTART_MAX_DELAY_MS="400",
    ).start()
    servers.append(server)
    async with fresh_connection_client(server.url) as http:
        _, token = await new_user(http)
        me = {"Authorization": token}
        stop = asyncio.Event()
        background: list[str] = []

        async def load() -> None:  # through every kill: answers are 200, or no connection at all
            while not stop.is_set():
                try:
                    r = await http.get("/auth/me", headers=me)
                    background.append(str(r.status_code))
                except httpx.TransportError as e:
                    background.append(type(e).__name__)
                await asyncio.sleep(0.02)

        loader = asyncio.create_task(load())
        try:
            pids = workers_of(server)
            for kill in range(15):
                victim = pids[kill % 2]
                os.kill(victim, signal.SIGKILL)
                pids = await wait_replaced(server, victim)
                after = [await http.get("/auth/me", headers=me) for _ in range(10)]
                assert [r.status_code for r in after] == [200] * 10, f"after kill {kill + 1}"
        finally:
            stop.set()
            await loader
        assert background.count("200") > 0
        assert {b for b in background if b != "200"} <= {"ConnectError", "ReadError", "RemoteProtocolError"}
        text = (await http.get("/metrics")).text
        assert metric_sum(text, "gatehouse_worker_restarts_total") == 15
    out = server.output()
    assert len(re.findall(r"worker \d \(pid \d+\) was killed by SIGKILL; restarting it in", out)) == 15
    assert "giving up" not in out
    server.signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.wait, 30) == 0


async def test_readyz_reports_a_missing_worker_while_its_restart_backs_off(servers, mongo_uri):
    """The first restart waits 1 s; the same worker dying again soon after waits 2 s.
    Meanwhile the other worker answers, and /readyz says 503 with one worker missing."""
    server = ServerProcess(mongo_uri, "--processes", "2", GATEHOUSE_WORKER_RESTART_DELAY_MS="1000").start()
    servers.append(server)
    pids = workers_of(server)
    ready = httpx.get(server.url + "/readyz", timeout=5).json()
    assert ready == {"status": "ready", "database": True, "workers": {"expected": 2, "serving": 2, "missing": 0}}
    victim = pids[0]
    for delay in ("1.0", "2.0"):
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while True:
            r = httpx.get(server.url + "/readyz", timeout=5)
            if r.status_code == 503:
                break
            assert time.monotonic() < deadline, "readyz never noticed the missing worker"
            await asyncio.sleep(0.05)
        assert r.json() == {
            "status": "not ready",
            "database": True,
            "workers": {"expected": 2, "serving": 1, "missing": 1},
        }
        assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200  # the other one serves
        replaced = await wait_replaced(server, victim)
        assert f"restarting it in {delay} s" in server.output()
        victim = next(p for p in replaced if p not in pids)  # the replacement, killed next
        pids = replaced
    server.signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.wait, 30) == 0


async def test_a_crash_loop_past_the_bound_stops_the_server_non_zero(servers, mongo_uri):
    server = ServerProcess(
        mongo_uri, "--processes", "2", GATEHOUSE_WORKER_MAX_CRASHES="2", GATEHOUSE_WORKER_CRASH_WINDOW="60"
    ).start()
    servers.append(server)
    pids = workers_of(server)
    for _ in range(2):
        os.kill(pids[0], signal.SIGKILL)
        pids = await wait_replaced(server, pids[0])
    os.kill(pids[0], signal.SIGKILL)  # the third death within the minute
    assert await asyncio.to_thread(server.wait, 30) == 1
    out = server.output()
    assert len(re.findall(r"giving up: 3 worker deaths within 60 s, over GATEHOUSE_WORKER_MAX_CRASHES=2", out)) == 1
    assert out.count("restarting it in") == 2
    assert out.count("stopped") >= 1  # the surviving worker drained


async def test_a_worker_takes_no_connections_before_it_can_serve(servers, tmp_path):
    """Workers waiting for MongoDB do not listen yet: a client is refused at once, not
    left waiting on a connection nobody will read."""
    port = free_port()
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    server = ServerProcess(uri, "--processes", "2", GATEHOUSE_DB_TIMEOUT_MS="500").start(wait=False)
    servers.append(server)
    deadline = time.monotonic() + 20
    while "MongoDB not reachable yet" not in server.output():
        assert time.monotonic() < deadline, server.output()
        await asyncio.sleep(0.2)
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/healthz", timeout=3)
    db = EmbeddedMongo(tmp_path / "db", port=port)
    db.start()
    try:
        server.wait_ready(60)
        r = httpx.get(server.url + "/readyz", timeout=5)
        assert r.json()["workers"] == {"expected": 2, "serving": 2, "missing": 0}
    finally:
        server.stop()
        db.stop()
