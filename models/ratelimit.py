"""Fixed-window counters in MongoDB, so limits hold across every process and dyno.

One document per (bucket, key, window); `$inc` with upsert is atomic on a single
document, and a TTL index removes windows once they are over.
"""

from __future__ import annotations

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from .common import Clock, seconds


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
        for _ in range(2):  # two first hits racing on upsert: the loser retries as an update
            try:
                doc = await self.coll.find_one_and_update(
                    {"_id": _id},
                    {"$inc": {"n": amount}, "$setOnInsert": {"expires_at": self.clock() + seconds(left + 60)}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
                return doc["n"], left
            except DuplicateKeyError:
                continue
        raise RuntimeError("rate limit counter contention")  # pragma: no cover

    async def count(self, bucket: str, key: str, window: int) -> tuple[int, int]:
        _id, left = self._window(bucket, key, window)
        doc = await self.coll.find_one({"_id": _id}, {"n": 1})
        return (doc["n"] if doc else 0), left

    async def reset(self, bucket: str, key: str, window: int) -> None:
        _id, _ = self._window(bucket, key, window)
        await self.coll.delete_one({"_id": _id})
