"""Gatehouse: a stateful session server on Tornado and MongoDB.

    python server.py                       serve the API and console on $PORT
    python server.py create-admin --username NAME   (password from stdin or a prompt)
    python server.py recount                         (the dashboard's counters, from the data)

Reads top to bottom: configuration → database → application → listen → signals.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import signal
import sys
import time
from typing import Any

from tornado.ioloop import PeriodicCallback
from tornado.netutil import bind_sockets
from tornado.web import Application

from app import make_app, make_server, open_gatehouse
from config import Config, ConfigError, load_config
from devdb import start_database
from lifecycle import DrainingHTTPServer, start_watchdog
from logs import BatchingHandler, configure_logging, flush_logs
from models.errors import DomainError
from workers import Worker, run_processes

log = logging.getLogger("gatehouse")


async def serve(config: Config, uri: str, worker: Worker | None = None) -> None:
    # Signals first: a SIGTERM during start-up then means "stop once started", cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    opening = asyncio.ensure_future(open_gatehouse(config, uri))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({opening, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not opening.done():
        opening.cancel()  # e.g. still waiting for MongoDB: nothing to drain
        log.info("stopped before start-up finished")
        return
    stopping.cancel()
    client, gatehouse = opening.result()
    app = make_app(config, gatehouse)
    server = make_server(app, config)
    # Listening only now, with the database open: the kernel hands connections to a
    # socket that listens, and one that cannot be served yet would only wait.
    if worker is None:
        server.listen(config.server.port, config.server.bind)
    else:
        server.add_sockets(bind_sockets(worker.port, config.server.bind, reuse_port=True))
        app.settings["roster"] = worker.roster
        worker.roster.join()
    label = f" worker {worker.index + 1}/{worker.roster.expected}" if worker else ""
    log.info("Gatehouse%s listening on http://%s:%d (%s)", label, config.server.bind, config.server.port, config.env)
    flusher = PeriodicCallback(flush_logs, BatchingHandler.FLUSH_SECONDS * 1000)
    flusher.start()
    await stop.wait()
    flusher.stop()
    if worker is not None:
        worker.roster.leave()
    await shut_down(config, app, server, client, gatehouse)


CLIENT_CLOSE_SECONDS = 1.0


async def shut_down(config: Config, app: Application, server: DrainingHTTPServer, client: Any, gatehouse: Any) -> None:
    """Everything within GATEHOUSE_SHUTDOWN_GRACE (at most 28 s, under Heroku's 30 s):
    requests until a second before it, then a bounded close of the MongoDB clients (with
    the database down, closing waits for it), and a watchdog one second past it."""
    started = time.monotonic()
    grace = config.server.shutdown_grace
    start_watchdog(grace + 1, "shutdown")
    log.info("shutting down: no new connections, draining requests in flight")
    late = await server.drain(app, until=started + max(grace - 1, grace / 2))
    if late:
        log.warning("answered %d request(s) still running at the shutdown deadline with 503", late)
    await gatehouse.aclose()  # its background tasks first, while the client can still answer them
    try:
        await asyncio.wait_for(client.close(), CLIENT_CLOSE_SECONDS)
    except TimeoutError:
        log.warning("MongoDB client did not close within %.0f s; leaving it", CLIENT_CLOSE_SECONDS)
    log.info("stopped")
    flush_logs()


def read_new_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password (again): "):
        raise SystemExit("gatehouse: the passwords differ")
    return first


async def create_admin(config: Config, uri: str, username: str, password: str) -> int:
    client, gatehouse = await open_gatehouse(config, uri, background=False)
    try:
        created = await gatehouse.ensure_admin(username, password)
    except DomainError as e:
        print(f"gatehouse: {e.message}", file=sys.stderr)
        return 1
    finally:
        await gatehouse.aclose()
        await client.close()
    if not created:
        print(f"gatehouse: an account named {username!r} already exists", file=sys.stderr)
        return 1
    print(f"created admin {username!r}")
    return 0


async def recount(config: Config, uri: str) -> int:
    """The dashboard's counters set from the data (models/stats.py, Recounting): after a
    restore or a bulk import, or to check them."""
    client, gatehouse = await open_gatehouse(config, uri, background=False)
    try:
        await gatehouse.stats.claim_recount(gatehouse.clock())  # no start needs to redo it
        done = await gatehouse.recount()
    finally:
        await gatehouse.aclose()
        await client.close()
    return 0 if done else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="server.py", description="Gatehouse session server")
    parser.add_argument("--port", type=int, help="listen port (default: $PORT or 8000)")
    parser.add_argument("--processes", type=int, help="worker processes, 0 = one per core (default 1)")
    sub = parser.add_subparsers(dest="command")
    admin = sub.add_parser("create-admin", help="create an administrator account")
    admin.add_argument("--username", required=True)
    sub.add_parser("recount", help="set the dashboard's counters from the sessions and events")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    try:
        overrides = {k: v for k, v in (("port", args.port), ("processes", args.processes)) if v is not None}
        if not 0 <= overrides.get("processes", 1) <= 64:
            raise ConfigError("--processes must be between 0 and 64")
        config = load_config(**overrides)
    except ConfigError as e:
        print(f"gatehouse: configuration error: {e}", file=sys.stderr)
        return 2
    configure_logging(config.server.log_format)
    try:
        uri, embedded = start_database(config)
    except RuntimeError as e:
        print(f"gatehouse: {e}", file=sys.stderr)
        return 2
    try:
        if args.command == "create-admin":
            return asyncio.run(create_admin(config, uri, args.username, read_new_password()))
        if args.command == "recount":
            return asyncio.run(recount(config, uri))
        processes = config.server.processes or os.cpu_count() or 1
        if processes > 1:
            return run_processes(config, processes, lambda worker: serve(config, uri, worker))
        asyncio.run(serve(config, uri))
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if embedded:
            embedded.stop()


if __name__ == "__main__":
    sys.exit(main())
