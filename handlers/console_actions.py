"""The console's destructive actions, Django admin's way: a GET of an action's address
shows a confirmation page naming what it acts on (the account, the session's device,
IP and age, the passkey), warning when it is the operator's own session or account,
with an optional reason for the audit log; the POST from that page (XSRF token, same
origin) does it. No action happens on a GET, and none needs JavaScript.

Each action is one domain operation; the reason goes into its event as `note`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from models.errors import AccountNotFound
from models.locks import LockStatus
from models.useragent import describe
from models.validation import operator_note, parse_fields
from models.values import Account, Session

from .console import ConsoleHandler, ago, console_target, exact
from .fields import NOTE


@dataclass(frozen=True)
class Confirmation:
    """What a confirmation page shows: a question, the facts that name the target, a
    warning when the operator acts on themselves, and the button (None: nothing to do,
    e.g. the session has already ended)."""

    title: str
    facts: list[tuple[str, str]]
    button: str | None
    warning: str | None = None
    danger: bool = True
    notes: list[str] = field(default_factory=list)


def account_name(account: Account) -> str:
    return account.username or account.email or account.phone or f"#{account.id}"


def age(when: datetime | None, now: datetime) -> str:
    return f"{ago(when, now)} ({exact(when)})" if when else "—"


def lock_facts(lock: LockStatus | None, now: datetime) -> list[tuple[str, str]]:
    if lock is None or not lock.notable:
        return [("Login lock", "not locked, no failed logins counted")]
    facts = [("Failed logins counted", f"{lock.failures} of {lock.limit} in the current {lock.window} s window")]
    if lock.locked:
        facts.insert(0, ("Login lock", f"Locked until {exact(lock.until)}, because of {lock.reason}"))
    return facts


class ActionHandler(ConsoleHandler):
    """GET: the confirmation page; POST: the action, then back to `next`."""

    async def get(self, *args: str) -> None:
        confirm = await self.confirmation(*args)
        target = console_target(self.get_query_argument("next", None), self.default_next(*args))
        self.page("confirm.html", confirm=confirm, action=self.request.path, next=target)

    async def confirmation(self, *args: str) -> Confirmation:
        raise NotImplementedError

    def default_next(self, *args: str) -> str:
        raise NotImplementedError

    def note(self) -> str | None:
        """The operator's reason, trimmed; none when left empty."""
        raw = parse_fields({"reason": self.get_body_argument("reason", None)}, {"reason": NOTE}).get("reason")
        return operator_note(raw)

    def is_me(self, account_id: int) -> bool:
        return self.operator is not None and self.operator.id == account_id


class KickHandler(ActionHandler):
    async def session(self, session_id: str) -> Session:
        session = await self.gatehouse.sessions.find(session_id)
        if session is None:
            raise AccountNotFound("no such session (it may have expired)")
        return session

    def default_next(self, session_id: str) -> str:
        return "/console/sessions"

    async def confirmation(self, session_id: str) -> Confirmation:
        s = await self.session(session_id)
        owner = await self.accounts.find_by_id(s.account_id)
        now = self.clock()
        facts = [
            ("Account", account_name(owner) if owner else f"#{s.account_id} (deleted)"),
            ("Kind", f"{s.kind} ({s.style})"),
            ("Device", describe(s.user_agent)),
            ("IP address", s.ip or "—"),
            ("Started", age(s.created, now)),
            ("Last active", age(s.last_active, now)),
        ]
        if s.revoked_at is not None:
            return Confirmation("This session has already ended", facts, None, danger=False)
        mine = self.console_session is not None and self.console_session.id == s.id
        warning = "This is your own console session: kicking it logs you out of the console." if mine else None
        return Confirmation("Kick this session?", facts, "Kick session", warning)

    async def post(self, session_id: str) -> None:
        note = self.note()
        session = await self.auth.kick(session_id, self.context(), by=self.actor, note=note)
        if self.console_session is not None and session.id == self.console_session.id:
            self.clear_console_cookie()
            self.redirect("/console/login", status=303)
            return
        self.back("/console/sessions", "kicked")


