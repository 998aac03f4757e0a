"""`Gatehouse`: the one object that holds the stores and services of a running server.

Built inside the event loop that will use it (an AsyncMongoClient belongs to one loop),
by `server.main()` and by the tests alike; handlers reach it through a property on the
base handler, never through a module global.
"""

from __future__ import annotations

import logging
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from pymongo.asynchronous.database import AsyncDatabase

from config import Config
from delivery import Delivery
from delivery.queue import DeliveryQueue

from .accounts import Accounts
from .admin import Admin
from .auth import AuthService
from .changes import Changes
from .clock import DatabaseClock
from .codes import Codes
from .common import Clock, Context
from .db import ensure_indexes
from .errors import AccountExists
from .events import EventLog
from .followups import Followups
from .otp import CodeFlows
from .passwords import PasswordHasher
from .ratelimit import RateLimits
from .resolver import Resolver
from .sessions import Sessions
from .tokens import Tokens

log = logging.getLogger("gatehouse")
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


class Gatehouse:
    def __init__(self, config: Config, db: AsyncDatabase, clock: Clock | None = None) -> None:
        """`clock`: the database's (the default: see `models/clock.py`); tests pass one
        they can move."""
        self.config = config
        self.db = db
        self.db_clock = DatabaseClock(db) if clock is None else None
        clock = clock or self.db_clock
        assert clock is not None
        self.clock = clock
        self.followups = Followups()
        self.hasher = PasswordHasher(config.passwords.bcrypt_rounds, config.passwords.bcrypt_threads)
        self.events = EventLog(db, clock, config.events.event_retention_days, self.followups)
        self.limits = RateLimits(db, clock)
        changes = Changes()
        self.accounts = Accounts(db, self.hasher, clock, config.phone_region, changes)
        self.sessions = Sessions(db, clock, config.sessions.last_active_resolution, changes)
        self.tokens = Tokens(config.jwt, config.secret_key, db, clock, self.sessions, self.events)
        self.resolver = Resolver(
            db,
            clock,
            self.accounts,
            self.sessions,
            self.tokens,
            changes,
            cache_ms=config.sessions.session_cache_ms,
            cache_size=config.sessions.session_cache_size,
        )
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
        )
        self.templates = Environment(
            loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True, default_for_string=True)
        )
        self.codes = Codes(db, clock, config.codes, config.secret_key, self.limits)
        self.delivery = Delivery(config.delivery, config.production, db, clock, self.templates)
        self.queue = DeliveryQueue(db, clock, self.delivery, self.events, config.delivery, config.secret_key)
        self.admin = Admin(db, self.accounts, self.sessions, clock)
        self.flows = CodeFlows(
            config.codes, self.accounts, self.codes, self.auth, self.events, self.delivery, self.queue
        )
        self.auth.notify = self.flows.notify
        self.queue.gate = self.codes.may_send

    async def setup(self, *, background: bool = True) -> None:
        """Indexes, the session cache's change feed and the delivery worker, then the
        first admin from the environment (created once). A one-shot command
        (`create-admin`) passes `background=False`: a worker that claimed a job and then
        exited would leave it waiting for its lease to run out."""
        if self.db_clock is not None:
            await self.db_clock.measure()
        await ensure_indexes(self.db)
        if background:
            if self.db_clock is not None:
                self.db_clock.start()
            self.resolver.start()
            self.queue.start()
        admin = self.config.admin
        if admin.admin_username and admin.admin_password:
            await self.ensure_admin(admin.admin_username, admin.admin_password)

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
        self.followups.stop()
        self.hasher.close()
