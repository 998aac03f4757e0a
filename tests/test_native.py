"""The native API (document 003 and its extensions), end to end against a real database."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tests.conftest import PASSWORD, assert_error, login, register, unique, unique_phone

# ---- register -------------------------------------------------------------------------


async def test_register_answers_the_documented_account(api, gatehouse):
    name = unique("alice")
    r = await api.post(
        "/auth/register",
        {
            "username": name,
            "password": "totallysecure",
            "nickname": "Alice the Cutie",
            "phone": "888-888-8888",
            "email": "abc@abc.com",
            "roles": ["admin"],
            "id": 999,
        },
    )
    assert r.status == 200, r.data
    assert r.data["code"] == "SUCCESS" and r.data["message"] == ""
    data = r.data["data"]
    assert data["username"] == name and data["nickname"] == "Alice the Cutie"
    assert data["email"] == "abc@abc.com"
    assert data["phone"] == "+18888888888"  # stored and answered in E.164
    assert isinstance(data["id"], int) and data["id"] != 999
    stored = await gatehouse.db.accounts.find_one({"id": data["id"]})  # the document as stored
    assert stored["roles"] == []  # unlisted fields are ignored, never stored
    assert stored["password_hash"].startswith("$2b$04$")
    assert "password" not in stored and "totallysecure" not in str(stored)


async def test_account_ids_are_sequential(api):
    a = await register(api)
    b = await register(api)
    assert b["id"] == a["id"] + 1


@pytest.mark.parametrize(
    "change, field",
    [
        ({"username": None}, "username"),
        ({"username": "has space"}, "username"),
        ({"username": "a@b.c"}, "username"),
        ({"password": "short7!"}, "password"),
        ({"password": "password123"}, "password"),  # on the common-password list
        ({"password": "x" * 257}, "password"),
        ({"email": "not-an-email"}, "email"),
        ({"phone": "12"}, "phone"),
        ({"phone": "call me"}, "phone"),
        ({"username": {"$ne": None}}, "username"),
        ({"password": ["a"] * 10}, "password"),
        ({"nickname": 5}, "nickname"),
    ],
)
async def test_register_rejects_bad_input_and_stores_nothing(api, gatehouse, change, field):
    name = unique("bad")
    body = {"username": name, "password": PASSWORD, "email": f"{name}@example.test"}
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    r = await api.post("/auth/register", body)
    assert_error(r, 400, "INVALID_REQUEST")
    assert r.data["field"] == field
    assert await gatehouse.db.accounts.count_documents({}) == 0


async def test_register_accepts_long_unicode_passphrases_without_composition_rules(api):
    user = await register(api, password="correct horse battery staple")
    await login(api, user)
    emoji = await register(api, password="🔑" * 64)  # 256 bytes of UTF-8
    await login(api, emoji)


async def test_password_equal_to_username_is_refused(api):
    name = unique("same")
    r = await api.post("/auth/register", {"username": name, "password": name})
    assert_error(r, 400, "INVALID_REQUEST")
    assert "username" in r.data["message"]


async def test_duplicates_are_refused_whatever_the_spelling(api):
    user = await register(api, phone="+14155550199")
    for change, field in (
        ({"username": user["username"].upper()}, "username"),
        ({"email": user["email"].upper()}, "email"),
        ({"phone": "(415) 555-0199"}, "phone"),
    ):
        body = {"username": unique("dup"), "password": PASSWORD, **change}
        r = await api.post("/auth/register", body)
        assert_error(r, 409, "ACCOUNT_EXISTS")
        assert field in r.data["message"]


async def test_concurrent_registrations_of_one_name_make_one_account(api, gatehouse):
    name = unique("race")
    body = {"username": name, "password": PASSWORD}
    results = await asyncio.gather(*(api.post("/auth/register", body) for _ in range(8)))
    assert sorted(r.status for r in results) == [200] + [409] * 7
    assert await gatehouse.db.accounts.count_documents({"username_key": name.lower()}) == 1


# ---- hostile bodies -------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, ctype, status, code",
    [
        (b"{not json", "application/json", 400, "INVALID_REQUEST"),
        (b"[1, 2]", "application/json", 400, "INVALID_REQUEST"),
        (b'"text"', "application/json", 400, "INVALID_REQUEST"),
        (b"\xff\xfe\x00", "application/json", 400, "INVALID_REQUEST"),
        (b"username=a&password=b", "application/x-www-form-urlencoded", 415, "UNSUPPORTED_MEDIA_TYPE"),
        (b'{"username": "a"}', "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"),
    ],
)
async def test_bad_bodies_get_a_4xx_in_the_envelope(api, raw, ctype, status, code):
    r = await api.post("/auth/auth", raw=raw, headers={"Content-Type": ctype})
    assert_error(r, status, code)


async def test_a_body_over_one_mebibyte_is_413_and_changes_nothing(api, gatehouse):
    body = {"username": unique("big"), "password": "p" * (1024 * 1024 + 10)}
    r = await api.post("/auth/register", body)
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert await gatehouse.db.accounts.count_documents({}) == 0


async def test_operator_objects_never_reach_a_query(api):
    user = await register(api)
    for body in (
        {"username": {"$ne": None}, "password": user["password"]},
        {"username": user["username"], "password": {"$ne": None}},
        {"username": {"$regex": "^"}, "password": {"$gt": ""}},
    ):
        r = await api.post("/auth/auth", body)
        assert_error(r, 400, "INVALID_REQUEST")


async def test_unknown_paths_and_methods(api):
    r = await api.get("/auth/nothing-here")
    assert_error(r, 404, "NOT_FOUND")
    r = await api.request("TRACE", "/auth/auth")
    assert r.status == 405
    r = await api.get("/auth/auth")
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in r.headers["Allow"]


# ---- login ----------------------------------------------------------------------------


async def test_login_by_username_email_or_any_phone_spelling(api, gatehouse):
    user = await register(api, phone="+14155550123")
    for name in (user["username"], user["username"].upper(), user["email"], "+14155550123", "415-555-0123"):
        r = await api.post("/auth/auth", {"username": name, "password": PASSWORD})
        assert r.status == 200, (name, r.data)
        data = r.data["data"]
        assert len(data["token"]) >= 43  # 256 bits, url-safe base64
        assert data["account"] == {
            "id": user["id"],
            "nickname": "",
            "username": user["username"],
            "email": user["email"],
            "phone": "+14155550123",
        }
        assert data["created"] == data["lastActive"]
    stored = await gatehouse.db.sessions.find({"account_id": user["id"]}).to_list()
    assert len(stored) == 5 and all(s["kind"] == "opaque" and s["style"] == "native" for s in stored)
    # only the SHA-256 of a token is stored
    assert all("token" not in s and len(s["token_hash"]) == 64 for s in stored)


async def test_login_failures_look_the_same_for_unknown_wrong_and_disabled(api, gatehouse):
    user = await register(api)
    disabled = await register(api)
    account = await gatehouse.accounts.find_by_id(disabled["id"])
    await gatehouse.accounts.set_disabled(account.id, True)
    answers = []
    for name, password in (
        (unique("ghost"), PASSWORD),
        (user["username"], "Wrong-horse-42"),
        (disabled["username"], PASSWORD),
    ):
        r = await api.post("/auth/auth", {"username": name, "password": password})
        assert_error(r, 401, "INVALID_CREDENTIALS")
        answers.append({k: v for k, v in r.data.items() if k != "time"})
    assert answers[0] == answers[1] == answers[2]
    reasons = [e["reason"] for e in await gatehouse.events.find(type="login_failed")]
    assert sorted(reasons) == ["disabled", "unknown_account", "wrong_password"]


async def test_passwords_are_checked_in_full_past_72_bytes(api):
    long_password = "Long-pass-" + "y" * 90  # 100 characters
    user = await register(api, password=long_password)
    await login(api, user)
    for prefix in (long_password[:72], long_password[:99]):
        r = await api.post("/auth/auth", {"username": user["username"], "password": prefix})
        assert_error(r, 401, "INVALID_CREDENTIALS")
    r = await api.post("/auth/auth", {"username": user["username"], "password": "z" * 4000})
    assert_error(r, 401, "INVALID_CREDENTIALS")


async def test_missing_login_fields(api):
    r = await api.post("/auth/auth", {"username": "someone"})
    assert_error(r, 400, "INVALID_REQUEST")
    assert r.data["field"] == "password"
    r = await api.post("/auth/auth")
    assert_error(r, 400, "INVALID_REQUEST")


async def test_two_concurrent_logins_make_two_sessions(api, gatehouse):
    user = await register(api)
    r1, r2 = await asyncio.gather(
        *(api.post("/auth/auth", {"username": user["username"], "password": PASSWORD}) for _ in range(2))
    )
    assert r1.status == r2.status == 200
    assert r1.data["data"]["token"] != r2.data["data"]["token"]
    assert await gatehouse.db.sessions.count_documents({"account_id": user["id"]}) == 2


@pytest.mark.parametrize("settings", [{"bcrypt_rounds": 13, "bcrypt_threads": 1}])
async def test_bcrypt_does_not_block_the_ioloop(api, gatehouse, settings):
    """A cheap request is answered while a cost-13 hash (~0.5 s) runs."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    hashing = asyncio.ensure_future(gatehouse.hasher.hash("some-password-1"))
    await asyncio.sleep(0.01)
    r = await api.get("/healthz")
    answered = loop.time() - started
    assert r.status == 200 and not hashing.done(), "healthz had to wait for bcrypt"
    await hashing
    assert loop.time() - started > answered


