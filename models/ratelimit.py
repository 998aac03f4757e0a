"""Fixed-window counters in MongoDB, so limits hold across every process and dyno.

One document per (bucket, key, window); `$inc` with upsert is atomic on a single
document, and a TTL index removes windows once they are over.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from .common import Clock, seconds
from .errors import RateLimited


async def upsert_inc(coll: AsyncCollection, _id: str, inc: dict, on_insert: dict | None = None) -> dict:
    """Atomically increment fields of one document, creating it on first use.

    Two first uses racing on the upsert can make one of them fail with a duplicate key
    (mongod) or come back empty (seen with SecantusDB); either way the retry finds the
    document and is a plain atomic update."""
    update: dict = {"$inc": inc}
    if on_insert:
        update["$setOnInsert"] = on_insert
    for _ in range(5):
        try:
            doc = await coll.find_one_and_update(
                {"_id": _id}, update, upsert=True, return_document=ReturnDocument.AFTER
            )
        except DuplicateKeyError:
            continue
        if doc is not None:
            return doc
    raise RuntimeError(f"counter {_id!r}: upsert did not settle")


class RateLimits:
    def __init__(self, db: AsyncDatabase, clock: Clock) -> None:
        self.coll = db.limits
        self.clock = clock

    def _window(self, bucket: str, key: str, window: int) -> tuple[str, int]:
        """The document id of the current window and the seconds left in it."""
        now = self.clock().timestamp()
        index = int(now // window)
        left = int((index + 1) * window - now) + 1
        return f"{bucket}:{key}:{window}:{index}", left

    async def hit(self, bucket: str, key: str, window: int, amount: int = 1) -> tuple[int, int]:
        """Count one event; returns (count in this window, seconds until it ends)."""
        _id, left = self._window(bucket, key, window)
        doc = await upsert_inc(self.coll, _id, {"n": amount}, {"expires_at": self.clock() + seconds(left + 60)})
        return doc["n"], left

    async def count(self, bucket: str, key: str, window: int) -> tuple[int, int]:
        _id, left = self._window(bucket, key, window)
        doc = await self.coll.find_one({"_id": _id}, {"n": 1})
        return (doc["n"] if doc else 0), left

    async def peek(
        self, locks: Sequence[str], windows: Sequence[tuple[str, str, int]]
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """Seconds left on each lock, and (count, seconds left) of each (bucket, key,
        window), in one round trip: the login path reads four of them on every attempt."""
        lock_ids = [f"lock:{key}" for key in locks]
        window_ids = [self._window(*window) for window in windows]
        wanted = lock_ids + [_id for _id, _ in window_ids]
        docs = {d["_id"]: d for d in await self.coll.find({"_id": {"$in": wanted}}).to_list()}
        now = self.clock()
        return (
            [_seconds_left(docs.get(_id), now) for _id in lock_ids],
            [(docs[_id]["n"] if _id in docs else 0, left) for _id, left in window_ids],
        )

    async def require_below(
        self, bucket: str, key: str, window: int, limit: int, message: str, reason: str = ""
    ) -> int:
        """`RateLimited` (with the seconds left in the window) once `limit` is reached;
        otherwise the count so far."""
        count, left = await self.count(bucket, key, window)
        if count >= limit:
            raise RateLimited(message, retry_after=left, reason=reason)
        return count

    async def reset(self, bucket: str, key: str, window: int) -> None:
        _id, _ = self._window(bucket, key, window)
        await self.coll.delete_one({"_id": _id})

    # ---- locks: "refuse until", for penalties that outlive a counting window ----------

    async def lock(self, key: str, duration: int) -> None:
        """Refuse `key` for `duration` seconds from now (a longer existing lock stays)."""
        until = self.clock() + seconds(duration)
        for _ in range(5):
            try:
                await self.coll.update_one(
                    {"_id": f"lock:{key}"},
                    {"$max": {"until": until, "expires_at": until + seconds(60)}},
                    upsert=True,
                )
                return
            except DuplicateKeyError:  # two first locks racing: the retry updates
                continue


def _seconds_left(lock: dict | None, now: datetime) -> int:
    if lock is None:
        return 0
    left = (lock["until"] - now).total_seconds()
    return int(left) + 1 if left > 0 else 0
