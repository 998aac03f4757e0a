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
from datetime import datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from .accounts import epoch_query
from .changes import CHANGED, Changes
from .common import Clock, Context, epoch, seconds, sha256_hex
from .db import insert_once
from .values import Account, Session

KINDS = ("opaque", "jwt", "console")

log = logging.getLogger("gatehouse")


def new_token() -> str:
    return secrets.token_urlsafe(32)


class Sessions:
    def __init__(self, db: AsyncDatabase, clock: Clock, resolution: int, changes: Changes | None = None) -> None:
        self.coll = db.sessions
        self.clock = clock
        self.resolution = resolution
        self.changes = changes or Changes()
        self.touch_failing = False  # the last lastActive write failed (warned once)

    async def create(
        self,
        account: Account,
        kind: str,
        ctx: Context,
        *,
        idle_seconds: int,
        max_seconds: int,
    ) -> tuple[Session, str | None]:
        """A new session; for opaque and console kinds also its token (returned once)."""
        now = self.clock()
        token = new_token() if kind in ("opaque", "console") else None
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
        }
        if token:
            doc["token_hash"] = sha256_hex(token)
        await insert_once(self.coll, doc)
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
            await self.coll.update_one(
                {"_id": session.id, "revoked_at": None, "last_active": {"$lte": now - seconds(self.resolution)}},
                {"$set": {"last_active": now, "expires_at": session.expires_at}},
            )
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

    async def revoke(self, session_id: str, reason: str, by: str | None = None) -> bool:
        """Revoke one live session; False when it was not live. The document stays (for
        the console and audit) until its expiry removes it."""
        revoked = await self.coll.find_one_and_update(
            {"_id": session_id, "revoked_at": None},
            {"$set": {"revoked_at": self.clock(), "revoked_reason": reason, "revoked_by": by}, **CHANGED},
            projection={"_id": 1},
        )
        # After the write: a read racing it either sees it or is not stored (the epoch).
        self.changes.session(session_id)
        return revoked is not None

    async def restamp(self, session_id: str, cred_epoch: int) -> None:
        """Carry a session over to the account's new credential epoch (the session that
        changed the password keeps working)."""
        await self.coll.update_one(
            {"_id": session_id, "revoked_at": None}, {"$set": {"cred_epoch": cred_epoch}, **CHANGED}
        )
        self.changes.session(session_id)

    async def revoke_all(
        self, account_id: int, reason: str, by: str | None = None, except_id: str | None = None
    ) -> int:
        query: dict[str, Any] = {"account_id": account_id, "revoked_at": None}
        if except_id:
            query["_id"] = {"$ne": except_id}
        result = await self.coll.update_many(
            query, {"$set": {"revoked_at": self.clock(), "revoked_reason": reason, "revoked_by": by}, **CHANGED}
        )
        self.changes.account(account_id)
        return result.modified_count

    async def count_live(self) -> int:
        return await self.coll.count_documents({"revoked_at": None, "expires_at": {"$gt": self.clock()}})

    async def count_accounts_active_since(self, since: datetime) -> int:
        """How many accounts had a session active at or after `since`."""
        counted = await self.coll.aggregate(
            [{"$match": {"last_active": {"$gte": since}}}, {"$group": {"_id": "$account_id"}}, {"$count": "n"}]
        )
        found = await counted.to_list(length=1)
        return found[0]["n"] if found else 0

    @staticmethod
    def _held_by(account: Account) -> list[dict[str, Any]]:
        """Filters (any one) for the sessions made with the account's current
        credentials: its epoch, or the session carried over its last change
        (`Account.holds_session`, as a query)."""
        made_with: list[dict[str, Any]] = [{"cred_epoch": epoch_query(account.cred_epoch)}]
        carry = account.cred_carry
        if carry is not None and carry.epoch + 1 == account.cred_epoch:
            made_with.append({"_id": carry.session, "cred_epoch": carry.epoch})
        return made_with

    async def list_for_account(self, account: Account, limit: int = 100) -> list[Session]:
        """The account's live sessions (those made with its current credentials)."""
        now = self.clock()
        live: dict[str, Any] = {"account_id": account.id, "revoked_at": None, "expires_at": {"$gt": now}}
        live["$or"] = self._held_by(account)
        cursor = self.coll.find(live).sort("last_active", DESCENDING).limit(limit)
        return [Session.from_doc(doc) for doc in await cursor.to_list(length=limit)]

    async def recent_for_account(self, account: Account, limit: int = 100) -> list[Session]:
        """The account's sessions as administrators see them: the live ones (as
        `list_for_account`) and the revoked ones that have not expired yet, so a kick
        stays visible; newest activity first. A session voided by a credential change
        without being revoked is neither live nor marked: it is left out."""
        now = self.clock()
        live = [{"revoked_at": None, **made_with} for made_with in self._held_by(account)]
        query = {"account_id": account.id, "expires_at": {"$gt": now}, "$or": [{"revoked_at": {"$ne": None}}, *live]}
        cursor = self.coll.find(query, {"token_hash": 0}).sort([("last_active", DESCENDING), ("_id", DESCENDING)])
        return [Session.from_doc(doc) for doc in await cursor.limit(limit).to_list(length=limit)]

    async def listing(
        self,
        *,
        account_id: int | None = None,
        kind: str | None = None,
        live_only: bool = False,
        after: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> list[Session]:
        """Unexpired sessions across accounts by lastActive then id, newest first (the
        admin lists' order, which an index keeps cheap at any depth), starting after
        `after`, the (lastActive, id) of the last one already seen. Revoked sessions are
        listed too unless `live_only`."""
        query: dict[str, Any] = {"expires_at": {"$gt": self.clock()}}
        if account_id is not None:
            query["account_id"] = account_id
        if kind:
            query["kind"] = kind
        if live_only:
            query["revoked_at"] = None
        if after is not None:
            last, last_id = after
            query["$or"] = [{"last_active": {"$lt": last}}, {"last_active": last, "_id": {"$lt": last_id}}]
        cursor = self.coll.find(query, {"token_hash": 0}).sort([("last_active", DESCENDING), ("_id", DESCENDING)])
        return [Session.from_doc(doc) for doc in await cursor.limit(limit).to_list(length=limit)]


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
    }
    if current_id is not None:
        view["current"] = session.id == current_id
    return view
