"""Checking Gatehouse tokens in an app's back end.

One verification procedure serves sync callers (Flask, Django) and async ones (Tornado,
FastAPI) without being written twice: `_steps` is a generator that does all the
deciding and *yields* the HTTP requests it needs (the JWKS, an introspection), and two
small drivers send them — `verify` with httpx's sync client, `averify` with its async
one — and feed the answers back ("sans-I/O", as h11 and httpcore are built). Most calls
need no request at all: keys are cached and opaque-token answers are remembered briefly.

What is checked, for a JWT (RFC 9068, RFC 8725):
- the key comes from the `kid` alone: a JWKS key (fetched from Gatehouse and cached;
  refetched when it is older than `jwks_max_age` or on an unknown `kid`, at most once
  per `jwks_cooldown`), or the shared HS256 `secret`. Each key verifies only its own
  algorithm (the JWK's `alg`; HS256 for the secret): the token's `alg` header never
  picks one, so `alg: none` and HMAC-with-a-public-key forgeries fail;
- the header `typ` is `at+jwt`, and no `typ`/`type`/`token_type` claim says `refresh`;
- `iss` equals `issuer`; `aud` equals `audience` (`audience=None`: the token must carry no
  `aud`, as Gatehouse's legacy profiles do); `exp`, `nbf`, `iat` with `leeway`;
  `sub` and `sid` are present;
- the session is not in the revocation set (`revocations`), nor its account disabled.
An opaque token (no dots) is asked about at `POST /oauth/introspect` (RFC 7662) with
the service key, and the answer is kept `introspection_ttl` seconds (bounded).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Generator
from typing import Any
from urllib.parse import quote_plus

import httpx
import jwt
from jwt import PyJWK

from .errors import InvalidToken
from .principal import Principal
from .revocations import RevocationSet

log = logging.getLogger("gatehouse_client")

Steps = Generator[httpx.Request | float, httpx.Response | None, Principal]
ACCESS_TYPES = ("access", "access_token")  # the `typ`/`type`/`token_type` of every profile's access token
AT_JWT = ("at+jwt", "application/at+jwt")
MAX_TOKEN_LENGTH = 8192


FETCH, WAIT, SKIP = "fetch", "wait", "skip"
# Yielded instead of a request: the driver pauses this long, then resumes the steps.
PAUSE = 0.005


class _Unreachable(Exception):
    """Thrown into the steps by a driver whose request got no answer."""


class Verifier:
    """Verifies Gatehouse access tokens; see the module's docstring for what it checks.

    `base_url`: where Gatehouse answers (the JWKS and introspection live there); may be
    None with a `secret` (HS256 only, nothing fetched). `service_key`: one of
    GATEHOUSE_SERVICE_KEYS, needed for opaque tokens. `revocations`: the set a
    `RevocationWatcher` fills. `fail_closed_after`: refuse every token (reason
    `unavailable`) while the watcher has had no good answer for that many seconds
    (None: keep verifying on signatures alone during a feed outage).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        issuer: str = "gatehouse",
        audience: str | None = "gatehouse",
        leeway: float = 30,
        secret: str | bytes | None = None,
        service_key: str | None = None,
        revocations: RevocationSet | None = None,
        fail_closed_after: float | None = None,
        jwks_cooldown: float = 30,
        jwks_max_age: float = 300,
        introspection_ttl: float = 5,
        introspection_cache_size: int = 10_000,
        timeout: float = 5,
        client_id: str = "gatehouse-client",
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if base_url is None and secret is None:
            raise ValueError("give Gatehouse's base_url (JWKS, introspection) or a shared HS256 secret, or both")
        self.base_url = base_url.rstrip("/") if base_url else None
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.secret = secret.encode() if isinstance(secret, str) else secret
        self.service_key = service_key
        self.revocations = revocations
        self.fail_closed_after = fail_closed_after
        self.jwks_cooldown = jwks_cooldown
        self.jwks_max_age = jwks_max_age
        self.introspection_ttl = introspection_ttl
        self.introspection_cache_size = introspection_cache_size
        self.timeout = httpx.Timeout(timeout)
        self.client_id = client_id
        self._transport = transport
        self._async_transport = async_transport
        self._lock = threading.Lock()
        self._keys: dict[str, PyJWK] = {}
        self._keys_at: float | None = None  # when the JWKS was last read
        self._settled_at: float | None = None  # when the last read ended, well or not
        self._reading = False  # a read is under way
        self.jwks_fetches = 0
        self._introspected: OrderedDict[bytes, tuple[float, Principal | None]] = OrderedDict()
        # RFC 6749 2.3.1's client_secret_basic: each part form-encoded, then Base64.
        basic = f"{quote_plus(client_id)}:{quote_plus(service_key or '')}".encode()
        self._basic = "Basic " + base64.b64encode(basic).decode()
        self._sync_client: httpx.Client | None = None
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    # ---- the two drivers ---------------------------------------------------------------

    def verify(self, token: str | None) -> Principal:
        """The token's Principal, or `InvalidToken`. Blocking (it may fetch keys or
        introspect): for sync frameworks; async code calls `averify`."""
        steps = self._steps(token)
        try:
            request = next(steps)
            while True:
                if isinstance(request, float):
                    time.sleep(request)
                    request = steps.send(None)
                    continue
                try:
                    response = self._sync_http().send(request)
                except httpx.HTTPError as e:
                    request = steps.throw(_Unreachable(f"{type(e).__name__}: {e}"))
                else:
                    request = steps.send(response)
        except StopIteration as done:
            return done.value

    async def averify(self, token: str | None) -> Principal:
        """`verify` for async code: the same checks, its requests sent without blocking."""
        steps = self._steps(token)
        try:
            request = next(steps)
            while True:
                if isinstance(request, float):
                    await asyncio.sleep(request)
                    request = steps.send(None)
                    continue
                try:
                    response = await self._async_http().send(request)
                except httpx.HTTPError as e:
                    request = steps.throw(_Unreachable(f"{type(e).__name__}: {e}"))
                else:
                    request = steps.send(response)
        except StopIteration as done:
            return done.value

    def prefetch(self) -> None:
        """Read the JWKS now (at start-up), so the first request does not wait for it."""
        if self.base_url:
            self._store_jwks(self._sync_http().send(self._jwks_request()))

    async def aprefetch(self) -> None:
        if self.base_url:
            self._store_jwks(await self._async_http().send(self._jwks_request()))

    def close(self) -> None:
        if self._sync_client is not None:
            self._sync_client.close()
            self._sync_client = None

    async def aclose(self) -> None:
        self.close()
        try:
            client = self._async_clients.pop(asyncio.get_running_loop(), None)
        except RuntimeError:
            client = None
        if client is not None:
            await client.aclose()

    def _sync_http(self) -> httpx.Client:
        if self._sync_client is None:
            self._sync_client = httpx.Client(timeout=self.timeout, transport=self._transport)
        return self._sync_client

    def _async_http(self) -> httpx.AsyncClient:
        # An async client's connections belong to the loop that opened them: one per loop.
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = httpx.AsyncClient(timeout=self.timeout, transport=self._async_transport)
            self._async_clients[loop] = client
        return client

    # ---- the deciding ------------------------------------------------------------------

    def _steps(self, token: str | None) -> Steps:
        if not token:
            raise InvalidToken("missing", "no access token was sent")
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("invalid", "not a token")
        if token.count(".") == 2:
            principal = yield from self._jwt_steps(token)
        elif "." not in token:
            principal = yield from self._introspection_steps(token)
        else:
            raise InvalidToken("invalid", "not a token")
        self._check_revoked(principal)
        return principal

    def _jwt_steps(self, token: str) -> Steps:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("invalid", "malformed token") from None
        if str(header.get("typ", "")).lower() not in AT_JWT:
            raise InvalidToken("invalid", "not an access token (header typ must be at+jwt)")
        kid = header.get("kid")
        kid = kid if isinstance(kid, str) else None
        waited_since = time.monotonic()
        while (decision := self._should_fetch(kid, header.get("alg"))) == WAIT:
            if time.monotonic() - waited_since > self.timeout.read + 1:  # type: ignore[operator]
                break
            yield PAUSE  # another caller's read is under way: its answer may hold this kid
        if decision == FETCH:
            try:
                response = yield self._jwks_request()
                self._store_jwks(response)
            except (_Unreachable, ValueError) as e:
                log.warning("gatehouse: could not read the JWKS: %s", e)
            finally:
                with self._lock:
                    self._reading = False
                    self._settled_at = time.monotonic()
        key = self._key_for(kid, header.get("alg"))
        if key is None:
            if self._keys_at is None and self.base_url and self.secret is None:
                raise InvalidToken("unavailable", "Gatehouse's keys could not be read")
            raise InvalidToken("invalid", "signed by a key Gatehouse does not publish")
        verifying_key, alg = key
        try:
            claims = jwt.decode(
                token,
                verifying_key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "sid", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("expired", "the access token expired") from None
        except jwt.PyJWTError as e:
            raise InvalidToken("invalid", str(e)) from None
        for name in ("typ", "type", "token_type"):
            if name in claims and claims[name] not in ACCESS_TYPES:
                raise InvalidToken("invalid", "not an access token")
        principal = Principal.from_claims(claims)
        if not isinstance(claims["sid"], str) or (principal.uid is None and principal.account_id is None):
            raise InvalidToken("invalid", "no session, or no account (sub, account_id or user_id)")
        return principal

    def _should_fetch(self, kid: str | None, alg: Any) -> str:
        """Whether this verification reads the JWKS first (FETCH): never read yet, older
        than `jwks_max_age`, or the `kid` is unknown — but at most once per
        `jwks_cooldown` after the last read (once a second while none has succeeded), so
        a stream of tokens with made-up `kid`s costs Gatehouse one request per cooldown,
        not one per token. One read at a time: a caller whose `kid` is unknown while
        another's read is under way waits for it (WAIT) rather than fail or read again,
        so a cold start or a key rotation under load costs one request, not a 401 each."""
        if not self.base_url:
            return SKIP
        if self.secret is not None and alg == "HS256" and kid not in self._keys:
            return SKIP  # the shared secret's token: no JWKS key can be its
        now = time.monotonic()
        with self._lock:
            known = kid in self._keys
            if known and self._keys_at is not None and now - self._keys_at < self.jwks_max_age:
                return SKIP
            if self._reading:
                return SKIP if known else WAIT  # stale keys serve until the read is done
            cooldown = self.jwks_cooldown if self._keys_at is not None else 1.0
            if self._settled_at is not None and now - self._settled_at < cooldown:
                return SKIP
            self._reading = True
            return FETCH

    def _jwks_request(self) -> httpx.Request:
        return httpx.Request(
            "GET",
            f"{self.base_url}/.well-known/jwks.json",
            headers={"Accept": "application/json"},
            extensions={"timeout": self.timeout.as_dict()},
        )

    def _store_jwks(self, response: httpx.Response) -> None:
        if response.status_code != 200:
            raise ValueError(f"{response.url} answered {response.status_code}")
        keys: dict[str, PyJWK] = {}
        for jwk in _json_object(response).get("keys", []):
            if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
                continue
            if jwk.get("use", "sig") != "sig" or jwk.get("kty") == "oct":
                continue  # encryption keys; a published secret is no key to trust
            try:
                keys[jwk["kid"]] = PyJWK(jwk)  # pinned: the JWK's `alg`, else its kty/crv's one algorithm
            except jwt.PyJWTError as e:
                log.warning("gatehouse: JWKS key %r skipped: %s", jwk.get("kid"), e)
        with self._lock:
            self._keys = keys
            self._keys_at = time.monotonic()
            self._settled_at = self._keys_at  # a read, prefetch included, starts the cooldown
            self.jwks_fetches += 1

    def _key_for(self, kid: str | None, alg: Any) -> tuple[Any, str] | None:
        jwk = self._keys.get(kid) if kid is not None else None
        if jwk is not None:
            return jwk.key, jwk.algorithm_name
        if self.secret is not None and alg == "HS256":
            return self.secret, "HS256"
        return None

    def _introspection_steps(self, token: str) -> Steps:
        if not (self.base_url and self.service_key):
            raise InvalidToken("invalid", "opaque tokens need Gatehouse's base_url and a service key")
        digest = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        with self._lock:
            hit = self._introspected.get(digest)
        if hit is not None and hit[0] > now:
            if hit[1] is None:
                raise InvalidToken("invalid", "Gatehouse says the token is not active")
            return hit[1]
        try:
            response = yield httpx.Request(
                "POST",
                f"{self.base_url}/oauth/introspect",
                data={"token": token},
                headers={"Accept": "application/json", "Authorization": self._basic},
                extensions={"timeout": self.timeout.as_dict()},
            )
        except _Unreachable as e:
            raise InvalidToken("unavailable", f"Gatehouse could not be asked: {e}") from None
        if response.status_code != 200:
            if response.status_code == 401:
                log.error("gatehouse: /oauth/introspect refused the service key")
            raise InvalidToken("unavailable", f"introspection answered {response.status_code}")
        try:
            answer = _json_object(response)
        except ValueError as e:
            raise InvalidToken("unavailable", f"introspection answered no JSON object: {e}") from None
        principal: Principal | None = None
        if answer.get("active") is True and answer.get("token_use", "access_token") == "access_token":
            if isinstance(answer.get("sid"), str) and answer.get("sub") is not None:
                principal = Principal.from_claims(answer)
        ttl = self.introspection_ttl
        if principal is not None and isinstance(answer.get("exp"), int | float):
            ttl = min(ttl, answer["exp"] - time.time())
        with self._lock:
            self._introspected[digest] = (now + ttl, principal)
            self._introspected.move_to_end(digest)
            while len(self._introspected) > self.introspection_cache_size:
                self._introspected.popitem(last=False)
        if principal is None:
            reason = "not an access token" if answer.get("active") is True else "Gatehouse says the token is not active"
            raise InvalidToken("invalid", reason)
        return principal

    def _check_revoked(self, principal: Principal) -> None:
        revocations = self.revocations
        if revocations is None:
            return
        if self.fail_closed_after is not None:
            last = revocations.last_ok
            if last is None or revocations.clock() - last > self.fail_closed_after:
                raise InvalidToken("unavailable", "the revocation feed is not being followed")
        if revocations.is_revoked(principal.session_id, principal.account_id, principal.uid):
            raise InvalidToken("revoked", "the session ended or the account is disabled")


def _json_object(response: httpx.Response) -> dict:
    """The answer's JSON object; ValueError for anything else (an HTML error page from a
    proxy, a list), which the callers treat as Gatehouse being unreachable, not a 500."""
    answer = response.json()  # JSONDecodeError is a ValueError
    if not isinstance(answer, dict):
        raise ValueError(f"{response.url} answered {type(answer).__name__}, not a JSON object")
    return answer
