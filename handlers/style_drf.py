"""Document 000: the Django REST framework / simplejwt style.

Errors follow DRF: `{"detail": "…"}` for authentication and permission errors,
`{"<field>": ["…"]}` for an invalid field; simplejwt's exact messages where it has them.
Refresh does not rotate (simplejwt's default, and the document shows only `access`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from models.accounts import account_view
from models.validation import Field, parse_fields
from models.values import Account, Caller

from .base import APIHandler, allow_anonymous
from .fields import LIMIT, LOGIN_NAME, NICKNAME, PAGE, PASSWORD, PHONE, TOKEN, required
from .spec import INT, STR, Route, Schema, array, doc, nullable, obj, ref

DETAIL = {
    "INVALID_CREDENTIALS": "No active account found with the given credentials",
    "INVALID_TOKEN": "Token is invalid or expired",
    "NOT_AUTHENTICATED": "Authentication credentials were not provided.",
    "FORBIDDEN": "You do not have permission to perform this action.",
    "NOT_FOUND": "Not found.",
}


class DrfHandler(APIHandler):
    style = "drf"

    @classmethod
    def error_schema(cls) -> Schema:
        field_errors = {"type": "object", "minProperties": 1, "additionalProperties": array(STR)}
        return {"anyOf": [obj({"detail": STR, "code": STR}, optional=("code",)), field_errors]}

    def error_envelope(self, status: int, code: str, message: str, exc: BaseException | None) -> Any:
        field = getattr(exc, "field", None)
        if field and code in ("INVALID_REQUEST", "ACCOUNT_EXISTS"):
            return {field: [message]}
        # simplejwt's answer to a bad, expired or dead token (and to none at all: the other)
        if code in ("INVALID_TOKEN", "TOKEN_EXPIRED") or (code == "NOT_AUTHENTICATED" and self._token_failed):
            return {"detail": DETAIL["INVALID_TOKEN"], "code": "token_not_valid"}
        return {"detail": DETAIL.get(code, message)}

    async def resolve_token(self, token: str) -> Caller:
        return await self.resolver.resolve(token, kinds=("jwt", "opaque"), client=self.ip_key)


class SignUpHandler(DrfHandler):
    FIELDS = {
        "phone": required(PHONE),
        "password": PASSWORD,
        "identity": Field(int, lo=0, hi=2),
        "nickname": NICKNAME,
    }

    @allow_anonymous
    @doc("Sign up with a phone number", body=FIELDS, ok=obj({"data": STR}), errors=(409, 429))
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        await self.auth.register(
            self.context(),
            phone=f["phone"],
            password=f["password"],
            identity=f.get("identity", 0),
            nickname=f.get("nickname", ""),
        )
        self.reply({"data": "success"})


class LoginHandler(DrfHandler):
    FIELDS = {"username": LOGIN_NAME, "password": PASSWORD}

    @allow_anonymous
    @doc(
        "Log in for a JWT pair (the access token lives 5 minutes)",
        body=FIELDS,
        ok=obj({"refresh": STR, "access": STR, "nickname": STR}),
        errors=(401, 403, 429),  # 403: an account with a second factor (its challenge in `mfa`)
    )
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        login = await self.auth.login_jwt(f["username"], f["password"], self.context())
        self.reply({"refresh": login.pair.refresh, "access": login.pair.access, "nickname": login.account.nickname})


class RefreshHandler(DrfHandler):
    FIELDS = {"refresh": TOKEN}

    @allow_anonymous
    @doc("A new access token for a refresh token", body=FIELDS, ok=obj({"access": STR}), errors=(401,))
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        pair = await self.auth.refresh(f["refresh"], self.context(), rotate=False)
        self.reply({"access": pair.access})


def user_view(account: Account) -> dict:
    view = account_view(account)
    view["is_active"] = not view["disabled"]
    return view


class AdminHandler(DrfHandler):
    async def prepare(self) -> None:
        await super().prepare()
        if self._finished:  # a CORS preflight, answered before any authentication
            return
        self.auth.require_admin(self.current_account)

    def param(self, name: str, body: dict) -> Any:
        """A filter or paging value from the query string or the JSON body."""
        value = self.get_query_argument(name, None)
        return value if value is not None else body.get(name)


class UsersHandler(AdminHandler):
    """Admin only: every account, a page at a time (`page`, `limit` ≤ 200), optionally
    filtered by `phone`, `username` or a search `q`. Unfiltered, page p is the accounts
    with ids (p-1)·limit+1 … p·limit (one index range at any depth; a page is short by
    the accounts deleted from it) and `count` the estimated total; a search counts and
    pages through its first 1,000 matches (`Accounts.search`)."""

    FIELDS = {
        "page": PAGE,
        "limit": LIMIT,
        "phone": PHONE,
        "username": Field(str, max_len=64),
        "q": Field(str, max_len=100),
    }
    PAGE = obj({"count": INT, "next": nullable(STR), "previous": nullable(STR), "results": array(ref("User"))})

    @doc("Admin only: accounts, a page at a time", query=FIELDS, ok=PAGE, errors=(403,))
    async def get(self) -> None:
        body = self.json_body()
        args = parse_fields({k: self.param(k, body) for k in self.FIELDS}, self.FIELDS)
        page, limit = args.get("page", 1), args.get("limit", 50)
        filters = {k: args.get(k) for k in ("phone", "username", "q")}
        found = await self.admin.account_page(page=page, limit=limit, **filters)
        base = self.request.protocol + "://" + self.request.host + self.request.path

        def link(p: int) -> str:
            return base + "?" + urlencode({**{k: v for k, v in filters.items() if v}, "page": p, "limit": limit})

        self.reply(
            {
                "count": found.count,
                "next": link(page + 1) if found.more else None,
                "previous": link(page - 1) if page > 1 else None,
                "results": [user_view(a) for a in found.accounts],
            }
        )

    @doc("Admin only: accounts, a page at a time (filters in the body)", body=FIELDS, ok=PAGE, errors=(403,))
    async def post(self) -> None:
        await self.get()


class UserHandler(AdminHandler):
    @doc("Admin only: one account", ok=ref("User"), errors=(403, 404))
    async def get(self, user_id: str) -> None:
        self.reply(user_view(await self.accounts.get(int(user_id))))

    @doc("Admin only: one account", ok=ref("User"), errors=(403, 404))
    async def post(self, user_id: str) -> None:
        await self.get(user_id)


def routes() -> list[Route]:
    return [
        Route("/api/auth/sign_up/", SignUpHandler),
        Route("/api/auth/login/", LoginHandler),
        Route("/api/auth/refresh/", RefreshHandler),
        Route("/api/auth/users/", UsersHandler),
        Route("/api/auth/users/{user_id}/", UserHandler),
    ]
