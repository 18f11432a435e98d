"""JD end to end against the simulated JOS gateway: list + detail + order,
no gap and no duplicate under churn and call limits, and health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.jd.simulator import JdSimulator
from hub.daemon import Hub
from hub.records import customers, identities, orders, raw_events, tickets, utcnow
from hub.registry import Registry
from tests.conftest import count, start_hub, wait_until

STATUS = {10001: "pending_review", 10002: "pending_review", 10003: "rejected", 10004: "awaiting_return",
          10005: "return_shipped", 10006: "return_received", 10007: "refund_pending", 10009: "resolved",
          10010: "cancelled"}


def jd_source(sim: JdSimulator, **extra: Any) -> dict[str, Any]:
    return {"id": "jd", "kind": "jd", "api_url": sim.url, "app_key": sim.app_key,
            "app_secret": sim.app_secret, "access_token": sim.access_token,
            "poll_every": "300ms", "lag": "1s", "overlap": "30s", "initial_lookback": "3h",
            "quota": {"calls_per_second": 2000, "burst": 200},
            "circuit": {"failures": 3, "cooldown": "300ms", "max_cooldown": "1s"}} | extra


@pytest.fixture
async def sim() -> AsyncIterator[JdSimulator]:
    s = JdSimulator(seed=4)
    await s.start()
    yield s
    await s.stop()


async def statuses(hub: Hub) -> dict[str, str]:
    async with hub.db.read() as conn:
        return {r.external_id: r.status for r in (await conn.execute(
            sa.select(tickets.c.external_id, tickets.c.status))).all()}


def expected(sim: JdSimulator) -> dict[str, str]:
    return {str(k): STATUS[v["serviceStatus"]] for k, v in sim.services.items()}


async def test_services_under_churn_and_call_limits_end_exact_with_orders_and_buyers(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, sim: JdSimulator) -> None:
    now = utcnow()
    sim.populate(1_500, now - timedelta(hours=2), now - timedelta(seconds=30))
    sim.churn_per_list_call, sim.churn_budget = 4, 40
    sim.quota.inject(3)
    hub = await start_hub(registry, db_url, pii_key, site_secret, [jd_source(sim, page_size=50)])
    try:
        await wait_until(lambda: _settled(hub, sim), timeout=180, interval=0.5)
        assert sim.refusals["67"] >= 3
        assert await count(hub, tickets) == 1_500
        assert await count(hub, raw_events, raw_events.c.state != "done") == 0
        # Linked: every ticket has its full order (jingdong.pop.order.get) and its buyer.
        assert await count(hub, orders, orders.c.is_stub.is_(False)) == 1_500
        assert await count(hub, tickets, tickets.c.customer_id.is_(None)) == 0
        assert await count(hub, identities, identities.c.kind == "jd_pin") == 1_500
        assert await count(hub, customers) == 1_500
        assert sim.calls["jingdong.asc.query.view"] >= 1_500
    finally:
        await hub.stop()


async def _settled(hub: Hub, sim: JdSimulator) -> bool:
    if sim.calls["jingdong.asc.query.list"] in (10, 20):
        sim.quota.inject(2)
    return await statuses(hub) == expected(sim)


async def test_invalid_token_shows_unhealthy_and_recovers(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, sim: JdSimulator) -> None:
    sim.token_valid = False
    hub = await start_hub(registry, db_url, pii_key, site_secret, [jd_source(sim)])
    try:
        runner = hub.pollers["jd"]
        await wait_until(lambda: not runner.health.healthy, timeout=10)
        assert "无效access_token" in (runner.health.last_error or "")
        sim.token_valid = True
        sim.create_service()
        await wait_until(lambda: runner.health.healthy, timeout=10)
        await wait_until(lambda: _one_ticket(hub), timeout=10)
    finally:
        await hub.stop()


async def _one_ticket(hub: Hub) -> bool:
    return await count(hub, tickets) == 1


async def test_a_paused_source_is_not_polled_until_resumed(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, sim: JdSimulator) -> None:
    from hub import polling

    hub = await start_hub(registry, db_url, pii_key, site_secret, [jd_source(sim)])
    try:
        await wait_until(lambda: sim.calls["jingdong.asc.query.list"] > 0, timeout=10)
        assert await polling.set_paused(hub.db, "jd", True, actor="test")
        await wait_until(lambda: not hub.pollers["jd"].health.leased, timeout=10)
        calls = sim.calls["jingdong.asc.query.list"]
        sim.create_service()
        await asyncio.sleep(1.5)  # five poll intervals
        assert sim.calls["jingdong.asc.query.list"] == calls and await count(hub, tickets) == 0
        assert (await polling.source_states(hub.db))["jd"]["lease_owner"] is None  # given back while paused
        assert await polling.set_paused(hub.db, "jd", False, actor="test")
        await wait_until(lambda: _one_ticket(hub), timeout=10)
    finally:
        await hub.stop()


async def test_a_backfill_reads_what_came_before_the_lookback_and_adds_only_what_is_missing(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, sim: JdSimulator) -> None:
    from hub import polling

    now = utcnow()
    sim.populate(40, now - timedelta(days=3), now - timedelta(days=2))   # before the 3 h lookback
    sim.populate(10, now - timedelta(minutes=30), now - timedelta(seconds=30))
    hub = await start_hub(registry, db_url, pii_key, site_secret, [jd_source(sim, page_size=10)])
    try:
        await wait_until(lambda: _count_is(hub, 10), timeout=20)
        stored = await count(hub, raw_events)
        assert await polling.backfillable(registry.sources["jd"].poller, hub.config.sources[0]) == ["services"]
        await polling.request_backfill(hub.db, "jd", ["services"], now - timedelta(days=4), actor="test")
        assert "services" in await polling.backfills(hub.db, "jd")

        async def done() -> bool:
            return await count(hub, tickets) == 50 and not await polling.backfills(hub.db, "jd")

        await wait_until(done, timeout=60, interval=0.2)
        assert await statuses(hub) == expected(sim)
        # The 10 recent ones were read again by the backfill and dropped by their dedupe key.
        assert await count(hub, raw_events) == stored + 40
        # The calls it made show as quota use, against the quota's rate (a rate needs a second of calls
        # behind it: a fast run may have finished within the first).
        async def quota() -> dict[str, Any]:
            return (await polling.source_states(hub.db))["jd"]["quota"]

        await wait_until(lambda: _known(quota()), timeout=10, interval=0.2)
        assert (await quota())["limit_per_minute"] == hub.pollers["jd"].source.quota.rate * 60
    finally:
        await hub.stop()


async def _known(quota: Any) -> bool:
    return (await quota)["calls_per_minute"] is not None


async def _count_is(hub: Hub, n: int) -> bool:
    return await count(hub, tickets) == n
