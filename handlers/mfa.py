"""Second factors on the native API (issue 20), in document 003's envelope: manage
authenticator apps and recovery codes, finish a login's second step (for every style's
MFA accounts: README "Second factors"), and authenticate again in a live session."""

from __future__ import annotations

from typing import Any

from models.errors import InvalidRequest
from models.mfa import factor_view
from models.sessions import session_view
from models.validation import Field
from models.values import Caller, JwtLogin

from .base import allow_anonymous
from .fields import CODE, PASSWORD, optional
from .native import LOGIN_VIEW, NativeHandler, pair_view
from .spec import INT, STR, Route, array, const, doc, nullable, obj, ref

FACTOR = ref("Factor")
RECOVERY_CODES = array(STR)
ACCESS_ONLY = obj({"access_token": STR, "token_type": const("Bearer"), "expires_in": INT})
NAME = Field(str, max_len=64, allow_empty=True)


class EnrolmentHandler(NativeHandler):
    """A route an enrolment-only session (GATEHOUSE_MFA) may use, beside every API session."""

    async def resolve_token(self, token: str) -> Caller:
        return await self.resolver.resolve(token, kinds=("opaque", "jwt", "enrol"), client=self.ip_key)


class FactorsHandler(EnrolmentHandler):
    @doc(
        "This account's authenticator apps and how many recovery codes are left",
        ok=obj({"factors": array(FACTOR), "recoveryCodesLeft": INT}),
    )
    async def get(self) -> None:
        account = self.current_account
        factors = await self.gatehouse.factors.list(account.id)
        left = await self.gatehouse.factors.recovery_left(account.id)
        self.reply({"factors": [factor_view(f) for f in factors], "recoveryCodesLeft": left})


class FactorHandler(NativeHandler):
    @doc("Remove an authenticator app (needs a recent aal2 login)", ok=obj({"removed": STR}), errors=(403, 404))
    async def delete(self, factor_id: str) -> None:
        factor = await self.gatehouse.mfa.remove(self.caller, factor_id, self.context())
        self.reply({"removed": factor.id})


class TotpEnrolHandler(EnrolmentHandler):
    FIELDS = {"name": optional(NAME)}

    @doc(
        "Start adding an authenticator app: its secret, otpauth:// URI and QR code (confirm with a first code)",
        body=FIELDS,
        ok=obj({"factor": FACTOR, "secret": STR, "otpauthUri": STR, "qrSvg": STR}),
        errors=(403,),
    )
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        enrolment = await self.gatehouse.mfa.enrol_totp(self.caller, f.get("name", ""), self.context())
        self.reply(
            {
                "factor": factor_view(enrolment.factor),
                "secret": enrolment.secret,
                "otpauthUri": enrolment.uri,
                "qrSvg": enrolment.qr_svg,
            }
        )


class TotpConfirmHandler(EnrolmentHandler):
    FIELDS = {"code": CODE}

    @doc(
        "Confirm an authenticator app with its first code; an account's first factor comes with its recovery codes",
        body=FIELDS,
        ok=obj({"factor": FACTOR, "recoveryCodes": nullable(RECOVERY_CODES), "session": ref("Session")}),
        errors=(404, 429),
    )
    async def post(self, factor_id: str) -> None:
        f = self.fields(self.FIELDS)
        done = await self.gatehouse.mfa.confirm_totp(self.caller, factor_id, f["code"], self.context())
        session = done.session or self.current_session
        self.reply(
            {
                "factor": factor_view(done.factor),
                "recoveryCodes": done.recovery_codes,
                "session": session_view(session, session.id),
            }
        )


class RecoveryCodesHandler(NativeHandler):
    @doc(
        "New recovery codes; the old ones stop working (needs a recent aal2 login)",
        ok=obj({"recoveryCodes": RECOVERY_CODES}),
        errors=(403,),
    )
    async def post(self) -> None:
        codes = await self.gatehouse.mfa.new_recovery_codes(self.caller, self.context())
        self.reply({"recoveryCodes": codes})


class MfaVerifyHandler(NativeHandler):
    """A login's second step, whichever style's login gave the challenge: the session it
    makes is the one that login asked for (an opaque token, or a JWT pair in that style's
    token profile)."""

    FIELDS = {
        "challenge": Field(str, required=True, max_len=128),
        "code": optional(CODE),
        "credential": Field(dict),
    }

    @allow_anonymous
    @doc(
        "A login's second step: the MFA challenge and a TOTP or recovery code, or a passkey's credential (begun"
        " at /auth/passkeys/mfa/begin), make the session (aal2)",
        body=FIELDS,
        ok={"anyOf": [LOGIN_VIEW, ref("TokenPair"), ACCESS_ONLY]},
        errors=(400, 401, 429),
    )
    async def post(self) -> None:
        f = self.fields(self.FIELDS)
        ctx, credential = self.context(), f.get("credential")
        if credential is None and "code" not in f:
            raise InvalidRequest("send a code as 'code', or a passkey's credential as 'credential'", field="code")
        passkey = None
        if credential is not None:

            async def passkey() -> str:
                return await self.gatehouse.passkey_flows.second_step(f["challenge"], credential, ctx)

        login = await self.gatehouse.mfa.verify(f["challenge"], f.get("code"), ctx, passkey=passkey)
        if isinstance(login, JwtLogin) and login.pair.refresh is None:  # document 002: access only
            pair = login.pair
            self.reply({"access_token": pair.access, "token_type": "Bearer", "expires_in": pair.access_expires_in})
        elif isinstance(login, JwtLogin):
            self.reply(pair_view(login.pair))
        else:
            self.reply(self.login_view(login, login.token))


class ReauthenticateHandler(NativeHandler):
    FIELDS = {"password": optional(PASSWORD), "code": optional(CODE), "credential": Field(dict)}

    @doc(
        "Authenticate again in this session (password, and a code or a passkey's credential, begun at"
        " /auth/passkeys/reauthenticate/begin, for an account with a second factor): refreshes its auth_time"
        " and assurance, for the step-up rule",
        body=FIELDS,
        ok=obj({"session": ref("Session")}),
        errors=(400, 401, 429),
    )
    async def post(self) -> None:
        f: dict[str, Any] = self.fields(self.FIELDS)
        if f.get("credential") is not None:
            session = await self.gatehouse.passkey_flows.reauthenticate(self.caller, f["credential"], self.context())
        else:
            session = await self.gatehouse.mfa.reauthenticate(
                self.caller, f.get("password"), f.get("code"), self.context()
            )
        self.reply({"session": session_view(session, session.id)})


def routes() -> list[Route]:
    return [
        Route("/auth/mfa/factors", FactorsHandler),
        Route("/auth/mfa/factors/{factor_id}", FactorHandler),
        Route("/auth/mfa/totp", TotpEnrolHandler),
        Route("/auth/mfa/totp/{factor_id}/confirm", TotpConfirmHandler),
        Route("/auth/mfa/recovery-codes", RecoveryCodesHandler),
        Route("/auth/mfa/verify", MfaVerifyHandler),
        Route("/auth/reauthenticate", ReauthenticateHandler),
    ]
