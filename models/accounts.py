"""Accounts: creation with unique identifiers, lookup by any login name, and their views."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from .changes import CHANGED, Changes
from .common import Clock, epoch
from .db import insert_once
from .errors import AccountExists, AccountNotFound, InvalidRequest
from .passwords import PasswordHasher
from .ratelimit import upsert_inc
from .search import SEARCH_CAP, contact_keys, prefix_slices
from .validation import (
    classify_login,
    email_key,
    normalize_email,
    normalize_phone,
    normalize_username,
    username_key,
)
from .values import Account, AccountRef

IDENTITY_TIERS = (0, 1, 2)  # normal, VIP, VVIP
# How many matches an account search counts and pages through (see `Accounts.search`).
log = logging.getLogger("gatehouse")
# The search keys' version (models/search.py): accounts stored before it get theirs
# once (`backfill_search_keys`), and the counter remembers it was done.
SEARCH_KEYS_VERSION = 1
BACKFILL_BATCH = 500


@dataclass(frozen=True)
class AccountPage:
    """A page of accounts; `count` is how many there are (estimated, or counted up to
    SEARCH_CAP with `capped` set beyond); `more`: a next page has some."""

    accounts: list[Account]
    count: int
    capped: bool
    more: bool
    # A search's (models/search.py): what each account matched by ("id 134", "phone
    # ending 0134", …); and pages: how many (of the first SEARCH_CAP matches, or of ids).
    matched_by: dict[int, list[str]] = field(default_factory=dict)
    pages: int = 1
    # Each shown account's (session count, last activity): live and kicked-but-unexpired sessions.
    activity: dict[int, tuple[int, datetime | None]] = field(default_factory=dict)


_FIELD_BY_INDEX = {"username_key": "username", "email_key": "email", "phone": "phone"}


class Accounts:
    def __init__(
        self,
        db: AsyncDatabase,
        hasher: PasswordHasher,
        clock: Clock,
        phone_region: str,
        changes: Changes | None = None,
    ) -> None:
        self.coll = db.accounts
        self.counters = db.counters
        self.hasher = hasher
        self.clock = clock
        self.region = phone_region
        self.changes = changes or Changes()

    async def _one(self, query: dict[str, Any]) -> Account | None:
        doc = await self.coll.find_one(query)
        return Account.from_doc(doc) if doc else None

    async def _next_id(self) -> int:
        return int((await upsert_inc(self.counters, "accounts", {"seq": 1}))["seq"])

    def normalize_identifiers(
        self, username: str | None, email: str | None, phone: str | None
    ) -> tuple[str | None, str | None, str | None]:
        return (
            normalize_username(username) if username else None,
            normalize_email(email) if email else None,
            normalize_phone(phone, self.region) if phone else None,
        )

    async def create(
        self,
        *,
        password: str | None,
        username: str | None = None,
        email: str | None = None,
        phone: str | None = None,
        nickname: str = "",
        identity: int = 0,
        roles: tuple[str, ...] = (),
        phone_verified: bool = False,
        style: str = "native",
    ) -> Account:
        """Insert a new account. Identifiers must already be normalized. Uniqueness is the
        database's job (partial unique indexes), so two concurrent sign-ups of one name
        give exactly one account and one `AccountExists`."""
        if not (username or email or phone):
            raise InvalidRequest("a username, an e-mail address or a phone number is required")
        if identity not in IDENTITY_TIERS:
            raise InvalidRequest("identity must be 0 (normal), 1 (VIP) or 2 (VVIP)", field="identity")
        if password is not None:
            self.hasher.check_policy(password, username, email, phone)
            password_hash = await self.hasher.hash(password)
        else:
            password_hash = None  # phone-code accounts (API 001) have no password
        now = self.clock()
        doc: dict[str, Any] = {
            "id": await self._next_id(),
            "uid": str(uuid.uuid4()),
            "username": username,
            "username_key": username_key(username) if username else None,
            "email": email,
            "email_key": email_key(email) if email else None,
            "phone": phone,
            "nickname": nickname or "",
            "identity": identity,
            "password_hash": password_hash,
            "phone_verified": phone_verified,
            "email_verified": False,
            "disabled": False,
            "roles": list(roles),
            "created": now,
            "password_changed": now,
            "style": style,
            **contact_keys(email=email, phone=phone, nickname=nickname),
        }
        # Never store nulls under the uniquely indexed keys: leave the field out.
        doc = {k: v for k, v in doc.items() if v is not None or k not in _FIELD_BY_INDEX}
        try:
            await insert_once(self.coll, doc)
        except DuplicateKeyError as e:
            key = next(iter((e.details or {}).get("keyPattern", {}) or {}), "")
            field = _FIELD_BY_INDEX.get(key, "account")
            raise AccountExists(f"an account with this {field} already exists", field=field) from None
        await self._count(+1)
        return Account.from_doc(doc)

    async def find_by_login(self, identifier: str) -> Account | None:
        """The account a login name (username, e-mail or phone) refers to."""
        kind = classify_login(identifier, self.region)
        if kind is None:
            return None
        field, key = kind
        return await self._one({field: key})

    async def find_by_id(self, account_id: int) -> Account | None:
        return await self._one({"id": account_id})

    async def get(self, account_id: int) -> Account:
        """The account with this id, or `AccountNotFound` (a 404 in every envelope)."""
        account = await self.find_by_id(account_id)
        if account is None:
            raise AccountNotFound()
        return account

    async def find_by_uid(self, uid: str) -> Account | None:
        return await self._one({"uid": uid})

    async def find_by_phone(self, phone: str) -> Account | None:
        return await self._one({"phone": phone})

    async def find_by_email(self, email: str) -> Account | None:
        return await self._one({"email_key": email_key(email)})

    async def find_any(self, ref: str) -> Account | None:
        """An account by id, uid, username, e-mail or phone (admin tools take any of them)."""
        if ref.isascii() and ref.isdigit() and len(ref) < 12:  # (not ፩: a digit int() refuses)
            found = await self.find_by_id(int(ref))
            if found:
                return found
        if re.fullmatch(r"[0-9a-f-]{36}", ref):
            found = await self.find_by_uid(ref)
            if found:
                return found
        return await self.find_by_login(ref)

    async def set_password(
        self,
        account_id: int,
        password: str,
        *,
        if_epoch: int | None = None,
        keep_session: str | None = None,
        by_code: str | None = None,
    ) -> int | None:
        """Store a new password and move the credential epoch in the same write: every
        session stamped with an older epoch is refused from then on. Returns the new
        epoch. With `if_epoch` (the epoch the current password was checked under), only
        while the credentials are still those: a change whose check was in flight while a
        reset or a takeover landed must not write over it (None then). `keep_session`
        (with `if_epoch`): the session making the change carries over to the new epoch
        in this same write (`cred_carry`), so the change is decided by this one write.
        `by_code` (a reset code's hash): once per code, so of two submissions of one code
        racing, one sets its password (None for the other)."""
        password_hash = await self.hasher.hash(password)
        query: dict[str, Any] = {"id": account_id}
        fields: dict[str, Any] = {"password_hash": password_hash, "password_changed": self.clock(), "cred_carry": None}
        if by_code is not None:
            query["reset_by"] = {"$ne": by_code}
            fields["reset_by"] = by_code
        if if_epoch is not None:
            query["cred_epoch"] = epoch_query(if_epoch)
            if keep_session:
                fields["cred_carry"] = {"session": keep_session, "epoch": if_epoch}
        updated = await self.coll.find_one_and_update(
            query,
            {
                "$set": fields,
                "$inc": {"cred_epoch": 1},
                **CHANGED,
            },
            projection={"cred_epoch": 1},
            return_document=ReturnDocument.AFTER,
        )
        if updated is None:
            return None
        self.changes.account(account_id)
        return int(updated.get("cred_epoch") or 0)

    async def delete_unproven(self, account_id: int) -> bool:
        """Delete a sign-up that never got going (no password, phone not proven): the
        rollback of document 001's sign-up when its text message could not be sent."""
        result = await self.coll.delete_one({"id": account_id, "password_hash": None, "phone_verified": {"$ne": True}})
        await self._count(-result.deleted_count)
        return result.deleted_count == 1

    async def set_disabled(self, account_id: int, disabled: bool) -> bool:
        update: dict[str, Any] = {"$set": {"disabled": disabled}, **CHANGED}
        if disabled:
            update["$inc"] = {"cred_epoch": 1}
        result = await self.coll.update_one({"id": account_id}, update)
        self.changes.account(account_id)
        return result.matched_count == 1

    async def mark_verified(self, account: Account, field: str) -> None:
        """Mark the phone or e-mail proven (by its owner, or already proven)."""
        await self.coll.update_one({"id": account.id}, {"$set": {f"{field}_verified": True}, **CHANGED})
        self.changes.account(account.id)

    async def take_over(self, account: Account, field: str) -> bool:
        """A first proof of `field` on an account with no proven contact: in one write,
        mark it proven, clear the password and the second factors (`mfa`; the factors'
        own documents go next, `Factors.drop`) and move the credential epoch. Conditional on
        no contact being proven, so of concurrent proofs one takes over. True when this
        call did."""
        other = "email" if field == "phone" else "phone"
        taken = await self.coll.update_one(
            {"id": account.id, f"{field}_verified": {"$ne": True}, f"{other}_verified": {"$ne": True}},
            {
                "$set": {f"{field}_verified": True, "password_hash": None, "mfa": []},
                "$inc": {"cred_epoch": 1},
                **CHANGED,
            },
        )
        self.changes.account(account.id)
        return taken.modified_count == 1

    async def detach(self, account: Account, field: str) -> bool:
        """Remove an unproven phone or e-mail from an account whose owner proved the other
        contact: the address was never theirs to keep, and its real owner may register it.
        True when this call removed it."""
        removed = await self.coll.update_one(
            {"id": account.id, field: account.contact(field), f"{field}_verified": {"$ne": True}},
            {"$unset": _contact_fields(field), **CHANGED},
        )
        self.changes.account(account.id)
        return removed.modified_count == 1

    async def delete(self, account_id: int) -> bool:
        result = await self.coll.delete_one({"id": account_id})
        self.changes.account(account_id)
        await self._count(-result.deleted_count)
        return result.deleted_count == 1

    async def search(
        self,
        *,
        page: int = 1,
        limit: int = 50,
        phone: str | None = None,
        username: str | None = None,
        q: str | None = None,
        newest_first: bool = False,
    ) -> AccountPage:
        """One page of accounts, every read a bounded index range (the console, the
        admin API and drf's `users/` alike).

        Unfiltered: page p is the accounts with ids (p-1)·limit+1 … p·limit, one range
        of `id_unique` at any depth (ids are handed out in sequence, so a page is short
        only by the accounts deleted from it); `count` is the collection's estimated
        count (metadata, no scan). A search: exact matches on `phone` / `username` /
        `q` as any identifier, then usernames starting with `q` in `username_key` order,
        counted up to `SEARCH_CAP` (`count` says `SEARCH_CAP` and `capped` is set
        beyond: "1,000+", as Keycloak's console does for large realms, rather than
        counting every match), and pages reach no further than that."""
        if not (phone or username or q):
            return await self._id_page(page, limit, newest_first)
        keys = await self._matching(phone, username, q)
        shown = keys[:SEARCH_CAP]  # a page past them is empty
        chosen = shown[(page - 1) * limit : page * limit]
        found = {a.id: a for a in await self._by_ids(chosen)}
        accounts = [found[i] for i in chosen if i in found]
        return AccountPage(accounts, len(shown), len(keys) > SEARCH_CAP, len(shown) > page * limit)

    async def _id_page(self, page: int, limit: int, newest_first: bool = False) -> AccountPage:
        """Page p of ids 1, 2, …, or (`newest_first`) of ids last, last - 1, … down."""
        first, last = (page - 1) * limit, await self.last_id()
        if newest_first:
            found = (await self._by_ids(range(max(last - first - limit + 1, 1), last - first + 1)))[::-1]
        else:
            found = await self._by_ids(range(first + 1, first + limit + 1))
        return AccountPage(found, await self.estimated_count(), False, last > first + limit)

    async def _by_ids(self, ids: Iterable[int]) -> list[Account]:
        """The accounts with these ids, in id order. A range of ids is asked as a range
        (`id_unique`), not a list of thousands."""
        wanted = list(ids)
        if not wanted:
            return []
        if wanted == list(range(wanted[0], wanted[-1] + 1)):
            query: dict[str, Any] = {"id": {"$gte": wanted[0], "$lte": wanted[-1]}}
        else:
            query = {"id": {"$in": wanted}}
        docs = await self.coll.find(query).sort("id", ASCENDING).to_list(length=None)
        return [Account.from_doc(doc) for doc in docs]

    async def _matching(self, phone: str | None, username: str | None, q: str | None) -> list[int]:
        """The ids of the accounts a search matches, in order (exact matches first, then
        username prefixes), at most SEARCH_CAP + 1 of them."""
        exact: list[Account | None] = []
        if phone:
            exact.append(await self.find_by_phone(normalize_phone(phone, self.region)))
        if username:
            exact.append(await self._one({"username_key": username_key(username)}))
        if phone or username:
            both = [a for a in exact if a is not None]
            same = len(both) == len(exact) and len({a.id for a in both}) == 1
            return [both[0].id] if same and (not q or _matches(both[0], q)) else []
        assert q is not None
        ids: list[int] = []
        by_ref = await self.find_any(q)
        if by_ref is not None:
            ids.append(by_ref.id)
        for prefix_range in prefix_slices(q.lower()):
            if len(ids) > SEARCH_CAP:
                break
            query = {"username_key": prefix_range}
            docs = self.coll.find(query, {"id": 1}).sort("username_key", ASCENDING).limit(SEARCH_CAP + 1)
            ids += [d["id"] for d in await docs.to_list(length=None) if d["id"] not in ids[:1]]
        return ids[: SEARCH_CAP + 1]

    async def ids_in_range(self, index: str, value: Any, cap: int = SEARCH_CAP + 1) -> list[int]:
        """The ids of the accounts whose `index` key is `value` (a value or a range),
        at most `cap`, in key order: one bounded range of that key's index (a search's
        form, models/search.py)."""
        docs = self.coll.find({index: value}, {"id": 1, "_id": 0}).sort(index, ASCENDING).limit(cap)
        return [d["id"] for d in await docs.to_list(length=None)]

    async def by_ids(self, ids: list[int]) -> dict[int, Account]:
        """The accounts with these ids (at most a page of them), by id."""
        return {a.id: a for a in await self._by_ids(sorted(set(ids)))}

    async def last_id(self) -> int:
        """The highest id handed out (the id sequence; deleted accounts leave gaps)."""
        last = await self.counters.find_one({"_id": "accounts"}, {"seq": 1})
        return int(last["seq"]) if last and "seq" in last else 0

    async def backfill_search_keys(self) -> int:
        """Give accounts stored before the search keys existed (`nickname_key`,
        `email_domain`, `phone_rev`) theirs: once per database (the counter remembers
        the version done), in id order a batch at a time (a bounded range of
        `id_unique` each), rewriting only accounts whose keys differ. Idempotent: two
        processes starting at once write the same values. Returns how many changed."""
        done = await self.counters.find_one({"_id": "search_keys"})
        if done is not None and done.get("version") == SEARCH_KEYS_VERSION:
            return 0
        changed, after = 0, -1
        fields = {"id": 1, "email": 1, "phone": 1, "nickname": 1, "nickname_key": 1, "email_domain": 1, "phone_rev": 1}
        while True:
            found = self.coll.find({"id": {"$gt": after}}, fields).sort("id", ASCENDING).limit(BACKFILL_BATCH)
            batch = await found.to_list(None)
            if not batch:
                break
            after = batch[-1]["id"]
            writes = [w for w in map(_search_keys_update, batch) if w is not None]
            if writes:
                await self.coll.bulk_write(writes, ordered=False)
                changed += len(writes)
        await self.counters.update_one({"_id": "search_keys"}, {"$set": {"version": SEARCH_KEYS_VERSION}}, upsert=True)
        if changed:
            log.info("gave %d accounts their search keys (nickname, e-mail domain, phone ending)", changed)
        return changed

    async def estimated_count(self) -> int:
        """How many accounts there are, without counting them: the `live` figure kept
        beside the id sequence (+1 per sign-up stored, -1 per deletion; one command,
        never retried, a failure logged and lost). Before the first recount has set it
        (data from before it existed), the collection's count: metadata on mongod, a
        scan on the embedded database."""
        kept = await self.counters.find_one({"_id": "accounts"}, {"live": 1})
        if kept is not None and "live" in kept:
            return max(int(kept["live"]), 0)
        return await self.coll.estimated_document_count()

    async def recount(self) -> None:
        """Set the kept figure from the collection (models/stats.py, Recounting)."""
        await self.counters.update_one(
            {"_id": "accounts"}, {"$set": {"live": await self.coll.count_documents({})}}, upsert=True
        )

    async def _count(self, change: int) -> None:
        if not change:
            return
        try:
            await self.counters.update_one({"_id": "accounts"}, {"$inc": {"live": change}}, upsert=True)
        except PyMongoError as e:
            log.warning("the account count was not updated (%s): the dashboard is off by %+d", type(e).__name__, change)

    async def refs(self, ids: Iterable[int]) -> dict[int, AccountRef]:
        """The accounts with these ids, by id, as names for lists (ids of deleted
        accounts are simply absent)."""
        wanted = list(set(ids))
        found = self.coll.find({"id": {"$in": wanted}}, {"id": 1, "uid": 1, "username": 1, "phone": 1})
        return {doc["id"]: AccountRef.from_doc(doc) for doc in await found.to_list(length=None)}


def _search_keys_update(doc: dict[str, Any]) -> UpdateOne | None:
    """The write giving a stored account its search keys, None when it has them."""
    keys = contact_keys(email=doc.get("email"), phone=doc.get("phone"), nickname=doc.get("nickname"))
    stored = {k: doc[k] for k in ("nickname_key", "email_domain", "phone_rev") if k in doc}
    if keys == stored:
        return None
    update: dict[str, Any] = {"$set": keys} if keys else {}
    unset = {k: "" for k in stored if k not in keys}
    if unset:
        update["$unset"] = unset
    return UpdateOne({"id": doc["id"]}, update)


def _matches(account: Account, q: str) -> bool:
    """Whether an account found by an exact filter also matches a search text."""
    key = q.lower()
    return (account.username or "").lower().startswith(key) or key in (
        (account.email or "").lower(),
        account.phone or "",
        account.uid,
        str(account.id),
    )


def _contact_fields(field: str) -> dict[str, str]:
    """The stored fields of a contact, for `$unset` (an e-mail has its lookup key too)."""
    return {"email": "", "email_key": "", "email_domain": ""} if field == "email" else {"phone": "", "phone_rev": ""}


def epoch_query(epoch: int) -> int | dict:
    """A filter value matching `cred_epoch == epoch`, where documents written before
    epochs existed (no field) count as epoch 0."""
    return epoch if epoch else {"$in": [0, None]}


def account_view(account: Account) -> dict:
    """What a client may see of an account: never the hash or internal keys."""
    return {
        "id": account.id,
        "uid": account.uid,
        "username": account.username,
        "email": account.email,
        "phone": account.phone,
        "nickname": account.nickname,
        "identity": account.identity,
        "phone_verified": account.phone_verified,
        "email_verified": account.email_verified,
        "disabled": account.disabled,
        "roles": list(account.roles),
        "created": epoch(account.created),
    }
