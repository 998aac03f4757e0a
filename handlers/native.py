"""The native API (document 003): opaque tokens and the SUCCESS envelope.

{"code": "SUCCESS", "message": "", "time": 1700000000, "data": …}
{"code": "INVALID_CREDENTIALS", "message": "…", "time": 1700000000, "data": null}
"""

from __future__ import annotations

import json
import time
from typing import Any

from models.accounts import account_view
from models.common import epoch
from models.errors import AccountNotFound, InvalidRequest, NotAuthenticated
from models.sessions import session_view
from models.validation import Field
from models.values import Account, Caller, OpaqueLogin

from .base import APIHandler, allow_anonymous
from .fields import CODE, EMAIL, LOGIN_NAME, NEW_PASSWORD, NICKNAME, PASSWORD, PHONE, TOKEN, USERNAME, optional
from .spec import BOOL, EPOCH, INT, NULL, STR, Route, Schema, array, const, doc, obj, ref

NOT_LOGGED_IN = ("NOT_AUTHENTICATED", "TOKEN_EXPIRED")
LOGIN_FIELDS = {"username": LOGIN_NAME, "password": PASSWORD}
REGISTER_FIELDS = {"username": USERNAME, "password": PASSWORD, "nickname": NICKNAME, "phone": PHONE, "email": EMAIL}


class NativeHandler(APIHandler):
    style = "native"

    def envelope(self, data: Any) -> Any:
        return {"code": "SUCCESS", "message": "", "time": int(time.time()), "data": data}

    @classmethod
    def ok_schema(cls, data: Schema) -> Schema:
        return obj({"code": const("SUCCESS"), "message": STR, "time": INT, "data": data})

    @classmethod
    def error_schema(cls) -> Schema:
        return obj(
            {"code": STR, "message": STR, "time": INT, "data": NULL, "field": STR},
            optional=("field",),
        )

    def error_status(self, status: int, code: str, exc: BaseException | None) -> int:
        # Document 003: "You will get HTTP 403 if not logged in"; the code tells an
        # expired token (refresh, or log in again) from a missing or unknown one.
        return 403 if code in NOT_LOGGED_IN else status

    def error_envelope(self, status: int, code: str, message: str, exc: BaseException | None) -> Any:
        body: dict[str, Any] = {"code": code, "message": message, "time": int(time.time()), "data": None}
        field = getattr(exc, "field", None)
        if field:
            body["field"] = field
        return body

    def login_view(self, login: OpaqueLogin | Caller, token: str) -> dict:
        """The /auth/auth and /auth/me answer: identical by the document (/auth/me
        answers with whichever token it was sent, an opaque one or a JWT)."""
        return {
            "token": token,
            "account": public_account(login.account),
            "session": login.session.id,
            "lastActive": epoch(login.session.last_active),
            "created": epoch(login.session.created),
            # How the session was authenticated (README "Second factors").
            "aal": login.session.aal,
            "amr": list(login.session.amr),
            "authTime": epoch(login.session.auth_time or login.session.created),
        }


LOGIN_VIEW = obj(
    {
        "token": STR,
        "account": ref("PublicAccount"),
        "session": STR,
        "lastActive": EPOCH,
        "created": EPOCH,
        "aal": {"enum": [1, 2]},
        "amr": array(STR),
        "authTime": EPOCH,
    }
)


def public_account(account: Account) -> dict:
    """The account as document 003 shows it (plus its id)."""
    view = account_view(account)
    return {k: view[k] for k in ("id", "nickname", "username", "email", "phone")}


class RegisterHandler(NativeHandler):
    @allow_anonymous
    @doc("Create an account", body=REGISTER_FIELDS, ok=ref("PublicAccount"), errors=(409, 429))
    async def post(self) -> None:
        f = self.fields(REGISTER_FIELDS)
        if not f.get("username"):
            raise InvalidRequest("'username' is required", field="username")
        account = await self.auth.register(
            self.context(),
            username=f["username"],
            password=f["password"],
            email=f.get("email"),
            phone=f.get("phone"),
            nickname=f.get("nickname", ""),
        )
        self.reply(public_account(account))


class LoginHandler(NativeHandler):
    @allow_anonymous
    @doc(
        "Log in by username, e-mail or phone; the token goes in Authorization",
        body=LOGIN_FIELDS,
        ok=LOGIN_VIEW,
        errors=(401, 403, 429),
    )
    async def post(self) -> None:
        f = self.fields(LOGIN_FIELDS)
        login = await self.auth.login_password(f["username"], f["password"], self.context())
        self.reply(self.login_view(login, login.token))