# ---- the token ------------------------------------------------------------------------


async def test_me_accepts_raw_and_bearer_tokens(api):
    user = await register(api, nickname="Nat")
    token = await login(api, user)
    for header in (token, "Bearer " + token, "bearer  " + token):
        r = await api.get("/auth/me", token=header)
        assert r.status == 200, r.data
        assert r.data["data"]["token"] == token
        assert r.data["data"]["account"]["nickname"] == "Nat"
        assert r.headers["Cache-Control"] == "no-store"
        assert "Etag" not in r.headers  # nothing to revalidate in a no-store answer


@pytest.mark.parametrize("header", [None, "", "not-a-token", "Bearer ", "Bearer x.y.z", "a" * 5000])
async def test_me_without_a_valid_token_is_403(api, header):
    r = await api.get("/auth/me", token=header)
    assert_error(r, 403, "NOT_AUTHENTICATED")


async def test_tokens_in_urls_are_refused(api):
    user = await register(api)
    token = await login(api, user)
    r = await api.get("/auth/me?access_token=" + token)
    assert_error(r, 400, "INVALID_REQUEST")
    r = await api.get("/auth/me?token=" + token, token=token)
    assert_error(r, 400, "INVALID_REQUEST")


async def test_expired_session_is_refused(api, gatehouse):
    user = await register(api)
    token = await login(api, user)
    past = gatehouse.clock() - timedelta(seconds=1)
    await gatehouse.db.sessions.update_many({"account_id": user["id"]}, {"$set": {"expires_at": past}})
    assert_error(await api.get("/auth/me", token=token), 403, "TOKEN_EXPIRED")


