"""`--processes N`: N forked Tornado workers on one port, kept alive by a supervisor.

`run_processes` reserves the port and the runtime directory and forks; `Supervisor`
keeps the workers alive (backoff, a crash-rate bound, counted restarts); `Roster` tells
`/readyz` how many of them serve. Nothing is shared between workers but MongoDB and the
metrics directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import metrics
from config import Config
from logs import flush_logs

log = logging.getLogger("gatehouse")


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


@dataclass(frozen=True)
class Worker:
    """What a forked worker needs from its supervisor."""

    index: int
    port: int
    roster: Roster


Serve = Callable[[Worker], Coroutine[Any, Any, None]]


def run_processes(config: Config, count: int, serve: Serve) -> int:
    """Fork `count` processes that each run `serve(worker)` on one port. The parent
    forwards SIGTERM/SIGINT and keeps the workers alive (`Supervisor`); returns 1 when
    it gave up on crashing workers."""
    runtime = Path(tempfile.mkdtemp(prefix="gatehouse-run-"))
    (runtime / "metrics").mkdir()
    (runtime / "serving").mkdir()
    # Each worker writes its metrics here; /metrics in any worker sums them all. Before
    # any fork: the supervisor counts restarts into the same directory.
    metrics.use_directory(runtime / "metrics")
    # Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads new
    # connections evenly. (With one shared socket, the first worker to wake accepts
    # every pending connection: under a burst of new connections one worker got them
    # all.) The parent binds first, without listening, to fail early on a taken port
    # and to hold it; a socket that does not listen is given no connections.
    held = reserve_port(config.server.port, config.server.bind)
    port = held[0].getsockname()[1]  # the number bound, should the configuration say 0
    roster = Roster(runtime / "serving", count)
    supervisor = Supervisor(
        count,
        lambda index: fork_worker(serve, Worker(index, port, roster)),
        first_delay=config.workers.worker_restart_delay_ms / 1000,
        max_delay=config.workers.worker_restart_max_delay_ms / 1000,
        max_crashes=config.workers.worker_max_crashes,
        window=config.workers.worker_crash_window,
        grace=config.server.shutdown_grace,
        roster=roster,
        on_restart=metrics.WORKER_RESTARTS.inc,
        on_death=metrics.mark_process_dead,
    )
    signal.signal(signal.SIGTERM, lambda signum, _frame: supervisor.stop(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: supervisor.stop(signum))
    try:
        return supervisor.run()
    finally:
        for sock in held:
            sock.close()
        flush_logs()
        shutil.rmtree(runtime, ignore_errors=True)


def fork_worker(serve: Serve, worker: Worker) -> int:
    """The child's pid, in the parent; the child runs `serve(worker)` and exits."""
    pid = os.fork()
    if pid:
        return pid
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    code = 0
    try:
        asyncio.run(serve(worker))
    except BaseException:  # noqa: BLE001 - a worker reports its death and exits non-zero
        log.exception("worker %d failed", worker.index + 1)
        code = 1
    finally:
        logging.shutdown()
    os._exit(code)


def reserve_port(port: int, address: str) -> list[socket.socket]:
    """Bound with SO_REUSEPORT but never listening: a taken port fails here, in the
    parent, and the port stays ours while workers come and go."""
    held = []
    infos = socket.getaddrinfo(address or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    for family, kind, proto, _, addr in dict.fromkeys(infos):
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        held.append(sock)
    return held
