"""What administrators see and do: session lists across accounts, account search, the
audit log, one account's overview and the dashboard's numbers. The console and the
admin API both call this; it composes the stores' queries (each store owns its
collection) and queries nothing itself.

Lists page with opaque cursors over an indexed sort key (`last_active, _id` for sessions,
`at, _id` for events), so the thousandth page costs what the first does, and every read
is a bounded index range (see `newest_first`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from bson import ObjectId
from bson.errors import InvalidId

from .accounts import AccountPage, Accounts
from .audit import ids_named
from .common import Clock, epoch
from .errors import AccountNotFound, InvalidRequest
from .events import EVENT_TYPES, EventLog, EventQuery
from .locks import LockStatus, LoginLocks
from .mfa import Factor, FactorList
from .passkeys import Passkey, PasskeyList
from .search import SEARCH_CAP, Terms, match_accounts, parse
from .search import ip_filter as ip_range
from .sessions import KINDS, Sessions, session_view
from .values import Account, AccountRef, Session

T = TypeVar("T")
# The development outbox's newest messages (delivery's, handed in by app.py).
OutboxReader = Callable[[int], Awaitable[list[dict]]]
# An account's overview: how many of its sessions and events it shows.
OVERVIEW_SESSIONS = 100
OVERVIEW_EVENTS = 30
# The column sorts of the account search (`account_page`); last activity and session
# count sort a search's matches only, up to SORT_CAP of them (a bounded set).
ACCOUNT_SORTS = ("created", "last_active", "sessions")
SORT_CAP = 200
# A search on the sessions and events pages shows the sessions / events of at most
# this many of the accounts it matches (each one index range).
SEARCH_ACCOUNTS = 50
# Session lists are counted up to this ("10,000+").
SESSION_COUNT_CAP = 10_000
BAD_CURSOR = "'cursor' is not one this server handed out"
OUTCOMES = ("ok", "failed")
# The most events one page of the audit log reads before it stops and offers to look
# further back (see `Admin.events`), and the CSV export's limits.
EVENT_SEARCH_BUDGET = 5_000
EXPORT_CAP = 10_000
EXPORT_PAGE = 500
EXPORT_PAGES = 100
# An `ip` filter: an address or its start, in the characters addresses are written in.
IP_FILTER_RE = re.compile(r"[0-9a-f.:]{1,45}")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next: str | None
    # How many the whole list holds (None: not counted), up to a cap (`capped`: more);
    # a search's matches (account id -> what it matched by, models/search.py).
    count: int | None = None
    capped: bool = False
    matched_by: dict[int, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchScope:
    """A search's selection (`Admin.search_scope`): these accounts (None: not by
    account), or sessions and events from this address or prefix."""

    account_ids: list[int] | None
    ip_prefix: str | None
    matched_by: dict[int, list[str]]


@dataclass(frozen=True)
class SessionRow:
    """A session in a list across accounts, with whose it is (None: a deleted account)."""

    session: Session
    owner: AccountRef | None


@dataclass(frozen=True)
class EventPage:
    """A page of the audit log: its events, the cursor of the next (older) page, the
    accounts they mention by id (subjects and acting administrators; a deleted one is
    absent), and when the search stopped early, how far back it looked."""

    items: list[dict]
    next: str | None
    names: dict[int, AccountRef]
    searched_to: datetime | None = None


@dataclass(frozen=True)
class EventExport:
    """The CSV export's events; `complete` is False when more matched than it holds."""

    items: list[dict]
    names: dict[int, AccountRef]
    complete: bool


