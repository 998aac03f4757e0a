"""The four other API styles (documents 000, 001, 002, 004): their documented answers,
errors in their own envelopes, and sessions that the core lists and kicks alike."""

from __future__ import annotations

import time

import pytest

from tests.conftest import PASSWORD, login, register, unique, unique_phone
from tests.test_jwt import claims_of

ADMIN = {"admin_username": "root-admin", "admin_password": "Adm1n-pass-xyz"}


async def kick_all(gatehouse, account_id: int) -> None:
    from models.common import Context

    await gatehouse.auth.kick_all(account_id, Context(), by="test")


# ---- 000: DRF / simplejwt ---------------------------------------------------------------


async def drf_user(api, **extra) -> dict:
    body = {"phone": unique_phone(), "password": PASSWORD, **extra}
    r = await api.post("/api/auth/sign_up/", body)
    assert r.status == 200 and r.data == {"data": "success"}, r.data
    return body


async def test_drf_cycle_sign_up_login_refresh_kick(api, gatehouse):
    user = await drf_user(api, nickname="Yam0", identity=2)
    r = await api.post("/api/auth/login/", {"username": user["phone"], "password": PASSWORD})
    assert r.status == 200 and r.data["nickname"] == "Yam0"
    access = r.data["access"]
    assert claims_of(access)["exp"] - claims_of(access)["iat"] == 300
    account = await gatehouse.accounts.find_by_phone(user["phone"])
    assert account.identity == 2
    session = await gatehouse.sessions.find(claims_of(access)["sid"])
    assert session.style == "drf" and session.kind == "jwt"
    r = await api.post("/api/auth/refresh/", {"refresh": r.data["refresh"]})
    assert r.status == 200 and set(r.data) == {"access"}
    await kick_all(gatehouse, account.id)
    assert (await api.get("/auth/me", token="Bearer " + r.data["access"])).status == 403


@pytest.mark.parametrize(
    "body, key",
    [
        ({"password": PASSWORD}, "phone"),
        ({"phone": "12", "password": PASSWORD}, "phone"),
        ({"phone": "+14155550142", "password": PASSWORD, "identity": 7}, "identity"),
        ({"phone": "+14155550143", "password": "short"}, "password"),
    ],
)
async def test_drf_field_errors_are_drf_shaped(api, body, key):
    r = await api.post("/api/auth/sign_up/", body)
    assert r.status == 400 and list(r.data) == [key] and isinstance(r.data[key], list)


async def test_drf_errors(api):
    user = await drf_user(api)
    r = await api.post("/api/auth/sign_up/", {"phone": user["phone"], "password": PASSWORD})
    assert r.status == 409 and "phone" in r.data
    r = await api.post("/api/auth/login/", {"username": user["phone"], "password": "Wrong-horse-00"})
    assert r.status == 401 and r.data == {"detail": "No active account found with the given credentials"}
    r = await api.post("/api/auth/refresh/", {"refresh": "a.b.c"})
    assert r.status == 401 and r.data["code"] == "token_not_valid"
    r = await api.post("/api/auth/users/")
    assert r.status == 401 and r.data == {"detail": "Authentication credentials were not provided."}


@pytest.mark.parametrize("settings", [ADMIN])
async def test_drf_users_are_admin_only_and_paged(api, settings):
    users = [await drf_user(api, nickname=f"n{i}") for i in range(3)]
    me = (await api.post("/api/auth/login/", {"username": users[0]["phone"], "password": PASSWORD})).data
    r = await api.get("/api/auth/users/", token="Bearer " + me["access"])
    assert r.status == 403 and r.data == {"detail": "You do not have permission to perform this action."}
    admin = (await api.post("/api/auth/login/", {"username": "root-admin", "password": "Adm1n-pass-xyz"})).data
    auth = "Bearer " + admin["access"]
    r = await api.get("/api/auth/users/?limit=2", token=auth)
    assert r.data["count"] == 4 and len(r.data["results"]) == 2 and r.data["previous"] is None
    assert "page=2" in r.data["next"]
    page2 = await api.post("/api/auth/users/?limit=2&page=2", token=auth)
    assert len(page2.data["results"]) == 2 and page2.data["next"] is None
    found = await api.post("/api/auth/users/", {"phone": users[1]["phone"]}, token=auth)
    assert [u["nickname"] for u in found.data["results"]] == ["n1"]
    assert all("password_hash" not in u for u in found.data["results"])
    uid = found.data["results"][0]["id"]
    assert (await api.get(f"/api/auth/users/{uid}/", token=auth)).data["phone"] == users[1]["phone"]
    detail = await api.post(f"/api/auth/users/{uid}/", token=auth)  # the document says POST
    assert detail.status == 200 and detail.data["id"] == uid and detail.data["is_active"] is True
    assert (await api.get("/api/auth/users/999999/", token=auth)).data == {"detail": "Not found."}
    r = await api.get("/api/auth/users/?limit=0", token=auth)
    assert r.status == 400 and "limit" in r.data


# ---- 001: phone + SMS code ------------------------------------------------------------


