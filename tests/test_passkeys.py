"""Passkeys at the API (issue 21), with a software authenticator (tests/webauthn_soft.py):
register, sign in with the picker or a name, a passkey as a login's second step and to
authenticate again, rename and remove; and every way a ceremony must fail — a replayed,
expired or foreign challenge, a wrong origin, a credential of another account, a sign
count that goes backwards — with one answer, never a 500."""

from __future__ import annotations

import asyncio

import jwt as pyjwt
import pytest

from tests.conftest import assert_error, login, register
from tests.webauthn_soft import ORIGIN, RP_ID, SoftAuthenticator, b64url

ON = {"webauthn_rp_id": RP_ID, "webauthn_origins": (ORIGIN,)}
passkeys_on = pytest.mark.parametrize("settings", [ON])


async def begin(api, path: str, body: dict | None = None, token: str | None = None) -> dict:
    r = await api.post(path, body or {}, token=token)
    assert r.status == 200, r.data
    return r.data["data"]["options"]


async def add_passkey(api, token: str, device: SoftAuthenticator, name: str = "laptop") -> dict:
    options = await begin(api, "/auth/passkeys/register/begin", token=token)
    r = await api.post(
        "/auth/passkeys/register/finish", {"credential": device.create(options), "name": name}, token=token
    )
    assert r.status == 200, r.data
    return r.data["data"]


async def passkey_login(api, device: SoftAuthenticator, body: dict | None = None, **get) -> object:
    options = await begin(api, "/auth/passkeys/login/begin", body)
    return await api.post("/auth/passkeys/login/finish", {"credential": device.get(options, **get)})


@passkeys_on
async def test_register_then_sign_in_with_the_picker(api, gatehouse, settings):
    user = await register(api)
    token = await login(api, user)
    device = SoftAuthenticator()
    added = await add_passkey(api, token, device)
    assert added["passkey"]["name"] == "laptop" and len(added["recoveryCodes"]) == 10  # the first factor
    assert (added["session"]["aal"], added["session"]["amr"]) == (2, ["pwd", "webauthn"])
    account = await gatehouse.accounts.find_by_id(user["id"])
    assert account.mfa == ("webauthn",)
    # The picker: no username, the options list no credential.
    options = await begin(api, "/auth/passkeys/login/begin")
    assert options["allowCredentials"] == [] and options["rpId"] == RP_ID
    r = await api.post("/auth/passkeys/login/finish", {"credential": device.get(options)})
    assert r.status == 200, r.data
    assert (r.data["data"]["aal"], r.data["data"]["amr"]) == (2, ["webauthn"])
    me = await api.get("/auth/me", token=r.data["data"]["token"])
    assert me.data["data"]["account"]["id"] == user["id"]
    # A JWT pair, as asked: the access token carries the assurance.
    options = await begin(api, "/auth/passkeys/login/begin")
    r = await api.post("/auth/passkeys/login/finish", {"credential": device.get(options), "jwt": True})
    claims = pyjwt.decode(r.data["data"]["access_token"], options={"verify_signature": False})
    assert (claims["aal"], claims["amr"]) == (2, ["webauthn"])
    # The password alone is one factor now.
    r = await api.post("/auth/auth", {"username": user["username"], "password": user["password"]})
    assert_error(r, 403, "MFA_REQUIRED")
    assert "webauthn" in r.data["mfa"]["factors"]


@passkeys_on
async def test_a_passkey_as_the_second_step_of_a_password_login(api, gatehouse, settings):
    user = await register(api)
    device = SoftAuthenticator()
    await add_passkey(api, await login(api, user), device)
    first = await api.post("/auth/auth", {"username": user["username"], "password": user["password"]})
    challenge = first.data["mfa"]["challenge"]
    options = await begin(api, "/auth/passkeys/mfa/begin", {"challenge": challenge})
    assert [c["id"] for c in options["allowCredentials"]] == [b64url(device.credentials[0].id)]
    r = await api.post("/auth/mfa/verify", {"challenge": challenge, "credential": device.get(options)})
    assert r.status == 200, r.data
    assert (r.data["data"]["aal"], r.data["data"]["amr"]) == (2, ["pwd", "webauthn"])
    # The challenge is used up.
    r = await api.post("/auth/passkeys/mfa/begin", {"challenge": challenge})
    assert_error(r, 401, "MFA_CHALLENGE_INVALID")


