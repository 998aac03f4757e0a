"""JWT access/refresh pairs, each bound to a session.

Verification trusts nothing in the token's header but the `kid`: the key and its one
algorithm come from our own table, so `alg: none` and HMAC-with-a-public-key forgeries
fail, and `jwk`/`jku`/`x5u` headers are never looked at. Every access token names its
session (`sid`), and the session must still be alive for every request that reaches
Gatehouse, so a kick ends the token at once.

What a token carries beside Gatehouse's own claims follows the *profile* of the API style
that created its session (`PROFILES`): the claims the library of that style's document
checks (simplejwt for drf, flask-jwt-extended for phone, a plain PyJWT check for simple),
or Gatehouse's own (native, v1). Gatehouse checks a token by its profile too: a token whose
shape is not the profile of its session's style is refused.

Refresh tokens are recorded in `refresh_tokens`. Rotation inserts the successor, then
retires the presented token with a conditional update: of two concurrent refreshes one
wins, and the other — inside the grace period — gets the current pair. A retired token
replayed after the grace period is treated as theft and ends the whole session.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from config import JwtSettings

from .common import Clock, Context, seconds
from .db import insert_once
from .errors import TokenInvalid
from .events import EventLog
from .sessions import Sessions
from .values import Account, Caller, Pair, Session, TokenFacts


@dataclass(frozen=True)
class Key:
    kid: str
    alg: str
    signing_key: Any = field(repr=False)  # an HS256 key is the secret's bytes: never in a log line
    verifying_key: Any = field(repr=False)
    jwk: dict | None  # public JWK, for asymmetric keys only


def _load_private(kid: str, pem: str) -> Key:
    private = load_pem_private_key(pem.encode(), password=None)
    public = private.public_key()
    if isinstance(private, rsa.RSAPrivateKey):
        alg, jwk = "RS256", RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp256r1":
        alg, jwk = "ES256", ECAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(private, ed25519.Ed25519PrivateKey):
        alg, jwk = "EdDSA", OKPAlgorithm.to_jwk(public, as_dict=True)
    else:
        raise ValueError(f"JWT key {kid!r}: use RSA, EC P-256 or Ed25519")
    return Key(kid, alg, private, public, {**jwk, "kid": kid, "alg": alg, "use": "sig"})


def derived_secret(secret_key: str) -> bytes:
    """The HS256 key when GATEHOUSE_JWT_SECRET is unset: HMAC-SHA256 keyed by SECRET_KEY's
    UTF-8 bytes over the label `gatehouse/jwt/hs256` (32 bytes), so no other use of
    SECRET_KEY (cookies, code hashes) shares it."""
    return hmac.new(secret_key.encode(), b"gatehouse/jwt/hs256", hashlib.sha256).digest()


def _hs256(secret: bytes) -> Key:
    # The kid names the key without revealing it: 48 bits of the SHA-256 of a key of 256 bits at least.
    return Key("hs-" + hashlib.sha256(secret).hexdigest()[:12], "HS256", secret, secret, None)


class KeyRing:
    """The signing key — the first configured asymmetric key, else HS256 with
    GATEHOUSE_JWT_SECRET's bytes, else HS256 with the key derived from SECRET_KEY — and
    every key that still verifies, by kid. The derived key keeps verifying after
    GATEHOUSE_JWT_SECRET is set, so tokens signed before the switch live out their time."""

    def __init__(self, config: JwtSettings, secret_key: str) -> None:
        derived = _hs256(derived_secret(secret_key))
        shared = _hs256(config.jwt_secret.encode()) if config.jwt_secret else None
        hs = shared or derived
        keys = [_load_private(kid, pem) for kid, pem in config.jwt_private_keys]
        self.signing = keys[0] if keys else hs
        self.by_kid = {k.kid: k for k in [*keys, *([shared] if shared else []), derived]}

    def algorithms(self) -> list[str]:
        """The `alg` of every key that verifies our tokens: the signing key's first."""
        others = sorted({k.alg for k in self.by_kid.values()} - {self.signing.alg})
        return [self.signing.alg, *others]

    def jwks(self) -> dict:
        return {"keys": [k.jwk for k in self.by_kid.values() if k.jwk]}

    def for_token(self, token: str) -> Key:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenInvalid() from None
        kid = header.get("kid")
        key = self.by_kid.get(kid) if isinstance(kid, str) and len(kid) <= 64 else None
        if key is None or header.get("alg") != key.alg:
            raise TokenInvalid()
        return key


KINDS = ("access", "refresh")


