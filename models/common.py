"""Small shared pieces of the domain: the clock, the request context, hashing helpers."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

Clock = Callable[[], datetime]
HOUR = 3600
DAY = 86400
T = TypeVar("T")
# The first slice of time a newest-first list reads (see `newest_first`): short, as a
# busy server's last seconds may already hold thousands of sessions (the benchmark's
# 500,000 hold 700 in their last 10 s, 63,000 in their last 15 minutes); reaching back
# 30 days through empty slices from it takes 18 (each a millisecond or two).
FIRST_WINDOW = timedelta(seconds=10)


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


def parse_ip(raw: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in `raw`, written with or without brackets, a zone or a port
    (`[2001:db8::1]:443`, `192.0.2.1:5678`, as some proxies append them); None when
    there is none. An IPv4-mapped IPv6 address is its IPv4."""
    text = raw.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port (an IPv6 address has at least two)
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def canonical_ip(raw: str) -> str:
    """One spelling per address (see `parse_ip`). Anything that is not an address (a
    test's "local") is kept as it is."""
    address = parse_ip(raw)
    return raw if address is None else str(address)


def ip_limit_key(ip: str) -> str:
    """The key every per-IP limit counts under: the address for IPv4, its /64 for IPv6
    (one subscriber usually holds a whole /64, so counting single IPv6 addresses would
    give an attacker 2^64 fresh budgets)."""
    address = parse_ip(ip)
    if address is None:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


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


def next_width(width: timedelta, got: int, missing: int) -> timedelta:
    """The next slice's length after one of `width` found `got` items with `missing`
    still wanted: twice as long after an empty slice, else sized from the density just
    seen to hold about twice what is missing (at most 4 times as long)."""
    if not got:
        return width * 2
    return min(width * 4, max(width, width * 2 * missing / got))


async def newest_first(
    fetch: Callable[[datetime, datetime, bool], Awaitable[list[T]]],
    *,
    top: datetime,
    floor: datetime,
    need: int,
    first: timedelta = FIRST_WINDOW,
) -> list[T]:
    """Up to `need` items, newest first, read back from `top` in slices of time until
    `need` are found or `floor` is reached. `fetch(lo, hi, first_slice)` answers the
    items in [lo, hi), newest first (`hi` included in the first slice, where it is the
    position a cursor resumes from).

    Why slices, not a sort and a limit: the embedded database's index walk does not
    stop at the limit (page 1 of 500,000 sessions read every key), and it reads every
    document of the range it is given, so the range itself must be bounded. The first
    slice is `first` long; after an empty slice the next is twice as long, and after
    one that found items the next is sized from their density to hold about twice what
    is still missing (at most 4 times as long). So the work follows the items a page
    needs, not the collection; what it cannot foresee is a cliff, where an empty stretch
    ends in a dense one (a slice twice as long as the empty one before it is read)."""
    found: list[T] = []
    hi, width, initial = top, first, True
    while len(found) < need:
        lo = max(hi - width, floor)
        got = await fetch(lo, hi, initial)
        found += got
        if lo <= floor:
            break
        width = next_width(width, len(got), need - len(found))
        hi, initial = lo, False
    return found[:need]


async def oldest_first(
    fetch: Callable[[datetime, datetime, bool], Awaitable[list[T]]],
    *,
    bottom: datetime,
    top: datetime,
    need: int,
    first: timedelta = FIRST_WINDOW,
) -> list[T]:
    """`newest_first` the other way: up to `need` items, oldest first, read up from
    `bottom` in slices [lo, hi) until `need` are found or `top` is reached
    (`fetch(lo, hi, first_slice)` answers the items of [lo, hi), oldest first). The
    end of a list (the oldest sessions) is reached this way in as many bounded
    ranges as its first page is."""
    found: list[T] = []
    lo, width, initial = bottom, first, True
    while len(found) < need and lo < top:
        hi = min(lo + width, top)
        got = await fetch(lo, hi, initial)
        found += got
        width = next_width(width, len(got), need - len(found))
        lo, initial = hi, False
    return found[:need]
