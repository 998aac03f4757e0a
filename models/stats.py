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
figure is then off by that much until the bucket leaves the window.

Recounting. Data the counters never saw (sessions and events from before they existed,
a restore, a bulk import, the benchmark's seed) is brought in by a recount: each series'
buckets are *set* (not added to) from bounded index ranges of the data, so a recount can
run at any time and twice is the same as once. The first process to start on a database
without the `recounted` marker runs one in the background; `python server.py recount`
runs one by hand. A session or event written while a recount runs (between its read and
its write, seconds at a million documents) can leave its bucket off by one; the error
leaves the figure when that bucket's hour has passed. The `active` sketch is recounted
from each session's last activity only (earlier hours of activity are not kept).
"""

from __future__ import annotations

import hashlib
import logging
import math
from datetime import datetime, timedelta
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

log = logging.getLogger("gatehouse")

HOUR = timedelta(hours=1)
SKETCH_BITS = 10  # 2**10 registers: about 1.04 / sqrt(1024) = 3.3% standard error
REGISTERS = 1 << SKETCH_BITS
BUCKET_KEYS = {"_id", "series", "hour", "expires_at", "r"}  # a bucket's fields that are not counts
RECOUNTED = "recounted"  # the marker: the counters have been recounted on this database


def hour_of(when: datetime) -> datetime:
    return when.replace(minute=0, second=0, microsecond=0)


def hour_of_field(field: str) -> dict[str, Any]:
    """`hour_of` as an aggregation expression over a date field (a recount's `$group`)."""
    return {"$dateTrunc": {"date": f"${field}", "unit": "hour"}}


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

    async def claim_recount(self, now: datetime) -> bool:
        """True for the one process (of all, ever) that first finds this database's
        counters never recounted: it records the marker and runs the recount."""
        try:
            await self.coll.insert_one({"_id": RECOUNTED, "at": now})
        except DuplicateKeyError:
            return False
        return True

    async def release_recount(self) -> None:
        """A recount that did not finish: the next process to start claims it again."""
        await self.coll.delete_one({"_id": RECOUNTED})

    async def merge_sketches(self, series: str, sketches: dict[datetime, dict[int, int]]) -> None:
        """Merge whole sketches (hour → registers) into the series' buckets (a recount's:
        `$max` per register, so merging twice is merging once)."""
        ops = [
            self._bucket(series, hour, {"$max": {f"r.{register}": rank for register, rank in registers.items()}})
            for hour, registers in sketches.items()
        ]
        if ops:
            await self.coll.bulk_write(ops, ordered=False)

    async def replace(self, series: str, since: datetime, counts: dict[datetime, dict[str, int]]) -> None:
        """Set the buckets of `series` from `since`'s hour on to `counts` (hour → fields);
        the buckets in that range that `counts` leaves out are set to zero."""
        existing = await self.buckets(series, since)
        fields = {field for values in counts.values() for field in values}
        fields |= {field for bucket in existing for field in bucket if field not in BUCKET_KEYS}
        stale = [bucket["hour"] for bucket in existing]
        ops = [
            self._bucket(series, hour, {"$set": {f: counts.get(hour, {}).get(f, 0) for f in fields}})
            for hour in {*stale, *counts}
        ]
        if ops:
            await self.coll.bulk_write(ops, ordered=False)
