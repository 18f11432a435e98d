"""Who is calling the admin API: bearer tokens from ``security.tokens``.

Each token has a role — ``viewer`` reads, ``operator`` also acts (retry,
drop, replay), ``admin`` also reads the audit log — and may have the ``pii``
grant, without which every phone, address, e-mail and name in an answer is
masked. Tokens are compared in constant time, against every configured one,
so the time an answer takes says nothing about how close a guess was.

The dashboard signs in once with a token and then carries a session cookie:
``name.expiry.mac``, the MAC keyed with that token's own secret. Any hub
process can check it (nothing is stored), and removing or changing the token
ends its sessions at the next reload.
"""

from __future__ import annotations

import hashlib
import hmac
import time
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

    # ------------------------------------------------------------ dashboard sessions

    def _secret_of(self, name: str) -> tuple[bytes, Principal] | None:
        return next(((sec, p) for sec, p in self._known if p.name == name), None)

    @staticmethod
    def _mac(secret: bytes, message: str) -> str:
        return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()

    def session_for(self, who: Principal, ttl_seconds: int, now: float | None = None) -> str:
        found = self._secret_of(who.name)
        if found is None:
            raise Unauthorized("unknown token")
        expiry = int((now if now is not None else time.time()) + ttl_seconds)
        return f"{who.name}.{expiry}.{self._mac(found[0], f'session:{who.name}:{expiry}')}"

    def from_session(self, value: str | None, now: float | None = None) -> Principal:
        parts = (value or "").rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            raise Unauthorized("sign in with a token")
        name, expiry, mac = parts
        found = self._secret_of(name)
        if found is None or not hmac.compare_digest(mac, self._mac(found[0], f"session:{name}:{expiry}")):
            raise Unauthorized("the session is not valid any more; sign in again")
        if int(expiry) < (now if now is not None else time.time()):
            raise Unauthorized("the session has ended; sign in again")
        return found[1]

    def csrf_for(self, session: str) -> str:
        """The form token that proves a POST came from a page we served to this session."""
        found = self._secret_of(session.rsplit(".", 2)[0])
        return self._mac(found[0], f"csrf:{session}") if found else ""
