"""One-time codes over real SMTP and a real SMS webhook: reset, passwordless login,
verification, and every way a code must refuse to work."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from delivery import SendFailed
from devdb import free_port
from tests.conftest import PASSWORD, assert_error, login, register, unique, unique_phone


async def verified_phone_user(api, sinks) -> dict:
    """A user who proved their phone while logged in (the owner confirming their own
    number: no takeover, the password keeps working)."""
    user = await register(api)
    token = await login(api, user)
    r = await api.post("/auth/otp", {"phone": user["phone"], "purpose": "verify"})
    assert r.status == 200, r.data
    code = await sinks.code_for(user["phone"])
    r = await api.post("/auth/otp/verify", {"phone": user["phone"], "code": code, "purpose": "verify"}, token=token)
    assert r.data["data"] == {"verified": "sms"}
    return user


# ---- password reset (document 003) ----------------------------------------------------


async def test_reset_by_email_code_sets_the_password_and_kicks_every_session(sinks, api, gatehouse):
    user = await register(api)
    tokens = [await login(api, user) for _ in range(2)]
    r = await api.post("/auth/reset", {"username": user["username"]})
    assert r.status == 200 and r.data["data"] == "Email Sent"
    mail = (await sinks.wait_for(user["email"]))[-1]
    assert mail["sender"] == "gatehouse@example.test" and "reset your password" in mail["subject"]
    code = await sinks.code_for(user["email"])
    assert code in mail["html"] and len(code) == 6
    r = await api.post("/auth/reset", {"username": user["username"], "password": "Brand-new-pass-7", "code": code})
    assert r.status == 200 and r.data["data"] == "Success"
    for token in tokens:
        assert (await api.get("/auth/me", token=token)).status == 403
    assert (await api.post("/auth/auth", {"username": user["username"], "password": PASSWORD})).status == 401
    await login(api, user, "Brand-new-pass-7")
    # single use
    r = await api.post("/auth/reset", {"username": user["username"], "password": "Other-new-pass-8", "code": code})
    assert_error(r, 400, "INVALID_CODE")
    types = [e["type"] for e in await gatehouse.events.find(account_id=user["id"])]
    assert "code_requested" in types and "code_sent" in types and "password_reset" in types


async def test_reset_for_an_unknown_account_answers_the_same_and_sends_nothing(sinks, api):
    r = await api.post("/auth/reset", {"username": unique("ghost")})
    assert r.status == 200 and r.data["data"] == "Email Sent"
    await asyncio.sleep(0.2)
    assert sinks.messages == []


async def test_reset_goes_by_sms_when_the_account_has_no_email(sinks, api):
    phone = unique_phone()
    r = await api.post("/auth/register", {"username": unique("ph"), "password": PASSWORD, "phone": phone})
    assert r.status == 200
    await api.post("/auth/reset", {"username": phone})
    code = await sinks.code_for(phone)
    r = await api.post("/auth/reset", {"username": phone, "password": "Brand-new-pass-7", "code": int(code)})
    assert r.status == 200 and r.data["data"] == "Success"
    # The code, then the notice that the password changed (no code in it).
    assert [m["purpose"] for m in await sinks.wait_for(phone, 2)] == ["reset", "notice"]
    assert "password was reset" in sinks.to(phone)[-1]["body"]


async def test_a_code_sent_as_a_json_number_keeps_its_leading_zeros(sinks, api, gatehouse, monkeypatch):
    monkeypatch.setattr(gatehouse.codes, "new_code", lambda: "004217")
    user = await register(api)
    await api.post("/auth/reset", {"username": user["username"]})
    assert await sinks.code_for(user["email"]) == "004217"
    r = await api.post("/auth/reset", {"username": user["username"], "password": "Brand-new-pass-7", "code": 4217})
    assert r.status == 200 and r.data["data"] == "Success"


async def test_reset_with_a_weak_password_keeps_the_code(sinks, api):
    user = await register(api)
    await api.post("/auth/reset", {"username": user["username"]})
    code = await sinks.code_for(user["email"])
    r = await api.post("/auth/reset", {"username": user["username"], "password": "12345678", "code": code})
    assert_error(r, 400, "INVALID_REQUEST")
    r = await api.post("/auth/reset", {"username": user["username"], "password": "Brand-new-pass-7", "code": code})
    assert r.status == 200


async def test_reset_code_without_password_is_400(sinks, api):
    user = await register(api)
    r = await api.post("/auth/reset", {"username": user["username"], "code": "123456"})
    assert_error(r, 400, "INVALID_REQUEST")


async def test_codes_are_stored_only_as_keyed_hashes(sinks, api, gatehouse):
    user = await register(api)
    await api.post("/auth/reset", {"username": user["username"]})
    code = await sinks.code_for(user["email"])
    doc = await gatehouse.db.codes.find_one({})
    assert code not in str(doc) and len(doc["code_hash"]) == 64
    assert doc["expires_at"] - doc["sent_at"] == timedelta(seconds=300)


# ---- what a code refuses ----------------------------------------------------------------


async def test_five_wrong_tries_kill_the_code(sinks, api):
    user = await register(api)
    await api.post("/auth/reset", {"username": user["username"]})
    code = await sinks.code_for(user["email"])
    wrong = str((int(code) + 1) % 10**6).zfill(6)
    for _ in range(5):
        r = await api.post("/auth/reset", {"username": user["username"], "password": "Brand-new-pass-7", "code": wrong})
        assert_error(r, 400, "INVALID_CODE")
    r = await api.post("/auth/reset", {"username": user["username"], "password": "Brand-new-pass-7", "code": code})
    assert_error(r, 400, "INVALID_CODE")
    await login(api, user)


async def test_an_expired_code_fails(sinks, api, gatehouse):
    user = await register(api)
    await api.post("/auth/reset", {"username": user["username"]})
    code = await sinks.code_for(user["email"])
    await gatehouse.db.codes.update_many({}, {"$set": {"expires_at": gatehouse.clock() - timedelta(seconds=1)}})
    r = await api.post("/auth/reset", {"username": user["username"], "password": "Brand-new-pass-7", "code": code})
    assert_error(r, 400, "INVALID_CODE")


@pytest.mark.parametrize("settings", [{"code_cooldown": 0}])
async def test_a_new_code_replaces_the_old_one(sinks, api, settings):
    user = await register(api)
    await api.post("/auth/reset", {"username": user["username"]})
    first = await sinks.code_for(user["email"])
    sinks.messages.clear()
    await api.post("/auth/reset", {"username": user["username"]})
    second = await sinks.code_for(user["email"])
    if first != second:
        r = await api.post("/auth/reset", {"username": user["username"], "password": "Brand-new-pass-7", "code": first})
        assert_error(r, 400, "INVALID_CODE")
    r = await api.post("/auth/reset", {"username": user["username"], "password": "Brand-new-pass-7", "code": second})
    assert r.status == 200


async def test_resend_inside_the_cooldown_is_429_with_retry_after(sinks, api):
    user = await register(api)
    assert (await api.post("/auth/reset", {"username": user["username"]})).status == 200
    r = await api.post("/auth/reset", {"username": user["username"]})
    assert_error(r, 429, "RATE_LIMITED")
    assert 50 <= int(r.headers["Retry-After"]) <= 61
    assert len(sinks.to(user["email"])) == 1


async def test_concurrent_requests_pass_the_cooldown_once(sinks, api):
    user = await verified_phone_user(api, sinks)
    sinks.messages.clear()
    results = await asyncio.gather(
        *(api.post("/auth/otp", {"phone": user["phone"], "purpose": "login"}) for _ in range(6))
    )
    assert sorted(r.status for r in results) == [200] + [429] * 5
    await asyncio.sleep(0.2)
    assert len(sinks.to(user["phone"])) == 1


@pytest.mark.parametrize("settings", [{"code_cooldown": 0, "code_daily_per_phone": 2}])
async def test_daily_cap_per_phone(sinks, api, settings):
    user = await verified_phone_user(api, sinks)  # the first code to this phone
    assert (await api.post("/auth/otp", {"phone": user["phone"], "purpose": "login"})).status == 200
    r = await api.post("/auth/otp", {"phone": user["phone"], "purpose": "login"})
    assert_error(r, 429, "RATE_LIMITED")
    assert int(r.headers["Retry-After"]) > 0


@pytest.mark.parametrize("settings", [{"code_daily_per_ip": 2}])
async def test_daily_cap_per_ip(sinks, api, settings):
    users = [await register(api) for _ in range(3)]
    for user in users[:2]:
        assert (await api.post("/auth/reset", {"username": user["username"]})).status == 200
    r = await api.post("/auth/reset", {"username": users[2]["username"]})
    assert_error(r, 429, "RATE_LIMITED")


async def test_ten_parallel_uses_of_one_code_succeed_once(sinks, api, gatehouse):
    user = await verified_phone_user(api, sinks)
    sinks.messages.clear()
    before = await gatehouse.db.sessions.count_documents({"account_id": user["id"]})
    await api.post("/auth/otp", {"phone": user["phone"], "purpose": "login"})
    code = await sinks.code_for(user["phone"])
    body = {"phone": user["phone"], "code": code, "purpose": "login"}
    results = await asyncio.gather(*(api.post("/auth/otp/verify", body) for _ in range(10)))
    assert sorted(r.status for r in results) == [200] + [400] * 9
    assert await gatehouse.db.sessions.count_documents({"account_id": user["id"]}) == before + 1


@pytest.mark.parametrize("settings", [{"code_verify_failures_per_ip_hour": 3}])
async def test_wrong_codes_are_capped_per_ip_across_destinations(sinks, api, settings):
    for _ in range(3):
        r = await api.post("/auth/otp/verify", {"phone": unique_phone(), "code": "000000", "purpose": "login"})
        assert r.status == 400
    r = await api.post("/auth/otp/verify", {"phone": unique_phone(), "code": "000000", "purpose": "login"})
    assert_error(r, 429, "RATE_LIMITED")


# ---- passwordless login and verification -----------------------------------------------


async def test_login_code_only_goes_to_a_verified_phone(sinks, api):
    user = await register(api)
    r = await api.post("/auth/otp", {"phone": user["phone"], "purpose": "login"})
    assert r.status == 200 and r.data["data"]["sent"] is True  # same answer ...
    await asyncio.sleep(0.2)
    assert sinks.to(user["phone"]) == []  # ... but nothing sent to an unverified number


async def test_passwordless_login_by_sms(sinks, api, gatehouse):
    user = await verified_phone_user(api, sinks)
    account = await gatehouse.accounts.find_by_id(user["id"])
    assert account.phone_verified is True and account.email_verified is False
    sinks.messages.clear()
    r = await api.post("/auth/otp", {"phone": user["phone"], "purpose": "login"})
    assert r.data["data"] == {"sent": True, "channel": "sms", "expiresIn": 300}
    code = await sinks.code_for(user["phone"])
    r = await api.post("/auth/otp/verify", {"phone": user["phone"], "code": code, "purpose": "login"})
    assert r.status == 200, r.data
    token = r.data["data"]["token"]
    me = await api.get("/auth/me", token=token)
    assert me.data["data"]["account"]["username"] == user["username"]


async def test_email_verification_and_login(sinks, api, gatehouse):
    user = await register(api)
    await api.post("/auth/otp", {"email": user["email"].upper(), "purpose": "verify"})
    code = await sinks.code_for(user["email"])
    r = await api.post("/auth/otp/verify", {"email": user["email"], "code": code, "purpose": "verify"})
    assert r.data["data"] == {"verified": "email"}
    assert (await gatehouse.accounts.find_by_id(user["id"])).email_verified is True


async def test_a_verify_code_cannot_log_in_and_codes_are_bound_to_their_phone(sinks, api):
    user = await verified_phone_user(api, sinks)
    other = await verified_phone_user(api, sinks)
    sinks.messages.clear()
    await api.post("/auth/otp", {"phone": user["phone"], "purpose": "verify"})
    code = await sinks.code_for(user["phone"])
    r = await api.post("/auth/otp/verify", {"phone": user["phone"], "code": code, "purpose": "login"})
    assert_error(r, 400, "INVALID_CODE")
    r = await api.post("/auth/otp/verify", {"phone": other["phone"], "code": code, "purpose": "verify"})
    assert_error(r, 400, "INVALID_CODE")


@pytest.mark.parametrize(
    "body",
    [
        {"purpose": "login"},
        {"phone": "+14155550100", "email": "a@b.example", "purpose": "login"},
        {"phone": "+14155550100", "purpose": "steal"},
        {"phone": "not a phone", "purpose": "login"},
        {"phone": {"$ne": None}, "purpose": "login"},
        {"phone": "+19005550123", "purpose": "verify"},  # premium rate
    ],
)
async def test_bad_code_requests_are_400(sinks, api, gatehouse, body):
    # A premium-rate number is refused for what it is (no account can hold one: see
    # test_hardening.py::test_premium_rate_numbers_cannot_be_registered).
    r = await api.post("/auth/otp", body)
    assert_error(r, 400, "INVALID_REQUEST")
    assert sinks.messages == []


# ---- delivery -------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [{"sms_webhook_token": "hook-secret-123"}])
async def test_sms_webhook_carries_its_bearer_secret(sinks, api, settings):
    await verified_phone_user(api, sinks)
    assert sinks.sms_auth[-1] == "Bearer hook-secret-123"


async def test_a_failed_delivery_is_retried_then_recorded_and_the_answer_does_not_change(sinks, api, gatehouse):
    """Delivery is off the request path: a provider answering 500 changes nothing in the
    answer (it would tell who has an account); the queue retries with backoff and then
    records `code_failed` for the operators."""
    gatehouse.queue.max_attempts, gatehouse.queue.backoff = 3, 0.05
    user = await verified_phone_user(api, sinks)
    sinks.sms_status = 500
    r = await api.post("/auth/otp", {"phone": user["phone"], "purpose": "login"})
    assert r.status == 200 and r.data["data"]["sent"] is True
    for _ in range(200):
        failed = await gatehouse.events.find(type="code_failed")
        if failed:
            break
        await asyncio.sleep(0.05)
    assert failed and failed[0]["outcome"] == "failed" and failed[0]["account_id"] == user["id"]
    job = await gatehouse.db.jobs.find_one({"state": "failed"})
    assert job["attempts"] == 3
    # Once the provider is back (and the cooldown over), a new request gets through.
    sinks.sms_status = 200
    sinks.messages.clear()
    await gatehouse.limits.release_cooldown(f"code:login:{user['phone']}")
    assert (await api.post("/auth/otp", {"phone": user["phone"], "purpose": "login"})).status == 200
    code = await sinks.code_for(user["phone"])
    r = await api.post("/auth/otp/verify", {"phone": user["phone"], "code": code, "purpose": "login"})
    assert r.status == 200 and r.data["data"]["token"]


@pytest.mark.parametrize("settings", [{"smtp_url": f"smtp://127.0.0.1:{free_port()}", "delivery_timeout": 2.0}])
async def test_smtp_down_answers_as_usual_and_the_queue_records_the_failure(sinks, api, gatehouse, settings):
    gatehouse.queue.max_attempts, gatehouse.queue.backoff = 2, 0.05
    user = await register(api)
    r = await api.post("/auth/reset", {"username": user["username"]})
    assert r.status == 200 and r.data["data"] == "Email Sent"
    for _ in range(200):
        if await gatehouse.events.find(type="code_failed"):
            break
        await asyncio.sleep(0.05)
    assert await gatehouse.events.find(type="code_failed")


@pytest.mark.parametrize("settings", [{"sms_webhook_url": None, "smtp_url": None}])
async def test_development_without_senders_uses_the_outbox(api, gatehouse, settings):
    user = await register(api)
    assert (await api.post("/auth/reset", {"username": user["username"]})).status == 200
    for _ in range(100):
        message = await gatehouse.db.outbox.find_one({"to": user["email"]})
        if message:
            break
        await asyncio.sleep(0.05)
    assert message["purpose"] == "reset" and message["channel"] == "email"


async def test_production_never_logs_a_code(sinks, gatehouse, caplog):
    from dataclasses import replace

    gatehouse.delivery.production = True
    caplog.set_level(logging.DEBUG)
    message = gatehouse.delivery.compose("sms", "+14155550111", "login", "482913", 5)
    await gatehouse.delivery.send(message)
    assert sinks.to("+14155550111")
    assert "482913" not in caplog.text and "0111" not in caplog.text
    gatehouse.delivery.config = replace(gatehouse.config.delivery, sms_webhook_url=None)
    with pytest.raises(SendFailed):
        await gatehouse.delivery.send(message)
