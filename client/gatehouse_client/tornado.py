"""Tornado: a `RequestHandler` mixin.

    class ProfileHandler(GatehouseAuthMixin, tornado.web.RequestHandler):
        async def get(self):
            self.write({"account": self.principal.account_id})

    app = tornado.web.Application([...], gatehouse_verifier=Verifier(...))

The token is checked in `prepare()`; a handler that overrides `prepare` calls
`await super().prepare()` first. Methods listed in `gatehouse_anonymous` (e.g.
`{"OPTIONS"}`) skip the check (and see `principal` None).
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidToken
from .principal import Principal
from .verifier import Verifier
from .web import refusal, token_from_header


class GatehouseAuthMixin:
    gatehouse_anonymous: frozenset[str] = frozenset({"OPTIONS"})
    principal: Principal | None = None

    @property
    def gatehouse_verifier(self) -> Verifier:
        return self.settings["gatehouse_verifier"]  # type: ignore[attr-defined]

    async def prepare(self) -> None:
        request = self.request  # type: ignore[attr-defined]
        if request.method in self.gatehouse_anonymous:
            return
        try:
            self.principal = await self.gatehouse_verifier.averify(
                token_from_header(request.headers.get("Authorization"))
            )
        except InvalidToken as e:
            self.gatehouse_refuse(e)

    def gatehouse_refuse(self, error: InvalidToken) -> None:
        """Answer a token that is not good (override to change the body)."""
        answer = refusal(error)
        handler: Any = self
        handler.set_status(answer.status)
        for name, value in answer.headers.items():
            handler.set_header(name, value)
        handler.finish(answer.body)