def rotates(style: str) -> bool:
    """Whether refreshing a session of this style rotates its refresh token: every style
    but drf, whose simplejwt default hands out only a new access token."""
    return style != "drf"


@dataclass(frozen=True)
class Profile:
    """What the tokens of a group of API styles carry beside Gatehouse's own claims
    (`iss`, `sid`, `jti`, `typ`, `iat`, `nbf`, `exp`; `roles` in access tokens),
    and so what Gatehouse requires of them.

    `kinds`: per kind (access, refresh), the claims naming it in the library's words, with
    their exact values; Gatehouse checks them beside its own `typ`, so the two kinds never
    stand in for each other in either vocabulary. `audience`: the token carries `aud` (the
    Gatehouse profile only: PyJWT, and so every library on it, refuses a token with an
    `aud` when the verifier names none). `account_claim`: the claim carrying the integer
    account id. `fresh`: flask-jwt-extended's `fresh` (true in an access token from a
    login, false after a refresh and in refresh tokens). `subject`: the token carries
    `sub` (the account's uid). drf's and simple's do not: with one shared HS256 secret,
    flask-jwt-extended (the phone back end) takes any token with a `sub` and no
    `type: refresh` for an access token, and its "Missing claim: sub" is what keeps
    those styles' tokens — refresh tokens included — out of it."""

    name: str
    kinds: Mapping[str, Mapping[str, str]]
    audience: bool = False
    account_claim: str | None = None
    fresh: bool = False
    subject: bool = True

    def claims(self, kind: str, account_id: int, *, fresh: bool = False) -> dict:
        """This profile's own claims in a token of `kind`."""
        own: dict[str, Any] = dict(self.kinds[kind])
        if self.account_claim:
            own[self.account_claim] = account_id
        if self.fresh:
            own["fresh"] = fresh and kind == "access"
        return own

    def fits(self, claims: dict, kind: str) -> bool:
        """Whether verified `claims` have this profile's shape for `kind`."""
        if ("aud" in claims) != self.audience or ("sub" in claims) != self.subject:
            return False
        if any(claims.get(name) != value for name, value in self.kinds[kind].items()):
            return False
        if self.account_claim and not _is_int(claims.get(self.account_claim)):
            return False
        return not self.fresh or isinstance(claims.get("fresh"), bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


PROFILES = {
    p.name: p
    for p in (
        # native and v1: `type` repeats `typ` (as every token did before the profiles).
        Profile("gatehouse", {k: {"type": k} for k in KINDS}, audience=True, account_claim="account_id"),
        # djangorestframework-simplejwt's defaults: TOKEN_TYPE_CLAIM, USER_ID_CLAIM.
        Profile("drf", {k: {"token_type": k} for k in KINDS}, account_claim="user_id", subject=False),
        # flask-jwt-extended's: `type`, `fresh`, the identity in `sub` (the account's uid).
        Profile("phone", {k: {"type": k} for k in KINDS}, fresh=True),
        # Document 002's sample: {"user_id": 1, "type": "access_token", …}.
        Profile("simple", {k: {"type": f"{k}_token"} for k in KINDS}, account_claim="user_id", subject=False),
    )
}
STYLE_PROFILES = {"native": "gatehouse", "v1": "gatehouse", "drf": "drf", "phone": "phone", "simple": "simple"}
# Tokens minted before the profiles, by every style: Gatehouse's shape without
# `account_id`. Accepted for a session of any style until they expire (an upgrade logs
# nobody out); nothing mints them any more.
PREVIOUS = "previous"


def profile_of(style: str) -> Profile:
    return PROFILES[STYLE_PROFILES[style]]


def shape_of(claims: dict, kind: str) -> str:
    """The profile whose shape verified `claims` of `kind` have (or `PREVIOUS`);
    `TokenInvalid` for none."""
    for profile in PROFILES.values():
        if profile.fits(claims, kind):
            return profile.name
    if "aud" in claims and "sub" in claims and claims.get("type") == kind and "account_id" not in claims:
        return PREVIOUS
    raise TokenInvalid()


def fits_style(shape: str, style: str) -> bool:
    """Whether a token of `shape` may act for a session of `style`: the style's own
    profile, or a token of the previous version."""
    return shape == STYLE_PROFILES.get(style) or shape == PREVIOUS


REQUIRED = ["exp", "iat", "nbf", "sid", "jti", "typ", "iss"]  # `sub`: by profile
# The header `typ` of each kind (RFC 8725 §3.11 explicit typing): RFC 9068's for access
# tokens, which resource servers may insist on; our own for refresh tokens. The `typ`
# claim, which Gatehouse checks, says the same.
HEADER_TYPES = {"access": "at+jwt", "refresh": "refresh+jwt"}


VERIFIED_CACHE_SIZE = 10_000


class Tokens:
    def __init__(
        self,
        config: JwtSettings,
        secret_key: str,
        db: AsyncDatabase,
        clock: Clock,
        sessions: Sessions,
        events: EventLog,
    ) -> None:
        self.config = config
        self.refresh_tokens = db.refresh_tokens
        self.clock = clock
        self.sessions = sessions
        self.events = events
        self.keys = KeyRing(config, secret_key)
        # access token -> (sid, exp, shape)
        self._verified: OrderedDict[str, tuple[str, int, str]] = OrderedDict()

    def _encode(self, claims: dict) -> str:
        key = self.keys.signing
        headers = {"kid": key.kid, "typ": HEADER_TYPES[claims["typ"]]}
        return jwt.encode(claims, key.signing_key, algorithm=key.alg, headers=headers)

    def audience(self, typ: str) -> str:
        """An access token's `aud` is the configured audience, which resource servers
        check; a refresh token's is Gatehouse's own (`<issuer>/refresh`, as Keycloak
        gives its refresh tokens the issuer), so a resource server checking `aud` with any
        standard library refuses a refresh token presented as an access token."""
        return self.config.jwt_audience if typ == "access" else self.config.refresh_audience

    def decode(self, token: str, typ: str, *, verify_exp: bool = True) -> dict:
        """Claims of a genuine token of this type in one of the profiles' shapes;
        `TokenInvalid` for anything else. Whether the shape is the one of its session's
        style is asked once the session is known (`fits`)."""
        return self.verify(token, typ, verify_exp=verify_exp)[0]

    def verify(self, token: str, typ: str, *, verify_exp: bool = True) -> tuple[dict, str]:
        """`decode`, with the token's shape (a profile's name, or `PREVIOUS`)."""
        if not isinstance(token, str) or token.count(".") != 2 or len(token) > 4096:
            raise TokenInvalid()
        key = self.keys.for_token(token)
        try:
            claims = jwt.decode(
                token,
                key.verifying_key,
                algorithms=[key.alg],
                issuer=self.config.jwt_issuer,
                # Times are checked below against our clock (the database's), not this
                # machine's: a server whose clock is off must not refuse good tokens. The
                # audience is checked below too: only the Gatehouse profile carries one.
                options={
                    "require": REQUIRED,
                    "verify_aud": False,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError:
            raise TokenInvalid() from None
        if claims.get("typ") != typ or not isinstance(claims.get("sid"), str):
            raise TokenInvalid()
        if "aud" in claims and claims["aud"] not in self._audiences(typ):
            raise TokenInvalid()
        shape = shape_of(claims, typ)
        self._check_time(claims, verify_exp=verify_exp)
        return claims, shape

    def _audiences(self, typ: str) -> tuple[str, ...]:
        # Refresh tokens minted before they had an audience of their own carry the access
        # audience: still accepted as refresh tokens (the `typ` claim tells them apart),
        # until they expire.
        if typ == "access":
            return (self.audience(typ),)
        return (self.audience(typ), self.config.jwt_audience)

    def fits(self, claims: dict, typ: str, style: str) -> bool:
        """Whether verified `claims` of `typ` have the shape of `style`'s profile (or are a
        token of the previous version): a token minted for a session of one style never
        passes for a session of another profile's, shaped as that one's would be."""
        try:
            return fits_style(shape_of(claims, typ), style)
        except TokenInvalid:
            return False

    def _check_time(self, claims: dict, *, verify_exp: bool = True) -> None:
        """`nbf` and `iat` not in the future and `exp` not past, by our clock, each with
        GATEHOUSE_JWT_LEEWAY; a genuine token past its `exp` is `TokenInvalid(expired=True)`."""
        now, leeway = self.clock().timestamp(), self.config.jwt_leeway
        try:
            times = {name: float(claims[name]) for name in ("nbf", "iat", "exp")}
        except (TypeError, ValueError):
            raise TokenInvalid() from None
        if times["nbf"] > now + leeway or times["iat"] > now + leeway:
            raise TokenInvalid()
        if verify_exp and times["exp"] < now - leeway:
            raise TokenInvalid(expired=True)

    def access_sid(self, token: str) -> tuple[str, str]:
        """The session id and shape of a genuine, unexpired access token. A token verified
        before is remembered (bounded, per process) with its expiry, so a client sending
        the same token on every request pays for the signature check once; expiry is still
        checked on every use. Whether the session lives, and whether the shape is its
        style's (`fits_style`), is the caller's next question."""
        hit = self._verified.get(token)
        if hit is not None:
            sid, exp, shape = hit
            if self.clock().timestamp() <= exp + self.config.jwt_leeway:
                self._verified.move_to_end(token)
                return sid, shape
            del self._verified[token]
        claims, shape = self.verify(token, "access")
        self._verified[token] = (claims["sid"], claims["exp"], shape)
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return claims["sid"], shape

    def _claims(
        self, account: Account, session: Session, style: str, typ: str, jti: str, *, fresh: bool = False
    ) -> tuple[dict, int]:
        """Gatehouse's own claims and the profile's of `style` (`fresh`: minted at a login)."""
        lifetimes = self.config.lifetime(style)
        lifetime = lifetimes.access if typ == "access" else lifetimes.refresh
        now = self.clock()
        exp = min(now + seconds(lifetime), session.absolute_expires_at)
        ttl = max(1, int((exp - now).total_seconds()))
        iat = int(now.timestamp())
        profile = profile_of(style)
        claims = {
            "iss": self.config.jwt_issuer,
            **({"aud": self.audience(typ)} if profile.audience else {}),
            **({"sub": account.uid} if profile.subject else {}),
            "sid": session.id,
            "jti": jti,
            "typ": typ,
            **profile.claims(typ, account.id, fresh=fresh),
            "iat": iat,
            "nbf": iat,
            "exp": iat + ttl,
        }
        if typ == "access":
            claims["roles"] = list(account.roles)
            # How the session was authenticated (OpenID Connect's names), for resource
            # servers that ask for a second factor or a recent login.
            claims["aal"] = session.aal
            claims["amr"] = list(session.amr)
            claims["auth_time"] = int((session.auth_time or session.created).timestamp())
        return claims, ttl

    def access_token(self, account: Account, session: Session, style: str, *, fresh: bool = False) -> tuple[str, int]:
        """A signed access token; `fresh`: minted at a login, not by a refresh."""
        claims, ttl = self._claims(account, session, style, "access", uuid.uuid4().hex, fresh=fresh)
        return self._encode(claims), ttl

    def _signed_refresh(self, account: Account, session: Session, style: str, jti: str) -> tuple[str, int, dict]:
        """A signed refresh token with id `jti`, its lifetime, and the record it needs."""
        claims, ttl = self._claims(account, session, style, "refresh", jti)
        now = self.clock()
        record = {
            "_id": jti,
            "sid": session.id,
            "account_id": account.id,
            "issued": now,
            "expires_at": now + seconds(ttl + 60),
            "retired_at": None,
            "replaced_by": None,
        }
        return self._encode(claims), ttl, record

    async def _new_refresh(
        self, account: Account, session: Session, style: str, jti: str | None = None
    ) -> tuple[str, int]:
        """A signed refresh token; recorded unless `jti` names an existing record."""
        token, ttl, record = self._signed_refresh(account, session, style, jti or uuid.uuid4().hex)
        if jti is None:
            await insert_once(self.refresh_tokens, record)
        return token, ttl

    async def issue_pair(self, account: Account, session: Session, style: str, *, refresh: bool = True) -> Pair:
        access, access_ttl = self.access_token(account, session, style, fresh=True)
        if not refresh:
            return Pair(access, access_ttl)
        token, refresh_ttl = await self._new_refresh(account, session, style)
        return Pair(access, access_ttl, token, refresh_ttl)

    async def refresh(
        self, token: str, caller_of: Callable[[str], Awaitable[Caller]], ctx: Context, *, rotate: bool = True
    ) -> Pair:
        """Exchange a refresh token. `caller_of(sid)` loads and checks the session and its
        account (one round trip; `TokenInvalid` when either may not act) and records
        activity. Replay of a retired token after the grace period ends the session and
        raises `TokenInvalid`.

        The new tokens keep the lifetimes of the style that created the session, whichever
        style's refresh route the token is presented at, and a route whose rotation rule
        differs from the session's refuses it: a token is never upgraded to a longer life
        or a different rule by being taken to another door. `rotate` is the route's rule.

        A rotation is three commands: the caller, one `update` command that records the
        successor and then retires the presented token (conditionally: of two concurrent
        refreshes one retires it), and the audit event."""
        claims, shape = self.verify(token, "refresh")
        caller = await caller_of(claims["sid"])
        account, session = caller.account, caller.session
        style = session.style
        if rotate != rotates(style) or not fits_style(shape, style):
            raise TokenInvalid()
        if rotate:
            return await self._rotate(claims["jti"], account, session, ctx)
        record = await self.refresh_tokens.find_one({"_id": claims["jti"], "sid": session.id})
        if record is None:
            raise TokenInvalid()
        if record["retired_at"] is not None:
            return await self._replayed(record, account, session, ctx, style, rotate)
        access, ttl = self.access_token(account, session, style)
        await self.events.record("refresh", ctx, account_id=account.id, session_id=session.id)
        return Pair(access, ttl)

    async def _rotate(self, jti: str, account: Account, session: Session, ctx: Context) -> Pair:
        style = session.style
        new_jti = uuid.uuid4().hex
        new_refresh, refresh_ttl, successor = self._signed_refresh(account, session, style, new_jti)
        # Ordered, one command: the successor is written before the presented token is
        # retired, so a retired token always points at a recorded one.
        written = await self.refresh_tokens.bulk_write(
            [
                UpdateOne({"_id": successor.pop("_id")}, {"$setOnInsert": successor}, upsert=True),
                UpdateOne(
                    {"_id": jti, "sid": session.id, "retired_at": None},
                    {"$set": {"retired_at": self.clock(), "replaced_by": new_jti}},
                ),
            ]
        )
        if written.matched_count != 1:  # unknown, or a concurrent refresh retired it first
            await self.refresh_tokens.delete_one({"_id": new_jti})
            record = await self.refresh_tokens.find_one({"_id": jti, "sid": session.id})
            if record is None:
                raise TokenInvalid()
            return await self._replayed(record, account, session, ctx, style, True)
        access, access_ttl = self.access_token(account, session, style)
        await self.events.record("refresh", ctx, account_id=account.id, session_id=session.id)
        return Pair(access, access_ttl, new_refresh, refresh_ttl)

    async def _replayed(
        self, record: dict, account: Account, session: Session, ctx: Context, style: str, rotate: bool
    ) -> Pair:
        age = (self.clock() - record["retired_at"]).total_seconds() if record.get("retired_at") else 0
        if age <= self.config.refresh_reuse_grace:
            current = record
            for _ in range(5):  # follow the chain to the live token
                if not current.get("replaced_by"):
                    break
                current = await self.refresh_tokens.find_one({"_id": current["replaced_by"]}) or current
                if current.get("retired_at") is None:
                    break
            access, access_ttl = self.access_token(account, session, style)
            if not rotate or current.get("retired_at") is not None:
                return Pair(access, access_ttl)
            token, ttl = await self._new_refresh(account, session, style, jti=current["_id"])
            return Pair(access, access_ttl, token, ttl)
        await self.sessions.revoke(session.id, "refresh_reuse", by="gatehouse")
        await self.events.record(
            "refresh_reuse",
            ctx,
            account_id=account.id,
            session_id=session.id,
            outcome="revoked",
            reason="a retired refresh token was replayed",
        )
        raise TokenInvalid()

    async def inspect(self, token: str, load: Callable[[str], Awaitable[Caller | None]]) -> TokenFacts | None:
        """The facts introspection tells about a JWT of ours, or None when it is not an
        active one (forged, expired, of a dead session, a retired refresh token).
        `load(sid)` answers the live caller: the same check every authenticated request
        makes."""
        for typ in KINDS:
            try:
                claims, shape = self.verify(token, typ)
            except TokenInvalid:
                continue
            caller = await load(claims["sid"])
            if caller is None or not fits_style(shape, caller.session.style):
                return None
            if typ == "refresh":
                record = await self.refresh_tokens.find_one({"_id": claims["jti"]})
                if record is None or record["retired_at"] is not None:
                    return None
            return TokenFacts(caller, typ, int(claims["exp"]), int(claims["iat"]), claims)
        return None

    def possessed_sid(self, token: str) -> tuple[str, str] | None:
        """The session and shape of a genuine access or refresh token of ours, expired or
        not, or None. The signature proves the presenter holds a token of that session
        (RFC 7009 revocation: a client logging out with an expired access token); checked
        here, without a database read, so junk costs nothing. Whether the shape is the
        session's style's is the caller's to ask (`fits_style`)."""
        for typ in KINDS:
            try:
                claims, shape = self.verify(token, typ, verify_exp=False)
            except TokenInvalid:
                continue
            return claims["sid"], shape
        return None
