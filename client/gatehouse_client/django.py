"""Django REST framework: an authentication class.

    # settings.py
    GATEHOUSE_VERIFIER = "myapp.auth.verifier"   # a Verifier, or its dotted path
    REST_FRAMEWORK = {
        "DEFAULT_AUTHENTICATION_CLASSES": ["gatehouse_client.django.GatehouseAuthentication"],
        "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    }

`request.user` is a `GatehouseUser` (no database row: like simplejwt's
`TokenUser`, `id`/`pk` are the Gatehouse account id) and `request.auth` the Principal.
No token: the authentication class steps aside (`request.user` is anonymous and
`IsAuthenticated` answers 401 with the bare challenge); a bad token: 401 with
`error="invalid_token"`; Gatehouse unreachable: 503.

Plain Django views (no DRF): `@gatehouse_required` puts the Principal in
`request.gatehouse_principal` (and a `GatehouseUser` in `request.user`) or answers the
401/503 itself, as JSON.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import JsonResponse
from django.utils.module_loading import import_string
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from .errors import InvalidToken
from .principal import Principal
from .verifier import Verifier
from .web import REALM, refusal, token_from_header


def get_verifier() -> Verifier:
    """`settings.GATEHOUSE_VERIFIER`: a Verifier, or the dotted path of one (or of a
    function returning one)."""
    verifier: Any = settings.GATEHOUSE_VERIFIER
    if isinstance(verifier, str):
        verifier = import_string(verifier)
    if not isinstance(verifier, Verifier) and callable(verifier):
        verifier = verifier()
    return verifier


class GatehouseUser:
    """The caller as Django sees a user, without a user table."""

    is_authenticated = True
    is_anonymous = False
    is_active = True

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.id = self.pk = principal.account_id
        self.uid = principal.uid
        # drf's and simple's tokens name the account by its integer id only.
        self.username = principal.uid or str(principal.account_id)
        self.roles = principal.roles
        self.is_staff = self.is_superuser = "admin" in principal.roles

    def __str__(self) -> str:
        return f"GatehouseUser({self.username})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GatehouseUser) and (other.id, other.uid) == (self.id, self.uid)

    def __hash__(self) -> int:
        return hash((self.id, self.uid))


class GatehouseUnavailable(exceptions.APIException):
    status_code = 503
    default_detail = "the token cannot be checked right now"
    default_code = "temporarily_unavailable"


class GatehouseAuthentication(BaseAuthentication):
    def authenticate(self, request: Any) -> tuple[GatehouseUser, Principal] | None:
        token = token_from_header(request.META.get("HTTP_AUTHORIZATION"))
        if token is None:
            return None
        try:
            principal = get_verifier().verify(token)
        except InvalidToken as e:
            answer = refusal(e)
            if answer.status == 503:
                raise GatehouseUnavailable() from None
            request._gatehouse_challenge = answer.headers["WWW-Authenticate"]
            raise exceptions.AuthenticationFailed(answer.body["error_description"], code="invalid_token") from None
        return GatehouseUser(principal), principal

    def authenticate_header(self, request: Any) -> str:
        return getattr(request, "_gatehouse_challenge", None) or f'Bearer realm="{REALM}"'


def gatehouse_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """A plain Django view that needs a good access token (the verifier from settings)."""

    @functools.wraps(view)
    def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            principal = get_verifier().verify(token_from_header(request.META.get("HTTP_AUTHORIZATION")))
        except InvalidToken as e:
            answer = refusal(e)
            return JsonResponse(answer.body, status=answer.status, headers=answer.headers)
        request.gatehouse_principal = principal
        request.user = GatehouseUser(principal)
        return view(request, *args, **kwargs)

    return wrapper
