"""Second factors against an attacker: parallel requests at every limit and every
single-use thing (the factor cap, a challenge, a first factor), a password-only foothold
trying to become a second factor, an enrolment-only token taken elsewhere, and a
squatter's authenticator app left on an account its owner took back."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.conftest import PASSWORD, assert_error, login, register, unique, unique_phone
from tests.test_console import Console
from tests.test_mfa import Totp, challenge, enrol, second_step
from tests.test_mfa_policy import ADMINS, REQUIRED, enrolment

NEW = PASSWORD + "-owner"


async def test_parallel_enrolments_respect_the_factor_cap(api, gatehouse, clock):
    user = await register(api)
    token = await login(api, user)
    answers = await asyncio.gather(*(api.post("/auth/mfa/totp", {}, token=token) for _ in range(20)))
    assert all(r.status in (200, 400) for r in answers), [r.status for r in answers]
    stored = await gatehouse.factors.coll.count_documents({"account_id": user["id"], "type": "totp"})
    assert stored <= gatehouse.config.mfa.mfa_max_factors, stored


async def test_two_recovery_codes_racing_on_one_challenge_burn_one(api, gatehouse, clock):
    """Four right recovery codes racing on one challenge: one session, and only its code
    is used up (the challenge is claimed between checking a code and taking it)."""
    user = await register(api)
    _, recovery, _ = await enrol(api, await login(api, user), clock)
    mfa = await challenge(api, user)
    answers = await asyncio.gather(*(second_step(api, mfa, code) for code in recovery[:4]))
    assert sorted(r.status for r in answers).count(200) == 1
    left = await api.get("/auth/mfa/factors", token=next(r for r in answers if r.status == 200).data["data"]["token"])
    assert left.data["data"]["recoveryCodesLeft"] == 9, left.data


async def test_two_first_factors_confirmed_at_once_show_one_working_set_of_recovery_codes(api, gatehouse, clock):
    """One of two first apps confirmed at once is the account's first factor: its answer
    has the recovery codes, and they work. The other is confirmed only if it passes the
    step-up the first one now demands (else it is gone again), and shows no codes."""
    user = await register(api)
    token = await login(api, user)
    pending = []
    for _ in range(2):
        r = await api.post("/auth/mfa/totp", {}, token=token)
        pending.append((r.data["data"]["factor"]["id"], Totp(r.data["data"]["secret"], clock)))
    answers = await asyncio.gather(
        *(api.post(f"/auth/mfa/totp/{fid}/confirm", {"code": app.code()}, token=token) for fid, app in pending)
    )
    assert sorted(r.status for r in answers)[0] == 200, [r.data for r in answers]
    assert all(r.status in (200, 403, 404) for r in answers), [r.data for r in answers]
    shown = [r.data["data"]["recoveryCodes"] for r in answers if r.status == 200 and r.data["data"]["recoveryCodes"]]
    assert len(shown) == 1, answers
    r = await second_step(api, await challenge(api, user), shown[0][0])
    assert r.status == 200, r.data
    confirmed = await gatehouse.factors.coll.count_documents({"account_id": user["id"], "confirmed": True})
    assert confirmed == sum(r.status == 200 for r in answers)


async def test_a_factor_left_pending_before_the_owner_enrolled_cannot_be_confirmed_at_aal1(api, clock):
    user = await register(api)
    # The attacker knows only the password (the account has no factor yet): a session,
    # and a pending authenticator app of their own, never confirmed.
    attacker = await login(api, user)
    r = await api.post("/auth/mfa/totp", {"name": "not-the-owner"}, token=attacker)
    assert r.status == 200, r.data
    rogue_app, rogue_id = Totp(r.data["data"]["secret"], clock), r.data["data"]["factor"]["id"]

    # The owner turns MFA on with their own app: from now on, the password alone is one factor.
    owner = await login(api, user)
    _, _, confirmed = await enrol(api, owner, clock)

    # The attacker's aal1 session confirms the rogue app: this must need the step-up
    # (a recent aal2 session), like adding one does.
    clock.advance(60)
    r = await api.post(f"/auth/mfa/totp/{rogue_id}/confirm", {"code": rogue_app.code()}, token=attacker)
    assert_error(r, 403, "REAUTHENTICATION_REQUIRED")

    # So the attacker's session never reaches aal2: it cannot remove the owner's app, and
    # the rogue app (not confirmed) is no second factor of the account.
    r = await api.delete(f"/auth/mfa/factors/{confirmed['factor']['id']}", token=attacker)
    assert r.status == 403, r.data
    r = await second_step(api, await challenge(api, user), rogue_app.code(1))
    assert r.status == 400, r.data


@pytest.mark.parametrize("settings", [{"mfa_policy": "required"}])
async def test_an_enrolment_token_cannot_add_a_factor_once_the_account_has_one(api, settings, clock):
    """GATEHOUSE_MFA: two enrolment sessions (the attacker's, with the password only, and
    the owner's). The owner confirms first; the attacker's enrolment session must not
    then confirm its own pending app into the account."""
    user = await register(api)
    body = {"username": user["username"], "password": PASSWORD}
    rogue_token = await enrolment(api, "/auth/auth", body)
    r = await api.post("/auth/mfa/totp", {}, token=rogue_token)
    assert r.status == 200, r.data
    rogue_app, rogue_id = Totp(r.data["data"]["secret"], clock), r.data["data"]["factor"]["id"]

    owner_token = await enrolment(api, "/auth/auth", body)
    r = await api.post("/auth/mfa/totp", {}, token=owner_token)
    owner_app = Totp(r.data["data"]["secret"], clock)
    r = await api.post(
        f"/auth/mfa/totp/{r.data['data']['factor']['id']}/confirm", {"code": owner_app.code()}, token=owner_token
    )
    assert r.status == 200, r.data

    r = await api.post(f"/auth/mfa/totp/{rogue_id}/confirm", {"code": rogue_app.code()}, token=rogue_token)
    assert r.status in (401, 403), r.data


@pytest.mark.parametrize("settings", [REQUIRED])
async def test_an_enrolment_token_is_not_active_at_introspection(api, gatehouse, settings):
    """README: 'no style ever hands a covered account a token a resource server would take
    before it has a second factor'. A resource server asks /oauth/introspect (or
    /auth/introspect): the enrolment token must be inactive there."""
    user = await register(api)
    token = await enrolment(api, "/auth/auth", {"username": user["username"], "password": PASSWORD})
    assert (await gatehouse.auth.oauth_introspection(token)) == {"active": False}
    assert (await gatehouse.auth.introspect(token)) == {"active": False}


@pytest.mark.parametrize("settings", [REQUIRED])
async def test_an_api_enrolment_token_gives_no_console_session_to_a_non_admin(
    api, base_url, gatehouse, settings, clock
):
    """/console/login/enrol finishes only the enrolment a console login of an administrator
    started: an API login's enrolment token never becomes a console session."""
    user = await register(api)
    token = await enrolment(api, "/auth/auth", {"username": user["username"], "password": PASSWORD})
    r = await api.post("/auth/mfa/totp", {}, token=token)
    assert r.status == 200, r.data
    app, factor = Totp(r.data["data"]["secret"], clock), r.data["data"]["factor"]["id"]
    console = Console(base_url)
    try:
        await console.post("/console/login/enrol", {"enrol": token, "factor": factor, "code": app.code()})
    finally:
        await console.http.aclose()
    consoles = await gatehouse.sessions.coll.count_documents({"account_id": user["id"], "kind": "console"})
    assert consoles == 0


