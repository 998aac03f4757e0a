"""Flows built on one-time codes: password reset, passwordless login, verification.

Nothing here reveals whether an account exists (one exception, which document 001
prescribes: `request_phone_login` answers an unknown or unproven number 404 / 403). A
request for an unknown account, destination or login name does the same work as any
other — the caps are reserved, the cooldown claimed, a code written (one that is never
sent) — and gets the same answer; only the delivery differs, and delivery happens off
the request path, through the durable queue (`delivery.queue`). A wrong code, no code
and no such account are one answer. The new password of a reset is checked against the
policy only after the code has been proven, so the "must not be your phone or e-mail"
rule cannot be used to test whether a string is someone's phone or e-mail.
"""

from __future__ import annotations

import uuid

from config import CodeSettings

from .accounts import Accounts
from .auth import AuthService, login_key
from .codes import Codes
from .common import Context
from .errors import (
    AccountExists,
    AccountNotFound,
    CodeInvalid,
    DeliveryFailed,
    Forbidden,
    InvalidRequest,
    NoPendingCode,
)
from .events import EventLog
from .notices import reset_destination
from .validation import classify_login, email_key, normalize_email, normalize_phone
from .values import Account, Caller, JwtLogin, OpaqueLogin


class CodeFlows:
    def __init__(
        self,
        config: CodeSettings,
        accounts: Accounts,
        codes: Codes,
        auth: AuthService,
        events: EventLog,
        delivery,
        queue,
    ) -> None:
        self.config = config
        self.accounts = accounts
        self.codes = codes
        self.auth = auth
        self.events = events
        self.delivery = delivery
        self.queue = queue

    @property
    def minutes(self) -> int:
        return max(1, self.config.code_ttl // 60)

    async def issue_and_queue(
        self,
        purpose: str,
        subject: str,
        channel: str,
        ctx: Context,
        *,
        to: str | None,
        account: Account | None,
        limit_key: str | None = None,
        number: str | None = None,
        cooldown: int | None = None,
        gated: bool = False,
    ) -> None:
        """Issue a code for `subject` — whether or not `account` stands behind it — and,
        when one does, queue its delivery to `to`. The answer is the same either way."""
        account_id = account.id if account else None
        code = await self.codes.issue(
            purpose,
            subject,
            ctx.ip_key,
            limit_key=limit_key,
            number=number,
            account_id=account_id,
            cooldown=cooldown,
        )
        await self.events.record("code_requested", ctx, account_id=account_id, purpose=purpose, channel=channel)
        # Without an account the job is a blank the worker drops: the request does the
        # same work either way, so its time does not say whether the account exists.
        real = account is not None and to is not None
        shape = channel if channel in ("sms", "email") else "email"
        message = self.delivery.compose(shape, to if real else subject, purpose, code, self.minutes)
        await self.queue.enqueue(message, account_id=account_id, kind="message" if real else "blank", gated=gated)

    async def send_now(
        self,
        purpose: str,
        channel: str,
        destination: str,
        ctx: Context,
        *,
        account: Account,
        cooldown: int | None = None,
        ticket: str | None = None,
    ) -> None:
        """Issue a code and deliver it on the request path: only for flows whose document
        makes the send the answer (001's sign-up rolls back when the SMS fails). A failed
        delivery withdraws the code and raises `DeliveryFailed` for a 503."""
        code = await self.codes.issue(
            purpose,
            destination,
            ctx.ip_key,
            number=destination if channel == "sms" else None,
            account_id=account.id,
            cooldown=cooldown,
            ticket=ticket,
        )
        try:
            await self.delivery.send(self.delivery.compose(channel, destination, purpose, code, self.minutes))
        except DeliveryFailed as e:
            await self.codes.withdraw(purpose, destination)
            await self.events.record(
                "code_failed",
                ctx,
                account_id=account.id,
                outcome="failed",
                reason=e.message,
                purpose=purpose,
                channel=channel,
            )
            raise
        await self.events.record("code_sent", ctx, account_id=account.id, purpose=purpose, channel=channel)

    async def register_phone(self, phone: str, ctx: Context) -> str:
        """Document 001's sign-up: an account with only a phone, and a verification code
        texted to it on the request path (the document makes that text the answer).
        Returns the ticket the code is bound to. If the text cannot be sent, the sign-up
        is rolled back (retried in the background when the database fails that too), so
        no half-made account answers the client's retry with "already exists"."""
        if await self.accounts.find_by_phone(phone):
            raise AccountExists(field="phone")
        account = await self.auth.register(ctx, password=None, phone=phone)
        ticket = str(uuid.uuid4())
        try:
            await self.send_now("verify_phone", "sms", phone, ctx, account=account, cooldown=0, ticket=ticket)
        except Exception:
            await self.auth.roll_back_signup(account, ctx)
            raise
        return ticket

    # ---- password reset ----------------------------------------------------------------

    def _reset_subject(self, identifier: str, account: Account | None) -> tuple[str, str, Account | None]:
        """(code subject, limit key, the account a reset would go to). The code of a live
        account is keyed by the account, so any of its login names redeems it; the
        cooldown and caps count per login name as typed, known or not."""
        key = login_key(identifier, self.accounts.region)
        live = account if account and not account.disabled and reset_destination(account) else None
        return (f"account={live.id}" if live else key), key, live

    async def request_reset(self, identifier: str, ctx: Context) -> None:
        """Send a reset code to the account's e-mail (or phone when it has none). Unknown
        and disabled accounts get the same answer, cooldown and caps, and no message."""
        account = await self.accounts.find_by_login(identifier)
        subject, key, live = self._reset_subject(identifier, account)
        kind = classify_login(identifier, self.accounts.region)
        typed_number = kind[1] if kind and kind[0] == "phone" else None
        target = reset_destination(live) if live else None
        await self.issue_and_queue(
            "reset",
            subject,
            target[0] if target else "none",
            ctx,
            to=target[1] if target else None,
            account=live,
            limit_key=key,
            number=typed_number,
            # Texted somewhere the client did not name: that number's own caps are
            # checked by the worker, off the request path.
            gated=target is not None and target[0] == "sms" and target[1] != typed_number,
        )

    async def send_reset(self, account: Account, ctx: Context) -> str | None:
        """An operator sends `account` a reset code; the channel used, or None when it has
        nowhere to go."""
        target = reset_destination(account)
        if target is None:
            return None
        await self.issue_and_queue(
            "reset",
            f"account={account.id}",
            target[0],
            ctx,
            to=target[1],
            account=account,
            number=target[1] if target[0] == "sms" else None,
        )
        return target[0]

    async def reset_with_code(self, identifier: str, code: str, password: str, ctx: Context) -> None:
        """Reset by code: the code is checked first (counted), then the new password
        against the policy; then the reset proves the destination the code went to
        (taking the account over from an unproven registrant) and sets the password,
        which ends every session. All of that happens *before* the code is spent: if the
        database fails midway, the code is still good and the client's retry completes
        the reset (each step is idempotent), instead of answering "invalid code"."""
        account = await self.accounts.find_by_login(identifier)
        subject, key, live = self._reset_subject(identifier, account)

        async def reset(record: dict) -> None:
            if live is None or record.get("account_id") != live.id:
                raise CodeInvalid()
            self.auth.hasher.check_policy(password, live.username, live.email, live.phone)
            target = reset_destination(live)
            if target is not None:
                await self.auth.prove_ownership(live, target[0], ctx, logged_in=False)
            await self.auth.set_password_after_reset(live, password, ctx, code=record["code_hash"])

        await self.codes.verify("reset", subject, code, ctx.ip_key, limit_key=key, before_spend=reset)
        assert live is not None
        # The codes sent to the account's other names die too (a follow-up: they are
        # single-use codes of an account whose password just changed).
        await self.auth.followups.run(
            "withdrawing the other reset codes", lambda: self.codes.withdraw_account("reset", live.id), None
        )

    # ---- passwordless login and verification ------------------------------------------

    def destination(self, phone: str | None, email: str | None) -> tuple[str, str, str]:
        """(channel, lookup value, code destination) from exactly one of phone/e-mail."""
        if bool(phone) == bool(email):
            raise InvalidRequest("send exactly one of 'phone' or 'email'")
        if phone:
            e164 = normalize_phone(phone, self.accounts.region)
            return "sms", e164, e164
        address = normalize_email(email or "")
        return "email", address, email_key(address)

    async def _account_for(self, channel: str, value: str) -> Account | None:
        if channel == "sms":
            return await self.accounts.find_by_phone(value)
        return await self.accounts.find_by_email(value)

    @staticmethod
    def code_purpose(purpose: str, channel: str) -> str:
        return "login" if purpose == "login" else ("verify_phone" if channel == "sms" else "verify_email")

    async def request_code(self, purpose: str, phone: str | None, email: str | None, ctx: Context) -> str:
        """`purpose` is "login" or "verify". Returns the channel used. Passwordless login
        goes only to a verified phone or e-mail; every destination gets the same answer,
        cooldown and caps, whether or not a code is really sent."""
        channel, value, dest = self.destination(phone, email)
        account = await self._account_for(channel, value)
        field = "phone" if channel == "sms" else "email"
        eligible = account is not None and not account.disabled
        if purpose == "login" and account is not None and not account.proven(field):
            eligible = False
        await self.issue_and_queue(
            self.code_purpose(purpose, channel),
            dest,
            channel,
            ctx,
            to=dest,
            account=account if eligible else None,
            number=dest if channel == "sms" else None,
        )
        return channel

    async def prove_contact(
        self, phone: str | None, email: str | None, code: str, ctx: Context, *, caller: Caller | None = None
    ) -> str:
        """A verify code marks the phone or e-mail proven; returns the channel. A proof
        made without a session of the account (`caller`) may take it over from an
        unproven registrant (`AuthService.prove_ownership`)."""
        channel, _, dest = self.destination(phone, email)
        account = await self._use_code(self.code_purpose("verify", channel), dest, code, ctx, channel=channel)
        logged_in = caller is not None and caller.account.id == account.id
        await self.auth.prove_ownership(account, channel, ctx, logged_in=logged_in)
        return channel

    async def login_by_code(self, phone: str | None, email: str | None, code: str, ctx: Context) -> OpaqueLogin:
        """Passwordless login with a code sent to a phone or an e-mail: an opaque session."""
        channel, _, dest = self.destination(phone, email)
        account = await self._code_login(dest, code, ctx, channel=channel)
        return await self.auth.opaque_login(account, ctx, method=channel)

    async def verify_signup(self, phone: str, code: str, ticket: str, ctx: Context) -> str:
        """Document 001's `verify/`: the sign-up's code and ticket prove the phone (made
        without a session, as that document has none)."""
        account = await self._use_code("verify_phone", phone, code, ctx, channel="sms", ticket=ticket)
        return await self.auth.prove_ownership(account, "sms", ctx, logged_in=False)

    async def request_phone_login(self, phone: str, ctx: Context) -> tuple[Account, int]:
        """Document 001's `login/`: a login code texted to a proven phone; (the account,
        the code's lifetime). That document answers an unknown or unproven number
        differently (404, 403), so it is the one flow that says whether an account
        exists; a new code waits for the last one to expire."""
        account = await self.accounts.find_by_phone(phone)
        if account is None or account.disabled:
            raise AccountNotFound("User does not exist")
        if not account.phone_verified:
            raise Forbidden("Phone number is not verified; verify it first")
        ttl = self.config.code_ttl
        await self.issue_and_queue("login", phone, "sms", ctx, to=phone, account=account, number=phone, cooldown=ttl)
        return account, ttl

    async def phone_login(self, user_id: str, code: str, ctx: Context) -> JwtLogin:
        """Document 001's `login/verify/`: the account's uid and its pending login code
        for a JWT pair. No pending code is `NoPendingCode` (the document's "login first")."""
        account = await self.accounts.find_by_uid(user_id)
        if account is None or not account.phone or account.disabled:
            raise NoPendingCode()
        # No pending code is told by the attempt itself (no read before it), and is not
        # charged as a wrong guess.
        login_account = await self._code_login(account.phone, code, ctx, channel="sms", charge_missing=False)
        return await self.auth.jwt_login(login_account, ctx, method="sms")

    async def _code_login(
        self, dest: str, code: str, ctx: Context, *, channel: str, charge_missing: bool = True
    ) -> Account:
        """Spend a login code; its account. Counts against the per-IP budget of successful
        logins like a password login (reserved first, given back when the code fails)."""
        slot = await self.auth.limits.reserve(self.auth.logins_per_ip, ctx.ip_key)
        try:
            return await self._use_code("login", dest, code, ctx, channel=channel, charge_missing=charge_missing)
        except Exception:
            await self.auth.limits.release(slot)
            raise

    async def _use_code(
        self,
        purpose: str,
        dest: str,
        code: str,
        ctx: Context,
        *,
        channel: str,
        ticket: str | None = None,
        charge_missing: bool = True,
    ) -> Account:
        """Spend the code; the live account it was sent for, which must still hold `dest`."""
        record = await self.codes.verify(purpose, dest, code, ctx.ip_key, ticket=ticket, charge_missing=charge_missing)
        account = await self.accounts.find_by_id(record["account_id"]) if record.get("account_id") else None
        holds = account is not None and (account.phone if channel == "sms" else account.email_key) == dest
        if account is None or account.disabled or not holds:
            raise CodeInvalid()
        await self.events.record("code_verified", ctx, account_id=account.id, purpose=purpose)
        return account
