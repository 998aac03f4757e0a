"""Async clients for Gatehouse's native API (`GatehouseClient`) and admin API
(`AdminClient`), with typed answers (frozen dataclasses) and one error type,
`GatehouseError(status, code, message)`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

import httpx

from .errors import GatehouseError


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str | None
    token_type: str
    expires_in: int
    refresh_expires_in: int | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TokenPair:
        return cls(
            d["access_token"], d.get("refresh_token"), d["token_type"], d["expires_in"], d.get("refresh_expires_in")
        )


@dataclass(frozen=True)
class Account:
    id: int
    username: str | None
    email: str | None
    phone: str | None
    nickname: str | None


@dataclass(frozen=True)
class Me:
    account: Account
    session_id: str
    last_active: int
    created: int


@dataclass(frozen=True)
class SessionInfo:
    id: str
    kind: str
    style: str
    created: int
    last_active: int | None
    expires: int | None
    ip: str | None
    user_agent: str | None
    revoked: bool
    current: bool | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SessionInfo:
        return cls(
            d["id"],
            d["kind"],
            d["style"],
            d["created"],
            d.get("lastActive"),
            d.get("expires"),
            d.get("ip"),
            d.get("userAgent"),
            d["revoked"],
            d.get("current"),
        )


@dataclass(frozen=True)
class AdminSession:
    session: SessionInfo
    account_id: int
    account_uid: str | None
    account_username: str | None
    revoked_reason: str | None
    revoked_by: str | None

    @property
    def id(self) -> str:
        return self.session.id

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AdminSession:
        owner = d["account"]
        return cls(
            SessionInfo.from_json(d),
            owner["id"],
            owner.get("uid"),
            owner.get("username"),
            d.get("revokedReason"),
            d.get("revokedBy"),
        )


@dataclass(frozen=True)
class SessionPage:
    sessions: tuple[AdminSession, ...]
    next: str | None


class _Api:
    def __init__(self, base_url: str, *, timeout: float = 10, transport: httpx.AsyncBaseTransport | None = None):
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, *, token: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = await self._http.request(method, path, headers=headers, **kw)
        except httpx.HTTPError as e:
            raise GatehouseError(0, "TRANSPORT", f"{type(e).__name__}: {e}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400 or not isinstance(body, dict):
            raise self._error(response.status_code, body if isinstance(body, dict) else {})
        return self._data(body)

    def _error(self, status: int, body: dict[str, Any]) -> GatehouseError:
        raise NotImplementedError

    def _data(self, body: dict[str, Any]) -> Any:
        return body


class GatehouseClient(_Api):
    """The native API as a user's client (an app's own back end, a script, a test) uses
    it. It keeps the pair from `login`/`refresh` in `tokens`; each call also takes a
    token explicitly.

        async with GatehouseClient("https://auth.example.com") as gh:
            await gh.login("ada", "correct-horse-42")
            me = await gh.me()
    """

    def __init__(self, base_url: str, **kw: Any) -> None:
        super().__init__(base_url, **kw)
        self.tokens: TokenPair | None = None

    def _error(self, status: int, body: dict[str, Any]) -> GatehouseError:
        return GatehouseError(status, str(body.get("code") or f"HTTP_{status}"), str(body.get("message", "")))

    def _data(self, body: dict[str, Any]) -> Any:
        return body.get("data")

    def _access(self, token: str | None) -> str:
        token = token or (self.tokens.access_token if self.tokens else None)
        if not token:
            raise GatehouseError(0, "NOT_AUTHENTICATED", "log in first, or pass a token")
        return token

    async def login(self, username: str, password: str) -> TokenPair:
        """`POST /auth/token`: a JWT pair for a username, e-mail or phone."""
        data = await self._call("POST", "/auth/token", json={"username": username, "password": password})
        self.tokens = TokenPair.from_json(data)
        return self.tokens

    async def refresh(self, refresh_token: str | None = None) -> TokenPair:
        """`POST /auth/token/refresh`: a new pair (the old refresh token is retired)."""
        token = refresh_token or (self.tokens.refresh_token if self.tokens else None)
        if not token:
            raise GatehouseError(0, "NOT_AUTHENTICATED", "no refresh token: log in first")
        self.tokens = TokenPair.from_json(
            await self._call("POST", "/auth/token/refresh", json={"refresh_token": token})
        )
        return self.tokens

    async def logout(self, access_token: str | None = None) -> None:
        """`POST /auth/logout`: the session ends (every token of it)."""
        await self._call("POST", "/auth/logout", token=self._access(access_token))
        if access_token is None or (self.tokens and self.tokens.access_token == access_token):
            self.tokens = None

    async def me(self, access_token: str | None = None) -> Me:
        d = await self._call("GET", "/auth/me", token=self._access(access_token))
        a = d["account"]
        account = Account(a["id"], a.get("username"), a.get("email"), a.get("phone"), a.get("nickname"))
        return Me(account, d["session"], d["lastActive"], d["created"])

    async def sessions(self, access_token: str | None = None) -> tuple[SessionInfo, ...]:
        """`GET /auth/sessions`: this account's live sessions (`current` marks this one)."""
        d = await self._call("GET", "/auth/sessions", token=self._access(access_token))
        return tuple(SessionInfo.from_json(s) for s in d["sessions"])

    async def revoke_session(self, session_id: str, access_token: str | None = None) -> None:
        """`DELETE /auth/sessions/<id>`: end one of this account's sessions."""
        await self._call("DELETE", f"/auth/sessions/{session_id}", token=self._access(access_token))


class AdminClient(_Api):
    """The admin API (`/admin/api/…`) with a service key (GATEHOUSE_SERVICE_KEYS) or an
    administrator's token."""

    def __init__(self, base_url: str, service_key: str, **kw: Any) -> None:
        super().__init__(base_url, **kw)
        self._key = service_key

    def _error(self, status: int, body: dict[str, Any]) -> GatehouseError:
        return GatehouseError(status, str(body.get("error") or f"HTTP_{status}"), str(body.get("message", "")))

    async def sessions(
        self,
        *,
        account: int | str | None = None,
        kind: str | None = None,
        active: bool | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> SessionPage:
        """Sessions across accounts, newest activity first; `account` takes an id, uid,
        username, e-mail or phone; `next` is the cursor of the next page."""
        params = {"account": account, "kind": kind, "limit": limit, "cursor": cursor}
        query = {k: str(v) for k, v in params.items() if v is not None}
        if active is not None:
            query["active"] = "true" if active else "false"
        d = await self._call("GET", "/admin/api/sessions", token=self._key, params=query)
        return SessionPage(tuple(AdminSession.from_json(s) for s in d["sessions"]), d.get("next"))

    async def kick(self, session_id: str) -> str:
        """End one session: its tokens are refused from now on (by offline verifiers,
        once the revocation feed carries it)."""
        return (await self._call("DELETE", f"/admin/api/sessions/{session_id}", token=self._key))["kicked"]

    async def kick_account(self, account_id: int) -> int:
        """End every session of the account; the number ended."""
        return (await self._call("POST", f"/admin/api/accounts/{account_id}/kick", token=self._key))["kicked"]

    async def disable(self, account_id: int) -> int:
        """Disable the account (every session ends); the number ended."""
        return (await self._call("POST", f"/admin/api/accounts/{account_id}/disable", token=self._key))["sessionsEnded"]

    async def enable(self, account_id: int) -> None:
        await self._call("POST", f"/admin/api/accounts/{account_id}/enable", token=self._key)
