"""FastAPI / Starlette: a dependency.

    gatehouse = GatehouseBearer(Verifier(...))

    @app.get("/profile")
    async def profile(principal: Principal = Depends(gatehouse)):
        return {"account": principal.account_id}

`GatehouseBearer(verifier, optional=True)` gives None instead of answering 401 when no
token is sent. Plain Starlette: `await gatehouse.principal(request)`.
"""

from __future__ import annotations

from fastapi import HTTPException, Request

from .errors import InvalidToken
from .principal import Principal
from .verifier import Verifier
from .web import refusal, token_from_header


class GatehouseBearer:
    def __init__(self, verifier: Verifier, *, optional: bool = False) -> None:
        self.verifier = verifier
        self.optional = optional

    async def __call__(self, request: Request) -> Principal | None:
        token = token_from_header(request.headers.get("Authorization"))
        if token is None and self.optional:
            return None
        return await self.principal(request, token)

    async def principal(self, request: Request, token: str | None = None) -> Principal:
        if token is None:
            token = token_from_header(request.headers.get("Authorization"))
        try:
            principal = await self.verifier.averify(token)
        except InvalidToken as e:
            answer = refusal(e)
            raise HTTPException(answer.status, detail=answer.body, headers=answer.headers) from None
        request.state.principal = principal
        return principal
