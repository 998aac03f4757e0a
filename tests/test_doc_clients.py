"""Clients written from the API documents alone (../shared/api-docs/), not from our code.

Each client below uses only what its document says: paths, field names, example answers
and the status codes it names. Each drives sign-up → login → refresh (where the document
has one) → an operator's kick through the admin API → the kicked credentials refused.
They talk HTTP through httpx, not through the test harness's helpers.
"""

from __future__ import annotations

import base64
import json
import uuid

import httpx
import pytest

pytestmark = pytest.mark.usefixtures("sinks")

PASSWORD = "Plain-doc-client-77"


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture
async def http(base_url):
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        yield client


async def kick_all(http: httpx.AsyncClient, admin: dict, account_id: int) -> None:
    r = await http.post(f"/admin/api/accounts/{account_id}/kick", headers={"Authorization": admin["token"]})
    assert r.status_code == 200 and r.json()["kicked"] >= 1


async def account_id_of(http: httpx.AsyncClient, admin: dict, ref: str) -> int:
    r = await http.get("/admin/api/accounts", params={"q": ref}, headers={"Authorization": admin["token"]})
    [account] = r.json()["accounts"]
    return account["id"]


def new_phone() -> str:
    # A valid NANP number: the exchange (the 3 digits after the area code) starts 2-9.
    return f"+1650{2000000 + uuid.uuid4().int % 7999999}"


async def test_document_000(http, admin):
    # "POST /api/auth/sign_up/" with phone, password, identity (0/1/2), nickname → {"data": "success"}
    phone = new_phone()
    r = await http.post(
        "/api/auth/sign_up/", json={"phone": phone, "password": PASSWORD, "identity": 1, "nickname": "Yam0"}
    )
    assert r.status_code == 200 and r.json() == {"data": "success"}
    # "POST /api/auth/login/": username (user phone), password → refresh, access, nickname
    r = await http.post("/api/auth/login/", json={"username": phone, "password": PASSWORD})
    assert r.status_code == 200
    login = r.json()
    assert set(login) == {"refresh", "access", "nickname"} and login["nickname"] == "Yam0"
    # "The access token only valid in 5 minutes"
    claims = jwt_claims(login["access"])
    assert claims["exp"] - claims["iat"] == 300
    # "POST /api/auth/refresh/": refresh → {"access": …}
    r = await http.post("/api/auth/refresh/", json={"refresh": login["refresh"]})
    assert r.status_code == 200 and set(r.json()) == {"access"}
    # ListUsers is for administrators; a plain user is refused.
    r = await http.post("/api/auth/users/", headers={"Authorization": "Bearer " + r.json()["access"]})
    assert r.status_code == 403
    await kick_all(http, admin, await account_id_of(http, admin, phone))
    r = await http.post("/api/auth/refresh/", json={"refresh": login["refresh"]})
    assert r.status_code == 401


async def test_document_001(http, admin, sinks):
    # "/auth/api/Register/" {"phonenumber"} → message, phone, token; a code is texted
    phone = new_phone()
    r = await http.post("/auth/api/Register/", json={"phonenumber": phone})
    assert r.status_code == 200
    body = r.json()
    assert body["message"] == "User Created Successfully" and body["token"]
    # "if phone number is already have account" → 409 {"error": "Account already Exists"}
    again = await http.post("/auth/api/Register/", json={"phonenumber": phone})
    assert again.status_code == 409 and again.json() == {"error": "Account already Exists"}
    # "/auth/api/verify/" {"code", "token", "phone"} → "User verify Successfully!"
    code = await sinks.code_for(phone)
    r = await http.post("/auth/api/verify/", json={"code": code, "token": body["token"], "phone": phone})
    assert r.status_code == 200 and r.json() == {"message": "User verify Successfully!"}
    # "/auth/api/login/" {"phone"} → expire_time "300", "Code Send to user", user_id
    r = await http.post("/auth/api/login/", json={"phone": phone})
    assert r.status_code == 200
    login = r.json()
    assert login["expire_time"] == "300" and login["message"] == "Code Send to user"
    # "try again shortly after" → 429 {"message": "User already have a request for login"}
    r = await http.post("/auth/api/login/", json={"phone": phone})
    assert r.status_code == 429 and r.json() == {"message": "User already have a request for login"}
    # "/auth/api/login/verify/" {"code", "user_id"} → access_token, refresh_token
    code = await sinks.code_for(phone)
    r = await http.post("/auth/api/login/verify/", json={"code": code, "user_id": login["user_id"]})
    assert r.status_code == 200
    tokens = r.json()
    assert set(tokens) == {"access_token", "refresh_token"}
    assert jwt_claims(tokens["access_token"])["sub"] == login["user_id"]  # "user unique public key"
    # "Json only views" → 400 {"error": "Only JSON requests are accepted"}
    r = await http.post("/auth/api/login/", content="phone=1", headers={"Content-Type": "text/plain"})
    assert r.status_code == 400 and r.json() == {"error": "Only JSON requests are accepted"}
    # "if phone number is not belong to any user" → 404 {"error": "User does not exist"}
    r = await http.post("/auth/api/login/", json={"phone": new_phone()})
    assert r.status_code == 404 and r.json() == {"error": "User does not exist"}
    # Document 001 has no refresh and no route that takes the token; the kick shows on
    # the admin API, which lists the session as revoked.
    account_id = await account_id_of(http, admin, phone)
    await kick_all(http, admin, account_id)
    r = await http.get(
        "/admin/api/sessions", params={"account": str(account_id)}, headers={"Authorization": admin["token"]}
    )
    assert [s["revoked"] for s in r.json()["sessions"]] == [True]


