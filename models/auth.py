"""The operations every API style shares: sign-up, login, logout, password changes,
kicks, disable and delete. Styles differ only in how they read requests and wrap
answers; what happens to accounts and sessions is decided here, once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pymongo.errors import PyMongoError

from config import ConsoleSettings, SessionSettings, ThrottleSettings

from .accounts import Accounts
from .common import DAY, HOUR, Context, epoch
from .errors import (
    AccountNotFound,
    CodeInvalid,
    Forbidden,
    InvalidCredentials,
    InvalidRequest,
    MfaEnrolmentRequired,
    RateLimited,
    ReauthenticationRequired,
    TokenInvalid,
)
from .events import EventLog
from .followups import Followups
from .locks import STRIKES, LockStatus, LoginLocks, account_of_key, lock_key
from .mfa import Factors
from .passwords import PasswordHasher
from .ratelimit import Limit, RateLimits, Slot
from .resolver import Resolver
from .sessions import Sessions
from .tokens import Tokens
from .validation import classify_login, is_premium_or_unsendable, operator_note
from .values import Account, Assurance, Caller, JwtLogin, OpaqueLogin, Pair, Session, TokenFacts

TOO_MANY = "too many failed logins; try again later"
TOO_MANY_FROM_IP = "too many failed logins from this address; try again later"
TOO_MANY_LOGINS_FROM_IP = "too many logins from this address; try again later"


def login_key(identifier: str, region: str) -> str:
    """The throttling key of a login name: the same for every spelling of one account,
    and computed the same way whether or not the account exists."""
    kind = classify_login(identifier, region)
    return f"{kind[0]}={kind[1]}" if kind else "raw=" + identifier.strip().lower()[:128]


def tried_name(key: str) -> str:
    """What the audit log keeps of the login name an unknown account's login tried: its
    key (`login_key`: normalized), printable, at most 64 characters. A name that fits no
    username, e-mail or phone shape is as likely a password typed in the wrong box: only
    its first two characters and its length are kept."""
    kind, _, name = key.partition("=")
    name = "".join(c for c in name if c.isprintable())
    if kind == "raw":
        return f"{name[:2]}… ({len(name)} characters)"
    return name[:64]


def assurance_view(session: Session) -> dict:
    """How a session was authenticated, as introspection and the admin API tell it."""
    return {"aal": session.aal, "amr": list(session.amr), "auth_time": epoch(session.auth_time or session.created)}


async def _no_notice(account: Account, what: str, ctx: Context) -> None:
    return None


class AuthService:
    def __init__(
        self,
        session_settings: SessionSettings,
        console_settings: ConsoleSettings,
        throttle: ThrottleSettings,
        accounts: Accounts,
        sessions: Sessions,
        events: EventLog,
        limits: RateLimits,
        hasher: PasswordHasher,
        tokens: Tokens,
        resolver: Resolver,
        followups: Followups | None = None,
        *,
        factors: Factors,
        notify: Callable[[Account, str, Context], Awaitable[None]] | None = None,
    ) -> None:
        self.session_settings = session_settings
        self.console_settings = console_settings
        self.throttle = throttle
        self.accounts = accounts
        self.sessions = sessions
        self.events = events
        self.limits = limits
        self.hasher = hasher
        self.tokens = tokens
        self.resolver = resolver
        self.followups = followups or Followups()
        # Security notices to the owner (password changed): `Notifier.notify`, which
        # reaches delivery; none without it.
        self.notify: Callable[[Account, str, Context], Awaitable[None]] = notify or _no_notice
        self.factors = factors

    # ---- sign-up -------------------------------------------------------------------

    async def register(
        self,
        ctx: Context,
        *,
        password: str | None,
        username: str | None = None,
        email: str | None = None,
        phone: str | None = None,
        nickname: str = "",
        identity: int = 0,
        roles: tuple[str, ...] = (),
        phone_verified: bool = False,
    ) -> Account:
        username, email, phone = self.accounts.normalize_identifiers(username, email, phone)
        if phone and is_premium_or_unsendable(phone):
            # Codes, resets and notices are texted to an account's phone: never to these.
            raise InvalidRequest("premium-rate and shared-cost numbers cannot be registered", field="phone")
        if password is not None:  # bad input is refused before it costs a slot
            self.hasher.check_policy(password, username, email, phone)
        # Each sign-up costs a bcrypt hash: one client must not create accounts without
        # bound or starve logins of the bcrypt pool. Reserved first, kept whatever happens.
        await self.limits.reserve(self.signups_per_ip, ctx.ip_key)
        account = await self.accounts.create(
            password=password,
            username=username,
            email=email,
            phone=phone,
            nickname=nickname,
            identity=identity,
            roles=roles,
            phone_verified=phone_verified,
            style=ctx.style,
        )
        await self.events.record("signup", ctx, account_id=account.id)
        return account

    # ---- login ---------------------------------------------------------------------

    async def _enrolment(self, account: Account, ctx: Context, method: str) -> MfaEnrolmentRequired:
        """GATEHOUSE_MFA covers the account and it has no factor: an enrolment-only session
        (opaque, whichever style asked), returned as the error the login answers with."""
        session, token = await self.start_session(account, "enrol", ctx, method)
        seconds_left = self.factors.config.mfa_enrol_seconds
        return MfaEnrolmentRequired(
            {"token": token, "session": session.id, "expires_in": seconds_left, "enrol": "/auth/mfa/totp"}
        )

    def _session_lifetimes(self, kind: str) -> tuple[int, int]:
        if kind == "enrol":
            enrol = self.factors.config.mfa_enrol_seconds
            return enrol, enrol
        if kind == "console":
            return self.console_settings.console_idle_seconds, self.console_settings.console_max_seconds
        return self.session_settings.session_idle_seconds, self.session_settings.session_max_seconds

    async def opaque_login(
        self,
        account: Account,
        ctx: Context,
        *,
        kind: str = "opaque",
        method: str = "password",
        assurance: Assurance | None = None,
    ) -> OpaqueLogin:
        """A session answered with an opaque token (`kind`: opaque, or console)."""
        session, token = await self.start_session(account, kind, ctx, method, assurance=assurance)
        assert token is not None  # opaque and console sessions always have one
        return OpaqueLogin(account, session, token)

    async def jwt_login(
        self,
        account: Account,
        ctx: Context,
        *,
        method: str = "password",
        refresh: bool = True,
        assurance: Assurance | None = None,
    ) -> JwtLogin:
        """A session answered with a JWT pair (session kind `jwt`); access only where the
        style has no refresh (`refresh=False`)."""
        session, _ = await self.start_session(account, "jwt", ctx, method, refresh=refresh, assurance=assurance)
        pair = await self.tokens.issue_pair(account, session, ctx.style, refresh=refresh)
        return JwtLogin(account, session, pair)

    async def start_session(
        self,
        account: Account,
        kind: str,
        ctx: Context,
        method: str = "password",
        *,
        refresh: bool = True,
        assurance: Assurance | None = None,
    ) -> tuple[Session, str | None]:
        """A new session for an account whose credentials were just checked. The session
        carries the credential epoch of that check; if the account's epoch moved while
        the check ran (a password change, reset, disable or takeover racing this login),
        the session is ended at once and the login fails like a wrong password. Written
        first and checked after, so either this read sees the change or the change's
        `revoke_all` sees this session: no live session with old credentials is left.

        Every login of every style comes through here, so here is where a first factor
        alone stops for an account with a second one: no session, an `MfaRequired`
        carrying the challenge (`assurance`: the login's second step passed already)."""
        if assurance is None:
            assurance = Assurance.first(method)
            if account.mfa:
                raise await self.factors.challenge(account, kind, ctx, assurance, refresh=refresh)
            if kind != "enrol" and self.factors.policy_covers(account):
                raise await self._enrolment(account, ctx, method)
        idle, absolute = self._session_lifetimes(kind)
        session, token = await self.sessions.create(
            account, kind, ctx, idle_seconds=idle, max_seconds=absolute, assurance=assurance
        )
        try:
            now = await self.accounts.find_by_id(account.id)
        except PyMongoError:
            # The answer will be a 503, so nobody will hold this session's token: end it.
            self.followups.later(
                "ending an unanswered login's session",
                lambda: self.sessions.revoke(session.id, "unanswered", by="gatehouse"),
            )
            raise
        if now is None or now.disabled or now.cred_epoch != session.cred_epoch:
            await self.sessions.revoke(session.id, "credentials_changed", by="gatehouse")
            raise InvalidCredentials()
        await self.events.record(
            "login_ok", ctx, account_id=account.id, session_id=session.id, method=method, kind=kind, aal=assurance.aal
        )
        return session, token

    # The limits every password check counts against, whichever door it comes through.
    @property
    def failures_per_account(self) -> Limit:
        c = self.throttle
        # No carry: the account's lock (taken by the last slot, read again after every
        # reservation) already holds across the window's boundary, and a success clears it.
        return Limit("login_fail_account", c.login_failure_window, c.login_failures_per_account, TOO_MANY, "account")

    @property
    def failures_per_ip(self) -> Limit:
        c = self.throttle
        return Limit(
            "login_fail_ip", c.login_failure_window, c.login_failures_per_ip, TOO_MANY_FROM_IP, "ip", carry=True
        )

    @property
    def logins_per_ip(self) -> Limit:
        return Limit("login_ok_ip", HOUR, self.throttle.logins_per_ip_hour, TOO_MANY_LOGINS_FROM_IP, "ip")

    @property
    def signups_per_ip(self) -> Limit:
        return Limit("signup_ip", HOUR, self.throttle.signups_per_ip_hour, "too many sign-ups from this address", "ip")

    async def check_password(
        self, identifier: str, password: str, ctx: Context, *, admit: Callable[[Account], bool] | None = None
    ) -> Account:
        """The account whose password this is, or `InvalidCredentials` — the same answer
        (and about the same time) for an unknown user, a wrong password, a disabled
        account and one `admit` refuses (a non-admin at the console). Failures count per
        account (every spelling of its login names shares one counter; an unknown name
        counts under its own key) and per client IP."""
        account = await self.accounts.find_by_login(identifier)
        key = f"account={account.id}" if account else login_key(identifier, self.accounts.region)
        return await self.verify_password(account, password, ctx, key=key, admit=admit, successes_count=True)

    async def verify_password(
        self,
        account: Account | None,
        password: str | None,
        ctx: Context,
        *,
        key: str | None = None,
        via: str = "login",
        admit: Callable[[Account], bool] | None = None,
        successes_count: bool = False,
    ) -> Account:
        """Every password check in Gatehouse (login, password change, ending other
        sessions, the console, 002's disable and reset) goes through here, so all of them
        share one budget: a lock check, then a slot under the per-account and per-IP
        failure limits (and, for logins, the per-IP success budget) is reserved *before*
        bcrypt runs. N parallel guesses against a limit of L get at most L checks."""
        key = key or f"account={account.id}"  # type: ignore[union-attr]
        ip_slot, *login_slot = await self._reserve_check(key, ctx, successes_count)
        per_account = self.failures_per_account
        ok = await self.hasher.verify(password, account.password_hash if account else None)
        if account is not None and ok and not account.disabled and (admit is None or admit(account)):
            # A success is no failure: its IP slot goes back, and the account's record
            # (this window's failures, the day's strikes, a lock) is cleared.
            await self.limits.release(ip_slot)
            await self.limits.reset(per_account.bucket, key, per_account.window)
            await self.limits.reset("login_strikes", key, DAY)
            await self.limits.unlock(f"login:{key}")
            return account
        await self.limits.release(*login_slot)
        if account is None:
            reason = "unknown_account"
        else:
            reason = "wrong_password" if not ok else "disabled" if account.disabled else "not_admitted"
        tried = {"login": tried_name(key)} if account is None else {}
        await self.events.record(
            "login_failed",
            ctx,
            account_id=account.id if account else None,
            outcome="failed",
            reason=reason,
            via=via,
            **tried,
        )
        raise InvalidCredentials()

    async def _reserve_check(self, key: str, ctx: Context, successes_count: bool) -> list[Slot]:
        """Admit one password check of `key` or raise `RateLimited`: the lock, then a
        slot under each limit, reserved before bcrypt runs. Returns the per-IP slots
        (failures, then the success budget when `successes_count`)."""
        locked, refused = await self.limits.refuse(lock_key(key))
        if locked:
            raise await self._refused_while_locked(key, ctx, locked, refused)
        per_account = self.failures_per_account
        wanted = [(per_account, key), (self.failures_per_ip, ctx.ip_key)]
        if successes_count:
            wanted.append((self.logins_per_ip, ctx.ip_key))
        account_slot, ip_slot, *login_slot = await self.limits.reserve_all(wanted)
        # Again after reserving: a request that read "no lock" just before the last slot
        # of the old window locked the account, and reserved just after the window
        # turned, holds a fresh slot, but meets the lock here. A lock its own window's
        # last slot set does not take back a slot that window granted (N parallel
        # guesses against a limit of L get exactly L checks, not fewer).
        locked, source = await self.limits.lock_of(lock_key(key))
        if locked and source != account_slot._id and account_slot.count < per_account.limit:
            await self.limits.release(account_slot, ip_slot, *login_slot)
            _, refused = await self.limits.refuse(lock_key(key))
            raise await self._refused_while_locked(key, ctx, locked, refused)
        if account_slot.count == per_account.limit:
            # The last check the window allows locks the account before it runs, so guesses
            # arriving meanwhile (or just after the window turns) meet the lock, not a
            # fresh window; a success lifts it again.
            await self._penalize(key, source=account_slot._id, ctx=ctx)
        return [ip_slot, *login_slot]

    async def _refused_while_locked(self, key: str, ctx: Context, locked: int, refused: int) -> RateLimited:
        """The refusal of an attempt the lock of `key` stopped (`refused`: how many it has
        stopped, this one included). Only the first of each lock is audited
        (`login_locked`), so hammering a locked account cannot flood the log; the count
        itself is kept on the lock for the console. Every key costs the same one write
        (`RateLimits.refuse`); only a known account's first refusal adds the event, so a
        login name's answer and its timing say nothing of whether it has an account."""
        account_id = account_of_key(key)
        if refused == 1 and account_id is not None:
            await self.events.record(
                "login_locked", ctx, account_id=account_id, outcome="refused", reason="locked", seconds_left=locked
            )
        return RateLimited(TOO_MANY, retry_after=locked, reason="account")

    async def _penalize(self, key: str, source: str, ctx: Context | None = None) -> None:
        """The account's failures reached the limit: lock it for one window, twice that
        the next time within a day, and so on up to GATEHOUSE_LOGIN_LOCK_MAX_SECONDS, so
        guessing slows down without an attacker locking the owner out for good. A known
        account's lock is audited (`account_locked`), after it is taken."""
        strikes, _ = await self.limits.hit(STRIKES, key, DAY)
        window = self.throttle.login_failure_window
        duration = min(window * 2 ** min(strikes - 1, 16), self.throttle.login_lock_max)
        await self.limits.lock(lock_key(key), duration, source)
        account_id = account_of_key(key)
        if account_id is not None:
            await self.events.record(
                "account_locked",
                ctx,
                account_id=account_id,
                outcome="locked",
                reason="too_many_failed_logins",
                duration=duration,
                strikes=strikes,
            )

    @property
    def locks(self) -> LoginLocks:
        """Accounts' login records (lock, failures, strikes), as administrators see them."""
        return LoginLocks(self.limits, self.failures_per_account)

    async def unlock(self, account: Account, ctx: Context, *, by: str, note: str | None = None) -> LockStatus:
        """An administrator lifts the account's login lock and forgets this window's
        failures and the day's strikes (the owner may log in at once; a next lock is
        short again). Audited (`unlock`, with `actor` and the operator's `note`) whether
        or not it was locked: an operator's action is always on the record, and
        `was_locked` says whether it changed anything. Returns the record before."""
        note = operator_note(note)
        before = await self.locks.status(account.id)
        await self.locks.clear(account.id)
        await self.events.record(
            "unlock",
            ctx,
            account_id=account.id,
            actor=by,
            was_locked=before.locked,
            failures=before.failures,
            strikes=before.strikes,
            **({"note": note} if note else {}),
        )
        return before

    async def login_password(
        self,
        identifier: str,
        password: str,
        ctx: Context,
        *,
        kind: str = "opaque",
        admit: Callable[[Account], bool] | None = None,
    ) -> OpaqueLogin:
        """A password login answered with an opaque token (`kind` console for the console,
        which admits administrators only)."""
        account = await self.check_password(identifier, password, ctx, admit=admit)
        return await self.opaque_login(account, ctx, kind=kind)

    async def login_jwt(self, identifier: str, password: str, ctx: Context, *, refresh: bool = True) -> JwtLogin:
        """A password login that answers with a JWT pair (session kind `jwt`)."""
        account = await self.check_password(identifier, password, ctx)
        return await self.jwt_login(account, ctx, refresh=refresh)

    async def refresh(self, token: str, ctx: Context, *, rotate: bool = True, access: str | None = None) -> Pair:
        """A new pair for a refresh token. `access`: an access token sent alongside (004
        lets a client send its expired one); it must be genuine and of the same session."""
        claims = None
        if access is not None:
            claims = self.tokens.decode(access, "access", verify_exp=False)
            if claims["sid"] != self.tokens.decode(token, "refresh")["sid"]:
                raise TokenInvalid("the access token and the refresh token belong to different sessions")

        async def caller_of(sid: str) -> Caller:
            caller = await self.resolver.refreshing(sid)
            if caller is None or (claims is not None and not self.tokens.fits(claims, "access", caller.session.style)):
                raise TokenInvalid()
            await self.sessions.touch(caller.session)
            return caller

        return await self.tokens.refresh(token, caller_of, ctx, rotate=rotate)

    async def inspect(self, token: str) -> TokenFacts | None:
        """What introspection tells about any token of ours (opaque, access or refresh
        JWT), for a resource server: the same liveness check every authenticated request
        makes. None for a token that is not an active one, and for an enrolment-only
        session's (GATEHOUSE_MFA): no resource server may take that one."""
        if token.count(".") == 2:
            return await self.tokens.inspect(token, lambda sid: self.resolver.load(sid, token))
        caller = await self.resolver.load(None, token)
        if caller is None or caller.session.kind == "enrol":
            return None
        session = caller.session
        return TokenFacts(caller, "opaque", epoch(session.expires_at), epoch(session.created))

    async def introspect(self, token: str) -> dict:
        """The native `/auth/introspect` answer: RFC 7662-like facts; an inactive token
        says only {"active": false}. (RFC 7662's own shape: `oauth_introspection`.)"""
        facts = await self.inspect(token)
        if facts is None:
            return {"active": False}
        account, session = facts.caller.account, facts.caller.session
        if facts.use == "opaque":
            return {
                "active": True,
                "sub": account.uid,
                "sid": session.id,
                "exp": facts.exp,
                "iat": facts.iat,
                "kind": session.kind,
                "token_type": "opaque",
                "style": session.style,
                "username": account.username,
                **assurance_view(session),
            }
        claims = facts.claims
        return {
            "active": True,
            "sub": account.uid,  # drf's and simple's tokens carry no `sub`
            "sid": claims["sid"],
            "exp": claims["exp"],
            "iat": claims["iat"],
            "kind": "jwt",
            "token_type": facts.use,
            "iss": claims["iss"],
            # Legacy profiles' tokens carry no audience: none is claimed for them.
            **({"aud": claims["aud"]} if "aud" in claims else {}),
            "jti": claims["jti"],
            "style": session.style,
            **assurance_view(session),
        }

    async def oauth_introspection(self, token: str) -> dict:
        """RFC 7662's answer (section 2.2) for `/oauth/introspect`. Inactive, unknown,
        expired, kicked and malformed tokens alike are {"active": false}, and so is a
        console session's token (not an API token). `token_type` is what the token
        endpoint would call every token of ours, `Bearer` (RFC 6749 7.1, as Hydra and
        Keycloak answer); `token_use` (Hydra's name) says which kind it is, in RFC
        7009's hint vocabulary: `access_token` (an access JWT or an opaque session
        token) or `refresh_token`. `iss`, `aud` and `jti` are a JWT's own claims; an
        opaque token has the configured issuer and access audience, and its session id
        as `jti` (one opaque token per session, never reissued)."""
        facts = await self.inspect(token)
        if facts is None or facts.caller.session.kind == "console":
            return {"active": False}
        account, session = facts.caller.account, facts.caller.session
        claims = facts.claims or {
            "iss": self.tokens.config.jwt_issuer,
            "aud": self.tokens.audience("access"),
            "jti": session.id,
        }
        answer = {
            "active": True,
            "token_type": "Bearer",
            "token_use": "refresh_token" if facts.use == "refresh" else "access_token",
            "sub": account.uid,
            "exp": facts.exp,
            "iat": facts.iat,
            "iss": claims["iss"],
            **({"aud": claims["aud"]} if "aud" in claims else {}),
            "jti": claims["jti"],
            "sid": session.id,
            # Gatehouse's own, as its access JWTs carry them: for an opaque token too.
            "account_id": account.id,
            "roles": sorted(account.roles),
            **assurance_view(session),
        }
        # A human-readable name of the account: its username, else the e-mail or phone it
        # logs in with (document 000's and 001's accounts have no username).
        username = account.username or account.email or account.phone
        if username:
            answer["username"] = username
        return answer

    # ---- ending sessions -------------------------------------------------------------

    async def logout(self, session: Session, ctx: Context) -> None:
        await self.sessions.revoke(session.id, "logout", by=f"account:{session.account_id}")
        await self.events.record("logout", ctx, account_id=session.account_id, session_id=session.id)

    async def kick(
        self, session_id: str, ctx: Context, *, by: str, account_id: int | None = None, note: str | None = None
    ) -> Session:
        """Revoke one session. With `account_id`, only a session of that account (a user
        revoking their own); `NotFound`-style answer otherwise, so ids are not probed.
        The event names the session (kind, IP, device, age) and carries the operator's
        `note`, their reason, when one was given."""
        session = await self.sessions.find(session_id)
        if session is None or (account_id is not None and session.account_id != account_id):
            raise AccountNotFound("no such session")
        if await self.sessions.revoke(session_id, "kicked", by=by):
            target = {
                "kind": session.kind,
                "ip": session.ip,
                "user_agent": session.user_agent,
                "created": session.created,
            }
            await self.events.record(
                "kick",
                ctx,
                account_id=session.account_id,
                session_id=session_id,
                actor=by,
                count=1,
                target=target,
                note=note,
            )
        return session

    async def kick_all(
        self, account_id: int, ctx: Context, *, by: str, except_id: str | None = None, note: str | None = None
    ) -> int:
        count = await self.sessions.revoke_all(account_id, "kicked", by=by, except_id=except_id)
        await self.events.record("kick", ctx, account_id=account_id, actor=by, count=count, all=True, note=note)
        return count

    async def end_other_sessions(self, caller: Caller, password: str | None, ctx: Context) -> int:
        """The caller ends every other session of theirs (the step-up rule)."""
        await self.step_up(caller, ctx, password=password)
        account = caller.account
        return await self.kick_all(account.id, ctx, by=f"account:{account.id}", except_id=caller.session.id)

    # ---- step-up -----------------------------------------------------------------------

    async def step_up(self, caller: Caller, ctx: Context, *, password: str | None = None) -> None:
        """The one rule for sensitive actions (change the password, add or remove a
        factor, new recovery codes, end every other session): the session authenticated
        within GATEHOUSE_FRESH_LOGIN_SECONDS and, for an account with a second factor, at
        aal2. An account without one may instead send its current password again
        (checked under the login limits, like every password check). Otherwise
        `ReauthenticationRequired`, saying what would do: `POST /auth/reauthenticate`."""
        session, account = caller.session, caller.account
        window = self.session_settings.fresh_login_seconds
        age = (self.sessions.clock() - (session.auth_time or session.created)).total_seconds()
        aal = 2 if account.mfa else 1
        if age <= window and session.aal >= aal:
            return
        if password and not account.mfa:
            try:
                await self.verify_password(account, password, ctx, via="reauthenticate")
                return
            except InvalidCredentials:
                pass
        needs = {
            "aal": aal,
            "within_seconds": window,
            "factors": [*account.mfa, "recovery"] if account.mfa else [],
            "route": "/auth/reauthenticate",
        }
        if account.mfa:
            how = "a code or a passkey" if "webauthn" in account.mfa else "a code"
            message = f"this needs a recent login with your second factor: POST /auth/reauthenticate with {how}"
            raise ReauthenticationRequired(message, needs)
        raise ReauthenticationRequired(needs=needs)

    # ---- password and account state -----------------------------------------------

    async def revoke_token(self, token: str, account: Account, ctx: Context) -> bool:
        """RFC 7009: end the session of `token` if it is one of `account`'s. A token that
        is invalid, expired or someone else's changes nothing, and the caller cannot tell."""
        session = None
        if token.count(".") == 2:
            for typ in ("access", "refresh"):
                try:
                    claims = self.tokens.decode(token, typ)
                except TokenInvalid:
                    continue
                session = await self.sessions.find_alive(claims["sid"])
                if session is not None and not self.tokens.fits(claims, typ, session.style):
                    session = None
                break
        else:
            session = await self.sessions.find_by_token(token)
        if session is None or session.account_id != account.id:
            return False
        await self.sessions.revoke(session.id, "revoked", by=f"account:{account.id}")
        await self.events.record("revoke", ctx, account_id=account.id, session_id=session.id)
        return True

    async def revoke_presented(self, token: str, ctx: Context) -> bool:
        """RFC 7009 for any client, public ones included: presenting a token of ours is
        enough to end its session, since holding it is what the session's owner proves
        at every request. An access JWT counts even past its `exp` (its signature proves
        it was issued; a client logging out after it expired must still end the
        session), and so does any refresh token of the session. Ended like a logout, and
        audited as one. False (and nothing changes) for a token that is not ours or
        whose session has ended already; an address sending unknown opaque tokens meets
        the budget of misses every token lookup has (`RateLimited`)."""
        found = await self.resolver.presented_session(token, ctx.ip_key)
        if found is None:
            return False
        key, session = found
        if not session.alive(self.sessions.clock()):
            # Ended already (a logout, a kick, its time): remembered, so sending it again
            # costs no read.
            self.resolver.remember_dead(key, session)
            return False
        if not await self.sessions.revoke(session.id, "logout", by=f"account:{session.account_id}"):
            return False  # a concurrent revocation ended it first, and audited it
        await self.events.record(
            "logout", ctx, account_id=session.account_id, session_id=session.id, via="oauth_revoke"
        )
        return True

    async def change_password(self, caller: Caller, current: str, new: str, ctx: Context) -> int:
        """Change a password after checking the current one (under the login limits);
        every other session ends, the caller's carries over. Returns how many ended. An
        account with a second factor also needs the step-up (a recent aal2 session): the
        password alone is one factor."""
        if caller.account.mfa:
            await self.step_up(caller, ctx)
        try:
            await self.verify_password(caller.account, current, ctx, via="password_change")
        except InvalidCredentials:
            raise InvalidCredentials("the current password is wrong") from None
        return await self.replace_password(caller.account, new, ctx, keep_session=caller.session.id)

    async def change_password_at_login(
        self, identifier: str, current: str, new: str, ctx: Context, *, caller: Caller | None
    ) -> int:
        """Change a password by login name and current password (document 002's reset).
        The caller's own session survives when it belongs to that account."""
        account = await self.check_password(identifier, current, ctx)
        if account.mfa:
            # The password alone is one factor: such an account changes it with a session.
            own = caller is not None and caller.account.id == account.id
            if not own:
                raise ReauthenticationRequired(
                    "this account has a second factor: change the password at POST /auth/password, logged in with it",
                    {"aal": 2, "route": "/auth/password"},
                )
            await self.step_up(caller, ctx)  # type: ignore[arg-type]
        keep = caller.session.id if caller and caller.account.id == account.id else None
        return await self.replace_password(account, new, ctx, keep_session=keep)

    async def replace_password(self, account: Account, new: str, ctx: Context, *, keep_session: str | None) -> int:
        """Set a new password for an account whose current one was just checked.

        One write decides it: the new hash, the new credential epoch (every session made
        with the old password — a racing login's included — is refused from then on) and
        the carry-over of the caller's own session (`keep_session`). What follows
        (revoking the other sessions' documents, the event, the notice) cannot turn the
        change into an error: it is retried in the background if the database fails it."""
        self.hasher.check_policy(new, account.username, account.email, account.phone)
        epoch = await self.accounts.set_password(
            account.id, new, if_epoch=account.cred_epoch, keep_session=keep_session
        )
        if epoch is None:  # a reset, takeover or another change landed during the check
            raise InvalidCredentials("the account's credentials changed meanwhile; log in again")
        if keep_session:
            await self.followups.run(
                "carrying the session over", lambda: self.sessions.restamp(keep_session, epoch), None
            )
        ended = await self.end_sessions(account.id, "password_changed", except_id=keep_session)
        await self.events.record("password_changed", ctx, account_id=account.id, sessions_ended=ended)
        await self.followups.run("the password notice", lambda: self.notify(account, "password was changed", ctx), None)
        return ended

    async def end_sessions(
        self, account_id: int, reason: str, *, by: str | None = None, except_id: str | None = None
    ) -> int:
        """Revoke the documents of sessions that a credential change already voided (by
        their epoch): a follow-up, so a failure here never undoes or errors the change."""
        return await self.followups.run(
            f"ending sessions ({reason})",
            lambda: self.sessions.revoke_all(account_id, reason, by=by, except_id=except_id),
            0,
        )

    async def set_password_after_reset(self, account: Account, new: str, ctx: Context, *, code: str) -> int:
        """The reset's decisive write, once per code (`code`: its hash). A retry of the
        same submission whose write already landed finds its own password in place and
        goes on; a racing submission of the same code with another password is refused
        (`CodeInvalid`), so no answer contradicts the password in effect."""
        if await self.accounts.set_password(account.id, new, by_code=code) is None:
            current = await self.accounts.find_by_id(account.id)
            if not await self.hasher.verify(new, current.password_hash if current else None):
                raise CodeInvalid()
        ended = await self.end_sessions(account.id, "password_reset")
        await self.events.record("password_reset", ctx, account_id=account.id, sessions_ended=ended)
        await self.followups.run("the reset notice", lambda: self.notify(account, "password was reset", ctx), None)
        return ended

    async def set_disabled(
        self,
        account: Account,
        disabled: bool,
        ctx: Context,
        *,
        by: str,
        actor_id: int | None = None,
        note: str | None = None,
    ) -> int:
        """Disable (and end every session) or enable an account. `actor_id`, the account
        acting, cannot disable itself (an administrator locking everyone out). Disabling
        moves the credential epoch, so a login racing it stays dead after an enable."""
        if disabled and actor_id == account.id:
            raise InvalidRequest("you cannot disable your own account")
        await self.accounts.set_disabled(account.id, disabled)
        ended = await self.end_sessions(account.id, "disabled", by=by) if disabled else 0
        await self.events.record(
            "disable" if disabled else "enable", ctx, account_id=account.id, actor=by, sessions_ended=ended, note=note
        )
        return ended

    async def disable_own_account(self, caller: Caller, identifier: str, password: str, ctx: Context) -> int:
        """Document 002's disable: the caller's token and the password of the same account."""
        account = await self.check_password(identifier, password, ctx)
        if account.id != caller.account.id:
            raise Forbidden("the token and the credentials belong to different accounts")
        return await self.set_disabled(account, True, ctx, by=f"account:{account.id}")

    async def prove_ownership(self, account: Account, channel: str, ctx: Context, *, logged_in: bool) -> str:
        """A code proved the account's phone (`sms`) or e-mail. Returns what it did:

        - `verified`: proven by the owner (with a session of the account), or again;
        - `taken_over`: the first proof on an account none of whose contacts was proven,
          made without a session of it: the prover gets the account from whoever
          registered it (account pre-hijacking: a squatter registered someone else's
          address with their own password). Every session ends and the password set
          before the proof stops working. The other contact stays, unproven: resets go
          to proven contacts first, and proving it later detaches it (below). Second
          factors go too (the squatter's authenticator app and recovery codes);
        - `detached`: the account's owner had proven the *other* contact and never this
          one (a recycled number, a typo, a squatter's own proven address beside a
          victim's number): the address leaves that account, free for its owner to
          register, and nothing else of the account changes."""
        field = "phone" if channel == "sms" else "email"
        other = "email" if field == "phone" else "phone"
        if logged_in or account.proven(field):
            await self.accounts.mark_verified(account, field)
            return "verified"
        if account.proven(other):
            if await self.accounts.detach(account, field):
                await self.events.record("contact_detached", ctx, account_id=account.id, channel=channel)
            return "detached"
        if not await self.accounts.take_over(account, field):
            return "verified"  # a concurrent proof took it over first
        # The squatter's second factors go with their password and sessions (after the
        # sessions, so none of them confirms an app meanwhile): the owner must not need
        # the squatter's authenticator app to log in.
        # Passkeys first (a passkey login racing this one checks its passkey after making
        # its session), the rest after the sessions end (no session left to confirm one).
        passkeys = await self.factors.drop_passkeys(account.id)
        ended = await self.end_sessions(account.id, "ownership_proven", by="gatehouse")
        factors = passkeys + await self.factors.drop_apps(account.id)
        facts = {"channel": channel, "sessions_ended": ended, "factors_removed": factors}
        await self.events.record("ownership_proven", ctx, account_id=account.id, **facts)
        return "taken_over"

    async def roll_back_signup(self, account: Account, ctx: Context) -> None:
        """Undo a sign-up whose completion failed (document 001: the text message could
        not be sent). Retried in the background if the database fails it, so a client's
        retry is not answered "already exists" for good."""
        await self.followups.run("rolling back a sign-up", lambda: self.accounts.delete_unproven(account.id), None)
        await self.events.record("signup_rolled_back", ctx, account_id=account.id)

    async def delete_account(self, account: Account, ctx: Context, *, by: str) -> None:
        await self.sessions.revoke_all(account.id, "deleted", by=by)
        await self.accounts.delete(account.id)
        await self.events.record("delete", ctx, account_id=account.id, actor=by)

    def require_admin(self, account: Account) -> None:
        if "admin" not in account.roles:
            raise Forbidden("this needs an administrator")
