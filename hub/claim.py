"""The pipeline's first and last stage: claim pending raw events, settle them.

A claim takes the oldest pending raw events in id order (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so any number of hub processes share the inbox; on
SQLite the write transaction itself is the claim). Settling writes every
event's outcome — done, quarantined, or left pending with one more attempt —
in one statement per kind, inside the same transaction as the events'
effects, so an event is settled exactly when what it did is committed.

Reasons pass the redaction of error text on the way in: what a mapping or an
exception quotes of an event is a code, never a customer's data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hub.bulk import Writes
from hub.records import raw_events
from hub.redaction import scrub_error_text
from hub.storage import Database

MAX_REASON = 2000


@dataclass(frozen=True, slots=True)
class Claimed:
    """One raw event as the pipeline reads it."""

    id: int
    source_id: str
    dedupe_key: str
    headers: Any
    body: str
    attempts: int


@dataclass(slots=True)
class Settlement:
    """What became of one claimed event."""

    raw_id: int
    state: str                    # done | quarantined | pending (a retry: attempts + 1)
    reason: str | None = None
    mapping: str | None = None
    ticket_id: int | None = None
    attempts: int | None = None   # set for retries


_PENDING = (sa.select(raw_events.c.id, raw_events.c.source_id, raw_events.c.dedupe_key,
                      raw_events.c.headers, raw_events.c.body, raw_events.c.attempts)
            .where(raw_events.c.state == "pending").order_by(raw_events.c.id)
            .limit(sa.bindparam("size")))
_ANY_PENDING = sa.select(raw_events.c.id).where(raw_events.c.state == "pending").limit(1)


def claim(conn: sa.Connection, db: Database, size: int) -> list[Claimed]:
    """The oldest ``size`` pending events, locked for this transaction."""
    rows = conn.execute(db.for_update_skip_locked(_PENDING), {"size": size}).all()
    return [Claimed(r.id, r.source_id, r.dedupe_key, r.headers, r.body, r.attempts) for r in rows]


def reason_text(reason: str | None) -> str | None:
    return scrub_error_text(reason)[:MAX_REASON] if reason is not None else None


_SETTLED = ("state", "reason", "mapping_version", "ticket_id", "processed_at")


class ClaimLost(Exception):
    """Claimed events were settled by someone else meanwhile: this batch is not written."""


def settle(w: Writes, settlements: list[Settlement], now: datetime) -> None:
    """Write every outcome: one executemany for the settled, one for the retries.
    Only events still pending are settled; if any was not (someone else settled
    it since it was claimed — possible only where claims take no lock, SQLite's
    one pipeline), ClaimLost: the caller rolls the whole batch back."""
    expected = sum(1 for s in settlements if s.state != "pending")

    def all_settled(changed: int) -> None:
        if changed != expected:
            raise ClaimLost(f"{expected - changed} of {expected} claimed events were settled meanwhile")

    w.update(raw_events, _SETTLED, [
        {"id": s.raw_id, "state": s.state, "reason": reason_text(s.reason), "mapping_version": s.mapping,
         "ticket_id": s.ticket_id, "processed_at": now} for s in settlements if s.state != "pending"],
        only_if=("state", "pending"), check=all_settled)
    w.update(raw_events, ("attempts",), [
        {"id": s.raw_id, "attempts": s.attempts} for s in settlements if s.state == "pending"])


def count_failure(conn: sa.Connection, raw_id: int) -> int | None:
    """One more failed attempt of a pending event; its new count (None: not pending)."""
    return conn.execute(
        sa.update(raw_events).where(raw_events.c.id == raw_id, raw_events.c.state == "pending")
        .values(attempts=raw_events.c.attempts + 1).returning(raw_events.c.attempts)).scalar()


def any_pending(conn: sa.Connection) -> bool:
    return conn.execute(_ANY_PENDING).first() is not None
