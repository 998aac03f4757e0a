"""What administrators see and do: session lists across accounts, account search, the
audit log, and the dashboard's numbers. The console and the admin API both call this;
neither queries MongoDB itself.

Lists page with opaque cursors over an indexed sort key (`last_active, _id` for sessions,
`_id` for events), so the thousandth page costs what the first does.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from .accounts import Accounts
from .common import Clock, epoch
from .errors import AccountNotFound, InvalidRequest
from .events import EVENT_TYPES
from .sessions import KINDS, Sessions, session_view
from .values import Account, Session


@dataclass
class Page:
    items: list[dict]
    next: str | None


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise InvalidRequest("'cursor' is not one this server handed out", field="cursor") from None
    if not isinstance(parts, list) or len(parts) != arity:
        raise InvalidRequest("'cursor' is not one this server handed out", field="cursor")
    return parts


def one_of(field: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidRequest(f"'{field}' must be one of {', '.join(allowed)}", field=field)
    return value


class Admin:
    def __init__(self, db: AsyncDatabase, accounts: Accounts, sessions: Sessions, clock: Clock) -> None:
        self.db = db
        self.accounts = accounts
        self.session_store = sessions
        self.clock = clock

    async def account_ref(self, ref: str | None) -> Account | None:
        """The account an admin named by id, uid, username, e-mail or phone. An unknown
        reference is a 404, not an empty list: a typo should not look like "no sessions"."""
        if not ref:
            return None
        account = await self.accounts.find_any(ref.strip())
        if account is None:
            raise AccountNotFound("no account matches " + repr(ref[:80]))
        return account

    async def sessions(
        self,
        *,
        account: Account | None = None,
        kind: str | None = None,
        active: bool = False,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """Sessions by lastActive, newest first. Without `active`, revoked sessions that
        have not expired yet are listed too (marked), so a kick stays visible."""
        query: dict[str, Any] = {"expires_at": {"$gt": self.clock()}}
        if account is not None:
            query["account_id"] = account.id
        if kind:
            query["kind"] = one_of("kind", kind, KINDS)
        if active:
            query["revoked_at"] = None
        if cursor:
            last_ms, last_id = decode_cursor(cursor, 2)
            if not isinstance(last_ms, int) or not isinstance(last_id, str):
                raise InvalidRequest("'cursor' is not one this server handed out", field="cursor")
            last = datetime.fromtimestamp(last_ms / 1000, tz=UTC)
            query["$or"] = [{"last_active": {"$lt": last}}, {"last_active": last, "_id": {"$lt": last_id}}]
        found = (
            await self.db.sessions.find(query, {"token_hash": 0})
            .sort([("last_active", DESCENDING), ("_id", DESCENDING)])
            .limit(limit + 1)
            .to_list(length=limit + 1)
        )
        nxt = None
        if len(found) > limit:
            found = found[:limit]
            tail = found[-1]
            nxt = encode_cursor(int(tail["last_active"].timestamp() * 1000), tail["_id"])
        owners = await self.accounts.coll.find(
            {"id": {"$in": list({s["account_id"] for s in found})}}, {"id": 1, "uid": 1, "username": 1, "phone": 1}
        ).to_list(length=None)
        by_id = {a["id"]: a for a in owners}
        for s in found:
            s["account"] = by_id.get(s["account_id"])
        return Page(found, nxt)

    async def events(
        self,
        *,
        account: Account | None = None,
        type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        query: dict[str, Any] = {}
        if account is not None:
            query["account_id"] = account.id
        if type:
            query["type"] = one_of("type", type, EVENT_TYPES)
        if since or until:
            query["at"] = {**({"$gte": since} if since else {}), **({"$lt": until} if until else {})}
        if cursor:
            (last,) = decode_cursor(cursor, 1)
            try:
                query["_id"] = {"$lt": ObjectId(last)}
            except (InvalidId, TypeError):
                raise InvalidRequest("'cursor' is not one this server handed out", field="cursor") from None
        found = await self.db.events.find(query).sort("_id", DESCENDING).limit(limit + 1).to_list(length=limit + 1)
        nxt = encode_cursor(str(found[limit - 1]["_id"])) if len(found) > limit else None
        return Page(found[:limit], nxt)

    async def dashboard(self) -> dict[str, Any]:
        """The console's front page numbers, all over the last 24 hours."""
        now = self.clock()
        day_ago = now - timedelta(hours=24)
        active_accounts = await self.db.sessions.aggregate(
            [{"$match": {"last_active": {"$gte": day_ago}}}, {"$group": {"_id": "$account_id"}}, {"$count": "n"}]
        )
        counted = await active_accounts.to_list(length=1)
        by_hour = await self.db.events.aggregate(
            [
                {"$match": {"type": {"$in": ["login_ok", "login_failed"]}, "at": {"$gte": day_ago}}},
                {
                    "$group": {
                        "_id": {"type": "$type", "hour": {"$dateTrunc": {"date": "$at", "unit": "hour"}}},
                        "n": {"$sum": 1},
                    }
                },
            ]
        )
        hours = [(now - timedelta(hours=h)).replace(minute=0, second=0, microsecond=0) for h in range(23, -1, -1)]
        chart = {epoch(h): {"hour": epoch(h), "login_ok": 0, "login_failed": 0} for h in hours}
        totals = {"login_ok": 0, "login_failed": 0}
        for row in await by_hour.to_list(length=None):
            totals[row["_id"]["type"]] += row["n"]
            bucket = chart.get(epoch(row["_id"]["hour"]))
            if bucket is not None:
                bucket[row["_id"]["type"]] += row["n"]
        return {
            "active_sessions": await self.session_store.count_live(),
            "active_accounts_24h": counted[0]["n"] if counted else 0,
            "logins_24h": totals["login_ok"],
            "failed_logins_24h": totals["login_failed"],
            "accounts": await self.db.accounts.estimated_document_count(),
            "by_hour": list(chart.values()),
        }

    async def outbox(self, limit: int = 100) -> list[dict]:
        return await self.db.outbox.find().sort("at", DESCENDING).limit(limit).to_list(length=limit)


def admin_session_view(session: dict) -> dict:
    """A session as the admin API lists it: whose it is, and how it ended if it did."""
    owner = session.get("account") or {}
    return {
        **session_view(Session.from_doc(session)),
        "account": {"id": session["account_id"], "uid": owner.get("uid"), "username": owner.get("username")},
        "revokedReason": session.get("revoked_reason"),
        "revokedBy": session.get("revoked_by"),
    }
