"""Counters kept as things happen, so that the dashboard, the admin stats and /metrics
never count a collection per page view or per scrape.

One small collection, `stats`, of hourly buckets: `{_id: "<series>:<hour>", series,
hour, …counters, expires_at}`, updated right after the write they count (one command,
never retried: a retried `$inc` could count twice). Read by an index range over
`(series, hour)`, so a read costs the buckets it sums (at most the longest session
lifetime in hours), whatever the number of sessions, accounts or events. A bucket
expires (TTL) a day after it can no longer be read.

The series, and what each figure tolerates:
  `expiring`  live sessions by the hour their `expires_at` falls in: +1 at creation, -1
              at revocation, and a `lastActive` write that moves `expires_at` into
              another hour moves the session between buckets (`Sessions`). The live
              count adds the buckets of the hours to come to an exact count of the
              current hour's (an index range of `expires_at`): exact.
  `logins`    `login_ok` / `login_failed` events by the hour they were recorded in
              (`EventLog.record`): exact.
  `active`    a HyperLogLog sketch (1024 registers, `$max` per register) of the accounts
              that started a session or were active in that hour (`Sessions`): the
              24-hour figure merges 25 hourly sketches, so it may include activity up to
              an hour older than 24 hours, and is an estimate: exact with high
              probability for a handful of accounts, about ±3% (one standard error) for
              large numbers (Keycloak's console shows no such figure; Grafana-style
              dashboards accept this).
A counter write that fails is logged and lost (the operation it counts is done); the
figure is then off by that much until the bucket leaves the window. Sessions created
before these counters existed are not in `expiring` until they end.
"""

from __future__ import annotations

import hashlib
import logging
import math
from datetime import datetime, timedelta
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

log = logging.getLogger("gatehouse")

HOUR = timedelta(hours=1)
SKETCH_BITS = 10  # 2**10 registers: about 1.04 / sqrt(1024) = 3.3% standard error
REGISTERS = 1 << SKETCH_BITS


def hour_of(when: datetime) -> datetime:
    return when.replace(minute=0, second=0, microsecond=0)


def sketch_entry(value: int | str) -> tuple[int, int]:
    """The HyperLogLog register a value falls in and the rank it offers there."""
    h = int.from_bytes(hashlib.sha256(str(value).encode()).digest()[:8], "big")
    register = h >> (64 - SKETCH_BITS)
    rest = h & ((1 << (64 - SKETCH_BITS)) - 1)
    return register, (64 - SKETCH_BITS) - rest.bit_length() + 1


def sketch_estimate(registers: dict[int, int]) -> int:
    """How many distinct values a merged sketch saw (linear counting while small)."""
    empty = REGISTERS - len(registers)
    if not registers:
        return 0
    raw = 0.7213 / (1 + 1.079 / REGISTERS) * REGISTERS**2 / (empty + sum(2.0**-r for r in registers.values()))
    if raw <= 2.5 * REGISTERS and empty:
        return round(REGISTERS * math.log(REGISTERS / empty))
    return round(raw)


class Stats:
    def __init__(self, db: AsyncDatabase, keep: timedelta) -> None:
        self.coll = db.stats
        # How long after its hour a bucket may still be read (the longest session
        # lifetime, for `expiring`), plus a day of slack.
        self.keep = max(keep, timedelta(days=1)) + timedelta(days=1)

    def add(self, series: str, when: datetime, **fields: int) -> UpdateOne:
        """`$inc` the fields of the bucket of `when`'s hour (upserted)."""
        return self._bucket(series, when, {"$inc": fields})

    def seen(self, series: str, when: datetime, value: int | str) -> UpdateOne:
        """Add a value to the bucket's HyperLogLog sketch."""
        register, rank = sketch_entry(value)
        return self._bucket(series, when, {"$max": {f"r.{register}": rank}})

    def _bucket(self, series: str, when: datetime, update: dict[str, Any]) -> UpdateOne:
        hour = hour_of(when)
        on_insert = {"series": series, "hour": hour, "expires_at": hour + self.keep}
        return UpdateOne({"_id": f"{series}:{hour.isoformat()}"}, {**update, "$setOnInsert": on_insert}, upsert=True)

    async def apply(self, *ops: UpdateOne) -> None:
        """Write counter updates in one command; a failure is logged, never raised."""
        if not ops:
            return
        try:
            await self.coll.bulk_write(list(ops), ordered=False)
        except PyMongoError as e:
            failed = type(e).__name__
            log.warning("%d counter update(s) not written (%s): the dashboard is off by them", len(ops), failed)

    async def buckets(self, series: str, since: datetime, until: datetime | None = None) -> list[dict[str, Any]]:
        """The buckets of `series` whose hour is in [since, until), oldest first. The
        filter names `series` (equality) then `hour` (the one range), the `series_hour`
        index's key order: the embedded database picks an index only for equalities
        followed by a single range on the next key."""
        hours: dict[str, Any] = {"$gte": since}
        if until is not None:
            hours["$lt"] = until
        found = self.coll.find({"series": series, "hour": hours}).sort("hour", 1)
        return await found.to_list(length=None)

    async def total(self, series: str, field: str, since: datetime) -> int:
        """The sum of a field over the buckets since `since`, added up by the database."""
        summed = await self.coll.aggregate(
            [
                {"$match": {"series": series, "hour": {"$gte": since}}},
                {"$group": {"_id": None, "n": {"$sum": f"${field}"}}},
            ]
        )
        found = await summed.to_list(length=1)
        return int(found[0]["n"]) if found else 0

    async def distinct(self, series: str, since: datetime) -> int:
        """The estimated number of distinct values seen in the buckets since `since`."""
        merged: dict[int, int] = {}
        for bucket in await self.buckets(series, since):
            for register, rank in (bucket.get("r") or {}).items():
                merged[int(register)] = max(merged.get(int(register), 0), int(rank))
        return sketch_estimate(merged)
