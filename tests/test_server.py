"""The process as an operator meets it: configuration errors, the CLI, the embedded database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pymongo import MongoClient

from config import ConfigError, load_config
from devdb import EmbeddedMongo, free_port
from tests.conftest import ROOT

PROD = {"GATEHOUSE_ENV": "production", "SECRET_KEY": "k" * 40, "MONGODB_URI": "mongodb://db.example:27017/gh"}


@pytest.mark.parametrize(
    "env, words",
    [
        ({**PROD, "SECRET_KEY": ""}, "SECRET_KEY is required"),
        ({**PROD, "SECRET_KEY": "short"}, "SECRET_KEY must be at least 32"),
        ({**PROD, "MONGODB_URI": ""}, "MONGODB_URI is required"),
        ({**PROD, "PORT": "eighty"}, "PORT must be a whole number"),
        ({**PROD, "PORT": "70000"}, "PORT must be between"),
        ({**PROD, "GATEHOUSE_BCRYPT_ROUNDS": "6"}, "at least 10 in production"),
        ({**PROD, "GATEHOUSE_ENV": "staging"}, "GATEHOUSE_ENV must be one of"),
        ({**PROD, "GATEHOUSE_API_STYLES": "native,soap"}, "GATEHOUSE_API_STYLES"),
        ({**PROD, "GATEHOUSE_TEST_ENDPOINTS": "maybe"}, "GATEHOUSE_TEST_ENDPOINTS must be"),
        ({**PROD, "GATEHOUSE_TEST_ENDPOINTS": "1"}, "GATEHOUSE_TEST_ENDPOINTS must not be set in production"),
        ({**PROD, "GATEHOUSE_TEST_ENDPOINTS": "true"}, "GATEHOUSE_TEST_ENDPOINTS must not be set in production"),
        ({**PROD, "GATEHOUSE_SMTP_URL": "mail.example:25"}, "GATEHOUSE_SMTP_URL"),
        ({**PROD, "GATEHOUSE_ADMIN_USERNAME": "root"}, "go together"),
        ({**PROD, "GATEHOUSE_WORKER_MAX_CRASHES": "0"}, "GATEHOUSE_WORKER_MAX_CRASHES must be between 1"),
        ({**PROD, "GATEHOUSE_WORKER_CRASH_WINDOW": "soon"}, "GATEHOUSE_WORKER_CRASH_WINDOW must be a whole number"),
        (
            {**PROD, "GATEHOUSE_WORKER_RESTART_DELAY_MS": "5000", "GATEHOUSE_WORKER_RESTART_MAX_DELAY_MS": "1000"},
            "GATEHOUSE_WORKER_RESTART_DELAY_MS must not exceed",
        ),
    ],
)
def test_bad_configuration_is_one_clear_error(env, words):
    with pytest.raises(ConfigError) as e:
        load_config(env)
    assert words in str(e.value)
    assert "\n" not in str(e.value)


def test_production_configuration_loads():
    config = load_config({**PROD, "GATEHOUSE_API_STYLES": "native, v1", "GATEHOUSE_TRUST_PROXY": "1"})
    assert config.production and config.server.api_styles == ("native", "v1") and config.server.trust_proxy == 1
    assert config.jwt.lifetime("drf").access == 300 and config.jwt.lifetime("v1").refresh == 14400


def test_development_secret_key_is_generated_once_and_kept(tmp_path):
    first = load_config({"GATEHOUSE_DATA_DIR": str(tmp_path)}).secret_key
    second = load_config({"GATEHOUSE_DATA_DIR": str(tmp_path)}).secret_key
    assert first == second and len(first) >= 48
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"


def run_server(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "MONGODB_URI", "SECRET_KEY"))}
    return subprocess.run(
        [sys.executable, "server.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_server_refuses_to_start_with_bad_configuration_in_one_line():
    result = run_server({"GATEHOUSE_ENV": "production", "MONGODB_URI": "mongodb://127.0.0.1:1/x"})
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "gatehouse: configuration error: SECRET_KEY is required in production (a long random string)"
    )
    assert "Traceback" not in result.stdout + result.stderr


def test_production_refuses_test_endpoints_at_start_up(tmp_path):
    # Refused before anything starts (no database is reached: the URI points nowhere).
    result = run_server({**PROD, "GATEHOUSE_TEST_ENDPOINTS": "1"}, timeout=30)
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "gatehouse: configuration error: GATEHOUSE_TEST_ENDPOINTS must not be set in production"
        " (it enables test-only routes)"
    )
    assert "Traceback" not in result.stdout + result.stderr
    # Development may have them (the test suite runs that way), and production without.
    assert load_config({"GATEHOUSE_TEST_ENDPOINTS": "1", "GATEHOUSE_DATA_DIR": str(tmp_path)}).server.test_endpoints
    assert not load_config({**PROD, "GATEHOUSE_TEST_ENDPOINTS": "0"}).server.test_endpoints


def cli_env(tmp_path, mongo_uri: str, name: str) -> dict[str, str]:
    """A command line's environment: its own database on the test server."""
    return {
        "MONGODB_URI": mongo_uri.split("?")[0].rstrip("/") + "/" + name + "?directConnection=true",
        "GATEHOUSE_DB_NAME": name,
        "GATEHOUSE_DATA_DIR": str(tmp_path),
        "GATEHOUSE_BCRYPT_ROUNDS": "4",
    }


