"""The MongoDB connection and the indexes.

Everything here uses features that a single mongod, a replica set and a sharded
cluster all support: unique and sparse indexes, TTL indexes, find_one_and_update.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, DuplicateKeyError, OperationFailure, PyMongoError

log = logging.getLogger("gatehouse.db")


def _sparse_unique(field: str) -> IndexModel:
    # Unique only where the field exists (documents leave it out rather than store a
    # null), so accounts without an e-mail or a phone do not collide on a missing value.
    # Sparse, not partial: a plain equality query can use a sparse index, while a
    # partial one ({$type: "string"}) is used only when the query repeats its filter,
    # so every login-name and token lookup was a collection scan.
    return IndexModel([(field, ASCENDING)], unique=True, sparse=True, name=f"{field}_unique")


INDEXES: dict[str, list[IndexModel]] = {
    "accounts": [
        IndexModel([("id", ASCENDING)], unique=True, name="id_unique"),
        IndexModel([("uid", ASCENDING)], unique=True, name="uid_unique"),
        _sparse_unique("username_key"),
        _sparse_unique("email_key"),
        _sparse_unique("phone"),
        # The session cache's change feed: what changed in the last seconds.
        IndexModel([("changed_at", ASCENDING)], sparse=True, name="changed_at"),
        # The search's forms (models/search.py), each read as one prefix range: a
        # nickname (NFKC, casefolded), an e-mail domain, a phone's digits reversed (its
        # endings). Sparse: accounts without one are not in it.
        IndexModel([("nickname_key", ASCENDING)], sparse=True, name="nickname_key"),
        IndexModel([("email_domain", ASCENDING)], sparse=True, name="email_domain"),
        IndexModel([("phone_rev", ASCENDING)], sparse=True, name="phone_rev"),
    ],
    "sessions": [
        IndexModel([("changed_at", ASCENDING)], sparse=True, name="changed_at"),
        _sparse_unique("token_hash"),
        # The session lists, newest activity first, paged by (last_active, _id): one
        # account's (its own list, the admin overview, `account=`); one kind's
        # (`kind=`); all (slices of last_active). The equality key leads, so a filter
        # `{account_id | kind: v, last_active: <range>}` walks only that range in sort
        # order, on mongod and on the embedded database alike.
        IndexModel(
            [("account_id", ASCENDING), ("last_active", DESCENDING), ("_id", DESCENDING)], name="account_last_active"
        ),
        IndexModel([("kind", ASCENDING), ("last_active", DESCENDING), ("_id", DESCENDING)], name="kind_last_active"),
        IndexModel([("last_active", DESCENDING), ("_id", DESCENDING)], name="last_active_id"),
        # A search by IP (models/search.py): one address's sessions by lastActive, or a
        # prefix's range of addresses.
        IndexModel([("ip", ASCENDING), ("last_active", DESCENDING), ("_id", DESCENDING)], name="ip_last_active"),
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expires_ttl"),
    ],
    "refresh_tokens": [
        IndexModel([("sid", ASCENDING)], name="sid"),
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expires_ttl"),
    ],
    "factors": [
        IndexModel([("account_id", ASCENDING), ("created", ASCENDING)], name="account_created"),
        # GATEHOUSE_MFA_MAX_FACTORS: each authenticator app holds one numbered slot of its
        # account (the recovery-code set, none: one per account).
        IndexModel([("account_id", ASCENDING), ("slot", ASCENDING)], unique=True, name="account_slot"),
        # Only unconfirmed factors carry `expires_at`: the TTL ends them, never a confirmed one.
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expires_ttl"),
    ],
    "passkeys": [IndexModel([("account_id", ASCENDING), ("created", ASCENDING)], name="account_created")],
    "webauthn_challenges": [
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expires_ttl"),
    ],
    "mfa_challenges": [
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expires_ttl"),
    ],
    "codes": [
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expires_ttl"),
    ],
    "limits": [
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expires_ttl"),
    ],
    "events": [
        # The audit log's pages, newest first by (at, _id), in bounded ranges of `at`:
        # one account's, one type's, or all. The equality key leads (see sessions).
        IndexModel([("at", DESCENDING), ("_id", DESCENDING)], name="at"),
        IndexModel([("account_id", ASCENDING), ("at", DESCENDING), ("_id", DESCENDING)], name="account_at"),
        IndexModel([("type", ASCENDING), ("at", DESCENDING), ("_id", DESCENDING)], name="type_at"),
        # One address's events by time (a prefix is checked on the time-ordered reads).
        IndexModel([("ip", ASCENDING), ("at", DESCENDING), ("_id", DESCENDING)], name="ip_at"),
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expires_ttl"),
    ],
    "stats": [
        # The dashboard's hourly counters (models/stats.py): one series' buckets by hour.
        IndexModel([("series", ASCENDING), ("hour", ASCENDING)], name="series_hour"),
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expires_ttl"),
    ],
    "outbox": [
        IndexModel([("at", DESCENDING)], name="at"),
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expires_ttl"),
    ],
    "jobs": [
        # The delivery queue's claim: the oldest job due (pending and due, or its lease
        # run out). Finished jobs drop `next_at` and leave the range.
        IndexModel([("next_at", ASCENDING)], name="next_at"),
        # Finished jobs only: pending ones carry no `expires_at` and never expire.
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expires_ttl"),
    ],
}


# What every Gatehouse client gets, whatever MONGODB_URI says (keyword options override
# the URI's): an answer that acknowledges a write means the write survives.
DURABILITY: dict[str, Any] = {
    # Majority-acknowledged and journaled: kill -9 of the database lost 8 of 11,506
    # acknowledged sign-ups and logins with the defaults, 16 of 16,185 with w=majority
    # alone (a single node's majority is itself, before its journal is flushed), 0 with
    # journal=true. On a replica set a majority write is never rolled back by a failover.
    # SecantusDB is a one-member replica set (majority = itself); a standalone mongod
    # accepts w="majority" too, as "this node". No fallback is needed anywhere.
    "w": "majority",
    "journal": True,
    # Reads at "local" from the primary: every acknowledged write (a kick, a password
    # change) is there, including on a newly elected primary, whose "majority" snapshot
    # may briefly lag what it holds (a kicked session would come back). What a failover
    # can roll back is a write that was never acknowledged (its request answered 503),
    # visible only on a deposed primary in the seconds before it steps down; a login
    # that read it would still need its own majority write there, which cannot succeed.
    "readPreference": "primary",
    "readConcernLevel": "local",
    # A write or read that meets a primary stepping down, or a dropped connection, is
    # retried once on the new primary, within the same timeoutMS budget.
    "retryWrites": True,
    "retryReads": True,
}
MONITORING: dict[str, Any] = {
    # Measured on a replica set: with the default streaming monitor the retry of a write
    # after a primary's "shutting down" error was missed; polling recovered in 0.5 s.
    "serverMonitoringMode": "poll",
    # Polling hears of a step-down only on its next check (or the first error): 1 s
    # bounds how long requests go to a former primary, for one `hello` a second per
    # member per process. (The driver re-checks at most every 0.5 s after an error.)
    "heartbeatFrequencyMS": 1000,
}


def _uri_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def uri_options_overridden(uri: str) -> dict[str, tuple[str, str]]:
    """The durability and monitoring options that MONGODB_URI sets to something else:
    name -> (the URI's value, ours). Not secrets: credentials come before the '?'."""
    ours = {k.lower(): _uri_value(v) for k, v in {**DURABILITY, **MONITORING}.items()}
    ours["j"] = ours["journal"]
    found = {}
    for name, value in parse_qsl(uri.partition("?")[2], keep_blank_values=True):
        want = ours.get(name.lower())
        if want is not None and value.lower() != want.lower():
            found[name] = (value, want)
    return found


def connect(uri: str, timeout_ms: int, *, appname: str = "gatehouse", **options: Any) -> AsyncMongoClient:
    """A client whose every operation (server selection included) gives up after
    `timeout_ms`, so a database outage turns into a prompt 503, never a hang; with
    DURABILITY and MONITORING above, which override the URI's options (one warning).
    `appname` names the client to the database (its logs, `failCommand`'s `appName`);
    `options`: more client options (`maxPoolSize`). The warning is for the main client."""
    overridden = uri_options_overridden(uri)
    if overridden and appname == "gatehouse":
        log.warning(
            "MONGODB_URI sets %s; Gatehouse uses %s instead, so that acknowledged writes survive a crash or failover",
            "&".join(f"{k}={theirs}" for k, (theirs, _) in overridden.items()),
            "&".join(f"{k}={ours}" for k, (_, ours) in overridden.items()),
        )
    return AsyncMongoClient(
        uri,
        tz_aware=True,
        timeoutMS=timeout_ms,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=min(timeout_ms, 5000),
        appname=appname,
        **DURABILITY,
        **MONITORING,
        **options,
    )


async def insert_once(coll: AsyncCollection, doc: dict) -> None:
    """insert_one, where a duplicate of the document's own `_id` means that an earlier
    attempt of this very insert was written: the driver retried it after the database
    crashed or failed over before answering. mongod recognises such a retry (its
    retryable-write history is durable); SecantusDB forgets it in a crash and answers
    E11000, which would turn a stored sign-up or login into a 503 (or a 409 "taken" for
    the account's own owner). Any other duplicate is raised as before."""
    try:
        await coll.insert_one(doc)
    except DuplicateKeyError:
        if "_id" in doc and await coll.find_one({"_id": doc["_id"]}, {"_id": 1}) is not None:
            return
        raise


def _definition(index: Mapping[str, Any]) -> tuple:
    """What makes two index definitions the same, from a model or the server's answer."""
    key = index["key"]
    fields = tuple((f, int(d) if isinstance(d, (int, float)) else d) for f, d in (dict(key).items()))
    return (
        fields,
        bool(index.get("unique")),
        bool(index.get("sparse")),
        index.get("partialFilterExpression"),
        index.get("expireAfterSeconds"),
    )


async def ensure_indexes(db: AsyncDatabase) -> None:
    """Create every index; a no-op when they exist (safe on every start and every process).
    An index whose definition changed between releases (the partial unique indexes that
    became sparse) is dropped and created again under its name."""
    for name, models in INDEXES.items():
        have = await db[name].index_information()
        for model in models:
            old = have.get(model.document["name"])
            if old is not None and _definition(old) != _definition(model.document):
                log.warning("replacing index %s.%s with its new definition", name, model.document["name"])
                try:
                    await db[name].drop_index(model.document["name"])
                except OperationFailure:
                    pass  # another process starting at the same time dropped it first
        await db[name].create_indexes(models)


async def indexes_ready(db: AsyncDatabase) -> bool:
    try:
        for name, models in INDEXES.items():
            have = await db[name].index_information()
            if any(m.document["name"] not in have for m in models):
                return False
        return True
    except PyMongoError:
        return False


async def wait_for_database(client: AsyncMongoClient, deadline_seconds: float) -> None:
    """Start-up with MongoDB down waits and retries, with a clear log line, up to a bound."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            await client.admin.command("ping")
            return
        except ConnectionFailure as e:
            if time.monotonic() > deadline:
                raise
            log.warning("MongoDB not reachable yet (%s); retrying", type(e).__name__)
            await asyncio.sleep(1.0)


def db_name_from_uri(uri: str, default: str) -> str:
    """The database named in the URI path (mongodb://h/NAME), else the default."""
    from pymongo.uri_parser import parse_uri

    try:
        return parse_uri(uri).get("database") or default
    except Exception:  # noqa: BLE001 - an invalid URI is reported by connect()
        return default
