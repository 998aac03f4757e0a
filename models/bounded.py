"""Administrator reads, kept apart from authentication.

Every read the console, the admin API and drf's `users/` make goes through `Admin`, which
app.py builds on a client of its own (a small pool, `appname` "gatehouse-admin") and
wraps with `bounded`: each call then waits for one of a few slots per process
(`GATEHOUSE_ADMIN_QUERY_CONCURRENCY`) and runs under its own time limit
(`GATEHOUSE_ADMIN_QUERY_TIMEOUT_MS`, waiting for the slot included). The limit is the
driver's client-side operation timeout (`pymongo.timeout`), so every command carries
`maxTimeMS` and the database stops working on a query the page gave up on. Nested in the
request's own deadline, the earlier of the two applies. A read that gives up raises
`AdminQueryTimeout` (a 503 whose message says so) and logs one warning line; logins and
token checks use other clients and never queue behind it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

import pymongo
from pymongo.errors import PyMongoError, ServerSelectionTimeoutError

from .errors import AdminQueryTimeout

log = logging.getLogger("gatehouse")
T = TypeVar("T")
BUSY = "too many administrator lists are running at once; try again in a moment"


class AdminLimit:
    """The slots and the time limit every administrator read shares in one process."""

    def __init__(self, timeout_ms: int, concurrency: int) -> None:
        self.seconds = timeout_ms / 1000
        self.slots = asyncio.Semaphore(concurrency)
        self.running = 0
        self.peak = 0  # the most reads ever running at once (tests, and curiosity)

    @asynccontextmanager
    async def slot(self, what: str) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(self.seconds):
                await self.slots.acquire()
        except TimeoutError:
            log.warning("admin read %s found no free slot within %d ms; answered 503", what, self.seconds * 1000)
            raise AdminQueryTimeout(BUSY) from None
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            with pymongo.timeout(max(self.seconds - (loop.time() - started), 0.001)):
                yield
        except PyMongoError as e:
            # A database that cannot be reached at all is an outage (the usual 503), not
            # a list that took too long.
            if not e.timeout or isinstance(e, ServerSelectionTimeoutError):
                raise
            log.warning(
                "admin read %s gave up after %d ms (%s); answered 503, authentication unaffected",
                what,
                1000 * (loop.time() - started),
                type(e).__name__,
            )
            raise AdminQueryTimeout() from None
        finally:
            self.running -= 1
            self.slots.release()


class _Bounded:
    """`target` with each of its coroutine methods run in one of `limit`'s slots."""

    def __init__(self, target: Any, limit: AdminLimit) -> None:
        self._target = target
        self._limit = limit

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        @functools.wraps(attr)
        async def call(*args: Any, **kwargs: Any) -> Any:
            async with self._limit.slot(name):
                return await attr(*args, **kwargs)

        return call


def bounded(target: T, limit: AdminLimit) -> T:
    """`target` (the `Admin` service), every call of its under `limit`."""
    return cast(T, _Bounded(target, limit))