class MeHandler(NativeHandler):
    @doc("Who is logged in (the same answer as /auth/auth)", ok=LOGIN_VIEW)
    async def get(self) -> None:
        caller = self.caller
        self.reply(self.login_view(caller, self._token or ""))


class LogoutHandler(NativeHandler):
    @doc("End this session", ok=const("Logged out"))
    async def post(self) -> None:
        await self.auth.logout(self.current_session, self.context())
        self.reply("Logged out")


class SessionsHandler(NativeHandler):
    @doc("This account's live sessions", ok=obj({"sessions": array(ref("Session"))}))
    async def get(self) -> None:
        sessions = await self.sessions.list_for_account(self.current_account)
        current = self.current_session.id
        self.reply({"sessions": [session_view(s, current) for s in sessions]})


class SessionHandler(NativeHandler):
    @doc("End one of this account's sessions", ok=obj({"revoked": STR}), errors=(404,))
    async def delete(self, session_id: str) -> None:
        account = self.current_account
        await self.auth.kick(session_id, self.context(), by=f"account:{account.id}", account_id=account.id)
        self.reply({"revoked": session_id})


class RevokeOthersHandler(NativeHandler):
    FIELDS = {"password": optional(PASSWORD)}

    @doc(
        "End every other session of this account (a login older than 15 minutes must send `password`)",
        body=FIELDS,
        ok=obj({"revoked": INT}),
        errors=(429,),
    )
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        count = await self.auth.end_other_sessions(self.caller, f.get("password"), self.context())
        self.reply({"revoked": count})


class RevokeHandler(NativeHandler):
    """RFC 7009-style revocation of one of the caller's own tokens (opaque, access or
    refresh): its session ends. Any other token is answered the same and left alone."""

    FIELDS = {"token": TOKEN, "token_type_hint": Field(str, max_len=32)}

    @doc("Revoke one of your tokens; its session ends (always the same answer)", body=FIELDS, ok=NULL)
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        await self.auth.revoke_token(f["token"], self.current_account, self.context())
        self.reply(None)


class PasswordHandler(NativeHandler):
    FIELDS = {"password": PASSWORD, "new_password": NEW_PASSWORD}

    @doc(
        "Change the password; every other session ends",
        body=FIELDS,
        ok=obj({"sessionsEnded": INT}),
        errors=(401, 429),
    )
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        ended = await self.auth.change_password(self.caller, f["password"], f["new_password"], self.context())
        self.reply({"sessionsEnded": ended})


class ResetHandler(NativeHandler):
    """Document 003's reset: without `code`, send a reset code (the same answer for an
    unknown account); with `code` and `password`, set the password and end every session."""

    FIELDS = {
        "username": LOGIN_NAME,
        "password": Field(str, max_len=4096, allow_empty=True),  # checked with `code`, below
        "code": optional(CODE),
    }

    @allow_anonymous
    @doc(
        "Without `code`: send a reset code. With `code` and `password`: reset, ending every session",
        body=FIELDS,
        ok={"enum": ["Email Sent", "Success"]},
        errors=(429,),
    )
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        if not f.get("code"):
            await self.flows.request_reset(f["username"], self.context())
            self.reply("Email Sent")
            return
        if not f.get("password"):
            raise InvalidRequest("'password' is required with 'code'", field="password")
        await self.flows.reset_with_code(f["username"], f["code"], f["password"], self.context())
        self.reply("Success")


class OtpHandler(NativeHandler):
    """Send a one-time code: purpose "login" (passwordless, to a verified destination)
    or "verify" (proves the phone or e-mail). Unknown destinations get the same answer."""

    FIELDS = {"phone": PHONE, "email": EMAIL, "purpose": Field(str, required=True, max_len=16)}

    def purpose(self, f: dict) -> str:
        if f["purpose"] not in ("login", "verify"):
            raise InvalidRequest('\'purpose\' must be "login" or "verify"', field="purpose")
        return f["purpose"]

    @allow_anonymous
    @doc(
        "Send a one-time code for login or verification",
        body=FIELDS,
        ok=obj({"sent": BOOL, "channel": {"enum": ["sms", "email"]}, "expiresIn": INT}),
        errors=(429,),
    )
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        channel = await self.flows.request_code(self.purpose(f), f.get("phone"), f.get("email"), self.context())
        self.reply({"sent": True, "channel": channel, "expiresIn": self.config.codes.code_ttl})


