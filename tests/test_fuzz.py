"""Hostile input: schemathesis generates requests from /openapi.json (valid and invalid
bodies, queries, path parameters, headers) against a real server process. Every answer
must be no 5xx, a documented status, JSON as declared, and match its schema.

Bounded: GATEHOUSE_FUZZ_EXAMPLES per operation and mode (default 12: the suite keeps within its
15-minute budget; set it higher for a deeper run), one process, loopback.
"""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

from tests.procs import ServerProcess

ADMIN, PASSWORD = "fuzzadmin", "Fuzz-admin-pass-42"
EXAMPLES = int(os.environ.get("GATEHOUSE_FUZZ_EXAMPLES", "12"))
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_server(mongo_uri):
    server = ServerProcess(
        mongo_uri,
        GATEHOUSE_ADMIN_USERNAME=ADMIN,
        GATEHOUSE_ADMIN_PASSWORD=PASSWORD,
        GATEHOUSE_TEST_ENDPOINTS="1",
        # Random logins must not throttle the fuzzer's own admin login.
        GATEHOUSE_LOGIN_FAILURES_PER_IP="1000000",
        GATEHOUSE_SERVICE_KEYS="fuzz-service-key-" + "s" * 24,
        # Passkeys on, so their ceremonies meet generated credentials (not just 404s).
        GATEHOUSE_WEBAUTHN_RP_ID="localhost",
        GATEHOUSE_WEBAUTHN_ORIGINS="http://localhost:8000",
    ).start()
    yield server
    server.stop()
    assert "Traceback" not in server.output(), server.output()[-3000:]


def admin_token(url: str) -> str:
    r = httpx.post(url + "/auth/auth", json={"username": ADMIN, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()["data"]["token"]


def operations(url: str) -> list:
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_route_survives_generated_input(fuzz_server, mode):
    """Valid input (positive) and schema-violating input (negative) for every operation,
    as an administrator (a new session whenever a case logged itself out or kicked itself)."""
    url = fuzz_server.url
    failures: list[str] = []
    ran = 0
    token = admin_token(url)
    for operation in operations(url):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def run(case) -> None:
            nonlocal ran, token
            ran += 1
            if "Authorization" not in (case.headers or {}):
                case.headers = {**(case.headers or {}), "Authorization": token}
            response = case.call_and_validate(base_url=url, checks=CHECKS)
            if response.status_code in (401, 403):
                token = admin_token(url)

        try:
            run()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # no input to get wrong (GET /healthz)
        except Exception as e:  # noqa: BLE001 - collect every operation's first failure
            failures.append(f"{operation.method.upper()} {operation.path}: {str(e)[:600]}")
    assert ran > 40 * 2
    assert not failures, "\n\n".join(failures)
