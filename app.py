"""The composition root: the one place that builds Gatehouse and wires its parts.

`Gatehouse` holds the stores and services of a running server, built from the config,
a database and a clock; `make_app` and `make_server` put the HTTP layer in front of it;
`open_gatehouse` connects and builds one. Built inside the event loop that will use it
(an AsyncMongoClient belongs to one loop), by `server.py` and by the tests alike;
handlers reach it through a property on the base handler, never through a module global.

Dependencies point one way: handlers → models → the database (models/db.py). `delivery`
stands beside the domain: neither imports the other, and only this module sees both
(it hands the domain `Messages` and a `Notifier`, and the queue its audit-log writer).
Metrics listen to the domain's events because this module says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pymongo
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from tornado.web import Application

from config import Config
from delivery import Delivery, Message, SendFailed
from delivery.queue import DeliveryQueue
from handlers.base import log_request
from handlers.routing import make_application
from lifecycle import DrainingHTTPServer
from metrics import observe_event
from models.accounts import Accounts
from models.admin import Admin
from models.auth import AuthService
from models.bounded import AdminLimit, bounded
from models.changes import Changes
from models.clock import DatabaseClock
from models.codes import Codes
from models.common import Clock, Context
from models.db import connect, db_name_from_uri, ensure_indexes, indexes_ready, wait_for_database
from models.errors import AccountExists, DeliveryFailed
from models.events import EventLog
from models.followups import Followups
from models.locks import LoginLocks
from models.mfa import FactorList, Factors
from models.mfa_flows import MfaFlows
from models.notices import Notifier
from models.otp import CodeFlows
from models.passkey_flows import PasskeyFlows
from models.passkeys import Passkeys
from models.passwords import PasswordHasher
from models.ratelimit import RateLimits
from models.resolver import Resolver
from models.revocations import RevocationFeed
from models.sessions import Sessions
from models.stats import Stats
from models.tokens import Tokens

log = logging.getLogger("gatehouse")
ROOT = Path(__file__).resolve().parent
# Who the audit log says acted when the delivery queue records an outcome: no client, no request.
QUEUE_CONTEXT = Context(ip="", style="queue")
RECOUNT_SECONDS = 600  # a recount's bound (models/stats.py): minutes at a million documents


class Messages:
    """Delivery as the domain sees it: the messages `Delivery` composes, and a send that
    fails with the domain's `DeliveryFailed` (a 503 for the handlers)."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery

    def compose(self, channel: str, to: str, purpose: str, code: str, minutes: int) -> Message:
        return self.delivery.compose(channel, to, purpose, code, minutes)

    def compose_notice(self, channel: str, to: str, what: str) -> Message:
        return self.delivery.compose_notice(channel, to, what)

    async def send(self, message: Message) -> None:
        try:
            await self.delivery.send(message)
        except SendFailed as e:
            raise DeliveryFailed(e.message) from None


def longest_session(config: Config) -> timedelta:
    """The longest any session lives: how far back the session lists and counters reach."""
    return timedelta(seconds=max(config.sessions.session_max_seconds, config.console.console_max_seconds))


