"""Sub-second revocation for offline verifiers: the revocation feed, followed.

`RevocationWatcher` long-polls Gatehouse's `GET /auth/revocations` (a service-key API)
and keeps what it learns in a `RevocationSet`: the sessions that ended and the accounts
that are disabled. A `Verifier` given that set refuses a token whose session ended even
though its signature and `exp` are still good. Gatehouse holds a waiting poll and looks
for new entries every 0.25 s; an entry is paged once the database's writes of that moment
have settled (half a second), so the app learns of a kick within about 0.75 s.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import httpx

log = logging.getLogger("gatehouse_client.revocations")

# The longest access-token lifetime Gatehouse hands out by default (the simple style's, a
# day) plus its 30 s leeway: a token minted before its session ended expires by then, so
# the entry can go.
DEFAULT_RETENTION = 86_400 + 60
DEFAULT_MAX_ENTRIES = 1_000_000


class RevocationSet:
    """Ended sessions and disabled accounts, thread-safe (written by the watcher's event
    loop, read by request threads) and bounded twice: each entry is forgotten
    `retention` seconds after it arrived (set it to the longest access lifetime you
    configured, plus the leeway), and past `max_entries` the oldest go first (those
    nearest to forgetting anyway; `overflowed` counts them)."""

    def __init__(
        self,
        *,
        retention: float = DEFAULT_RETENTION,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retention = retention
        self.max_entries = max_entries
        self.clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, float] = OrderedDict()  # sid -> forget at
        self._accounts: OrderedDict[int | str, float] = OrderedDict()  # disabled account id / uid -> forget at
        self.overflowed = 0
        self.last_ok: float | None = None  # the clock's time of the watcher's last good answer

    def end_session(self, sid: str) -> None:
        with self._lock:
            self._put(self._sessions, sid)

    def set_account(self, account_id: int | None, uid: str | None, disabled: bool) -> None:
        """The account's latest state: disabled accounts are refused, until a later entry
        enables them."""
        with self._lock:
            for key in (account_id, uid):
                if key is None:
                    continue
                if disabled:
                    self._put(self._accounts, key)
                else:
                    self._accounts.pop(key, None)

    def apply(self, page: dict[str, Any]) -> int:
        """One answer of the feed; returns how many entries it held."""
        sessions = [e["sid"] for e in page.get("sessions", ()) if isinstance(e.get("sid"), str)]
        accounts = page.get("accounts", ())
        for sid in sessions:
            self.end_session(sid)
        for entry in accounts:
            self.set_account(entry.get("account_id"), entry.get("uid"), bool(entry.get("disabled")))
        return len(sessions) + len(accounts)

    def is_revoked(self, session_id: str, account_id: int | None = None, uid: str | None = None) -> bool:
        now = self.clock()
        with self._lock:
            self._prune(now)
            if session_id in self._sessions:
                return True
            return (account_id is not None and account_id in self._accounts) or (
                uid is not None and uid in self._accounts
            )

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions) + len(self._accounts)

    def _put(self, table: OrderedDict, key: Any) -> None:
        table.pop(key, None)
        table[key] = self.clock() + self.retention
        self._prune(self.clock())
        while len(self._sessions) + len(self._accounts) > self.max_entries:
            (self._sessions if self._sessions else self._accounts).popitem(last=False)
            self.overflowed += 1

    def _prune(self, now: float) -> None:
        for table in (self._sessions, self._accounts):
            while table:
                key, forget_at = next(iter(table.items()))
                if forget_at > now:
                    break
                del table[key]


class FeedError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def _about_since(response: httpx.Response) -> bool:
    """Whether a 400 from the feed is about `since` (its description names it)."""
    try:
        description = response.json().get("error_description", "")
    except (ValueError, AttributeError):
        return False
    return isinstance(description, str) and "since" in description


class RevocationWatcher:
    """Follows `GET /auth/revocations` in an asyncio task (`start`/`stop`), or in a thread
    of its own for sync apps (`start_thread`/`stop_thread`).

    Resilient by design: a failed poll (network, 5xx, a refused key) is retried with
    exponential backoff and jitter (`backoff_min` doubling up to `backoff_max`), and
    resumes from the cursor it holds, so nothing that ended meanwhile is missed (the
    feed keeps an ended session until its own expiry). The first poll starts from "now":
    sessions that ended before the watcher started are not known to it — pass the
    `cursor` you saved (`on_cursor`) to resume across restarts.
    """

    def __init__(
        self,
        base_url: str,
        service_key: str,
        *,
        revocations: RevocationSet | None = None,
        wait: float = 25,
        cursor: str | None = None,
        on_cursor: Callable[[str], None] | None = None,
        backoff_min: float = 0.5,
        backoff_max: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/auth/revocations"
        self.service_key = service_key
        self.revocations = revocations if revocations is not None else RevocationSet()
        self.wait = max(0.0, min(wait, 25.0))
        self.cursor = cursor
        self.on_cursor = on_cursor
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.transport = transport
        self.failures = 0  # consecutive failed polls
        self.polls = 0  # good answers
        self._task: asyncio.Task | None = None
        self._ready: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    # ---- running in the app's event loop ---------------------------------------------

    async def start(self, ready_timeout: float | None = 5.0) -> None:
        """Start following the feed; with `ready_timeout`, wait (at most that long) until
        the first answer came, so the cursor is set before the app serves requests."""
        if self._task is not None:
            return
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(self.run(), name="gatehouse-revocations")
        if ready_timeout:
            try:
                await asyncio.wait_for(self._ready.wait(), ready_timeout)
            except TimeoutError:
                log.warning("revocation feed: no answer within %.1f s; still trying in the background", ready_timeout)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def run(self) -> None:
        """Poll until cancelled."""
        delay = self.backoff_min
        timeout = httpx.Timeout(10.0, read=self.wait + 10.0)
        async with httpx.AsyncClient(timeout=timeout, transport=self.transport) as http:
            while True:
                started = time.monotonic()
                try:
                    page = await self.poll(http)
                except (httpx.HTTPError, FeedError, ValueError, KeyError, TypeError) as e:
                    self.failures += 1
                    if self.failures == 1 or self.failures % 10 == 0:
                        log.warning("revocation feed: %s (failure %d); retrying in %.1f s", e, self.failures, delay)
                    await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                    delay = min(delay * 2, self.backoff_max)
                    continue
                if self.failures:
                    log.info("revocation feed: reading again after %d failures", self.failures)
                delay, self.failures = self.backoff_min, 0
                self.polls += 1
                self.revocations.last_ok = self.revocations.clock()
                if self._ready is not None:
                    self._ready.set()
                # An empty answer that came back at once — `wait=0`, or an intermediary
                # that does not hold requests — is not asked again at once: do not spin.
                empty = not page.get("sessions") and not page.get("accounts")
                if empty and not page.get("more") and time.monotonic() - started < 0.05:
                    await asyncio.sleep(0.25)

    async def poll(self, http: httpx.AsyncClient) -> dict[str, Any]:
        """One request of the feed; applies its answer and moves the cursor."""
        # The feed takes whole seconds (0..25): a fractional wait is rounded up, never sent
        # as "2.5", which the feed refuses with a 400 that would read as a refused cursor.
        params: dict[str, Any] = {"wait": str(math.ceil(self.wait)) if self.cursor is not None else "0"}
        if self.cursor is not None:
            params["since"] = self.cursor
        response = await http.get(self.url, params=params, headers={"Authorization": f"Bearer {self.service_key}"})
        if response.status_code == 400 and self.cursor is not None and _about_since(response):
            # A cursor the feed cannot read (corrupt, from another deployment): start
            # from now rather than never again. Any other 400 keeps the cursor: dropping
            # it on every poll would look healthy and never learn of a kick.
            log.error("revocation feed refused cursor %r (%s); starting from now", self.cursor, response.text[:200])
            self.cursor = None
            raise FeedError(400, "cursor refused")
        if response.status_code != 200:
            raise FeedError(response.status_code, response.text[:200])
        page = response.json()
        cursor = page["cursor"]
        if not isinstance(cursor, str):
            raise ValueError("the feed answered without a cursor")
        self.revocations.apply(page)
        if cursor != self.cursor:
            self.cursor = cursor
            if self.on_cursor is not None:
                self.on_cursor(cursor)
        return page

    # ---- running in a thread of its own (Flask, Django, any WSGI app) -----------------

    def start_thread(self, ready_timeout: float | None = 5.0) -> None:
        """Follow the feed from a daemon thread with an event loop of its own."""
        if self._thread is not None:
            return
        ready = threading.Event()

        async def main() -> None:
            self._thread_loop = asyncio.get_running_loop()
            await self.start(ready_timeout=None)
            ready.set()
            assert self._task is not None
            try:
                await self._task
            except asyncio.CancelledError:
                pass

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), name="gatehouse-revocations", daemon=True)
        self._thread.start()
        ready.wait()
        if ready_timeout:
            deadline = time.monotonic() + ready_timeout
            while self.polls == 0 and time.monotonic() < deadline:
                time.sleep(0.01)

    def stop_thread(self) -> None:
        thread, loop, task = self._thread, self._thread_loop, self._task
        if thread is None or loop is None:
            return
        if task is not None:
            loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout=10)
        self._thread = self._thread_loop = self._task = None
