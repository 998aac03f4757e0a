"""Document 001: phone number + SMS code, Flask-JWT style, JSON only.

Every route refuses a non-JSON request with 400 `{"error": "Only JSON requests are
accepted"}`. `user_id` is the account's UUID, which is also the JWT `sub`. A login code
can be asked for again only after the code's lifetime (the document's 5 minutes).
"""

from __future__ import annotations

from typing import Any

from models.errors import CodeInvalid, InvalidRequest, NoPendingCode
from models.validation import Field, normalize_phone

from .base import APIHandler, allow_anonymous
from .fields import CODE, PHONE, required
from .spec import STR, Route, Schema, doc, obj

ONLY_JSON = "Only JSON requests are accepted"


class PhoneHandler(APIHandler):
    style = "phone"

    def json_body(self) -> dict[str, Any]:
        if not self.is_json_request():
            raise InvalidRequest(ONLY_JSON)
        return super().json_body()

    def error_status(self, status: int, code: str, exc: BaseException | None) -> int:
        return 400 if code == "UNSUPPORTED_MEDIA_TYPE" else status

    @classmethod
    def error_schema(cls) -> Schema:
        return {"anyOf": [obj({"error": STR}), obj({"message": STR})]}

    def error_envelope(self, status: int, code: str, message: str, exc: BaseException | None) -> Any:
        if code == "UNSUPPORTED_MEDIA_TYPE":
            message = ONLY_JSON
        elif code == "ACCOUNT_EXISTS":
            message = "Account already Exists"
        return {"error": message}

    def phone(self, raw: str) -> str:
        return normalize_phone(raw, self.config.phone_region)


class RegisterHandler(PhoneHandler):
    FIELDS = {"phonenumber": required(PHONE)}

    @allow_anonymous
    @doc(
        "Create an account and text it a verification code",
        body=FIELDS,
        ok=obj({"message": STR, "phone": STR, "token": STR}),
        errors=(409, 429),
    )
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        phone = self.phone(f["phonenumber"])
        token = await self.flows.register_phone(phone, self.context())
        self.reply({"message": "User Created Successfully", "phone": phone, "token": token})


class VerifyHandler(PhoneHandler):
    FIELDS = {
        "code": CODE,
        "token": Field(str, required=True, max_len=64),  # the sign-up token, not a session's
        "phone": required(PHONE),
    }

    @allow_anonymous
    @doc("Verify the phone with the code and the sign-up token", body=FIELDS, ok=obj({"message": STR}), errors=(429,))
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        try:
            await self.flows.verify_signup(self.phone(f["phone"]), f["code"], f["token"], self.context())
        except CodeInvalid:
            raise CodeInvalid("Invalid code or token") from None
        self.reply({"message": "User verify Successfully!"})


class LoginHandler(PhoneHandler):
    FIELDS = {"phone": required(PHONE)}

    @allow_anonymous
    @doc(
        "Text a login code to a verified phone",
        body=FIELDS,
        ok=obj({"expire_time": STR, "message": STR, "user_id": STR}),
        errors=(403, 404, 429),
    )
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        account, ttl = await self.flows.request_phone_login(self.phone(f["phone"]), self.context())
        self.reply({"expire_time": str(ttl), "message": "Code Send to user", "user_id": account.uid})

    def error_envelope(self, status: int, code: str, message: str, exc: BaseException | None) -> Any:
        if code == "RATE_LIMITED" and getattr(exc, "reason", "") == "cooldown":
            return {"message": "User already have a request for login"}
        return super().error_envelope(status, code, message, exc)


class LoginVerifyHandler(PhoneHandler):
    FIELDS = {
        "code": CODE,
        "user_id": Field(str, required=True, max_len=64),
    }

    @allow_anonymous
    @doc(
        "Trade the login code for a JWT pair",
        body=FIELDS,
        ok=obj({"access_token": STR, "refresh_token": STR}),
        errors=(403, 429),  # 403: an account with a second factor (its challenge in `mfa`)
    )
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        try:
            login = await self.flows.phone_login(f["user_id"], f["code"], self.context())
        except NoPendingCode:
            raise NoPendingCode("login first") from None
        except CodeInvalid:
            raise CodeInvalid("Invalid code") from None
        self.reply({"access_token": login.pair.access, "refresh_token": login.pair.refresh})


def routes() -> list[Route]:
    return [
        Route("/auth/api/Register/", RegisterHandler),
        Route("/auth/api/verify/", VerifyHandler),
        Route("/auth/api/login/", LoginHandler),
        Route("/auth/api/login/verify/", LoginVerifyHandler),
    ]