async def phone_user(api, sinks) -> tuple[str, dict]:
    phone = unique_phone()
    r = await api.post("/auth/api/Register/", {"phonenumber": phone})
    assert r.status == 200, r.data
    code = await sinks.code_for(phone)
    r = await api.post("/auth/api/verify/", {"code": code, "token": r.data["token"], "phone": phone})
    assert r.data == {"message": "User verify Successfully!"}
    return phone, r.data


async def test_phone_cycle_register_verify_login_kick(sinks, api, gatehouse):
    phone, _ = await phone_user(api, sinks)
    sinks.messages.clear()
    r = await api.post("/auth/api/login/", {"phone": phone})
    assert r.data["expire_time"] == "300" and r.data["message"] == "Code Send to user"
    account = await gatehouse.accounts.find_by_phone(phone)
    assert r.data["user_id"] == account.uid and account.phone_verified is True
    code = await sinks.code_for(phone)
    r = await api.post("/auth/api/login/verify/", {"code": code, "user_id": account.uid})
    assert r.status == 200
    claims = claims_of(r.data["access_token"])
    assert claims["sub"] == account.uid and claims["type"] == "access"
    assert (await gatehouse.sessions.find(claims["sid"])).style == "phone"
    await kick_all(gatehouse, account.id)
    assert (await api.get("/auth/me", token=r.data["access_token"])).status == 403


async def test_phone_register_with_a_wrong_token_or_code(sinks, api):
    phone = unique_phone()
    r = await api.post("/auth/api/Register/", {"phonenumber": phone})
    code = await sinks.code_for(phone)
    r2 = await api.post("/auth/api/verify/", {"code": code, "token": unique(), "phone": phone})
    assert r2.status == 400 and "error" in r2.data
    r3 = await api.post("/auth/api/verify/", {"code": code, "token": r.data["token"], "phone": phone})
    assert r3.status == 200


