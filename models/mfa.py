"""Second factors (issue 20): TOTP and recovery codes, the MFA challenge that stands
between a login's first step and its session, and the codes' checks under their limits.

- **TOTP** (RFC 6238 with the parameters every authenticator app reads from an
  `otpauth://` URI: SHA-1, 6 digits, 30 s). The secret is sealed with AES-256-GCM
  (`SecretBox`) under a key derived from SECRET_KEY and named by a key id, so after a
  rotation the former key (`GATEHOUSE_PREVIOUS_SECRET_KEYS`) still opens it, and the
  next use seals it again under the current one. A code is taken for the current step
  ±1, and once: the factor keeps the last step it accepted, and the write that accepts a
  code is conditional on a lower one, so two processes never both take one code (nor an
  older code after a newer one). A factor counts once confirmed with a first code; an
  unconfirmed one expires after an hour.
- **Recovery codes**: 10 of 50 random bits each, shown once, kept as HMAC-SHA256 digests
  keyed by SECRET_KEY (random codes need no slow hash). Using one `$pull`s its digest:
  once, never twice. Regenerating replaces the set.
- **The challenge**: a login's first step for an account with a factor makes no
  session, only this: a random token (stored hashed) bound to the account, its
  credential epoch, the session it will make (kind, style, refresh) and the first
  factor's method; single use, short-lived, and at most N codes, each counted (`$inc`)
  before it is checked.

Every code check — the challenge's, `POST /auth/reauthenticate`'s, a factor's
confirmation — first reserves a slot per account and per client address
(`RateLimits.reserve_all`), so N parallel guesses against a limit of L get L checks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyotp
import segno
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from config import MfaSettings, ThrottleSettings

from .accounts import Accounts
from .changes import CHANGED
from .common import Clock, Context, epoch, seconds, sha256_hex
from .errors import ChallengeInvalid, CodeInvalid, InvalidRequest, MfaRequired, NotFound
from .events import EventLog
from .ratelimit import Limit, RateLimits, Slot
from .values import Account, Assurance

PERIOD = 30
DIGITS = 6
DRIFT = 1  # steps either side of now
PENDING_SECONDS = 3600  # an unconfirmed TOTP factor lives this long
RECOVERY_COUNT = 10
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read off paper
RECOVERY_LENGTH = 10  # 10 of 31 symbols: 49.5 bits
TOTP_RE = re.compile(r"^[0-9]{6}$")
ISSUER = "Gatehouse"

log = logging.getLogger("gatehouse")


class SecretBox:
    """AES-256-GCM under keys derived from SECRET_KEY (the current one seals; former ones,
    by key id, still open). The factor's id is the associated data: a sealed secret copied
    onto another factor does not open."""

    LABEL = b"gatehouse/mfa/totp-secret"

    def __init__(self, secret_key: str, previous: tuple[str, ...] = ()) -> None:
        keys = [self._derive(k) for k in (secret_key, *previous)]
        self.kid = keys[0][0]
        self.keys = dict(keys)

    @classmethod
    def _derive(cls, secret_key: str) -> tuple[str, bytes]:
        key = hmac.new(secret_key.encode(), cls.LABEL, hashlib.sha256).digest()
        return "k" + hashlib.sha256(key).hexdigest()[:8], key

    def seal(self, plaintext: str, bound_to: str) -> dict[str, str]:
        nonce = os.urandom(12)
        sealed = AESGCM(self.keys[self.kid]).encrypt(nonce, plaintext.encode(), bound_to.encode())
        return {"kid": self.kid, "nonce": _b64(nonce), "ct": _b64(sealed)}

    def open(self, sealed: dict[str, str], bound_to: str) -> str:
        """The plaintext; `ValueError` when no key of ours opens it (a SECRET_KEY rotated
        without GATEHOUSE_PREVIOUS_SECRET_KEYS, or tampering)."""
        key = self.keys.get(sealed.get("kid", ""))
        if key is None:
            raise ValueError(f"no key {sealed.get('kid')!r}: was SECRET_KEY rotated without its predecessor?")
        try:
            nonce, ct = base64.urlsafe_b64decode(sealed["nonce"]), base64.urlsafe_b64decode(sealed["ct"])
            return AESGCM(key).decrypt(nonce, ct, bound_to.encode()).decode()
        except (InvalidTag, KeyError, ValueError) as e:
            raise ValueError("the sealed secret does not open") from e


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def new_recovery_code() -> str:
    raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
    return f"{raw[:5]}-{raw[5:]}"


def normalize_recovery(code: str) -> str:
    return re.sub(r"[\s-]", "", code).lower()


@dataclass(frozen=True)
class Factor:
    id: str
    account_id: int
    type: str
    name: str
    created: datetime
    confirmed: bool
    last_used: datetime | None = None
    sealed: dict[str, str] = field(default_factory=dict, repr=False)
    last_step: int = -1
    slot: int | None = field(default=None, repr=False)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Factor:
        return cls(
            id=doc["_id"],
            account_id=doc["account_id"],
            type=doc["type"],
            name=doc.get("name") or "",
            created=doc["created"],
            confirmed=bool(doc.get("confirmed")),
            last_used=doc.get("last_used"),
            sealed=doc.get("secret") or {},
            last_step=int(doc.get("last_step", -1)),
            slot=doc.get("slot"),
        )


def factor_view(factor: Factor) -> dict[str, Any]:
    return {
        "id": factor.id,
        "type": factor.type,
        "name": factor.name,
        "created": epoch(factor.created),
        "confirmed": factor.confirmed,
        "lastUsed": epoch(factor.last_used) if factor.last_used else None,
    }


@dataclass(frozen=True)
class Enrolment:
    """A new, unconfirmed TOTP factor as its owner sees it, once."""

    factor: Factor
    secret: str = field(repr=False)
    uri: str = field(repr=False)
    qr_svg: str = field(repr=False)


@dataclass(frozen=True)
class Challenge:
    """A live MFA challenge, as stored: what its second step will make."""

    account_id: int
    cred_epoch: int
    kind: str
    style: str
    refresh: bool
    first: Assurance
    attempts: int


class FactorList:
    """What an account's factors are, read-only: for its owner and for administrators
    (on the admin reads' own client)."""

    def __init__(self, db: AsyncDatabase) -> None:
        self.coll = db.factors

    async def list(self, account_id: int) -> list[Factor]:
        """The account's TOTP factors, oldest first (pending ones included)."""
        docs = await self.coll.find({"account_id": account_id, "type": "totp"}).sort("created", 1).to_list()
        return [Factor.from_doc(d) for d in docs]

    async def recovery_left(self, account_id: int) -> int:
        doc = await self.coll.find_one({"_id": f"recovery:{account_id}"}, {"codes": 1})
        return len(doc.get("codes") or ()) if doc else 0


class Factors(FactorList):
    """The `factors` collection (TOTP factors, and one recovery-code set per account) and
    `mfa_challenges`."""

    def __init__(
        self,
        db: AsyncDatabase,
        clock: Clock,
        config: MfaSettings,
        throttle: ThrottleSettings,
        secret_key: str,
        accounts: Accounts,
        events: EventLog,
        limits: RateLimits,
    ) -> None:
        super().__init__(db)
        self.challenges = db.mfa_challenges
        self.clock = clock
        self.config = config
        self.throttle = throttle
        self.box = SecretBox(secret_key, config.previous_secret_keys)
        # The current SECRET_KEY's recovery-code key first, then the former keys': codes
        # made before a rotation keep working (each check tries every key, in one command).
        self.recovery_keys = [
            hmac.new(k.encode(), b"gatehouse/mfa/recovery", hashlib.sha256).digest()
            for k in (secret_key, *config.previous_secret_keys)
        ]
        self.accounts = accounts
        self.events = events
        self.limits = limits

    async def last_one(self, account: Account, kind: str) -> bool:
        """Whether removing one factor of `kind` would leave the account with none."""
        if any(k != kind for k in account.mfa):
            return False
        if kind == "totp":
            return await self.coll.count_documents({"account_id": account.id, "type": "totp", "confirmed": True}) <= 1
        return await self.coll.database.passkeys.count_documents({"account_id": account.id}) <= 1

    def policy_covers(self, account: Account) -> bool:
        """Whether GATEHOUSE_MFA requires this account to have a second factor."""
        policy = self.config.mfa_policy
        return policy == "required" or (policy == "required_for_admins" and "admin" in account.roles)

    # ---- limits -----------------------------------------------------------------------

    def _limit(self, key: str, limit: int, whose: str) -> Limit:
        """A guessing limit on wrong second-factor codes, over the login-failure window."""
        message = f"too many wrong second-factor codes{whose}; try again later"
        return Limit(f"mfa_fail_{key}", self.throttle.login_failure_window, limit, message, key, carry=True)

    @property
    def failures_per_account(self) -> Limit:
        return self._limit("account", self.config.mfa_failures_per_account, "")

    @property
    def failures_per_ip(self) -> Limit:
        return self._limit("ip", self.config.mfa_failures_per_ip, " from this address")

    async def _reserve(self, account: Account, ctx: Context) -> list[Slot]:
        return await self.limits.reserve_all(
            [(self.failures_per_account, f"account={account.id}"), (self.failures_per_ip, ctx.ip_key)]
        )

    # ---- TOTP -------------------------------------------------------------------------

    async def enrol(self, account: Account, name: str) -> Enrolment:
        """A new TOTP factor, pending until a first code confirms it. At most
        GATEHOUSE_MFA_MAX_FACTORS per account, pending ones included: each factor holds
        one of the account's numbered slots, and the unique (account_id, slot) index
        gives a slot to one request only, so parallel requests cannot all pass a count."""
        limit = self.config.mfa_max_factors
        now = self.clock()
        # A pending app past its hour holds no slot, though the TTL sweep may lag.
        await self.coll.delete_many({"account_id": account.id, "confirmed": False, "expires_at": {"$lte": now}})
        taken = {f.slot for f in await self.list(account.id)}
        secret = pyotp.random_base32()  # 160 bits, as RFC 4226 recommends
        factor_id = uuid.uuid4().hex
        doc = {
            "_id": factor_id,
            "account_id": account.id,
            "type": "totp",
            "name": name,
            "secret": self.box.seal(secret, factor_id),
            "confirmed": False,
            "created": now,
            "last_step": -1,
            "expires_at": now + seconds(PENDING_SECONDS),  # the TTL index ends a pending factor
        }
        for slot in (n for n in range(limit) if n not in taken):
            try:
                await self.coll.insert_one({**doc, "slot": slot})
            except DuplicateKeyError:
                continue  # a parallel enrolment took it
            return self._enrolment(account, Factor.from_doc(doc), secret)
        raise InvalidRequest(f"an account may have at most {limit} authenticator apps")

    def _enrolment(self, account: Account, factor: Factor, secret: str) -> Enrolment:
        label = account.username or account.email or account.phone or account.uid
        uri = pyotp.TOTP(secret).provisioning_uri(name=label, issuer_name=ISSUER)
        qr = segno.make(uri, error="m").svg_inline(scale=4, title="Scan with your authenticator app")
        return Enrolment(factor, secret, uri, qr)

    async def pending(self, account: Account, factor_id: str) -> Enrolment:
        """A pending factor of the account as its enrolment showed it (the console shows
        the same QR code again after a mistyped first code)."""
        doc = await self.coll.find_one({"_id": factor_id, "account_id": account.id, "type": "totp", "confirmed": False})
        if doc is None:
            raise NotFound("no such pending authenticator app")
        factor = Factor.from_doc(doc)
        try:
            return self._enrolment(account, factor, self.box.open(factor.sealed, factor.id))
        except ValueError:  # sealed under a SECRET_KEY no longer known: set up a new one
            raise NotFound("no such pending authenticator app") from None

    def _step_matching(self, factor: Factor, code: str) -> int | None:
        """The time step (±DRIFT of now) whose code `code` is, or None (also when no key of
        ours opens the factor's secret: logged, since only its owner's recovery codes or an
        administrator's reset can help then)."""
        try:
            secret = self.box.open(factor.sealed, factor.id)
        except ValueError as e:
            log.error("TOTP factor %s of account %s cannot be read: %s", factor.id, factor.account_id, e)
            return None
        totp = pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD)
        now_step = int(self.clock().timestamp()) // PERIOD
        for step in range(now_step - DRIFT, now_step + DRIFT + 1):
            if hmac.compare_digest(totp.generate_otp(step), code):
                return step
        return None

    async def _take_totp(self, factor: Factor, step: int, *, confirm: bool = False) -> bool:
        """Accept the code of `step` for `factor` once: the conditional write on
        `last_step` decides between racing requests (and refuses a code of a step already
        used)."""
        update: dict[str, Any] = {"$set": {"last_step": step, "last_used": self.clock()}}
        if factor.sealed.get("kid") != self.box.kid:  # sealed under a former SECRET_KEY: it opened to match
            secret = self.box.open(factor.sealed, factor.id)
            update["$set"]["secret"] = self.box.seal(secret, factor.id)
        if confirm:
            update["$set"]["confirmed"] = True
            update["$set"]["confirmed_at"] = self.clock()
            update["$unset"] = {"expires_at": ""}
        result = await self.coll.update_one(
            {"_id": factor.id, "confirmed": not confirm, "last_step": {"$lt": step}}, update
        )
        return result.modified_count == 1

    async def confirm(self, account: Account, factor_id: str, code: str, ctx: Context) -> tuple[Factor, bool]:
        """A pending factor's first code: it counts from now on. Also returns whether it is
        the account's first factor, decided by the one conditional write that turns the
        account's second step on (two first apps confirmed at once: one is first). The
        first one ends the account's other pending apps (none set up before the owner
        chose one may be confirmed later)."""
        doc = await self.coll.find_one({"_id": factor_id, "account_id": account.id, "type": "totp"})
        if doc is None or doc.get("confirmed") or doc["expires_at"] <= self.clock():
            raise NotFound("no such pending authenticator app")
        slots = await self._reserve(account, ctx)
        factor = Factor.from_doc(doc)
        step = self._step_matching(factor, code) if TOTP_RE.match(code) else None
        if step is None or not await self._take_totp(factor, step, confirm=True):
            await self.events.record(
                "mfa_failed", ctx, account_id=account.id, outcome="failed", via="confirm", factor="totp"
            )
            raise CodeInvalid()
        await self.limits.release(*slots)
        first = await self.add_kind(account.id, "totp")
        if first:
            await self.coll.delete_many(
                {"account_id": account.id, "type": "totp", "confirmed": False, "_id": {"$ne": factor_id}}
            )
        return Factor.from_doc({**doc, "confirmed": True}), first

    async def add_kind(self, account_id: int, kind: str) -> bool:
        """The account has a factor of `kind` now (`totp`, `webauthn`): its logins take
        two steps. True when it is the account's first factor of any kind, decided by
        this one write (of two first factors added at once, one is first)."""
        none_yet = {"$or": [{"mfa": {"$exists": False}}, {"mfa": {"$size": 0}}]}
        add = {"$addToSet": {"mfa": kind}, **CHANGED}
        first = await self.accounts.coll.update_one({"id": account_id, **none_yet}, add)
        if first.modified_count == 0:
            await self.accounts.coll.update_one({"id": account_id}, add)
        self.accounts.changes.account(account_id)
        return first.modified_count == 1

    async def drop_kind(self, account_id: int, kind: str, still_there: Callable[[], Awaitable[bool]]) -> None:
        """The account's last factor of `kind` is gone: take `kind` off the account (put
        back if `still_there` finds one added meanwhile), and with no factor of any kind
        left, its recovery codes go too."""
        after = await self.accounts.coll.find_one_and_update(
            {"id": account_id},
            {"$pull": {"mfa": kind}, **CHANGED},
            projection={"mfa": 1},
            return_document=ReturnDocument.AFTER,
        )
        if await still_there():
            # One was added between the caller's count and the pull: the account has a
            # factor of this kind after all, and the login gate must know it.
            await self.accounts.coll.update_one({"id": account_id}, {"$addToSet": {"mfa": kind}, **CHANGED})
        elif after is not None and not after.get("mfa"):
            await self.coll.delete_one({"_id": f"recovery:{account_id}"})
        self.accounts.changes.account(account_id)

    async def discard(self, factor_id: str) -> None:
        """A factor confirmed by a request that turned out not to be allowed to (a race the
        step-up lost): gone again."""
        await self.coll.delete_one({"_id": factor_id})

    async def remove(self, account: Account, factor_id: str) -> Factor:
        """Remove one of the account's authenticator apps. With none confirmed left, TOTP
        is off for the account (and with no passkey either, its recovery codes go).
        (`Factors.last_one` says beforehand whether a policy may forbid it.)"""
        doc = await self.coll.find_one_and_delete({"_id": factor_id, "account_id": account.id, "type": "totp"})
        if doc is None:
            raise NotFound("no such authenticator app")
        confirmed = {"account_id": account.id, "type": "totp", "confirmed": True}
        if not await self.coll.count_documents(confirmed):

            async def still_there() -> bool:
                return bool(await self.coll.count_documents(confirmed))

            await self.drop_kind(account.id, "totp", still_there)
        return Factor.from_doc(doc)

    async def reset(self, account_id: int) -> int:
        """Every factor of the account gone (an administrator's reset); how many."""
        removed = await self.drop(account_id)
        await self.accounts.coll.update_one({"id": account_id}, {"$set": {"mfa": []}, **CHANGED})
        self.accounts.changes.account(account_id)
        return removed

    async def drop_pending(self, account_id: int, name: str) -> None:
        """The account's pending apps of this name gone (the console's login sets up a new
        one each time: the ones of abandoned logins must not fill the account's slots)."""
        await self.coll.delete_many({"account_id": account_id, "type": "totp", "confirmed": False, "name": name})

    async def drop(self, account_id: int) -> int:
        """Every factor of the account (apps, pending ones, recovery codes, passkeys) gone;
        how many. The account's `mfa` is the caller's to clear."""
        return await self.drop_apps(account_id) + await self.drop_passkeys(account_id)

    async def drop_apps(self, account_id: int) -> int:
        """The account's authenticator apps (pending ones too) and recovery codes gone."""
        return (await self.coll.delete_many({"account_id": account_id})).deleted_count

    async def drop_passkeys(self, account_id: int) -> int:
        return (await self.coll.database.passkeys.delete_many({"account_id": account_id})).deleted_count

    # ---- recovery codes -------------------------------------------------------------

    def _digest(self, code: str, key: bytes | None = None) -> str:
        raw = normalize_recovery(code).encode()
        return hmac.new(key or self.recovery_keys[0], raw, hashlib.sha256).hexdigest()

    async def new_recovery_codes(self, account_id: int) -> list[str]:
        """A new set of recovery codes (the old set is void), returned this once."""
        codes = [new_recovery_code() for _ in range(RECOVERY_COUNT)]
        await self.coll.update_one(
            {"_id": f"recovery:{account_id}"},
            {
                "$set": {"codes": [self._digest(c) for c in codes], "created": self.clock()},
                "$setOnInsert": {"account_id": account_id, "type": "recovery"},
            },
            upsert=True,
        )
        return codes

    # ---- checking a second factor ----------------------------------------------------

    async def check(
        self,
        account: Account,
        code: str,
        ctx: Context,
        *,
        via: str,
        claim: Callable[[], Awaitable[bool]] | None = None,
    ) -> str:
        """The method (`totp`, `recovery`) `code` proves for `account`, or `CodeInvalid`,
        under the per-account and per-address limits, reserved before the check. `claim`
        runs between finding that the code is right and using it up: when it answers
        False (a racing request finished the login's challenge first) the code stays
        unused and the answer is `ChallengeInvalid`."""
        slots = await self._reserve(account, ctx)
        match = await self._match(account, code)
        if match is not None and claim is not None and not await claim():
            await self.limits.release(*slots)
            raise ChallengeInvalid()
        if match is None or not await self._take(account, match):
            factor = "totp" if TOTP_RE.match(code.strip()) else "recovery"
            await self.events.record("mfa_failed", ctx, account_id=account.id, outcome="failed", via=via, factor=factor)
            raise CodeInvalid()
        await self.limits.release(*slots)
        method = "totp" if isinstance(match, tuple) else "recovery"
        await self.events.record("mfa_verified", ctx, account_id=account.id, via=via, factor=method)
        return method

    async def _match(self, account: Account, code: str) -> tuple[Factor, int] | list[str] | None:
        """What `code` is, read only: a confirmed TOTP factor and the step whose code it
        is, or the recovery-code digests of a code still unused; None when neither."""
        code = code.strip()
        if TOTP_RE.match(code):
            for factor in await self.list(account.id):
                step = self._step_matching(factor, code) if factor.confirmed else None
                if step is not None and factor.last_step < step:
                    return factor, step
            return None
        if len(normalize_recovery(code)) != RECOVERY_LENGTH:
            return None
        digests = [self._digest(code, key) for key in self.recovery_keys]
        found = await self.coll.find_one({"_id": f"recovery:{account.id}", "codes": {"$in": digests}}, {"_id": 1})
        return digests if found else None

    async def _take(self, account: Account, match: tuple[Factor, int] | list[str]) -> bool:
        """Use up what `_match` found, once, whoever races."""
        if isinstance(match, tuple):
            return await self._take_totp(*match)
        result = await self.coll.update_one(
            {"_id": f"recovery:{account.id}", "codes": {"$in": match}},
            {"$pull": {"codes": {"$in": match}}, "$set": {"last_used": self.clock()}},
        )
        return result.modified_count == 1

    # ---- the challenge ---------------------------------------------------------------

    async def challenge(
        self, account: Account, kind: str, ctx: Context, first: Assurance, *, refresh: bool
    ) -> MfaRequired:
        """The MFA challenge for a login whose first step `first` just passed: stored,
        and returned as the error the login answers with."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        ttl = self.config.mfa_challenge_seconds
        await self.challenges.insert_one(
            {
                "_id": sha256_hex(token),
                "account_id": account.id,
                "cred_epoch": account.cred_epoch,
                "kind": kind,
                "style": ctx.style,
                "refresh": refresh,
                "aal": first.aal,
                "amr": list(first.amr),
                "attempts": 0,
                "created": now,
                "expires_at": now + seconds(ttl),
            }
        )
        await self.events.record("mfa_challenge", ctx, account_id=account.id, kind=kind)
        factors = [*account.mfa, *(["recovery"] if await self.recovery_left(account.id) else [])]
        return MfaRequired({"challenge": token, "factors": factors, "expires_in": ttl, "verify": "/auth/mfa/verify"})

    async def peek(self, token: str) -> Challenge:
        """The live challenge, not counted (a passkey's second step begins with it);
        `ChallengeInvalid` for an unknown, expired, used or exhausted one."""
        doc = await self.challenges.find_one(
            {
                "_id": sha256_hex(token),
                "expires_at": {"$gt": self.clock()},
                "attempts": {"$lt": self.config.mfa_challenge_attempts},
            }
        )
        if doc is None:
            raise ChallengeInvalid()
        return self._challenge(doc)

    async def attempt(self, token: str) -> Challenge:
        """Count one attempt at the challenge, before its code is checked; `ChallengeInvalid`
        for an unknown, expired, used or exhausted one."""
        doc = await self.challenges.find_one_and_update(
            {
                "_id": sha256_hex(token),
                "expires_at": {"$gt": self.clock()},
                "attempts": {"$lt": self.config.mfa_challenge_attempts},
            },
            {"$inc": {"attempts": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise ChallengeInvalid()
        return self._challenge(doc)

    @staticmethod
    def _challenge(doc: dict[str, Any]) -> Challenge:
        return Challenge(
            account_id=doc["account_id"],
            cred_epoch=int(doc.get("cred_epoch") or 0),
            kind=doc["kind"],
            style=doc["style"],
            refresh=bool(doc.get("refresh", True)),
            first=Assurance(int(doc.get("aal") or 1), tuple(doc.get("amr") or ())),
            attempts=int(doc["attempts"]),
        )

    async def spend(self, token: str) -> bool:
        """Use the challenge up: True for the one request that does."""
        return (await self.challenges.delete_one({"_id": sha256_hex(token)})).deleted_count == 1

    def exhausted(self, challenge: Challenge) -> bool:
        return challenge.attempts >= self.config.mfa_challenge_attempts
