"""Who a good token speaks for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Principal:
    """The caller a token proves.

    - `account_id`: Gatehouse's integer account id, from the access token's `account_id`
      claim (the Gatehouse profile), else `user_id` (the drf and simple profiles), else
      the introspection answer's; None when the token carries neither (the phone profile
      names the account by its uid only).
    - `uid`: the account's UUID (`sub`); None in tokens of the drf and simple profiles,
      which name the account by `user_id` only (introspection answers always carry it).
      Every principal has one of the two.
    - `session_id`: the session (`sid`) the token belongs to: what a kick ends.
    - `roles`: the account's roles when the token was minted (`roles` claim). A role
      granted or taken away reaches offline verifiers with the next access token.
    - `claims`: every claim (or introspection field), read-only.
    """

    account_id: int | None
    uid: str | None
    session_id: str
    roles: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Principal:
        """From verified JWT claims or an active introspection answer (same names)."""
        account_id = None
        for name in ("account_id", "user_id"):
            value = claims.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                account_id = value
                break
        roles = claims.get("roles")
        roles = tuple(r for r in roles if isinstance(r, str)) if isinstance(roles, list | tuple) else ()
        return cls(
            account_id=account_id,
            uid=None if claims.get("sub") is None else str(claims["sub"]),
            session_id=str(claims["sid"]),
            roles=roles,
            claims=MappingProxyType(dict(claims)),
        )
