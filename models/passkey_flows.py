"""What a user does with passkeys (issue 21), over `Passkeys` (the store and the WebAuthn
checks), `Factors` (a passkey is a second factor too) and `AuthService` (sessions, the
step-up rule, notices): register one in a live session, list, rename and remove them,
sign in with one, show one as a login's second step or to authenticate again. README
"Passkeys"."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from .auth import AuthService
from .common import Context
from .errors import Forbidden, InvalidRequest
from .mfa import Factors
from .mfa_flows import MfaFlows
from .passkeys import Assertion, Passkey, PasskeyRejected, Passkeys, SignCountRegressed
from .ratelimit import Limit
from .values import Assurance, Caller, JwtLogin, OpaqueLogin, Session

MINUTE = 60


@dataclass(frozen=True)
class Registered:
    """A new passkey; `recovery_codes` when it is the account's first factor (shown
    once); the caller's session, now at aal2 (or ended, for an enrolment-only one)."""

    passkey: Passkey
    recovery_codes: list[str] | None
    session: Session | None


def binding_of(token: str) -> str:
    """What a ceremony is bound to, by digest (an MFA challenge, a session id)."""
    return hashlib.sha256(token.encode()).hexdigest()


class PasskeyFlows:
    def __init__(self, auth: AuthService, factors: Factors, passkeys: Passkeys, mfa: MfaFlows) -> None:
        self.auth = auth
        self.factors = factors
        self.passkeys = passkeys
        self.mfa = mfa
        self.events = auth.events
        config = passkeys.config
        self.begins_per_ip = Limit(
            "webauthn_begin_ip", MINUTE, config.webauthn_begins_per_ip, "too many passkey ceremonies begun", "ip"
        )

    async def _begin(self, ctx: Context) -> None:
        self.passkeys.require_on()
        await self.auth.limits.reserve(self.begins_per_ip, ctx.ip_key)

    # ---- registering and managing (a logged-in owner) -----------------------------------

    async def registration_options(self, caller: Caller, ctx: Context) -> dict[str, Any]:
        """Creation options for a new passkey (needs the step-up, as adding any factor)."""
        await self._begin(ctx)
        await self.auth.step_up(caller, ctx)
        if await self.passkeys.count(caller.account.id) >= self.passkeys.config.webauthn_max_passkeys:
            raise InvalidRequest(f"an account may have at most {self.passkeys.config.webauthn_max_passkeys} passkeys")
        return await self.passkeys.registration_options(caller.account, caller.session.id)

    async def register(self, caller: Caller, credential: dict[str, Any], name: str, ctx: Context) -> Registered:
        """Verify the browser's new credential and keep it: the account's logins take two
        steps from now on (its first factor comes with recovery codes), the owner is
        told, and this session, which has just shown the passkey, is at aal2."""
        self.passkeys.require_on()
        current = await self.mfa.current(caller)
        if current.account.mfa and caller.session.kind == "enrol":
            raise Forbidden("this account has a second factor now: log in with it")
        if current.account.mfa:
            # Begun before the account had a factor, in a password-only session: that
            # session must now show one (as confirming an authenticator app must).
            await self.auth.step_up(current, ctx)
        try:
            passkey = await self.passkeys.register(current.account, caller.session.id, credential, name)
        except PasskeyRejected:
            account_id = current.account.id
            await self.events.record("passkey_failed", ctx, account_id=account_id, outcome="failed", via="register")
            raise
        await self._within_cap(current.account.id, passkey)
        first = await self.factors.add_kind(current.account.id, "webauthn")
        if not first and not current.account.mfa:
            # Another first factor won the race, after this request's check: the step-up again.
            try:
                await self.auth.step_up(await self.mfa.current(caller), ctx)
            except BaseException:
                await self.passkeys.delete(current.account.id, passkey.id)
                raise
        codes = await self.factors.new_recovery_codes(current.account.id) if first else None
        session = await self.mfa.after_confirm(caller, current.account, "webauthn")
        await self.events.record("passkey_added", ctx, account_id=current.account.id, passkey=passkey.id)
        await self.mfa.notice(current.account, "passkey was added", ctx)
        return Registered(passkey, codes, session)

    async def _within_cap(self, account_id: int, passkey: Passkey) -> None:
        cap = self.passkeys.config.webauthn_max_passkeys
        if await self.passkeys.count(account_id) > cap:
            await self.passkeys.delete(account_id, passkey.id)  # parallel registrations passed one count
            raise InvalidRequest(f"an account may have at most {cap} passkeys")

    async def rename(self, caller: Caller, passkey_id: str, name: str, ctx: Context) -> Passkey:
        passkey = await self.passkeys.rename(caller.account.id, passkey_id, name)
        await self.events.record("passkey_renamed", ctx, account_id=caller.account.id, passkey=passkey.id)
        return passkey

    async def remove(self, caller: Caller, passkey_id: str, ctx: Context) -> Passkey:
        """Remove a passkey (needs the step-up). The last factor of an account the MFA
        policy covers stays: it adds another first."""
        await self.auth.step_up(caller, ctx)
        passkey = await self.passkeys.get(caller.account.id, passkey_id)
        return await self._remove(caller.account, passkey, ctx, by=f"account:{caller.account.id}")

    async def admin_remove(
        self, account_id: int, passkey_id: str, ctx: Context, *, by: str, note: str | None = None
    ) -> Passkey:
        """An administrator removes one of an account's passkeys (audited, the owner told);
        the policy does not stop an administrator."""
        account = await self.auth.accounts.get(account_id)
        passkey = await self.passkeys.get(account.id, passkey_id)
        return await self._remove(account, passkey, ctx, by=by, admin=True, note=note)

    async def _remove(
        self, account: Any, passkey: Passkey, ctx: Context, *, by: str, admin: bool = False, note: str | None = None
    ) -> Passkey:
        last = await self.factors.last_one(account, "webauthn")
        if last and not admin and self.factors.policy_covers(account):
            raise Forbidden("GATEHOUSE_MFA needs a second factor on this account: add another before removing this one")
        if not await self.passkeys.delete(account.id, passkey.id):
            raise PasskeyRejected()  # removed meanwhile
        if not await self.passkeys.count(account.id):

            async def still_there() -> bool:
                return bool(await self.passkeys.count(account.id))

            await self.factors.drop_kind(account.id, "webauthn", still_there)
        await self.events.record("passkey_removed", ctx, account_id=account.id, passkey=passkey.id, actor=by, note=note)
        await self.mfa.notice(account, "passkey was removed", ctx)
        return passkey

    # ---- signing in ------------------------------------------------------------------------

    async def login_options(self, ctx: Context) -> dict[str, Any]:
        await self._begin(ctx)
        return await self.passkeys.login_options()

    async def login(self, credential: dict[str, Any], ctx: Context, *, jwt: bool) -> OpaqueLogin | JwtLogin:
        """A sign-in with a passkey that verified its user (PIN, biometric: two factors in
        one): the session (opaque or a JWT pair) at aal2, `amr: ["webauthn"]`. Without
        user verification the key is possession only: refused here (it may still be a
        second step after the password)."""
        self.passkeys.require_on()
        assertion = await self._assert(credential, "login", None, ctx)
        account_id = assertion.passkey.account_id
        account = await self.auth.accounts.find_by_id(account_id)
        if account is None or account.disabled or not assertion.user_verified:
            await self.events.record("passkey_failed", ctx, account_id=account_id, outcome="failed", via="login")
            if account is not None and not account.disabled:
                raise PasskeyRejected("this passkey did not verify you (no PIN or biometric): use your password")
            raise PasskeyRejected()
        await self.events.record("passkey_login", ctx, account_id=account.id, passkey=assertion.passkey.id)
        assurance = Assurance(2, ("webauthn",))
        login: OpaqueLogin | JwtLogin
        if jwt:
            login = await self.auth.jwt_login(account, ctx, method="webauthn", assurance=assurance)
        else:
            login = await self.auth.opaque_login(account, ctx, method="webauthn", assurance=assurance)
        if not await self.passkeys.exists(assertion.passkey.id):
            # Removed while this login ran (its owner, an administrator, a takeover): the
            # session it made must not outlive it.
            await self.auth.sessions.revoke(login.session.id, "passkey_removed", by="gatehouse")
            raise PasskeyRejected()
        return login

    async def _assert(self, credential: dict[str, Any], kind: str, binding: str | None, ctx: Context) -> Assertion:
        try:
            return await self.passkeys.assert_(credential, kind, binding)
        except SignCountRegressed as e:
            await self.events.record(
                "passkey_clone_suspected",
                ctx,
                account_id=e.passkey.account_id,
                outcome="failed",
                passkey=e.passkey.id,
                stored=e.passkey.sign_count,
                presented=e.count,
            )
            raise
        except PasskeyRejected as e:
            await self.events.record("passkey_failed", ctx, account_id=e.account_id, outcome="failed", via=kind)
            raise

    # ---- a second step, authenticating again -------------------------------------------------

    async def mfa_options(self, challenge_token: str, ctx: Context) -> dict[str, Any]:
        """Request options for a login's second step with a passkey, bound to its MFA
        challenge (which must be live; it is not counted until the assertion comes)."""
        await self._begin(ctx)
        challenge = await self.factors.peek(challenge_token)
        account = await self.auth.accounts.find_by_id(challenge.account_id)
        if account is None or "webauthn" not in account.mfa:
            raise InvalidRequest("this account has no passkey: send a code")
        return await self.passkeys.mfa_options(account, binding_of(challenge_token))

    async def second_step(self, challenge_token: str, credential: dict[str, Any], ctx: Context) -> str:
        """Check a passkey for the login whose challenge this is; its method."""
        self.passkeys.require_on()
        try:
            assertion = await self._assert(credential, "mfa", binding_of(challenge_token), ctx)
        except PasskeyRejected:
            await self.events.record("mfa_failed", ctx, outcome="failed", via="login", factor="webauthn")
            raise
        account_id = assertion.passkey.account_id
        await self.events.record("mfa_verified", ctx, account_id=account_id, via="login", factor="webauthn")
        return "webauthn"

    async def reauthentication_options(self, caller: Caller, ctx: Context) -> dict[str, Any]:
        await self._begin(ctx)
        if "webauthn" not in caller.account.mfa:
            raise InvalidRequest("this account has no passkey")
        return await self.passkeys.mfa_options(caller.account, binding_of(caller.session.id), kind="reauth")

    async def reauthenticate(self, caller: Caller, credential: dict[str, Any], ctx: Context) -> Session:
        """Authenticate again in this session with a passkey: its `auth_time` is now and
        it is at aal2 (a passkey is a factor of its own: user verification, or the
        password the session began with, makes the second)."""
        self.passkeys.require_on()
        assertion = await self._assert(credential, "reauth", binding_of(caller.session.id), ctx)
        if assertion.passkey.account_id != caller.account.id:
            raise PasskeyRejected()
        first = tuple(m for m in caller.session.amr if m not in ("totp", "recovery", "webauthn"))
        if not first and not assertion.user_verified:
            raise PasskeyRejected("this passkey did not verify its user: use one that does, or a code")
        return await self.mfa.reassure(caller, Assurance(2, (*first, "webauthn")), ctx)
