"""Document 002: username/password + JWT (`/auth/`, `/auth/create`, `/auth/disable`,
`/auth/reset`). Access tokens only (the document has no refresh). Errors, where the
document is silent: `{"error": "<code>", "message": "…"}` with a fitting status.

`POST /auth/reset` is also document 003's; a body with `new_password` is this one
(`SharedResetHandler`, routed in place of both when both styles are enabled).
"""

from __future__ import annotations

from typing import Any

from models.validation import parse_fields

from .base import APIHandler, allow_anonymous
from .fields import EMAIL, LOGIN_NAME, NEW_PASSWORD, PASSWORD, optional, required
from .native import ResetHandler as NativeResetHandler
from .spec import INT, STR, Route, Schema, doc, obj

CREDENTIALS = {"username": LOGIN_NAME, "password": PASSWORD}
CREATE_FIELDS = {**CREDENTIALS, "email": required(EMAIL)}
RESET_FIELDS = {**CREDENTIALS, "new_password": NEW_PASSWORD}
EMPTY = obj({})


def simple_error(code: str, message: str) -> dict:
    return {"error": code.lower(), "message": message}


class SimpleHandler(APIHandler):
    style = "simple"

    @classmethod
    def error_schema(cls) -> Schema:
        return obj({"error": STR, "message": STR})

    def error_envelope(self, status: int, code: str, message: str, exc: BaseException | None) -> Any:
        return simple_error(code, message)


class LoginHandler(SimpleHandler):
    @allow_anonymous
    @doc("Log in for an access token", body=CREDENTIALS, ok=obj({"access_token": STR}), errors=(401, 403, 429))
    async def post(self) -> None:
        f = self.fields(CREDENTIALS)
        login = await self.auth.login_jwt(f["username"], f["password"], self.context(), refresh=False)
        self.reply({"access_token": login.pair.access})


class CreateHandler(SimpleHandler):
    @allow_anonymous
    @doc("Create an account", body=CREATE_FIELDS, ok=obj({"id": INT}), errors=(409, 429))
    async def post(self) -> None:
        f = self.fields(CREATE_FIELDS)
        account = await self.auth.register(
            self.context(), username=f["username"], password=f["password"], email=f["email"]
        )
        self.reply({"id": account.id})


class DisableHandler(SimpleHandler):
    """Needs the Bearer token and the password of the same account; disables it and
    ends every session."""

    @doc("Disable this account (token and password); its sessions end", body=CREDENTIALS, ok=EMPTY, errors=(403, 429))
    async def post(self) -> None:
        f = self.fields(CREDENTIALS)
        await self.auth.disable_own_account(self.caller, f["username"], f["password"], self.context())
        self.reply({})


async def change_password(handler: APIHandler, body: dict) -> None:
    """002's reset: the current password (under the login limits), then the new one;
    the other sessions end (every session when the request carries no token of that
    account)."""
    f = parse_fields(body, RESET_FIELDS)
    caller = await handler.optional_caller(strict=False)  # a stale token just keeps nothing
    await handler.auth.change_password_at_login(
        f["username"], f["password"], f["new_password"], handler.context(), caller=caller
    )
    handler.reply({})


class ResetHandler(SimpleHandler):
    @allow_anonymous
    @doc(
        "Change the password (current one required); other sessions end", body=RESET_FIELDS, ok=EMPTY, errors=(401, 429)
    )
    async def post(self) -> None:
        await change_password(self, self.json_body())


class SharedResetHandler(NativeResetHandler):
    """Both 002 and 003 define POST /auth/reset: `new_password` selects 002's operation
    and its envelope; anything else is 003's. The body decides once, in `prepare`,
    before any work: style, envelope and the context the request acts in are fixed
    from then on. (An answer before the body is read, a 413 say, is 003's.)"""

    simple = False

    async def prepare(self) -> None:
        await super().prepare()
        if self._finished:  # a CORS preflight, answered before any authentication
            return
        if "new_password" in self.json_body():
            self.simple, self.style = True, SimpleHandler.style

    @classmethod
    def ok_schema(cls, data: Schema) -> Schema:
        return {"anyOf": [EMPTY, NativeResetHandler.ok_schema(data)]}

    @classmethod
    def error_schema(cls) -> Schema:
        return {"anyOf": [SimpleHandler.error_schema(), NativeResetHandler.error_schema()]}

    def envelope(self, data: Any) -> Any:
        return data if self.simple else super().envelope(data)

    def error_envelope(self, status: int, code: str, message: str, exc: BaseException | None) -> Any:
        if self.simple:
            return simple_error(code, message)
        return super().error_envelope(status, code, message, exc)

    def error_status(self, status: int, code: str, exc: BaseException | None) -> int:
        if self is not None and self.simple:  # (/openapi.json asks the class: self is None)
            return status
        return NativeResetHandler.error_status(self, status, code, exc)

    @allow_anonymous
    @doc(
        "Document 003's reset (send a code / reset with it), or document 002's when the body has `new_password`",
        body={**NativeResetHandler.FIELDS, "new_password": optional(NEW_PASSWORD)},
        ok={"enum": ["Email Sent", "Success"]},
        errors=(401, 429),
    )
    async def post(self) -> None:
        if self.simple:
            await change_password(self, self.json_body())
        else:
            await super().post()


def routes() -> list[Route]:
    return [
        Route("/auth/", LoginHandler),
        Route("/auth/create", CreateHandler),
        Route("/auth/disable", DisableHandler),
        Route("/auth/reset", ResetHandler),
    ]


def shared_routes() -> list[Route]:
    """The routes document 002 shares with document 003 (native): served in place of
    both styles' own when both are enabled."""
    return [Route("/auth/reset", SharedResetHandler)]
