"""Bulk documents for the scale benchmark: copies of real documents (an account, a
session and an event the server itself wrote through its API), with new ids, names,
token hashes and times. The shapes come from the server, so they cannot drift from the
code; only the varied fields are set here. tests/test_bench_seed.py checks that the
server accepts what these make.

Pure functions (no database, no event loop): the benchmark inserts with a synchronous
client, the smoke test with the app's asynchronous one.
"""

from __future__ import annotations

import random
import secrets
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId

from models.common import sha256_hex

# Shares of the sessions made. Console sessions are administrators' (a handful, made
# through the console by the benchmark itself), so none are seeded. Revoked ones stay
# listed until they expire; expired ones are what the TTL monitor has not removed yet.
KIND_SHARES = (("opaque", 0.72), ("jwt", 0.28))
REVOKED_SHARE = 0.15
EXPIRED_SHARE = 0.01
# A few thousand accounts hold several sessions each (phones, laptops, a script).
BUSY_SHARE = 0.02
BUSY_SESSIONS = (3, 12)
SESSION_DAYS = 30
EVENT_DAYS = 90
# Event types as a busy deployment writes them: mostly logins and refreshes.
EVENT_SHARES = (
    ("login_ok", 0.45),
    ("refresh", 0.25),
    ("login_failed", 0.12),
    ("logout", 0.08),
    ("code_sent", 0.04),
    ("code_verified", 0.03),
    ("signup", 0.02),
    ("kick", 0.01),
)


def _pick(rng: random.Random, shares: tuple[tuple[str, float], ...]) -> str:
    roll, total = rng.random(), 0.0
    for name, share in shares:
        total += share
        if roll < total:
            return name
    return shares[-1][0]


def accounts(template: dict, first_id: int, count: int, prefix: str) -> Iterator[dict]:
    """`count` accounts shaped like `template` (sharing its password hash: hashing each
    would take hours), ids from `first_id`, usernames `<prefix><n>`."""
    base = {k: v for k, v in template.items() if k not in ("_id", "email", "email_key", "phone")}
    for i in range(count):
        name = f"{prefix}{i}"
        yield {
            **base,
            "id": first_id + i,
            "uid": str(uuid.uuid4()),
            "username": name,
            "username_key": name.lower(),
            "email": f"{name}@example.test",
            "email_key": f"{name}@example.test",
            "email_domain": "example.test",  # the search's key (models/search.py)
        }


def session_owners(account_ids: list[int], count: int, rng: random.Random) -> Iterator[int]:
    """Who holds each of `count` sessions: a few busy accounts with several each, the
    rest spread over every account."""
    busy = rng.sample(account_ids, max(1, int(len(account_ids) * BUSY_SHARE)))
    made = 0
    for owner in busy:
        for _ in range(rng.randint(*BUSY_SESSIONS)):
            if made == count:
                return
            yield owner
            made += 1
    for _ in range(count - made):
        yield rng.choice(account_ids)


def sessions(template: dict, owners: Iterator[int], now: datetime, rng: random.Random) -> Iterator[dict]:
    """A session per owner shaped like `template` (a real opaque session): created in
    the last 30 days, active since (mostly lately) and within its idle lifetime, a share
    revoked (listed until they expire) and a few expired in the last minute (the TTL
    monitor removes the rest: a running database holds no older ones)."""
    base = {k: v for k, v in template.items() if k not in ("_id", "token_hash")}
    idle = timedelta(seconds=template["idle_seconds"])
    lifetime = template["absolute_expires_at"] - template["created"]
    for owner in owners:
        created = now - min(lifetime, timedelta(days=SESSION_DAYS)) * rng.random()
        last = now - min(now - created, idle) * rng.random() ** 3
        if rng.random() < EXPIRED_SHARE:
            last = max(created, now - idle - timedelta(seconds=rng.uniform(1, 60)))
            created = min(created, last)
        absolute = created + lifetime
        doc = {**base, "_id": uuid.uuid4().hex, "account_id": owner, "kind": _pick(rng, KIND_SHARES)}
        doc.update(created=created, last_active=last, absolute_expires_at=absolute)
        doc["expires_at"] = min(last + idle, absolute)
        if doc["kind"] == "opaque":  # JWT sessions have no opaque token
            doc["token_hash"] = sha256_hex(secrets.token_urlsafe(32))
        if rng.random() < REVOKED_SHARE:
            revoked = last + (now - last) * rng.random()
            doc.update(revoked_at=revoked, revoked_reason=rng.choice(("logout", "kicked")), revoked_by=None)
        yield doc


def event_id(at: datetime, rng: random.Random) -> ObjectId:
    """An ObjectId from the time `at` (the events pages sort and page by `_id`)."""
    return ObjectId(int(at.timestamp()).to_bytes(4, "big") + rng.randbytes(8))


def events(template: dict, account_ids: list[int], count: int, now: datetime, rng: random.Random) -> Iterator[dict]:
    """`count` events shaped like `template` (a real login's), over the last 90 days."""
    retention = template["expires_at"] - template["at"]
    base = {k: v for k, v in template.items() if k != "_id"}
    for _ in range(count):
        at = now - timedelta(seconds=rng.uniform(0, EVENT_DAYS * 86400))
        kind = _pick(rng, EVENT_SHARES)
        doc: dict[str, Any] = {**base, "_id": event_id(at, rng), "type": kind, "at": at, "expires_at": at + retention}
        failed = kind == "login_failed"  # no session, a reason (models/auth.py)
        doc.update(account_id=rng.choice(account_ids), request_id=uuid.uuid4().hex)
        doc.update(session_id=None if failed else uuid.uuid4().hex, outcome="failed" if failed else "ok")
        doc["reason"] = "wrong_password" if failed else None
        yield doc


def batches(docs: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