@pytest.mark.parametrize("settings", [ADMINS])
async def test_a_mistyped_code_at_the_console_enrolment_keeps_the_app_already_scanned(base_url, gatehouse, settings):
    """A mistyped first code shows the same authenticator app again (the one whose QR code
    the administrator has just scanned), not a new one each time: new pending apps would
    count against GATEHOUSE_MFA_MAX_FACTORS and lock the administrator out."""
    name = unique("admin")
    await gatehouse.ensure_admin(name, PASSWORD)
    console = Console(base_url)
    try:
        r = await console.login(name)
        assert r.status_code == 200 and 'action="/console/login/enrol"' in r.text
        first = dict(re.findall(r'name="(enrol|factor)" value="([^"]+)"', r.text))
        for _ in range(5):
            r = await console.post("/console/login/enrol", {**first, "code": "12345x"})
            assert 'action="/console/login/enrol"' in r.text, r.text[:300]
            again = dict(re.findall(r'name="(enrol|factor)" value="([^"]+)"', r.text))
            assert again["factor"] == first["factor"]  # the app already scanned still stands
    finally:
        await console.http.aclose()


NEW = PASSWORD + "-owner"


async def test_a_takeover_removes_the_squatters_second_factors(sinks, api, gatehouse, clock):
    victim_email = f"{unique('victim')}@example.test"
    squatter = await register(api, email=victim_email, phone=unique_phone())
    await enrol(api, await login(api, squatter), clock)
    # The victim proves the address (not logged in): the account is theirs now.
    assert (await api.post("/auth/otp", {"email": victim_email, "purpose": "verify"})).status == 200
    code = await sinks.code_for(victim_email)
    r = await api.post("/auth/otp/verify", {"email": victim_email, "code": code, "purpose": "verify"})
    assert r.status == 200, r.data
    events = [e["type"] for e in await gatehouse.events.find(account_id=squatter["id"])]
    assert "ownership_proven" in events
    # The owner sets a password with a reset and logs in, without the squatter's app.
    sinks.messages.clear()
    await api.post("/auth/reset", {"username": victim_email})
    code = await sinks.code_for(victim_email)
    assert (await api.post("/auth/reset", {"username": victim_email, "password": NEW, "code": code})).status == 200
    account = await gatehouse.accounts.find_by_id(squatter["id"])
    assert account.mfa == ()
    assert await gatehouse.factors.coll.count_documents({"account_id": squatter["id"]}) == 0
    r = await api.post("/auth/auth", {"username": victim_email, "password": NEW})
    assert r.status == 200, r.data


@pytest.mark.parametrize("settings", [ADMINS])
async def test_abandoned_console_enrolments_do_not_fill_the_factor_slots(base_url, gatehouse, settings):
    """Each console login of a covered administrator sets up a new app; those of logins
    abandoned before the first code are dropped, so the cap never locks the console."""
    name = unique("admin")
    await gatehouse.ensure_admin(name, PASSWORD)
    admin = await gatehouse.accounts.find_by_login(name)
    console = Console(base_url)
    try:
        for _ in range(gatehouse.config.mfa.mfa_max_factors + 2):
            r = await console.login(name)
            assert r.status_code == 200 and 'action="/console/login/enrol"' in r.text, r.text[:300]
    finally:
        await console.http.aclose()
    assert await gatehouse.factors.coll.count_documents({"account_id": admin.id, "confirmed": False}) == 1