@dataclass(frozen=True)
class AccountOverview:
    """One account as administrators see it, the console and the admin API alike: its
    sessions that are live by its current credentials and those revoked but not yet
    expired (marked by `revoked_at`), newest activity first, at most
    `OVERVIEW_SESSIONS`; and its last `OVERVIEW_EVENTS` events, newest first."""

    account: Account
    sessions: list[Session]
    events: list[dict]
    factors: list[Factor] = field(default_factory=list)
    recovery_left: int = 0
    passkeys: list[Passkey] = field(default_factory=list)
    # Its login record (lock, failures counted, strikes); None where the Admin has no
    # `locks` reader.
    lock: LockStatus | None = None

    @property
    def last_login(self) -> datetime | None:
        """When its newest session still kept (live, or revoked but not yet expired) was
        made: the last login those show. None once they have all expired; no write on
        the login path keeps it."""
        made = [s.created for s in self.sessions if s.kind != "enrol"]
        return max(made, default=None)

    def live_sessions(self, now: datetime) -> int:
        return sum(1 for s in self.sessions if s.alive(now))

    # The accounts its events mention (subjects and acting administrators), by id.
    names: dict[int, AccountRef] = field(default_factory=dict)


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise InvalidRequest(BAD_CURSOR, field="cursor") from None
    if not isinstance(parts, list) or len(parts) != arity:
        raise InvalidRequest(BAD_CURSOR, field="cursor")
    return parts


def session_cursor(session: Session) -> str:
    return encode_cursor(int(session.last_active.timestamp() * 1000), session.id)


def after_session(cursor: str) -> tuple[datetime, str]:
    """The (lastActive, id) a session cursor resumes after."""
    last_ms, last_id = decode_cursor(cursor, 2)
    if not isinstance(last_ms, int) or not isinstance(last_id, str):
        raise InvalidRequest(BAD_CURSOR, field="cursor")
    return cursor_time(last_ms), last_id


def cursor_time(ms: Any) -> datetime:
    """A cursor's time; a forged one (a float, out of any calendar's range) is a 400."""
    try:
        return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise InvalidRequest(BAD_CURSOR, field="cursor") from None


def event_cursor(event: dict) -> str:
    return encode_cursor(int(event["at"].timestamp() * 1000), str(event["_id"]))


def after_event(cursor: str) -> tuple[datetime, ObjectId]:
    """The (at, _id) an events cursor resumes after."""
    at_ms, last_id = decode_cursor(cursor, 2)
    try:
        last = ObjectId(last_id)
    except (InvalidId, TypeError):
        raise InvalidRequest(BAD_CURSOR, field="cursor") from None
    return cursor_time(at_ms), last


