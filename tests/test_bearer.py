"""RFC 6750 on the wire (issue 18): every 401 carries `WWW-Authenticate: Bearer
realm="gatehouse"` (the test harness checks it on every answer of every test), with
`error="invalid_token"` when a token was presented and is not a live one."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import PASSWORD, login, register

BARE = 'Bearer realm="gatehouse"'
INVALID = 'Bearer realm="gatehouse", error="invalid_token"'


async def test_a_failed_login_gets_the_bare_challenge(api):
    user = await register(api)
    r = await api.post("/auth/auth", {"username": user["username"], "password": "Wrong-pass-123"})
    assert r.status == 401 and r.headers["WWW-Authenticate"] == BARE


@pytest.mark.parametrize("path", ["/api/auth/users/", "/admin/api/sessions"])
async def test_a_dead_or_unknown_token_gets_invalid_token_and_none_the_bare_one(api, path):
    user = await register(api)
    token = await login(api, user)
    assert (await api.post("/auth/logout", token=token)).status == 200
    for sent in (token, "Bearer " + "x" * 40):
        r = await api.get(path, token=sent)
        assert r.status == 401 and r.headers["WWW-Authenticate"] == INVALID, (sent, r.status, r.data)
    r = await api.get(path)
    assert r.status == 401 and r.headers["WWW-Authenticate"] == BARE


async def test_other_errors_carry_no_challenge(api):
    user = await register(api)
    token = await login(api, user)
    r = await api.get("/auth/me", token=token)
    assert r.status == 200 and "WWW-Authenticate" not in r.headers
    r = await api.post("/auth/auth", {"username": user["username"]})
    assert r.status == 400 and "WWW-Authenticate" not in r.headers


# ---- expired, unknown, missing: what the status and the code say ---------------------


async def jwt_access(api, user) -> str:
    r = await api.post("/auth/token", {"username": user["username"], "password": PASSWORD})
    assert r.status == 200, r.data
    return r.data["data"]["access_token"]


async def test_native_keeps_403_but_its_code_tells_an_expired_token_apart(api, clock):
    """Document 003 answers 403 when not logged in; the code says whether refreshing
    can help (`TOKEN_EXPIRED`) or the token never was, or no longer is, a session's."""
    user = await register(api)
    access, other = await jwt_access(api, user), await jwt_access(api, user)
    assert (await api.post("/auth/logout", token=other)).status == 200
    for sent, code in ((None, "NOT_AUTHENTICATED"), ("x" * 40, "NOT_AUTHENTICATED"), (other, "NOT_AUTHENTICATED")):
        r = await api.get("/auth/me", token=sent)
        assert (r.status, r.data["code"]) == (403, code), (sent, r.data)
    clock.advance(900 + 31)  # the native access lifetime and the leeway
    r = await api.get("/auth/me", token=access)
    assert (r.status, r.data["code"]) == (403, "TOKEN_EXPIRED"), r.data
    assert "WWW-Authenticate" not in r.headers  # a 403 carries no challenge


async def test_an_opaque_token_whose_session_timed_out_is_expired_a_kicked_one_is_not(api, gatehouse):
    user = await register(api)
    timed_out, kicked = await login(api, user), await login(api, user)
    assert (await api.post("/auth/logout", token=kicked)).status == 200
    past = gatehouse.clock() - timedelta(seconds=1)
    session = await gatehouse.sessions.find_token(timed_out)
    await gatehouse.db.sessions.update_one({"_id": session.id}, {"$set": {"expires_at": past}})
    for _ in range(2):  # the second answer comes from the memory of dead sessions
        assert (await api.get("/auth/me", token=timed_out)).data["code"] == "TOKEN_EXPIRED"
        assert (await api.get("/auth/me", token=kicked)).data["code"] == "NOT_AUTHENTICATED"


async def test_jwt_styles_and_the_admin_api_answer_401_with_the_challenge(api, clock, settings):
    """No document prescribes the status of a refused token on 002's protected routes,
    000's users/ or the admin API: RFC 6750's 401, `invalid_token` when one was sent."""
    user = await register(api)
    simple = (await api.post("/auth/", {"username": user["username"], "password": PASSWORD})).data["access_token"]
    drf = (await api.post("/api/auth/login/", {"username": user["username"], "password": PASSWORD})).data["access"]
    body = {"username": user["username"], "password": PASSWORD}
    r = await api.post("/auth/disable", body)
    assert r.status == 401 and r.data["error"] == "not_authenticated" and r.headers["WWW-Authenticate"] == BARE
    r = await api.post("/auth/disable", body, token="Bearer " + "y" * 40)
    assert r.status == 401 and r.headers["WWW-Authenticate"] == INVALID
    clock.advance(86400 + 31)  # past 002's one-day access token (and 000's five minutes)
    r = await api.post("/auth/disable", body, token="Bearer " + simple)
    assert (r.status, r.data["error"], r.headers["WWW-Authenticate"]) == (401, "token_expired", INVALID), r.data
    r = await api.get("/api/auth/users/", token="Bearer " + drf)
    assert r.status == 401 and r.data == {
        "detail": "Token is invalid or expired",
        "code": "token_not_valid",
    }
    assert r.headers["WWW-Authenticate"] == INVALID
    r = await api.get("/admin/api/sessions", token="Bearer " + drf)
    assert (r.status, r.data["error"], r.headers["WWW-Authenticate"]) == (401, "TOKEN_EXPIRED", INVALID)
    assert (await login(api, user)) and (await api.post("/auth/", body)).status == 200  # nothing was disabled
