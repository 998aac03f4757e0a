"""Domain exceptions. Models raise these and know nothing of HTTP; each API style's
handler base translates them into its own envelope and status in one place."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a caller may see; `message` is safe to show to a client.
    `details`: what the client needs to go on (an MFA challenge, what a step-up needs),
    added to the error body of every style under its own keys."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message or self.default_message

    default_message = "request failed"
    details: dict | None = None


class InvalidRequest(DomainError):
    """Input that fails validation: a missing field, a wrong type, an operator object."""

    default_message = "invalid request"

    def __init__(self, message: str = "", field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class WeakPassword(InvalidRequest):
    default_message = "password does not meet the policy"


class InvalidCredentials(DomainError):
    """Login failed. Deliberately one error for unknown user, wrong password and disabled
    account, so the answer does not tell them apart."""

    default_message = "invalid username or password"


class NotAuthenticated(DomainError):
    default_message = "not logged in: send a valid token in the Authorization header"


class TokenExpired(NotAuthenticated):
    """A token we issued whose time is up, or whose session's is (idle or absolute
    timeout; not a kick): the client should refresh, or log in again."""

    default_message = "the token has expired: refresh it, or log in again"


class Forbidden(DomainError):
    default_message = "not allowed"


class ReauthenticationRequired(Forbidden):
    """A sensitive action asked of a session that authenticated too long ago, or at aal1
    for an account with a second factor. `needs`: what would do (`details["reauthenticate"]`)."""

    default_message = "this needs a recent login: send your current password as 'password', or log in again"

    def __init__(self, message: str = "", needs: dict | None = None) -> None:
        super().__init__(message)
        if needs is not None:
            self.details = {"reauthenticate": needs}


class MfaRequired(Forbidden):
    """The first factor was right, and the account has a second one: no session yet.
    `challenge` is the view the client continues with (`details["mfa"]`)."""

    default_message = "this account has a second factor: send the challenge and a code to POST /auth/mfa/verify"

    def __init__(self, challenge: dict) -> None:
        super().__init__()
        self.details = {"mfa": challenge}


class MfaEnrolmentRequired(Forbidden):
    """The first factor was right, and GATEHOUSE_MFA requires a second one this account
    has not added: no session but an enrolment-only one (`details["mfa_enrolment"]`)."""

    default_message = (
        "this account must add a second factor first: POST /auth/mfa/totp with the enrolment token, then log in again"
    )

    def __init__(self, enrolment: dict) -> None:
        super().__init__()
        self.details = {"mfa_enrolment": enrolment}


class ChallengeInvalid(DomainError):
    """An MFA challenge that is unknown, used, expired or out of attempts."""

    default_message = "the MFA challenge is unknown, used, expired or out of attempts: log in again"


class NotFound(DomainError):
    default_message = "not found"


class AccountExists(DomainError):
    default_message = "an account with these details already exists"

    def __init__(self, message: str = "", field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class AccountNotFound(NotFound):
    default_message = "account not found"


class RateLimited(DomainError):
    default_message = "too many requests"

    def __init__(self, message: str = "", retry_after: int = 60, reason: str = "") -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))
        self.reason = reason


class CodeInvalid(DomainError):
    """A one-time code that is wrong, spent, expired or never sent."""

    default_message = "the code is wrong or has expired"


class NoPendingCode(CodeInvalid):
    """No live code to check. Answered exactly like a wrong code (the same message), so
    a caller cannot tell "never requested" or "no such account" from "wrong"; only a
    document that prescribes otherwise (001's "login first") says it apart."""


class TokenInvalid(DomainError):
    default_message = "token is invalid or has expired"

    def __init__(self, message: str = "", *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired  # genuine, but past its `exp`


class DeliveryFailed(DomainError):
    default_message = "the message could not be delivered; try again later"


class Unavailable(DomainError):
    default_message = "service temporarily unavailable; try again shortly"


class Overloaded(Unavailable):
    """More requests in flight than the process takes on: refused at once, before any
    work, so a slow database does not pile requests up in memory."""

    default_message = "the server is busy; try again shortly"

    def __init__(self, message: str = "", retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class DeadlineExceeded(Unavailable):
    """The request's time budget ran out, whatever it was waiting on."""

    default_message = "the request took too long; try again shortly"


class AdminQueryTimeout(Unavailable):
    """An administrator's read (a console page, an admin API list) gave up at its own
    time limit, or found no free slot within it: the page says so, and authentication,
    which never waits on administrator work, is unaffected."""

    default_message = "this list took too long and was stopped; narrow the filter (an account, a kind) and try again"
