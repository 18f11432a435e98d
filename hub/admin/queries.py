"""What the admin API reads: tickets, customers, pushes and the audit log,
as the public views (:mod:`hub.views`) show them — masked without ``pii``.

Each list is newest first and pages by id (``before``: the last id of the
previous page), so a page costs the same however long the list is; each
statement follows an index (tickets by id, status, customer or order;
pushes by destination and state; timeline by its ticket; a customer's identities
are on its row).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hub import dead_letters
from hub.pii import PiiCipher, mask_contacts_in
from hub.records import (
    audit_log,
    customers,
    known_by,
    orders,
    outbox,
    raw_events,
    ticket_events,
    tickets,
)
from hub.storage import Database
from hub.views import customer_view, iso, order_view, ticket_view

MAX_LIMIT = 500


@dataclass(frozen=True)
class TicketFilter:
    channel: str | None = None
    status: str | None = None
    type: str | None = None
    customer_id: int | None = None
    order: str | None = None          # the order's external number, any channel
    since: datetime | None = None     # created at or after
    until: datetime | None = None     # created before
    before: int | None = None         # page: ids below this
    limit: int = 50


async def list_tickets(db: Database, f: TicketFilter) -> list[dict[str, Any]]:
    stmt = sa.select(tickets).order_by(tickets.c.id.desc()).limit(min(max(f.limit, 1), MAX_LIMIT))
    for column, value in ((tickets.c.channel, f.channel), (tickets.c.status, f.status),
                          (tickets.c.type, f.type), (tickets.c.customer_id, f.customer_id)):
        if value is not None:
            stmt = stmt.where(column == value)
    if f.order is not None:
        stmt = stmt.where(tickets.c.order_id.in_(sa.select(orders.c.id).where(orders.c.external_id == f.order)))
    if f.since is not None:
        stmt = stmt.where(tickets.c.created_at >= f.since)
    if f.until is not None:
        stmt = stmt.where(tickets.c.created_at < f.until)
    if f.before is not None:
        stmt = stmt.where(tickets.c.id < f.before)
    async with db.read() as conn:
        return [ticket_view(r) for r in (await conn.execute(stmt)).all()]


async def ticket_detail(db: Database, cipher: PiiCipher, ticket_id: int, *, pii: bool) -> dict[str, Any] | None:
    async with db.read() as conn:
        t = (await conn.execute(sa.select(tickets).where(tickets.c.id == ticket_id))).first()
        if t is None:
            return None
        order = (await conn.execute(sa.select(orders).where(orders.c.id == t.order_id))).first() \
            if t.order_id else None
        customer = (await conn.execute(sa.select(customers).where(customers.c.id == t.customer_id))).first() \
            if t.customer_id else None
        timeline = (await conn.execute(sa.select(ticket_events).where(ticket_events.c.ticket_id == ticket_id)
                                       .order_by(ticket_events.c.id))).all()
        raw_ids = sorted({e.raw_event_id for e in timeline if e.raw_event_id is not None})
        raws = (await conn.execute(
            sa.select(raw_events.c.id, raw_events.c.source_id, raw_events.c.dedupe_key, raw_events.c.state,
                      raw_events.c.reason, raw_events.c.mapping_version, raw_events.c.received_at,
                      raw_events.c.processed_at)
            .where(raw_events.c.id.in_(raw_ids)).order_by(raw_events.c.id))).all() if raw_ids else []
        pushes = (await conn.execute(sa.select(*_PUSH_COLUMNS).where(outbox.c.ticket_id == ticket_id)
                                     .order_by(outbox.c.id))).all()
    return {
        "ticket": ticket_view(t), "order": order_view(order),
        "customer": customer_view(customer, cipher, pii=pii),
        "timeline": [{"id": e.id, "kind": e.kind, "from": e.from_status, "to": e.to_status,
                      "detail": masked(e.detail, pii), "raw_event_id": e.raw_event_id, "at": iso(e.at)}
                     for e in timeline],
        "raw_events": [{"id": r.id, "source_id": r.source_id, "dedupe_key": r.dedupe_key, "state": r.state,
                        "reason": r.reason, "mapping_version": r.mapping_version,
                        "received_at": iso(r.received_at), "processed_at": iso(r.processed_at)} for r in raws],
        "pushes": [_push(p, pii) for p in pushes],
    }


async def customer_detail(db: Database, cipher: PiiCipher, customer_id: int, *,
                          pii: bool) -> dict[str, Any] | None:
    async with db.read() as conn:
        c = (await conn.execute(sa.select(customers).where(customers.c.id == customer_id))).first()
        if c is None:
            return None
        their_orders = (await conn.execute(sa.select(orders).where(orders.c.customer_id == customer_id)
                                           .order_by(orders.c.id.desc()).limit(MAX_LIMIT))).all()
        their_tickets = (await conn.execute(sa.select(tickets).where(tickets.c.customer_id == customer_id)
                                            .order_by(tickets.c.id.desc()).limit(MAX_LIMIT))).all()
    return {"customer": customer_view(c, cipher, pii=pii, identities=known_by(c)),
            "merged_into_id": c.merged_into_id,
            "orders": [order_view(o) for o in their_orders],
            "tickets": [ticket_view(t) for t in their_tickets]}


_PUSH_COLUMNS = (outbox.c.id, outbox.c.destination_id, outbox.c.ticket_id, outbox.c.event_type,
                 outbox.c.idempotency_key, outbox.c.state, outbox.c.attempts, outbox.c.next_attempt_at,
                 outbox.c.first_attempt_at, outbox.c.last_status, outbox.c.last_error, outbox.c.last_response,
                 outbox.c.payload, outbox.c.created_at)


def _push(p: Any, pii: bool) -> dict[str, Any]:
    view = {"id": p.id, "destination_id": p.destination_id, "ticket_id": p.ticket_id,
            "event_type": p.event_type, "idempotency_key": p.idempotency_key, "state": p.state,
            "attempts": p.attempts, "next_attempt_at": iso(p.next_attempt_at),
            "first_attempt_at": iso(p.first_attempt_at), "last_status": p.last_status,
            "last_error": masked(p.last_error, pii), "last_response": masked(p.last_response, pii),
            "created_at": iso(p.created_at)}
    # What a pii: true destination was sent carries the contact in clear: only for pii tokens.
    view["payload"] = p.payload if pii else None
    return view


async def list_pushes(db: Database, *, pii: bool, state: str | None = None, destination: str | None = None,
                      before: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
    stmt = sa.select(*_PUSH_COLUMNS).order_by(outbox.c.id.desc()).limit(min(max(limit, 1), MAX_LIMIT))
    if destination is not None:
        stmt = stmt.where(outbox.c.destination_id == destination)
    if state is not None:
        stmt = stmt.where(outbox.c.state == state)
    if before is not None:
        stmt = stmt.where(outbox.c.id < before)
    async with db.read() as conn:
        return [_push(p, pii) for p in (await conn.execute(stmt)).all()]


async def list_audit(db: Database, *, before: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
    stmt = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(min(max(limit, 1), MAX_LIMIT))
    if before is not None:
        stmt = stmt.where(audit_log.c.id < before)
    async with db.read() as conn:
        return [{"id": a.id, "actor": a.actor, "action": a.action, "target": a.target, "detail": a.detail,
                 "at": iso(a.at)} for a in (await conn.execute(stmt)).all()]


async def list_dead_letters(db: Database, *, pii: bool, destination: str | None = None) -> list[dict[str, Any]]:
    """Dead pushes (:func:`hub.dead_letters.list_dead`), each with how many it holds back."""
    return [{"id": d.id, "destination_id": d.destination_id, "ticket_id": d.ticket_id,
             "event_type": d.event_type, "attempts": d.attempts, "last_status": d.last_status,
             "last_error": masked(d.last_error, pii), "last_response": masked(d.last_response, pii),
             "first_attempt_at": iso(d.first_attempt_at), "held": d.held}
            for d in await dead_letters.list_dead(db, destination)]


def masked(value: Any, pii: bool) -> Any:
    """Free text and details as stored, with phones and e-mails masked for tokens without pii."""
    if pii or value is None:
        return value
    if isinstance(value, str):
        return mask_contacts_in(value)
    if isinstance(value, dict):
        return {k: masked(v, pii) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, pii) for v in value]
    return value
