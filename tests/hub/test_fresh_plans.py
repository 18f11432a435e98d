"""PostgreSQL: the delivery claim is planned for the outbox as it is, not as it
was when its statement was first prepared (hub.storage.PLAN_AFRESH).

The database is set to keep one generic plan per prepared statement from its
first execution — what PostgreSQL settles on by itself after five, judged on
the tables of the moment, and keeps until an ANALYZE invalidates it. The claim
runs once on an empty outbox, the outbox grows to 18,000 rows, and the claim
runs again on the same connection: it must claim what is due without reading
the outbox end to end more than once (counted by PostgreSQL for the
transaction). With the cached plan a claim of 256 read the whole outbox once
for every row it claimed: 4.6 million rows.
"""

from __future__ import annotations

import io
import json
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from hub import logs
from hub.delivery import Deliverer
from hub.records import outbox, tickets, utcnow
from hub.registry import Registry
from hub.storage import Database
from tests.conftest import make_config, running

pytestmark = pytest.mark.postgres

TICKETS = 6000
DESTINATIONS = ("erp", "wms", "finance")


def _rows_scanned(conn: sa.Connection) -> int:
    """Outbox rows read by sequential scans that this backend has not yet
    reported (a running count: compare two readings in one transaction)."""
    return int(conn.execute(sa.text(
        "SELECT seq_tup_read FROM pg_stat_xact_user_tables WHERE relname = 'outbox'")).scalar_one())


async def _grow_outbox(db: Database) -> None:
    """6,000 tickets with a push to each destination: two thirds delivered, the rest due."""
    now = utcnow()
    async with db.write() as conn:
        await conn.execute(sa.insert(tickets), [
            {"id": i, "channel": "website", "source_id": "site", "external_id": f"AS{i}", "type": "refund_only",
             "status": "new", "priority": "normal", "created_at": now, "updated_at": now}
            for i in range(1, TICKETS + 1)])
        await conn.execute(sa.insert(outbox), [
            {"destination_id": d, "ticket_id": i, "ordering_key": f"{d}:{i}", "event_type": "ticket.created",
             "idempotency_key": f"msg_{d}_{i}_1", "payload": "{}", "attempts": 0, "next_attempt_at": now,
             "created_at": now, "state": "delivered" if i <= 4000 else "pending"}
            for i in range(1, TICKETS + 1) for d in DESTINATIONS])


async def test_the_claim_does_not_read_a_grown_outbox_once_for_every_row_it_claims(pg_url: str) -> None:
    url = sa.make_url(pg_url)
    admin = await asyncpg.connect(url.set(drivername="postgresql", database="postgres")
                                  .render_as_string(hide_password=False))
    try:
        await admin.execute(f'ALTER DATABASE "{url.database}" SET plan_cache_mode = force_generic_plan')
    finally:
        await admin.close()
    db = Database(pg_url)
    await db.migrate()
    deliverer = Deliverer(db, {})

    def claim(conn: sa.Connection) -> tuple[list[Any], int]:
        before = _rows_scanned(conn)
        rows = deliverer._claim_rows(conn, {"wms": 256}, "t0ken")
        return rows, _rows_scanned(conn) - before

    try:
        first, _ = await db.run_write(claim)  # prepared, and planned, on an empty outbox
        assert first == []
        await _grow_outbox(db)
        rows, scanned = await db.run_write(claim)
        assert len(rows) == 256
        assert {r.destination_id for r in rows} == {"wms"}
        assert min(r.ticket_id for r in rows) == 4001  # the longest due first
        # Marking the claimed rows may read the table once (256 ids of 18,000:
        # the planner's fair choice at this size); the cached plan read the
        # open rows once for every row it claimed.
        assert scanned <= len(DESTINATIONS) * TICKETS, f"the claim read {scanned} outbox rows end to end"
    finally:
        await db.close()


async def test_the_hub_says_so_when_nothing_analyzes_its_tables(pg_url: str, registry: Registry, pii_key: str,
                                                                site_secret: str) -> None:
    """This machine's PostgreSQL runs with autovacuum off; one with it on must not be warned."""
    conn = await asyncpg.connect(sa.make_url(pg_url).set(drivername="postgresql")
                                 .render_as_string(hide_password=False))
    try:
        off = await conn.fetchval("SHOW autovacuum") == "off"
    finally:
        await conn.close()
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    try:
        async with running(make_config(registry, db_url=pg_url, pii_key=pii_key, site_secret=site_secret,
                                       receiver=None), registry):
            pass
    finally:
        logs.configure("warning", "json")
    warned = [line for line in map(json.loads, out.getvalue().splitlines())
              if line["event"].startswith("postgresql autovacuum is off")]
    assert len(warned) == (1 if off else 0)
