"""Flask: a decorator.

    verifier = Verifier(...)

    @app.get("/profile")
    @gatehouse_required(verifier)
    def profile():
        return {"account": current_principal().account_id}

The Principal is in `flask.g.gatehouse_principal` (`current_principal()`), and is also
passed as the keyword argument `principal` when the view declares one. Flask views run
in threads: the check is `Verifier.verify`, the sync entry point.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, jsonify, request

from .errors import InvalidToken
from .principal import Principal
from .verifier import Verifier
from .web import refusal, token_from_header

F = TypeVar("F", bound=Callable[..., Any])


def gatehouse_required(verifier: Verifier) -> Callable[[F], F]:
    def decorate(view: F) -> F:
        wants_principal = "principal" in inspect.signature(view).parameters

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                principal = verifier.verify(token_from_header(request.headers.get("Authorization")))
            except InvalidToken as e:
                answer = refusal(e)
                response = jsonify(answer.body)
                response.status_code = answer.status
                response.headers.update(answer.headers)
                return response
            g.gatehouse_principal = principal
            if wants_principal:
                kwargs["principal"] = principal
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def current_principal() -> Principal:
    """The Principal of this request (inside a `gatehouse_required` view)."""
    return g.gatehouse_principal
