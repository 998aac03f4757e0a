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
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from .accounts import credential_epoch, epoch_query
from .common import Clock, Context, epoch, seconds, sha256_hex
from .db import insert_once
from .session_cache import CHANGED, SessionCache

KINDS = ("opaque", "jwt", "console")

log = logging.getLogger("gatehouse")


def new_token() -> str:
    return secrets.token_urlsafe(32)


class Sessions:
    def __init__(self, db: AsyncDatabase, clock: Clock, resolution: int, cache: SessionCache | None = None) -> None:
        self.coll = db.sessions
        self.clock = clock
        self.resolution = resolution
        self.cache = cache or SessionCache(0, 0)
        self.touch_failing = False  # the last lastActive write failed (warned once)

    async def create(
        self,
        account: dict,
        kind: str,
        ctx: Context,
        *,
        idle_seconds: int,
        max_seconds: int,
    ) -> tuple[dict, str | None]:
        """A new session; for opaque and console kinds also its token (returned once)."""
        now = self.clock()
        token = new_token() if kind in ("opaque", "console") else None
        absolute = now + seconds(max_seconds)
        doc: dict[str, Any] = {
            "_id": uuid.uuid4().hex,
            "account_id": account["id"],
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
            "cred_epoch": credential_epoch(account),
        }
        if token:
            doc["token_hash"] = sha256_hex(token)
        await insert_once(self.coll, doc)
        return doc, token

    def is_alive(self, session: dict | None) -> bool:
        return bool(session) and session.get("revoked_at") is None and session["expires_at"] > self.clock()

    async def find_by_token(self, token: str) -> dict | None:
        """The live session a raw opaque token belongs to, or None."""
        session = await self.coll.find_one({"token_hash": sha256_hex(token)})
        return session if self.is_alive(session) else None

    async def find_alive(self, session_id: str) -> dict | None:
        session = await self.coll.find_one({"_id": session_id})
        return session if self.is_alive(session) else None

    async def find(self, session_id: str) -> dict | None:
        return await self.coll.find_one({"_id": session_id})

    async def touch(self, session: dict) -> None:
        """Record activity, at most once per resolution: the conditional filter makes
        concurrent requests (and processes) write once between them."""
        now = self.clock()
        if (now - session["last_active"]).total_seconds() < self.resolution:
            return
        expires = min(now + seconds(session["idle_seconds"]), session["absolute_expires_at"])
        # Marked before the write, so requests sharing this (cached) document meanwhile
        # do not send the same update again.
        session["last_active"] = now
        session["expires_at"] = expires
        try:
            await self.coll.update_one(
                {"_id": session["_id"], "revoked_at": None, "last_active": {"$lte": now - seconds(self.resolution)}},
                {"$set": {"last_active": now, "expires_at": expires}},
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

    async def revoke(self, session_id: str, reason: str, by: str | None = None) -> dict | None:
        """Revoke one live session; returns it, or None when it was not live. The document
        stays (for the console and audit) until its expiry removes it."""
        revoked = await self.coll.find_one_and_update(
            {"_id": session_id, "revoked_at": None},
            {"$set": {"revoked_at": self.clock(), "revoked_reason": reason, "revoked_by": by}, **CHANGED},
        )
        # After the write: a read racing it either sees it or is not stored (the epoch).
        self.cache.forget(session_id=session_id)
        return revoked

    async def restamp(self, session_id: str, cred_epoch: int) -> None:
        """Carry a session over to the account's new credential epoch (the session that
        changed the password keeps working)."""
        await self.coll.update_one(
            {"_id": session_id, "revoked_at": None}, {"$set": {"cred_epoch": cred_epoch}, **CHANGED}
        )
        self.cache.forget(session_id=session_id)

    async def revoke_all(
        self, account_id: int, reason: str, by: str | None = None, except_id: str | None = None
    ) -> int:
        query: dict[str, Any] = {"account_id": account_id, "revoked_at": None}
        if except_id:
            query["_id"] = {"$ne": except_id}
        result = await self.coll.update_many(
            query, {"$set": {"revoked_at": self.clock(), "revoked_reason": reason, "revoked_by": by}, **CHANGED}
        )
        self.cache.forget(account_id=account_id)
        return result.modified_count

    async def count_live(self) -> int:
        return await self.coll.count_documents({"revoked_at": None, "expires_at": {"$gt": self.clock()}})

    async def list_for_account(self, account: dict, limit: int = 100) -> list[dict]:
        """The account's live sessions (those made with its current credentials)."""
        now = self.clock()
        live = {"account_id": account["id"], "revoked_at": None, "expires_at": {"$gt": now}}
        current = {"cred_epoch": epoch_query(credential_epoch(account))}
        carry = account.get("cred_carry")
        carried = carry and carry["epoch"] + 1 == credential_epoch(account)
        live["$or"] = [current, {"_id": carry["session"], "cred_epoch": carry["epoch"]}] if carried else [current]
        cursor = self.coll.find(live).sort("last_active", DESCENDING).limit(limit)
        return await cursor.to_list(length=limit)


def session_view(session: dict, current_id: str | None = None) -> dict:
    view = {
        "id": session["_id"],
        "kind": session["kind"],
        "style": session.get("style"),
        "created": epoch(session["created"]),
        "lastActive": epoch(session["last_active"]),
        "expires": epoch(session["expires_at"]),
        "ip": session.get("ip"),
        "userAgent": session.get("user_agent"),
        "revoked": session.get("revoked_at") is not None,
    }
    if current_id is not None:
        view["current"] = session["_id"] == current_id
    return view
