"""What every framework adapter shares: reading the token from `Authorization` and the
answer to a token that is not good (RFC 6750 section 3)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import InvalidToken

REALM = "gatehouse"
DESCRIPTIONS = {
    "invalid": "The access token is not valid",
    "expired": "The access token expired",
    "revoked": "The access token's session has ended",
}


def token_from_header(authorization: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>` (the scheme in any case). A bare
    token with no scheme is taken too, as Gatehouse's native clients send it."""
    if not authorization:
        return None
    parts = authorization.strip().split()
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1]
    if len(parts) == 1:
        return parts[0]
    return None


@dataclass(frozen=True)
class Refusal:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, str] = field(default_factory=dict)


def refusal(error: InvalidToken) -> Refusal:
    """No token: 401 with the bare challenge. A token that is not good: 401 with
    `error="invalid_token"`. Gatehouse unreachable: 503 with `Retry-After` (not a 401,
    which would make clients throw their users' tokens away during an outage)."""
    if error.reason == "missing":
        return Refusal(
            401,
            {"WWW-Authenticate": f'Bearer realm="{REALM}"'},
            {"error": "unauthorized", "error_description": "send an access token: Authorization: Bearer <token>"},
        )
    if error.reason == "unavailable":
        return Refusal(
            503,
            {"Retry-After": "1"},
            {"error": "temporarily_unavailable", "error_description": "the token cannot be checked right now"},
        )
    description = DESCRIPTIONS[error.reason]
    challenge = f'Bearer realm="{REALM}", error="invalid_token", error_description="{description}"'
    return Refusal(401, {"WWW-Authenticate": challenge}, {"error": "invalid_token", "error_description": description})
