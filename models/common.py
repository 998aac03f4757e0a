"""Small shared pieces of the domain: the clock, the request context, hashing helpers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]
HOUR = 3600
DAY = 86400


def utcnow() -> datetime:
    # MongoDB stores milliseconds; truncating here keeps what we compare in memory
    # equal to what we read back.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def epoch(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value else None


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Context:
    """Who is asking, as far as the domain needs to know: for sessions and the audit log."""

    ip: str = ""
    user_agent: str = ""
    style: str = "native"
    request_id: str = ""
