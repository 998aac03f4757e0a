"""Durability and failover: what an answer acknowledges survives a crash of the database,
and a write or read that meets a primary shutting down is retried, not turned into a 503.

The crash test kills SecantusDB with SIGKILL under load (its own database, in a temp
directory, restarted on the same port and storage). It is bounded (about 25 s; rounds and
their length from GATEHOUSE_CRASH_ROUNDS / GATEHOUSE_CRASH_SECONDS) and runs in CI.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid
from collections import Counter

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError
from pymongo.read_preferences import ReadPreference

from app import Gatehouse
from devdb import EmbeddedMongo, free_port
from models.common import sha256_hex
from models.db import DURABILITY, MONITORING, connect, insert_once
from models.validation import username_key
from tests.conftest import PASSWORD, failpoint_off, login, register, set_failpoint, unique
from tests.procs import ServerProcess

# ---- the client's options cannot be dropped by a refactor or a URI ------------------------------


def assert_durable(client: AsyncMongoClient, timeout_ms: int) -> None:
    assert client.write_concern.document == {"w": "majority", "j": True}
    assert client.read_preference == ReadPreference.PRIMARY
    assert client.read_concern.document == {"level": "local"}
    options = client.options
    assert options.retry_writes is True and options.retry_reads is True
    assert options.server_monitoring_mode == "poll"
    assert options.heartbeat_frequency == 1.0
    assert options.timeout == timeout_ms / 1000
    assert options.server_selection_timeout == timeout_ms / 1000


async def test_the_client_writes_majority_and_journaled_and_retries(caplog):
    with caplog.at_level(logging.WARNING, logger="gatehouse.db"):
        client = connect("mongodb://127.0.0.1:1/gh?directConnection=true", 5000)
    try:
        assert_durable(client, 5000)
        assert caplog.records == []  # nothing to override, nothing said
    finally:
        await client.close()


async def test_a_uri_that_says_otherwise_is_overridden_with_one_warning(caplog):
    uri = (
        "mongodb://user:secret@127.0.0.1:1/gh?directConnection=true&w=1&journal=false&retryWrites=false"
        "&retryReads=false&readPreference=secondaryPreferred&readConcernLevel=majority"
        "&serverMonitoringMode=stream&heartbeatFrequencyMS=10000&appname=gatehouse"
    )
    with caplog.at_level(logging.WARNING, logger="gatehouse.db"):
        client = connect(uri, 2000)
    try:
        assert_durable(client, 2000)
    finally:
        await client.close()
    [record] = caplog.records
    line = record.getMessage()
    assert "MONGODB_URI sets w=1&journal=false&retryWrites=false&retryReads=false" in line
    assert "Gatehouse uses w=majority&journal=true&retryWrites=true&retryReads=true" in line
    assert "serverMonitoringMode=poll" in line and "heartbeatFrequencyMS=1000" in line
    assert "secret" not in line and "user" not in line


def test_the_uri_agreeing_is_not_reported():
    from models.db import uri_options_overridden

    assert uri_options_overridden("mongodb://h/db?w=majority&retryWrites=true&journal=true&appName=x") == {}
    assert set(DURABILITY) | set(MONITORING) >= {"w", "journal", "retryWrites", "serverMonitoringMode"}


# ---- a primary shutting down: the driver retries ----------------------------------------------


@pytest.fixture
async def gatehouse(mongo_uri: str, config, clock):
    """The app without its background workers (the session cache's feed, the delivery
    queue): they share the appName "gatehouse", and a `{times: 1}` failpoint must meet
    the request's command, not theirs."""
    name = "gh_test_" + uuid.uuid4().hex[:12]
    client = connect(mongo_uri, config.database.db_timeout_ms)
    gh = Gatehouse(config, client[name], clock)
    await gh.setup(background=False)
    yield gh
    await gh.aclose()
    await client.drop_database(name)
    await client.close()


