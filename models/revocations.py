"""The revocation feed (issue 19): what ended since a cursor, for the apps' back ends that
verify JWTs offline and must learn of a kick within about a second.

Built on the stamps every store already writes for the session caches (`changes.CHANGED`:
`changed_at`, by the database's clock): sessions revoked, and accounts changed (disabled,
enabled, credentials). A page covers the stamps in `(since, until]`, where `until` is at
most `SETTLE` before the database's present: a write is stamped when it is applied and
visible a moment later, so a stamp that old is one no later read can still turn up
before it, and a cursor never skips a change. Each change is in exactly one page.

Pages are bounded: past `PAGE` changes the window is cut at the stamp where the page
fills (changes sharing one millisecond stay together, however many). Revoked sessions are
kept until their own expiry, so a subscriber that comes back after a while still learns of
every session whose tokens could still be alive. A session that merely timed out is not
in the feed: its tokens' `exp` ends them (JWTs never outlive their session's absolute
lifetime).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pymongo.asynchronous.database import AsyncDatabase

from .errors import InvalidRequest

SETTLE = timedelta(milliseconds=500)
PAGE = 1000
POLL_SECONDS = 0.25  # a held request looks again this often
MAX_WAIT = 25.0
CURSOR_PREFIX = "r1."
MS = timedelta(milliseconds=1)
FUTURE = timedelta(minutes=1)  # clock differences between members, and more


@dataclass(frozen=True)
class EndedSession:
    sid: str
    account_id: int
    at: float


@dataclass(frozen=True)
class ChangedAccount:
    account_id: int
    uid: str
    disabled: bool
    at: float


@dataclass(frozen=True)
class Page:
    sessions: list[EndedSession] = field(default_factory=list)
    accounts: list[ChangedAccount] = field(default_factory=list)
    cursor: str = ""
    more: bool = False

    @property
    def empty(self) -> bool:
        return not (self.sessions or self.accounts or self.more)


def encode_cursor(at: datetime) -> str:
    return CURSOR_PREFIX + str(int(at.timestamp() * 1000))


def decode_cursor(cursor: str) -> datetime:
    digits = cursor.removeprefix(CURSOR_PREFIX)
    if not cursor.startswith(CURSOR_PREFIX) or not digits.isascii() or not digits.isdigit() or len(digits) > 15:
        raise InvalidRequest("'since' is not a cursor this feed gave out", field="since")
    try:
        return datetime.fromtimestamp(int(digits) / 1000, UTC)
    except (ValueError, OverflowError, OSError):  # past year 9999: no cursor this feed gave out
        raise InvalidRequest("'since' is not a cursor this feed gave out", field="since") from None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class RevocationFeed:
    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db

    async def settled(self) -> datetime:
        """The newest stamp a page may cover: `SETTLE` before the database's clock."""
        db_now = _aware((await self.db.command("hello"))["localTime"])
        settled = db_now - SETTLE
        return settled.replace(microsecond=settled.microsecond // 1000 * 1000)  # stamps are whole ms

    async def page(self, since: datetime | None) -> Page:
        """The changes stamped in `(since, until]`; without `since`, an empty page whose
        cursor starts from now."""
        until = await self.settled()
        if since is not None and since > until + FUTURE:
            raise InvalidRequest("'since' is in the future: not a cursor this feed gave out", field="since")
        if since is None or since >= until:
            return Page(cursor=encode_cursor(max(until, since or until)))
        window = {"$gt": since, "$lte": until}
        sessions, cut = await self._stamped(self.db.sessions, {"changed_at": window, "revoked_at": {"$ne": None}})
        if cut is not None:
            window["$lte"] = until = cut
        accounts, cut_accounts = await self._stamped(self.db.accounts, {"changed_at": window})
        if cut_accounts is not None:
            until = min(until, cut_accounts)
        more = cut is not None or cut_accounts is not None
        return Page(
            sessions=[
                EndedSession(d["_id"], d["account_id"], _aware(d["changed_at"]).timestamp())
                for d in sessions
                if _aware(d["changed_at"]) <= until
            ],
            accounts=[
                ChangedAccount(d["id"], d["uid"], bool(d.get("disabled")), _aware(d["changed_at"]).timestamp())
                for d in accounts
                if _aware(d["changed_at"]) <= until
            ],
            cursor=encode_cursor(until),
            more=more,
        )

    async def _stamped(self, coll, query: dict) -> tuple[list[dict], datetime | None]:  # noqa: ANN001
        """The window's documents, oldest stamp first (the `changed_at` index), and where
        the page must end when they are more than `PAGE` (the end of the millisecond
        where it fills, all of whose documents are in), else None."""
        fields = {"_id": 1, "id": 1, "uid": 1, "account_id": 1, "disabled": 1, "changed_at": 1}
        docs = await coll.find(query, fields).sort("changed_at", 1).limit(PAGE + 1).to_list()
        if len(docs) <= PAGE:
            return docs, None
        last = _aware(docs[PAGE - 1]["changed_at"])
        same = {**query, "changed_at": {"$gte": last, "$lt": last + MS}}
        known = {d["_id"] for d in docs[:PAGE]}
        rest = [d for d in await coll.find(same, fields).to_list() if d["_id"] not in known]
        return docs[:PAGE] + rest, last + MS - timedelta(microseconds=1)

    async def wait(self, since: datetime | None, seconds: float, stop: Callable[[], bool] = lambda: False) -> Page:
        """A page, holding the request up to `seconds` while there is nothing new (a long
        poll) and `stop()` is false (a server shutting down answers at once): a kick
        anywhere reaches a waiting subscriber within `SETTLE` plus one look."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(seconds, 0.0), MAX_WAIT)
        page = await self.page(since)
        while page.empty and since is not None and not stop():
            left = deadline - loop.time()
            if left <= 0:
                break
            await asyncio.sleep(min(POLL_SECONDS, left))
            page = await self.page(since)
        return page
