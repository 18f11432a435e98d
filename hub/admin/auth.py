"""Who is calling the admin API: bearer tokens from ``security.tokens``.

Each token has a role — ``viewer`` reads, ``operator`` also acts (retry,
drop, replay), ``admin`` also reads the audit log — and may have the ``pii``
grant, without which every phone, address, e-mail and name in an answer is
masked. Tokens are compared in constant time, against every configured one,
so the time an answer takes says nothing about how close a guess was.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from hub.config import TokenConfig

ROLES = ("viewer", "operator", "admin")


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    pii: bool

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


class Unauthorized(Exception):
    """No token, or not one of ours: 401."""


class Forbidden(Exception):
    """A token whose role may not do this: 403."""


class Tokens:
    def __init__(self, tokens: list[TokenConfig]):
        # Empty tokens (a variable set to "") never authenticate anyone.
        self._known = [(t.token.get_secret_value().encode(), Principal(t.name, t.role, t.pii))
                       for t in tokens if t.token.get_secret_value()]

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthorized("an Authorization: Bearer <token> header is required")
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise Unauthorized("use Authorization: Bearer <token>")
        candidate = given.strip().encode("utf-8", "surrogateescape")
        found = None
        for secret, principal in self._known:
            if hmac.compare_digest(secret, candidate):
                found = principal
        if found is None:
            raise Unauthorized("unknown token")
        return found

    def require(self, authorization: str | None, role: str) -> Principal:
        who = self.authenticate(authorization)
        if not who.may(role):
            raise Forbidden(f"token {who.name!r} is a {who.role}; this needs {role}")
        return who
