"""What invalid tokens cost: at most one bounded lookup each, and nothing once known.

Two per-process memories, both bounded, both consulted only when a token is not in the
session cache (the hot path of a valid cached token never reaches them):

- `DeadKeys`: sessions seen revoked or expired, by cache key (`tok:<hash>` / `sid:<id>`):
  a revoked one until its own `expires_at` (after which the TTL index removes it
  anyway), an expired one for an hour (and which, so an expired token's answer can say
  so: `TOKEN_EXPIRED`). Neither comes back to life, so a remembered key
  is never wrong; only sessions found dead in MongoDB are added, so random tokens cannot
  push useful entries out.
- `MissBudget`: how many tokens from one client address (its limit key: IPv4 address,
  IPv6 /64) this process looked up and found nothing live behind, in fixed one-minute
  windows. Over the budget, that address's unknown opaque tokens are refused before any
  read. Counted in memory, so the throttle itself costs no round trip; with N processes
  an address gets N budgets.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

WINDOW = 60


class DeadKeys:
    def __init__(self, size: int, clock: Callable[[], datetime]) -> None:
        self.size = size
        self.clock = clock
        self.keys: OrderedDict[str, datetime] = OrderedDict()
        self.timed_out: set[str] = set()  # the keys whose session expired (not kicked)

    def add(self, key: str, until: datetime, *, expired: bool = False) -> None:
        if self.size <= 0 or until <= self.clock():
            return
        self.keys[key] = until
        if expired:
            self.timed_out.add(key)
        else:
            self.timed_out.discard(key)
        self.keys.move_to_end(key)
        while len(self.keys) > self.size:
            self.timed_out.discard(self.keys.popitem(last=False)[0])

    def __contains__(self, key: str) -> bool:
        until = self.keys.get(key)
        if until is None:
            return False
        if until <= self.clock():
            del self.keys[key]
            self.timed_out.discard(key)
            return False
        self.keys.move_to_end(key)
        return True

    def expired(self, key: str) -> bool:
        """Whether `key` is remembered as a session that timed out (not one kicked)."""
        return key in self.timed_out and key in self


class MissBudget:
    def __init__(self, per_minute: int, size: int = 10_000, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.limit = per_minute
        self.size = size
        self.monotonic = monotonic
        self.window = -1
        self.counts: dict[str, int] = {}

    def _left(self) -> int:
        """Seconds left in the current window (a new window starts with no counts)."""
        now = self.monotonic()
        window = int(now // WINDOW)
        if window != self.window:
            self.window = window
            self.counts.clear()
        return int((window + 1) * WINDOW - now) + 1

    def exhausted(self, client: str) -> int:
        """Seconds until `client` may look tokens up again; 0 while it is under budget."""
        left = self._left()
        return left if self.limit and self.counts.get(client, 0) >= self.limit else 0

    def count(self, client: str) -> None:
        """One lookup that found nothing live. When the window already tracks `size`
        addresses, new ones are not tracked (the ones already over stay refused)."""
        self._left()
        if client in self.counts or len(self.counts) < self.size:
            self.counts[client] = self.counts.get(client, 0) + 1

    def reserve(self, client: str) -> int:
        """Count one lookup before it is made (so N parallel lookups from one address get
        at most the budget between them, not N): seconds to wait when `client` is over
        budget (nothing counted), else 0. A lookup that then finds its token gives the
        slot back (`give_back`)."""
        wait = self.exhausted(client)
        if not wait:
            self.count(client)
        return wait

    def give_back(self, client: str) -> None:
        """Undo a `reserve` whose lookup found a token (in this window, if it still runs)."""
        self._left()
        if self.counts.get(client, 0) > 0:
            self.counts[client] -= 1