async def spent(mongo_uri: str, command: str) -> bool:
    """Whether the `{times: 1}` failpoint on `command` has fired: a client named like the
    app, retrying nothing, runs that command once and must not meet it."""
    probe = AsyncMongoClient(mongo_uri, appname="gatehouse", retryWrites=False, retryReads=False)
    try:
        coll = probe["gh_probe_" + uuid.uuid4().hex[:8]].probe
        if command == "insert":
            await coll.insert_one({"x": 1})
        elif command == "findAndModify":
            await coll.find_one_and_update({"x": 1}, {"$set": {"x": 2}})
        else:
            await coll.find_one({"x": 1})
        await coll.database.client.drop_database(coll.database.name)
        return True
    except Exception:  # noqa: BLE001 - the failpoint's error: still armed
        return False
    finally:
        await probe.close()


@pytest.mark.parametrize(
    "command, code",
    [
        ("insert", 91),  # ShutdownInProgress: the sign-up's account
        ("findAndModify", 11600),  # InterruptedAtShutdown: the sign-up's rate-limit counter
        ("find", 91),  # a read: the login's account lookup (retryReads)
    ],
)
async def test_a_primary_shutting_down_once_is_retried_not_a_503(api, gatehouse, mongo_uri, command, code):
    # No errorLabels in the data: the server labels a retryable write's error
    # RetryableWriteError itself (SecantusDB and mongod 4.4+ alike).
    once = {"mode": {"times": 1}, "errorCode": code}
    try:
        if command == "find":
            user = await register(api)  # registered without meeting it; now armed for the login
        await set_failpoint(mongo_uri, [command], **once)
        if command != "find":
            user = await register(api)
        token = await login(api, user)
        assert await spent(mongo_uri, command), "the failpoint never fired: the test proved nothing"
    finally:
        await failpoint_off(mongo_uri)
    assert (await api.get("/auth/me", token=token)).status == 200
    assert await gatehouse.db.accounts.count_documents({"username_key": username_key(user["username"])}) == 1


async def test_an_insert_retried_after_its_first_attempt_was_written_is_not_an_error(gatehouse):
    """What a crash leaves for SecantusDB (its retryable-write history is not durable): the
    retry of a written insert meets the document itself. That is success; a duplicate of
    anything else still raises."""
    coll = gatehouse.db.accounts
    doc = {"id": unique("id"), "uid": unique("uid"), "username_key": unique("dup")}
    await insert_once(coll, doc)
    await insert_once(coll, doc)  # the same _id: the earlier attempt landed
    other = {"id": unique("id"), "uid": unique("uid"), "username_key": doc["username_key"]}
    with pytest.raises(DuplicateKeyError):
        await insert_once(coll, other)
    assert await coll.count_documents({"username_key": doc["username_key"]}) == 1


# ---- kill -9 of the database under load: nothing acknowledged is lost --------------------------


def kill_database(db: EmbeddedMongo) -> None:
    """SIGKILL to the database's process group: no shutdown, no flush."""
    assert db.proc is not None
    os.killpg(db.proc.pid, signal.SIGKILL)
    db.proc.wait()
    db.proc = None


