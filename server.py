"""Gatehouse: a stateful session server on Tornado and MongoDB.

    python server.py                       serve the API and console on $PORT
    python server.py create-admin --username NAME   (password from stdin or a prompt)

Reads top to bottom: configuration → database → application → listen → signals.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import signal
import sys
from pathlib import Path

from tornado.httpserver import HTTPServer
from tornado.web import Application

from config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parent
log = logging.getLogger("gatehouse")


def make_app(config: Config, gatehouse: object) -> Application:
    """The Tornado application; the tests build theirs with this too."""
    from handlers import console, routes
    from handlers.base import StaticHandler, log_request
    from handlers.native import NotFoundHandler

    table = routes(config)
    return Application(
        [(r.pattern, r.handler) for r in table] + console.routes(),
        routes=table,
        xsrf_cookies=True,  # the console's forms; the token-authenticated API opts out
        static_handler_class=StaticHandler,
        default_handler_class=NotFoundHandler,
        gatehouse=gatehouse,
        config=config,
        cookie_secret=config.secret_key,
        template_path=str(ROOT / "templates"),
        static_path=str(ROOT / "static"),
        log_function=log_request,
        debug=False,
        serve_traceback=False,
    )


def make_server(app: Application, config: Config) -> HTTPServer:
    # xheaders stays off: Tornado would then believe a client-sent X-Real-Ip. The
    # handlers read X-Forwarded-For themselves, and only behind GATEHOUSE_TRUST_PROXY.
    return HTTPServer(
        app,
        xheaders=False,
        # Bodies over the API limit still get a JSON 413 from the handler; this hard cap
        # only bounds memory for clients that ignore it.
        max_body_size=config.max_body_bytes * 4,
        idle_connection_timeout=config.idle_connection_timeout,
        body_timeout=30,
    )


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


def configure_logging(fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stdout)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("tornado.access", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def open_gatehouse(config: Config, uri: str):  # -> tuple[AsyncMongoClient, Gatehouse]
    from models.core import Gatehouse
    from models.db import connect, db_name_from_uri, wait_for_database

    client = connect(uri, config.db_timeout_ms)
    await wait_for_database(client, deadline_seconds=60)
    gatehouse = Gatehouse(config, client[db_name_from_uri(uri, config.db_name)])
    await gatehouse.setup()
    return client, gatehouse


async def serve(config: Config, uri: str) -> None:
    client, gatehouse = await open_gatehouse(config, uri)
    app = make_app(config, gatehouse)
    server = make_server(app, config)
    server.listen(config.port, config.bind)
    log.info("Gatehouse listening on http://%s:%d (%s)", config.bind, config.port, config.env)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("shutting down: no new connections, draining requests in flight")
    server.stop()
    await drain(app, seconds=20)
    await server.close_all_connections()
    await client.close()
    gatehouse.close()
    log.info("stopped")


async def drain(app: Application, seconds: float) -> None:
    """Wait (bounded, below Heroku's 30 s) for requests in flight to finish."""
    deadline = asyncio.get_running_loop().time() + seconds
    while app.settings.get("inflight", 0) > 0 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)


def start_database(config: Config):  # -> tuple[str, EmbeddedMongo | None]
    """MONGODB_URI, or the embedded development database under GATEHOUSE_DATA_DIR."""
    from models.db import EmbeddedMongo

    if config.mongodb_uri:
        return config.mongodb_uri, None
    embedded = EmbeddedMongo(config.data_dir / "db")
    uri = embedded.start()
    log.info(
        "DEVELOPMENT DATABASE: embedded SecantusDB on 127.0.0.1:%d, data in %s (set MONGODB_URI for a real MongoDB)",
        embedded.port,
        embedded.storage,
    )
    return uri, embedded


def read_new_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password (again): "):
        raise SystemExit("gatehouse: the passwords differ")
    return first


async def create_admin(config: Config, uri: str, username: str, password: str) -> int:
    from models.errors import DomainError

    client, gatehouse = await open_gatehouse(config, uri)
    try:
        created = await gatehouse.ensure_admin(username, password)
    except DomainError as e:
        print(f"gatehouse: {e.message}", file=sys.stderr)
        return 1
    finally:
        await client.close()
        gatehouse.close()
    if not created:
        print(f"gatehouse: an account named {username!r} already exists", file=sys.stderr)
        return 1
    print(f"created admin {username!r}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="server.py", description="Gatehouse session server")
    parser.add_argument("--port", type=int, help="listen port (default: $PORT or 8000)")
    sub = parser.add_subparsers(dest="command")
    admin = sub.add_parser("create-admin", help="create an administrator account")
    admin.add_argument("--username", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    try:
        overrides = {"port": args.port} if args.port is not None else {}
        config = load_config(**overrides)
    except ConfigError as e:
        print(f"gatehouse: configuration error: {e}", file=sys.stderr)
        return 2
    configure_logging(config.log_format)
    try:
        uri, embedded = start_database(config)
    except RuntimeError as e:
        print(f"gatehouse: {e}", file=sys.stderr)
        return 2
    try:
        if args.command == "create-admin":
            return asyncio.run(create_admin(config, uri, args.username, read_new_password()))
        asyncio.run(serve(config, uri))
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if embedded:
            embedded.stop()


if __name__ == "__main__":
    sys.exit(main())
