"""GATEHOUSE_MFA (issue 20): an account the policy covers that has no second factor can
log in only to add one — at every door its first step answers 403
MFA_ENROLMENT_REQUIRED with an enrolment-only token that no other route takes — and the
console enrols an administrator at its login."""

from __future__ import annotations

import re

import pytest

from tests.conftest import PASSWORD, register, unique
from tests.test_console import Console
from tests.test_mfa import Totp, challenge, second_step
from tests.test_styles import drf_user

REQUIRED = {"mfa_policy": "required"}
ADMINS = {"mfa_policy": "required_for_admins"}


async def enrolment(api, path: str, body: dict) -> str:
    r = await api.post(path, body)
    assert r.status == 403, r.data
    assert "access" not in r.data and "token" not in {k for k in r.data if k != "mfa_enrolment"}
    assert r.data["mfa_enrolment"]["enrol"] == "/auth/mfa/totp"
    return r.data["mfa_enrolment"]["token"]


@pytest.mark.parametrize("settings", [REQUIRED])
async def test_a_covered_account_logs_in_only_to_enrol(api, settings, clock):
    user = await register(api)
    token = await enrolment(api, "/auth/auth", {"username": user["username"], "password": PASSWORD})
    # The enrolment token opens nothing but the enrolment routes.
    assert (await api.get("/auth/me", token=token)).status == 403
    assert (await api.get("/auth/sessions", token=token)).status == 403
    assert (await api.post("/auth/mfa/recovery-codes", {}, token=token)).status == 403
    r = await api.post("/auth/mfa/totp", {}, token=token)
    assert r.status == 200, r.data
    app = Totp(r.data["data"]["secret"], clock)
    r = await api.post(f"/auth/mfa/totp/{r.data['data']['factor']['id']}/confirm", {"code": app.code()}, token=token)
    assert r.status == 200, r.data
    assert len(r.data["data"]["recoveryCodes"]) == 10 and r.data["data"]["session"]["revoked"] is True
    assert (await api.get("/auth/mfa/factors", token=token)).status == 403  # its work is done
    # From now on, two steps.
    r = await second_step(api, await challenge(api, user), app.code(1))
    assert r.status == 200, r.data
    assert (await api.get("/auth/me", token=r.data["data"]["token"])).status == 200


@pytest.mark.parametrize("settings", [REQUIRED])
async def test_a_covered_account_gets_no_jwt_from_a_document_style(api, settings):
    user = await drf_user(api)
    token = await enrolment(api, "/api/auth/login/", {"username": user["phone"], "password": PASSWORD})
    assert token.count(".") != 2  # an opaque enrolment token, never a JWT a back end would take


@pytest.mark.parametrize("settings", [ADMINS])
async def test_required_for_admins_leaves_other_accounts_alone(api, gatehouse, settings):
    user = await register(api)
    r = await api.post("/auth/auth", {"username": user["username"], "password": PASSWORD})
    assert r.status == 200, r.data
    name = unique("admin")
    await gatehouse.ensure_admin(name, PASSWORD)
    await enrolment(api, "/auth/auth", {"username": name, "password": PASSWORD})


@pytest.mark.parametrize("settings", [ADMINS])
async def test_the_console_enrols_an_administrator_at_login(base_url, api, gatehouse, settings, clock):
    name = unique("admin")
    await gatehouse.ensure_admin(name, PASSWORD)
    console = Console(base_url)
    try:
        r = await console.login(name)
        assert r.status_code == 200 and "<svg" in r.text and 'action="/console/login/enrol"' in r.text
        secret = re.search(r'<figcaption class="mono">([A-Z2-7]+)</figcaption>', r.text).group(1)
        fields = dict(re.findall(r'name="(enrol|factor)" value="([^"]+)"', r.text))
        r = await console.post(
            "/console/login/enrol", {**fields, "code": Totp(secret, clock).code(), "next": "/console/"}
        )
        assert r.status_code == 200 and r.text.count("<li>") == 10  # the recovery codes, once
        assert (await console.get("/console/")).status_code == 200
        account = await gatehouse.accounts.find_by_login(name)
        assert account.mfa == ("totp",)
    finally:
        await console.http.aclose()
