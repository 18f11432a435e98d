"""Dead letters: pushes that gave up, and what an operator does about them.

A dead push holds that ticket's later pushes to the same destination (see
:mod:`hub.delivery`), so the order a receiver sees never skips a step. It
stays until an operator either *retries* it (back to pending, attempted
afresh with a new backoff schedule; the pushes behind it follow in order) or
*drops* it with a reason (the ones behind it go on without it). Both are
written to the ticket's timeline and to the audit log, with who did it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hub.records import audit_log, outbox, ticket_events, utcnow
from hub.storage import Database


@dataclass(frozen=True)
class DeadLetter:
    id: int
    destination_id: str
    ticket_id: int
    event_type: str
    attempts: int
    last_status: int | None
    last_error: str | None
    last_response: str | None
    first_attempt_at: datetime | None
    held: int  # later pushes of the same ticket and destination waiting behind it


_LATER = outbox.alias("later")


async def list_dead(db: Database, destination: str | None = None, limit: int = 100) -> list[DeadLetter]:
    held = (sa.select(sa.func.count()).select_from(_LATER)
            .where(_LATER.c.ordering_key == outbox.c.ordering_key, _LATER.c.state == "pending",
                   _LATER.c.id > outbox.c.id).scalar_subquery())
    stmt = (sa.select(outbox.c.id, outbox.c.destination_id, outbox.c.ticket_id, outbox.c.event_type,
                      outbox.c.attempts, outbox.c.last_status, outbox.c.last_error, outbox.c.last_response,
                      outbox.c.first_attempt_at, held.label("held"))
            .where(outbox.c.state == "dead").order_by(outbox.c.id).limit(limit))
    if destination is not None:
        stmt = stmt.where(outbox.c.destination_id == destination)
    async with db.read() as conn:
        return [DeadLetter(**r._mapping) for r in (await conn.execute(stmt)).all()]


async def retry(db: Database, ids: list[int], *, actor: str) -> list[int]:
    """Dead → pending, due now, attempts counted afresh; the ids that were dead."""
    return await _act(db, ids, actor, "dlq.retry", {
        "state": "pending", "attempts": 0, "first_attempt_at": None, "next_attempt_at": utcnow(),
        "claimed_until": None, "claim_token": None}, "sync_retried", None)


async def drop(db: Database, ids: list[int], *, actor: str, reason: str) -> list[int]:
    """Dead → dropped: never sent; the ticket's later pushes go on without it."""
    if not reason.strip():
        raise ValueError("say why the push is dropped")
    return await _act(db, ids, actor, "dlq.drop", {"state": "dropped", "last_error": f"dropped: {reason}"},
                      "sync_dropped", reason)


async def _act(db: Database, ids: list[int], actor: str, action: str, values: dict[str, Any],
               kind: str, reason: str | None) -> list[int]:
    now = utcnow()

    def work(conn: sa.Connection) -> list[int]:
        rows = conn.execute(db.for_update(
            sa.select(outbox.c.id, outbox.c.ticket_id, outbox.c.destination_id, outbox.c.last_error)
            .where(outbox.c.id.in_(ids), outbox.c.state == "dead"))).all()
        if not rows:
            return []
        found = [r.id for r in rows]
        conn.execute(sa.update(outbox).where(outbox.c.id.in_(found)).values(**values))
        conn.execute(sa.insert(ticket_events), [
            {"ticket_id": r.ticket_id, "kind": kind, "at": now,
             "detail": {"destination": r.destination_id, "outbox_id": r.id, "by": actor,
                        **({"reason": reason} if reason else {})}} for r in rows])
        conn.execute(sa.insert(audit_log), [
            {"actor": actor, "action": action, "target": f"outbox:{r.id}", "at": now,
             "detail": {"before": {"state": "dead", "last_error": r.last_error},
                        "after": {"state": values["state"]}, **({"reason": reason} if reason else {})}}
            for r in rows])
        return found

    return await db.run_write(work)