class Gatehouse:
    def __init__(
        self,
        config: Config,
        db: AsyncDatabase,
        clock: Clock | None = None,
        *,
        admin_db: AsyncDatabase | None = None,
        feed_db: AsyncDatabase | None = None,
    ) -> None:
        """`clock`: the database's (the default: see `models/clock.py`); tests pass one they
        can move. `admin_db`, `feed_db`: the same database through the administrator reads'
        and the change feed's own clients (`Clients`); without them all share `db`'s pool."""
        self.config = config
        self.db = db
        self.db_clock = DatabaseClock(db) if clock is None else None
        clock = clock or self.db_clock
        assert clock is not None
        self.clock = clock
        self.followups = Followups()
        self.recounting: asyncio.Task[bool] | None = None  # the first start's recount
        self.hasher = PasswordHasher(config.passwords.bcrypt_rounds, config.passwords.bcrypt_threads)
        self.lifetime = lifetime = longest_session(config)
        self.stats = Stats(db, lifetime)
        self.events = EventLog(db, clock, config.events.event_retention_days, self.followups, self.stats)
        self.events.listeners.append(observe_event)
        self.limits = RateLimits(db, clock)
        changes = Changes()
        self.accounts = Accounts(db, self.hasher, clock, config.phone_region, changes)
        self.sessions = Sessions(
            db, clock, config.sessions.last_active_resolution, changes, max_lifetime=lifetime, stats=self.stats
        )
        self.tokens = Tokens(config.jwt, config.secret_key, db, clock, self.sessions, self.events)
        self.resolver = self.build_resolver(feed_db if feed_db is not None else db, changes)
        # The apps' subscribers poll like the session caches do: on the feed's own client.
        self.revocations = RevocationFeed(feed_db if feed_db is not None else db)
        self.codes = Codes(db, clock, config.codes, config.secret_key, self.limits)
        self.factors = Factors(
            db, clock, config.mfa, config.throttle, config.secret_key, self.accounts, self.events, self.limits
        )
        messages = self.build_delivery(db)
        self.auth = AuthService(
            config.sessions,
            config.console,
            config.throttle,
            self.accounts,
            self.sessions,
            self.events,
            self.limits,
            self.hasher,
            self.tokens,
            self.resolver,
            self.followups,
            notify=Notifier(messages, self.queue).notify,
            factors=self.factors,
        )
        self.admin = self.build_admin(admin_db if admin_db is not None else db)
        self.mfa = MfaFlows(self.auth, self.factors)
        self.passkeys = Passkeys(db, clock, config.webauthn)
        self.passkey_flows = PasskeyFlows(self.auth, self.factors, self.passkeys, self.mfa)
        self.flows = CodeFlows(config.codes, self.accounts, self.codes, self.auth, self.events, messages, self.queue)

    def build_resolver(self, feed_db: AsyncDatabase, changes: Changes) -> Resolver:
        """The hot path's owner; its change feed reads through `feed_db` (its own pool)."""
        sessions = self.config.sessions
        return Resolver(
            feed_db,
            self.clock,
            self.accounts,
            self.sessions,
            self.tokens,
            changes,
            cache_ms=sessions.session_cache_ms,
            cache_size=sessions.session_cache_size,
            misses_per_minute=sessions.invalid_tokens_per_minute,
        )

    def build_delivery(self, db: AsyncDatabase) -> Messages:
        """Delivery and its durable queue, beside the domain; the domain gets `Messages`."""
        config = self.config
        self.delivery = Delivery(config.delivery, config.production, db, self.clock)
        record = partial(self.events.record, ctx=QUEUE_CONTEXT)
        self.queue = DeliveryQueue(
            db, self.clock, self.delivery, record, config.delivery, config.secret_key, gate=self.codes.may_send
        )
        return Messages(self.delivery)

    def build_admin(self, db: AsyncDatabase) -> Admin:
        """What administrators read, on stores of its own bound to `db` (the admin
        client's: read-only use, nothing announced), every call under `AdminLimit`."""
        config, clock, lifetime = self.config, self.clock, self.lifetime
        self.admin_limit = AdminLimit(config.database.admin_query_timeout_ms, config.database.admin_query_concurrency)
        stats = Stats(db, lifetime)  # the counters, read through the admin client too
        admin = Admin(
            Accounts(db, self.hasher, clock, config.phone_region),
            Sessions(db, clock, config.sessions.last_active_resolution, max_lifetime=lifetime, stats=stats),
            EventLog(db, clock, config.events.event_retention_days, stats=stats),
            clock,
            # The outbox is delivery's collection: the domain reads it through this method.
            outbox=self.delivery.outbox_messages,
            factors=FactorList(db),
            locks=LoginLocks(RateLimits(db, clock), self.auth.failures_per_account),
        )
        return bounded(admin, self.admin_limit)

    async def setup(self, *, background: bool = True) -> None:
        """Indexes, the session cache's change feed and the delivery worker, then the
        first admin from the environment (created once). A one-shot command
        (`create-admin`) passes `background=False`: a worker that claimed a job and then
        exited would leave it waiting for its lease to run out."""
        if self.db_clock is not None:
            await self.db_clock.measure()
        await ensure_indexes(self.db)
        await self.accounts.backfill_search_keys()
        if background:
            if self.db_clock is not None:
                self.db_clock.start()
            self.resolver.start()
            self.queue.start()
            if await self.stats.claim_recount(self.clock()) and await self.holds_data():
                self.recounting = asyncio.get_running_loop().create_task(self.recount())
        admin = self.config.admin
        if admin.admin_username and admin.admin_password:
            await self.ensure_admin(admin.admin_username, admin.admin_password)

    async def holds_data(self) -> bool:
        """Any account, session or event at all (a new database has nothing to recount)."""
        found = [await self.db[name].find_one({}, {"_id": 1}) for name in ("accounts", "sessions", "events")]
        return any(found)

    async def recount(self) -> bool:
        """Set the dashboard's counters from the data (see Recounting in models/stats.py):
        once by the first process on a database that was never recounted, and by
        `python server.py recount`. Minutes at most, whatever the request time limit.
        False when the database failed it (logged; the next start tries again)."""
        started = time.monotonic()
        log.info("recounting the dashboard's counters from the sessions and events")
        try:
            with pymongo.timeout(RECOUNT_SECONDS):
                await self.sessions.recount()
                await self.events.recount()
                await self.accounts.recount()
        except (PyMongoError, asyncio.CancelledError) as e:
            # Not done: the next process to start tries again (or `server.py recount`).
            log.warning("recounting the dashboard's counters did not finish (%s)", type(e).__name__)
            with contextlib.suppress(PyMongoError):
                await self.stats.release_recount()
            if isinstance(e, asyncio.CancelledError):
                raise
            return False
        log.info("recounted the dashboard's counters in %.1f s", time.monotonic() - started)
        return True

    async def ready(self) -> bool:
        """MongoDB answers and every index exists (for /readyz)."""
        await self.db.command("ping")
        return await indexes_ready(self.db)

    async def ensure_admin(self, username: str, password: str) -> bool:
        """Create the admin account unless that username exists; True when created.
        An existing non-admin account of that name is never promoted silently."""
        existing = await self.accounts.find_by_login(username)
        if existing:
            if "admin" not in existing.roles:
                log.warning("GATEHOUSE_ADMIN_USERNAME %r exists and is not an admin; left unchanged", username)
            return False
        try:
            await self.auth.register(
                Context(ip="local", style="native"), password=password, username=username, roles=("admin",)
            )
        except AccountExists:
            return False  # another process created it first
        log.info("created the admin account %r", username)
        return True

    def close(self) -> None:
        if self.db_clock is not None:
            self.db_clock.stop()
        self.resolver.stop()
        self.queue.stop()
        if self.recounting is not None:
            self.recounting.cancel()
        self.followups.stop()
        self.hasher.close()

    async def aclose(self, within: float = 1.0) -> None:
        """`close`, then wait (a bounded while) for the background tasks to finish
        cancelling: a task cancelled in the middle of a database command hands its
        connection back (or closes it) only when it runs again, and a client closed
        before that leaves the socket to the garbage collector."""
        tasks = [
            task
            for task in (
                self.db_clock.task if self.db_clock is not None else None,
                self.resolver.feed.task,
                self.queue.task,
                self.recounting,
                *self.followups.tasks,
                *self.resolver.cache.tasks,
            )
            if task is not None
        ]
        self.close()
        if tasks:
            await asyncio.wait(tasks, timeout=within)


