"""The admin API (`/admin/api/…`): the console's operations as JSON, for scripts.

Callers are an administrator's session (opaque token or JWT access token, raw or
`Bearer`) or a service key from GATEHOUSE_SERVICE_KEYS. Answers are plain JSON;
errors are `{"error": "<CODE>", "message": "…"}`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from models.accounts import account_view
from models.admin import admin_session_view
from models.errors import InvalidRequest, NotAuthenticated
from models.events import event_view
from models.locks import lock_view
from models.mfa import factor_view
from models.passkeys import passkey_view
from models.sessions import session_view
from models.validation import Field, operator_note, parse_fields
from models.values import Account

from .base import APIHandler
from .fields import (
    ACCOUNT_REF,
    ACCOUNT_SORT,
    ACTIVE,
    CURSOR,
    EVENT_TYPE,
    IP_PREFIX,
    LIMIT,
    LIST_ORDER,
    NOTE,
    OUTCOME,
    PAGE,
    SEARCH,
    SESSION_KIND,
    SORT_ORDER,
    TIME,
)
from .openapi import SESSION
from .spec import BOOL, EPOCH, INT, STR, Route, Schema, array, doc, nullable, obj, ref

ADMIN_SESSION = obj(
    {
        **SESSION,
        "account": obj({"id": INT, "uid": nullable(STR), "username": nullable(STR)}),
        "revokedReason": nullable(STR),
        "revokedBy": nullable(STR),
    }
)
# What a search (`q`, models/search.py) matched each account by: account id -> labels
# ("username", "id 134", "phone ending 0134", "ip 10.1.", …).
MATCHED_BY: Schema = {"type": "object", "additionalProperties": array(STR)}


def matched_view(matched: dict[int, list[str]]) -> dict[str, list[str]]:
    return {str(k): list(v) for k, v in matched.items()}


EVENT = obj(
    {
        "id": STR,
        "type": STR,
        "at": STR,
        "account_id": nullable(INT),
        "session_id": nullable(STR),
        "actor": nullable(STR),
        "outcome": nullable(STR),
        "reason": nullable(STR),
        "ip": nullable(STR),
        "userAgent": nullable(STR),
        "style": nullable(STR),
        # The login name an unknown account's failed login tried (normalized, at most 64
        # characters); an operator's reason; the session a kick ended.
        "login": nullable(STR),
        "note": nullable(STR),
        "target": nullable(
            obj(
                {"kind": nullable(STR), "ip": nullable(STR), "user_agent": nullable(STR), "created": nullable(STR)},
                optional=("kind", "ip", "user_agent", "created"),
                closed=False,
            )
        ),
    }
)
ACCOUNT_STATE = obj({"account": ref("Account"), "sessionsEnded": INT})
# An account's login record (models/locks.py `lock_view`): null when it is not locked
# and no failed login counts in the current window.
LOCK = nullable(
    obj(
        {
            "locked": BOOL,
            "until": nullable(EPOCH),
            "secondsLeft": INT,
            "reason": nullable(STR),
            "failures": INT,
            "limit": INT,
            "window": INT,
            "strikes": INT,
            "duration": nullable(INT),
            "refused": INT,
        }
    )
)


class AdminAPIHandler(APIHandler):
    style = "admin"
    actor = "service"
    cors = False  # never to browser apps, whatever GATEHOUSE_CORS_ORIGINS says
    security = ("bearer", "token", "serviceKey")  # in /openapi.json

    @classmethod
    def error_schema(cls) -> Schema:
        return obj({"error": STR, "message": STR})

    def error_envelope(self, status: int, code: str, message: str, exc: BaseException | None) -> Any:
        return {"error": code, "message": message}

    async def authenticate(self) -> None:
        if not self.bearer_token():
            raise NotAuthenticated("send an administrator's session token or a service key in Authorization")
        if self.presents_secret(self.config.server.service_keys):
            return
        await super().authenticate()
        self.auth.require_admin(self.current_account)
        self.actor = f"admin:{self.current_account.id}"

    def query(self, spec: dict[str, Field]) -> dict[str, Any]:
        return parse_fields({k: self.get_query_argument(k, None) for k in spec}, spec)

    async def account(self, account_id: str) -> Account:
        return await self.accounts.get(int(account_id))

    # An action's optional `?reason=`: the administrator's why, kept in its audit event
    # (the console's confirmation pages ask for the same).
    REASON = {"reason": NOTE}

    def note(self) -> str | None:
        return operator_note(self.query(self.REASON).get("reason"))


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def parse_time(name: str, value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"'{name}' must be an ISO 8601 time, like 2026-01-31T12:00:00Z", field=name) from None
    if when.tzinfo is None:
        raise InvalidRequest(f"'{name}' needs a time zone (Z or +hh:mm)", field=name)
    return sane_time(name, when)


def sane_time(name: str, when: datetime) -> datetime:
    """A filter's time in UTC, between 1970 and 2200 (year 1 or 9999 would overflow the
    arithmetic done with it)."""
    try:
        utc = when.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        raise InvalidRequest(f"'{name}' must be between 1970 and 2200", field=name)
    return utc


class SessionsHandler(AdminAPIHandler):
    QUERY = {
        "q": SEARCH,
        "account": ACCOUNT_REF,
        "kind": SESSION_KIND,
        "active": ACTIVE,
        "order": LIST_ORDER,
        "limit": LIMIT,
        "cursor": CURSOR,
    }

    @doc(
        "Sessions across accounts, newest activity first (kicked ones stay listed until they expire); "
        "`q` searches (the search rule: names, e-mail, phone, id, uid, IP), `order=oldest` starts at the end; "
        "`count` is the list's size up to a cap (`capped`: more)",
        query=QUERY,
        ok=obj(
            {
                "sessions": array(ADMIN_SESSION),
                "next": nullable(STR),
                "count": nullable(INT),
                "capped": BOOL,
                "matchedBy": MATCHED_BY,
            }
        ),
        errors=(403, 404),
    )
    async def get(self) -> None:
        q = self.query(self.QUERY)
        if q.get("active") not in (None, "true", "false", "1", "0"):
            raise InvalidRequest("'active' must be true or false", field="active")
        order = q.get("order") or "newest"
        if order not in ("newest", "oldest"):
            raise InvalidRequest("'order' must be one of newest, oldest", field="order")
        page = await self.admin.sessions(
            account=await self.admin.account_ref(q.get("account")),
            q=q.get("q"),
            kind=q.get("kind"),
            active=q.get("active") in ("true", "1"),
            limit=q.get("limit", 50),
            cursor=q.get("cursor"),
            oldest=order == "oldest",
        )
        self.reply(
            {
                "sessions": [admin_session_view(s) for s in page.items],
                "next": page.next,
                "count": page.count,
                "capped": page.capped,
                "matchedBy": matched_view(page.matched_by),
            }
        )


class SessionHandler(AdminAPIHandler):
    @doc(
        "Kick one session: its token is refused from now on",
        query=AdminAPIHandler.REASON,
        ok=obj({"kicked": STR}),
        errors=(403, 404),
    )
    async def delete(self, session_id: str) -> None:
        await self.auth.kick(session_id, self.context(), by=self.actor, note=self.note())
        self.reply({"kicked": session_id})


class AccountsHandler(AdminAPIHandler):
    QUERY = {"q": SEARCH, "page": PAGE, "limit": LIMIT, "sort": ACCOUNT_SORT, "order": SORT_ORDER}

    @doc(
        "Accounts: all by id, or a search `q` (the search rule: username or nickname prefix, e-mail or its "
        "part or domain, phone in any format or its last digits, id, uid prefix, IP prefix), with what each "
        "matched by; `sort` created | last_active | sessions (the last two for a search's matches), `order`",
        query=QUERY,
        ok=obj(
            {
                "accounts": array(ref("Account")),
                "count": INT,
                "capped": BOOL,
                "page": INT,
                "pages": INT,
                "matchedBy": MATCHED_BY,
            }
        ),
        errors=(403,),
    )
    async def get(self) -> None:
        q = self.query(self.QUERY)
        page = q.get("page", 1)
        order = q.get("order") or "asc"
        if order not in ("asc", "desc"):
            raise InvalidRequest("'order' must be one of asc, desc", field="order")
        found = await self.admin.account_page(
            page=page, limit=q.get("limit", 50), q=q.get("q"), sort=q.get("sort"), desc=order == "desc"
        )
        self.reply(
            {
                "accounts": [account_view(a) for a in found.accounts],
                "count": found.count,
                "capped": found.capped,
                "page": page,
                "pages": found.pages,
                "matchedBy": matched_view(found.matched_by),
            }
        )


class AccountHandler(AdminAPIHandler):
    @doc(
        "One account with its sessions (kicked ones marked until they expire) and recent events",
        ok=obj(
            {
                "account": ref("Account"),
                "sessions": array(ref("Session")),
                "events": array(EVENT),
                "factors": array(ref("Factor")),
                "recoveryCodesLeft": INT,
                "passkeys": array(ref("Passkey")),
                "lock": LOCK,
            }
        ),
        errors=(403, 404),
    )
    async def get(self, account_id: str) -> None:
        """The console's account page as JSON (`Admin.account_overview`): kicked sessions
        are listed, marked `revoked`, until they expire."""
        overview = await self.admin.account_overview(int(account_id))
        self.reply(
            {
                "account": account_view(overview.account),
                "sessions": [session_view(s) for s in overview.sessions],
                "events": [event_view(e) for e in overview.events],
                "factors": [factor_view(f) for f in overview.factors],
                "recoveryCodesLeft": overview.recovery_left,
                "passkeys": [passkey_view(p) for p in overview.passkeys],
                "lock": lock_view(overview.lock),
            }
        )


class PasskeyRemoveHandler(AdminAPIHandler):
    @doc(
        "Remove one of the account's passkeys (audited; the owner is told)",
        query=AdminAPIHandler.REASON,
        ok=obj({"removed": STR}),
        errors=(403, 404),
    )
    async def delete(self, account_id: str, passkey_id: str) -> None:
        account = await self.account(account_id)
        flows = self.gatehouse.passkey_flows
        passkey = await flows.admin_remove(account.id, passkey_id, self.context(), by=self.actor, note=self.note())
        self.reply({"removed": passkey.id})


class MfaResetHandler(AdminAPIHandler):
    @doc(
        "Remove every second factor of the account (audited; the owner is told): for a user who lost them",
        query=AdminAPIHandler.REASON,
        ok=obj({"removed": INT}),
        errors=(403, 404),
    )
    async def post(self, account_id: str) -> None:
        account = await self.account(account_id)
        removed = await self.gatehouse.mfa.admin_reset(account, self.context(), by=self.actor, note=self.note())
        self.reply({"removed": removed})


class KickAllHandler(AdminAPIHandler):
    @doc("Kick every session of the account", query=AdminAPIHandler.REASON, ok=obj({"kicked": INT}), errors=(403, 404))
    async def post(self, account_id: str) -> None:
        account = await self.account(account_id)
        self.reply({"kicked": await self.auth.kick_all(account.id, self.context(), by=self.actor, note=self.note())})


class UnlockHandler(AdminAPIHandler):
    @doc(
        "Lift the account's login lock and clear its failed-login count (audited as `unlock`, with the reason)",
        query=AdminAPIHandler.REASON,
        ok=obj({"unlocked": INT, "wasLocked": BOOL}),
        errors=(403, 404),
    )
    async def post(self, account_id: str) -> None:
        note = self.note()
        account = await self.account(account_id)
        before = await self.auth.unlock(account, self.context(), by=self.actor, note=note)
        self.reply({"unlocked": account.id, "wasLocked": before.locked})


class DisableHandler(AdminAPIHandler):
    disable = True

    @doc(
        "Disable (and kick every session) or enable the account",
        query=AdminAPIHandler.REASON,
        ok=ACCOUNT_STATE,
        errors=(403, 404),
    )
    async def post(self, account_id: str) -> None:
        account = await self.account(account_id)
        caller = self.caller_or_none
        actor_id = caller.account.id if caller else None
        ctx, note = self.context(), self.note()
        ended = await self.auth.set_disabled(account, self.disable, ctx, by=self.actor, actor_id=actor_id, note=note)
        self.reply({"account": account_view(replace(account, disabled=self.disable)), "sessionsEnded": ended})


class EnableHandler(DisableHandler):
    disable = False


class ResetCodeHandler(AdminAPIHandler):
    @doc(
        "Send the account a password-reset code (e-mail, else SMS)",
        ok=obj({"sent": BOOL, "channel": nullable(STR)}),
        errors=(403, 404, 429),
    )
    async def post(self, account_id: str) -> None:
        account = await self.account(account_id)
        channel = await self.flows.send_reset(account, self.context())
        self.reply({"sent": channel is not None, "channel": channel})


class EventsHandler(AdminAPIHandler):
    QUERY = {
        "q": SEARCH,
        "account": ACCOUNT_REF,
        "type": EVENT_TYPE,
        "outcome": OUTCOME,
        "ip": IP_PREFIX,
        "since": TIME,
        "until": TIME,
        "limit": LIMIT,
        "cursor": CURSOR,
    }

    @doc(
        "The audit log, newest first; `q` searches (the search rule): the events of the accounts it matches"
        " (`matchedBy`), or from the IP address or prefix it is; filters: account, type, outcome (ok or failed),"
        " ip (an address, or the start of one), since and until (ISO 8601 with a zone). A page stops after"
        " reading 5,000 events, so it may hold fewer than `limit` and still have a `next`",
        query=QUERY,
        ok=obj({"events": array(EVENT), "next": nullable(STR), "matchedBy": MATCHED_BY}),
        errors=(403, 404),
    )
    async def get(self) -> None:
        q = self.query(self.QUERY)
        scope = await self.admin.search_scope(q.get("q"))
        page = await self.admin.events(
            account=await self.admin.account_ref(q.get("account")),
            account_ids=scope.account_ids,
            ip_prefix=scope.ip_prefix,
            type=q.get("type"),
            outcome=q.get("outcome"),
            ip=q.get("ip"),
            since=parse_time("since", q.get("since")),
            until=parse_time("until", q.get("until")),
            limit=q.get("limit", 50),
            cursor=q.get("cursor"),
        )
        events = [event_view(e) for e in page.items]
        self.reply({"events": events, "next": page.next, "matchedBy": matched_view(scope.matched_by)})


class StatsHandler(AdminAPIHandler):
    @doc(
        "The dashboard's numbers (last 24 hours)",
        ok=obj(
            {
                "active_sessions": INT,
                "active_accounts_24h": INT,
                "logins_24h": INT,
                "failed_logins_24h": INT,
                "mfa_24h": INT,
                "failed_mfa_24h": INT,
                "accounts": INT,
                "by_hour": array(obj({"hour": EPOCH, "login_ok": INT, "login_failed": INT})),
            }
        ),
        errors=(403,),
    )
    async def get(self) -> None:
        self.reply(await self.admin.dashboard())


def routes() -> list[Route]:
    return [
        Route("/admin/api/sessions", SessionsHandler),
        Route("/admin/api/sessions/{session_id}", SessionHandler),
        Route("/admin/api/accounts", AccountsHandler),
        Route("/admin/api/accounts/{account_id}", AccountHandler),
        Route("/admin/api/accounts/{account_id}/kick", KickAllHandler),
        Route("/admin/api/accounts/{account_id}/disable", DisableHandler),
        Route("/admin/api/accounts/{account_id}/enable", EnableHandler),
        Route("/admin/api/accounts/{account_id}/unlock", UnlockHandler),
        Route("/admin/api/accounts/{account_id}/reset", ResetCodeHandler),
        Route("/admin/api/accounts/{account_id}/mfa/reset", MfaResetHandler),
        Route("/admin/api/accounts/{account_id}/passkeys/{passkey_id}", PasskeyRemoveHandler),
        Route("/admin/api/events", EventsHandler),
        Route("/admin/api/stats", StatsHandler),
    ]
