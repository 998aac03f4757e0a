"""Second factors end to end against a real server (issue 20): enrol and confirm an
authenticator app, a login's two steps, replayed and recovery codes, the step-up rule and
`/auth/reauthenticate`, removal. TOTP codes are computed here with RFC 6238's own
arithmetic, not with the server's helper (pyotp)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import struct
from urllib.parse import parse_qs, urlsplit

import pytest

from models.values import Assurance
from tests.conftest import PASSWORD, assert_error, login, register
from tests.test_reliability import two_servers  # noqa: F401 - the fixture


def totp(secret: str, at: float, step_offset: int = 0) -> str:
    """RFC 6238 (HMAC-SHA1, 6 digits, 30 s steps) for the step `step_offset` after `at`'s."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8), casefold=True)
    counter = int(at) // 30 + step_offset
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 1_000_000).zfill(6)


class Totp:
    """An authenticator app holding one secret, reading the server's clock (the test's)."""

    def __init__(self, secret: str, clock) -> None:
        self.secret, self.clock = secret, clock

    def code(self, step_offset: int = 0) -> str:
        return totp(self.secret, self.clock().timestamp(), step_offset)


async def enrol(api, token: str, clock) -> tuple[Totp, list[str], dict]:
    """Add and confirm an authenticator app; (the app, the recovery codes, the confirm answer)."""
    r = await api.post("/auth/mfa/totp", {"name": "phone"}, token=token)
    assert r.status == 200, r.data
    data = r.data["data"]
    uri = urlsplit(data["otpauthUri"])
    query = parse_qs(uri.query)
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp") and query["secret"] == [data["secret"]]
    assert query["issuer"] == ["Gatehouse"] and data["qrSvg"].startswith("<svg")
    assert data["factor"]["confirmed"] is False
    app = Totp(data["secret"], clock)
    factor_id = data["factor"]["id"]
    wrong = await api.post(f"/auth/mfa/totp/{factor_id}/confirm", {"code": "000000"}, token=token)
    if app.code() != "000000":
        assert_error(wrong, 400, "INVALID_CODE")
    r = await api.post(f"/auth/mfa/totp/{factor_id}/confirm", {"code": app.code()}, token=token)
    assert r.status == 200, r.data
    return app, r.data["data"]["recoveryCodes"], r.data["data"]


async def challenge(api, user: dict, path: str = "/auth/auth") -> dict:
    """A password login's first step for an MFA account: no token, a challenge."""
    r = await api.post(path, {"username": user["username"], "password": user["password"]})
    assert_error(r, 403, "MFA_REQUIRED")
    assert "token" not in r.body.decode() or "challenge" in r.data["mfa"]
    assert set(r.data) == {"code", "message", "time", "data", "mfa"}
    return r.data["mfa"]


async def second_step(api, mfa: dict, code: str):
    return await api.post("/auth/mfa/verify", {"challenge": mfa["challenge"], "code": code})


