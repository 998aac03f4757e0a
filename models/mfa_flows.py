"""What a user does with second factors, over `Factors` (the store and its checks) and
`AuthService` (sessions, the step-up rule, notices): enrol and confirm an authenticator
app, remove it, get new recovery codes, finish a login's second step, and authenticate
again in a live session. Every API style's MFA account ends up here (README "Second
factors")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from .auth import AuthService
from .common import Context
from .errors import ChallengeInvalid, CodeInvalid, Forbidden, InvalidCredentials, InvalidRequest
from .mfa import Enrolment, Factor, Factors
from .passkeys import PasskeyRejected
from .values import Account, Assurance, Caller, JwtLogin, OpaqueLogin, Session


@dataclass(frozen=True)
class Confirmed:
    """A confirmed factor; `recovery_codes` when this was the account's first (shown once);
    the caller's session, now at aal2."""

    factor: Factor
    recovery_codes: list[str] | None
    session: Session | None


class MfaFlows:
    def __init__(self, auth: AuthService, factors: Factors) -> None:
        self.auth = auth
        self.factors = factors
        self.events = auth.events

    async def notice(self, account: Account, what: str, ctx: Context) -> None:
        await self.auth.followups.run(f"the notice '{what}'", lambda: self.auth.notify(account, what, ctx), None)

    # ---- managing factors (a logged-in owner) ---------------------------------------

    async def enrol_totp(self, caller: Caller, name: str, ctx: Context) -> Enrolment:
        """A new authenticator app, pending until confirmed (needs the step-up)."""
        await self.auth.step_up(caller, ctx)
        enrolment = await self.factors.enrol(caller.account, name)
        await self.events.record("mfa_enrol", ctx, account_id=caller.account.id, factor=enrolment.factor.id)
        return enrolment

    async def confirm_totp(self, caller: Caller, factor_id: str, code: str, ctx: Context) -> Confirmed:
        """The app's first code: the factor counts from now on, the caller's session is
        at aal2 (it has just shown the factor), the owner is told, and an account's first
        factor comes with its recovery codes. An account that has a factor already adds
        one only under the step-up (an app left pending in a password-only session does
        not become a second factor by itself); an enrolment session only enrols the
        first."""
        account = (await self.current(caller)).account
        if account.mfa and caller.session.kind == "enrol":
            raise Forbidden("this account has a second factor now: log in with it")
        if account.mfa:
            await self.auth.step_up(replace(caller, account=account), ctx)
        factor, first = await self.factors.confirm(account, factor_id, code, ctx)
        if not first and not account.mfa:
            # Another first app won the race, after this request's check: the step-up again.
            try:
                await self.auth.step_up(await self.current(caller), ctx)
            except BaseException:  # refused, or the database failed: not confirmed after all
                await self.factors.discard(factor.id)
                raise
        codes = await self.factors.new_recovery_codes(account.id) if first else None
        session = await self.after_confirm(caller, account, "totp")
        await self.events.record("mfa_factor_added", ctx, account_id=account.id, factor=factor.id, factor_type="totp")
        await self.notice(account, "authenticator app was added", ctx)
        return Confirmed(factor, codes, session)

    async def current(self, caller: Caller) -> Caller:
        """The caller as the database has it now (a racing request may have changed both)."""
        account = await self.auth.accounts.find_by_id(caller.account.id)
        session = await self.auth.sessions.find_alive(caller.session.id)
        if account is None or session is None:
            raise InvalidCredentials("the session ended meanwhile; log in again")
        return Caller(account, session)

    async def after_confirm(self, caller: Caller, account: Account, method: str) -> Session | None:
        """A new factor was just shown in this session: it is at aal2 now; an
        enrolment-only session's work is done, and it ends."""
        if caller.session.kind == "enrol":
            # The account logs in again, now in two steps.
            await self.auth.sessions.revoke(caller.session.id, "enrolled", by=f"account:{account.id}")
            return await self.auth.sessions.find(caller.session.id)
        assurance = caller.session.assurance
        if assurance.aal < 2:
            assurance = assurance.with_second(method)
        return await self.auth.sessions.reassured(caller.session.id, assurance)

    async def remove(self, caller: Caller, factor_id: str, ctx: Context) -> Factor:
        """Remove an authenticator app (needs the step-up). The last factor of an account
        the MFA policy covers stays: it adds another first."""
        await self.auth.step_up(caller, ctx)
        covered = self.factors.policy_covers(caller.account)
        if covered and "totp" in caller.account.mfa and await self.factors.last_one(caller.account, "totp"):
            raise Forbidden("GATEHOUSE_MFA needs a second factor on this account: add another before removing this one")
        factor = await self.factors.remove(caller.account, factor_id)
        await self.events.record("mfa_factor_removed", ctx, account_id=caller.account.id, factor=factor.id)
        await self.notice(caller.account, "authenticator app was removed", ctx)
        return factor

    async def new_recovery_codes(self, caller: Caller, ctx: Context) -> list[str]:
        """A new set of recovery codes; the old set stops working (needs the step-up)."""
        if not caller.account.mfa:
            raise InvalidRequest("recovery codes come with a second factor: add an authenticator app first")
        await self.auth.step_up(caller, ctx)
        codes = await self.factors.new_recovery_codes(caller.account.id)
        await self.events.record("mfa_recovery_regenerated", ctx, account_id=caller.account.id)
        await self.notice(caller.account, "recovery codes were replaced", ctx)
        return codes

    async def admin_reset(self, account: Account, ctx: Context, *, by: str, note: str | None = None) -> int:
        """An administrator removes every factor of the account (its owner lost them): the
        next login is one step again. Audited, and the owner is told."""
        removed = await self.factors.reset(account.id)
        await self.events.record("mfa_reset", ctx, account_id=account.id, actor=by, removed=removed, note=note)
        await self.notice(account, "second factors were removed by an administrator", ctx)
        return removed

    # ---- the second step of a login ---------------------------------------------------

    async def verify(
        self,
        challenge_token: str,
        code: str | None,
        ctx: Context,
        *,
        kinds: tuple[str, ...] = ("opaque", "jwt"),
        passkey: Callable[[], Awaitable[str]] | None = None,
    ) -> OpaqueLogin | JwtLogin:
        """A login's second step: the challenge and a TOTP or recovery code make the
        session the first step asked for (its kind, style and refresh), at aal2. Each
        attempt is counted on the challenge before the code is checked; the last one
        allowed ends it, right or wrong; a right code uses it up. `kinds`: the sessions
        this door may finish (the API's, or the console's: a console login's challenge
        never yields a token at the API, nor an API login's a console cookie)."""
        challenge = await self.factors.attempt(challenge_token)
        account = await self.auth.accounts.find_by_id(challenge.account_id)
        stale = account is None or account.disabled or account.cred_epoch != challenge.cred_epoch or not account.mfa
        if stale or challenge.kind not in kinds:
            # The credentials changed since the first step (a password change, a reset,
            # a disable, the factors reset): that step no longer counts.
            await self.factors.spend(challenge_token)
            raise ChallengeInvalid()
        assert account is not None
        try:
            if passkey is not None:  # `PasskeyFlows.second_step`: its assertion is single-use
                method = await passkey()
                if not await self.factors.spend(challenge_token):
                    raise ChallengeInvalid()
            else:
                # The challenge is used up between finding the code right and taking it: of
                # two right codes racing, one finishes the login and the other stays unused.
                method = await self.factors.check(
                    account, code or "", ctx, via="login", claim=lambda: self.factors.spend(challenge_token)
                )
        except (CodeInvalid, PasskeyRejected):
            if self.factors.exhausted(challenge):
                await self.factors.spend(challenge_token)
            raise
        await self._after_code(account, method, ctx)
        assurance = challenge.first.with_second(method)
        ctx = replace(ctx, style=challenge.style)  # the session is the first step's style's
        if challenge.kind == "jwt":
            return await self.auth.jwt_login(account, ctx, refresh=challenge.refresh, assurance=assurance)
        return await self.auth.opaque_login(account, ctx, kind=challenge.kind, assurance=assurance)

    async def _after_code(self, account: Account, method: str, ctx: Context) -> None:
        if method == "recovery":
            await self.notice(account, "recovery code was used", ctx)

    # ---- authenticating again ----------------------------------------------------------

    async def reauthenticate(self, caller: Caller, password: str | None, code: str | None, ctx: Context) -> Session:
        """Refresh the session's `auth_time` (and its assurance) without a new session:
        the password for an account without a second factor; a TOTP or recovery code
        (and the password, if sent, must be right) for one with."""
        account = caller.account
        if account.mfa and not code:
            passkey = " (or a passkey's credential as 'credential')" if "webauthn" in account.mfa else ""
            raise InvalidRequest(f"this account has a second factor: send a code as 'code'{passkey}", field="code")
        if not account.mfa and not password:
            raise InvalidRequest("send your current password as 'password'", field="password")
        assurance = Assurance.first("password") if password else None
        if password:
            try:
                await self.auth.verify_password(account, password, ctx, via="reauthenticate")
            except InvalidCredentials:
                raise InvalidCredentials("the password is wrong") from None
        if account.mfa:
            method = await self.factors.check(account, code or "", ctx, via="reauthenticate")
            await self._after_code(account, method, ctx)
            first = assurance or Assurance(1, tuple(m for m in caller.session.amr if m not in ("totp", "recovery")))
            assurance = first.with_second(method)
        assert assurance is not None
        return await self.reassure(caller, assurance, ctx)

    async def reassure(self, caller: Caller, assurance: Assurance, ctx: Context) -> Session:
        """The session authenticated again just now, at `assurance` (audited)."""
        session = await self.auth.sessions.reassured(caller.session.id, assurance)
        if session is None:
            raise InvalidCredentials("the session ended meanwhile; log in again")
        await self.events.record(
            "reauthenticate", ctx, account_id=caller.account.id, session_id=session.id, aal=session.aal
        )
        return session
