"""Sessions: one login on one device, whatever kind of token it hands out.

An opaque session's token is 256 random bits; only its SHA-256 is stored (under a
unique index), so a database leak does not leak live tokens. Every session has an
idle deadline and an absolute one; `expires_at` is the earlier of the two and carries
the TTL index, and lookups check it too (TTL deletion runs only once a minute).
`lastActive` is written at most once per `resolution` seconds per session, so reads do
not turn into writes, and a write that fails does not fail the request it rides on.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from .changes import CHANGED, Changes
from .common import Clock, Context, epoch, newest_first, oldest_first, seconds, sha256_hex
from .db import insert_once
from .stats import HOUR, Stats, hour_of, hour_of_field, sketch_entry
from .values import Account, Assurance, Session

# `enrol`: the session GATEHOUSE_MFA gives an account that must add a second factor
# first; only the enrolment routes take its token.
KINDS = ("opaque", "jwt", "console", "enrol")
# The admin lists' order, which the `last_active_id`, `kind_last_active` and
# `account_last_active` indexes keep (after their equality key).
NEWEST = [("last_active", DESCENDING), ("_id", DESCENDING)]
OLDEST = [("last_active", ASCENDING), ("_id", ASCENDING)]
# The longest a session can live when the store is not told (the settings' ceiling).
YEAR = timedelta(days=366)
# How many of one account's sessions the accounts list counts (a service account with
# more shows this many): each count is one bounded read.
ACTIVITY_CAP = 1000

log = logging.getLogger("gatehouse")


def new_token() -> str:
    return secrets.token_urlsafe(32)


class Sessions:
    def __init__(
        self,
        db: AsyncDatabase,
        clock: Clock,
        resolution: int,
        changes: Changes | None = None,
        *,
        max_lifetime: timedelta = YEAR,
        stats: Stats | None = None,
    ) -> None:
        self.coll = db.sessions
        self.clock = clock
        self.resolution = resolution
        self.changes = changes or Changes()
        # No unexpired session was active before now - max_lifetime: the lists' floor.
        self.max_lifetime = max_lifetime
        self.stats = stats or Stats(db, max_lifetime)
        self.touch_failing = False  # the last lastActive write failed (warned once)

    async def create(
        self,
        account: Account,
        kind: str,
        ctx: Context,
        *,
        idle_seconds: int,
        max_seconds: int,
        assurance: Assurance,
    ) -> tuple[Session, str | None]:
        """A new session; for opaque and console kinds also its token (returned once)."""
        now = self.clock()
        token = new_token() if kind in ("opaque", "console", "enrol") else None
        absolute = now + seconds(max_seconds)
        doc: dict[str, Any] = {
            "_id": uuid.uuid4().hex,
            "account_id": account.id,
            "kind": kind,
            "style": ctx.style,
            "created": now,
            "last_active": now,
            "idle_seconds": idle_seconds,
            "absolute_expires_at": absolute,
            "expires_at": min(now + seconds(idle_seconds), absolute),
            "ip": ctx.ip,
            "user_agent": ctx.user_agent[:512],
            "revoked_at": None,
            # The account's credentials as they were when this login was checked: a
            # password change, reset, disable or takeover since makes the session void.
            "cred_epoch": account.cred_epoch,
            "aal": assurance.aal,
            "amr": list(assurance.amr),
            "auth_time": now,
        }
        if token:
            doc["token_hash"] = sha256_hex(token)
        await insert_once(self.coll, doc)
        await self.stats.apply(
            self.stats.add("expiring", doc["expires_at"], n=1), self.stats.seen("active", now, account.id)
        )
        return Session.from_doc(doc), token

    def _alive(self, doc: dict | None) -> Session | None:
        session = Session.from_doc(doc) if doc else None
        return session if session is not None and session.alive(self.clock()) else None

    async def find_by_token(self, token: str) -> Session | None:
        """The live session a raw opaque token belongs to, or None."""
        return self._alive(await self.coll.find_one({"token_hash": sha256_hex(token)}))

    async def find_token(self, token: str) -> Session | None:
        """The session a raw opaque token belongs to, live or not (one indexed read)."""
        doc = await self.coll.find_one({"token_hash": sha256_hex(token)})
        return Session.from_doc(doc) if doc else None

    async def find_alive(self, session_id: str) -> Session | None:
        return self._alive(await self.coll.find_one({"_id": session_id}))

    async def find_with_account(self, session_id: str) -> tuple[Session | None, Account | None]:
        """A session and its account in one round trip (`$lookup` on the accounts'
        unique `id`), live or not."""
        cursor = await self.coll.aggregate(
            [
                {"$match": {"_id": session_id}},
                {"$limit": 1},
                {"$lookup": {"from": "accounts", "localField": "account_id", "foreignField": "id", "as": "account"}},
            ]
        )
        found = await cursor.to_list(length=1)
        if not found:
            return None, None
        accounts = found[0].pop("account")
        return Session.from_doc(found[0]), (Account.from_doc(accounts[0]) if accounts else None)

    async def find(self, session_id: str) -> Session | None:
        doc = await self.coll.find_one({"_id": session_id})
        return Session.from_doc(doc) if doc else None

    def due_touch(self, session: Session) -> Session | None:
        """The session active now, when its `lastActive` is due a write (at most once per
        resolution); None while the stored one is recent enough."""
        now = self.clock()
        if (now - session.last_active).total_seconds() < self.resolution:
            return None
        return session.touched(now)

    async def touch(self, session: Session) -> None:
        touched = self.due_touch(session)
        if touched is not None:
            await self.record_activity(touched)

    async def record_activity(self, session: Session) -> None:
        """Write a touched session's `lastActive` (see `due_touch`): the conditional
        filter makes concurrent requests (and processes) write once between them."""
        now = session.last_active
        try:
            before = await self.coll.find_one_and_update(
                {"_id": session.id, "revoked_at": None, "last_active": {"$lte": now - seconds(self.resolution)}},
                {"$set": {"last_active": now, "expires_at": session.expires_at}},
                projection={"_id": 0, "last_active": 1, "expires_at": 1},
                return_document=ReturnDocument.BEFORE,
            )
            if before is not None:
                await self.stats.apply(*self._counted_touch(session, before))
        except PyMongoError as e:
            # Bookkeeping, not a check: the request it rides on goes on. Said once per
            # spell of failures, not once per request.
            if not self.touch_failing:
                log.warning("lastActive cannot be written (%s); requests go on without it", type(e).__name__)
            self.touch_failing = True
            return
        if self.touch_failing:
            log.info("lastActive is written again")
        self.touch_failing = False

    def _counted_touch(self, session: Session, before: dict) -> list:
        """The counter updates of a `lastActive` write: the session moves to the hour
        bucket of its new `expires_at`, and its account is seen active in a new hour."""
        ops = []
        if hour_of(before["expires_at"]) != hour_of(session.expires_at):
            ops += [
                self.stats.add("expiring", before["expires_at"], n=-1),
                self.stats.add("expiring", session.expires_at, n=1),
            ]
        if hour_of(before["last_active"]) != hour_of(session.last_active):
            ops.append(self.stats.seen("active", session.last_active, session.account_id))
        return ops

    async def _uncount(self, expiries: list[datetime]) -> None:
        """Revoked sessions leave the live count: -1 in each one's expiry hour."""
        by_hour = Counter(hour_of(e) for e in expiries if e > self.clock())
        await self.stats.apply(*(self.stats.add("expiring", h, n=-n) for h, n in by_hour.items()))

    async def revoke(self, session_id: str, reason: str, by: str | None = None) -> bool:
        """Revoke one live session; False when it was not live. The document stays (for
        the console and audit) until its expiry removes it."""
        revoked = await self.coll.find_one_and_update(
            {"_id": session_id, "revoked_at": None},
            {"$set": {"revoked_at": self.clock(), "revoked_reason": reason, "revoked_by": by}, **CHANGED},
            projection={"_id": 1, "expires_at": 1},
        )
        # After the write: a read racing it either sees it or is not stored (the epoch).
        self.changes.session(session_id)
        if revoked is not None:
            await self._uncount([revoked["expires_at"]])
        return revoked is not None

    async def restamp(self, session_id: str, cred_epoch: int) -> None:
        """Carry a session over to the account's new credential epoch (the session that
        changed the password keeps working)."""
        await self.coll.update_one(
            {"_id": session_id, "revoked_at": None}, {"$set": {"cred_epoch": cred_epoch}, **CHANGED}
        )
        self.changes.session(session_id)

    async def reassured(self, session_id: str, assurance: Assurance) -> Session | None:
        """The session authenticated again just now (`POST /auth/reauthenticate`, a factor
        confirmed in it): its `auth_time` moves to now, and its assurance becomes
        `assurance`. None when it is no longer alive."""
        doc = await self.coll.find_one_and_update(
            {"_id": session_id, "revoked_at": None},
            {"$set": {"auth_time": self.clock(), "aal": assurance.aal, "amr": list(assurance.amr)}, **CHANGED},
            return_document=ReturnDocument.AFTER,
        )
        self.changes.session(session_id)
        return self._alive(doc)

    async def revoke_all(
        self, account_id: int, reason: str, by: str | None = None, except_id: str | None = None
    ) -> int:
        query: dict[str, Any] = {"account_id": account_id, "revoked_at": None}
        if except_id:
            query["_id"] = {"$ne": except_id}
        # `revoked_op` marks the sessions this very write revoked, so that they and only
        # they leave the live count, whatever else revokes that account's sessions at once.
        op = uuid.uuid4().hex
        revoked = {"revoked_at": self.clock(), "revoked_reason": reason, "revoked_by": by, "revoked_op": op}
        result = await self.coll.update_many(query, {"$set": revoked, **CHANGED})
        self.changes.account(account_id)
        if result.modified_count:
            try:
                mine = self.coll.find({"account_id": account_id, "revoked_op": op}, {"_id": 0, "expires_at": 1})
                await self._uncount([doc["expires_at"] async for doc in mine])
            except PyMongoError as e:
                # The sessions are revoked (what was asked); only the dashboard is off.
                log.warning("%d kicked session(s) not uncounted (%s)", result.modified_count, type(e).__name__)
        return result.modified_count

    async def count_live(self) -> int:
        """Unrevoked sessions not yet expired, exactly, without counting them: the
        `expiring` counters of the hours after this one (see models/stats.py), plus
        this hour's expiries read from the TTL index (a range of an hour's sessions)."""
        now = self.clock()
        later = hour_of(now) + HOUR
        # The range alone first (the TTL index: the embedded planner would not pick it
        # for a filter that also names `revoked_at`), then the unrevoked, counted there.
        this_hour = [{"$match": {"expires_at": {"$gt": now, "$lt": later}}}, {"$match": {"revoked_at": None}}]
        counted = await self.coll.aggregate([*this_hour, {"$count": "n"}])
        found = await counted.to_list(length=1)
        return await self.stats.total("expiring", "n", since=later) + (found[0]["n"] if found else 0)

    async def recount(self) -> None:
        """Set the `expiring` and `active` counters from the sessions themselves (see
        Recounting in models/stats.py): the live sessions of each hour to come, read as
        `count_live` reads this hour's, and the accounts of the sessions active in the
        last day, from a range of `last_active`."""
        now = self.clock()
        later = hour_of(now) + HOUR
        live = await self.coll.aggregate(
            [
                {"$match": {"expires_at": {"$gte": later}}},
                {"$match": {"revoked_at": None}},
                {"$group": {"_id": hour_of_field("expires_at"), "n": {"$sum": 1}}},
            ]
        )
        await self.stats.replace("expiring", later, {d["_id"]: {"n": d["n"]} for d in await live.to_list(None)})
        sketches: defaultdict[datetime, dict[int, int]] = defaultdict(dict)
        active = {"last_active": {"$gte": hour_of(now) - timedelta(hours=24)}}
        # Small batches: a serving process runs this too, between its requests.
        active_docs = self.coll.find(active, {"_id": 0, "account_id": 1, "last_active": 1}).batch_size(2000)
        async for doc in active_docs:
            registers = sketches[hour_of(doc["last_active"])]
            register, rank = sketch_entry(doc["account_id"])
            registers[register] = max(registers.get(register, 0), rank)
        await self.stats.merge_sketches("active", sketches)

    async def count_accounts_active_since(self, since: datetime) -> int:
        """About how many accounts started a session or were active since `since`'s
        hour (a sketch: see models/stats.py for the error)."""
        return await self.stats.distinct("active", hour_of(since))

    async def _of_account(
        self, account_id: int, keep: Callable[[Session], bool], limit: int | None = None, oldest: bool = False
    ) -> list[Session]:
        """The account's sessions that `keep` keeps, newest activity first, from one
        bounded range of the `account_last_active` index: its sessions active within
        the longest lifetime (older ones have all expired). The filter leads with
        `account_id`, the index's first key: the embedded database's planner picks its
        index from the equality keys followed by one range (`{account_id, last_active}`
        is served in milliseconds; a filter led by `expires_at` walked the TTL index)."""
        now = self.clock()
        query = {"account_id": account_id, "last_active": {"$gte": now - self.max_lifetime}}
        docs = await self.coll.find(query, {"token_hash": 0}).sort(OLDEST if oldest else NEWEST).to_list(length=None)
        kept = [s for s in map(Session.from_doc, docs) if keep(s)]
        return kept[:limit] if limit is not None else kept

    async def list_for_account(self, account: Account, limit: int = 100) -> list[Session]:
        """The account's live sessions (those made with its current credentials)."""
        now = self.clock()
        return await self._of_account(account.id, lambda s: s.alive(now) and account.holds_session(s), limit)

    async def recent_for_account(self, account: Account, limit: int = 100) -> list[Session]:
        """The account's sessions as administrators see them: the live ones (as
        `list_for_account`) and the revoked ones that have not expired yet, so a kick
        stays visible; newest activity first. A session voided by a credential change
        without being revoked is neither live nor marked: it is left out."""
        now = self.clock()

        def shown(s: Session) -> bool:
            return s.expires_at > now and (s.revoked_at is not None or account.holds_session(s))

        return await self._of_account(account.id, shown, limit)

    async def listing(
        self,
        *,
        account_id: int | None = None,
        kind: str | None = None,
        live_only: bool = False,
        after: tuple[datetime, str] | None = None,
        limit: int = 50,
        oldest: bool = False,
        holder: Account | None = None,
    ) -> list[Session]:
        """Unexpired sessions across accounts by lastActive then id, newest first (or
        `oldest` first: the end of the list), starting after `after`, the (lastActive,
        id) of the last one already seen. Revoked sessions are listed too unless
        `live_only`.

        Every read is a bounded range of one index: with `account_id` the account's
        sessions (`_of_account`); else slices of lastActive back from the cursor
        (`newest_first`: 10 seconds, then slices sized by what they find, down to the
        longest session lifetime; `oldest_first` up from that floor), on
        `kind_last_active` with `kind` and on `last_active_id` without. Only the
        equality that leads the index goes into the filter, before the range (the key
        order the embedded planner needs: equalities, then one range on the next key);
        expiry and revocation are checked here. With `holder` (an account), its
        sessions as its page shows them: a session voided by a credential change
        without being revoked is left out there, so it is here too."""
        now = self.clock()
        keep = _keeper(now, kind, live_only, after, oldest)
        if holder is not None:  # one account, as its page shows it (`recent_for_account`)

            def shown(s: Session) -> bool:
                return keep(s) and (s.revoked_at is not None or holder.holds_session(s))

            return await self._of_account(holder.id, shown, limit, oldest)
        if account_id is not None:
            return await self._of_account(account_id, keep, limit, oldest)
        lead: dict[str, Any] = {"kind": kind} if kind else {}

        async def fetch(lo: datetime, hi: datetime, first: bool) -> list[Session]:
            query = {**lead, "last_active": {"$gte": lo, ("$lte" if first and not oldest else "$lt"): hi}}
            docs = await self.coll.find(query, {"token_hash": 0}).sort(OLDEST if oldest else NEWEST).to_list(None)
            return [s for s in map(Session.from_doc, docs) if keep(s)]

        floor = now - self.max_lifetime
        if oldest:
            bottom = max(after[0], floor) if after is not None else floor
            return await oldest_first(fetch, bottom=bottom, top=now + timedelta(milliseconds=1), need=limit)
        top = after[0] if after is not None else now
        return await newest_first(fetch, top=top, floor=floor, need=limit)

    async def count_listing(self, *, account_id: int | None = None, kind: str | None = None, cap: int) -> int:
        """How many sessions a list holds, counted up to `cap` (`cap` means "cap or more"):
        the list's own index range (`account_last_active`, `kind_last_active`,
        `last_active_id`), which mongod counts from the index and stops at `cap`. It
        counts sessions expired in the last minute that the TTL monitor has not removed
        yet, and revoked ones (listed unless "live only")."""
        lead: dict[str, Any] = {"account_id": account_id} if account_id is not None else {"kind": kind} if kind else {}
        query = {**lead, "last_active": {"$gte": self.clock() - self.max_lifetime}}
        return await self.coll.count_documents(query, limit=cap)

    def _ip_query(self, ip: str | dict[str, str]) -> dict[str, Any]:
        """The sessions from an address (with the lists' time range: equality, then a
        range, on `ip_last_active`) or from a prefix of one (a range of `ip`)."""
        if isinstance(ip, str):
            return {"ip": ip, "last_active": {"$gte": self.clock() - self.max_lifetime}}
        return {"ip": ip}

    async def account_ids_by_ip(self, ip: str | dict[str, str], cap: int) -> list[int]:
        """The accounts with sessions from an address or a prefix (`_ip_query`), from at
        most `cap` of those sessions: a search's IP form on the accounts page."""
        docs = await self.coll.find(self._ip_query(ip), {"account_id": 1, "_id": 0}).limit(cap).to_list(None)
        return list(dict.fromkeys(d["account_id"] for d in docs))

    async def matching(
        self,
        *,
        account_ids: list[int] | None = None,
        ip: str | dict[str, str] | None = None,
        kind: str | None = None,
        live_only: bool = False,
        cap: int,
    ) -> list[Session]:
        """The sessions of a search (models/search.py): of these accounts (one
        `account_last_active` range each) or from this address or prefix (`_ip_query`),
        at most `cap` read, newest activity first. The caller pages through them."""
        now = self.clock()
        keep = _keeper(now, kind, live_only, None, False)
        found: list[Session] = []
        if ip is not None:
            # The newest `cap` of the prefix's sessions (on mongod a top-`cap` sort of the
            # range; the embedded database reads the range whole either way).
            newest = self.coll.find(self._ip_query(ip), {"token_hash": 0}).sort(NEWEST).limit(cap)
            docs = await newest.to_list(None)
            found = [s for s in map(Session.from_doc, docs) if keep(s)]
        for account_id in account_ids or ():
            if len(found) >= cap:
                break
            found += await self._of_account(account_id, keep, cap - len(found))
        found.sort(key=lambda s: (s.last_active, s.id), reverse=True)
        return found

    async def activity(self, account_ids: list[int]) -> dict[int, tuple[int, datetime | None]]:
        """Each account's session count (up to ACTIVITY_CAP: a service account with
        thousands shows that many) and last activity, from its sessions that are live or
        revoked but not expired (one `account_last_active` range each: callers pass a
        page or a bounded search result)."""
        now = self.clock()
        out: dict[int, tuple[int, datetime | None]] = {}
        for account_id in dict.fromkeys(account_ids):
            query = {"account_id": account_id, "last_active": {"$gte": now - self.max_lifetime}}
            fields = {"last_active": 1, "expires_at": 1}
            docs = await self.coll.find(query, fields).sort(NEWEST).limit(ACTIVITY_CAP).to_list(None)
            shown = [d for d in docs if d["expires_at"] > now]
            out[account_id] = (len(shown), shown[0]["last_active"] if shown else None)
        return out


def _keeper(
    now: datetime, kind: str | None, live_only: bool, after: tuple[datetime, str] | None, oldest: bool
) -> Callable[[Session], bool]:
    """Which read sessions a list shows: unexpired, of the kind, live when asked, and
    beyond the cursor (older than it, or newer when the list runs `oldest` first)."""

    def keep(s: Session) -> bool:
        if s.expires_at <= now or (live_only and s.revoked_at is not None) or (kind and s.kind != kind):
            return False
        if after is None:
            return True
        return (s.last_active, s.id) > after if oldest else (s.last_active, s.id) < after

    return keep


def session_view(session: Session, current_id: str | None = None) -> dict:
    view = {
        "id": session.id,
        "kind": session.kind,
        "style": session.style,
        "created": epoch(session.created),
        "lastActive": epoch(session.last_active),
        "expires": epoch(session.expires_at),
        "ip": session.ip,
        "userAgent": session.user_agent,
        "revoked": session.revoked_at is not None,
        "aal": session.aal,
        "amr": list(session.amr),
        "authTime": epoch(session.auth_time or session.created),
    }
    if current_id is not None:
        view["current"] = session.id == current_id
    return view
