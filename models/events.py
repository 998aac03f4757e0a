"""The audit log: one document per security-relevant action, expired by a TTL index.

Callers pass facts (type, account, outcome, reason); secrets never belong here, and
free text from clients (user agents) is stored as data, never interpolated into logs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from .common import Clock, Context, newest_first, seconds
from .db import insert_once
from .followups import Followups
from .stats import Stats

# Events counted by the hour for the dashboard (models/stats.py, series `logins`).
COUNTED = ("login_ok", "login_failed")

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
        self,
        db: AsyncDatabase,
        clock: Clock,
        retention_days: int,
        followups: Followups | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.coll = db.events
        self.clock = clock
        self.retention = seconds(retention_days * 86400)
        self.followups = followups or Followups()
        self.stats = stats or Stats(db, timedelta(days=1))
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
            "_id": event_id(now),
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
        if type in COUNTED:
            await self.stats.apply(self.stats.add("logins", now, **{type: 1}))
        for listener in self.listeners:
            listener(type, outcome)

    async def find(self, *, account_id: int | None = None, type: str | None = None, limit: int = 50) -> list[dict]:
        return await self.page(account_id=account_id, type=type, limit=limit)

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
        already seen) when given.

        Read in bounded slices of `_id` (`newest_first`: the ids' own time), on the
        `account_id` index with an account, else on `type_id` with a type, else on
        `_id`'s: the filter is that one equality, then the `_id` range (the key order
        the embedded planner needs). The other conditions are checked here."""
        now = self.clock()
        lead: dict[str, Any] = {"account_id": account_id} if account_id is not None else {"type": type} if type else {}

        def keep(event: dict) -> bool:
            at = event["at"]
            return (not type or event["type"] == type) and (not since or at >= since) and (not until or at < until)

        async def fetch(lo: datetime, hi: datetime, first: bool) -> list[dict]:
            # Whole seconds (an id's time): a slice may hold a little more than [lo, hi).
            ids: dict[str, Any] = {"$gte": ObjectId.from_datetime(lo), "$lt": ObjectId.from_datetime(hi)}
            if first and before is not None:
                ids["$lt"] = before
            docs = await self.coll.find({**lead, "_id": ids}).sort("_id", DESCENDING).to_list(length=None)
            return [e for e in docs if keep(e)]

        top = min(until or now, before.generation_time if before else now) + seconds(1)
        floor = max(since or now - self.retention, now - self.retention) - seconds(1)
        return await newest_first(fetch, top=top, floor=floor, need=limit)


def event_id(at: datetime) -> ObjectId:
    """A new ObjectId whose time is `at` (the domain's clock: the database's, or a
    test's), so that `_id` ranges are time ranges; the rest of it is a fresh
    ObjectId's, unique and increasing within this process."""
    fresh = ObjectId().binary
    return ObjectId(int(at.timestamp()).to_bytes(4, "big") + fresh[4:])


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
