"""Linking an event to its customer and order, inside the pipeline's transaction
(synchronous SQLAlchemy Core: see :meth:`hub.storage.Database.run_write`).

Identities ``(kind, value)`` are unique; a phone identity's value is the blind
index, never the number. When one event's *strong* identities (phone, unionid,
openid, platform buyer ids, e-mail, site user) point at two customers, they are
one person: the younger customer is merged into the older one, its orders,
tickets and identities move, and the merge is recorded. A *weak* identity (a
nickname) may find a customer but never merges two.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hub.pii import PiiCipher, normalize_phone
from hub.records import customer_merges, customers, identities, orders, tickets

WEAK_KINDS = frozenset({"taobao_nick"})


@dataclass(frozen=True)
class Merge:
    winner_id: int
    loser_id: int
    reason: str
    moved_ticket_ids: tuple[int, ...]


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


# Statements built once: the pipeline runs them for every event, and building
# a statement (and its cache key) costs more than SQLite takes to run it.
_ROOT = sa.select(customers.c.merged_into_id).where(customers.c.id == sa.bindparam("cid"))
_NEW_CUSTOMER = sa.insert(customers).returning(customers.c.id)
_ADD_IDENTITY = sa.insert(identities)
_FIND_IDENTITIES = (sa.select(identities.c.customer_id, identities.c.kind, identities.c.value)
                    .where(sa.tuple_(identities.c.kind, identities.c.value)
                           .in_(sa.bindparam("pairs", expanding=True))))
_CUSTOMER = sa.select(customers).where(customers.c.id == sa.bindparam("cid"))
_ORDER = sa.select(orders).where(orders.c.channel == sa.bindparam("channel"),
                                 orders.c.external_id == sa.bindparam("external_id"))
_ORDER_ANY_CHANNEL = sa.select(orders).where(orders.c.external_id == sa.bindparam("external_id")).limit(2)
_NEW_ORDER = sa.insert(orders).returning(orders.c.id)


def update_by_id(table: sa.Table) -> Any:
    """UPDATE table SET <the columns named in the parameters> WHERE id = :row_id."""
    return sa.update(table).where(table.c.id == sa.bindparam("row_id"))


_UPDATE_CUSTOMER = update_by_id(customers)
_UPDATE_ORDER = update_by_id(orders)


def _root(conn: sa.Connection, customer_id: int) -> int:
    seen = set()
    while True:
        seen.add(customer_id)
        nxt = conn.execute(_ROOT, {"cid": customer_id}).scalar()
        if nxt is None or nxt in seen:
            return customer_id
        customer_id = nxt


def link_customer(conn: sa.Connection, cipher: PiiCipher, fields: dict[str, Any],
                  raw_identities: list[tuple[str, str]], now: datetime,
                  raw_event_id: int | None = None) -> tuple[int | None, list[Merge]]:
    pairs = identity_pairs(cipher, raw_identities)
    if not pairs:
        return None, []
    found = conn.execute(_FIND_IDENTITIES, {"pairs": pairs}).all()
    strong: dict[int, str] = {}
    weak: set[int] = set()
    for cid, kind, _ in found:
        root = _root(conn, cid)
        if kind in WEAK_KINDS:
            weak.add(root)
        else:
            strong.setdefault(root, kind)
    merges: list[Merge] = []
    if strong:
        customer_id = min(strong)
        for loser in sorted(set(strong) - {customer_id}):
            merges.append(merge_customers(conn, customer_id, loser,
                                          f"same {strong[loser]}", now, raw_event_id))
    elif len(weak) == 1 and all(k in WEAK_KINDS for k, _ in pairs):
        # A nickname alone may find a customer; beside a strong identity no one
        # has seen yet it is someone else with the same (often masked) nick.
        customer_id = next(iter(weak))
    else:
        customer_id = conn.execute(_NEW_CUSTOMER, {"created_at": now, "updated_at": now}).scalar_one()
    have = {(kind, value) for _, kind, value in found}  # merges move identities, never drop them
    missing = [(k, v) for k, v in pairs if (k, v) not in have]
    if missing:
        conn.execute(_ADD_IDENTITY, [
            {"customer_id": customer_id, "kind": k, "value": v, "created_at": now} for k, v in missing])
    _update_contact(conn, cipher, customer_id, fields, now)
    return customer_id, merges


def _update_contact(conn: sa.Connection, cipher: PiiCipher, customer_id: int,
                    fields: dict[str, Any], now: datetime) -> None:
    row = conn.execute(_CUSTOMER, {"cid": customer_id}).one()
    values: dict[str, Any] = {}
    if fields.get("display_name") and not row.display_name:
        values["display_name"] = fields["display_name"]
    phone = normalize_phone(fields.get("phone"))
    if phone:
        index = cipher.blind_index(phone)
        if index != row.phone_index:
            values["phone_enc"] = cipher.encrypt(phone)
            values["phone_index"] = index
    if fields.get("address") and (row.address_enc is None
                                  or cipher.decrypt(row.address_enc) != fields["address"]):
        values["address_enc"] = cipher.encrypt(fields["address"])
    if fields.get("email") and fields["email"] != row.email:
        values["email"] = fields["email"]
    if values:
        values["updated_at"] = now
        conn.execute(_UPDATE_CUSTOMER, values | {"row_id": customer_id})


def merge_customers(conn: sa.Connection, winner: int, loser: int, reason: str,
                    now: datetime, raw_event_id: int | None = None) -> Merge:
    moved = tuple(r[0] for r in conn.execute(
        sa.select(tickets.c.id).where(tickets.c.customer_id == loser)).all())
    conn.execute(sa.update(identities).where(identities.c.customer_id == loser)
                 .values(customer_id=winner))
    conn.execute(sa.update(orders).where(orders.c.customer_id == loser).values(customer_id=winner))
    conn.execute(sa.update(tickets).where(tickets.c.customer_id == loser)
                 .values(customer_id=winner, updated_at=now))
    conn.execute(sa.update(customers).where(customers.c.id == loser)
                 .values(merged_into_id=winner, updated_at=now))
    conn.execute(sa.insert(customer_merges).values(
        winner_id=winner, loser_id=loser, reason=reason, raw_event_id=raw_event_id, at=now))
    return Merge(winner, loser, reason, moved)


def link_order(conn: sa.Connection, channel: str, source_id: str, fields: dict[str, Any],
               customer_id: int | None, now: datetime) -> int:
    """Find or create the order; an order only named by an event is a stub."""
    row = conn.execute(_ORDER, {"channel": channel, "external_id": fields["external_id"]}).first()
    if row is None and fields.get("match") == "any_channel":
        found = conn.execute(_ORDER_ANY_CHANNEL, {"external_id": fields["external_id"]}).all()
        if len(found) == 1:  # ambiguous across channels: do not guess
            row = found[0]
    known = {k: v for k, v in fields.items() if k not in ("external_id", "match") and v is not None}
    full = "paid_amount" in known or "placed_at" in known
    if row is None:
        return int(conn.execute(_NEW_ORDER, {
            "channel": channel, "source_id": source_id, "external_id": fields["external_id"],
            "customer_id": customer_id, "is_stub": not full, "created_at": now, "updated_at": now,
            **known}).scalar_one())
    values = {k: v for k, v in known.items() if getattr(row, k) != v}
    if customer_id is not None and row.customer_id is None:
        values["customer_id"] = customer_id
    if full and row.is_stub:
        values["is_stub"] = False
    if values:
        values["updated_at"] = now
        conn.execute(_UPDATE_ORDER, values | {"row_id": row.id})
    return int(row.id)
