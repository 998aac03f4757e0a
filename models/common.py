"""Small shared pieces of the domain: the clock, the request context, hashing helpers."""

from __future__ import annotations

import hashlib
import ipaddress
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


def canonical_ip(raw: str) -> str:
    """One spelling per address: parsed, with an IPv4-mapped IPv6 address as its IPv4.
    Anything that is not an address (a test's "local") is kept as it is."""
    try:
        address = ipaddress.ip_address(raw.strip().strip("[]").split("%")[0])
    except ValueError:
        return raw
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def ip_limit_key(ip: str) -> str:
    """The key every per-IP limit counts under: the address for IPv4, its /64 for IPv6
    (one subscriber usually holds a whole /64, so counting single IPv6 addresses would
    give an attacker 2^64 fresh budgets)."""
    canonical = canonical_ip(ip)
    try:
        address = ipaddress.ip_address(canonical)
    except ValueError:
        return canonical
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return canonical


@dataclass(frozen=True)
class Context:
    """Who is asking, as far as the domain needs to know: for sessions and the audit log."""

    ip: str = ""
    user_agent: str = ""
    style: str = "native"
    request_id: str = ""

    @property
    def ip_key(self) -> str:
        """The key of this client's per-IP limits (see `ip_limit_key`)."""
        return ip_limit_key(self.ip)
