"""Passkeys on the native API (issue 21), in document 003's envelope: register one in a
live session, list, rename and remove them, sign in with one, and begin a passkey's
second step or re-authentication (finished at `/auth/mfa/verify` and
`/auth/reauthenticate`). Each `begin` answers WebAuthn options for
`navigator.credentials.create/get` (after the base64url fields are decoded, as
`PublicKeyCredential.parseCreationOptionsFromJSON` does); each finish takes the
credential as `PublicKeyCredential.toJSON()` gives it. README "Passkeys"."""

from __future__ import annotations

from models.passkeys import passkey_view
from models.sessions import session_view
from models.validation import Field
from models.values import JwtLogin

from .base import allow_anonymous
from .fields import optional
from .mfa import RECOVERY_CODES, EnrolmentHandler
from .native import LOGIN_VIEW, NativeHandler, pair_view
from .spec import STR, Route, array, doc, nullable, obj, ref

PASSKEY = ref("Passkey")
OPTIONS = obj({"options": {"type": "object", "additionalProperties": True}})
CREDENTIAL = Field(dict, required=True)
NAME = Field(str, max_len=64, allow_empty=True)


class RegisterBeginHandler(EnrolmentHandler):
    @doc(
        "Begin registering a passkey: creation options for navigator.credentials.create (needs the step-up)",
        ok=OPTIONS,
        errors=(403, 404, 429),
    )
    async def post(self) -> None:
        options = await self.gatehouse.passkey_flows.registration_options(self.caller, self.context())
        self.reply({"options": options})


class RegisterFinishHandler(EnrolmentHandler):
    FIELDS = {"credential": CREDENTIAL, "name": optional(NAME)}

    @doc(
        "Finish registering a passkey with the browser's new credential; an account's first factor comes with"
        " its recovery codes",
        body=FIELDS,
        ok=obj({"passkey": PASSKEY, "recoveryCodes": nullable(RECOVERY_CODES), "session": ref("Session")}),
        errors=(400, 403, 404, 409),
    )
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        done = await self.gatehouse.passkey_flows.register(
            self.caller, f["credential"], f.get("name", ""), self.context()
        )
        session = done.session or self.current_session
        self.reply(
            {
                "passkey": passkey_view(done.passkey),
                "recoveryCodes": done.recovery_codes,
                "session": session_view(session, session.id),
            }
        )


class PasskeysHandler(EnrolmentHandler):
    @doc("This account's passkeys", ok=obj({"passkeys": array(PASSKEY)}))
    async def get(self) -> None:
        passkeys = await self.gatehouse.passkeys.list(self.current_account.id)
        self.reply({"passkeys": [passkey_view(p) for p in passkeys]})


class PasskeyHandler(NativeHandler):
    FIELDS = {"name": Field(str, required=True, max_len=64)}

    @doc("Rename a passkey", body=FIELDS, ok=obj({"passkey": PASSKEY}), errors=(404,))
    async def patch(self, passkey_id: str) -> None:
        f = self.fields(self.FIELDS)
        passkey = await self.gatehouse.passkey_flows.rename(self.caller, passkey_id, f["name"], self.context())
        self.reply({"passkey": passkey_view(passkey)})

    @doc("Remove a passkey (needs a recent aal2 login)", ok=obj({"removed": STR}), errors=(403, 404))
    async def delete(self, passkey_id: str) -> None:
        passkey = await self.gatehouse.passkey_flows.remove(self.caller, passkey_id, self.context())
        self.reply({"removed": passkey.id})


class LoginBeginHandler(NativeHandler):
    @allow_anonymous
    @doc(
        "Begin a passkey sign-in: request options for navigator.credentials.get (the browser's passkey picker;"
        " user verification required)",
        ok=OPTIONS,
        errors=(404, 429),
    )
    async def post(self) -> None:
        options = await self.gatehouse.passkey_flows.login_options(self.context())
        self.reply({"options": options})


class LoginFinishHandler(NativeHandler):
    FIELDS = {"credential": CREDENTIAL, "jwt": Field(bool)}

    @allow_anonymous
    @doc(
        "Finish a passkey sign-in: the session (aal2 with user verification), an opaque token or, with"
        " jwt: true, a token pair",
        body=FIELDS,
        ok={"anyOf": [LOGIN_VIEW, ref("TokenPair")]},
        errors=(400, 403, 404, 429),
    )
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        login = await self.gatehouse.passkey_flows.login(f["credential"], self.context(), jwt=bool(f.get("jwt")))
        if isinstance(login, JwtLogin):
            self.reply(pair_view(login.pair))
        else:
            self.reply(self.login_view(login, login.token))


class MfaBeginHandler(NativeHandler):
    FIELDS = {"challenge": Field(str, required=True, max_len=128)}

    @allow_anonymous
    @doc(
        "Begin a login's second step with a passkey: request options bound to the MFA challenge (finish at"
        " /auth/mfa/verify with the credential)",
        body=FIELDS,
        ok=OPTIONS,
        errors=(400, 401, 404, 429),
    )
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        options = await self.gatehouse.passkey_flows.mfa_options(f["challenge"], self.context())
        self.reply({"options": options})


class ReauthenticateBeginHandler(NativeHandler):
    @doc(
        "Begin authenticating again with a passkey: request options bound to this session (finish at"
        " /auth/reauthenticate with the credential)",
        ok=OPTIONS,
        errors=(400, 404, 429),
    )
    async def post(self) -> None:
        options = await self.gatehouse.passkey_flows.reauthentication_options(self.caller, self.context())
        self.reply({"options": options})


def routes() -> list[Route]:
    return [
        Route("/auth/passkeys", PasskeysHandler),
        Route("/auth/passkeys/register/begin", RegisterBeginHandler),
        Route("/auth/passkeys/register/finish", RegisterFinishHandler),
        Route("/auth/passkeys/login/begin", LoginBeginHandler),
        Route("/auth/passkeys/login/finish", LoginFinishHandler),
        Route("/auth/passkeys/mfa/begin", MfaBeginHandler),
        Route("/auth/passkeys/reauthenticate/begin", ReauthenticateBeginHandler),
        Route("/auth/passkeys/{passkey_id}", PasskeyHandler),
    ]
