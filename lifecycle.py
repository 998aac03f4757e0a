"""How Gatehouse processes start, stop and replace each other.

`DrainingHTTPServer` stops a process without leaving a request that reached it
unanswered; `Supervisor` keeps `--processes N` workers alive (backoff, a crash-rate
bound, counted restarts); `Roster` tells `/readyz` how many of them serve.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tornado import httputil
from tornado.httpserver import HTTPServer
from tornado.web import Application

log = logging.getLogger("gatehouse")


# ---- draining one process ------------------------------------------------------------

# A connection with no request for this long is closed by a drain. A keep-alive client
# that is busy sends its next request well within it and gets `Connection: close` on the
# answer, so only a client quiet for this long can race its request against our close.
QUIET_SECONDS = 0.5


class _Watched(httputil.HTTPMessageDelegate):
    """Marks its connection busy from the moment a request's headers arrive."""

    __slots__ = ("conn", "inner", "server")

    def __init__(self, server: DrainingHTTPServer, conn: Any, inner: httputil.HTTPMessageDelegate) -> None:
        self.server, self.conn, self.inner = server, conn, inner

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> Any:
        self.server.idle.pop(self.conn, None)
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        self.inner.finish()

    def on_connection_close(self) -> None:
        self.inner.on_connection_close()


class DrainingHTTPServer(HTTPServer):
    """Tornado's HTTPServer, knowing which connections sit between two requests.

    `stop()` + `close_all_connections()` would cut keep-alive clients mid-request, and
    waiting instead lets a busy client keep its connection for the whole grace period.
    A drain (1) stops accepting, (2) makes every answer from then on say
    `Connection: close` and reads nothing more on that connection, (3) closes a
    connection once it has been quiet for `QUIET_SECONDS`, and (4) at the deadline
    answers the requests still running with a 503 before closing what is left."""

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.open: set[Any] = set()
        self.idle: dict[Any, float] = {}  # connection → when it began waiting for a request
        self.draining = False

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> Any:
        # Called when a connection starts waiting for its next request: at accept, and
        # after each answer has been written.
        if self.draining:
            # The answer just written said `Connection: close`: read no further request.
            server_conn.stream.close()  # type: ignore[attr-defined]
        else:
            self.open.add(server_conn)
            self.idle[server_conn] = time.monotonic()
        return _Watched(self, server_conn, super().start_request(server_conn, request_conn))

    def on_close(self, server_conn: object) -> None:
        self.open.discard(server_conn)
        self.idle.pop(server_conn, None)
        super().on_close(server_conn)

    async def drain(self, app: Application, until: float) -> int:
        """Drain by `until` (a `time.monotonic()` instant); returns how many requests were
        still running then and got a 503."""
        self.stop()
        self.draining = True
        # Requests read from now on: Tornado answers with `Connection: close` and closes.
        # Requests already read: `CommonMixin.flush` adds the header, `start_request` closes.
        self.conn_params.no_keep_alive = True
        app.settings["draining"] = True
        inflight: set = app.settings.setdefault("inflight", set())
        while time.monotonic() < until:
            self.close_quiet(QUIET_SECONDS)
            if not self.open and not inflight:
                return 0
            await asyncio.sleep(0.05)
        late = list(inflight)
        for handler in late:
            try:
                handler.answer_late()
            except Exception:  # noqa: BLE001 - one odd handler must not stop the shutdown
                log.exception("could not answer a request still running at the shutdown deadline")
        # Let those answers reach the socket; every connection then closes by itself.
        settle = time.monotonic() + 0.25
        while self.open and time.monotonic() < settle:
            self.close_quiet(0)
            await asyncio.sleep(0.02)
        try:
            await asyncio.wait_for(self.close_all_connections(), 0.5)
        except TimeoutError:
            pass
        return len(late)

    def close_quiet(self, seconds: float) -> None:
        now = time.monotonic()
        for conn, since in list(self.idle.items()):
            if now - since >= seconds:
                del self.idle[conn]
                conn.stream.close()

    async def close_all_connections(self) -> None:
        for conn in list(self.open):
            await conn.close()


def start_watchdog(seconds: float, what: str) -> threading.Timer:
    """The last resort of a shutdown: exit non-zero after `seconds` whatever is stuck
    (a thread in a DNS lookup, a driver that does not answer), so the platform never
    has to kill us."""

    def expire() -> None:
        log.error("%s did not finish within %.0f s; exiting now", what, seconds)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


# ---- which workers serve ------------------------------------------------------------


