"""The authenticated hot path, in one place: token → live `Caller`.

`Resolver.resolve` is what every authenticated request costs. It owns the per-process
cache of callers and the change feed that keeps that cache honest (`session_cache`), and
the one loader that reads a caller from MongoDB. Stores keep their side of the contract
(`changes.py`): they stamp what they change and announce it here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from pymongo.asynchronous.database import AsyncDatabase

from .accounts import Accounts
from .changes import Changes
from .common import Clock, sha256_hex
from .errors import NotAuthenticated, RateLimited, TokenExpired, TokenInvalid
from .misses import DeadKeys, MissBudget
from .session_cache import ChangeFeed, SessionCache
from .sessions import Sessions
from .tokens import Tokens, fits_style
from .values import Account, Caller, Session

API_KINDS = ("opaque", "jwt")
EXPIRED_MEMORY = timedelta(hours=1)  # how long a session found expired is remembered


class Resolver:
    def __init__(
        self,
        db: AsyncDatabase,
        clock: Clock,
        accounts: Accounts,
        sessions: Sessions,
        tokens: Tokens,
        changes: Changes,
        *,
        cache_ms: int,
        cache_size: int,
        misses_per_minute: int = 0,
    ) -> None:
        self.clock = clock
        self.accounts = accounts
        self.sessions = sessions
        self.tokens = tokens
        self.cache = SessionCache(cache_ms, cache_size)
        self.feed = ChangeFeed(self.cache, db)
        self.dead = DeadKeys(cache_size, clock)
        self.misses = MissBudget(misses_per_minute)
        changes.subscribe(self.cache.forget_many)

    def start(self) -> None:
        self.feed.start()

    def stop(self) -> None:
        self.feed.stop()

    async def resolve(
        self,
        token: str,
        kinds: tuple[str, ...] = API_KINDS,
        *,
        touch: bool = True,
        client: Callable[[], str] | None = None,
    ) -> Caller:
        """The live caller behind an opaque token or a JWT access token of one of `kinds`;
        `NotAuthenticated` otherwise. `touch=False` reads without counting as activity (a
        page refreshing itself is not its operator at work). `client()`: the request's
        per-IP limit key, asked only when the token is not cached (`misses.py`): a token
        this address may not look up any more is `RateLimited` without a read. A token
        that was ours but whose time (or whose session's) is up is `TokenExpired`, so a
        client knows to refresh or log in again; a kicked, unknown or forged one is plain
        `NotAuthenticated`."""
        sid = shape = None
        if token.count(".") == 2:
            try:
                sid, shape = self.tokens.access_sid(token)
            except TokenInvalid as e:
                raise (TokenExpired() if e.expired else NotAuthenticated()) from None
        key = f"sid:{sid}" if sid else "tok:" + sha256_hex(token)
        if key not in self.cache.entries:
            self._admit(key, sid, client)

        def load():  # -> Awaitable[Caller | None]
            return self.load(sid, token)

        caller = await self.cache.lookup(key, load)
        if caller is not None and not caller.session.alive(self.clock()):
            # Expired by this copy; another process may have kept it alive since: ask once
            # (a read checks liveness itself).
            self.cache.drop(key)
            caller = await self.cache.lookup(key, load)
        if caller is None and client is not None:
            self.misses.count(client())
        # A cached caller of another kind (a console token sent to the API) is refused here.
        if caller is None:
            raise TokenExpired() if self.dead.expired(key) else NotAuthenticated()
        if caller.session.kind not in kinds:
            raise NotAuthenticated()
        if shape is not None and not fits_style(shape, caller.session.style):
            raise NotAuthenticated()  # genuine, but not shaped as its session's style mints
        if touch:
            touched = self.sessions.due_touch(caller.session)
            if touched is not None:
                # Kept before the write, so requests sharing this entry meanwhile do not
                # send the same update again.
                was, caller = caller, Caller(caller.account, touched)
                self.cache.update(key, was, caller)
                await self.sessions.record_activity(touched)
        return caller

    def _admit(self, key: str, sid: str | None, client: Callable[[], str] | None) -> None:
        """Whether a token the cache does not hold may cost a read: not a session known
        revoked, and (for opaque tokens) not from an address over its budget of misses.
        A genuine JWT always gets its one read by `sid`: its signature proves we issued
        it, and a revoked one is remembered after that read."""
        if key in self.dead:
            raise TokenExpired() if self.dead.expired(key) else NotAuthenticated()
        if sid is None and client is not None:
            wait = self.misses.exhausted(client())
            if wait:
                raise RateLimited("too many invalid tokens from this address", retry_after=wait, reason="tokens")

    async def load(self, sid: str | None, token: str) -> Caller | None:
        """The live caller from MongoDB: by session id (a JWT's `sid`) or by opaque token
        (one indexed read). A session found revoked or expired is remembered (`dead`)."""
        session = await (self.sessions.find(sid) if sid else self.sessions.find_token(token))
        if session is None:
            return None
        if not session.alive(self.clock()):
            self.remember_dead(f"sid:{sid}" if sid else "tok:" + sha256_hex(token), session)
            return None
        return await self.caller_of(session)

    def remember_dead(self, key: str, session: Session) -> None:
        """Dead for good: a revoked session until it expires, an expired one for a while
        (the TTL index removes it within a minute; then it is a plain miss)."""
        if session.revoked_at is not None:
            self.dead.add(key, session.expires_at)
        else:
            self.dead.add(key, self.clock() + EXPIRED_MEMORY, expired=True)

    async def presented_session(self, token: str, client: str) -> tuple[str, Session] | None:
        """The session behind a token someone presents to end it (RFC 7009), live or
        not, with its cache key; None for a token that is not ours. As cheap against junk
        as `resolve`: a JWT whose signature fails costs no read; a session known dead
        costs none; an uncached opaque token counts against `client`'s budget of misses
        (`RateLimited` past it, without a read), reserved before its read so a burst of
        parallel junk cannot all slip under the budget, and given back when it is found."""
        if token.count(".") == 2:
            possessed = self.tokens.possessed_sid(token)
            if possessed is None or f"sid:{possessed[0]}" in self.dead:
                return None
            sid, shape = possessed
            session = await self.sessions.find(sid)
            if session is None:  # gone for good (session ids are never reused): no read again
                self.dead.add(f"sid:{sid}", self.clock() + EXPIRED_MEMORY, expired=True)
                return None
            return (f"sid:{sid}", session) if fits_style(shape, session.style) else None
        key = "tok:" + sha256_hex(token)
        if key in self.dead:
            return None
        cached = key in self.cache.entries
        if not cached:
            wait = self.misses.reserve(client)
            if wait:
                raise RateLimited("too many invalid tokens from this address", retry_after=wait, reason="tokens")
        session = await self.sessions.find_token(token)
        if session is not None and not cached:
            self.misses.give_back(client)
        return (key, session) if session else None

    async def caller_of(self, session: Session) -> Caller | None:
        account = await self.live_account(session)
        return Caller(account, session) if account else None

    async def live_account(self, session: Session) -> Account | None:
        """The session's account while it may act (`usable`)."""
        return usable(await self.accounts.find_by_id(session.account_id), session)

    async def refreshing(self, sid: str) -> Caller | None:
        """The live caller of a JWT session about to be refreshed: session and account in
        one round trip (a refresh comes when the access token has expired, long after
        its cache entry went)."""
        session, account = await self.sessions.find_with_account(sid)
        if session is None or not session.alive(self.clock()):
            return None
        account = usable(account, session)
        return Caller(account, session) if account else None


def usable(account: Account | None, session: Session) -> Account | None:
    """The session's account while it may act: it exists, is enabled, and its
    credentials are the ones the session was made with. A login whose bcrypt check was
    in flight during a password change, reset, disable or takeover wrote its session
    with the old credential epoch: it is refused here, even when it was written after
    the change ended every other session."""
    if account is None or account.disabled:
        return None
    # Refused, not revoked: the session that changed the password is moved to the new
    # epoch just after the change, and a request of its own landing in between must get
    # a passing 403, not lose the session for good.
    return account if account.holds_session(session) else None
