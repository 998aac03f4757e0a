"""The SDK's two exception types: one for every token that is not good, one for every
call to Gatehouse that fails."""

from __future__ import annotations

REASONS = ("missing", "invalid", "expired", "revoked", "unavailable")


class InvalidToken(Exception):  # noqa: N818 - the name apps catch, as PyJWT's InvalidTokenError
    """The token may not act. `reason` is one of:

    - ``missing``: no token was sent;
    - ``invalid``: malformed, forged, the wrong kind (a refresh token), wrong `iss`/`aud`,
      an unknown key, or an opaque token Gatehouse calls inactive;
    - ``expired``: a genuine token past its `exp` (refresh it);
    - ``revoked``: a genuine, unexpired token whose session ended (kick, logout, password
      change) or whose account was disabled, learnt from the revocation feed;
    - ``unavailable``: Gatehouse could not be asked (keys or introspection unreachable):
      adapters answer 503, not 401, so clients do not log their users out for an outage.
    """

    def __init__(self, reason: str, description: str = "") -> None:
        assert reason in REASONS, reason
        self.reason = reason
        self.description = description or reason
        super().__init__(f"{reason}: {self.description}" if description else reason)


class GatehouseError(Exception):
    """A call to Gatehouse's API failed: `status` is the HTTP status (0 when Gatehouse was
    not reached), `code` the server's stable error code (`INVALID_CREDENTIALS`,
    `NOT_AUTHENTICATED`, `NOT_FOUND`, …; `TRANSPORT` when unreached), `message` its text."""

    def __init__(self, status: int, code: str, message: str = "") -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"{status} {code}: {message}" if message else f"{status} {code}")
