"""Delivery's claims and outcomes on SQLite: plain driver statements, values rendered first.

Delivery writes twice per batch of pushes — a claim, then the outcomes with
their timeline events — and on SQLite every such transaction holds the one
write lock that intake's commits (and so every acknowledgement) wait behind.
Through SQLAlchemy each cost more in Python than SQLite took to store the
rows: a bind processor per value of an executemany, a compiled-statement
lookup per call, a result row object per row (measured: the recorder's
transaction held the lock 11 ms for ~90 outcomes). Here the values are
rendered before the lock is taken (:func:`render_outcomes`, in the event
loop), and under it only the driver's statements run — the same statements
:class:`hub.delivery.Deliverer` sends through SQLAlchemy on PostgreSQL,
fenced the same way by each claim's token.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from hub.bulk import sqlite_time

OPEN_STATES = ("pending", "dead")  # what holds a ticket's later pushes back (hub.delivery uses it too)


class ClaimedRow(NamedTuple):
    """What an attempt needs of an outbox row (as the SQLAlchemy path selects it)."""

    id: int
    destination_id: str
    ticket_id: int
    idempotency_key: str
    event_type: str
    payload: str
    attempts: int
    first_attempt_at: datetime | None


# Along ix_outbox_claim (destination, state, next_attempt_at, id): the scan
# stops at the limit, no sort; an older open row of the same ordering key
# (ix_outbox_ordering) holds a row back.
# Due and claimable: bound to (now, now) after the destination(s).
_DUE = ("AND state = 'pending' AND next_attempt_at <= ? AND (claimed_until IS NULL OR claimed_until < ?) "
        "AND NOT EXISTS (SELECT 1 FROM outbox AS earlier WHERE earlier.ordering_key = outbox.ordering_key "
        f"AND earlier.state IN {OPEN_STATES!r} AND earlier.id < outbox.id)")
_CLAIM = ("SELECT id, destination_id, ticket_id, idempotency_key, event_type, payload, attempts, first_attempt_at "
          f"FROM outbox WHERE destination_id = ? {_DUE} ORDER BY next_attempt_at, id LIMIT ?")


def any_due(conn: Any, destinations: list[str], now: datetime) -> bool:
    """Whether a claim would find a push now (``conn``: a SQLAlchemy connection, read only)."""
    now_text = sqlite_time(now)
    sql = _any_due_sql(len(destinations))
    return conn.exec_driver_sql(sql, (*destinations, now_text, now_text)).first() is not None


@functools.cache
def _any_due_sql(n: int) -> str:
    # The claim's conditions, any destination of ours, the first row found.
    return f"SELECT id FROM outbox WHERE destination_id IN {_in(n)} {_DUE} LIMIT 1"


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).replace(tzinfo=UTC)


def _in(n: int) -> str:
    return f"({', '.join('?' * n)})"


def claim(raw: sqlite3.Connection, free: dict[str, int], budget: int, now: datetime, until: datetime,
          token: str) -> list[ClaimedRow]:
    """Per destination up to its room (``budget`` in all), oldest due first; each
    row claimed until ``until`` under ``token``. Inside the caller's transaction."""
    now_text = sqlite_time(now)
    claimed: list[ClaimedRow] = []
    for dest, room in free.items():
        if budget <= 0:
            break
        rows = raw.execute(_CLAIM, (dest, now_text, now_text, min(room, budget))).fetchall()
        claimed.extend(ClaimedRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], _time(r[7])) for r in rows)
        budget -= len(rows)
    if claimed:
        ids = [r.id for r in claimed]
        raw.execute(f"UPDATE outbox SET claimed_until = ?, claim_token = ? WHERE id IN {_in(len(ids))}",
                    (sqlite_time(until), token, *ids))
    return claimed


@dataclass(slots=True)
class RenderedOutcome:
    """One outcome as the driver takes it: its UPDATE, and its timeline row (if any)."""

    outbox_id: int
    token: str
    sql: str
    params: tuple[Any, ...]
    timeline: tuple[Any, ...] | None


_DELIVERED = ("UPDATE outbox SET state = 'delivered', attempts = attempts + 1, "
              "first_attempt_at = coalesce(first_attempt_at, ?), last_status = ?, last_error = NULL, "
              "last_response = NULL, delivered_at = ?, claimed_until = NULL, claim_token = NULL WHERE id = ?")
_FAILED = ("UPDATE outbox SET state = ?, attempts = ?, first_attempt_at = ?, last_status = ?, last_error = ?, "
           "last_response = ?, next_attempt_at = ?, claimed_until = NULL, claim_token = NULL WHERE id = ?")
_RELEASED = "UPDATE outbox SET claimed_until = NULL, claim_token = NULL WHERE id = ?"
_TIMELINE = "INSERT INTO ticket_events (ticket_id, kind, detail, at) VALUES (?, ?, ?, ?)"


def render(outbox_id: int, token: str, state: str, *, attempts: int, first: datetime | None,
           status: int | None, error: str | None, response: str | None, next_at: datetime,
           now: datetime, timeline: dict[str, Any] | None) -> RenderedOutcome:
    """One outcome's statement and timeline row, rendered (no database)."""
    if state == "released":
        return RenderedOutcome(outbox_id, token, _RELEASED, (outbox_id,), None)
    params: tuple[Any, ...]
    if state == "delivered":
        now_text = sqlite_time(now)
        sql, params = _DELIVERED, (now_text, status, now_text, outbox_id)
    else:
        sql, params = _FAILED, (state, attempts, sqlite_time(first), status, error, response,
                                sqlite_time(next_at), outbox_id)
    row = None
    if timeline is not None:
        row = (timeline["ticket_id"], timeline["kind"], orjson.dumps(timeline["detail"]).decode(),
               sqlite_time(timeline["at"]))
    return RenderedOutcome(outbox_id, token, sql, params, row)


def record(raw: sqlite3.Connection, outcomes: Sequence[RenderedOutcome]) -> set[int]:
    """Write the outcomes whose claims still hold; the ids of those that no longer do."""
    ids = [o.outbox_id for o in outcomes]
    held: dict[int, str | None] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        held.update(raw.execute(f"SELECT id, claim_token FROM outbox WHERE state = 'pending' "
                                f"AND id IN {_in(len(chunk))}", chunk).fetchall())
    valid = [o for o in outcomes if held.get(o.outbox_id) == o.token]
    by_sql: dict[str, list[tuple[Any, ...]]] = {}
    for o in valid:
        by_sql.setdefault(o.sql, []).append(o.params)
    for sql, params in by_sql.items():
        raw.executemany(sql, params)
    timeline = [o.timeline for o in valid if o.timeline is not None]
    if timeline:
        raw.executemany(_TIMELINE, timeline)
    return set(ids) - {o.outbox_id for o in valid}