@passkeys_on
async def test_ceremonies_that_must_fail(api, gatehouse, clock, settings):
    user = await register(api)
    device = SoftAuthenticator()
    await add_passkey(api, await login(api, user), device)
    # A replayed assertion: its challenge is used up.
    options = await begin(api, "/auth/passkeys/login/begin")
    assertion = device.get(options)
    assert (await api.post("/auth/passkeys/login/finish", {"credential": assertion})).status == 200
    assert_error(await api.post("/auth/passkeys/login/finish", {"credential": assertion}), 400, "PASSKEY_REJECTED")
    # An expired challenge.
    options = await begin(api, "/auth/passkeys/login/begin")
    clock.advance(gatehouse.config.webauthn.webauthn_challenge_seconds + 1)
    r = await api.post("/auth/passkeys/login/finish", {"credential": device.get(options)})
    assert_error(r, 400, "PASSKEY_REJECTED")
    # A wrong origin (a phishing page relaying the ceremony).
    r = await passkey_login(api, device, origin="https://app.example.test.evil.example")
    assert_error(r, 400, "PASSKEY_REJECTED")
    # The owner's audit trail shows it (the credential was known).
    assert await gatehouse.events.find(account_id=user["id"], type="passkey_failed")
    # A registration challenge is no sign-in challenge.
    token = await passkey_token(api, device)
    options = await begin(api, "/auth/passkeys/register/begin", token=token)
    options["rpId"] = options["rp"]["id"]
    r = await api.post("/auth/passkeys/login/finish", {"credential": device.get(options)})
    assert_error(r, 400, "PASSKEY_REJECTED")
    # A sign count that goes backwards: refused, and recorded as a possible clone.
    real = device.credentials[0].count
    r = await passkey_login(api, device, count=1)  # a copy of the key, with an old count
    assert_error(r, 400, "PASSKEY_REJECTED")
    device.credentials[0].count = real
    [event] = await gatehouse.events.find(account_id=user["id"], type="passkey_clone_suspected")
    assert event["presented"] == 1 and event["stored"] > 1
    assert (await passkey_login(api, device)).status == 200  # the real one goes on


async def passkey_token(api, device: SoftAuthenticator) -> str:
    r = await passkey_login(api, device)
    assert r.status == 200, r.data
    return r.data["data"]["token"]


@passkeys_on
async def test_a_credential_belongs_to_one_account(api, gatehouse, settings):
    alice, bob = await register(api), await register(api)
    device = SoftAuthenticator()
    await add_passkey(api, await login(api, alice), device)
    # Bob's session registers Alice's credential again (a second registration of the
    # same authenticator key): refused, whoever tries.
    bob_token = await login(api, bob)
    options = await begin(api, "/auth/passkeys/register/begin", token=bob_token)
    r = await api.post(
        "/auth/passkeys/register/finish",
        {"credential": device.create(options, reuse=device.credentials[0])},
        token=bob_token,
    )
    assert_error(r, 409, "PASSKEY_EXISTS")
    assert (await gatehouse.passkeys.list(bob["id"])) == []
    # Alice's passkey is no second step for Bob's login.
    bob_device = SoftAuthenticator()
    await add_passkey(api, bob_token, bob_device)
    first = await api.post("/auth/auth", {"username": bob["username"], "password": bob["password"]})
    challenge = first.data["mfa"]["challenge"]
    options = await begin(api, "/auth/passkeys/mfa/begin", {"challenge": challenge})
    r = await api.post(
        "/auth/mfa/verify",
        {"challenge": challenge, "credential": device.get(options, credential=device.credentials[0])},
    )
    assert_error(r, 400, "PASSKEY_REJECTED")


@passkeys_on
async def test_rename_remove_and_the_step_up(api, gatehouse, clock, settings):
    user = await register(api)
    device = SoftAuthenticator()
    token = await login(api, user)
    added = await add_passkey(api, token, device)
    passkey_id = added["passkey"]["id"]
    r = await api.request("PATCH", f"/auth/passkeys/{passkey_id}", {"name": "work phone"}, token=token)
    assert r.status == 200 and r.data["data"]["passkey"]["name"] == "work phone", r.data
    clock.advance(gatehouse.config.sessions.fresh_login_seconds + 1)
    r = await api.delete(f"/auth/passkeys/{passkey_id}", token=token)
    assert_error(r, 403, "REAUTHENTICATION_REQUIRED")
    options = await begin(api, "/auth/passkeys/reauthenticate/begin", token=token)
    r = await api.post("/auth/reauthenticate", {"credential": device.get(options)}, token=token)
    assert r.status == 200 and r.data["data"]["session"]["aal"] == 2, r.data
    r = await api.delete(f"/auth/passkeys/{passkey_id}", token=token)
    assert r.status == 200, r.data
    account = await gatehouse.accounts.find_by_id(user["id"])
    assert account.mfa == () and await gatehouse.factors.recovery_left(user["id"]) == 0
    assert (await api.post("/auth/auth", {"username": user["username"], "password": user["password"]})).status == 200
    assert_error(await passkey_login(api, device), 400, "PASSKEY_REJECTED")