async def test_the_whole_story_of_an_authenticator_app(api, gatehouse, clock):
    user = await register(api)
    token = await login(api, user)
    app, recovery, confirmed = await enrol(api, token, clock)
    assert len(recovery) == 10 and len(set(recovery)) == 10
    # The session that showed the factor is at aal2 now.
    assert (confirmed["session"]["aal"], confirmed["session"]["amr"]) == (2, ["pwd", "totp"])
    listed = (await api.get("/auth/mfa/factors", token=token)).data["data"]
    assert [f["confirmed"] for f in listed["factors"]] == [True] and listed["recoveryCodesLeft"] == 10
    assert (await api.post("/auth/logout", {}, token=token)).status == 200

    # The password alone gives a challenge, never a token.
    mfa = await challenge(api, user)
    assert mfa["factors"] == ["totp", "recovery"] and mfa["verify"] == "/auth/mfa/verify"
    code = app.code(1)  # the next step's: the current one was spent confirming
    r = await second_step(api, mfa, code)
    assert r.status == 200, r.data
    token = r.data["data"]["token"]
    assert (r.data["data"]["aal"], r.data["data"]["amr"]) == (2, ["pwd", "totp"])
    me = (await api.get("/auth/me", token=token)).data["data"]
    assert (me["aal"], me["amr"], me["authTime"]) == (2, ["pwd", "totp"], r.data["data"]["authTime"])
    me = (await api.get("/auth/sessions", token=token)).data["data"]["sessions"]
    mine = next(s for s in me if s["current"])
    assert (mine["aal"], mine["amr"]) == (2, ["pwd", "totp"])
    # The challenge is spent; the code is spent, even with a new challenge.
    assert_error(await second_step(api, mfa, code), 401, "MFA_CHALLENGE_INVALID")
    assert_error(await second_step(api, await challenge(api, user), code), 400, "INVALID_CODE")

    # A recovery code works once, never twice.
    r = await second_step(api, await challenge(api, user), recovery[0].upper())
    assert r.status == 200, r.data
    assert_error(await second_step(api, await challenge(api, user), recovery[0]), 400, "INVALID_CODE")
    events = await gatehouse.events.find(account_id=user["id"], type="mfa_verified")
    assert [e["factor"] for e in events if e["via"] == "login"] == ["recovery", "totp"]  # newest first

    # Step-up: an old session may not remove the factor...
    clock.advance(16 * 60)
    r = await api.delete(f"/auth/mfa/factors/{confirmed['factor']['id']}", token=token)
    assert_error(r, 403, "REAUTHENTICATION_REQUIRED")
    assert r.data["reauthenticate"]["aal"] == 2 and r.data["reauthenticate"]["route"] == "/auth/reauthenticate"
    # ...until it authenticates again (no new session), with a code.
    assert_error(await api.post("/auth/reauthenticate", {"password": PASSWORD}, token=token), 400, "INVALID_REQUEST")
    r = await api.post("/auth/reauthenticate", {"code": app.code()}, token=token)
    assert r.status == 200, r.data
    session = r.data["data"]["session"]
    assert session["aal"] == 2 and session["authTime"] >= int(clock().timestamp()) - 2
    r = await api.delete(f"/auth/mfa/factors/{confirmed['factor']['id']}", token=token)
    assert r.status == 200, r.data
    # Without a factor, the password is a whole login again (aal1), and the codes are gone.
    r = await api.post("/auth/auth", {"username": user["username"], "password": PASSWORD})
    assert r.status == 200, r.data
    assert (await api.get("/auth/mfa/factors", token=token)).data["data"]["recoveryCodesLeft"] == 0


async def test_parallel_wrong_codes_against_one_challenge_are_capped(api, gatehouse, clock):
    user = await register(api)
    app, _, _ = await enrol(api, await login(api, user), clock)
    mfa = await challenge(api, user)
    wrong = [f"{n:06d}" for n in range(20) if f"{n:06d}" not in {app.code(k) for k in (-1, 0, 1)}][:20]
    answers = await asyncio.gather(*(second_step(api, mfa, code) for code in wrong))
    statuses = sorted(r.status for r in answers)
    cap = gatehouse.config.mfa.mfa_challenge_attempts
    assert statuses.count(400) == cap and statuses.count(401) == len(wrong) - cap, statuses
    failed = await gatehouse.events.find(account_id=user["id"], type="mfa_failed")
    assert len([e for e in failed if e.get("via") == "login"]) == cap  # at most the cap was evaluated
    # The challenge died with its last attempt: even the right code cannot use it.
    assert_error(await second_step(api, mfa, app.code(1)), 401, "MFA_CHALLENGE_INVALID")


@pytest.mark.parametrize("settings", [{"mfa_failures_per_account": 4}])
async def test_wrong_codes_count_per_account_across_challenges(api, settings, clock):
    user = await register(api)
    app, _, _ = await enrol(api, await login(api, user), clock)  # one wrong code, confirming
    for _ in range(3):
        assert (
            await second_step(api, await challenge(api, user), "999999" if app.code(1) != "999999" else "999998")
        ).status == 400
    r = await second_step(api, await challenge(api, user), app.code(1))
    assert r.status == 429, r.data  # the account's budget, not the challenge's, is spent


async def test_a_password_change_between_the_two_steps_voids_the_challenge(api, clock):
    user = await register(api)
    token = await login(api, user)
    app, _, _ = await enrol(api, token, clock)
    mfa = await challenge(api, user)
    r = await api.post("/auth/password", {"password": PASSWORD, "new_password": PASSWORD + "-2"}, token=token)
    assert r.status == 200, r.data
    assert_error(await second_step(api, mfa, app.code(1)), 401, "MFA_CHALLENGE_INVALID")


