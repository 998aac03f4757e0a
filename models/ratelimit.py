"""Fixed-window counters in MongoDB, so limits hold across every process and dyno.

One document per (bucket, key, window); an `$inc` of an existing document is atomic
(`upsert_inc` creates it on first use), and a TTL index removes windows once they are
over. Cooldowns and locks are documents of their own in the same collection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pymongo import ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from .common import Clock, seconds
from .errors import RateLimited


async def upsert_inc(coll: AsyncCollection, _id: str, inc: dict, on_insert: dict | None = None) -> dict:
    """Atomically increment fields of one document, creating it on first use.

    No upsert: racing first uses of an upserting `$inc` were seen to count twice on
    SecantusDB (an answer lost, the increment kept, so a retry counted again), which
    would let fewer attempts through a limit than it allows, or skip ids. Instead the
    increment is a plain atomic update of an existing document, and a missing document is
    created by an insert whose duplicate-key failure is unambiguous on every server."""
    update: dict = {"$inc": inc}
    for _ in range(5):
        doc = await coll.find_one_and_update({"_id": _id}, update, return_document=ReturnDocument.AFTER)
        if doc is not None:
            return doc
        try:
            await coll.insert_one({"_id": _id, **dict.fromkeys(inc, 0), **(on_insert or {})})
        except DuplicateKeyError:
            pass  # created by a racing first use: the update above now finds it
    raise RuntimeError(f"counter {_id!r}: upsert did not settle")


@dataclass(frozen=True)
class Limit:
    """One rule: at most `limit` events per `window` seconds per key of `bucket`. The
    message and reason go into the `RateLimited` a refusal raises."""

    bucket: str
    window: int
    limit: int
    message: str
    reason: str
    # A guessing limit (wrong passwords, wrong codes): the slot that reaches the limit
    # also fills the next window, so a burst timed to straddle the boundary (Retry-After
    # says when it is) gets the limit once, not twice.
    carry: bool = False


@dataclass(frozen=True)
class Slot:
    """A reserved place under a limit; `RateLimits.release` gives it back."""

    _id: str
    count: int


class RateLimits:
    """Limits that reserve before they act: `reserve` counts the event first (one atomic
    `$inc`) and refuses when that count is over the limit, so N parallel
    requests against a limit of L get at most L slots whatever N is. The guarded work runs
    only with a slot in hand; `release` gives the slot back where the rule says an
    outcome does not count (a correct password is not a failure). A counter store that
    cannot be written raises, and the request fails closed (503), never unthrottled."""

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
        count, left, _ = await self._hit(bucket, key, window, amount)
        return count, left

    async def _hit(self, bucket: str, key: str, window: int, amount: int = 1) -> tuple[int, int, str]:
        _id, left = self._window(bucket, key, window)
        doc = await upsert_inc(self.coll, _id, {"n": amount}, {"expires_at": self.clock() + seconds(left + 60)})
        return doc["n"], left, _id

    async def reserve(self, rule: Limit, key: str) -> Slot:
        """Take a slot under `rule` for `key`, or `RateLimited` (the slot given straight
        back, so refused requests do not push the window's count up). The slot names the
        window it was taken in, so giving it back never touches the next window."""
        count, left, _id = await self._hit(rule.bucket, key, rule.window)
        slot = Slot(_id, count)
        if count > rule.limit:
            await self.release(slot)
            raise RateLimited(rule.message, retry_after=left, reason=rule.reason)
        if count == rule.limit and rule.carry:
            await self._fill_next(rule, key)
        return slot

    async def _fill_next(self, rule: Limit, key: str) -> None:
        """Start the next window of `rule` for `key` at its limit (see `Limit.carry`)."""
        now = self.clock().timestamp()
        index = int(now // rule.window) + 1
        expires = self.clock() + seconds(2 * rule.window + 60)
        for _ in range(5):
            try:
                await self.coll.update_one(
                    {"_id": f"{rule.bucket}:{key}:{rule.window}:{index}"},
                    {"$max": {"n": rule.limit}, "$setOnInsert": {"expires_at": expires}},
                    upsert=True,
                )
                return
            except DuplicateKeyError:  # a racing first use created it: the retry updates
                continue

    async def reserve_all(self, wanted: Sequence[tuple[Limit, str]]) -> list[Slot]:
        """A slot under each (rule, key), or none at all: a refusal gives back the slots
        already taken."""
        slots: list[Slot] = []
        try:
            for rule, key in wanted:
                slots.append(await self.reserve(rule, key))
        except RateLimited:
            await self.release(*slots)
            raise
        return slots

    async def release(self, *slots: Slot, cooldowns: Sequence[str] = ()) -> None:
        """Give `slots` back and end `cooldowns` (their keys, as claimed), in one command:
        an ended cooldown's `until` is now, which `claim_cooldown` takes as free."""
        updates = [UpdateOne({"_id": slot._id}, {"$inc": {"n": -1}}) for slot in slots]
        now = self.clock()
        updates += [UpdateOne({"_id": f"cooldown:{key}"}, {"$min": {"until": now}}) for key in cooldowns]
        if updates:
            await self.coll.bulk_write(updates)

    def window_id(self, bucket: str, key: str, window: int) -> str:
        """The document id of the current window of (bucket, key)."""
        return self._window(bucket, key, window)[0]

    async def find_many(self, ids: Sequence[str]) -> dict[str, dict]:
        """The documents (counters, cooldowns, locks) of `ids` that exist, by id: one
        bounded `$in` read on `_id`, however many kinds of document it spans."""
        if not ids:
            return {}
        docs = await self.coll.find({"_id": {"$in": list(ids)}}).to_list(length=len(ids))
        return {doc["_id"]: doc for doc in docs}

    async def count(self, bucket: str, key: str, window: int) -> tuple[int, int]:
        _id, left = self._window(bucket, key, window)
        doc = await self.coll.find_one({"_id": _id}, {"n": 1})
        return (doc["n"] if doc else 0), left

    async def reset(self, bucket: str, key: str, window: int) -> None:
        _id, _ = self._window(bucket, key, window)
        await self.coll.delete_one({"_id": _id})

    # ---- cooldowns: "once per N seconds", claimed atomically ------------------------

    async def claim_cooldown(self, key: str, duration: int, message: str, reason: str = "cooldown") -> None:
        """Claim `key` for `duration` seconds, or `RateLimited` with the seconds left while
        an earlier claim holds. A conditional upsert: of concurrent claims one wins."""
        if duration <= 0:
            return
        now = self.clock()
        until = now + seconds(duration)
        _id = f"cooldown:{key}"
        try:
            await self.coll.update_one(
                {"_id": _id, "until": {"$lte": now}},
                {"$set": {"until": until, "expires_at": until + seconds(60)}},
                upsert=True,
            )
        except DuplicateKeyError:
            held = await self.coll.find_one({"_id": _id}, {"until": 1})
            raise RateLimited(message, retry_after=seconds_left(held, now) or 1, reason=reason) from None

    async def release_cooldown(self, key: str) -> None:
        await self.coll.delete_one({"_id": f"cooldown:{key}"})

    # ---- locks: "refuse until", for penalties that outlive a counting window ----------

    async def locked_for(self, key: str) -> int:
        """Seconds left on the lock of `key` (0: not locked)."""
        return (await self.lock_of(key))[0]

    async def lock_of(self, key: str) -> tuple[int, str | None]:
        """Seconds left on the lock of `key` (0: not locked), and the `source` that set it."""
        lock = await self.coll.find_one({"_id": f"lock:{key}"}, {"until": 1, "source": 1})
        return seconds_left(lock, self.clock()), (lock or {}).get("source")

    async def refuse(self, key: str) -> tuple[int, int]:
        """Count one attempt refused by the lock of `key`, if it is locked: returns the
        seconds left on it (0: not locked, and nothing written) and how many attempts it
        has refused, this one included (1: the first). An unlocked key costs the one
        read it always did (a login's path and timing are as before); a locked one, for
        every login name alike, also the counting write."""
        if not await self.locked_for(key):  # the common case: one read, as before locks were counted
            return 0, 0
        now = self.clock()
        lock = await self.coll.find_one_and_update(
            {"_id": f"lock:{key}", "until": {"$gt": now}},
            {"$inc": {"refused": 1}},
            projection={"until": 1, "refused": 1},
            return_document=ReturnDocument.AFTER,
        )
        return seconds_left(lock, now), int((lock or {}).get("refused") or 0)

    async def unlock(self, key: str) -> None:
        await self.coll.delete_one({"_id": f"lock:{key}"})

    async def lock(self, key: str, duration: int, source: str | None = None) -> None:
        """Refuse `key` for `duration` seconds from now (a longer existing lock stays);
        `source` says what set it (the slot whose window it closes). A new lock starts
        its count of refused attempts (`refuse`) again, and keeps the longest duration
        it was set for (`duration`, what administrators are shown)."""
        until = self.clock() + seconds(duration)
        for _ in range(5):
            try:
                await self.coll.update_one(
                    {"_id": f"lock:{key}"},
                    {
                        "$max": {"until": until, "expires_at": until + seconds(60), "duration": duration},
                        "$set": {"source": source, "refused": 0},
                    },
                    upsert=True,
                )
                return
            except DuplicateKeyError:  # two first locks racing: the retry updates
                continue


def seconds_left(lock: dict | None, now: datetime) -> int:
    """Seconds left until a lock's or a cooldown's `until` (0: over, or none)."""
    if lock is None:
        return 0
    left = (lock["until"] - now).total_seconds()
    return int(left) + 1 if left > 0 else 0