async def test_document_002(http, admin):
    name = "doc" + uuid.uuid4().hex[:8]
    # "POST /auth/create": username, password, email → {"id": Integer}
    r = await http.post("/auth/create", json={"username": name, "password": PASSWORD, "email": f"{name}@example.test"})
    assert r.status_code == 200 and isinstance(r.json()["id"], int)
    account_id = r.json()["id"]
    # "POST /auth/": username, password → {"access_token": "aaa.bbb.ccc"}
    r = await http.post("/auth/", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200 and r.json()["access_token"].count(".") == 2
    token = r.json()["access_token"]
    # "POST /auth/reset": username, password, new_password (the token kept working)
    new = PASSWORD + "-b"
    r = await http.post(
        "/auth/reset",
        json={"username": name, "password": PASSWORD, "new_password": new},
        headers={"Authorization": "Bearer " + token},
    )
    assert r.status_code == 200
    r = await http.post("/auth/", json={"username": name, "password": PASSWORD})
    assert r.status_code >= 400  # the old password is gone
    await kick_all(http, admin, account_id)
    # "POST /auth/disable" with the Bearer token: a kicked token no longer can.
    r = await http.post(
        "/auth/disable", json={"username": name, "password": new}, headers={"Authorization": "Bearer " + token}
    )
    assert r.status_code in (401, 403)
    r = await http.post("/auth/", json={"username": name, "password": new})
    assert r.status_code == 200  # the account itself is intact


async def test_document_003(http, admin):
    name = "alice" + uuid.uuid4().hex[:8]
    # /auth/register → {"code": "SUCCESS", "data": {"id", "nickname", "username", "email", "phone"}}
    r = await http.post(
        "/auth/register",
        json={"username": name, "password": PASSWORD, "nickname": "Alice the Cutie", "email": f"{name}@abc.com"},
    )
    assert r.status_code == 200 and r.json()["code"] == "SUCCESS"
    assert r.json()["data"]["username"] == name and isinstance(r.json()["data"]["id"], int)
    # /auth/auth → data.token; "Set this to the header Authorization's value"
    r = await http.post("/auth/auth", json={"username": f"{name}@abc.com", "password": PASSWORD})
    data = r.json()["data"]
    assert r.status_code == 200 and data["account"]["nickname"] == "Alice the Cutie"
    assert isinstance(data["lastActive"], int) and isinstance(data["created"], int)
    # /auth/me "should be identical to the /auth/auth response"
    r = await http.get("/auth/me", headers={"Authorization": data["token"]})
    assert r.status_code == 200 and r.json()["data"]["token"] == data["token"]
    assert r.json()["data"]["account"] == data["account"]
    await kick_all(http, admin, r.json()["data"]["account"]["id"])
    # "You will get HTTP 403 if not logged in."
    r = await http.get("/auth/me", headers={"Authorization": data["token"]})
    assert r.status_code == 403 and r.json()["code"] != "SUCCESS"


async def test_document_004(http, admin):
    name = "v1" + uuid.uuid4().hex[:8]
    await http.post("/auth/register", json={"username": name, "password": PASSWORD})  # an account to log in with
    # POST /api/v1/auth/login {"user", "password"} → code 0, result model, redirect
    r = await http.post("/api/v1/auth/login", json={"user": name, "password": PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert body["code"] == 0 and isinstance(body["redirect"], str)
    result = body["result"]
    assert result["token_type"] == "Bearer"
    assert result["access_token_expires_in"] == 1800 and result["refresh_token_expires_in"] == 14400
    # POST /api/v1/auth/refresh, Authorization: Bearer <access>, {"refresh_token"} → code 0, desc "Ok"
    r = await http.post(
        "/api/v1/auth/refresh",
        json={"refresh_token": result["refresh_token"]},
        headers={"Authorization": "Bearer " + result["access_token"]},
    )
    assert r.status_code == 200 and r.json()["code"] == 0 and r.json()["result"]["desc"] == "Ok"
    fresh = r.json()["result"]
    account_id = await account_id_of(http, admin, name)
    await kick_all(http, admin, account_id)
    # After the kick the refresh token is refused: a non-zero code with error/desc.
    r = await http.post("/api/v1/auth/refresh", json={"refresh_token": fresh["refresh_token"]})
    assert r.status_code == 401
    assert r.json()["code"] != 0 and r.json()["result"]["error"] and r.json()["result"]["desc"]