class Roster:
    """Which workers serve: one empty file per worker, named by its pid, in a directory
    the supervisor owns. A worker adds its file once it listens and takes it away when
    it starts draining; the supervisor takes away the file of a worker that died."""

    def __init__(self, path: Path, expected: int) -> None:
        self.path = path
        self.expected = expected

    def join(self) -> None:
        (self.path / str(os.getpid())).touch()

    def leave(self, pid: int | None = None) -> None:
        (self.path / str(pid or os.getpid())).unlink(missing_ok=True)

    def serving(self) -> int:
        try:
            return len(os.listdir(self.path))
        except OSError:
            return 0


# ---- keeping workers alive ----------------------------------------------------------

# A worker that lived this long has its restart delay reset to the first step.
STABLE_SECONDS = 30.0


@dataclass
class Slot:
    index: int
    pid: int = 0
    started: float = 0.0
    restart_at: float | None = None
    next_delay: float = 0.0


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with {code}"


class Supervisor:
    """Runs `count` workers until told to stop. A worker that dies is started again
    after a delay that doubles for each quick death of that worker (up to a cap, and
    back to the first step once a worker has lived `STABLE_SECONDS`), forever, unless
    more than `max_crashes` deaths fall within `window` seconds: then every worker is
    stopped and `run` returns 1, so the platform restarts the whole server."""

    def __init__(
        self,
        count: int,
        start: Callable[[int], int],
        *,
        first_delay: float,
        max_delay: float,
        max_crashes: int,
        window: float,
        grace: float,
        roster: Roster | None = None,
        on_restart: Callable[[], None] = lambda: None,
        on_death: Callable[[int], None] = lambda pid: None,
    ) -> None:
        self.slots = [Slot(i, next_delay=first_delay) for i in range(count)]
        self.start = start
        self.first_delay, self.max_delay = first_delay, max_delay
        self.max_crashes, self.window, self.grace = max_crashes, window, grace
        self.roster = roster
        self.on_restart, self.on_death = on_restart, on_death
        self.crashes: deque[float] = deque()
        self.stopping = False
        self.gave_up = False
        self.kill_at = 0.0

    def spawn(self, slot: Slot) -> None:
        slot.pid = self.start(slot.index)
        slot.started = time.monotonic()
        if self.stopping:  # the stop came in while this one was being forked
            os.kill(slot.pid, signal.SIGTERM)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Forward a stop to every worker; the ones still alive after the grace are killed."""
        if not self.stopping:
            self.kill_at = time.monotonic() + self.grace + 2
        self.stopping = True
        for slot in self.slots:
            slot.restart_at = None
            if slot.pid:
                try:
                    os.kill(slot.pid, signum)
                except ProcessLookupError:
                    pass

    def run(self) -> int:
        for slot in self.slots:
            self.spawn(slot)
        while True:
            now = time.monotonic()
            for slot in self.slots:
                if slot.pid:
                    # waitpid on our own workers only: the embedded database is a child too.
                    done, status = os.waitpid(slot.pid, os.WNOHANG)
                    if done:
                        self.reap(slot, os.waitstatus_to_exitcode(status), now)
                elif not self.stopping and slot.restart_at is not None and now >= slot.restart_at:
                    slot.restart_at = None
                    self.spawn(slot)
                    self.on_restart()
            alive = [slot.pid for slot in self.slots if slot.pid]
            if self.stopping and not alive:
                return 1 if self.gave_up else 0
            if self.stopping and now > self.kill_at:
                log.error("workers %s still running %.0f s after the stop; killing them", alive, self.grace + 2)
                for pid in alive:
                    os.kill(pid, signal.SIGKILL)
                self.kill_at = float("inf")
            time.sleep(0.05)

    def reap(self, slot: Slot, code: int, now: float) -> None:
        pid, slot.pid = slot.pid, 0
        if self.roster is not None:
            self.roster.leave(pid)
        self.on_death(pid)
        if self.stopping:
            return
        self.crashes.append(now)
        while self.crashes and self.crashes[0] < now - self.window:
            self.crashes.popleft()
        if len(self.crashes) > self.max_crashes:
            log.error(
                "giving up: %d worker deaths within %.0f s, over GATEHOUSE_WORKER_MAX_CRASHES=%d (the last: worker %d, "
                "pid %d, %s); stopping every worker and exiting 1 so the platform restarts the server",
                len(self.crashes),
                self.window,
                self.max_crashes,
                slot.index + 1,
                pid,
                describe_exit(code),
            )
            self.gave_up = True
            self.stop()
            return
        if now - slot.started >= STABLE_SECONDS:
            slot.next_delay = self.first_delay
        delay = slot.next_delay
        slot.next_delay = min(delay * 2, self.max_delay)
        slot.restart_at = now + delay
        log.warning(
            "worker %d (pid %d) %s; restarting it in %.1f s (%d death%s within %.0f s, limit %d)",
            slot.index + 1,
            pid,
            describe_exit(code),
            delay,
            len(self.crashes),
            "" if len(self.crashes) == 1 else "s",
            self.window,
            self.max_crashes,
        )