async def test_last_active_writes_are_throttled(api, gatehouse):
    user = await register(api)
    token = await login(api, user)
    before = await gatehouse.db.sessions.find_one({"account_id": user["id"]})
    await asyncio.sleep(0.05)
    for _ in range(3):
        assert (await api.get("/auth/me", token=token)).status == 200
    after = await gatehouse.db.sessions.find_one({"account_id": user["id"]})
    assert after["last_active"] == before["last_active"]  # within the 60 s resolution


@pytest.mark.parametrize("settings", [{"last_active_resolution": 0, "session_idle_seconds": 600}])
async def test_last_active_moves_and_extends_the_idle_deadline(api, gatehouse, settings):
    user = await register(api)
    token = await login(api, user)
    before = await gatehouse.db.sessions.find_one({"account_id": user["id"]})
    await asyncio.sleep(1.1)
    r = await api.get("/auth/me", token=token)
    after = await gatehouse.db.sessions.find_one({"account_id": user["id"]})
    assert after["last_active"] > before["last_active"]
    assert after["expires_at"] > before["expires_at"]
    assert r.data["data"]["lastActive"] >= r.data["data"]["created"] + 1


# ---- sessions, logout, password ---------------------------------------------------------


async def test_logout_ends_only_that_session(api, gatehouse):
    user = await register(api)
    t1, t2 = await login(api, user), await login(api, user)
    r = await api.post("/auth/logout", token=t1)
    assert r.status == 200 and r.data["code"] == "SUCCESS"
    assert_error(await api.get("/auth/me", token=t1), 403, "NOT_AUTHENTICATED")
    assert (await api.get("/auth/me", token=t2)).status == 200
    assert (await api.post("/auth/logout", token=t1)).status == 403
    assert [e["type"] for e in await gatehouse.events.find(account_id=user["id"], type="logout")] == ["logout"]


