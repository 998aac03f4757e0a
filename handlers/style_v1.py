"""Document 004: `/api/v1` with the `{"code": 0, "result": …, "redirect": …}` model.

Errors carry a non-zero `code` (the HTTP status × 100 + a detail), `error` and `desc`,
at the top level and inside `result` as the document's result model shows. Refresh
takes the refresh token in the body and, optionally, the (possibly expired) access token
of the same session in `Authorization`.
"""

from __future__ import annotations

from typing import Any

from models.values import Pair

from .base import APIHandler, allow_anonymous
from .fields import LOGIN_NAME, PASSWORD, TOKEN
from .spec import INT, STR, Route, Schema, const, doc, obj

ERROR_NUMBERS = {
    "INVALID_REQUEST": 40001,
    "INVALID_CREDENTIALS": 40101,
    "INVALID_TOKEN": 40102,
    "NOT_AUTHENTICATED": 40103,
    "TOKEN_EXPIRED": 40104,
    "FORBIDDEN": 40301,
    "NOT_FOUND": 40401,
    "METHOD_NOT_ALLOWED": 40501,
    "PAYLOAD_TOO_LARGE": 41301,
    "UNSUPPORTED_MEDIA_TYPE": 41501,
    "RATE_LIMITED": 42901,
    "UNAVAILABLE": 50301,
}


class V1Handler(APIHandler):
    style = "v1"

    def envelope(self, data: Any) -> Any:
        return {"code": 0, "result": data, "redirect": ""}

    @classmethod
    def ok_schema(cls, data: Schema) -> Schema:
        return obj({"code": const(0), "result": data, "redirect": STR})

    @classmethod
    def error_schema(cls) -> Schema:
        detail = obj({"code": INT, "error": STR, "desc": STR})
        return obj({**detail["properties"], "result": detail, "redirect": STR})

    def error_envelope(self, status: int, code: str, message: str, exc: BaseException | None) -> Any:
        number = ERROR_NUMBERS.get(code, status * 100)
        detail = {"code": number, "error": code.lower(), "desc": message}
        return {**detail, "result": detail, "redirect": ""}


TOKENS = {
    "token_type": const("Bearer"),
    "access_token": STR,
    "access_token_expires_in": INT,
    "refresh_token": STR,
    "refresh_token_expires_in": INT,
}


def tokens_result(pair: Pair) -> dict:
    return {
        "token_type": "Bearer",
        "access_token": pair.access,
        "access_token_expires_in": pair.access_expires_in,
        "refresh_token": pair.refresh,
        "refresh_token_expires_in": pair.refresh_expires_in,
    }


class LoginHandler(V1Handler):
    FIELDS = {"user": LOGIN_NAME, "password": PASSWORD}

    @allow_anonymous
    @doc("Log in for a JWT pair", body=FIELDS, ok=obj(TOKENS), errors=(401, 403, 429))
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        login = await self.auth.login_jwt(f["user"], f["password"], self.context())
        self.reply(tokens_result(login.pair))


class RefreshHandler(V1Handler):
    FIELDS = {"refresh_token": TOKEN}

    @allow_anonymous
    @doc(
        "New tokens for a refresh token (Authorization may carry the expired access token)",
        body=FIELDS,
        ok=obj({"code": const(0), "desc": STR, **TOKENS}),
        errors=(401,),
    )
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        # An expired access token is fine here; a forged one, or one of another session, is not.
        pair = await self.auth.refresh(f["refresh_token"], self.context(), access=self.bearer_token())
        self.reply({"code": 0, "desc": "Ok", **tokens_result(pair)})


def routes() -> list[Route]:
    return [Route("/api/v1/auth/login", LoginHandler), Route("/api/v1/auth/refresh", RefreshHandler)]
