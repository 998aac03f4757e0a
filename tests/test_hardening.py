"""Issue 14: every limit holds against a parallel attacker, the code flows reveal
nothing, credential changes beat racing logins, and proving a phone or e-mail takes an
account over from an unproven registrant (../shared/security-checklist.md 54-61).

Bursts are bounded (20-50 requests, loopback only). Counts of evaluated attempts are
read from what the server did — answers, audit events, the code's own attempt counter —
not from timing."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections import Counter

import pytest

from models.common import Context
from models.errors import InvalidCredentials
from models.values import Assurance
from tests.conftest import PASSWORD, assert_error, failpoint, login, register, unique, unique_phone
from tests.test_console import Console

WRONG = "Wrong-horse-00"
NEW = "Brand-new-pass-7"


def statuses(results) -> Counter:
    return Counter(r.status for r in results)


async def burst(n: int, make):
    """`n` requests at once (each `make(i)` returns an awaitable)."""
    return await asyncio.gather(*(make(i) for i in range(n)))


async def failures(gatehouse, **query) -> int:
    return await gatehouse.db.events.count_documents({"type": "login_failed", **query})


# ---- limits reserve before they act ------------------------------------------------------


@pytest.mark.parametrize("settings", [{"login_failures_per_account": 5, "login_failures_per_ip": 1000}])
async def test_fifty_parallel_wrong_passwords_get_five_checks(settings, api, gatehouse):
    user = await register(api)
    spellings = [user["username"], user["email"], user["phone"]]
    results = await burst(50, lambda i: api.post("/auth/auth", {"username": spellings[i % 3], "password": WRONG}))
    assert statuses(results) == {401: 5, 429: 45}
    assert await failures(gatehouse, account_id=user["id"]) == 5
    # The fifth failure locked the account: even the right password waits.
    r = await api.post("/auth/auth", {"username": user["username"], "password": PASSWORD})
    assert_error(r, 429, "RATE_LIMITED")


@pytest.mark.parametrize("settings", [{"login_failures_per_account": 100, "login_failures_per_ip": 8}])
async def test_fifty_parallel_guesses_across_accounts_get_the_ip_budget(settings, api, gatehouse):
    results = await burst(50, lambda i: api.post("/auth/auth", {"username": unique("spray"), "password": WRONG}))
    assert statuses(results) == {401: 8, 429: 42}
    assert await failures(gatehouse) == 8


@pytest.mark.parametrize("settings", [{"login_failures_per_account": 100, "login_failures_per_ip": 8}])
async def test_a_burst_straddling_the_window_boundary_gets_the_ip_budget_once(settings, api, gatehouse, clock):
    """Fixed windows would give a burst timed across their boundary (Retry-After says
    when) the limit twice; the slot that reaches it fills the next window too."""
    window = gatehouse.config.throttle.login_failure_window
    clock.advance(window - clock().timestamp() % window - 2)  # two seconds before a boundary

    def guess(i: int):
        return api.post("/auth/auth", {"username": unique("spray"), "password": WRONG})

    before = await burst(25, guess)
    clock.advance(3)  # the next window
    after = await burst(25, guess)
    assert statuses(before + after) == {401: 8, 429: 42}
    r = after[-1] if after[-1].status == 429 else next(r for r in after if r.status == 429)
    assert int(r.headers["Retry-After"]) > window / 2  # until the end of the filled window


# The per-account failure limit also holds a slot per check in flight: raised here, so
# the budget under test is the only one that binds.
@pytest.mark.parametrize("settings", [{"logins_per_ip_hour": 6, "login_failures_per_account": 100}])
async def test_successful_logins_per_ip_have_a_budget(settings, api):
    user = await register(api)
    results = await burst(20, lambda i: api.post("/auth/auth", {"username": user["username"], "password": PASSWORD}))
    assert statuses(results) == {200: 6, 429: 14}


@pytest.mark.parametrize("settings", [{"signups_per_ip_hour": 10}])
async def test_sign_ups_per_ip_are_reserved_before_the_hash(settings, api, gatehouse):
    def signup(i: int):
        return api.post("/auth/register", {"username": unique("burst"), "password": PASSWORD})

    results = await burst(30, signup)
    assert statuses(results) == {200: 10, 429: 20}
    assert await gatehouse.db.accounts.count_documents({}) == 10
    # Bad input is refused before it costs a slot, and costs none.
    r = await api.post("/auth/register", {"username": unique("weak"), "password": "short"})
    assert_error(r, 400, "INVALID_REQUEST")


async def _wrong_via_password_change(api, user, token, _console):
    return await api.post("/auth/password", {"password": WRONG, "new_password": NEW}, token=token)


async def _wrong_via_revoke_others(api, user, token, _console):
    return await api.post("/auth/sessions/revoke_others", {"password": WRONG}, token=token)


async def _wrong_via_simple_disable(api, user, token, _console):
    return await api.post("/auth/disable", {"username": user["username"], "password": WRONG}, token=token)


async def _wrong_via_simple_reset(api, user, token, _console):
    body = {"username": user["username"], "password": WRONG, "new_password": NEW}
    return await api.post("/auth/reset", body, token=token)


async def _wrong_via_console(api, user, token, console):
    return await console.login(user["username"], WRONG)


@pytest.mark.parametrize(
    "door",
    [
        _wrong_via_password_change,
        _wrong_via_revoke_others,
        _wrong_via_simple_disable,
        _wrong_via_simple_reset,
        _wrong_via_console,
    ],
)
@pytest.mark.parametrize("settings", [{"login_failures_per_account": 4, "fresh_login_seconds": 60}])
async def test_every_door_that_checks_a_password_spends_the_login_budget(
    settings, door, api, base_url, clock, gatehouse
):
    user = await register(api)
    token = await login(api, user)
    clock.advance(120)  # past the fresh-login window: revoke_others wants the password
    console = Console(base_url)
    try:
        if door is _wrong_via_console:  # a browser form: one at a time, with its XSRF token
            results = [await door(api, user, token, console) for _ in range(6)]
            codes = Counter(r.status_code for r in results)
        else:
            codes = statuses(await burst(20, lambda i: door(api, user, token, console)))
    finally:
        await console.http.aclose()
    refused = codes[429]
    checks = await failures(gatehouse, account_id=user["id"])
    assert sum(codes.values()) - refused == 4, (codes, checks)  # four checks, whatever the door
    # The budget is the login's: the account is now locked for logins too.
    r = await api.post("/auth/auth", {"username": user["username"], "password": PASSWORD})
    assert_error(r, 429, "RATE_LIMITED")


@pytest.mark.parametrize(
    "settings",
    [
        {
            "code_max_attempts": 5,
            "code_verify_failures_per_destination_hour": 1000,
            "code_verify_failures_per_ip_hour": 1000,
        }
    ],
)
async def test_a_burst_of_wrong_codes_gets_five_comparisons_and_kills_the_code(settings, sinks, api, gatehouse):
    user = await register(api)
    await api.post("/auth/reset", {"username": user["username"]})
    code = await sinks.code_for(user["email"])
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    body = {"username": user["username"], "password": NEW, "code": wrong}
    results = await burst(50, lambda i: api.post("/auth/reset", body))
    assert statuses(results) == {400: 50}
    record = await gatehouse.db.codes.find_one({"purpose": "reset"})
    assert record["attempts"] == 5  # compared five times, not fifty
    r = await api.post("/auth/reset", {**body, "code": code})  # the right code, too late
    assert_error(r, 400, "INVALID_CODE")
    assert (await api.post("/auth/auth", {"username": user["username"], "password": PASSWORD})).status == 200


@pytest.mark.parametrize("settings", [{"code_verify_failures_per_destination_hour": 10, "code_max_attempts": 20}])
async def test_wrong_codes_per_destination_are_reserved_before_comparing(settings, sinks, api):
    phone = unique_phone()
    body = {"phone": phone, "code": "000000", "purpose": "verify"}
    results = await burst(40, lambda i: api.post("/auth/otp/verify", body))
    assert statuses(results) == {400: 10, 429: 30}


@pytest.mark.parametrize("settings", [{"code_verify_failures_per_ip_hour": 7}])
async def test_wrong_codes_per_ip_are_reserved_before_comparing(settings, api):
    results = await burst(
        30, lambda i: api.post("/auth/otp/verify", {"phone": unique_phone(), "code": "000000", "purpose": "login"})
    )
    assert statuses(results) == {400: 7, 429: 23}


async def test_twenty_parallel_code_requests_send_one_code(sinks, api, gatehouse):
    user = await register(api)
    results = await burst(20, lambda i: api.post("/auth/otp", {"phone": user["phone"], "purpose": "verify"}))
    assert statuses(results) == {200: 1, 429: 19}
    await sinks.wait_for(user["phone"])
    await asyncio.sleep(0.3)
    assert len(sinks.to(user["phone"])) == 1


@pytest.mark.parametrize("settings", [{"code_hourly_per_number_block": 5, "code_cooldown": 0}])
async def test_the_number_block_cap_holds_against_a_burst(settings, sinks, api, gatehouse):
    base = unique_phone()[:-2]
    results = await burst(30, lambda i: api.post("/auth/otp", {"phone": f"{base}{i:02d}", "purpose": "verify"}))
    assert statuses(results) == {200: 5, 429: 25}
    assert await gatehouse.db.codes.count_documents({}) == 5


@pytest.mark.parametrize("settings", [{"code_daily_per_ip": 6, "code_cooldown": 0}])
async def test_the_daily_ip_cap_holds_against_a_burst(settings, api):
    results = await burst(
        25, lambda i: api.post("/auth/otp", {"email": f"{unique()}@example.test", "purpose": "verify"})
    )
    assert statuses(results) == {200: 6, 429: 19}


# ---- the counter store failing fails closed ------------------------------------------------


async def test_a_failing_counter_store_fails_closed(api, gatehouse, mongo_uri):
    user = await register(api)
    before = await gatehouse.db.sessions.count_documents({})
    async with failpoint(mongo_uri, ["findAndModify"], errorCode=2):
        r = await api.post("/auth/auth", {"username": user["username"], "password": PASSWORD})
        assert_error(r, 503, "UNAVAILABLE")
        r = await api.post("/auth/otp/verify", {"phone": user["phone"], "code": "000000", "purpose": "verify"})
        assert_error(r, 503, "UNAVAILABLE")
        r = await api.post("/auth/reset", {"username": user["username"]})
        assert_error(r, 503, "UNAVAILABLE")
    assert await gatehouse.db.sessions.count_documents({}) == before
    assert (await api.post("/auth/auth", {"username": user["username"], "password": PASSWORD})).status == 200


# ---- the code flows reveal nothing ----------------------------------------------------------


def without_time(r) -> tuple:
    """An answer as a client compares it: status, body (less its clock) and Retry-After."""
    body = dict(r.data)
    body.pop("time", None)
    return r.status, json.dumps(body, sort_keys=True), r.headers.get("Retry-After")


async def test_reset_answers_known_and_unknown_alike_in_body_cooldown_and_codes(sinks, api):
    user = await register(api)
    ghost = unique("ghost")
    for name in (user["username"], ghost):  # first request, then one inside the cooldown
        assert without_time(await api.post("/auth/reset", {"username": name}))[:2] == (
            200,
            without_time(await api.post("/auth/reset", {"username": unique("other")}))[1],
        )
    again = [without_time(await api.post("/auth/reset", {"username": n})) for n in (user["username"], ghost)]
    assert again[0][0] == again[1][0] == 429 and again[0][1] == again[1][1]
    assert abs(int(again[0][2]) - int(again[1][2])) <= 1
    # Wrong code, no code pending, no such account: one answer. A weak password (even the
    # victim's own phone) is not looked at before the code is proven.
    answers = [
        await api.post("/auth/reset", {"username": user["username"], "password": NEW, "code": "123456"}),
        await api.post("/auth/reset", {"username": ghost, "password": NEW, "code": "123456"}),
        await api.post("/auth/reset", {"username": unique("never"), "password": NEW, "code": "123456"}),
        await api.post("/auth/reset", {"username": user["username"], "password": user["phone"], "code": "123456"}),
        await api.post("/auth/reset", {"username": ghost, "password": "x", "code": "123456"}),
    ]
    assert len({without_time(r) for r in answers}) == 1, [r.data for r in answers]
    assert answers[0].status == 400 and answers[0].data["code"] == "INVALID_CODE"


async def test_otp_answers_known_and_unknown_destinations_alike(sinks, api):
    user = await register(api)
    stranger = unique_phone()
    first = [await api.post("/auth/otp", {"phone": p, "purpose": "verify"}) for p in (user["phone"], stranger)]
    assert without_time(first[0]) == without_time(first[1])
    again = [await api.post("/auth/otp", {"phone": p, "purpose": "verify"}) for p in (user["phone"], stranger)]
    assert again[0].status == again[1].status == 429
    assert again[0].data["message"] == again[1].data["message"]
    assert abs(int(again[0].headers["Retry-After"]) - int(again[1].headers["Retry-After"])) <= 1
    verifies = [
        await api.post("/auth/otp/verify", {"phone": p, "code": "000000", "purpose": "verify"})
        for p in (user["phone"], stranger, unique_phone())  # wrong, pending-but-unknown, never requested
    ]
    assert len({without_time(r) for r in verifies}) == 1, [r.data for r in verifies]


QUIET = {
    "code_cooldown": 0,
    "code_daily_per_phone": 10**4,
    "code_daily_per_ip": 10**5,
    "code_hourly_per_number_block": 10**4,
}


# One settings dict per case: the `sinks` fixture writes its addresses into it.
@pytest.mark.parametrize("settings, flow", [(dict(QUIET), "reset"), (dict(QUIET), "otp")])
async def test_known_and_unknown_code_requests_take_the_same_time(settings, flow, sinks, api):
    user = await register(api)
    if flow == "reset":
        path, bodies = "/auth/reset", [{"username": user["username"]}, {"username": unique("ghost")}]
    else:
        stranger = unique_phone()
        path, bodies = (
            "/auth/otp",
            [{"phone": user["phone"], "purpose": "verify"}, {"phone": stranger, "purpose": "verify"}],
        )
    samples: list[list[float]] = [[], []]
    for _ in range(5):  # warm-up
        for body in bodies:
            await api.post(path, body)
    for _ in range(40):
        for which in random.sample([0, 1], 2):
            started = time.perf_counter()
            r = await api.post(path, bodies[which])
            samples[which].append(time.perf_counter() - started)
            assert r.status == 200
            # Let the worker's send (for the known one) finish, so it does not land on
            # whichever request comes next: that is the request path being measured.
            await asyncio.sleep(0.03)
    known, unknown = (statistics.median(s) for s in samples)
    # Delivery is off the request path, and an unknown destination gets a blank job: the
    # medians agree to a fraction of a millisecond here; a synchronous send costs several.
    assert abs(known - unknown) < max(0.003, 0.2 * unknown), (known, unknown)


# ---- a credential change beats racing logins ----------------------------------------------


async def _race(api, user, change, n_logins: int = 8, path: str = "/auth/auth"):
    """Start `n_logins` logins with the current password and the change at once; return
    the tokens the logins got."""

    async def attempt(i: int):
        await asyncio.sleep(random.random() * 0.01)
        return await api.post(path, {"username": user["username"], "password": PASSWORD})

    results = await asyncio.gather(*(attempt(i) for i in range(n_logins)), change())
    tokens = []
    for r in results[:-1]:
        if r.status == 200:
            data = r.data["data"]
            tokens.append(data.get("token") or data.get("access_token"))
    return tokens


# Every login in flight holds a slot under the per-account failure limit until its check
# ends, so the limit is raised here: the race is the subject, not the limit.
RACE = {"bcrypt_rounds": 7, "logins_per_ip_hour": 10_000, "login_failures_per_account": 100}


@pytest.mark.parametrize("settings", [dict(RACE)])
async def test_no_session_made_with_the_old_password_survives_a_change(settings, api):
    survivors = raced = 0
    for _ in range(10):
        user = await register(api)
        me = await login(api, user)

        async def change(me=me):
            await asyncio.sleep(0.004)
            r = await api.post("/auth/password", {"password": PASSWORD, "new_password": NEW}, token=me)
            assert r.status == 200, r.data
            return r

        tokens = await _race(api, user, change)
        raced += len(tokens)
        for token in tokens:
            survivors += (await api.get("/auth/me", token=token)).status == 200
        assert (await api.get("/auth/me", token=me)).status == 200  # the changer keeps theirs
    assert survivors == 0


@pytest.mark.parametrize("settings", [dict(RACE)])
async def test_no_jwt_session_survives_a_disable_and_enable(settings, api, admin):
    survivors = 0
    for _ in range(10):
        user = await register(api)

        async def disable(user=user):
            await asyncio.sleep(0.004)
            r = await api.post(f"/admin/api/accounts/{user['id']}/disable", token=admin["token"])
            assert r.status == 200, r.data
            return r

        tokens = await _race(api, user, disable, path="/auth/token")
        await api.post(f"/admin/api/accounts/{user['id']}/enable", token=admin["token"])
        for token in tokens:
            survivors += (await api.get("/auth/me", token=token)).status == 200
    assert survivors == 0


async def test_a_login_checked_before_a_change_is_refused_and_leaves_no_session(api, gatehouse):
    """The deterministic core of the race: a login whose check ran before the change and
    whose session is written after it fails like a wrong password, and its session is
    ended at once (none is left to show as live)."""
    user = await register(api)
    account = await gatehouse.accounts.find_by_id(user["id"])  # read before the change
    await gatehouse.accounts.set_password(user["id"], NEW)  # the change lands
    with pytest.raises(InvalidCredentials):
        await gatehouse.auth.opaque_login(account, Context(ip="127.0.0.1"))
    assert await gatehouse.db.sessions.count_documents({"account_id": user["id"], "revoked_at": None}) == 0


async def test_a_session_with_an_old_epoch_is_refused_everywhere(api, gatehouse):
    """Defence in depth: a session carrying an old epoch (written by a process that died
    before it could check) is refused by every way a session is used."""
    user = await register(api)
    account = await gatehouse.accounts.find_by_id(user["id"])
    await gatehouse.accounts.set_password(user["id"], NEW)
    ctx = Context(ip="127.0.0.1")
    lifetimes = {"idle_seconds": 3600, "max_seconds": 7200, "assurance": Assurance.first("password")}
    _, opaque = await gatehouse.sessions.create(account, "opaque", ctx, **lifetimes)
    session, _ = await gatehouse.sessions.create(account, "jwt", ctx, **lifetimes)
    pair = await gatehouse.tokens.issue_pair(account, session, "native")
    assert (await api.get("/auth/me", token=opaque)).status == 403
    assert (await api.get("/auth/me", token=pair.access)).status == 403
    assert_error(await api.post("/auth/token/refresh", {"refresh_token": pair.refresh}), 401, "INVALID_TOKEN")
    new_token = await login(api, user, NEW)
    listed = (await api.get("/auth/sessions", token=new_token)).data["data"]["sessions"]
    assert session.id not in {s["id"] for s in listed}


# ---- proving a phone or e-mail takes the account over from an unproven registrant ------------


async def test_the_owner_proving_their_email_evicts_a_squatter(sinks, api, gatehouse):
    victim_email = f"{unique('victim')}@example.test"
    squatter_phone = unique_phone()
    # The squatter registers the victim's address with their own password and phone.
    squatter = await register(api, email=victim_email, phone=squatter_phone)
    opaque = await login(api, squatter)
    pair = (await api.post("/auth/token", {"username": victim_email, "password": PASSWORD})).data["data"]
    # The victim proves the address by code (not logged in).
    assert (await api.post("/auth/otp", {"email": victim_email, "purpose": "verify"})).status == 200
    code = await sinks.code_for(victim_email)
    r = await api.post("/auth/otp/verify", {"email": victim_email, "code": code, "purpose": "verify"})
    assert r.status == 200 and r.data["data"] == {"verified": "email"}
    # Every session of the squatter ends; their password no longer works by any name.
    assert (await api.get("/auth/me", token=opaque)).status == 403
    assert (await api.get("/auth/me", token=pair["access_token"])).status == 403
    r = await api.post("/auth/token/refresh", {"refresh_token": pair["refresh_token"]})
    assert r.status == 401
    for name in (squatter["username"], victim_email, squatter_phone):
        assert (await api.post("/auth/auth", {"username": name, "password": PASSWORD})).status == 401
    # The squatter's unproven phone buys nothing: a reset asked for by it goes to the
    # proven address, and proving the phone now only takes it off the victim's account.
    sinks.messages.clear()
    await api.post("/auth/reset", {"username": squatter_phone})
    await sinks.wait_for(victim_email)
    assert sinks.to(squatter_phone) == []
    await gatehouse.limits.release_cooldown(f"code:verify_phone:{squatter_phone}")
    await api.post("/auth/otp", {"phone": squatter_phone, "purpose": "verify"})
    code = await sinks.code_for(squatter_phone)
    r = await api.post("/auth/otp/verify", {"phone": squatter_phone, "code": code, "purpose": "verify"})
    assert r.status == 200
    account = await gatehouse.accounts.find_by_id(squatter["id"])
    assert account.phone is None and account.email_verified is True
    # The owner sets a password with a reset and is in.
    await gatehouse.limits.release_cooldown(f"code:reset:phone={squatter_phone}")
    sinks.messages.clear()
    await api.post("/auth/reset", {"username": victim_email})
    code = await sinks.code_for(victim_email)
    r = await api.post("/auth/reset", {"username": victim_email, "password": NEW, "code": code})
    assert r.status == 200
    assert (await api.post("/auth/auth", {"username": victim_email, "password": NEW})).status == 200
    events = [e["type"] for e in await gatehouse.events.find(account_id=squatter["id"])]
    assert "ownership_proven" in events and "contact_detached" in events


async def test_a_proof_never_evicts_an_owner_who_proved_the_other_contact(sinks, api, gatehouse):
    """A recycled or mistyped number on an account whose owner proved the e-mail: whoever
    holds the number proves it, and gets the number back — not the account."""
    owner = await register(api)
    token = await login(api, owner)
    await api.post("/auth/otp", {"email": owner["email"], "purpose": "verify"})
    code = await sinks.code_for(owner["email"])
    await api.post("/auth/otp/verify", {"email": owner["email"], "code": code, "purpose": "verify"}, token=token)
    await api.post("/auth/otp", {"phone": owner["phone"], "purpose": "verify"})
    code = await sinks.code_for(owner["phone"])
    r = await api.post("/auth/otp/verify", {"phone": owner["phone"], "code": code, "purpose": "verify"})
    assert r.status == 200
    assert (await api.get("/auth/me", token=token)).status == 200
    assert (await api.post("/auth/auth", {"username": owner["username"], "password": PASSWORD})).status == 200
    account = await gatehouse.accounts.find_by_id(owner["id"])
    assert account.phone is None and account.email_verified is True
    # The number is free: its holder registers it and proves it.
    assert (
        await api.post("/auth/register", {"username": unique("holder"), "password": NEW, "phone": owner["phone"]})
    ).status == 200


async def test_a_squatter_with_a_proven_address_loses_the_victims_number(sinks, api, gatehouse):
    victim_phone = unique_phone()
    squatter = await register(api, phone=victim_phone)  # the squatter's own e-mail
    token = await login(api, squatter)
    await api.post("/auth/otp", {"email": squatter["email"], "purpose": "verify"})
    code = await sinks.code_for(squatter["email"])
    await api.post("/auth/otp/verify", {"email": squatter["email"], "code": code, "purpose": "verify"}, token=token)
    # The victim proves their number: it leaves the squatter's account.
    await api.post("/auth/otp", {"phone": victim_phone, "purpose": "verify"})
    code = await sinks.code_for(victim_phone)
    assert (
        await api.post("/auth/otp/verify", {"phone": victim_phone, "code": code, "purpose": "verify"})
    ).status == 200
    assert (await gatehouse.accounts.find_by_id(squatter["id"])).phone is None
    assert (await api.post("/auth/auth", {"username": victim_phone, "password": PASSWORD})).status == 401
    r = await api.post("/api/auth/sign_up/", {"phone": victim_phone, "password": NEW})
    assert r.status == 200


async def land_credential_change(api, sinks, address: str, landing: str):
    """A takeover (the address proven without a session) or a reset by code, landing on
    the account of `address` while a password check is held."""
    if landing == "takeover":
        await api.post("/auth/otp", {"email": address, "purpose": "verify"})
        code = await sinks.code_for(address)
        return await api.post("/auth/otp/verify", {"email": address, "code": code, "purpose": "verify"})
    await api.post("/auth/reset", {"username": address})
    code = await sinks.code_for(address)
    return await api.post("/auth/reset", {"username": address, "password": NEW, "code": code})


def hold_next_password_check(gatehouse):
    """Hold the next bcrypt check after it ran, until released: a slow bcrypt, made
    deterministic."""
    entered, release = asyncio.Event(), asyncio.Event()
    real, armed = gatehouse.hasher.verify, [True]

    async def verify(password, hashed):
        ok = await real(password, hashed)
        if armed[0]:
            armed[0] = False
            entered.set()
            await release.wait()
        return ok

    gatehouse.hasher.verify = verify
    return entered, release


@pytest.mark.parametrize("landing", ["takeover", "reset"])
async def test_a_password_change_in_flight_loses_to_a_takeover_or_a_reset(landing, sinks, api, gatehouse):
    address = f"{unique('owner')}@example.test"
    holder = await register(api, email=address)  # a squatter, or a thief with a session
    token = await login(api, holder)
    entered, release = hold_next_password_check(gatehouse)
    change = asyncio.ensure_future(
        api.post("/auth/password", {"password": PASSWORD, "new_password": "Holder-keeps-9"}, token=token)
    )
    await entered.wait()  # the old password is checked; its write has not happened
    assert (await land_credential_change(api, sinks, address, landing)).status == 200
    release.set()
    assert_error(await change, 401, "INVALID_CREDENTIALS")
    assert (await api.post("/auth/auth", {"username": address, "password": "Holder-keeps-9"})).status == 401


@pytest.mark.parametrize("settings", [{"code_hourly_per_number_block": 3, "code_cooldown": 0}])
async def test_reset_texts_keep_the_numbers_own_caps(settings, sinks, api, gatehouse):
    """A reset asked for by username and texted to the account's phone: the number's own
    caps are checked by the worker (the answer cannot depend on them)."""
    block = unique_phone()[:-2]
    names = []
    for i in range(8):
        r = await api.post(
            "/auth/register", {"username": unique("ph"), "password": PASSWORD, "phone": f"{block}{i:02d}"}
        )
        names.append(r.data["data"]["username"])
    answers = [await api.post("/auth/reset", {"username": name}) for name in names]
    assert {r.status for r in answers} == {200}
    for _ in range(100):
        if await gatehouse.db.jobs.count_documents({"state": {"$in": ["pending", "sending"]}}) == 0:
            break
        await asyncio.sleep(0.05)
    assert len([m for m in sinks.messages if m["to"].startswith(block)]) == 3
    for _ in range(100):  # each refused job's event is written just after it settles
        if len(await gatehouse.events.find(type="code_failed")) == 5:
            break
        await asyncio.sleep(0.05)
    assert len(await gatehouse.events.find(type="code_failed")) == 5


async def test_premium_rate_numbers_cannot_be_registered(api):
    r = await api.post("/auth/register", {"username": unique("prem"), "password": PASSWORD, "phone": "+449012345678"})
    assert_error(r, 400, "INVALID_REQUEST")
    assert r.data["field"] == "phone"


@pytest.mark.parametrize("settings", [{"login_failures_per_account": 5, "login_failures_per_ip": 1000}])
async def test_the_lock_is_taken_before_the_last_check_runs(settings, api, gatehouse, clock):
    """Guesses in flight when the window turns meet the lock the fifth slot took, not a
    fresh window: a burst straddling the boundary still gets five checks."""
    user = await register(api)
    release, running = asyncio.Event(), [0]
    real = gatehouse.hasher.verify

    async def slow(password, hashed):  # bcrypt at production cost, held open
        running[0] += 1
        await release.wait()
        return await real(password, hashed)

    gatehouse.hasher.verify = slow

    def guess():
        return asyncio.ensure_future(api.post("/auth/auth", {"username": user["username"], "password": WRONG}))

    first = [guess() for _ in range(20)]
    while running[0] < 5:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    window = gatehouse.config.throttle.login_failure_window
    clock.advance(window - clock().timestamp() % window + 1)  # the next counting window begins
    second = [guess() for _ in range(20)]
    await asyncio.sleep(0.3)
    release.set()
    results = await asyncio.gather(*first, *second)
    assert statuses(results) == {401: 5, 429: 35}
    assert await failures(gatehouse, account_id=user["id"]) == 5


@pytest.mark.parametrize("settings", [{"logins_per_ip_hour": 2}])
async def test_code_logins_spend_the_successful_login_budget(settings, sinks, api, gatehouse):
    user = await register(api)
    token = await login(api, user)  # one of the two
    await api.post("/auth/otp", {"phone": user["phone"], "purpose": "verify"})
    code = await sinks.code_for(user["phone"])
    await api.post("/auth/otp/verify", {"phone": user["phone"], "code": code, "purpose": "verify"}, token=token)
    statuses_seen = []
    for _ in range(2):
        sinks.messages.clear()
        await gatehouse.limits.release_cooldown(f"code:login:{user['phone']}")
        await api.post("/auth/otp", {"phone": user["phone"], "purpose": "login"})
        code = await sinks.code_for(user["phone"])
        r = await api.post("/auth/otp/verify", {"phone": user["phone"], "code": code, "purpose": "login"})
        statuses_seen.append(r.status)
    assert statuses_seen == [200, 429]


async def test_an_owner_proving_while_logged_in_keeps_password_and_sessions(sinks, api, gatehouse):
    user = await register(api)
    token = await login(api, user)
    other = await login(api, user)
    await api.post("/auth/otp", {"email": user["email"], "purpose": "verify"})
    code = await sinks.code_for(user["email"])
    r = await api.post("/auth/otp/verify", {"email": user["email"], "code": code, "purpose": "verify"}, token=token)
    assert r.status == 200
    assert (await api.get("/auth/me", token=other)).status == 200
    assert (await api.post("/auth/auth", {"username": user["username"], "password": PASSWORD})).status == 200
    account = await gatehouse.accounts.find_by_id(user["id"])
    assert account.email_verified is True and account.phone == user["phone"]


# ---- a refresh keeps its session's lifetimes ----------------------------------------------


async def test_a_refresh_token_keeps_its_own_styles_lifetimes_at_another_door(api, config):
    user = await register(api)
    v1 = (await api.post("/api/v1/auth/login", {"user": user["username"], "password": PASSWORD})).data["result"]
    # Taken to the native refresh route, a v1 session keeps v1's lifetimes.
    r = await api.post("/auth/token/refresh", {"refresh_token": v1["refresh_token"]})
    assert r.status == 200
    assert r.data["data"]["refresh_expires_in"] <= config.jwt.lifetime("v1").refresh
    assert r.data["data"]["expires_in"] <= config.jwt.lifetime("v1").access
    # A drf session (no rotation) is refused where refreshing rotates, and the other way round.
    drf = (await api.post("/api/auth/login/", {"username": user["username"], "password": PASSWORD})).data
    r = await api.post("/auth/token/refresh", {"refresh_token": drf["refresh"]})
    assert_error(r, 401, "INVALID_TOKEN")
    native = (await api.post("/auth/token", {"username": user["username"], "password": PASSWORD})).data["data"]
    r = await api.post("/api/auth/refresh/", {"refresh": native["refresh_token"]})
    assert r.status == 401


async def test_a_counter_first_used_by_thirty_requests_at_once_counts_thirty(gatehouse):
    from models.ratelimit import upsert_inc

    for k in range(3):
        docs = await asyncio.gather(*(upsert_inc(gatehouse.db.limits, f"race{k}", {"n": 1}) for _ in range(30)))
        assert sorted(d["n"] for d in docs) == list(range(1, 31))
        assert (await gatehouse.db.limits.find_one({"_id": f"race{k}"}))["n"] == 30


@pytest.mark.parametrize("landing", ["reset", "takeover"])
async def test_a_login_in_flight_loses_to_a_reset_or_a_takeover(landing, sinks, api, gatehouse):
    """The login side of the race: its password check ran before the change landed, its
    session would be written after it. It fails like a wrong password and leaves no
    live session behind."""
    address = f"{unique('owner')}@example.test"
    user = await register(api, email=address)
    entered, release = hold_next_password_check(gatehouse)
    racing = asyncio.ensure_future(api.post("/auth/auth", {"username": address, "password": PASSWORD}))
    await entered.wait()  # the old password is checked; the session is not written yet
    assert (await land_credential_change(api, sinks, address, landing)).status == 200
    release.set()
    assert_error(await racing, 401, "INVALID_CREDENTIALS")
    assert await gatehouse.db.sessions.count_documents({"account_id": user["id"], "revoked_at": None}) == 0