async def test_sessions_list_flags_the_current_one_and_can_revoke(api):
    user = await register(api)
    other = await register(api)
    t1, t2 = await login(api, user), await login(api, user)
    other_token = await login(api, other)
    r = await api.get("/auth/sessions", token=t1, headers={"User-Agent": "TestAgent/1.0"})
    sessions = r.data["data"]["sessions"]
    assert len(sessions) == 2
    assert [s["current"] for s in sessions].count(True) == 1
    me = (await api.get("/auth/me", token=t2)).data["data"]["session"]
    # another account's session id is "not found", and stays alive
    other_sid = (await api.get("/auth/me", token=other_token)).data["data"]["session"]
    assert_error(await api.delete(f"/auth/sessions/{other_sid}", token=t1), 404, "NOT_FOUND")
    assert (await api.get("/auth/me", token=other_token)).status == 200
    r = await api.delete(f"/auth/sessions/{me}", token=t1)
    assert r.status == 200
    assert_error(await api.get("/auth/me", token=t2), 403, "NOT_AUTHENTICATED")
    assert len((await api.get("/auth/sessions", token=t1)).data["data"]["sessions"]) == 1


async def test_revoke_others_keeps_the_current_session(api):
    user = await register(api)
    tokens = [await login(api, user) for _ in range(3)]
    r = await api.post("/auth/sessions/revoke_others", token=tokens[0])
    assert r.data["data"] == {"revoked": 2}
    assert (await api.get("/auth/me", token=tokens[0])).status == 200
    for t in tokens[1:]:
        assert (await api.get("/auth/me", token=t)).status == 403


async def test_change_password_needs_the_current_one_and_kicks_the_others(api):
    user = await register(api)
    t1, t2 = await login(api, user), await login(api, user)
    r = await api.post("/auth/password", {"password": "Wrong-horse-00", "new_password": "New-battery-77"}, token=t1)
    assert_error(r, 401, "INVALID_CREDENTIALS")
    r = await api.post("/auth/password", {"password": PASSWORD, "new_password": "123456789"}, token=t1)
    assert_error(r, 400, "INVALID_REQUEST")
    r = await api.post("/auth/password", {"password": PASSWORD, "new_password": "New-battery-77"}, token=t1)
    assert r.status == 200 and r.data["data"] == {"sessionsEnded": 1}
    assert (await api.get("/auth/me", token=t1)).status == 200
    assert (await api.get("/auth/me", token=t2)).status == 403
    assert (await api.post("/auth/auth", {"username": user["username"], "password": PASSWORD})).status == 401
    await login(api, user, "New-battery-77")


# ---- throttling -----------------------------------------------------------------------


