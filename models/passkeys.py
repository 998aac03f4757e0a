"""Passkeys (WebAuthn, issue 21), with Duo Labs' `webauthn` (py_webauthn): the store of
an account's credentials and the ceremonies' challenges. `PasskeyFlows`
(models/passkey_flows.py) puts them together with sessions and second factors.

- **Challenges** are 32 random bytes, stored by their digest with the ceremony that
  issued them (`register`, `login`, `mfa`), what they are bound to (the registering
  session; the MFA challenge) and a TTL (GATEHOUSE_WEBAUTHN_CHALLENGE_SECONDS). The
  browser signs the challenge into `clientDataJSON`; finishing a ceremony reads it from
  there and takes the stored one with one `find_one_and_delete`: single use whoever
  races, and refused unless it is this ceremony's and this caller's.
- **Credentials** are stored under their credential id (`_id`), so one id belongs to one
  account only, with the COSE public key, the sign count, transports, a name, created
  and last used. The sign count moves by a conditional write: an assertion whose count
  does not exceed the stored one (where the authenticator keeps one) is refused and
  recorded as a possible cloned authenticator.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from config import WebAuthnSettings

from .common import Clock, epoch, seconds
from .errors import DomainError, NotFound
from .values import Account

CEREMONIES = ("register", "login", "mfa", "reauth")
CLIENT_DATA_MAX = 4096  # base64url characters; a browser's is about 200
CHALLENGE_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")
TRANSPORTS = {t.value for t in AuthenticatorTransport}


class PasskeysOff(NotFound):
    default_message = "passkeys are off here: GATEHOUSE_WEBAUTHN_RP_ID and GATEHOUSE_WEBAUTHN_ORIGINS turn them on"


class PasskeyRejected(DomainError):
    """A ceremony that does not verify: an unknown, used, expired or foreign challenge, a
    wrong origin or RP id, a bad signature, an unknown credential, a sign count that did
    not move forward. One answer for all, so a caller learns nothing from which."""

    default_message = "the passkey could not be verified: start again"

    def __init__(self, message: str = "", *, account_id: int | None = None) -> None:
        super().__init__(message)
        self.account_id = account_id  # the credential's owner, when it was found: for the audit log


class PasskeyExists(DomainError):
    default_message = "this passkey is registered already"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Passkey:
    id: str  # the credential id, base64url
    account_id: int
    name: str
    created: datetime
    sign_count: int = 0
    transports: tuple[str, ...] = ()
    last_used: datetime | None = None
    backed_up: bool = False
    public_key: bytes = field(default=b"", repr=False)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Passkey:
        return cls(
            id=doc["_id"],
            account_id=doc["account_id"],
            name=doc.get("name") or "",
            created=doc["created"],
            sign_count=int(doc.get("sign_count") or 0),
            transports=tuple(doc.get("transports") or ()),
            last_used=doc.get("last_used"),
            backed_up=bool(doc.get("backed_up")),
            public_key=bytes(doc.get("public_key") or b""),
        )


def passkey_view(passkey: Passkey) -> dict[str, Any]:
    return {
        "id": passkey.id,
        "name": passkey.name,
        "created": epoch(passkey.created),
        "lastUsed": epoch(passkey.last_used),
        "transports": list(passkey.transports),
        "backedUp": passkey.backed_up,
    }


@dataclass(frozen=True)
class Ceremony:
    """A challenge taken back: what issued it and what it is bound to."""

    kind: str
    challenge: bytes
    account_id: int | None
    binding: str | None


@dataclass(frozen=True)
class Assertion:
    passkey: Passkey
    user_verified: bool


def client_challenge(credential: Any) -> str:
    """The challenge the browser signed, from the credential's `clientDataJSON` (not yet
    verified: it only finds the stored challenge; the library checks the rest). A
    client data of more than a few KiB, or a challenge not of our alphabet, is refused
    before anything parses it further."""
    try:
        encoded = credential["response"]["clientDataJSON"]
        if not isinstance(encoded, str) or len(encoded) > CLIENT_DATA_MAX:
            raise PasskeyRejected()
        challenge = json.loads(unb64url(encoded))["challenge"]
    except (KeyError, TypeError, ValueError, RecursionError):
        raise PasskeyRejected() from None
    if not isinstance(challenge, str) or not CHALLENGE_RE.fullmatch(challenge):
        raise PasskeyRejected()
    return challenge


class PasskeyList:
    """An account's passkeys, read only (what the administrators' pages read)."""

    def __init__(self, db: AsyncDatabase) -> None:
        self.coll = db.passkeys

    async def list(self, account_id: int) -> list[Passkey]:
        docs = await self.coll.find({"account_id": account_id}).sort("created", 1).to_list()
        return [Passkey.from_doc(d) for d in docs]


class Passkeys(PasskeyList):
    def __init__(self, db: AsyncDatabase, clock: Clock, config: WebAuthnSettings) -> None:
        super().__init__(db)
        self.challenges = db.webauthn_challenges
        self.clock = clock
        self.config = config

    @property
    def on(self) -> bool:
        return bool(self.config.webauthn_rp_id and self.config.webauthn_origins)

    def require_on(self) -> None:
        if not self.on:
            raise PasskeysOff()

    # ---- the store ----------------------------------------------------------------------

    async def get(self, account_id: int, passkey_id: str) -> Passkey:
        doc = await self.coll.find_one({"_id": passkey_id, "account_id": account_id})
        if doc is None:
            raise NotFound("no such passkey")
        return Passkey.from_doc(doc)

    async def rename(self, account_id: int, passkey_id: str, name: str) -> Passkey:
        doc = await self.coll.find_one_and_update(
            {"_id": passkey_id, "account_id": account_id}, {"$set": {"name": name}}, return_document=True
        )
        if doc is None:
            raise NotFound("no such passkey")
        return Passkey.from_doc(doc)

    async def delete(self, account_id: int, passkey_id: str) -> bool:
        return (await self.coll.delete_one({"_id": passkey_id, "account_id": account_id})).deleted_count == 1

    async def exists(self, passkey_id: str) -> bool:
        return await self.coll.find_one({"_id": passkey_id}, {"_id": 1}) is not None

    async def count(self, account_id: int) -> int:
        return await self.coll.count_documents({"account_id": account_id})

    async def drop(self, account_id: int) -> int:
        return (await self.coll.delete_many({"account_id": account_id})).deleted_count

    # ---- challenges -----------------------------------------------------------------------

    async def _issue(self, kind: str, account_id: int | None, binding: str | None) -> bytes:
        challenge = secrets.token_bytes(32)
        now = self.clock()
        await self.challenges.insert_one(
            {
                "_id": hashlib.sha256(b64url(challenge).encode()).hexdigest(),
                "kind": kind,
                "challenge": challenge,
                "account_id": account_id,
                "binding": binding,
                "expires_at": now + seconds(self.config.webauthn_challenge_seconds),
            }
        )
        return challenge

    async def _take(self, credential: Any, kind: str, binding: str | None) -> Ceremony:
        """The stored challenge the credential signed, used up; `PasskeyRejected` unless
        it is live and was issued for this ceremony and this binding."""
        digest = hashlib.sha256(client_challenge(credential).encode()).hexdigest()
        doc = await self.challenges.find_one_and_delete({"_id": digest, "expires_at": {"$gt": self.clock()}})
        if doc is None or doc["kind"] != kind or doc.get("binding") != binding:
            raise PasskeyRejected()
        return Ceremony(kind, bytes(doc["challenge"]), doc.get("account_id"), doc.get("binding"))

    def _options(self, options: Any) -> dict[str, Any]:
        return json.loads(options_to_json(options))

    @property
    def _timeout_ms(self) -> int:
        return self.config.webauthn_challenge_seconds * 1000

    # ---- registration -----------------------------------------------------------------------

    async def registration_options(self, account: Account, session_id: str) -> dict[str, Any]:
        """Creation options for a new passkey of the account: a fresh challenge bound to
        the registering session, the account's passkeys excluded, a resident key and
        user verification preferred, no attestation asked."""
        existing = await self.list(account.id)
        label = account.username or account.email or account.phone or account.uid
        challenge = await self._issue("register", account.id, session_id)
        options = generate_registration_options(
            rp_id=self.config.webauthn_rp_id,
            rp_name=self.config.webauthn_rp_name,
            user_id=account.uid.encode(),
            user_name=label,
            user_display_name=account.nickname or label,
            challenge=challenge,
            timeout=self._timeout_ms,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
            exclude_credentials=[PublicKeyCredentialDescriptor(id=unb64url(p.id)) for p in existing],
        )
        return self._options(options)

    async def register(self, account: Account, session_id: str, credential: Any, name: str) -> Passkey:
        """Verify an attestation against its challenge (this session's), the origins and
        the RP id, and store the credential; `PasskeyExists` for an id already stored."""
        ceremony = await self._take(credential, "register", session_id)
        if ceremony.account_id != account.id:
            raise PasskeyRejected()
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=ceremony.challenge,
                expected_rp_id=self.config.webauthn_rp_id,
                expected_origin=list(self.config.webauthn_origins),
            )
        except (WebAuthnException, KeyError, TypeError, ValueError):
            raise PasskeyRejected() from None
        transports = (credential.get("response") or {}).get("transports")
        transports = [t for t in transports if isinstance(t, str)] if isinstance(transports, list) else []
        doc = {
            "_id": b64url(verified.credential_id),
            "account_id": account.id,
            "name": name or "passkey",
            "public_key": verified.credential_public_key,
            "sign_count": verified.sign_count,
            "transports": [t for t in transports if t in TRANSPORTS][:8],
            "backed_up": verified.credential_backed_up,
            "user_verified": verified.user_verified,
            "created": self.clock(),
        }
        try:
            await self.coll.insert_one(doc)
        except DuplicateKeyError:
            raise PasskeyExists() from None
        return Passkey.from_doc(doc)

    # ---- assertions ---------------------------------------------------------------------------

    async def login_options(self) -> dict[str, Any]:
        """Request options for a passkey sign-in: no credential listed (the browser's
        picker of discoverable credentials, so the answer tells nothing about any
        account), and user verification required (a passkey alone is a login only with
        the PIN or biometric that makes it two factors)."""
        return await self._assertion_options("login", None, None, [], UserVerificationRequirement.REQUIRED)

    async def mfa_options(self, account: Account, binding: str, kind: str = "mfa") -> dict[str, Any]:
        """Request options for a login's second step (`mfa`, bound to that login's MFA
        challenge) or a re-authentication (`reauth`, bound to the session): the
        account's passkeys."""
        allowed = [PublicKeyCredentialDescriptor(id=unb64url(p.id)) for p in await self.list(account.id)]
        return await self._assertion_options(kind, account.id, binding, allowed)

    async def _assertion_options(
        self,
        kind: str,
        account_id: int | None,
        binding: str | None,
        allowed: list[PublicKeyCredentialDescriptor],
        verification: UserVerificationRequirement = UserVerificationRequirement.PREFERRED,
    ) -> dict[str, Any]:
        challenge = await self._issue(kind, account_id, binding)
        options = generate_authentication_options(
            rp_id=self.config.webauthn_rp_id,
            challenge=challenge,
            timeout=self._timeout_ms,
            allow_credentials=allowed,
            user_verification=verification,
        )
        return self._options(options)

    async def assert_(self, credential: Any, kind: str, binding: str | None = None) -> Assertion:
        """Verify an assertion: its challenge (this ceremony's), the credential (stored;
        for a second step, the challenge's account's), origin, RP id and signature, and a
        sign count that moves forward where the authenticator keeps one (taken by a
        conditional write, so of two racing assertions with one count, one passes)."""
        ceremony = await self._take(credential, kind, binding)
        raw_id = credential.get("rawId") or credential.get("id") if isinstance(credential, dict) else None
        doc = await self.coll.find_one({"_id": raw_id}) if isinstance(raw_id, str) and len(raw_id) <= 1400 else None
        if doc is None or (ceremony.account_id is not None and doc["account_id"] != ceremony.account_id):
            raise PasskeyRejected()
        passkey = Passkey.from_doc(doc)
        try:
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=ceremony.challenge,
                expected_rp_id=self.config.webauthn_rp_id,
                expected_origin=list(self.config.webauthn_origins),
                credential_public_key=passkey.public_key,
                credential_current_sign_count=0,  # compared below, where a decrease is told apart
            )
        except (WebAuthnException, KeyError, TypeError, ValueError):
            raise PasskeyRejected(account_id=passkey.account_id) from None
        handle = (credential.get("response") or {}).get("userHandle")
        if handle and (not isinstance(handle, str) or not await self._handle_matches(handle, passkey.account_id)):
            raise PasskeyRejected(account_id=passkey.account_id)
        if not await self._count(passkey, verified.new_sign_count):
            raise SignCountRegressed(passkey, verified.new_sign_count)
        return Assertion(passkey, verified.user_verified)

    async def _handle_matches(self, handle: str, account_id: int) -> bool:
        """A discoverable credential names its user (the account's uid, set at
        registration): it must be the stored credential's account."""
        try:
            uid = unb64url(handle).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        found = await self.coll.database.accounts.find_one({"id": account_id, "uid": uid}, {"_id": 1})
        return found is not None

    async def _count(self, passkey: Passkey, new: int) -> bool:
        """Move the stored sign count to `new` (and `last_used` to now), only forward: an
        authenticator without a counter always says 0 and is always taken."""
        now = self.clock()
        if new == 0:  # only while the stored count is 0 too (a copy saying 0 after a real count is refused)
            result = await self.coll.update_one({"_id": passkey.id, "sign_count": 0}, {"$set": {"last_used": now}})
            return result.matched_count == 1
        result = await self.coll.update_one(
            {"_id": passkey.id, "sign_count": {"$lt": new}}, {"$set": {"sign_count": new, "last_used": now}}
        )
        return result.modified_count == 1


class SignCountRegressed(PasskeyRejected):
    """The authenticator's count did not move forward: it may have been cloned."""

    def __init__(self, passkey: Passkey, count: int) -> None:
        super().__init__(account_id=passkey.account_id)
        self.passkey = passkey
        self.count = count