@pytest.mark.parametrize("settings", [{**ON, "mfa_policy": "required"}])
async def test_the_last_factor_under_a_policy_stays(api, gatehouse, settings):
    user = await register(api)
    first = await api.post("/auth/auth", {"username": user["username"], "password": user["password"]})
    enrol = first.data["mfa_enrolment"]["token"]
    device = SoftAuthenticator()
    added = await add_passkey(api, enrol, device)  # the enrolment session may add a passkey
    assert added["recoveryCodes"] and added["session"]["revoked"]  # and ends with it
    token = await passkey_token(api, device)
    passkey_id = added["passkey"]["id"]
    r = await api.delete(f"/auth/passkeys/{passkey_id}", token=token)
    assert_error(r, 403, "FORBIDDEN")
    assert len(await gatehouse.passkeys.list(user["id"])) == 1
    # With a second factor beside it, it may go.
    second = SoftAuthenticator()
    await add_passkey(api, token, second, name="spare")
    assert (await api.delete(f"/auth/passkeys/{passkey_id}", token=token)).status == 200


@passkeys_on
async def test_begins_are_limited_per_address(api, settings):
    answers = await asyncio.gather(*(api.post("/auth/passkeys/login/begin", {}) for _ in range(70)))
    assert sorted({r.status for r in answers}) == [200, 429]
    assert sum(r.status == 200 for r in answers) == 60


@passkeys_on
async def test_a_key_that_does_not_verify_its_user_is_no_login_by_itself(api, gatehouse, settings):
    """A security key without a PIN is possession only: no sign-in with it alone (not even
    presented twice, as a first step and then its own second step), but it is a second
    factor after the password. Sign-in options list no credential (nothing about any
    account) and require user verification."""
    user = await register(api)
    key = SoftAuthenticator(uv=False)
    await add_passkey(api, await login(api, user), key)
    options = await begin(api, "/auth/passkeys/login/begin", {"username": user["username"]})
    assert options["allowCredentials"] == [] and options["userVerification"] == "required"
    r = await api.post("/auth/passkeys/login/finish", {"credential": key.get(options)})
    assert_error(r, 400, "PASSKEY_REJECTED")
    assert await gatehouse.sessions.coll.count_documents({"account_id": user["id"], "amr": ["webauthn"]}) == 0
    first = await api.post("/auth/auth", {"username": user["username"], "password": user["password"]})
    challenge = first.data["mfa"]["challenge"]
    options = await begin(api, "/auth/passkeys/mfa/begin", {"challenge": challenge})
    r = await api.post("/auth/mfa/verify", {"challenge": challenge, "credential": key.get(options)})
    assert r.status == 200 and r.data["data"]["amr"] == ["pwd", "webauthn"], r.data


@passkeys_on
async def test_hostile_credentials_get_a_clear_400(api, settings):
    deep = b64url(b"[" * 200_000)
    surrogates = b64url(b'{"challenge": "' + b"\\ud800" * 20 + b'"}')
    for credential in (
        "not an object",
        {},
        {"response": {"clientDataJSON": deep}},
        {"response": {"clientDataJSON": surrogates}},
        {"response": {"clientDataJSON": 7}},
        {"response": {"clientDataJSON": "%%%"}},
        {"response": {"clientDataJSON": "e30"}},
        {"id": 1, "rawId": ["x"], "response": {"clientDataJSON": "eyJjaGFsbGVuZ2UiOiAxfQ"}},
    ):
        r = await api.post("/auth/passkeys/login/finish", {"credential": credential})
        assert r.status == 400, (credential, r.data)


@passkeys_on
async def test_one_assertion_sent_ten_times_at_once_makes_one_session(api, gatehouse, settings):
    user = await register(api)
    device = SoftAuthenticator()
    await add_passkey(api, await login(api, user), device)
    options = await begin(api, "/auth/passkeys/login/begin")
    assertion = device.get(options)
    answers = await asyncio.gather(
        *(api.post("/auth/passkeys/login/finish", {"credential": assertion}) for _ in range(10))
    )
    assert sorted(r.status for r in answers) == [200] + [400] * 9


