"""Second factors across a SECRET_KEY rotation (secrets and recovery codes made under
the former key keep working), and secrets kept out of reprs."""

from __future__ import annotations

import dataclasses

import pytest

from models.common import Context
from models.errors import DomainError
from models.mfa import Factors
from tests.conftest import login, register
from tests.test_mfa import enrol


def rotated(gatehouse, clock, new_key: str, previous: tuple[str, ...]) -> Factors:
    """The same database's factors as a Gatehouse restarted with SECRET_KEY=new_key."""
    mfa = dataclasses.replace(gatehouse.config.mfa, previous_secret_keys=previous)
    g = gatehouse
    return Factors(g.db, clock, mfa, g.config.throttle, new_key, g.accounts, g.events, g.limits)


async def test_recovery_codes_survive_a_secret_key_rotation(api, gatehouse, clock):
    """README: after rotating SECRET_KEY, list the old one in GATEHOUSE_PREVIOUS_SECRET_KEYS.
    That keeps TOTP secrets readable, but recovery codes are HMACs under the current
    SECRET_KEY only: every account's recovery codes silently stop working."""
    user = await register(api)
    _, recovery, _ = await enrol(api, await login(api, user), clock)
    factors = rotated(gatehouse, clock, "a-brand-new-secret-" + "y" * 40, (gatehouse.config.secret_key,))
    account = await gatehouse.accounts.find_by_id(user["id"])
    ctx = Context(ip="127.0.0.9", style="native")
    assert await factors.check(account, recovery[0], ctx, via="login") == "recovery"


async def test_a_rotation_without_the_predecessor_is_a_clean_refusal(api, gatehouse, clock):
    """A SECRET_KEY rotated without GATEHOUSE_PREVIOUS_SECRET_KEYS: the sealed secret no
    longer opens and SecretBox's ValueError leaves check() as an unhandled 500 (and the
    reserved failure slot is never given back)."""
    user = await register(api)
    app, _, _ = await enrol(api, await login(api, user), clock)
    factors = rotated(gatehouse, clock, "a-brand-new-secret-" + "y" * 40, ())
    account = await gatehouse.accounts.find_by_id(user["id"])
    ctx = Context(ip="127.0.0.9", style="native")
    with pytest.raises(DomainError):
        await factors.check(account, app.code(1), ctx, via="login")


async def test_an_enrolment_keeps_its_secret_out_of_repr(api, gatehouse, clock):
    """Factor hides its sealed secret from repr; Enrolment prints the plaintext secret and
    the otpauth:// URI in any log line or traceback's locals."""
    from models.values import Caller

    user = await register(api)
    await login(api, user)
    account = await gatehouse.accounts.find_by_id(user["id"])
    session = (await gatehouse.sessions.recent_for_account(account, limit=1))[0]
    enrolment = await gatehouse.mfa.enrol_totp(Caller(account, session), "", Context(ip="127.0.0.1", style="native"))
    assert enrolment.secret not in repr(enrolment)
