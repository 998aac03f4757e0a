"""The change-stamp contract every store honours, so cached callers never outlive what
ends them.

- **In MongoDB:** every update that ends a session or changes an account merges
  `CHANGED` into its update: the document's `changed_at` takes the database's clock.
  Other processes' change feeds (`session_cache.ChangeFeed`) read those stamps and drop
  their copies within the cache's bound.
- **In this process:** once MongoDB has such a write, the store says so here
  (`Changes.sessions` / `Changes.accounts`), and every subscriber (the resolver's cache)
  drops its copies at once: zero staleness for what this process ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# Merged into every update that ends a session or changes an account.
CHANGED: dict[str, Any] = {"$currentDate": {"changed_at": True}}

Forget = Callable[[Iterable[str], Iterable[int]], None]


class Changes:
    """Where stores announce, after the write, which sessions and accounts changed."""

    def __init__(self) -> None:
        self.subscribers: list[Forget] = []

    def subscribe(self, forget: Forget) -> None:
        self.subscribers.append(forget)

    def announce(self, session_ids: Iterable[str] = (), account_ids: Iterable[int] = ()) -> None:
        sessions, accounts = set(session_ids), set(account_ids)
        for forget in self.subscribers:
            forget(sessions, accounts)

    def session(self, session_id: str) -> None:
        self.announce(session_ids=(session_id,))

    def account(self, account_id: int) -> None:
        self.announce(account_ids=(account_id,))
