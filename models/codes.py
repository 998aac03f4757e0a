"""One-time codes: phone/e-mail verification, passwordless login, password reset.

One document per (purpose, destination): a new code replaces the old one, so only the
latest request's code works. Only an HMAC of the code (keyed by SECRET_KEY, bound to
purpose and destination) is stored. Using a code is a single conditional delete, so of
two concurrent uses exactly one succeeds; a wrong guess is a conditional increment, so
the attempt cap holds under concurrency too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from config import Config

from .common import DAY, HOUR, Clock, seconds
from .errors import CodeInvalid, InvalidRequest, NoPendingCode, RateLimited
from .ratelimit import RateLimits
from .validation import is_premium_or_unsendable, number_block, region_of

PURPOSES = ("login", "verify_phone", "verify_email", "reset")


class Codes:
    def __init__(self, db: AsyncDatabase, clock: Clock, config: Config, limits: RateLimits) -> None:
        self.coll = db.codes
        self.clock = clock
        self.config = config
        self.limits = limits
        self._key = hmac.new(config.secret_key.encode(), b"gatehouse/codes/v1", hashlib.sha256).digest()

    def _hash(self, purpose: str, destination: str, code: str) -> str:
        message = f"{purpose}|{destination}|{code}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def new_code(self) -> str:
        return "".join(secrets.choice("0123456789") for _ in range(self.config.code_length))

    async def _check_send_caps(self, channel: str, destination: str, ip: str) -> None:
        if channel == "sms":
            if is_premium_or_unsendable(destination):
                raise InvalidRequest("codes are not sent to premium-rate or shared-cost numbers", field="phone")
            countries = self.config.sms_countries
            if countries and region_of(destination) not in countries:
                raise InvalidRequest("codes are not sent by SMS to numbers of that country", field="phone")
            # SMS pumping walks through consecutive numbers: cap sends per block of 100.
            await self.limits.require_below(
                "code_hourly_block",
                number_block(destination),
                HOUR,
                self.config.code_hourly_per_number_block,
                "too many codes sent to numbers like this one; try again later",
                "number_block",
            )
            await self.limits.require_below(
                "code_daily_dest",
                destination,
                DAY,
                self.config.code_daily_per_phone,
                "too many codes sent to this number today",
                "daily_phone",
            )
        await self.limits.require_below(
            "code_daily_ip",
            ip,
            DAY,
            self.config.code_daily_per_ip,
            "too many codes requested from this address today",
            "daily_ip",
        )

    async def issue(
        self,
        purpose: str,
        destination: str,
        channel: str,
        ip: str,
        *,
        account_id: int | None = None,
        cooldown: int | None = None,
        ticket: str | None = None,
    ) -> str:
        """Create (or replace) the code for this purpose and destination and return it
        for delivery. Inside the resend cooldown: `RateLimited`. The cooldown is enforced
        by a conditional upsert, so two concurrent requests cannot both pass it."""
        assert purpose in PURPOSES
        cooldown = self.config.code_cooldown if cooldown is None else cooldown
        await self._check_send_caps(channel, destination, ip)
        now = self.clock()
        code = self.new_code()
        _id = f"{purpose}:{destination}"
        fields: dict[str, Any] = {
            "purpose": purpose,
            "destination": destination,
            "channel": channel,
            "account_id": account_id,
            "code_hash": self._hash(purpose, destination, code),
            "ticket": ticket,
            "sent_at": now,
            "expires_at": now + seconds(self.config.code_ttl),
            "attempts": 0,
        }
        try:
            await self.coll.find_one_and_update(
                {"_id": _id, "sent_at": {"$lte": now - seconds(cooldown)}},
                {"$set": fields},
                upsert=True,
            )
        except DuplicateKeyError:
            existing = await self.coll.find_one({"_id": _id}, {"sent_at": 1})
            waited = (now - existing["sent_at"]).total_seconds() if existing else 0
            raise RateLimited(
                "a code was sent recently; wait before asking again",
                retry_after=int(cooldown - waited) + 1,
                reason="cooldown",
            ) from None
        if channel == "sms":
            await self.limits.hit("code_daily_dest", destination, DAY)
            await self.limits.hit("code_hourly_block", number_block(destination), HOUR)
        await self.limits.hit("code_daily_ip", ip, DAY)
        return code

    async def withdraw(self, purpose: str, destination: str) -> None:
        """Remove a code whose delivery failed: no code is left usable, and the cooldown
        does not hold the user back from trying again."""
        await self.coll.delete_one({"_id": f"{purpose}:{destination}"})

    async def pending(self, purpose: str, destination: str) -> dict | None:
        doc = await self.coll.find_one({"_id": f"{purpose}:{destination}"})
        if doc is None or doc["expires_at"] <= self.clock() or doc["attempts"] >= self.config.code_max_attempts:
            return None
        return doc

    async def verify(self, purpose: str, destination: str, code: str, ip: str, *, ticket: str | None = None) -> dict:
        """Use a code: returns its record (with `account_id`) or raises. Wrong guesses count
        per code (then it dies), per destination and per client IP (hourly caps)."""
        await self.limits.require_below(
            "code_fail_ip",
            ip,
            HOUR,
            self.config.code_verify_failures_per_ip_hour,
            "too many wrong codes from this address",
            "verify_ip",
        )
        await self.limits.require_below(
            "code_fail_dest",
            destination,
            HOUR,
            self.config.code_verify_failures_per_destination_hour,
            "too many wrong codes for this destination",
            "verify_dest",
        )
        _id = f"{purpose}:{destination}"
        now = self.clock()
        live = {"_id": _id, "expires_at": {"$gt": now}, "attempts": {"$lt": self.config.code_max_attempts}}
        if await self.coll.find_one(live, {"_id": 1}) is None:
            await self._count_failure(ip, destination)
            raise NoPendingCode()
        code_ok = isinstance(code, str) and code.isdigit() and len(code) <= 10
        if code_ok:
            # A client that sent the code as a JSON number lost its leading zeros.
            code = code.zfill(self.config.code_length)
        if code_ok:
            spent = await self.coll.find_one_and_delete(
                {**live, "code_hash": self._hash(purpose, destination, code), **({"ticket": ticket} if ticket else {})}
            )
            if spent is not None:
                return spent
        # Wrong (or raced and lost): count the attempt on the code and the failure caps.
        await self.coll.update_one(live, {"$inc": {"attempts": 1}})
        await self._count_failure(ip, destination)
        raise CodeInvalid()

    async def _count_failure(self, ip: str, destination: str) -> None:
        await self.limits.hit("code_fail_ip", ip, HOUR)
        await self.limits.hit("code_fail_dest", destination, HOUR)