class AccountActionHandler(ActionHandler):
    """kick (every session), disable, enable, reset (send a reset code), mfa-reset,
    unlock (lift the login lock and clear the failures counted)."""

    TITLES = {
        "kick": ("Kick every session of {name}?", "Kick all sessions"),
        "disable": ("Disable {name}?", "Disable account"),
        "enable": ("Enable {name}?", "Enable account"),
        "reset": ("Send {name} a password-reset code?", "Send reset code"),
        "mfa-reset": ("Remove every second factor of {name}?", "Remove second factors"),
        "unlock": ("Lift the login lock of {name}?", "Unlock account"),
    }

    def default_next(self, account_id: str, action: str) -> str:
        return f"/console/accounts/{int(account_id)}"

    async def confirmation(self, account_id: str, action: str) -> Confirmation:
        overview = await self.admin.account_overview(int(account_id))
        account = overview.account
        live = sum(1 for s in overview.sessions if s.revoked_at is None)
        name = account_name(account)
        facts = [("Account", f"{name} (#{account.id})"), ("Live sessions", str(live))]
        if action == "mfa-reset":
            apps = sum(1 for f in overview.factors if f.confirmed and f.type == "totp")
            facts.append(("Second factors", f"{apps} authenticator app(s), {len(overview.passkeys)} passkey(s)"))
        if action == "reset":
            facts.append(("Sent to", account.email or account.phone or "nowhere: no e-mail or phone"))
        if action == "unlock":
            facts += lock_facts(overview.lock, self.clock())
        title, button = self.TITLES[action]
        return Confirmation(
            title.format(name=name),
            facts,
            button,
            self.self_warning(account, action),
            danger=action not in ("enable", "reset", "unlock"),
        )

    def self_warning(self, account: Account, action: str) -> str | None:
        if not self.is_me(account.id):
            return None
        return {
            "kick": "This is your own account: kicking its sessions logs you out of the console.",
            "disable": "This is your own account: you cannot disable it.",
            "mfa-reset": "This is your own account: you will be left without a second factor.",
        }.get(action)

    async def post(self, account_id: str, action: str) -> None:
        account = await self.accounts.get(int(account_id))
        ctx, note = self.context(), self.note()
        if action == "kick":
            await self.auth.kick_all(account.id, ctx, by=self.actor, note=note)
            if self.is_me(account.id):
                self.clear_console_cookie()
                self.redirect("/console/login", status=303)
                return
            done = "kicked_all"
        elif action in ("disable", "enable"):
            assert self.operator is not None
            disable = action == "disable"
            await self.auth.set_disabled(account, disable, ctx, by=self.actor, actor_id=self.operator.id, note=note)
            done = action + "d"
        elif action == "mfa-reset":
            await self.gatehouse.mfa.admin_reset(account, ctx, by=self.actor, note=note)
            done = "mfa_reset"
        elif action == "unlock":
            await self.auth.unlock(account, ctx, by=self.actor, note=note)
            done = "unlocked"
        else:  # reset
            done = "reset_sent" if await self.flows.send_reset(account, ctx) else "reset_nowhere"
        self.back(f"/console/accounts/{account.id}", done)


class PasskeyRemoveHandler(ActionHandler):
    def default_next(self, account_id: str, passkey_id: str) -> str:
        return f"/console/accounts/{int(account_id)}"

    async def confirmation(self, account_id: str, passkey_id: str) -> Confirmation:
        account = await self.accounts.get(int(account_id))
        passkey = await self.gatehouse.passkeys.get(account.id, passkey_id)
        now = self.clock()
        facts = [
            ("Account", f"{account_name(account)} (#{account.id})"),
            ("Passkey", passkey.name or "unnamed"),
            ("Added", age(passkey.created, now)),
            ("Last used", age(passkey.last_used, now) if passkey.last_used else "never"),
        ]
        warning = "This is your own passkey." if self.is_me(account.id) else None
        return Confirmation(
            f"Remove the passkey {passkey.name or ''} of {account_name(account)}?", facts, "Remove passkey", warning
        )

    async def post(self, account_id: str, passkey_id: str) -> None:
        flows = self.gatehouse.passkey_flows
        await flows.admin_remove(int(account_id), passkey_id, self.context(), by=self.actor, note=self.note())
        self.back(f"/console/accounts/{int(account_id)}", "passkey_removed")


def routes() -> list[tuple[str, Any]]:
    return [
        (r"/console/sessions/([0-9a-f]{32})/kick", KickHandler),
        (r"/console/accounts/([0-9]{1,12})/(kick|disable|enable|reset|mfa-reset|unlock)", AccountActionHandler),
        (r"/console/accounts/([0-9]{1,12})/passkeys/([A-Za-z0-9_-]{1,1400})/remove", PasskeyRemoveHandler),
    ]
