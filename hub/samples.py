"""The backlog once a minute, kept a week: what the dashboard charts over time.

Each sample is counters read along indexes (:mod:`hub.backlog` plus the
highest raw event and outbox ids), so taking one costs the same however
much the hub has done, and a chart of a week is at most 10,080 rows.
Several processes may sample the same minute: the first row wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from hub.backlog import Backlog
from hub.records import backlog_samples, outbox, raw_events
from hub.storage import Database

KEEP = timedelta(days=7)


def minute_of(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0)


async def record(db: Database, b: Backlog, now: datetime) -> bool:
    """Write this minute's sample unless some process already has; True if written."""
    minute = minute_of(now)
    async with db.read() as conn:
        if (await conn.execute(sa.select(backlog_samples.c.minute)
                               .where(backlog_samples.c.minute == minute))).first() is not None:
            return False
        received = (await conn.execute(sa.select(sa.func.max(raw_events.c.id)))).scalar() or 0
        pushes = (await conn.execute(sa.select(sa.func.max(outbox.c.id)))).scalar() or 0
    insert = sqlite.insert if db.is_sqlite else postgresql.insert
    async with db.write() as conn:
        res = await conn.execute(insert(backlog_samples).values(
            minute=minute, received=received, inbox_pending=b.inbox.get("pending", 0),
            quarantined=b.inbox.get("quarantined", 0), pushes=pushes,
            outbox_pending=sum(d.get("pending", 0) for d in b.outbox.values()),
            dead=sum(d.get("dead", 0) for d in b.outbox.values()),
        ).on_conflict_do_nothing(index_elements=["minute"]))
        await conn.execute(sa.delete(backlog_samples).where(backlog_samples.c.minute < minute - KEEP))
    return bool(res.rowcount)


@dataclass(frozen=True)
class Point:
    minute: datetime
    received: int        # raw events received in the minute before this sample
    settled: int         # pushes that left the queue (delivered, dead or dropped) in that minute
    inbox_pending: int
    outbox_pending: int
    dead: int


async def series(db: Database, since: datetime) -> list[Point]:
    """Samples from ``since`` on, as per-minute rates and levels (oldest first)."""
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(backlog_samples).where(backlog_samples.c.minute >= since)
                                   .order_by(backlog_samples.c.minute))).all()
    points: list[Point] = []
    prev: Any = None
    for r in rows:
        settled_now = r.pushes - r.outbox_pending
        if prev is not None:
            settled_before = prev.pushes - prev.outbox_pending
            points.append(Point(r.minute, max(0, r.received - prev.received),
                                max(0, settled_now - settled_before), r.inbox_pending, r.outbox_pending, r.dead))
        prev = r
    return points