def resume_cursor(searched_to: datetime) -> str:
    """A cursor that continues a search that stopped early before `searched_to`: every
    event at or after it was read. Stored times are whole milliseconds, so rounding up
    to one skips none."""
    micros = (searched_to - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    ms = -(-micros // 1000)
    return encode_cursor(ms, "0" * 24)


def ip_filter(value: str | None) -> str | None:
    """An `ip` filter as typed (the audit log's field): an address or its start."""
    if not value:
        return None
    ip = value.strip().lower()
    if not IP_FILTER_RE.fullmatch(ip):
        raise InvalidRequest("'ip' must be an IP address or the start of one, like 10.0. or 2001:db8:", field="ip")
    return ip


def one_of(field: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidRequest(f"'{field}' must be one of {', '.join(allowed)}", field=field)
    return value


class Admin:
    def __init__(
        self,
        accounts: Accounts,
        sessions: Sessions,
        events: EventLog,
        clock: Clock,
        outbox: OutboxReader,
        factors: FactorList,
        locks: LoginLocks | None = None,
    ) -> None:
        self.factors = factors
        self.locks = locks
        self.accounts = accounts
        self.session_store = sessions
        self.event_log = events
        self.clock = clock
        self.read_outbox = outbox

    async def account_ref(self, ref: str | None) -> Account | None:
        """The account an admin named by id, uid, username, e-mail or phone. An unknown
        reference is a 404, not an empty list: a typo should not look like "no sessions"."""
        if not ref:
            return None
        account = await self.accounts.find_any(ref.strip())
        if account is None:
            raise AccountNotFound("no account matches " + repr(ref[:80]))
        return account

    async def account_overview(self, account_id: int) -> AccountOverview:
        """The account (404 when there is none), its sessions and its recent events."""
        account = await self.accounts.get(account_id)
        sessions = await self.session_store.recent_for_account(account, limit=OVERVIEW_SESSIONS)
        events = await self.event_log.page(account_id=account.id, limit=OVERVIEW_EVENTS)
        factors = await self.factors.list(account.id)
        left = await self.factors.recovery_left(account.id) if account.mfa else 0
        passkeys = await PasskeyList(self.factors.coll.database).list(account.id)
        lock = await self.locks.status(account.id) if self.locks else None
        names = await self.accounts.refs(ids_named(events))
        return AccountOverview(account, sessions, events, factors, left, passkeys, lock=lock, names=names)

    async def lock_statuses(self, account_ids: list[int]) -> dict[int, LockStatus]:
        """The login record of each account of a list's page (a "locked" badge), in one
        read (`LoginLocks.statuses`)."""
        return await self.locks.statuses(account_ids) if self.locks else {}

    async def find_account(self, ref: str | None) -> Account | None:
        """The account an exact reference names (`account_ref`), None for none: a link's
        `account=` whose account is gone shows an empty list, not a 404."""
        return await self.accounts.find_any(ref.strip()) if ref and ref.strip() else None

    def terms(self, q: str | None) -> Terms | None:
        """A search text's forms (models/search.py), phones read in the server's region."""
        return parse(q, self.accounts.region)

    async def search_scope(self, q: str | None) -> SearchScope:
        """What a search text selects on the sessions and events lists: the address or
        prefix it is, or the first SEARCH_ACCOUNTS accounts it matches (none matched:
        an empty list, never a 404); nothing without a text."""
        terms = self.terms(q)
        if terms is None:
            return SearchScope(None, None, {})
        if terms.ip or terms.ip_prefix:
            return SearchScope(None, terms.ip or terms.ip_prefix, {})
        found = await match_accounts(self.accounts, self.session_store, terms)
        matched = {m.id: m.matched_by for m in found[:SEARCH_ACCOUNTS]}
        return SearchScope(list(matched), None, matched)

    async def sessions(
        self,
        *,
        account: Account | None = None,
        kind: str | None = None,
        active: bool = False,
        limit: int = 50,
        cursor: str | None = None,
        q: str | None = None,
        oldest: bool = False,
        counted: bool = True,
    ) -> Page[SessionRow]:
        """Sessions by lastActive, newest first (`oldest`: oldest first, the list's
        end). Without `active`, revoked sessions that have not expired yet are listed
        too (marked), so a kick stays visible. `q`: a search (models/search.py), of
        the sessions of the accounts it matches or from the address it is; the page
        says how many there are (`count`, up to a cap; not when `counted` is off) and
        what matched."""
        kind = one_of("kind", kind, KINDS) if kind else None
        after = after_session(cursor) if cursor else None
        terms = self.terms(q) if account is None else None  # one account named: that one's
        if terms is not None:
            return await self._searched_sessions(terms, kind, active, limit, after, oldest)
        found = await self.session_store.listing(
            holder=account, kind=kind, live_only=active, after=after, limit=limit + 1, oldest=oldest
        )
        if not counted:  # the sessions page's self-refresh shows rows only
            return await self._session_page(found, limit, None, False, {})
        total = await self.session_store.count_listing(
            account_id=account.id if account is not None else None, kind=kind, cap=SESSION_COUNT_CAP
        )
        return await self._session_page(found, limit, total, total >= SESSION_COUNT_CAP, {})

    async def _searched_sessions(
        self, terms: Terms, kind: str | None, active: bool, limit: int, after: tuple | None, oldest: bool
    ) -> Page[SessionRow]:
        scope = await self.search_scope(terms.text)
        found = await self.session_store.matching(
            account_ids=scope.account_ids,
            ip=ip_range(terms),
            kind=kind,
            live_only=active,
            cap=SEARCH_CAP + 1,
        )
        total, capped = len(found[:SEARCH_CAP]), len(found) > SEARCH_CAP
        if oldest:
            found.reverse()
        if after is not None:
            found = [s for s in found if ((s.last_active, s.id) > after if oldest else (s.last_active, s.id) < after)]
        page = await self._session_page(found, limit, total, capped, scope.matched_by)
        if scope.ip_prefix:  # each shown session's account matched by the address
            return replace(page, matched_by={r.session.account_id: [f"ip {scope.ip_prefix}"] for r in page.items})
        return page

    async def _session_page(
        self, found: list[Session], limit: int, total: int | None, capped: bool, matched: dict[int, list[str]]
    ) -> Page[SessionRow]:
        nxt = session_cursor(found[limit - 1]) if len(found) > limit else None
        found = found[:limit]
        owners = await self.accounts.refs(s.account_id for s in found)
        rows = [SessionRow(s, owners.get(s.account_id)) for s in found]
        return Page(rows, nxt, count=total, capped=capped, matched_by=matched)

    async def events(
        self,
        *,
        account: Account | None = None,
        type: str | None = None,
        outcome: str | None = None,
        ip: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
        budget: int = EVENT_SEARCH_BUDGET,
        account_ids: list[int] | None = None,
        ip_prefix: str | None = None,
    ) -> EventPage:
        """The audit log, newest first, with the names of the accounts it mentions. A
        filter that matches rarely (an IP, an outcome) stops after reading
        `EVENT_SEARCH_BUDGET` events: the page is then short, says how far back it
        looked, and its `next` resumes from there. A search box (models/search.py) gives
        `account_ids` (its matches) or `ip_prefix`."""
        if since is not None and until is not None and since >= until:
            raise InvalidRequest("'since' must be before 'until'", field="since")
        query = EventQuery(
            account_id=account.id if account is not None else None,
            type=one_of("type", type, EVENT_TYPES) if type else None,
            outcome=one_of("outcome", outcome, OUTCOMES) if outcome else None,
            ip=ip_filter(ip) or (ip_filter(ip_prefix) if account is None else None),
            since=since,
            until=until,
            account_ids=tuple(account_ids) if account_ids is not None and account is None else None,
        )
        after = after_event(cursor) if cursor else None
        found = await self.event_log.search(query, after=after, limit=limit + 1, budget=budget)
        items = found.items[:limit]
        if len(found.items) > limit:
            nxt = event_cursor(items[-1])
        else:
            nxt = resume_cursor(found.searched_to) if found.searched_to else None
        names = await self.accounts.refs(ids_named(items))
        return EventPage(items, nxt, names, found.searched_to)

    async def export_events(self, cap: int = EXPORT_CAP, **filters: Any) -> EventExport:
        """Up to `cap` events of the audit log's filtered view, newest first, for the CSV
        export: the `events` pages one after another, at most `EXPORT_PAGES` of them."""
        items: list[dict] = []
        names: dict[int, AccountRef] = {}
        cursor = None
        for _ in range(EXPORT_PAGES):
            page = await self.events(limit=min(EXPORT_PAGE, cap - len(items)), cursor=cursor, **filters)
            items += page.items
            names.update(page.names)
            cursor = page.next
            if cursor is None or len(items) >= cap:
                break
        return EventExport(items, names, complete=cursor is None)

    async def dashboard(self) -> dict[str, Any]:
        """The console's front page numbers, all over the last 24 hours, from counters
        kept as things happen (models/stats.py, which states each one's error): nothing
        here counts a collection."""
        now = self.clock()
        hours = [(now - timedelta(hours=h)).replace(minute=0, second=0, microsecond=0) for h in range(23, -1, -1)]
        chart = {epoch(h): {"hour": epoch(h), "login_ok": 0, "login_failed": 0} for h in hours}
        mfa = {"mfa_verified": 0, "mfa_failed": 0}
        for bucket in await self.event_log.logins_by_hour(hours[0]):
            row = chart.get(epoch(bucket["hour"]))
            if row is not None:
                row["login_ok"] += int(bucket.get("login_ok", 0))
                row["login_failed"] += int(bucket.get("login_failed", 0))
                for name in mfa:
                    mfa[name] += int(bucket.get(name, 0))
        return {
            "mfa_24h": mfa["mfa_verified"],
            "failed_mfa_24h": mfa["mfa_failed"],
            "active_sessions": await self.session_store.count_live(),
            "active_accounts_24h": await self.session_store.count_accounts_active_since(now - timedelta(hours=24)),
            "logins_24h": sum(row["login_ok"] for row in chart.values()),
            "failed_logins_24h": sum(row["login_failed"] for row in chart.values()),
            "accounts": await self.accounts.estimated_count(),
            "by_hour": list(chart.values()),
        }

    async def account_page(
        self,
        *,
        page: int = 1,
        limit: int = 50,
        sort: str | None = None,
        desc: bool = False,
        q: str | None = None,
        **filters: str | None,
    ) -> AccountPage:
        """One page of accounts, each read a bounded index range: all of them by id
        (`sort` created, `desc` newest first), or a search `q` (models/search.py: its
        first SEARCH_CAP matches, in match order or sorted by a column, last activity
        and session count only for SORT_CAP matches or fewer); `phone` / `username`:
        drf's exact filters (`Accounts.search`). Each shown account comes with its
        session count and last activity. The console's and the admin API's account
        search and drf's `users/`, so they run as administrator reads (app.py)."""
        sort = one_of("sort", sort, ACCOUNT_SORTS) if sort else None
        terms = self.terms(q)
        if terms is None or any(filters.values()):
            if sort not in (None, "created") and terms is None:
                raise InvalidRequest("only a search's matches sort by last activity or sessions", field="sort")
            found = await self.accounts.search(page=page, limit=limit, q=q, newest_first=desc, **filters)
            pages = -(-max(await self.accounts.last_id(), 1) // limit) if terms is None else -(-found.count // limit)
            activity = await self.session_store.activity([a.id for a in found.accounts])
            return replace(found, pages=max(pages, 1), activity=activity)
        return await self._search_page(terms, page, limit, sort, desc)

    async def _search_page(self, terms: Terms, page: int, limit: int, sort: str | None, desc: bool) -> AccountPage:
        matches = await match_accounts(self.accounts, self.session_store, terms)
        shown = matches[:SEARCH_CAP]
        ids = [m.id for m in shown]
        activity: dict[int, tuple[int, datetime | None]] = {}
        if sort in ("last_active", "sessions"):
            if len(ids) > SORT_CAP:
                too_many = f"narrow the search to {SORT_CAP} accounts or fewer to sort by {sort}"
                raise InvalidRequest(too_many, field="sort")
            activity = await self.session_store.activity(ids)
            ids.sort(key=lambda i: _activity_key(activity[i], sort))
        elif sort == "created":
            ids.sort()
        if desc:
            ids.reverse()
        chosen = ids[(page - 1) * limit : page * limit]
        by_id = await self.accounts.by_ids(chosen)
        activity = {i: activity[i] for i in chosen} if activity else await self.session_store.activity(chosen)
        return AccountPage(
            [by_id[i] for i in chosen if i in by_id],
            len(shown),
            len(matches) > SEARCH_CAP,
            len(ids) > page * limit,
            matched_by={m.id: m.matched_by for m in shown if m.id in by_id},
            pages=max(-(-len(ids) // limit), 1),
            activity=activity,
        )

    async def outbox(self, limit: int = 100) -> list[dict]:
        return await self.read_outbox(limit)


def _activity_key(activity: tuple[int, datetime | None], sort: str) -> tuple:
    """Ascending order of an account's activity: fewest sessions / longest idle first."""
    count, last = activity
    return (count,) if sort == "sessions" else (last is not None, last or datetime.min.replace(tzinfo=UTC))


def admin_session_view(row: SessionRow) -> dict:
    """A session as the admin API lists it: whose it is, and how it ended if it did."""
    session, owner = row.session, row.owner
    return {
        **session_view(session),
        "account": {
            "id": session.account_id,
            "uid": owner.uid if owner else None,
            "username": owner.username if owner else None,
        },
        "revokedReason": session.revoked_reason,
        "revokedBy": session.revoked_by,
    }
