"""An account's login lock as administrators see and lift it.

Wrong passwords count per account in fixed windows (`AuthService.failures_per_account`);
the slot that reaches the limit locks the account (`AuthService._penalize`) for a
window, doubling with each strike of the day. Those are three documents of the limits
collection: the lock, the window's failure counter and the day's strike counter. This
reads them for one account or a page of accounts in a single `$in` on `_id`, and clears
them for an unlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from .common import DAY, epoch
from .ratelimit import Limit, RateLimits, seconds_left

LOCK_REASON = "too many failed logins"
STRIKES = "login_strikes"  # the bucket counting an account's locks of the day
# A page of accounts is 50; the admin API lists up to 200 (LIMIT).
MAX_BATCH = 200


def account_key(account_id: int) -> str:
    """The throttling key of a known account (`AuthService.check_password`)."""
    return f"account={account_id}"


def account_of_key(key: str) -> int | None:
    """The account a throttling key is of; None for a login name that names no account
    (`login_key`: `raw=`, `email_key=`, … never `account=`)."""
    prefix, _, rest = key.partition("=")
    return int(rest) if prefix == "account" and rest.isdigit() else None


def lock_key(key: str) -> str:
    return f"login:{key}"


@dataclass(frozen=True)
class LockStatus:
    """One account's login record now: the lock (`until`, None when not locked), the
    failures counted in the current window against `limit` (per `window` seconds), the
    day's strikes (locks), the lock's `duration` and the attempts it has `refused`."""

    account_id: int
    until: datetime | None
    seconds_left: int
    reason: str | None
    failures: int
    limit: int
    window: int
    strikes: int
    duration: int | None
    refused: int

    @property
    def locked(self) -> bool:
        return self.seconds_left > 0

    @property
    def notable(self) -> bool:
        """Worth showing (and unlocking): locked, or failures counted in this window."""
        return self.locked or self.failures > 0


def lock_view(status: LockStatus | None) -> dict | None:
    """The admin API's `lock` of an account: null when it is not locked and has no
    failures counted in the current window."""
    if status is None or not status.notable:
        return None
    return {
        "locked": status.locked,
        "until": epoch(status.until) if status.locked else None,
        "secondsLeft": status.seconds_left,
        "reason": status.reason,
        "failures": status.failures,
        "limit": status.limit,
        "window": status.window,
        "strikes": status.strikes,
        "duration": status.duration,
        "refused": status.refused,
    }


class LoginLocks:
    """The per-account login record under `rule` (the account failure limit)."""

    def __init__(self, limits: RateLimits, rule: Limit) -> None:
        self.limits = limits
        self.rule = rule

    def _ids(self, account_id: int) -> tuple[str, str, str]:
        key = account_key(account_id)
        return (
            f"lock:{lock_key(key)}",
            self.limits.window_id(self.rule.bucket, key, self.rule.window),
            self.limits.window_id(STRIKES, key, DAY),
        )

    async def status(self, account_id: int) -> LockStatus:
        return (await self.statuses([account_id]))[account_id]

    async def statuses(self, account_ids: Sequence[int]) -> dict[int, LockStatus]:
        """The record of each account (a page of a list: at most MAX_BATCH), in one read."""
        ids = list(dict.fromkeys(account_ids))
        if len(ids) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} accounts at once")
        wanted = {account_id: self._ids(account_id) for account_id in ids}
        docs = await self.limits.find_many([_id for three in wanted.values() for _id in three])
        now = self.limits.clock()
        found = {}
        for account_id, (lock_id, failures_id, strikes_id) in wanted.items():
            lock = docs.get(lock_id)
            left = seconds_left(lock, now)
            found[account_id] = LockStatus(
                account_id=account_id,
                until=lock["until"] if left else None,
                seconds_left=left,
                reason=LOCK_REASON if left else None,
                failures=max(0, int(docs.get(failures_id, {}).get("n", 0))),
                limit=self.rule.limit,
                window=self.rule.window,
                strikes=int(docs.get(strikes_id, {}).get("n", 0)),
                duration=lock.get("duration") if left else None,
                refused=int(lock.get("refused") or 0) if left else 0,
            )
        return found

    async def clear(self, account_id: int) -> None:
        """Lift the lock and forget the window's failures and the day's strikes: the
        owner may log in at once, and a next lock is short again."""
        key = account_key(account_id)
        await self.limits.unlock(lock_key(key))
        await self.limits.reset(self.rule.bucket, key, self.rule.window)
        await self.limits.reset(STRIKES, key, DAY)
