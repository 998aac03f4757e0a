"""Every front door of an account with a second factor (issue 20): the first factor alone
never yields a token, in any style. Each style's login answers its own error envelope
(403) with the MFA challenge beside it (`mfa`), and `/auth/mfa/verify` then makes the
session that login asked for — in that style's token profile, at aal2."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from models.errors import MfaRequired
from tests.conftest import PASSWORD, login, register, unique
from tests.test_jwt import claims_of
from tests.test_mfa import Totp, enrol, second_step
from tests.test_styles import drf_user, phone_user


async def drf(api, sinks) -> tuple[dict, Callable[[], Awaitable]]:
    user = await drf_user(api)
    creds = {"username": user["phone"], "password": PASSWORD}
    return creds, lambda: api.post("/api/auth/login/", creds)


async def simple(api, sinks):
    name = unique("s")
    body = {"username": name, "password": PASSWORD, "email": f"{name}@example.test"}
    assert (await api.post("/auth/create", body)).status == 200
    creds = {"username": name, "password": PASSWORD}
    return creds, lambda: api.post("/auth/", creds)


async def v1(api, sinks):
    user = await register(api)
    creds = {"username": user["username"], "password": PASSWORD}
    return creds, lambda: api.post("/api/v1/auth/login", {"user": user["username"], "password": PASSWORD})


async def native_opaque(api, sinks):
    user = await register(api)
    creds = {"username": user["username"], "password": PASSWORD}
    return creds, lambda: api.post("/auth/auth", creds)


async def native_jwt(api, sinks):
    user = await register(api)
    creds = {"username": user["username"], "password": PASSWORD}
    return creds, lambda: api.post("/auth/token", creds)


async def native_email_code(api, sinks):
    """A passwordless login by a code sent to a proven e-mail."""
    user = await register(api)
    creds = {"username": user["username"], "password": PASSWORD}
    token = await login(api, user)
    email = user["email"]
    assert (await api.post("/auth/otp", {"email": email, "purpose": "verify"})).status == 200
    proof = {"email": email, "purpose": "verify", "code": await sinks.code_for(email)}
    assert (await api.post("/auth/otp/verify", proof, token=token)).status == 200

    async def first_step():
        sinks.messages.clear()
        assert (await api.post("/auth/otp", {"email": email, "purpose": "login"})).status == 200
        code = await sinks.code_for(email)
        return await api.post("/auth/otp/verify", {"email": email, "purpose": "login", "code": code})

    return creds, first_step


async def phone_code(api, sinks):
    """Document 001: the account has no password; its first login (before the factor)
    gives the session that enrols it."""
    phone, _ = await phone_user(api, sinks)

    async def first_step():
        sinks.messages.clear()
        uid = (await api.post("/auth/api/login/", {"phone": phone})).data["user_id"]
        code = await sinks.code_for(phone)
        return await api.post("/auth/api/login/verify/", {"code": code, "user_id": uid})

    return None, first_step


MESSAGE = MfaRequired.default_message
# The style's first step, and what its second step's session is.
DOORS = {
    "drf": (drf, "jwt", {"token_type": "access"}, ["pwd", "totp"]),
    "simple": (simple, "jwt", {"type": "access_token"}, ["pwd", "totp"]),
    "v1": (v1, "jwt", {"type": "access"}, ["pwd", "totp"]),
    "native opaque": (native_opaque, "opaque", None, ["pwd", "totp"]),
    "native jwt": (native_jwt, "jwt", {"type": "access"}, ["pwd", "totp"]),
    "native e-mail code": (native_email_code, "opaque", None, ["email", "totp"]),
    "phone code": (phone_code, "jwt", {"type": "access", "fresh": True}, ["sms", "totp"]),
}


# Each style's own error envelope, as the README shows it (the message aside).
ENVELOPES = {
    "drf": {"detail": MESSAGE},
    "simple": {"error": "mfa_required", "message": MESSAGE},
    "v1": {"error": "mfa_required", "code": 40300},
    "native opaque": {"code": "MFA_REQUIRED", "data": None},
    "native jwt": {"code": "MFA_REQUIRED", "data": None},
    "native e-mail code": {"code": "MFA_REQUIRED", "data": None},
    "phone code": {"error": MESSAGE},
}


async def a_session_token(api, creds: dict | None, first_step) -> str:
    """A token to enrol with, from the account's own door before it has a factor."""
    if creds is not None:
        return await login(api, creds)
    r = await first_step()
    assert r.status == 200, r.data
    return r.data["access_token"]


@pytest.mark.parametrize("door", DOORS)
async def test_no_token_without_the_second_factor_at_any_door(door, sinks, api, gatehouse, clock):
    make, kind, profile, amr = DOORS[door]
    creds, first_step = await make(api, sinks)
    app: Totp = (await enrol(api, await a_session_token(api, creds, first_step), clock))[0]
    r = await first_step()
    assert r.status == 403, r.data
    assert {k: v for k, v in r.data.items() if k in ENVELOPES[door]} == ENVELOPES[door], r.data
    body = r.body.decode()
    assert r.data["mfa"]["factors"] == ["totp", "recovery"]
    challenge = r.data["mfa"]["challenge"]
    # Nothing in the answer is a token: no JWT, no opaque token, only the challenge.
    assert body.count(".") < 2 or "eyJ" not in body
    assert "token" not in {k for k in r.data if k != "mfa"} and "access" not in r.data
    r = await second_step(api, {"challenge": challenge}, app.code(1))
    assert r.status == 200, r.data
    data = r.data["data"]
    if kind == "opaque":
        session = await gatehouse.sessions.find_by_token(data["token"])
    else:
        claims = claims_of(data["access_token"])
        assert {k: claims.get(k) for k in profile} == profile and claims["aal"] == 2 and claims["amr"] == amr
        session = await gatehouse.sessions.find_alive(claims["sid"])
    assert session is not None and (session.kind, session.aal, list(session.amr)) == (kind, 2, amr)
