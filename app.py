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
from models.accounts import Accounts
from models.admin import Admin
from models.auth import AuthService
from models.clock import DatabaseClock
from models.codes import Codes
from models.common import Clock, Context
from models.db import ensure_indexes
from models.errors import AccountExists
from models.events import EventLog
from models.followups import Followups
from models.otp import CodeFlows
from models.passwords import PasswordHasher
from models.ratelimit import RateLimits
from models.session_cache import ChangeFeed, SessionCache
from models.sessions import Sessions
from models.tokens import Tokens

log = logging.getLogger("gatehouse")
TEMPLATES = Path(__file__).resolve().parent / "templates"


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
        self.hasher = PasswordHasher(config.bcrypt_rounds, config.bcrypt_threads)
        self.events = EventLog(db, clock, config.event_retention_days, self.followups)
        self.limits = RateLimits(db, clock)
        self.accounts = Accounts(db, self.hasher, clock, config.phone_region)
        cache = SessionCache(config.session_cache_ms, config.session_cache_size)
        self.feed = ChangeFeed(cache, db)
        self.sessions = Sessions(db, clock, config.last_active_resolution, cache)
        self.tokens = Tokens(config, db, clock, self.sessions, self.events)
        self.auth = AuthService(
            config, self.accounts, self.sessions, self.events, self.limits, self.hasher, self.tokens, self.followups
        )
        self.templates = Environment(
            loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True, default_for_string=True)
        )
        self.codes = Codes(db, clock, config, self.limits)
        self.delivery = Delivery(config, db, clock, self.templates)
        self.queue = DeliveryQueue(db, clock, self.delivery, self.events, config)
        self.admin = Admin(db, self.accounts, self.sessions, clock)
        self.flows = CodeFlows(config, self.accounts, self.codes, self.auth, self.events, self.delivery, self.queue)
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
            self.feed.start()
            self.queue.start()
        if self.config.admin_username and self.config.admin_password:
            await self.ensure_admin(self.config.admin_username, self.config.admin_password)

    async def ensure_admin(self, username: str, password: str) -> bool:
        """Create the admin account unless that username exists; True when created.
        An existing non-admin account of that name is never promoted silently."""
        existing = await self.accounts.find_by_login(username)
        if existing:
            if "admin" not in existing.get("roles", []):
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
        self.feed.stop()
        self.queue.stop()
        self.followups.stop()
        self.hasher.close()
