"""How a Gatehouse process stops.

`DrainingHTTPServer` stops a process without leaving a request that reached it
unanswered; `start_watchdog` ends a shutdown that hangs. (Starting and replacing
worker processes: `workers.py`.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

from tornado import httputil
from tornado.httpserver import HTTPServer
from tornado.web import Application

log = logging.getLogger("gatehouse")


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
        # Requests already read: `GatehouseHandler.flush` adds the header, `start_request` closes.
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