@pytest.mark.parametrize("settings", [{}])
async def test_without_configuration_passkeys_are_off(api, settings):
    r = await api.post("/auth/passkeys/login/begin", {})
    assert_error(r, 404, "PASSKEYS_OFF")


@passkeys_on
async def test_operators_see_and_remove_passkeys(sinks, api, admin, base_url, gatehouse, settings):
    from tests.test_console import Console

    user = await register(api)
    token = await login(api, user)
    await add_passkey(api, token, SoftAuthenticator(), name="laptop")
    await add_passkey(api, token, SoftAuthenticator(), name="phone")
    listed = (await api.get("/auth/passkeys", token=token)).data["data"]["passkeys"]
    assert [p["name"] for p in listed] == ["laptop", "phone"]
    overview = (await api.get(f"/admin/api/accounts/{user['id']}", token=admin["token"])).data
    assert [p["name"] for p in overview["passkeys"]] == ["laptop", "phone"]
    # The admin API removes one (audited, the owner told) ...
    r = await api.delete(f"/admin/api/accounts/{user['id']}/passkeys/{listed[0]['id']}", token=admin["token"])
    assert r.status == 200 and r.data == {"removed": listed[0]["id"]}, r.data
    [event] = await gatehouse.events.find(account_id=user["id"], type="passkey_removed")
    assert event["actor"] == f"admin:{admin['id']}"
    assert any("passkey was removed" in m["body"] for m in await sinks.wait_for(user["email"], 3))
    # ... and the console's account page lists the other and removes it.
    console = Console(base_url)
    try:
        assert (await console.login(admin["username"])).status_code == 303
        page = await console.get(f"/console/accounts/{user['id']}")
        assert "Passkeys" in page.text and "phone" in page.text and "laptop" not in page.text
        r = await console.post(f"/console/accounts/{user['id']}/passkeys/{listed[1]['id']}/remove")
        assert r.status_code == 303
    finally:
        await console.http.aclose()
    assert await gatehouse.passkeys.list(user["id"]) == []
    assert (await gatehouse.accounts.find_by_id(user["id"])).mfa == ()


@passkeys_on
async def test_an_administrators_reset_removes_passkeys(api, admin, gatehouse, settings):
    user = await register(api)
    await add_passkey(api, await login(api, user), SoftAuthenticator())
    r = await api.post(f"/admin/api/accounts/{user['id']}/mfa/reset", {}, token=admin["token"])
    assert r.data == {"removed": 2}, r.data  # the passkey and the recovery codes
    assert await gatehouse.passkeys.list(user["id"]) == []
    # A takeover by proof of ownership drops the same (tests/test_mfa_attacks.py).
    await add_passkey(api, await login(api, user), SoftAuthenticator())
    assert await gatehouse.factors.drop(user["id"]) == 2


@passkeys_on
async def test_a_registration_begun_before_the_owner_enrolled_needs_the_step_up(api, gatehouse, clock, settings):
    """A password-only session begins a registration while the account has no factor;
    the owner then adds an authenticator app: finishing it needs a recent aal2 login."""
    from tests.test_mfa import enrol

    user = await register(api)
    attacker = await login(api, user)
    options = await begin(api, "/auth/passkeys/register/begin", token=attacker)
    await enrol(api, await login(api, user), clock)
    r = await api.post(
        "/auth/passkeys/register/finish", {"credential": SoftAuthenticator().create(options)}, token=attacker
    )
    assert_error(r, 403, "REAUTHENTICATION_REQUIRED")
    assert await gatehouse.passkeys.list(user["id"]) == []


@passkeys_on
async def test_an_unknown_credential_answers_like_a_known_one_with_a_bad_signature(api, settings):
    """Whether a credential id is registered is not told apart: an unknown credential and
    a known one whose signature fails get the same status and body."""
    user = await register(api)
    device = SoftAuthenticator()
    await add_passkey(api, await login(api, user), device)
    stranger = SoftAuthenticator()
    stranger.create({"rp": {"id": RP_ID}, "user": {"id": "eA"}, "challenge": "x" * 43})
    answers = []
    for make in (stranger.get, device.get):
        options = await begin(api, "/auth/passkeys/login/begin")
        credential = make(options)
        if make == device.get:
            credential["response"]["signature"] = stranger.get(options)["response"]["signature"]
        r = await api.post("/auth/passkeys/login/finish", {"credential": credential})
        answers.append((r.status, {k: v for k, v in r.data.items() if k != "time"}))
    assert answers[0] == answers[1] and answers[0][0] == 400, answers