async def test_failed_logins_are_throttled_per_login_name(api):
    user = await register(api)
    ghost = unique("ghost")
    for name in (user["username"], ghost):
        for _ in range(5):
            assert (await api.post("/auth/auth", {"username": name, "password": "Wrong-horse-00"})).status == 401
        r = await api.post("/auth/auth", {"username": name, "password": "Wrong-horse-00"})
        assert_error(r, 429, "RATE_LIMITED")
        assert 0 < int(r.headers["Retry-After"]) <= 901
    # the right password is throttled too while the window lasts (no guessing through it)
    r = await api.post("/auth/auth", {"username": user["email"], "password": PASSWORD})
    assert_error(r, 429, "RATE_LIMITED")
    # another account from the same address is unaffected
    other = await register(api)
    await login(api, other)


@pytest.mark.parametrize("settings", [{"login_failures_per_ip": 3, "login_failures_per_account": 50}])
async def test_failed_logins_are_throttled_per_ip(api, settings):
    for _ in range(3):
        r = await api.post("/auth/auth", {"username": unique("spray"), "password": "Spray-pass-1"})
        assert r.status == 401
    r = await api.post("/auth/auth", {"username": unique("spray"), "password": "Spray-pass-1"})
    assert_error(r, 429, "RATE_LIMITED")


async def test_a_successful_login_resets_the_account_count(api):
    user = await register(api)
    for _ in range(4):
        await api.post("/auth/auth", {"username": user["username"], "password": "Wrong-horse-00"})
    await login(api, user)
    for _ in range(4):
        assert (
            await api.post("/auth/auth", {"username": user["username"], "password": "Wrong-horse-00"})
        ).status == 401
    await login(api, user)


# ---- test_delete ------------------------------------------------------------------------


async def test_test_delete_removes_the_account_and_its_sessions(api, gatehouse):
    user = await register(api)
    token = await login(api, user)
    r = await api.delete("/auth/test_delete", {"username": user["username"]})
    assert r.status == 200 and r.data["code"] == "SUCCESS"
    assert await gatehouse.accounts.find_by_id(user["id"]) is None
    assert (await api.get("/auth/me", token=token)).status == 403
    assert_error(await api.delete("/auth/test_delete", {"username": user["username"]}), 404, "NOT_FOUND")


@pytest.mark.parametrize("settings", [{"test_endpoints": False}])
async def test_test_delete_is_404_unless_enabled(api, gatehouse, settings):
    user = await register(api)
    r = await api.delete("/auth/test_delete", {"username": user["username"]})
    assert_error(r, 404, "NOT_FOUND")
    assert await gatehouse.accounts.find_by_id(user["id"]) is not None


# ---- the first admin --------------------------------------------------------------------


@pytest.mark.parametrize("settings", [{"admin_username": "root-admin", "admin_password": "Adm1n-pass-xyz"}])
async def test_first_admin_is_created_once_from_the_environment(api, gatehouse, settings):
    admin = await gatehouse.accounts.find_by_login("root-admin")
    assert admin.roles == ("admin",)
    assert await gatehouse.ensure_admin("root-admin", "Other-pass-123") is False
    await login(api, {"username": "root-admin", "password": "Adm1n-pass-xyz"})


async def test_security_headers_on_every_answer(api):
    for r in (await api.get("/auth/me"), await api.get("/healthz"), await api.get("/nope")):
        assert r.headers["Cache-Control"] == "no-store"
        assert r.headers["Referrer-Policy"] == "no-referrer"
    assert (await api.get("/healthz")).data == {"status": "ok"}
    assert (await api.get("/readyz")).data == {"status": "ready", "database": True}


async def test_phone_only_user_logs_in_with_phone(api):
    phone = unique_phone()
    r = await api.post("/auth/register", {"username": unique("ph"), "password": PASSWORD, "phone": phone})
    assert r.status == 200
    r = await api.post("/auth/auth", {"username": phone, "password": PASSWORD})
    assert r.status == 200