def test_create_admin_cli(tmp_path, mongo_uri):
    env = cli_env(tmp_path, mongo_uri, "gh_cli_" + str(os.getpid()))
    ok = run_server(env, "create-admin", "--username", "ops-admin", stdin="Ops-admin-pass-1\n")
    assert ok.returncode == 0, ok.stderr
    assert "created admin 'ops-admin'" in ok.stdout
    again = run_server(env, "create-admin", "--username", "ops-admin", stdin="Ops-admin-pass-1\n")
    assert again.returncode == 1 and "already exists" in again.stderr
    weak = run_server(env, "create-admin", "--username", "weak-admin", stdin="short\n")
    assert weak.returncode == 1 and "at least 8 characters" in weak.stderr
    with MongoClient(mongo_uri) as client:
        admin = client[env["GATEHOUSE_DB_NAME"]].accounts.find_one({"username": "ops-admin"})
        assert admin["roles"] == ["admin"]
        client.drop_database(env["GATEHOUSE_DB_NAME"])


def test_recount_cli_sets_the_dashboard_counters_from_the_data(tmp_path, mongo_uri):
    """`server.py recount` after an import: the live-session counters of the imported
    sessions' expiry hours are set from them (and the marker is set, so no start redoes it)."""
    name = "gh_recount_" + str(os.getpid())
    env = cli_env(tmp_path, mongo_uri, name)
    expires = datetime.now(UTC) + timedelta(days=2)
    with MongoClient(mongo_uri, tz_aware=True) as client:
        db = client[name]
        db.sessions.insert_many(
            [{"account_id": i, "expires_at": expires, "last_active": datetime.now(UTC)} for i in range(5)]
        )
        done = run_server(env, "recount")
        assert done.returncode == 0, done.stderr
        assert "recounted the dashboard's counters" in done.stdout
        [bucket] = db.stats.find({"series": "expiring"})
        assert bucket["n"] == 5 and bucket["hour"] == expires.replace(minute=0, second=0, microsecond=0)
        assert db.stats.find_one({"_id": "recounted"}) is not None
        client.drop_database(name)


def test_embedded_database_keeps_data_across_a_restart(tmp_path):
    db = EmbeddedMongo(tmp_path / "db")
    with MongoClient(db.start()) as client:
        client.gh.accounts.insert_one({"username": "persistent"})
    db.stop()
    with MongoClient(db.start()) as client:
        assert client.gh.accounts.find_one({"username": "persistent"}) is not None
    db.stop()


def test_server_starts_with_the_embedded_database_and_stops_it_on_sigterm(tmp_path):
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "MONGODB_URI", "SECRET_KEY"))}
    env = {**clean, "PORT": str(port), "GATEHOUSE_DATA_DIR": str(tmp_path), "GATEHOUSE_BCRYPT_ROUNDS": "4"}
    proc = subprocess.Popen(
        [sys.executable, "server.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json()["status"] == "ready"
                break
            except (httpx.HTTPError, AssertionError):
                assert proc.poll() is None and time.time() < deadline, "server did not become ready"
                time.sleep(0.3)
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "DEVELOPMENT DATABASE: embedded SecantusDB" in out
    assert "Traceback" not in out
    # the embedded database stopped with it: nothing listens on its port any more
    db_port = int(out.split("embedded SecantusDB on 127.0.0.1:")[1].split(",")[0])
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{db_port}/", timeout=1)


class Writes:
    """A stream that remembers each write: what reaches stdout, call by call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def write(self, text: str) -> None:
        self.calls.append(text)

    def flush(self) -> None:
        pass


def test_log_lines_are_batched_whole_and_problems_go_out_at_once():
    import logging

    from logs import BatchingHandler

    stream = Writes()
    handler = BatchingHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.Logger("batching-test")
    logger.addHandler(handler)
    for i in range(100):
        logger.info("request %03d %s", i, "x" * 60)
    assert len(stream.calls) < 5  # about one write per 4 KiB, not one per line
    logger.warning("database unavailable")
    assert stream.calls[-1].endswith("database unavailable\n")  # at once, with what waited
    text = "".join(stream.calls)
    assert [line.split()[1] for line in text.splitlines()[:100]] == [f"{i:03d}" for i in range(100)]
    assert all(len(c) <= BatchingHandler.BATCH_BYTES and c.endswith("\n") for c in stream.calls)
    logger.info("the last one")
    handler.flush()  # the server's loop does this every 0.25 s, and logging does at exit
    assert stream.calls[-1] == "the last one\n"


def test_the_exact_path_table_routes_as_the_ordered_patterns_would(app):
    """The dict in front of Tornado's router must never change which handler answers."""
    checked = 0
    for route in app.settings["routes"]:
        concrete = route.path.replace("{", "x").replace("}", "1")
        for path in (concrete, concrete.rstrip("/") + "/", concrete.rstrip("/") or "/"):
            first = next((r for r in app.wildcard_router.rules if r.matcher.regex.match(path)), None)
            expected = first.target if first else None
            if path in app.exact:
                assert app.exact[path] is expected, path
                checked += 1
    assert checked >= 40  # most documented paths take the fast way
    assert "/auth/me" in app.exact and not any("{" in p for p in app.exact)
