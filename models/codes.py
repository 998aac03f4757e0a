"""One-time codes: phone/e-mail verification, passwordless login, password reset.

One document per (purpose, subject): a new code replaces the old one, so only the latest
request's code works. Only an HMAC of the code (keyed by SECRET_KEY, bound to purpose
and subject) is stored. Every check first takes an attempt on the code (a conditional
`$inc` guarded by `attempts < max`), so parallel guesses get at most `max` comparisons;
using a code is a conditional delete, so of two concurrent uses exactly one succeeds.
Caps and the resend cooldown are reserved before anything is sent (`RateLimits`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from config import CodeSettings

from .common import DAY, HOUR, Clock, seconds
from .errors import CodeInvalid, InvalidRequest, NoPendingCode, RateLimited
from .ratelimit import Limit, RateLimits, Slot
from .validation import is_premium_or_unsendable, number_block, region_of

PURPOSES = ("login", "verify_phone", "verify_email", "reset")


class Codes:
    """Issuing and checking codes, with every limit reserved before the work it guards."""

    def __init__(
        self, db: AsyncDatabase, clock: Clock, config: CodeSettings, secret_key: str, limits: RateLimits
    ) -> None:
        self.coll = db.codes
        self.clock = clock
        self.config = config
        self.limits = limits
        self._key = hmac.new(secret_key.encode(), b"gatehouse/codes/v1", hashlib.sha256).digest()
        self.send_caps = SendCaps(config)

    def _hash(self, purpose: str, subject: str, code: str) -> str:
        message = f"{purpose}|{subject}|{code}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def new_code(self) -> str:
        return "".join(secrets.choice("0123456789") for _ in range(self.config.code_length))

    async def issue(
        self,
        purpose: str,
        subject: str,
        ip_key: str,
        *,
        limit_key: str | None = None,
        number: str | None = None,
        account_id: int | None = None,
        cooldown: int | None = None,
        ticket: str | None = None,
    ) -> str:
        """Create (or replace) the code for this purpose and subject (the destination the
        client named: a phone, an e-mail, or a reset's login name) and return it for
        delivery. Done the same way whether or not an account stands behind the subject
        (`account_id` None: the code is never sent), so the caps, the cooldown and the
        answer reveal nothing. `limit_key` (default: the subject) is what the cooldown and
        the per-destination cap count under: a reset keys them by the login name the
        client typed, so they never tell two names of one account apart. `number`: the
        phone number that would be texted, for the SMS-pumping caps.

        Every cap is reserved first (all or none), then the resend cooldown is claimed by
        a conditional upsert; a refused cooldown gives the caps back."""
        assert purpose in PURPOSES
        cooldown = self.config.code_cooldown if cooldown is None else cooldown
        limit_key = limit_key or subject
        if number is not None:
            self.send_caps.check_number(number)
        slots = await self.limits.reserve_all(self.send_caps.wanted(limit_key, ip_key, number))
        try:
            await self.limits.claim_cooldown(
                f"code:{purpose}:{limit_key}", cooldown, "a code was sent recently; wait before asking again"
            )
        except RateLimited:
            await self.limits.release(*slots)
            raise
        now = self.clock()
        code = self.new_code()
        fields: dict[str, Any] = {
            "purpose": purpose,
            "destination": subject,
            "account_id": account_id,
            "code_hash": self._hash(purpose, subject, code),
            "ticket": ticket,
            "sent_at": now,
            "expires_at": now + seconds(self.config.code_ttl),
            "attempts": 0,
        }
        await self.coll.replace_one({"_id": f"{purpose}:{subject}"}, fields, upsert=True)
        return code

    async def may_text(self, number: str) -> bool:
        """Whether something may be texted to `number` now: not a premium-rate or
        refused-country number, and under the number's own caps (reserved). For messages
        whose request named something else (a reset asked for by username, a security
        notice): the caller drops the message quietly instead of answering differently."""
        try:
            self.send_caps.check_number(number)
            await self.limits.reserve_all(self.send_caps.for_number(number))
        except (InvalidRequest, RateLimited):
            return False
        return True

    async def may_send(self, message) -> bool:
        """The delivery queue's gate: `may_text` for text messages, yes for e-mail."""
        return message.channel != "sms" or await self.may_text(message.to)

    async def withdraw(self, purpose: str, subject: str) -> None:
        """Remove a code whose delivery failed: no code is left usable, and the cooldown
        does not hold the user back from trying again."""
        await self.coll.delete_one({"_id": f"{purpose}:{subject}"})
        await self.limits.release_cooldown(f"code:{purpose}:{subject}")

    async def withdraw_account(self, purpose: str, account_id: int) -> None:
        """Every outstanding code of this purpose for the account (after a reset, the
        codes sent to its other login names die too)."""
        await self.coll.delete_many({"purpose": purpose, "account_id": account_id})

    async def pending(self, purpose: str, subject: str) -> dict | None:
        doc = await self.coll.find_one({"_id": f"{purpose}:{subject}"})
        if doc is None or doc["expires_at"] <= self.clock() or doc["attempts"] >= self.config.code_max_attempts:
            return None
        return doc

    def _failure_limits(self) -> tuple[Limit, Limit]:
        return (
            Limit(
                "code_fail_ip",
                HOUR,
                self.config.code_verify_failures_per_ip_hour,
                "too many wrong codes from this address",
                "verify_ip",
                carry=True,
            ),
            Limit(
                "code_fail_dest",
                HOUR,
                self.config.code_verify_failures_per_destination_hour,
                "too many wrong codes for this destination",
                "verify_dest",
                carry=True,
            ),
        )

    async def verify(
        self,
        purpose: str,
        subject: str,
        code: str,
        ip_key: str,
        *,
        limit_key: str | None = None,
        ticket: str | None = None,
        before_spend: Callable[[dict], Awaitable[None]] | None = None,
        charge_missing: bool = True,
    ) -> dict:
        """Use a code: returns its record (with `account_id`) or raises `CodeInvalid`
        (`NoPendingCode` when there was none: the same message).

        Before any comparison, a slot is reserved under the per-IP and per-destination
        failure caps and one attempt is taken on the code itself (a conditional `$inc`
        guarded by `attempts < max`), so a burst of parallel guesses gets at most
        `max` comparisons and a right code sent after them finds the code dead.
        `before_spend(record)` runs once the code is known right and before it is spent
        (a reset checks the new password there: nothing about the account is compared
        with client input before the code is proven); if it raises, the code stays.
        `charge_missing=False`: no pending code is not a wrong guess (the slots go back),
        for a flow that answers it apart ("log in first") instead of reading it before."""
        slots = await self.limits.reserve_all(
            list(zip(self._failure_limits(), (ip_key, limit_key or subject), strict=True))
        )
        now = self.clock()
        record = await self.coll.find_one_and_update(
            {
                "_id": f"{purpose}:{subject}",
                "expires_at": {"$gt": now},
                "attempts": {"$lt": self.config.code_max_attempts},
            },
            {"$inc": {"attempts": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if record is None:
            if not charge_missing:
                await self.limits.release(*slots)
            raise NoPendingCode()
        code_ok = isinstance(code, str) and code.isdigit() and len(code) <= 10
        if code_ok:
            # A client that sent the code as a JSON number lost its leading zeros.
            code = code.zfill(self.config.code_length)
        right = code_ok and hmac.compare_digest(record["code_hash"], self._hash(purpose, subject, code))
        if not right or (ticket and not hmac.compare_digest(str(record.get("ticket") or ""), ticket)):
            raise CodeInvalid()
        if before_spend is not None:
            await self._before_spend(record, before_spend, slots)
        # Single use: of two right submissions racing here, one deletes the code.
        spent = await self.coll.find_one_and_delete({"_id": record["_id"], "code_hash": record["code_hash"]})
        if spent is None:
            raise CodeInvalid()
        # A used code ends its cooldown (only the one who received it can do this): one
        # command with giving the slots back.
        await self.limits.release(*slots, cooldowns=[f"code:{purpose}:{limit_key or subject}"])
        return spent

    async def _before_spend(
        self, record: dict, before_spend: Callable[[dict], Awaitable[None]], slots: list[Slot]
    ) -> None:
        """Run `before_spend` for a code known right. If it raises, that was no wrong
        guess: the attempt and the slots go back (when the database lets us: with it
        failing, they stay spent, the strict side), and the code stays."""
        try:
            await before_spend(record)
        except Exception:
            with contextlib.suppress(PyMongoError):
                await self.coll.update_one({"_id": record["_id"], "attempts": {"$gt": 0}}, {"$inc": {"attempts": -1}})
                await self.limits.release(*slots)
            raise


class SendCaps:
    """The caps on sending codes (SMS pumping, mail bombing): per destination per day,
    per block of 100 numbers per hour, per client IP per day; and the numbers nothing is
    ever texted to."""

    def __init__(self, config: CodeSettings) -> None:
        self.config = config
        self.daily = Limit(
            "code_daily_dest", DAY, config.code_daily_per_phone, "too many codes sent here today", "daily"
        )
        # SMS pumping walks through consecutive numbers: cap sends per block of 100.
        self.block = Limit(
            "code_hourly_block",
            HOUR,
            config.code_hourly_per_number_block,
            "too many codes sent to numbers like this one; try again later",
            "number_block",
        )
        self.daily_ip = Limit(
            "code_daily_ip",
            DAY,
            config.code_daily_per_ip,
            "too many codes requested from this address today",
            "daily_ip",
        )

    def check_number(self, number: str) -> None:
        if is_premium_or_unsendable(number):
            raise InvalidRequest("codes are not sent to premium-rate or shared-cost numbers", field="phone")
        countries = self.config.sms_countries
        if countries and region_of(number) not in countries:
            raise InvalidRequest("codes are not sent by SMS to numbers of that country", field="phone")

    def wanted(self, subject: str, ip_key: str, number: str | None) -> list[tuple[Limit, str]]:
        """The caps a code request reserves: its destination's, its number block's when a
        number is texted, its client's."""
        wanted = [(self.daily, subject), (self.daily_ip, ip_key)]
        if number is not None:
            wanted.append((self.block, number_block(number)))
        return wanted

    def for_number(self, number: str) -> list[tuple[Limit, str]]:
        """The caps of a number itself, whoever asked and however it was named."""
        return [(self.daily, number), (self.block, number_block(number))]
