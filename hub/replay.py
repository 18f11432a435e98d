"""Replay: raw events through the mappings as they are now, after a mapping change.

The inbox keeps every event exactly as received, so a mapping fixed today can
be applied to what came in last week. A replay is two steps, so an operator
sees what it would do before it does anything:

- :func:`plan` reads and maps, writes nothing. For each ticket in scope it
  folds the events that built it (its timeline's ``created``,
  ``status_changed`` and ``updated`` entries, oldest first, each event's
  non-empty fields overriding — as the pipeline applied them) through the
  current mapping, and compares the result with the ticket: a
  :class:`TicketDiff` per ticket that would change. With ``quarantined`` it
  also maps each quarantined event again: a :class:`Requeue` says whether it
  would now go through.
- :func:`apply` writes a plan: each changed ticket is updated in the same
  transaction as a ``replayed`` timeline entry and its pushes — one
  ``ticket.updated`` change per ticket, keyed by the replay's id, so each
  destination the sync rules name receives it once. A ticket that changed
  since the plan was made is skipped (replan and replay it). Quarantined
  events go back to ``pending`` and the pipeline takes them like new ones.
  The replay and its figures are in the audit log.

What a replay re-derives is the fields an event may update (type, reason,
description, priority, refund amount, items). Status is not rewritten: it
moves only by the platform's events through the lifecycle, and a move has
its own pushes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hub.apply import UPDATABLE
from hub.config import SyncRule
from hub.errors import Quarantine
from hub.outbox_rows import outbox_rows
from hub.pii import PiiCipher
from hub.pipeline import normalize_row
from hub.records import (
    audit_log,
    customers,
    known_by,
    orders,
    outbox,
    raw_events,
    ticket_events,
    tickets,
    utcnow,
)
from hub.redaction import error_summary
from hub.runtimes import DestinationRuntime, SourceRuntime
from hub.storage import Database
from hub.sync import Change, destinations_for

PAGE = 500
# Timeline entries whose raw event set the ticket's fields (interactions and refusals did not).
BUILT_BY = ("created", "status_changed", "updated")
FREE_TEXT = ("description", "reason_text")


@dataclass(frozen=True)
class Scope:
    source: str | None = None
    since: datetime | None = None        # tickets created at or after
    until: datetime | None = None        # tickets created before
    ticket_ids: tuple[int, ...] = ()
    quarantined: bool = False            # also quarantined events (received in [since, until))


@dataclass(frozen=True)
class TicketDiff:
    ticket_id: int
    source_id: str
    external_id: str
    changes: dict[str, tuple[Any, Any]]  # field → (now, after the replay)
    destinations: tuple[str, ...]        # who receives the ticket.updated push


@dataclass(frozen=True)
class Requeue:
    raw_event_id: int
    source_id: str
    reason: str | None                   # why it was quarantined
    outcome: str                         # what the current mapping makes of it


@dataclass
class Plan:
    tickets: list[TicketDiff] = field(default_factory=list)
    requeue: list[Requeue] = field(default_factory=list)
    examined: int = 0                    # tickets looked at
    unmappable: int = 0                  # tickets whose events the mapping now refuses (left alone)


@dataclass(frozen=True)
class Applied:
    replay_id: int
    tickets: int
    pushes: int
    skipped: list[int]                   # changed since the plan: not touched
    requeued: int


def _same(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, int | float) and isinstance(b, int | float) and float(a) == float(b))


async def plan(db: Database, cipher: PiiCipher, sources: dict[str, SourceRuntime], rules: list[SyncRule],
               scope: Scope, progress: Callable[[int], None] | None = None) -> Plan:
    out = Plan()
    after = 0
    while True:
        stmt = sa.select(tickets).where(tickets.c.id > after).order_by(tickets.c.id).limit(PAGE)
        if scope.source is not None:
            stmt = stmt.where(tickets.c.source_id == scope.source)
        if scope.since is not None:
            stmt = stmt.where(tickets.c.created_at >= scope.since)
        if scope.until is not None:
            stmt = stmt.where(tickets.c.created_at < scope.until)
        if scope.ticket_ids:
            stmt = stmt.where(tickets.c.id.in_(scope.ticket_ids))
        async with db.read() as conn:
            page = (await conn.execute(stmt)).all()
            if not page:
                break
            built = (await conn.execute(
                sa.select(ticket_events.c.ticket_id, ticket_events.c.raw_event_id)
                .where(ticket_events.c.ticket_id.in_([t.id for t in page]),
                       ticket_events.c.kind.in_(BUILT_BY), ticket_events.c.raw_event_id.is_not(None))
                .order_by(ticket_events.c.id))).all()
            raw_ids = sorted({b.raw_event_id for b in built})
            raws = {r.id: r for r in (await conn.execute(
                sa.select(raw_events.c.id, raw_events.c.source_id, raw_events.c.headers, raw_events.c.body)
                .where(raw_events.c.id.in_(raw_ids)))).all()} if raw_ids else {}
        events_of: dict[int, list[int]] = {}
        for b in built:
            if b.raw_event_id not in events_of.setdefault(b.ticket_id, []):
                events_of[b.ticket_id].append(b.raw_event_id)
        for t in page:
            out.examined += 1
            diff = _diff(cipher, sources.get(t.source_id), t, [raws[i] for i in events_of.get(t.id, ()) if i in raws])
            if diff is None:
                out.unmappable += 1
            elif diff:
                change = Change("ticket.updated", t.status, t.status, "replay")
                out.tickets.append(TicketDiff(t.id, t.source_id, t.external_id, diff,
                                              tuple(destinations_for(rules, change, t))))
        after = page[-1].id
        if progress is not None:
            progress(out.examined)
    if scope.quarantined:
        out.requeue = await _requeue_plan(db, cipher, sources, scope)
    return out


def _diff(cipher: PiiCipher, rt: SourceRuntime | None, ticket: Any, raws: list[Any]) -> dict[str, Any] | None:
    """What the current mapping makes of the ticket's fields ({} if the same; None if
    its events no longer map, or map to another ticket)."""
    if rt is None or not raws:
        return {}
    folded: dict[str, Any] = {}
    for raw in raws:
        try:
            n = normalize_row(cipher, rt, raw)
        except Quarantine:
            return None
        except Exception:  # noqa: BLE001 - one ticket's events must not stop a replay
            return None
        if n.ignored is not None or str(n.ticket.get("external_id")) != ticket.external_id:
            return None
        for k in UPDATABLE:
            if n.ticket.get(k) is not None:
                folded[k] = n.ticket[k]
    now = ticket._mapping
    return {k: (now[k], v) for k, v in folded.items() if not _same(now[k], v)}


async def _requeue_plan(db: Database, cipher: PiiCipher, sources: dict[str, SourceRuntime],
                        scope: Scope) -> list[Requeue]:
    out: list[Requeue] = []
    after = 0
    while True:
        stmt = (sa.select(raw_events.c.id, raw_events.c.source_id, raw_events.c.headers, raw_events.c.body,
                          raw_events.c.reason)
                .where(raw_events.c.state == "quarantined", raw_events.c.id > after)
                .order_by(raw_events.c.id).limit(PAGE))  # along ix_raw_events_state_id
        if scope.source is not None:
            stmt = stmt.where(raw_events.c.source_id == scope.source)
        if scope.since is not None:
            stmt = stmt.where(raw_events.c.received_at >= scope.since)
        if scope.until is not None:
            stmt = stmt.where(raw_events.c.received_at < scope.until)
        async with db.read() as conn:
            page = (await conn.execute(stmt)).all()
        if not page:
            return out
        for r in page:
            try:
                n = normalize_row(cipher, sources.get(r.source_id), r)
                outcome = (f"ignored: {n.ignored}" if n.ignored is not None
                           else f"maps: ticket {n.ticket.get('external_id')} ({n.ticket.get('status')})")
            except Quarantine as q:
                outcome = f"still quarantined: {q}"
            except Exception as err:  # noqa: BLE001
                outcome = f"still quarantined: {error_summary(err)}"
            out.append(Requeue(r.id, r.source_id, r.reason, outcome))
        after = page[-1].id


async def apply(db: Database, cipher: PiiCipher, destinations: dict[str, DestinationRuntime],
                rules: list[SyncRule], p: Plan, *, actor: str, mapping_labels: dict[str, str]) -> Applied:
    now = utcnow()
    async with db.write() as conn:
        replay_id = (await conn.execute(sa.insert(audit_log).values(
            actor=actor, action="replay", target="tickets", at=now,
            detail={"planned": {"tickets": len(p.tickets),
                                "requeue": sum(1 for r in p.requeue if r.outcome.startswith(("maps", "ignored")))},
                    "mappings": mapping_labels}).returning(audit_log.c.id))).scalar_one()
    done: list[int] = []
    skipped: list[int] = []
    pushes = 0
    for start in range(0, len(p.tickets), PAGE):
        chunk = p.tickets[start:start + PAGE]
        async with db.write() as conn:
            n_done, n_pushes, n_skipped = await _apply_chunk(conn, db, cipher, destinations, rules, chunk,
                                                             replay_id, now)
        done += n_done
        skipped += n_skipped
        pushes += n_pushes
    requeued = 0
    wanted = [r.raw_event_id for r in p.requeue if r.outcome.startswith(("maps", "ignored"))]
    for start in range(0, len(wanted), PAGE):
        async with db.write() as conn:
            res = await conn.execute(sa.update(raw_events).where(
                raw_events.c.id.in_(wanted[start:start + PAGE]), raw_events.c.state == "quarantined",
            ).values(state="pending", reason=None, attempts=0, processed_at=None))
            requeued += res.rowcount or 0
    async with db.write() as conn:
        await conn.execute(sa.update(audit_log).where(audit_log.c.id == replay_id).values(detail={
            "tickets": {"updated": len(done), "skipped": skipped[:100], "ids": done[:100]},
            "pushes": pushes, "requeued": requeued, "mappings": mapping_labels,
            "fields": sorted({f for d in p.tickets for f in d.changes})}))
    return Applied(replay_id, len(done), pushes, skipped, requeued)


async def _apply_chunk(conn: Any, db: Database, cipher: PiiCipher, destinations: dict[str, DestinationRuntime],
                       rules: list[SyncRule], chunk: list[TicketDiff], replay_id: int,
                       now: datetime) -> tuple[list[int], int, list[int]]:
    stmt = sa.select(tickets).where(tickets.c.id.in_([d.ticket_id for d in chunk]))
    if not db.is_sqlite:
        stmt = stmt.with_for_update()  # the pipeline may be writing the same tickets
    current = {t.id: t for t in (await conn.execute(stmt)).all()}
    done: list[int] = []
    skipped: list[int] = []
    rows: list[dict[str, Any]] = []
    for d in chunk:
        t = current.get(d.ticket_id)
        if t is None or any(not _same(t._mapping[k], before) for k, (before, _) in d.changes.items()):
            skipped.append(d.ticket_id)
            continue
        values = {k: after for k, (_, after) in d.changes.items()}
        await conn.execute(sa.update(tickets).where(tickets.c.id == t.id).values(**values, updated_at=now))
        await conn.execute(sa.insert(ticket_events).values(
            ticket_id=t.id, kind="replayed", at=now,
            detail={"replay": replay_id, "fields": {k: ("(changed)" if k in FREE_TEXT else [b, a])
                                                     for k, (b, a) in d.changes.items()}}))
        updated = {**t._mapping, **values, "updated_at": now}
        order, customer, ids = await _context(conn, t)
        rows += outbox_rows(rules, destinations, cipher, _Attrs(updated), order, customer, ids,
                            [Change("ticket.updated", t.status, t.status, f"replay{replay_id}")], now)
        done.append(t.id)
    if rows:
        await conn.execute(sa.insert(outbox), rows)
    return done, len(rows), skipped


class _Attrs:
    """A mapping read as attributes, as the views read a row."""

    def __init__(self, values: dict[str, Any]):
        self.__dict__.update(values)


async def _context(conn: Any, t: Any) -> tuple[Any, Any, list[tuple[str, str]]]:
    order = (await conn.execute(sa.select(orders).where(orders.c.id == t.order_id))).first() \
        if t.order_id is not None else None
    customer = None
    cid = t.customer_id
    for _ in range(8):  # a merged customer's winner (merges chain only a few deep)
        if cid is None:
            break
        customer = (await conn.execute(sa.select(customers).where(customers.c.id == cid))).first()
        if customer is None or customer.merged_into_id is None:
            break
        cid = customer.merged_into_id
    return order, customer, known_by(customer) if customer is not None else []
