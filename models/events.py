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

from .common import Clock, Context, newest_first, parse_ip, seconds
from .db import insert_once
from .followups import Followups
from .stats import Stats, hour_of, hour_of_field

NEWEST = [("at", DESCENDING), ("_id", DESCENDING)]
MS = timedelta(milliseconds=1)  # the stored times' resolution
# Events counted by the hour for the dashboard (models/stats.py, series `logins`).
COUNTED = ("login_ok", "login_failed", "mfa_verified", "mfa_failed")
# The most events an IP-prefix search reads (models/search.py).
IP_PREFIX_CAP = 1001

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
    "mfa_challenge",
    "mfa_verified",
    "mfa_failed",
    "mfa_enrol",
    "mfa_factor_added",
    "mfa_factor_removed",
    "mfa_recovery_regenerated",
    "mfa_reset",
    "reauthenticate",
    "passkey_added",
    "passkey_renamed",
    "passkey_removed",
    "passkey_login",
    "passkey_failed",
    "passkey_clone_suspected",
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
        # Called with (type, outcome, the event's own fields) for every event recorded:
        # the metrics hook.
        self.listeners: list[Callable[[str, str, dict[str, Any]], None]] = []

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
        if type in COUNTED:
            await self.stats.apply(self.stats.add("logins", now, **{type: 1}))
        for listener in self.listeners:
            listener(type, outcome, extra)

    async def logins_by_hour(self, since: datetime) -> list[dict[str, Any]]:
        """The `logins` counters of each hour since `since`'s (models/stats.py)."""
        return await self.stats.buckets("logins", since=since)

    async def recount(self) -> None:
        """Set the `logins` counters of the last day from the events themselves (see
        Recounting in models/stats.py): one `type_at` range per counted type."""
        since = hour_of(self.clock()) - timedelta(hours=24)
        counts: dict[datetime, dict[str, int]] = {}
        for type in COUNTED:
            by_hour = await self.coll.aggregate(
                [
                    {"$match": {"type": type, "at": {"$gte": since}}},
                    {"$group": {"_id": hour_of_field("at"), "n": {"$sum": 1}}},
                ]
            )
            for found in await by_hour.to_list(None):
                counts.setdefault(found["_id"], {field: 0 for field in COUNTED})[type] = found["n"]
        await self.stats.replace("logins", since, counts)

    async def find(self, *, account_id: int | None = None, type: str | None = None, limit: int = 50) -> list[dict]:
        return await self.page(account_id=account_id, type=type, limit=limit)

    async def page(
        self,
        *,
        account_id: int | None = None,
        type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: tuple[datetime, ObjectId] | None = None,
        limit: int = 50,
        account_ids: list[int] | None = None,
        ip_prefix: str | None = None,
    ) -> list[dict]:
        """Events newest first by (at, _id), in [since, until) when given, and after
        `after`, the (at, _id) of the last one already seen, when given.

        A search (models/search.py) passes `account_ids` (several accounts: each one's
        page, merged) or `ip_prefix` (`by_ip`).

        Read in bounded slices of `at` (`newest_first`), on `account_at` with an
        account, else on `type_at` with a type, else on `at`: the filter is that one
        equality, then the `at` range (the key order the embedded planner needs:
        equalities, then one range on the next key). The rest is checked here."""
        window: dict[str, Any] = {"type": type, "since": since, "until": until, "after": after, "limit": limit}
        if ip_prefix is not None:
            return await self.by_ip(ip_prefix, **window)
        if account_ids is not None:
            pages = [await self.page(account_id=i, **window) for i in dict.fromkeys(account_ids)]
            return sorted((e for p in pages for e in p), key=lambda e: (e["at"], e["_id"]), reverse=True)[:limit]
        lead: dict[str, Any] = {"account_id": account_id} if account_id is not None else {"type": type} if type else {}
        return await self._page_led(lead, **window)

    async def _page_led(
        self,
        lead: dict[str, Any],
        *,
        type: str | None,
        since: datetime | None,
        until: datetime | None,
        after: tuple[datetime, ObjectId] | None,
        limit: int,
    ) -> list[dict]:
        """`page` on the index `lead`'s equality leads (see `page`)."""
        now = self.clock()

        def keep(event: dict) -> bool:
            return (not type or event["type"] == type) and (after is None or (event["at"], event["_id"]) < after)

        async def fetch(lo: datetime, hi: datetime, first: bool) -> list[dict]:
            query = {**lead, "at": {"$gte": lo, ("$lte" if first else "$lt"): hi}}
            docs = await self.coll.find(query).sort(NEWEST).to_list(length=None)
            return [e for e in docs if keep(e)]

        top = min(t for t in (now, after[0] if after else None, until - MS if until else None) if t is not None)
        floor = max(since or now - self.retention, now - self.retention)
        return await newest_first(fetch, top=top, floor=floor, need=limit)

    async def by_ip(
        self,
        ip: str,
        *,
        type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: tuple[datetime, ObjectId] | None = None,
        limit: int = 50,
    ) -> list[dict]:
        """Events from an address (`ip`, a whole one: the `ip_at` range of that address,
        in slices of time as `page`) or from any address starting with it (one range
        of `ip_at`, at most IP_PREFIX_CAP events read, newest first here)."""
        whole = parse_ip(ip)
        if whole is not None and str(whole) == ip:
            return await self._page_led({"ip": ip}, type=type, since=since, until=until, after=after, limit=limit)
        query = {"ip": {"$gte": ip, "$lt": ip + "\uffff"}}
        docs = await self.coll.find(query).limit(IP_PREFIX_CAP).to_list(None)
        docs = [
            e
            for e in docs
            if (not type or e["type"] == type)
            and (since is None or e["at"] >= since)
            and (until is None or e["at"] < until)
            and (after is None or (e["at"], e["_id"]) < after)
        ]
        return sorted(docs, key=lambda e: (e["at"], e["_id"]), reverse=True)[:limit]


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
