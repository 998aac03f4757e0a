"""The domain's values: what the stores hand out instead of raw documents.

Frozen, so a value read once (and cached across requests) cannot be changed under
another request's feet: a change is a new value (`Session.touched`). Built only by the
stores, from their documents (`from_doc`); handlers and services read attributes, never
a document's keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from .common import seconds


@dataclass(frozen=True, slots=True)
class CredCarry:
    """The session that changed the password, carried over to the new credential epoch
    (`epoch`: the one it was made with)."""

    session: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    uid: str
    username: str | None = None
    email: str | None = None
    email_key: str | None = None
    phone: str | None = None
    nickname: str = ""
    identity: int = 0
    phone_verified: bool = False
    email_verified: bool = False
    disabled: bool = False
    roles: tuple[str, ...] = ()
    style: str = "native"
    created: datetime | None = None
    password_changed: datetime | None = None
    password_hash: str | None = field(default=None, repr=False)
    # The credential version: moved by every password change or reset, a disable and a
    # takeover. Sessions carry the one they were made with.
    cred_epoch: int = 0
    cred_carry: CredCarry | None = None
    # The types of its confirmed second factors (`totp`): non-empty means every login
    # needs a second step, and sensitive actions a session at aal2.
    mfa: tuple[str, ...] = ()

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Account:
        carry = doc.get("cred_carry")
        return cls(
            id=doc["id"],
            uid=doc["uid"],
            username=doc.get("username"),
            email=doc.get("email"),
            email_key=doc.get("email_key"),
            phone=doc.get("phone"),
            nickname=doc.get("nickname") or "",
            identity=doc.get("identity", 0),
            phone_verified=bool(doc.get("phone_verified")),
            email_verified=bool(doc.get("email_verified")),
            disabled=bool(doc.get("disabled")),
            roles=tuple(doc.get("roles") or ()),
            style=doc.get("style") or "native",
            created=doc.get("created"),
            password_changed=doc.get("password_changed"),
            password_hash=doc.get("password_hash"),
            cred_epoch=int(doc.get("cred_epoch") or 0),
            cred_carry=CredCarry(carry["session"], carry["epoch"]) if carry else None,
            mfa=tuple(doc.get("mfa") or ()),
        )

    @property
    def is_admin(self) -> bool:
        """An administrator who may act now (a disabled one may not)."""
        return "admin" in self.roles and not self.disabled

    def contact(self, field: str) -> str | None:
        """The stored phone (`phone`) or e-mail (`email`)."""
        return self.phone if field == "phone" else self.email

    def proven(self, field: str) -> bool:
        return self.phone_verified if field == "phone" else self.email_verified

    def holds_session(self, session: Session) -> bool:
        """Whether a session was made with this account's current credentials: its epoch
        is the account's, or it is the session that changed the password, carried over
        across that one change (any later change moves the epoch again, and the carry no
        longer vouches for anything)."""
        if session.cred_epoch == self.cred_epoch:
            return True
        carry = self.cred_carry
        return (
            carry is not None
            and carry.session == session.id
            and carry.epoch == session.cred_epoch
            and self.cred_epoch == session.cred_epoch + 1
        )


@dataclass(frozen=True, slots=True)
class AccountRef:
    """Enough of an account to name it beside something of its own (a session in a list
    across accounts): never its credentials or contacts beyond the phone."""

    id: int
    uid: str | None = None
    username: str | None = None
    phone: str | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> AccountRef:
        return cls(id=doc["id"], uid=doc.get("uid"), username=doc.get("username"), phone=doc.get("phone"))


# RFC 8176's names where it has one (`pwd`, `sms`, `otp`), ours beside them.
AMR = {"password": "pwd", "sms": "sms", "email": "email", "totp": "totp", "recovery": "recovery"}


@dataclass(frozen=True, slots=True)
class Assurance:
    """How a session was authenticated: NIST's assurance level (1: one factor, 2: two)
    and RFC 8176's methods, in the order they were used."""

    aal: int
    amr: tuple[str, ...]

    @classmethod
    def first(cls, method: str) -> Assurance:
        return cls(1, (AMR.get(method, method),))

    def with_second(self, method: str) -> Assurance:
        return Assurance(2, (*self.amr, AMR.get(method, method)))


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    account_id: int
    kind: str  # opaque, jwt or console
    style: str
    created: datetime
    last_active: datetime
    idle_seconds: int
    absolute_expires_at: datetime
    expires_at: datetime
    ip: str | None = None
    user_agent: str | None = None
    revoked_at: datetime | None = None
    revoked_reason: str | None = None
    revoked_by: str | None = None
    cred_epoch: int = 0
    aal: int = 1
    amr: tuple[str, ...] = ()
    auth_time: datetime | None = None  # the last authentication (a login, a reauthentication)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Session:
        return cls(
            id=doc["_id"],
            account_id=doc["account_id"],
            kind=doc["kind"],
            style=doc.get("style") or "native",
            created=doc["created"],
            last_active=doc["last_active"],
            idle_seconds=doc["idle_seconds"],
            absolute_expires_at=doc["absolute_expires_at"],
            expires_at=doc["expires_at"],
            ip=doc.get("ip"),
            user_agent=doc.get("user_agent"),
            revoked_at=doc.get("revoked_at"),
            revoked_reason=doc.get("revoked_reason"),
            revoked_by=doc.get("revoked_by"),
            cred_epoch=int(doc.get("cred_epoch") or 0),
            aal=int(doc.get("aal") or 1),
            amr=tuple(doc.get("amr") or ()),
            auth_time=doc.get("auth_time") or doc["created"],
        )

    @property
    def assurance(self) -> Assurance:
        return Assurance(self.aal, self.amr)

    def alive(self, now: datetime) -> bool:
        return self.revoked_at is None and self.expires_at > now

    def touched(self, now: datetime) -> Session:
        """This session active at `now`: its idle deadline moves, never past the absolute one."""
        expires = min(now + seconds(self.idle_seconds), self.absolute_expires_at)
        return replace(self, last_active=now, expires_at=expires)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request's token belongs to: the live session and its account."""

    account: Account
    session: Session


@dataclass(frozen=True, slots=True)
class Pair:
    """A JWT pair as handed out; `refresh` is None where the route gives access only."""

    access: str
    access_expires_in: int
    refresh: str | None = None
    refresh_expires_in: int | None = None


@dataclass(frozen=True, slots=True)
class OpaqueLogin:
    """A login answered with an opaque token (returned this once; only its hash is kept)."""

    account: Account
    session: Session
    token: str


@dataclass(frozen=True, slots=True)
class JwtLogin:
    """A login answered with a JWT pair."""

    account: Account
    session: Session
    pair: Pair


@dataclass(frozen=True, slots=True)
class TokenFacts:
    """What introspection knows about a live token of ours, whichever door asks (the
    native `/auth/introspect`, RFC 7662's `/oauth/introspect`): its live caller, what it
    is (`use`: `opaque`, `access` or `refresh`) and its times. `claims`: a JWT's verified
    claims (`iss`, `aud`, `jti`, … as the token carries them); empty for an opaque token."""

    caller: Caller
    use: str
    exp: int
    iat: int
    claims: dict[str, Any] = field(default_factory=dict)