async def test_phone_errors(sinks, api):
    for path in ("/auth/api/Register/", "/auth/api/login/"):
        r = await api.post(path, raw=b"phonenumber=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status == 400 and r.data == {"error": "Only JSON requests are accepted"}
        r = await api.post(path, raw=b"{bad", headers={"Content-Type": "application/json"})
        assert r.status == 400 and "error" in r.data
    r = await api.post("/auth/api/Register/", {"phonenumber": "not a number"})
    assert r.status == 400 and "error" in r.data
    # an unverified number cannot get a login code
    phone = unique_phone()
    await api.post("/auth/api/Register/", {"phonenumber": phone})
    r = await api.post("/auth/api/login/", {"phone": phone})
    assert r.status == 403 and "verif" in r.data["error"]
    r = await api.post("/auth/api/login/verify/", {"code": "123456", "user_id": "not-a-uuid"})
    assert r.status == 400 and r.data == {"error": "login first"}


async def test_phone_register_rolls_back_when_the_sms_fails(sinks, api, gatehouse):
    sinks.sms_status = 500
    phone = unique_phone()
    r = await api.post("/auth/api/Register/", {"phonenumber": phone})
    assert r.status == 503 and "error" in r.data
    assert await gatehouse.accounts.find_by_phone(phone) is None
    sinks.sms_status = 200
    assert (await api.post("/auth/api/Register/", {"phonenumber": phone})).status == 200


# ---- 002: username/password + JWT --------------------------------------------------------


async def test_simple_cycle_create_login_reset_disable(api, gatehouse):
    name = unique("simple")
    r = await api.post("/auth/create", {"username": name, "password": PASSWORD, "email": f"{name}@example.test"})
    assert r.status == 200 and isinstance(r.data["id"], int)
    token = (await api.post("/auth/", {"username": name, "password": PASSWORD})).data["access_token"]
    assert claims_of(token)["exp"] - claims_of(token)["iat"] == 86400
    assert (await gatehouse.sessions.find(claims_of(token)["sid"])).style == "simple"
    other = (await api.post("/auth/", {"username": name, "password": PASSWORD})).data["access_token"]
    r = await api.post(
        "/auth/reset",
        {"username": name, "password": PASSWORD, "new_password": "Changed-pass-2"},
        token="Bearer " + token,
    )
    assert r.status == 200 and r.data == {}
    assert (await api.get("/auth/me", token=token)).status == 200  # the caller's session stays
    assert (await api.get("/auth/me", token=other)).status == 403  # the others end
    r = await api.post("/auth/disable", {"username": name, "password": "Changed-pass-2"}, token="Bearer " + token)
    assert r.status == 200 and r.data == {}
    assert (await api.get("/auth/me", token=token)).status == 403
    r = await api.post("/auth/", {"username": name, "password": "Changed-pass-2"})
    assert r.status == 401 and r.data["error"] == "invalid_credentials"


async def test_simple_errors(api, gatehouse):
    a, b = await register(api), await register(api)
    token_b = (await api.post("/auth/", {"username": b["username"], "password": PASSWORD})).data["access_token"]
    r = await api.post("/auth/disable", {"username": a["username"], "password": PASSWORD}, token="Bearer " + token_b)
    assert r.status == 403 and r.data["error"] == "forbidden"
    r = await api.post("/auth/create", {"username": unique("x"), "password": PASSWORD})
    assert r.status == 400 and r.data == {"error": "invalid_request", "message": "'email' is required"}
    r = await api.post(
        "/auth/reset", {"username": a["username"], "password": "Wrong-horse-00", "new_password": "Whatever-1234"}
    )
    assert r.status == 401 and r.data["error"] == "invalid_credentials"
    # The shared /auth/reset chose 002 before any work: the failure is recorded in its style.
    [failed] = await gatehouse.events.find(account_id=a["id"], type="login_failed")
    assert failed["style"] == "simple"
    await login(api, a)


# ---- 004: /api/v1 ------------------------------------------------------------------------


async def test_v1_cycle_login_refresh_kick(api, gatehouse):
    user = await register(api)
    r = await api.post("/api/v1/auth/login", {"user": user["username"], "password": PASSWORD})
    assert r.status == 200 and r.data["code"] == 0 and r.data["redirect"] == ""
    res = r.data["result"]
    assert (res["token_type"], res["access_token_expires_in"], res["refresh_token_expires_in"]) == (
        "Bearer",
        1800,
        14400,
    )
    r = await api.post(
        "/api/v1/auth/refresh", {"refresh_token": res["refresh_token"]}, token="Bearer " + res["access_token"]
    )
    assert r.status == 200 and r.data["result"]["code"] == 0 and r.data["result"]["desc"] == "Ok"
    new = r.data["result"]
    assert new["refresh_token"] != res["refresh_token"]
    # no Authorization header is fine too
    r = await api.post("/api/v1/auth/refresh", {"refresh_token": new["refresh_token"]})
    assert r.status == 200
    session = await gatehouse.sessions.find(claims_of(new["access_token"])["sid"])
    assert session.style == "v1"
    await kick_all(gatehouse, user["id"])
    r = await api.post("/api/v1/auth/refresh", {"refresh_token": r.data["result"]["refresh_token"]})
    assert r.status == 401 and r.data["code"] == 40102 and r.data["result"]["error"] == "invalid_token"


async def test_v1_refresh_accepts_an_expired_access_token_of_the_same_session_only(api, gatehouse):
    import jwt

    user = await register(api)
    res = (await api.post("/api/v1/auth/login", {"user": user["username"], "password": PASSWORD})).data["result"]
    other = (await api.post("/api/v1/auth/login", {"user": user["username"], "password": PASSWORD})).data["result"]
    key = gatehouse.tokens.keys.signing
    now = int(time.time())
    expired = jwt.encode(
        {**claims_of(res["access_token"]), "exp": now - 3600},
        key.signing_key,
        algorithm="HS256",
        headers={"kid": key.kid},
    )
    r = await api.post("/api/v1/auth/refresh", {"refresh_token": res["refresh_token"]}, token="Bearer " + expired)
    assert r.status == 200, r.data
    r = await api.post(
        "/api/v1/auth/refresh",
        {"refresh_token": other["refresh_token"]},
        token="Bearer " + other["access_token"][:-3] + "abc",
    )
    assert r.status == 401
    r = await api.post("/api/v1/auth/refresh", {"refresh_token": other["refresh_token"]}, token="Bearer " + expired)
    assert r.status == 401 and r.data["code"] != 0


async def test_v1_errors_have_a_nonzero_code(api):
    r = await api.post("/api/v1/auth/login", {"user": unique("ghost"), "password": PASSWORD})
    assert r.status == 401 and r.data["code"] == 40101 and r.data["desc"]
    r = await api.post("/api/v1/auth/login", {"user": "x"})
    assert r.status == 400 and r.data["code"] == 40001 and r.data["result"]["desc"] == "'password' is required"


# ---- across styles -----------------------------------------------------------------------


@pytest.mark.parametrize("settings", [{"api_styles": ("native", "v1")}])
async def test_disabled_styles_answer_404(api, settings):
    for path in ("/api/auth/login/", "/auth/api/login/", "/auth/", "/auth/create"):
        r = await api.post(path, {"username": "a", "password": "b"})
        assert r.status == 404 and r.data["code"] == "NOT_FOUND", path
    user = await register(api)
    assert (await api.post("/api/v1/auth/login", {"user": user["username"], "password": PASSWORD})).status == 200
    # with 002 off, /auth/reset is 003's alone
    r = await api.post(
        "/auth/reset", {"username": user["username"], "password": PASSWORD, "new_password": "X-pass-1234"}
    )
    assert r.data["code"] == "SUCCESS" and r.data["data"] == "Email Sent"


async def test_sessions_of_every_style_are_listed_together(sinks, api, gatehouse):
    user = await register(api)
    await login(api, user)
    await api.post("/api/auth/login/", {"username": user["phone"], "password": PASSWORD})
    await api.post("/auth/", {"username": user["username"], "password": PASSWORD})
    await api.post("/api/v1/auth/login", {"user": user["email"], "password": PASSWORD})
    token = await login(api, user)
    sessions = (await api.get("/auth/sessions", token=token)).data["data"]["sessions"]
    assert sorted(s["style"] for s in sessions) == ["drf", "native", "native", "simple", "v1"]
