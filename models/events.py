"""The audit log: one document per security-relevant action, expired by a TTL index.

Callers pass facts (type, account, outcome, reason); secrets never belong here, and
free text from clients (user agents) is stored as data, never interpolated into logs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from .common import Clock, Context, newest_first, seconds
from .db import insert_once
from .followups import Followups
from .stats import Stats, hour_of, hour_of_field

NEWEST = [("at", DESCENDING), ("_id", DESCENDING)]
MS = timedelta(milliseconds=1)  # the stored times' resolution
# Events counted by the hour for the dashboard (models/stats.py, series `logins`).
COUNTED = ("login_ok", "login_failed", "mfa_verified", "mfa_failed")
# The most events an IP-prefix search reads (models/search.py).

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
    "account_locked",
    "login_locked",
    "unlock",
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
        doc.update({k: v for k, v in extra.items() if v is not None})  # an absent note is no note
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
    ) -> list[dict]:
        """Events newest first by (at, _id), in [since, until) when given, and after
        `after`, the (at, _id) of the last one already seen, when given."""
        query = EventQuery(account_id=account_id, type=type, since=since, until=until)
        return (await self.search(query, after=after, limit=limit)).items

    async def search(
        self,
        query: EventQuery,
        *,
        after: tuple[datetime, ObjectId] | None = None,
        limit: int = 50,
        budget: int | None = None,
    ) -> Found:
        """The events `query` matches, newest first by (at, _id), after `after`.

        A search (models/search.py) passes `account_ids` (several accounts: each one's
        page, merged) or `ip_prefix` (`by_ip`).

        Read in bounded slices of `at` (`newest_first`), on `account_at` with an
        account, else on `type_at` with a type, else on `at`: the filter is that one
        equality, then the `at` range (the key order the embedded planner needs:
        equalities, then one range on the next key). The rest (outcome, IP) is checked
        here, so a rare match could read the whole retention period: with a `budget`,
        the search stops once it has read that many events, and says how far back it
        looked (`Found.searched_to`), for the caller to offer "search older"."""
        if query.account_ids is not None:  # a search's matches: each one's events, merged
            return await self._of_accounts(query, after=after, limit=limit, budget=budget)
        now = self.clock()
        lead: dict[str, Any] = {"type": query.type} if query.type else {}
        if query.account_id is not None:
            lead = {"account_id": query.account_id}
        elif query.ip and is_address(query.ip):
            lead = {"ip": query.ip}  # `ip_at`: that address's events only
        keep = query.matcher()
        floor = max(query.since or now - self.retention, now - self.retention)
        collected: list[dict] = []
        read, stopped = 0, []

        async def fetch(lo: datetime, hi: datetime, first: bool) -> list[dict]:
            nonlocal read
            if stopped:
                raise _BudgetSpent
            docs = self.coll.find({**lead, "at": {"$gte": lo, ("$lte" if first else "$lt"): hi}}).sort(NEWEST)
            found = await docs.to_list(length=None)
            read += len(found)
            got = [e for e in found if keep(e) and (after is None or (e["at"], e["_id"]) < after)]
            collected.extend(got)
            if budget is not None and read >= budget and lo > floor:
                stopped.append(lo)
            return got

        until = query.until - MS if query.until else None
        top = min(t for t in (now, after[0] if after else None, until) if t is not None)
        try:
            items = await newest_first(fetch, top=top, floor=floor, need=limit)
        except _BudgetSpent:
            return Found(collected[:limit], stopped[0])
        return Found(items, None)

    async def _of_accounts(
        self, query: EventQuery, *, after: tuple[datetime, ObjectId] | None, limit: int, budget: int | None
    ) -> Found:
        """Several accounts' events (at most a search's SEARCH_ACCOUNTS of them), newest
        first: one bounded search per account on `account_at`, merged, sharing the
        budget. When some stopped early, the page holds only what every one of them
        read (back to the latest stop), and says so."""
        ids = list(dict.fromkeys(query.account_ids or ()))
        share = max(budget // max(len(ids), 1), 100) if budget else None
        found: list[dict] = []
        stops: list[datetime] = []
        for account_id in ids:
            one = replace(query, account_ids=None, account_id=account_id)
            got = await self.search(one, after=after, limit=limit, budget=share)
            found += got.items
            stops += [got.searched_to] if got.searched_to else []
        to = max(stops, default=None)
        kept = [e for e in found if to is None or e["at"] >= to]
        return Found(sorted(kept, key=lambda e: (e["at"], e["_id"]), reverse=True)[:limit], to)


class _BudgetSpent(Exception):
    """A search read its budget of events before finding a page (`EventLog.search`)."""


@dataclass(frozen=True)
class EventQuery:
    """Which events a list shows; every part optional. `ip` is an address (that one
    only, read on `ip_at`) or the start of one (`10.0.`, `2001:db8:`: checked on the
    events the other filters read)."""

    account_id: int | None = None
    account_ids: tuple[int, ...] | None = None  # a search's matches (None: no such filter)
    type: str | None = None
    outcome: str | None = None
    ip: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matcher(self) -> Callable[[dict], bool]:
        type, outcome, ip = self.type, self.outcome, self.ip
        exact = ip is not None and is_address(ip)

        def keep(event: dict) -> bool:
            if (type and event["type"] != type) or (outcome and event.get("outcome") != outcome):
                return False
            seen = event.get("ip") or ""
            return not ip or (seen == ip if exact else seen.startswith(ip))

        return keep


@dataclass(frozen=True)
class Found:
    """A search's events, and when it stopped early for its budget, the time it had
    looked back to (every event in [searched_to, top] was read)."""

    items: list[dict]
    searched_to: datetime | None


def is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


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
        # Present on some types only: the login name an unknown account's failed login
        # tried, an operator's reason, and the session a kick ended.
        "login": event.get("login"),
        "note": event.get("note"),
        "target": _jsonable(event.get("target")),
    }


def _jsonable(value: Any) -> Any:
    """A stored sub-document as JSON: its times as ISO 8601."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value.isoformat() if isinstance(value, datetime) else value
