"""Reports, backlog samples and source pauses, each on a bare database with
records written the way the pipeline writes them (no daemon)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from hub import polling, reports, samples
from hub.backlog import Backlog
from hub.records import audit_log, source_state, ticket_events, tickets
from hub.storage import Database

T0 = datetime(2026, 11, 11, 0, 0, tzinfo=UTC)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    d = Database(db_url)
    await d.migrate()
    try:
        yield d
    finally:
        await d.close()


async def _ticket(db: Database, n: int, *, created: datetime, channel: str = "taobao", type_: str = "refund_only",
                  reason: str | None = "quality", refund: int | None = None, items: list | None = None,
                  answered_after: timedelta | None = None, resolved_after: timedelta | None = None) -> int:
    async with db.write() as conn:
        ticket_id = (await conn.execute(sa.insert(tickets).values(
            channel=channel, source_id=channel, external_id=f"T{n}", type=type_, status="new",
            reason_code=reason, refund_amount=refund, items=items, priority="normal",
            created_at=created, updated_at=created).returning(tickets.c.id))).scalar_one()
        timeline = [dict(kind="created", to_status="new", at=created)]
        if answered_after is not None:
            timeline.append(dict(kind="message", to_status=None, at=created + answered_after))
        if resolved_after is not None:
            timeline.append(dict(kind="status_changed", to_status="resolved", at=created + resolved_after))
        for e in timeline:
            await conn.execute(sa.insert(ticket_events).values(ticket_id=ticket_id, **e))
    return ticket_id


async def test_a_report_counts_only_its_period_and_splits_refunds_by_sku(db: Database) -> None:
    await _ticket(db, 1, created=T0, refund=10000, reason="quality",
                  items=[{"sku": "A", "qty": 1, "amount": "75.00"}, {"sku": "B", "qty": 1, "amount": "25.00"}],
                  answered_after=timedelta(minutes=10), resolved_after=timedelta(hours=2))
    await _ticket(db, 2, created=T0 + timedelta(hours=1), channel="jd", type_="return_refund", refund=3001,
                  reason="size", items=[{"sku": "B", "qty": 3}], answered_after=timedelta(minutes=30))
    await _ticket(db, 3, created=T0 + timedelta(hours=2), channel="jd", type_="complaint", reason=None)
    await _ticket(db, 4, created=T0 - timedelta(days=1), refund=999_999)   # before the period
    await _ticket(db, 5, created=T0 + timedelta(days=1), refund=999_999)   # at its end: excluded

    r = await reports.report(db, reports.Period(T0, T0 + timedelta(days=1)))
    assert r["volume"] == {"total": 3, "by_channel": {"jd": 2, "taobao": 1},
                           "by_type": {"refund_only": 1, "return_refund": 1, "complaint": 1},
                           "by_reason": {"quality": 1, "size": 1, "(none)": 1}}
    assert r["first_response"] == {"count": 2, "open": 1, "mean_seconds": 1200.0, "p50_seconds": 1800.0,
                                   "p90_seconds": 1800.0, "max_seconds": 1800.0}
    assert r["resolution"]["count"] == 1 and r["resolution"]["open"] == 2
    assert r["resolution"]["p50_seconds"] == 7200.0
    assert r["refunds"] == {"tickets": 2, "total_fen": 13001,
                            "by_reason_fen": {"quality": 10000, "size": 3001},
                            "by_sku_fen": {"A": 7500, "B": 2500 + 3001}}


async def test_an_empty_period_reports_zeros_not_errors(db: Database) -> None:
    r = await reports.report(db, reports.Period(T0, T0 + timedelta(hours=1)))
    assert r["volume"]["total"] == 0 and r["first_response"]["p50_seconds"] is None
    assert r["refunds"]["total_fen"] == 0


def test_refund_shares_sum_to_the_refund() -> None:
    shares = reports._sku_shares([{"sku": "A", "qty": 1}, {"sku": "B", "qty": 1}, {"sku": "C", "qty": 1}], 100)
    assert sum(shares.values()) == 100 and shares == {"A": 34, "B": 33, "C": 33}
    assert reports._sku_shares(None, 50) == {"(no sku)": 50}


async def test_samples_once_a_minute_whoever_writes_and_series_as_rates(db: Database) -> None:
    def b(pending: int) -> Backlog:
        return Backlog({"pending": pending, "quarantined": 0, "done": 0}, {"hook": {"pending": 2, "dead": 1}})

    t = datetime(2026, 11, 11, 8, 0, 5, tzinfo=UTC)
    assert await samples.record(db, b(5), t)
    assert not await samples.record(db, b(9), t + timedelta(seconds=30))   # same minute: the first wins
    assert await samples.record(db, b(7), t + timedelta(minutes=1))
    points = await samples.series(db, t - timedelta(hours=1))
    assert len(points) == 1 and points[0].inbox_pending == 7 and points[0].dead == 1
    assert points[0].minute == datetime(2026, 11, 11, 8, 1, tzinfo=UTC)
    # A week later the old rows are trimmed as the new one is written.
    assert await samples.record(db, b(0), t + samples.KEEP + timedelta(minutes=5))
    async with db.read() as conn:
        assert (await conn.execute(sa.text("select count(*) from backlog_samples"))).scalar_one() == 1


async def test_pausing_a_source_is_shared_and_audited_once(db: Database) -> None:
    assert await polling.set_paused(db, "tb", True, actor="api:bob")
    assert not await polling.set_paused(db, "tb", True, actor="api:bob")   # already paused: nothing to do
    assert (await polling.source_states(db))["tb"]["paused"] is True
    assert await polling.set_paused(db, "tb", False, actor="api:bob")
    async with db.read() as conn:
        paused = (await conn.execute(sa.select(source_state.c.paused))).scalar_one()
        actions = [r.action for r in (await conn.execute(sa.select(audit_log).order_by(audit_log.c.id))).all()]
    assert paused is False and actions == ["source.pause", "source.resume"]