class CrashLoad:
    """Clients that sign up and log in until stopped, remembering what was answered 200."""

    def __init__(self) -> None:
        self.accounts: list[str] = []  # sign-ups answered 200
        self.tokens: list[str] = []  # logins answered 200
        self.statuses: Counter = Counter()
        self.stop = asyncio.Event()
        self.acknowledged = asyncio.Event()  # set on every 200: the kill follows one at once

    async def client(self, http: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            name = "crash" + uuid.uuid4().hex[:12]
            body = {"username": name, "password": PASSWORD}
            try:
                r = await http.post("/auth/register", json=body)
                self.statuses[r.status_code] += 1
                if r.status_code != 200:
                    await asyncio.sleep(0.05)
                    continue
                self.accounts.append(name)
                self.acknowledged.set()
                r = await http.post("/auth/auth", json=body)
                self.statuses[r.status_code] += 1
                if r.status_code == 200:
                    self.tokens.append(r.json()["data"]["token"])
                    self.acknowledged.set()
            except httpx.TransportError as e:
                self.statuses[type(e).__name__] += 1

    async def crash(self, http: httpx.AsyncClient, db: EmbeddedMongo, load_seconds: float) -> None:
        """Load for a while, kill the database right after an answer, restart it, and
        wait for the server to be ready again."""
        before = len(self.accounts)
        await asyncio.sleep(load_seconds)
        assert len(self.accounts) > before, f"no sign-up went through: {self.statuses}"
        # Right after an answer: that write (and those acknowledged with it) is the one a
        # journal flushed every 100 ms would not hold yet.
        self.acknowledged.clear()
        await asyncio.wait_for(self.acknowledged.wait(), 10)
        kill_database(db)
        await asyncio.sleep(0.3)
        db.start()
        deadline = time.monotonic() + 30
        while (await http.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, "the server did not come back with the database"
            await asyncio.sleep(0.1)

    async def lost(self, uri: str, db_name: str) -> tuple[list[str], int]:
        """(acknowledged sign-ups missing, acknowledged logins missing), read back with
        majority and journal."""
        check = AsyncMongoClient(uri, w="majority", journal=True)
        try:
            found = check[db_name]
            keys = [username_key(n) for n in self.accounts]
            have = {a["username_key"] async for a in found.accounts.find({"username_key": {"$in": keys}})}
            hashes = {sha256_hex(t) for t in self.tokens}
            sessions = {s["token_hash"] async for s in found.sessions.find({"token_hash": {"$in": list(hashes)}})}
        finally:
            await check.close()
        return [n for n in self.accounts if username_key(n) not in have], len(hashes - sessions)


async def test_crash_no_acknowledged_sign_up_or_login_is_lost_when_the_database_is_killed(tmp_path):
    """CRASH TEST. 20 clients sign up and log in; the database is killed (SIGKILL) and
    restarted on the same port and storage, three times. Every sign-up and login that was
    answered 200 must be there afterwards."""
    rounds = int(os.environ.get("GATEHOUSE_CRASH_ROUNDS", "3"))
    load_seconds = float(os.environ.get("GATEHOUSE_CRASH_SECONDS", "2.5"))
    db = EmbeddedMongo(tmp_path / "db", port=free_port())
    uri = db.start()
    server = ServerProcess(
        uri,
        GATEHOUSE_DB_TIMEOUT_MS="2000",
        GATEHOUSE_SIGNUPS_PER_IP_HOUR="10000000",
        GATEHOUSE_LOGINS_PER_IP_HOUR="10000000",
    )
    load = CrashLoad()
    started = time.monotonic()
    try:
        server.start()
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            clients = [asyncio.create_task(load.client(http)) for _ in range(20)]
            for _ in range(rounds):
                await load.crash(http, db, load_seconds)
            await asyncio.sleep(0.5)  # a last stretch after the final restart
            load.stop.set()
            await asyncio.gather(*clients)
        lost_accounts, lost_sessions = await load.lost(uri, server.db_name)
    finally:
        load.stop.set()
        server.stop()
        db.stop()
    statuses = dict(load.statuses)
    print(f"crash test: {len(load.accounts)} sign-ups and {len(load.tokens)} logins acknowledged; answers {statuses}")
    assert not lost_accounts and not lost_sessions, (
        f"lost {len(lost_accounts)} of {len(load.accounts)} acknowledged sign-ups and {lost_sessions} of"
        f" {len(load.tokens)} acknowledged logins: {lost_accounts[:5]}; answers {statuses}"
    )
    assert len(load.accounts) > 50 and len(load.tokens) > 50, statuses
    # Only success, or 503 while the database was down (and a sign-up whose retried
    # insert met its own first attempt, already written: 409).
    assert set(statuses) <= {200, 409, 503}, statuses
    assert "Traceback" not in server.output()
    assert time.monotonic() - started < 60
