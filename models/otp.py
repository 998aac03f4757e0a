"""Flows built on one-time codes: password reset, passwordless login, verification.

Answers never reveal whether an account exists: a request for an unknown account is
answered like any other, and simply sends nothing.
"""

from __future__ import annotations

from config import Config

from .accounts import Accounts
from .auth import AuthService, Login
from .codes import Codes
from .common import Context
from .errors import CodeInvalid, DeliveryFailed, InvalidRequest
from .events import EventLog
from .validation import normalize_email, normalize_phone


class CodeFlows:
    def __init__(
        self, config: Config, accounts: Accounts, codes: Codes, auth: AuthService, events: EventLog, delivery
    ) -> None:
        self.config = config
        self.accounts = accounts
        self.codes = codes
        self.auth = auth
        self.events = events
        self.delivery = delivery

    async def send(
        self,
        purpose: str,
        channel: str,
        destination: str,
        ctx: Context,
        *,
        account: dict | None,
        cooldown: int | None = None,
        ticket: str | None = None,
    ) -> None:
        """Issue a code and deliver it. A failed delivery withdraws the code (nothing is
        left usable) and raises `DeliveryFailed` for a 503."""
        account_id = account["id"] if account else None
        code = await self.codes.issue(
            purpose, destination, channel, ctx.ip, account_id=account_id, cooldown=cooldown, ticket=ticket
        )
        message = self.delivery.compose(channel, destination, purpose, code, max(1, self.config.code_ttl // 60))
        try:
            await self.delivery.send(message)
        except DeliveryFailed as e:
            await self.codes.withdraw(purpose, destination)
            await self.events.record(
                "code_failed",
                ctx,
                account_id=account_id,
                outcome="failed",
                reason=e.message,
                purpose=purpose,
                channel=channel,
            )
            raise
        await self.events.record("code_sent", ctx, account_id=account_id, purpose=purpose, channel=channel)

    @staticmethod
    def reset_destination(account: dict) -> tuple[str, str] | None:
        if account.get("email"):
            return "email", account["email_key"]
        if account.get("phone"):
            return "sms", account["phone"]
        return None

    async def notify(self, account: dict, what: str, ctx: Context) -> None:
        """Tell the owner about a security change, by e-mail (else SMS). Best effort: the
        change has happened, so a failed notice is logged and recorded, never raised."""
        target = self.reset_destination(account)
        if target is None:
            return
        try:
            await self.delivery.send(self.delivery.compose_notice(target[0], target[1], what))
        except DeliveryFailed as e:
            await self.events.record(
                "notice_failed", ctx, account_id=account["id"], outcome="failed", reason=e.message, what=what
            )

    # ---- password reset ----------------------------------------------------------------

    async def request_reset(self, identifier: str, ctx: Context) -> None:
        """Send a reset code to the account's e-mail (or phone when it has none). Unknown
        and disabled accounts get no code and the same answer: no enumeration."""
        account = await self.accounts.find_by_login(identifier)
        if account is not None and not account.get("disabled"):
            await self.send_reset(account, ctx)

    async def send_reset(self, account: dict, ctx: Context) -> str | None:
        """Send `account` a reset code; the channel used, or None when it has nowhere to go."""
        target = self.reset_destination(account)
        if target is None:
            return None
        await self.send("reset", target[0], target[1], ctx, account=account)
        return target[0]

    async def reset_with_code(self, identifier: str, code: str, password: str, ctx: Context) -> None:
        account = await self.accounts.find_by_login(identifier)
        target = self.reset_destination(account) if account else None
        if account is None or target is None:
            raise CodeInvalid()
        # Check the policy first, so a weak new password does not spend the code.
        self.auth.hasher.check_policy(password, account.get("username"), account.get("email"), account.get("phone"))
        await self.codes.verify("reset", target[1], code, ctx.ip)
        await self.auth.set_password_after_reset(account, password, ctx)

    # ---- passwordless login and verification ------------------------------------------

    def destination(self, phone: str | None, email: str | None) -> tuple[str, str, str]:
        """(channel, lookup value, code destination) from exactly one of phone/e-mail."""
        if bool(phone) == bool(email):
            raise InvalidRequest("send exactly one of 'phone' or 'email'")
        if phone:
            e164 = normalize_phone(phone, self.config.phone_region)
            return "sms", e164, e164
        address = normalize_email(email or "")
        return "email", address, address.lower()

    async def _account_for(self, channel: str, value: str) -> dict | None:
        if channel == "sms":
            return await self.accounts.find_by_phone(value)
        return await self.accounts.find_by_email(value)

    async def request_code(self, purpose: str, phone: str | None, email: str | None, ctx: Context) -> str:
        """`purpose` is "login" or "verify". Returns the channel used. Passwordless login
        goes only to a verified phone or e-mail; unknown destinations get the same answer."""
        channel, value, dest = self.destination(phone, email)
        account = await self._account_for(channel, value)
        verified_field = "phone_verified" if channel == "sms" else "email_verified"
        if account is None or account.get("disabled"):
            return channel
        if purpose == "login" and not account.get(verified_field):
            return channel
        code_purpose = "login" if purpose == "login" else ("verify_phone" if channel == "sms" else "verify_email")
        await self.send(code_purpose, channel, dest, ctx, account=account)
        return channel

    async def verify_code(self, purpose: str, phone: str | None, email: str | None, code: str, ctx: Context):
        """A login code starts a session (returns `Login`); a verify code marks the
        phone or e-mail verified (returns the channel)."""
        channel, value, dest = self.destination(phone, email)
        code_purpose = "login" if purpose == "login" else ("verify_phone" if channel == "sms" else "verify_email")
        record = await self.codes.verify(code_purpose, dest, code, ctx.ip)
        account = await self.accounts.find_by_id(record["account_id"]) if record.get("account_id") else None
        if account is None or account.get("disabled"):
            raise CodeInvalid()
        await self.events.record("code_verified", ctx, account_id=account["id"], purpose=code_purpose)
        if purpose == "login":
            return await self.auth.start_session(account, "opaque", ctx, method="code")
        await self.accounts.mark_verified(account["id"], "phone" if channel == "sms" else "email")
        return channel


__all__ = ["CodeFlows", "Login"]
