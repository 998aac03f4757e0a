"""Durability and failover: what an answer acknowledges survives a crash of the database,
and a write or read that meets a primary shutting down is retried, not turned into a 503.
"""

from __future__ import annotations

import logging
import uuid

import pytest
from pymongo import AsyncMongoClient
from pymongo.read_preferences import ReadPreference

from models.core import Gatehouse
from models.db import DURABILITY, MONITORING, connect
from models.validation import username_key
from tests.conftest import login, register

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
    client = connect(mongo_uri, config.db_timeout_ms)
    gh = Gatehouse(config, client[name], clock)
    await gh.setup(background=False)
    yield gh
    gh.close()
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
    control = AsyncMongoClient(mongo_uri, appname="gatehouse-test-control")
    try:
        try:
            # No errorLabels in the data: the server labels a retryable write's error
            # RetryableWriteError itself (SecantusDB and mongod 4.4+ alike).
            await control.admin.command(
                "configureFailPoint",
                "failCommand",
                mode={"times": 1},
                data={"failCommands": [command], "errorCode": code, "appName": "gatehouse"},
            )
        except Exception as e:  # noqa: BLE001
            pytest.skip(f"this database does not allow fault injection (start mongod with enableTestCommands): {e}")
        if command == "find":
            user = await register(api)
            await control.admin.command(  # registered without meeting it; now arm it for the login
                "configureFailPoint",
                "failCommand",
                mode={"times": 1},
                data={"failCommands": [command], "errorCode": code, "appName": "gatehouse"},
            )
            token = await login(api, user)
        else:
            user = await register(api)
            token = await login(api, user)
        assert await spent(mongo_uri, command), "the failpoint never fired: the test proved nothing"
    finally:
        await control.admin.command("configureFailPoint", "failCommand", mode="off")
        await control.close()
    assert (await api.get("/auth/me", token=token)).status == 200
    assert await gatehouse.db.accounts.count_documents({"username_key": username_key(user["username"])}) == 1
