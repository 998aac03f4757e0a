"""The audit log: one document per security-relevant action, expired by a TTL index.

Callers pass facts (type, account, outcome, reason); secrets never belong here, and
free text from clients (user agents) is stored as data, never interpolated into logs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from .common import Clock, Context, seconds
from .db import insert_once
from .followups import Followups

EVENT_TYPES = (
    "signup",
    "login_ok",
    "login_failed",
    "logout",
    "refresh",
    "refresh_reuse",
    "code_sent",
    "code_failed",
    "code_verified",
    "password_changed",
    "password_reset",
    "kick",
    "disable",
    "enable",
    "delete",
    "revoke",
    "notice_failed",
    "code_requested",
    "ownership_proven",
    "contact_detached",
    "signup_rolled_back",
)


class EventLog:
    """Events are written after the operation they record has happened, so writing one
    never fails that operation: a failed insert is retried in the background
    (`Followups`), and each event carries its own `_id`, so a retry never doubles it."""

    def __init__(
        self, db: AsyncDatabase, clock: Clock, retention_days: int, followups: Followups | None = None
    ) -> None:
        self.coll = db.events
        self.clock = clock
        self.retention = seconds(retention_days * 86400)
        self.followups = followups or Followups()
        # Called with (type, outcome) for every event recorded: the metrics hook.
        self.listeners: list[Callable[[str, str], None]] = []

    async def record(
        self,
        type: str,
        ctx: Context | None,
        *,
        account_id: int | None = None,
        session_id: str | None = None,
        actor: str | None = None,
        outcome: str = "ok",
        reason: str | None = None,
        **extra: Any,
    ) -> None:
        now = self.clock()
        doc = {
            "_id": ObjectId(),
            "type": type,
            "at": now,
            "expires_at": now + self.retention,
            "account_id": account_id,
            "session_id": session_id,
            "actor": actor,
            "outcome": outcome,
            "reason": reason,
            "ip": ctx.ip if ctx else None,
            "user_agent": (ctx.user_agent[:512] if ctx else None),
            "style": ctx.style if ctx else None,
            "request_id": ctx.request_id if ctx else None,
        }
        doc.update(extra)
        await self.followups.run(f"audit event {type}", lambda: insert_once(self.coll, doc), None)
        for listener in self.listeners:
            listener(type, outcome)

    async def find(
        self,
        *,
        account_id: int | None = None,
        type: str | None = None,
        limit: int = 50,
    ) -> list[dict]:
        query: dict[str, Any] = {}
        if account_id is not None:
            query["account_id"] = account_id
        if type:
            query["type"] = type
        cursor = self.coll.find(query).sort("at", DESCENDING).limit(limit)
        return await cursor.to_list(length=limit)

    async def page(
        self,
        *,
        account_id: int | None = None,
        type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before: ObjectId | None = None,
        limit: int = 50,
    ) -> list[dict]:
        """Events newest first by `_id` (the order they were written in, and an index),
        in [since, until) when given, and older than the event `before` (the last one
        already seen) when given."""
        query: dict[str, Any] = {}
        if account_id is not None:
            query["account_id"] = account_id
        if type:
            query["type"] = type
        if since or until:
            query["at"] = {**({"$gte": since} if since else {}), **({"$lt": until} if until else {})}
        if before is not None:
            query["_id"] = {"$lt": before}
        return await self.coll.find(query).sort("_id", DESCENDING).limit(limit).to_list(length=limit)

    async def count_by_hour(self, types: Iterable[str], since: datetime) -> list[tuple[str, datetime, int]]:
        """(type, hour, how many) for the events of these types since `since`, by the
        hour they happened in (truncated to the hour, UTC)."""
        rows = await self.coll.aggregate(
            [
                {"$match": {"type": {"$in": list(types)}, "at": {"$gte": since}}},
                {
                    "$group": {
                        "_id": {"type": "$type", "hour": {"$dateTrunc": {"date": "$at", "unit": "hour"}}},
                        "n": {"$sum": 1},
                    }
                },
            ]
        )
        return [(row["_id"]["type"], row["_id"]["hour"], row["n"]) for row in await rows.to_list(length=None)]


def event_view(event: dict) -> dict:
    return {
        "id": str(event["_id"]),
        "type": event["type"],
        "at": event["at"].isoformat(),
        "account_id": event.get("account_id"),
        "session_id": event.get("session_id"),
        "actor": event.get("actor"),
        "outcome": event.get("outcome"),
        "reason": event.get("reason"),
        "ip": event.get("ip"),
        "userAgent": event.get("user_agent"),
        "style": event.get("style"),
    }
