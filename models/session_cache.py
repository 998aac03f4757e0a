"""A per-process cache of validated (session, account) pairs: the authenticated hot path
then needs no database round trip at all for a token seen in the last second.

Staleness bounds (documented in the README and tested):
- within this process: **zero** for anything that ends a session here — `Sessions.revoke`
  and `revoke_all` (kick, logout, password change or reset, disable, delete) drop the
  entries before they return;
- across processes: at most `ttl` (GATEHOUSE_SESSION_CACHE_MS, 1 s by default), after
  which every entry is read again from MongoDB. 0 turns the cache off (zero everywhere).

Bounded: at most `size` entries (least recently used go first), so memory stays flat
whatever the number of live sessions.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class SessionCache:
    def __init__(self, ttl_ms: int, size: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl_ms / 1000
        self.size = size
        self.monotonic = monotonic
        self.entries: OrderedDict[str, tuple[float, dict, dict]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.size > 0

    def get(self, key: str) -> tuple[dict, dict] | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        stored, session, account = entry
        if self.monotonic() - stored >= self.ttl:
            del self.entries[key]
            return None
        self.entries.move_to_end(key)
        return session, account

    def put(self, key: str, session: dict, account: dict) -> None:
        if not self.enabled:
            return
        self.entries[key] = (self.monotonic(), session, account)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def forget(self, *, session_id: str | None = None, account_id: int | None = None) -> None:
        """Drop every entry of a session or of an account (kicks are rare; a scan is fine)."""
        doomed = [
            key
            for key, (_, session, _account) in self.entries.items()
            if session["_id"] == session_id or session["account_id"] == account_id
        ]
        for key in doomed:
            del self.entries[key]

    def clear(self) -> None:
        self.entries.clear()
