"""Operations, against real processes: several workers, several "dynos", a database
outage under load, graceful shutdown, start-up before the database, and a bounded soak."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from devdb import EmbeddedMongo, free_port
from tests.procs import ROOT, ServerProcess, rss_kib

PASSWORD = "Ops-test-pass-42"
ADMIN = {"GATEHOUSE_ADMIN_USERNAME": "opsadmin", "GATEHOUSE_ADMIN_PASSWORD": PASSWORD}


def fresh_connection_client(url: str) -> httpx.AsyncClient:
    """Every request on a new TCP connection, so the kernel may hand it to any worker."""
    return httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


async def new_user(http: httpx.AsyncClient) -> tuple[str, str]:
    name = "ops" + uuid.uuid4().hex[:10]
    r = await http.post("/auth/register", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    r = await http.post("/auth/auth", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return name, r.json()["data"]["token"]


async def admin_token(http: httpx.AsyncClient) -> str:
    r = await http.post("/auth/auth", json={"username": "opsadmin", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()["data"]["token"]


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_processes_share_one_port_and_a_kick_holds_in_every_worker(servers, mongo_uri):
    server = ServerProcess(mongo_uri, "--processes", "2", **ADMIN).start()
    servers.append(server)
    workers = server.children()
    assert len(workers) == 2, server.output()
    async with fresh_connection_client(server.url) as http:
        name, token = await new_user(http)
        me = [await http.get("/auth/me", headers={"Authorization": token}) for _ in range(20)]
        assert [r.status_code for r in me] == [200] * 20
        session = me[0].json()["data"]["session"]
        admin = await admin_token(http)
        r = await http.delete(f"/admin/api/sessions/{session}", headers={"Authorization": admin})
        assert r.status_code == 200
        await asyncio.sleep(1.1)  # the other worker may hold it in its 1 s session cache
        after = [await http.get("/auth/me", headers={"Authorization": token}) for _ in range(20)]
        assert [r.status_code for r in after] == [403] * 20
        # /metrics sums every worker's counters (prometheus-client multiprocess mode).
        text = (await http.get("/metrics")).text
        assert metric_sum(text, "gatehouse_http_requests_total", route="/auth/me", status="200") == 20
        assert metric_sum(text, "gatehouse_http_requests_total", route="/auth/me", status="403") == 20
        assert metric_sum(text, "gatehouse_kicks_total") == 1
        assert metric_sum(text, "gatehouse_logins_total", outcome="ok") == 2
    # A crashed worker is replaced.
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (len(server.children()) < 2 or workers[0] in server.children()):
        await asyncio.sleep(0.2)
    assert len(server.children()) == 2 and workers[0] not in server.children()
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert server.output().count("stopped") == 2


METRICS_ACROSS_A_FORK = """
import importlib, os, pkgutil, sys
from prometheus_client import generate_latest

# Every module first, as server.py imports them all at its top: prometheus-client has
# chosen its value class long before the metrics directory is set.
for name in ("app", "devdb", "lifecycle", "logs", "metrics", "server", "workers"):
    importlib.import_module(name)
for package in ("delivery", "handlers", "models"):
    for module in pkgutil.iter_modules([package]):
        importlib.import_module(package + "." + module.name)
import metrics

metrics.use_directory(sys.argv[1])
if os.fork() == 0:
    metrics.SHED.inc()
    os._exit(0)
os.wait()
metrics.SHED.inc()
print(generate_latest(metrics.registry()).decode())
try:
    metrics.use_directory(sys.argv[1])
except RuntimeError:
    print("refused once created")