def make_app(config: Config, gatehouse: Gatehouse) -> Application:
    """The Tornado application; the tests build theirs with this too."""
    return make_application(
        config,
        xsrf_cookies=True,  # the console's forms; the token-authenticated API opts out
        gatehouse=gatehouse,
        config=config,
        cookie_secret=config.secret_key,
        template_path=str(ROOT / "templates"),
        static_path=str(ROOT / "static"),
        log_function=log_request,
        debug=False,
        serve_traceback=False,
    )


def make_server(app: Application, config: Config) -> DrainingHTTPServer:
    # xheaders stays off: Tornado would then believe a client-sent X-Real-Ip. The
    # handlers read X-Forwarded-For themselves, and only behind GATEHOUSE_TRUST_PROXY.
    return DrainingHTTPServer(
        app,
        xheaders=False,
        # GATEHOUSE_MAX_BODY_BYTES is enforced by `handlers.routing.BodyLimit`, which
        # stops reading a body at the limit and lets the route answer its JSON 413 (and
        # lifts this cap where it has taken over); this cap of Tornado's, answered with a
        # bare 400 before any handler runs, is only a backstop that never fires first.
        max_body_size=config.server.max_body_bytes * 4,
        idle_connection_timeout=config.server.idle_connection_timeout,
        body_timeout=30,
    )


# The change feed's pool: its looks run one after another, so one connection; a second
# lets a look start while the connection of one that gave up is being closed.
FEED_POOL = 2


@dataclass(frozen=True)
class Clients:
    """A process's MongoDB clients, each with its own connection pool, so that neither
    administrator work nor the session cache's change feed can queue behind the other
    or behind authentication:

    - `main` ("gatehouse"): logins, token checks, every write; the driver's default pool;
    - `admin` ("gatehouse-admin"): the console's and the admin API's reads, a pool of
      `GATEHOUSE_ADMIN_QUERY_CONCURRENCY` connections (`models/bounded.py`);
    - `feed` ("gatehouse-feed"): the change feed's looks, `FEED_POOL` connections.

    Each has its own monitor (one `hello` a second per member, three per process)."""

    main: AsyncMongoClient
    admin: AsyncMongoClient
    feed: AsyncMongoClient

    @classmethod
    def connect(cls, uri: str, config: Config, **admin_options: Any) -> Clients:
        """`admin_options`: more client options for the admin client (tests listen to it)."""
        timeout = config.database.db_timeout_ms
        return cls(
            connect(uri, timeout),
            connect(
                uri,
                timeout,
                appname="gatehouse-admin",
                maxPoolSize=config.database.admin_query_concurrency,
                **admin_options,
            ),
            connect(uri, timeout, appname="gatehouse-feed", maxPoolSize=FEED_POOL),
        )

    def gatehouse(self, config: Config, name: str, clock: Clock | None = None) -> Gatehouse:
        return Gatehouse(config, self.main[name], clock, admin_db=self.admin[name], feed_db=self.feed[name])

    async def close(self) -> None:
        await asyncio.gather(self.main.close(), self.admin.close(), self.feed.close())


async def open_gatehouse(config: Config, uri: str, *, background: bool = True) -> tuple[Clients, Gatehouse]:
    """Connect (waiting for MongoDB, within a bound) and build a Gatehouse on it."""
    clients = Clients.connect(uri, config)
    await wait_for_database(clients.main, deadline_seconds=60)
    gatehouse = clients.gatehouse(config, db_name_from_uri(uri, config.database.db_name))
    await gatehouse.setup(background=background)
    return clients, gatehouse
