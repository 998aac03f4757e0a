"""Work that follows the decisive write of an operation.

An operation such as a password change is decided by one write (the new hash and the
new credential epoch, in one document). What follows — ending the other sessions'
documents, the audit event, the owner's notice — must neither turn the decided
operation into a 5xx (a client retrying it would get "wrong password") nor be lost
when the database blinks. So each follow-up is tried at once; if the database fails
it, the request goes on (with the follow-up's default result) and the follow-up is
retried in the background with backoff. Follow-ups are written to be idempotent (the
audit event carries its own `_id`; revocations are conditional updates), so a retry
that lands twice changes nothing.

What this does not promise: a process that dies while a follow-up is still waiting to
be retried loses it. The decisive write never depends on it: sessions of old
credentials are refused by their epoch whether or not their documents were revoked.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pymongo.errors import DuplicateKeyError, PyMongoError

log = logging.getLogger("gatehouse")
T = TypeVar("T")


class Followups:
    def __init__(self, attempts: int = 8, base: float = 0.25, cap: float = 15.0) -> None:
        self.attempts = attempts
        self.base = base
        self.cap = cap
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self, what: str, make: Callable[[], Awaitable[T]], default: T) -> T:
        """`await make()`, or `default` when the database fails it (then retried later)."""
        try:
            return await make()
        except DuplicateKeyError:
            return default  # an idempotent insert that had already landed
        except PyMongoError as e:
            log.warning("%s failed (%s); retrying it in the background", what, type(e).__name__)
            self.later(what, make)
            return default

    def later(self, what: str, make: Callable[[], Awaitable[object]]) -> None:
        """Retry `make()` in the background until it succeeds or the attempts run out.
        In a fresh context: the request's context carries its deadline (`pymongo.timeout`),
        which would fail every retry made after the request's budget ran out."""
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._retry(what, make), context=contextvars.Context())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _retry(self, what: str, make: Callable[[], Awaitable[object]]) -> None:
        for attempt in range(self.attempts):
            await asyncio.sleep(min(self.cap, self.base * 2**attempt))
            try:
                await make()
            except DuplicateKeyError:
                return
            except PyMongoError:
                continue
            log.info("%s done on retry %d", what, attempt + 1)
            return
        log.error("%s failed %d times; given up", what, self.attempts)

    async def drain(self, timeout: float) -> None:
        """Give pending retries up to `timeout` seconds (at shutdown), then cancel them."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout)
        self.stop()

    def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