"""


def test_metrics_are_shared_by_processes_whatever_was_imported_first(tmp_path):
    """The multiprocess directory works when set after every module was imported (so
    nobody has to keep server.py's imports below it), and setting it once metrics exist
    fails loudly rather than leaving them counting for one process only."""
    (tmp_path / "metrics").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", METRICS_ACROSS_A_FORK, str(tmp_path / "metrics")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert metric_sum(done.stdout, "gatehouse_shed_requests_total") == 2, done.stdout
    assert "refused once created" in done.stdout


async def refused_within(http: httpx.AsyncClient, token: str, bound: float) -> float:
    """Seconds until `token` is refused by the server behind `http`; fails past `bound`."""
    started = time.monotonic()
    while (await http.get("/auth/me", headers={"Authorization": token})).status_code != 403:
        assert time.monotonic() - started <= bound, f"still accepted after {bound} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.mark.parametrize("cache_ms, bound", [("1000", 1.3), ("0", 0.0)])
async def test_two_dynos_on_one_database_see_each_others_kicks(servers, mongo_uri, cache_ms, bound):
    """The kick goes through A; B refuses the token within the session cache's bound
    (1 s by default; with GATEHOUSE_SESSION_CACHE_MS=0, on the very next request)."""
    db = "gh_dynos_" + uuid.uuid4().hex[:8]
    a = ServerProcess(mongo_uri, db_name=db, GATEHOUSE_SESSION_CACHE_MS=cache_ms, **ADMIN).start()
    b = ServerProcess(mongo_uri, db_name=db, GATEHOUSE_SESSION_CACHE_MS=cache_ms, **ADMIN).start()
    servers += [a, b]
    async with httpx.AsyncClient(base_url=a.url, timeout=30) as ha, httpx.AsyncClient(base_url=b.url, timeout=30) as hb:
        name, token = await new_user(ha)
        admin = await admin_token(ha)
        user = (await ha.get(f"/admin/api/accounts?q={name}", headers={"Authorization": admin})).json()["accounts"][0]
        for action in ("kick", "disable"):
            if action == "disable":
                await ha.post(f"/admin/api/accounts/{user['id']}/enable", headers={"Authorization": admin})
                token = (await hb.post("/auth/auth", json={"username": name, "password": PASSWORD})).json()["data"]
                token = token["token"]
            for http in (ha, hb):  # now cached in both processes
                assert (await http.get("/auth/me", headers={"Authorization": token})).status_code == 200
            r = await ha.post(f"/admin/api/accounts/{user['id']}/{action}", headers={"Authorization": admin})
            assert r.status_code == 200
            # In A itself, where the kick happened, there is no staleness at all.
            assert (await ha.get("/auth/me", headers={"Authorization": token})).status_code == 403
            await refused_within(hb, token, bound)
        r = await hb.post("/auth/auth", json={"username": name, "password": PASSWORD})
        assert r.status_code == 401  # disabled: no new session anywhere


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_graceful_shutdown_finishes_requests_in_flight(servers, mongo_uri, signum):
    # A real bcrypt cost on one thread: logins queue up and take a while.
    server = ServerProcess(mongo_uri, GATEHOUSE_BCRYPT_ROUNDS="12", GATEHOUSE_BCRYPT_THREADS="1").start()
    servers.append(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        name = "grace" + uuid.uuid4().hex[:8]
        assert (await http.post("/auth/register", json={"username": name, "password": PASSWORD})).status_code == 200
        logins = [
            asyncio.create_task(http.post("/auth/auth", json={"username": name, "password": PASSWORD}))
            for _ in range(5)
        ]
        await asyncio.sleep(0.3)  # all five are in flight, queued on the bcrypt thread
        started = time.monotonic()
        server.signal(signum)
        answers = await asyncio.gather(*logins)
    assert [r.status_code for r in answers] == [200] * 5
    assert all(r.json()["data"]["token"] for r in answers)
    assert await asyncio.to_thread(server.wait, 30) == 0
    assert time.monotonic() - started < 25  # below Heroku's 30 s
    out = server.output()
    assert "draining requests in flight" in out and "stopped" in out and "Traceback" not in out
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url + "/healthz", timeout=2)


async def test_startup_waits_for_the_database(servers, tmp_path):
    port = free_port()
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    server = ServerProcess(uri, GATEHOUSE_DB_TIMEOUT_MS="500").start(wait=False)
    servers.append(server)
    deadline = time.monotonic() + 20
    while "MongoDB not reachable yet" not in server.output():
        assert time.monotonic() < deadline, server.output()
        await asyncio.sleep(0.2)
    # SIGTERM while still waiting is a prompt, clean exit (Heroku kills after 30 s).
    quitter = ServerProcess(uri, GATEHOUSE_DB_TIMEOUT_MS="500").start(wait=False)
    servers.append(quitter)
    while "MongoDB not reachable yet" not in quitter.output():
        assert time.monotonic() < deadline + 20, quitter.output()
        await asyncio.sleep(0.2)
    quitter.signal(signal.SIGTERM)
    assert await asyncio.to_thread(quitter.wait, 10) == 0
    assert "stopped before start-up finished" in quitter.output()
    db = EmbeddedMongo(tmp_path / "db", port=port)
    db.start()
    try:
        server.wait_ready(60)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            await new_user(http)
    finally:
        server.stop()
        db.stop()


async def read_load(
    http: httpx.AsyncClient, tokens: list[str], results: list[tuple[str, int, float, str]], stop: asyncio.Event
) -> None:
    """Authenticated reads and readiness probes until `stop`: (path, status, seconds, code)."""
    while not stop.is_set():
        path, kw = random.choice(
            [
                ("/auth/me", {"headers": {"Authorization": random.choice(tokens)}}),
                ("/readyz", {}),
                ("/auth/sessions", {"headers": {"Authorization": random.choice(tokens)}}),
            ]
        )
        started = time.monotonic()
        r = await http.get(path, **kw)
        code = r.json().get("code", r.json().get("status", "")) if r.content else ""
        results.append((path, r.status_code, time.monotonic() - started, str(code)))
        await asyncio.sleep(0.02)


async def test_database_outage_under_load(servers, tmp_path):
    """Stop MongoDB under load and bring it back: every request answers (2xx, or 503
    while it is down) within the timeout, /readyz follows, service resumes by itself,
    and every session acknowledged before the outage is still valid after it."""
    db = EmbeddedMongo(tmp_path / "db", port=free_port())
    uri = db.start()
    timeout_ms = 1500
    server = ServerProcess(uri, GATEHOUSE_DB_TIMEOUT_MS=str(timeout_ms), GATEHOUSE_LAST_ACTIVE_RESOLUTION="0")
    servers.append(server.start())
    results: list[tuple[str, int, float, str]] = []
    stop = asyncio.Event()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            users = [await new_user(http) for _ in range(5)]
            tokens = [t for _, t in users]
            workers = [asyncio.create_task(read_load(http, tokens, results, stop)) for _ in range(4)]
            await asyncio.sleep(1.5)
            db.stop()
            outage_started = len(results)
            await asyncio.sleep(4)
            # A write during the outage is refused cleanly, not half-done.
            r = await http.post(
                "/auth/register", json={"username": "during" + uuid.uuid4().hex[:6], "password": PASSWORD}
            )
            assert r.status_code == 503 and r.json()["code"] == "UNAVAILABLE"
            db.start()
            deadline = time.monotonic() + 30
            while (await http.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, "service did not resume by itself"
                await asyncio.sleep(0.2)
            await asyncio.sleep(1)
            stop.set()
            await asyncio.gather(*workers)
            for token in tokens:
                r = await http.get("/auth/me", headers={"Authorization": token})
                assert r.status_code == 200, r.text
            await new_user(http)  # writes work again
    finally:
        stop.set()
        server.stop()
        db.stop()
    statuses = {s for _, s, _, _ in results}
    assert statuses <= {200, 503}, statuses
    assert all(code in ("UNAVAILABLE", "not ready") for _, s, _, code in results if s == 503)
    during = results[outage_started:]
    assert any(p == "/readyz" and s == 503 for p, s, _, _ in during), "readyz never said not ready"
    assert any(p != "/readyz" and s == 503 for p, s, _, _ in during), "the outage was not noticed"
    slowest = max(t for _, _, t, _ in results)
    assert slowest < timeout_ms / 1000 + 3.0, f"a request hung for {slowest:.1f} s"
    assert "Traceback" not in server.output()


async def test_a_cached_session_is_not_answered_from_memory_through_an_outage(servers, tmp_path):
    """The session cache is served only while its change feed reaches MongoDB: within
    the 1 s bound of an outage, a cached token gets a 503, not a stale 200."""
    db = EmbeddedMongo(tmp_path / "db", port=free_port())
    uri = db.start()
    server = ServerProcess(uri, GATEHOUSE_DB_TIMEOUT_MS="1000")
    servers.append(server.start())
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            _, token = await new_user(http)
            me = {"Authorization": token}
            assert (await http.get("/auth/me", headers=me)).status_code == 200  # cached now
            db.stop()
            stopped = time.monotonic()
            while time.monotonic() - stopped < 1.2:
                r = await http.get("/auth/me", headers=me)
                if r.status_code == 200:
                    assert time.monotonic() - stopped < 1.0, "a cached answer outlived the bound"
                await asyncio.sleep(0.05)
            r = await http.get("/auth/me", headers=me)
            assert r.status_code == 503 and r.json()["code"] == "UNAVAILABLE", r.text
            db.start()
            deadline = time.monotonic() + 30
            while (await http.get("/auth/me", headers=me)).status_code != 200:
                assert time.monotonic() < deadline, "the session did not come back with the database"
                await asyncio.sleep(0.2)
    finally:
        server.stop()
        db.stop()


async def test_bounded_soak_with_mixed_traffic(servers, mongo_uri):
    seconds = float(os.environ.get("GATEHOUSE_SOAK_SECONDS", "20"))
    # Every journey signs up and has one wrong password, all from 127.0.0.1: lift the
    # per-IP caps, which are tested on their own, so the soak measures stability only.
    server = ServerProcess(
        mongo_uri,
        GATEHOUSE_LOGIN_FAILURES_PER_IP="1000000",
        GATEHOUSE_SIGNUPS_PER_IP_HOUR="1000000",
        GATEHOUSE_LOGINS_PER_IP_HOUR="1000000",
    ).start()
    servers.append(server)
    errors: list[str] = []
    kept: list[str] = []  # tokens never logged out: all must still work at the end
    counts = {"requests": 0}

    async def user_journey(http: httpx.AsyncClient) -> None:
        name, token = await new_user(http)
        for _ in range(5):
            r = await http.get("/auth/me", headers={"Authorization": token})
            counts["requests"] += 1
            if r.status_code != 200:
                errors.append(f"me {r.status_code}")
        pair = await http.post("/auth/token", json={"username": name, "password": PASSWORD})
        r = await http.post("/auth/token/refresh", json={"refresh_token": pair.json()["data"]["refresh_token"]})
        if pair.status_code != 200 or r.status_code != 200:
            errors.append(f"jwt {pair.status_code} {r.status_code}")
        bad = await http.post("/auth/auth", json={"username": name, "password": "wrong-password-x"})
        if bad.status_code != 401:
            errors.append(f"bad login {bad.status_code}")
        if random.random() < 0.5:
            r = await http.post("/auth/logout", headers={"Authorization": token})
            if r.status_code != 200:
                errors.append(f"logout {r.status_code}")
        else:
            kept.append(token)
        counts["requests"] += 6

    async def worker(deadline: float) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            while time.monotonic() < deadline:
                await user_journey(http)

    assert server.proc is not None
    await asyncio.gather(*[worker(time.monotonic() + 3) for _ in range(4)])  # warm-up
    rss_before = rss_kib(server.proc.pid)
    await asyncio.gather(*[worker(time.monotonic() + seconds) for _ in range(6)])
    rss_after = rss_kib(server.proc.pid)
    assert errors == [], errors[:10]
    # Load really ran (about 300 requests on an idle machine, 176 on a busy one).
    assert counts["requests"] > 100
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for token in kept:
            assert (await http.get("/auth/me", headers={"Authorization": token})).status_code == 200
    growth_mib = (rss_after - rss_before) / 1024
    assert growth_mib < 40, f"resident memory grew {growth_mib:.1f} MiB in {seconds:.0f} s"
    assert not re.search(r"Traceback|ERROR", server.output())
