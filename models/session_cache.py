"""A per-process cache of validated callers (session and account), and the change feed
that keeps it honest: the authenticated hot path needs no database round trip at all.
`resolver.Resolver` owns both; the stores' side of the bargain is `changes.py`.

Staleness bounds (documented in the README and tested):
- within this process: **zero** for anything that ends a session or changes an account
  here — the stores announce it (`changes.Changes`) once MongoDB has the change, which
  drops the entries, and a read that was already under way then is not stored (`epoch`);
- across processes: at most `ttl` (GATEHOUSE_SESSION_CACHE_MS, 1 s by default). Every
  revocation and every account update stamps its document with the database's clock
  (`changes.CHANGED`); each process's `ChangeFeed` asks every `ttl / 4` what
  changed since its last look and drops those entries. An entry is served only while
  the last successful look (or its own read) is younger than `ttl`, so when MongoDB
  cannot be asked, entries stop being served rather than going stale. 0 turns the
  cache off (zero everywhere).

An entry is read again after `max_age` whatever happens (a backstop, and how another
process's `lastActive` writes arrive). Requests do not wait for those reads while a token
stays in use: an entry near either limit starts one background read (refresh-ahead) and
the request is answered from the entry. Requests that find no entry share one read per
token (single flight).

Bounded: at most `size` entries (least recently used go first), so memory stays flat
whatever the number of live sessions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from .values import Caller

Loader = Callable[[], Awaitable[Caller | None]]

log = logging.getLogger("gatehouse")


class SessionCache:
    def __init__(
        self, ttl_ms: int, size: int, monotonic: Callable[[], float] = time.monotonic, max_age: float = 30.0
    ) -> None:
        self.ttl = ttl_ms / 1000
        self.size = size
        self.max_age = max_age
        self.monotonic = monotonic
        self.entries: OrderedDict[str, tuple[float, Caller]] = OrderedDict()
        self.confirmed = float("-inf")  # when the change feed's last successful look began
        self.epoch = 0  # bumped by every forget: reads started before it are not stored
        self.reading: dict[str, asyncio.Future[Caller | None]] = {}
        self.tasks: set[asyncio.Task[None]] = set()  # background re-reads (kept referenced)

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.size > 0

    async def lookup(self, key: str, load: Loader) -> Caller | None:
        """The caller for `key`: from the cache while it is known valid within `ttl`, else
        from `load()` (None: no live session; not cached)."""
        if not self.enabled:
            return await load()
        entry = self.entries.get(key)
        if entry is not None:
            stored, caller = entry
            now = self.monotonic()
            unconfirmed = now - max(stored, self.confirmed)
            age = now - stored
            if unconfirmed < self.ttl and age < self.max_age:
                self.entries.move_to_end(key)
                if (unconfirmed >= 0.8 * self.ttl or age >= 0.9 * self.max_age) and key not in self.reading:
                    task = asyncio.ensure_future(self._refresh(key, load))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                return caller
            del self.entries[key]
        pending = self.reading.get(key)
        if pending is None:
            pending = self._start(key, load)
        return await asyncio.shield(pending)

    def _start(self, key: str, load: Loader) -> asyncio.Future[Caller | None]:
        started, epoch = self.monotonic(), self.epoch

        async def read() -> Caller | None:
            try:
                caller = await load()
            finally:
                if self.reading.get(key) is future:
                    del self.reading[key]
            if epoch != self.epoch:
                return caller  # something was ended meanwhile: answer this request, store nothing
            if caller is None:
                self.entries.pop(key, None)
            else:
                self._put(key, started, caller)
            return caller

        future = self.reading[key] = asyncio.ensure_future(read())
        return future

    async def _refresh(self, key: str, load: Loader) -> None:
        try:
            await self._start(key, load)
        except Exception as e:  # noqa: BLE001 - the entry simply ages out; the next miss reports it
            log.debug("session cache re-read failed: %s", type(e).__name__)

    def _put(self, key: str, stored: float, caller: Caller) -> None:
        self.entries[key] = (stored, caller)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def update(self, key: str, was: Caller, caller: Caller) -> None:
        """Keep a newer value of an entry's caller (its session touched), as old as before;
        only while the entry still holds `was` (a forget and a fresh read meanwhile win)."""
        entry = self.entries.get(key)
        if entry is not None and entry[1] is was:
            self.entries[key] = (entry[0], caller)

    def drop(self, key: str) -> None:
        """Forget one entry that looks wrong to the caller (read it again next time)."""
        self.entries.pop(key, None)

    def forget(self, *, session_id: str | None = None, account_id: int | None = None) -> None:
        """Drop every entry of a session or of an account."""
        self.forget_many({session_id} - {None}, {account_id} - {None})

    def forget_many(self, session_ids: Iterable[Any], account_ids: Iterable[Any]) -> None:
        """Drop every entry of these sessions and accounts (changes are rare; a scan is
        fine). Reads already under way answer the requests that started them but store
        nothing, and later requests do not join them: they read again."""
        sessions, accounts = set(session_ids), set(account_ids)
        self.epoch += 1
        self.reading.clear()
        doomed = [
            key
            for key, (_, caller) in self.entries.items()
            if caller.session.id in sessions or caller.session.account_id in accounts
        ]
        for key in doomed:
            del self.entries[key]

    def clear(self) -> None:
        self.epoch += 1
        self.reading.clear()
        self.entries.clear()


class ChangeFeed:
    """What other processes ended or changed, polled from MongoDB every `ttl / 4`.

    Documents are stamped by the database's own clock (`CHANGED`) and read back against
    it (`hello.localTime`), so the processes' clocks do not matter. Each look goes back
    `MARGIN` before the previous one, which covers a write stamped just before that look
    but committed just after it; what was already seen is not dropped twice.
    """

    MARGIN = timedelta(seconds=2)
    # A look gives up after this share of `ttl` (its commands carry `maxTimeMS`): a look
    # that ended later would confirm nothing still servable, and a slow database then
    # gets one bounded look at a time from this process, never a queue of them.
    LOOK_SHARE = 0.75
    LOOK_MIN_SECONDS = 0.05

    def __init__(self, cache: SessionCache, db: AsyncDatabase) -> None:
        self.cache = cache
        self.db = db
        self.since: datetime | None = None
        self.seen: dict[tuple[str, Any], datetime] = {}
        self.task: asyncio.Task[None] | None = None
        self.failing_since: float | None = None  # when the looks started failing (monotonic)

    @property
    def failing(self) -> bool:
        return self.failing_since is not None

    async def poll(self) -> int:
        """One look; returns how many changes were new to this process."""
        db_now = (await self.db.command("hello"))["localTime"]
        if db_now.tzinfo is None:
            db_now = db_now.replace(tzinfo=UTC)
        since = self.since or db_now - self.MARGIN
        query = {"changed_at": {"$gte": since}}
        # Whatever was committed before this instant, the queries below see: entries
        # are known valid as of now (if nothing of theirs turns up).
        began = self.cache.monotonic()
        sessions = await self.db.sessions.find(query, {"changed_at": 1}).to_list()
        accounts = await self.db.accounts.find(query, {"id": 1, "changed_at": 1}).to_list()
        found = {("s", d["_id"]): d["changed_at"] for d in sessions}
        found.update({("a", d["id"]): d["changed_at"] for d in accounts})
        fresh = [key for key, at in found.items() if self.seen.get(key) != at]
        if fresh:
            self.cache.forget_many([i for k, i in fresh if k == "s"], [i for k, i in fresh if k == "a"])
        self.since = db_now - self.MARGIN
        self.seen = {key: at for key, at in {**self.seen, **found}.items() if at >= self.since}
        self.cache.confirmed = max(self.cache.confirmed, began)
        return len(fresh)

    async def run(self) -> None:
        # Four looks per bound, on a fixed cadence: a look slowed by a busy event loop
        # still leaves entries confirmed well within `ttl`.
        interval = self.cache.ttl / 4
        me = asyncio.current_task()
        while self.task is me:  # until `stop`, even if a cancellation is lost (see DeliveryQueue._run)
            started = asyncio.get_running_loop().time()
            try:
                with pymongo.timeout(max(self.LOOK_SHARE * self.cache.ttl, self.LOOK_MIN_SECONDS)):
                    await self.poll()
                if self.failing_since is not None:
                    log.info(
                        "session cache change feed: reading again after %.1f s; cached sessions are served again",
                        time.monotonic() - self.failing_since,
                    )
                self.failing_since = None
            except Exception as e:  # noqa: BLE001 - entries stop being served until it recovers
                if self.failing_since is None:
                    log.warning(
                        "session cache change feed failed (%s); cached sessions are read again until it recovers",
                        type(e).__name__ if isinstance(e, PyMongoError) and e.timeout else e,
                    )
                    self.failing_since = time.monotonic()
            await asyncio.sleep(max(0.0, started + interval - asyncio.get_running_loop().time()))

    def start(self) -> None:
        if self.cache.enabled and self.task is None:
            self.task = asyncio.ensure_future(self.run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
