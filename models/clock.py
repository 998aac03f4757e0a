"""One clock for every process: the database's.

Expiries, grace periods, lock windows, cooldowns, `lastActive` and event times are
compared by other processes and by the database's own TTL deletion, so they must not
depend on which server wrote them. `DatabaseClock` reads the time as the database
tells it (`hello.localTime`), measures its offset from this machine's clock (halfway
through the round trip) and adds that offset to the local clock; it measures again
every `interval` seconds. With two servers whose clocks differ by minutes, both write
and compare the database's time.

Between measurements the local clock's rate is trusted (drift over seconds is
negligible); a failed measurement keeps the last offset, so an outage does not jump
the clock.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from pymongo.asynchronous.database import AsyncDatabase

from .common import Clock, utcnow

log = logging.getLogger("gatehouse")


def _millis(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


class DatabaseClock:
    def __init__(self, db: AsyncDatabase, local: Clock = utcnow, interval: float = 10.0) -> None:
        self.db = db
        self.local = local
        self.interval = interval
        self.offset = timedelta(0)
        self.task: asyncio.Task[None] | None = None
        self.failing = False

    def __call__(self) -> datetime:
        return _millis(self.local() + self.offset)

    async def measure(self) -> timedelta:
        """Read the database's time once; returns the new offset."""
        before = self.local()
        reply = await self.db.command("hello")
        after = self.local()
        db_now = reply["localTime"]
        if db_now.tzinfo is None:
            db_now = db_now.replace(tzinfo=UTC)
        self.offset = db_now - (before + (after - before) / 2)
        return self.offset

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.measure()
                self.failing = False
            except Exception as e:  # noqa: BLE001 - keep the last offset; the next look may work
                if not self.failing:
                    log.warning("reading the database's clock failed (%s); keeping the last offset", type(e).__name__)
                self.failing = True

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
