"""Security notices to an account's owner ("your password was changed"), and where they
and reset codes go. A `Notifier` is built before `AuthService`, which sends notices;
`CodeFlows` sends reset codes to `reset_destination` too.

Delivery is handed in (`compose_notice`, and a queue's `enqueue`): the domain does not
import `delivery`.
"""

from __future__ import annotations

from typing import Any

from .common import Context
from .values import Account


def reset_destination(account: Account) -> tuple[str, str] | None:
    """Where the account's reset codes and notices go: a proven contact first (e-mail,
    then phone), else an unproven one. So a reset never reaches an address the owner
    did not prove while a proven one exists."""
    contacts = [("email", account.email_key), ("sms", account.phone)]
    proven = {"email": account.email_verified, "sms": account.phone_verified}
    ranked = sorted((c for c in contacts if c[1]), key=lambda c: not proven[c[0]])
    return ranked[0] if ranked else None


class Notifier:
    def __init__(self, delivery: Any, queue: Any) -> None:
        self.delivery = delivery
        self.queue = queue

    async def notify(self, account: Account, what: str, ctx: Context) -> None:
        """Tell the owner about a security change, by e-mail (else SMS), through the
        queue: the change has happened, so a failed notice is retried and recorded,
        never raised."""
        target = reset_destination(account)
        if target is not None:
            notice = self.delivery.compose_notice(target[0], target[1], what)
            await self.queue.enqueue(notice, account_id=account.id, gated=True)