class OtpVerifyHandler(OtpHandler):
    FIELDS = {**OtpHandler.FIELDS, "code": CODE}

    @allow_anonymous
    @doc(
        "Check a one-time code: a login answers like /auth/auth, a verification with `verified`",
        body=FIELDS,
        ok={"anyOf": [LOGIN_VIEW, obj({"verified": STR})]},
        errors=(401, 403, 429),  # 403: an account with a second factor (its challenge in `mfa`)
    )
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        # Optional login: a proof sent with a token of the same account is the owner
        # confirming their own address, not a takeover (README "Proving a phone or e-mail").
        caller = await self.optional_caller()
        phone, email, code = f.get("phone"), f.get("email"), f["code"]
        if self.purpose(f) == "login":
            login = await self.flows.login_by_code(phone, email, code, self.context())
            self.reply(self.login_view(login, login.token))
        else:
            channel = await self.flows.prove_contact(phone, email, code, self.context(), caller=caller)
            self.reply({"verified": channel})


def pair_view(pair) -> dict:
    return {
        "access_token": pair.access,
        "refresh_token": pair.refresh,
        "token_type": "Bearer",
        "expires_in": pair.access_expires_in,
        "refresh_expires_in": pair.refresh_expires_in,
    }


class TokenHandler(NativeHandler):
    """Log in for a JWT pair (session kind `jwt`): the same inputs as /auth/auth."""

    @allow_anonymous
    @doc("Log in for a JWT pair", body=LOGIN_FIELDS, ok=ref("TokenPair"), errors=(401, 403, 429))
    async def post(self) -> None:
        f = self.fields(LOGIN_FIELDS)
        login = await self.auth.login_jwt(f["username"], f["password"], self.context())
        self.reply(pair_view(login.pair))


class TokenRefreshHandler(NativeHandler):
    FIELDS = {"refresh_token": TOKEN}

    @allow_anonymous
    @doc(
        "Trade a refresh token for a new pair (the old one is retired)", body=FIELDS, ok=ref("TokenPair"), errors=(401,)
    )
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        self.reply(pair_view(await self.auth.refresh(f["refresh_token"], self.context())))


class IntrospectHandler(NativeHandler):
    """RFC 7662-like introspection for resource servers holding a service key."""

    cors = False  # a service key (which also opens the admin API) never sits in a browser
    security = ("serviceKey",)  # in /openapi.json

    async def authenticate(self) -> None:
        if not self.presents_secret(self.config.server.service_keys):
            raise NotAuthenticated("introspection needs a service key (GATEHOUSE_SERVICE_KEYS) as a Bearer token")

    FIELDS = {"token": TOKEN}

    @doc(
        "Is this token active? (service key required)",
        body=FIELDS,
        ok=obj({"active": BOOL}, closed=False),
    )
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        self.reply(await self.auth.introspect(f["token"]))


class JwksHandler(NativeHandler):
    tag = "service"  # in /openapi.json

    @allow_anonymous
    @doc("Public keys of the JWT signers", ok=obj({"keys": array({"type": "object"})}), raw=True)
    async def get(self) -> None:
        self.set_header("Cache-Control", "public, max-age=300")
        self.finish(json.dumps(self.tokens.keys.jwks()))


class TestDeleteHandler(NativeHandler):
    """Testing only (GATEHOUSE_TEST_ENDPOINTS=1): delete an account by username."""

    FIELDS = {"username": LOGIN_NAME}

    @allow_anonymous
    @doc("TESTING ONLY: delete an account", body=FIELDS, ok=const("Deleted"), errors=(404,))
    async def delete(self) -> None:
        f = self.fields(self.FIELDS)
        account = await self.accounts.find_by_login(f["username"])
        if account is None:
            raise AccountNotFound()
        await self.auth.delete_account(account, self.context(), by="test_delete")
        self.reply("Deleted")


def routes(test_endpoints: bool) -> list[Route]:
    table = [
        Route("/auth/register", RegisterHandler),
        Route("/auth/auth", LoginHandler),
        Route("/auth/me", MeHandler),
        Route("/auth/logout", LogoutHandler),
        Route("/auth/sessions", SessionsHandler),
        Route("/auth/sessions/revoke_others", RevokeOthersHandler),
        Route("/auth/sessions/{session_id}", SessionHandler),
        Route("/auth/password", PasswordHandler),
        Route("/auth/reset", ResetHandler),
        Route("/auth/otp", OtpHandler),
        Route("/auth/otp/verify", OtpVerifyHandler),
        Route("/auth/token", TokenHandler),
        Route("/auth/token/refresh", TokenRefreshHandler),
        Route("/auth/introspect", IntrospectHandler),
        Route("/auth/revoke", RevokeHandler),
        Route("/.well-known/jwks.json", JwksHandler, slash=False),
    ]
    if test_endpoints:
        table.append(Route("/auth/test_delete", TestDeleteHandler))
    return table
