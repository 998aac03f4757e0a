"""/metrics, /healthz, /readyz and the access log, in-process."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from tests.conftest import PASSWORD, login, register


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_requests_outcomes_and_live_sessions(api, base_url, admin):
    async with httpx.AsyncClient(base_url=base_url) as http:
        before = (await http.get("/metrics")).text
        user = await register(api)
        token = await login(api, user)
        await api.post("/auth/auth", {"username": user["username"], "password": "wrong-password-1"})
        await api.get("/auth/me", token=token)
        await api.post(f"/admin/api/accounts/{user['id']}/kick", token=admin["token"])
        r = await http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text

    def delta(name: str, **labels: str) -> float:
        return sample(text, name, **labels) - sample(before, name, **labels)

    assert delta("gatehouse_http_requests_total", route="/auth/me", method="GET", status="200") == 1
    assert delta("gatehouse_http_requests_total", route="/auth/auth", method="POST", status="401") == 1
    assert delta("gatehouse_http_request_duration_seconds_count", route="/auth/me", method="GET") == 1
    assert delta("gatehouse_logins_total", outcome="ok") == 1
    assert delta("gatehouse_logins_total", outcome="failed") == 1
    assert delta("gatehouse_kicks_total") == 1
    assert delta("gatehouse_events_total", type="signup", outcome="ok") == 1
    assert sample(text, "gatehouse_active_sessions") == 1  # the admin's; the user's was kicked
    assert token not in text and user["username"] not in text  # no ids or secrets in labels


async def test_made_up_methods_share_one_label(base_url):
    labels = {"route": "/auth/me", "method": "OTHER", "status": "405"}
    async with httpx.AsyncClient(base_url=base_url) as http:
        before = sample((await http.get("/metrics")).text, "gatehouse_http_requests_total", **labels)
        for method in ("BREW", "XYZZY42"):
            r = await http.request(method, "/auth/me")
            assert r.status_code == 405 and r.json()["code"] == "METHOD_NOT_ALLOWED"
        text = (await http.get("/metrics")).text
    assert sample(text, "gatehouse_http_requests_total", **labels) == before + 2
    assert "BREW" not in text and "XYZZY42" not in text


@pytest.mark.parametrize("settings", [{"metrics_token": "m" * 32}])
async def test_metrics_can_require_a_token(settings, base_url):
    async with httpx.AsyncClient(base_url=base_url) as http:
        r = await http.get("/metrics")
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Bearer realm="gatehouse"'
        r = await http.get("/metrics", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
        r = await http.get("/metrics", headers={"Authorization": "Bearer " + "m" * 32})
        assert r.status_code == 200 and "gatehouse_http_requests_total" in r.text


async def test_health_and_readiness(api):
    r = await api.get("/healthz")
    assert r.status == 200 and r.data == {"status": "ok"}
    r = await api.get("/readyz")
    assert r.status == 200 and r.data == {"status": "ready", "database": True}


@pytest.mark.parametrize("settings", [{"log_format": "json"}])
async def test_access_log_is_one_json_line_per_request_without_secrets(settings, api, caplog):
    caplog.set_level(logging.INFO, logger="gatehouse.access")
    user = await register(api)
    token = await login(api, user)
    await api.get("/auth/me", token=token, headers={"X-Request-ID": "client-chosen-id-1"})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gatehouse.access"]
    me = next(line for line in lines if line["route"] == "/auth/me")
    assert me["status"] == 200 and me["method"] == "GET" and me["ip"] == "127.0.0.1"
    assert me["account"] == user["id"] and me["ms"] >= 0 and len(me["rid"]) == 32
    assert me["rid"] != "client-chosen-id-1"  # only believed behind a trusted proxy
    text = caplog.text
    assert token not in text and PASSWORD not in text and user["password"] not in text