async def test_jwt_access_tokens_and_introspection_carry_the_assurance(api, gatehouse, clock):
    user = await register(api)
    app, _, _ = await enrol(api, await login(api, user), clock)
    r = await api.post("/auth/token", {"username": user["username"], "password": PASSWORD})
    assert_error(r, 403, "MFA_REQUIRED")
    r = await second_step(api, r.data["mfa"], app.code(1))
    assert r.status == 200, r.data
    access = r.data["data"]["access_token"]
    claims = gatehouse.tokens.decode(access, "access")
    assert (claims["aal"], claims["amr"]) == (2, ["pwd", "totp"])
    assert abs(claims["auth_time"] - clock().timestamp()) < 5
    facts = await gatehouse.auth.oauth_introspection(access)
    assert (facts["aal"], facts["amr"], facts["auth_time"]) == (2, ["pwd", "totp"], claims["auth_time"])


async def test_new_recovery_codes_void_the_old_set_and_every_change_is_told(sinks, api, clock):
    user = await register(api)
    token = await login(api, user)
    app, old, _ = await enrol(api, token, clock)
    r = await api.post("/auth/mfa/recovery-codes", {}, token=token)
    assert r.status == 200, r.data
    new = r.data["data"]["recoveryCodes"]
    assert len(new) == 10 and not set(new) & set(old)
    assert_error(await second_step(api, await challenge(api, user), old[0]), 400, "INVALID_CODE")
    assert (await second_step(api, await challenge(api, user), new[0])).status == 200
    # The owner heard of each change, by e-mail, and no notice carries a code.
    notices = [m["body"] for m in await sinks.wait_for(user["email"], 3)]
    for what in ("authenticator app was added", "recovery codes were replaced", "recovery code was used"):
        assert any(what in body for body in notices), (what, notices)
    # Without a factor there are no recovery codes to renew.
    other = await register(api)
    r = await api.post("/auth/mfa/recovery-codes", {}, token=await login(api, other))
    assert_error(r, 400, "INVALID_REQUEST")


async def test_enrolling_needs_a_recent_login_and_is_bounded(api, clock, settings):
    user = await register(api)
    token = await login(api, user)
    clock.advance(16 * 60)
    r = await api.post("/auth/mfa/totp", {}, token=token)
    assert_error(r, 403, "REAUTHENTICATION_REQUIRED")
    assert r.data["reauthenticate"]["aal"] == 1
    assert (await api.post("/auth/reauthenticate", {"password": PASSWORD}, token=token)).status == 200
    for _ in range(5):  # GATEHOUSE_MFA_MAX_FACTORS, pending ones included
        assert (await api.post("/auth/mfa/totp", {}, token=token)).status == 200
    assert_error(await api.post("/auth/mfa/totp", {}, token=token), 400, "INVALID_REQUEST")
    assert_error(
        await api.post("/auth/reauthenticate", {"password": "wrong-password-1"}, token=token),
        401,
        "INVALID_CREDENTIALS",
    )


async def test_one_code_is_taken_once_across_two_processes(two_servers):  # noqa: F811
    """Two Gatehouses over one database, a code presented to both at once: one login."""
    import time

    from models.common import Context
    from models.errors import CodeInvalid, MfaRequired
    from models.values import Caller

    a, b = two_servers
    ctx = Context(ip="127.0.0.1", style="native")
    await a.auth.register(ctx, password=PASSWORD, username="twice")
    account = await a.accounts.find_by_login("twice")
    session, _ = await a.sessions.create(
        account, "opaque", ctx, idle_seconds=60, max_seconds=60, assurance=Assurance.first("password")
    )
    enrolment = await a.mfa.enrol_totp(Caller(account, session), "", ctx)
    await a.mfa.confirm_totp(Caller(account, session), enrolment.factor.id, totp(enrolment.secret, time.time()), ctx)

    async def first_step(house) -> str:
        with pytest.raises(MfaRequired) as raised:
            await house.auth.login_password("twice", PASSWORD, ctx)
        return raised.value.details["mfa"]["challenge"]

    challenges = [await first_step(a), await first_step(b)]
    code = totp(enrolment.secret, time.time(), 1)

    async def second(house, challenge_token: str) -> str:
        try:
            await house.mfa.verify(challenge_token, code, ctx)
            return "session"
        except CodeInvalid:
            return "refused"

    outcomes = await asyncio.gather(second(a, challenges[0]), second(b, challenges[1]))
    assert sorted(outcomes) == ["refused", "session"]
