"""Identities: how an event's customer is recognised (the rules; :mod:`hub.apply` applies them).

Identities ``(kind, value)`` are unique; a phone identity's value is the blind
index, never the number. When one event's *strong* identities (phone, unionid,
openid, platform buyer ids, e-mail, site user) point at two customers, they are
one person: the younger customer is merged into the older one, its orders,
tickets and identities move, and the merge is recorded. A *weak* identity (a
nickname) may find a customer but never merges two.
"""

from __future__ import annotations

from hub.pii import PiiCipher

WEAK_KINDS = frozenset({"taobao_nick"})


def identity_pairs(cipher: PiiCipher, raw: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Normalize identities for storage and lookup (phones become blind indexes)."""
    out: list[tuple[str, str]] = []
    for kind, value in raw:
        if kind == "phone":
            idx = cipher.blind_index(value)
            if idx is None:
                continue
            value = idx
        elif kind == "email":
            value = value.strip().lower()
        else:
            value = value.strip()
        if value and (kind, value) not in out:
            out.append((kind, value))
    return out
