"""Taobao end to end against the simulated TOP gateway: polling without gaps
or duplicates under churn and call limits, resuming from the committed
cursor, poll + TMC message as one ticket, the stale guard, and health."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
import yaml

from connectors.simserver import PlatformQuota
from connectors.taobao.connector import _event
from connectors.taobao.simulator import TaobaoSimulator
from connectors.website.simulator import WebsiteSimulator
from connectors.window_poll import platform_time
from hub.daemon import Hub
from hub.interfaces import PollBatch
from hub.polling import load_cursor
from hub.records import raw_events, source_state, ticket_events, tickets, utcnow
from hub.registry import Registry
from tests.conftest import count, start_hub, wait_until

STATUS = {"WAIT_SELLER_AGREE": "pending_review", "WAIT_BUYER_RETURN_GOODS": "awaiting_return",
          "WAIT_SELLER_CONFIRM_GOODS": "return_shipped", "SELLER_REFUSE_BUYER": "rejected",
          "CLOSED": "cancelled", "SUCCESS": "resolved"}


def taobao_source(sim: TaobaoSimulator, **extra: Any) -> dict[str, Any]:
    return {"id": "tb", "kind": "taobao", "api_url": sim.url, "app_key": sim.app_key,
            "app_secret": sim.app_secret, "session": sim.session, "sign_method": "hmac-sha256",
            "poll_every": "300ms", "messages_every": "200ms", "lag": "1s", "overlap": "30s",
            "initial_lookback": "3h", "quota": {"calls_per_second": 1000, "burst": 100},
            "circuit": {"failures": 3, "cooldown": "300ms", "max_cooldown": "1s"}} | extra


@pytest.fixture
async def sim() -> AsyncIterator[TaobaoSimulator]:
    s = TaobaoSimulator(seed=3)
    await s.start()
    yield s
    await s.stop()


async def ticket_statuses(hub: Hub) -> dict[str, str]:
    async with hub.db.read() as conn:
        return {r.external_id: r.status for r in (await conn.execute(
            sa.select(tickets.c.external_id, tickets.c.status).where(tickets.c.source_id == "tb"))).all()}


def expected(sim: TaobaoSimulator) -> dict[str, str]:
    return {str(k): STATUS[v["status"]] for k, v in sim.refunds.items()}


@pytest.mark.slow
async def test_ten_thousand_refunds_with_churn_and_call_limits_end_exact(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, sim: TaobaoSimulator) -> None:
    now = utcnow()
    sim.populate(10_000, now - timedelta(hours=2), now - timedelta(seconds=30))
    # Refunds move while the poller pages (a busy shop), and the gateway says
    # "App Call Limited" now and then.
    sim.churn_per_list_call, sim.churn_budget = 5, 60
    sim.quota.inject(3)
    hub = await start_hub(registry, db_url, pii_key, site_secret, [taobao_source(
        sim, mode=["poll"], fetch_orders=False, page_size=100)])
    try:
        async def settled() -> bool:
            if sim.calls["taobao.refunds.receive.get"] in (20, 40, 60):
                sim.quota.inject(2)
            return await ticket_statuses(hub) == expected(sim)

        await wait_until(settled, timeout=240, interval=0.5)
        assert len(sim.refunds) == 10_000
        assert sim.refusals[7] >= 3  # the call limits really happened
        assert await count(hub, tickets) == 10_000
        assert await count(hub, raw_events, raw_events.c.state != "done") == 0
        assert hub.pollers["tb"].health.healthy
    finally:
        await hub.stop()


async def test_restart_mid_poll_resumes_from_the_committed_cursor(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, sim: TaobaoSimulator) -> None:
    now = utcnow()
    sim.populate(1_200, now - timedelta(hours=2), now - timedelta(seconds=30))
    sim.quota = PlatformQuota(calls_per_second=1000, burst=1000)
    source = taobao_source(sim, mode=["poll"], fetch_orders=False, page_size=20,
                           quota={"calls_per_second": 15, "burst": 1})
    pages = 1_200 // 20
    hub = await start_hub(registry, db_url, pii_key, site_secret, [source])
    try:
        async def mid_window() -> bool:
            cursor = await load_cursor(hub.db, "tb", "refunds")
            return bool(cursor and cursor.get("window") and cursor["window"]["next_page"] < pages - 5)
        await wait_until(mid_window, timeout=30)
    finally:
        await hub.stop()
    cursor = await _cursor_of(registry, db_url, pii_key, site_secret)
    assert cursor["window"]["next_page"] < pages - 5
    logged_before = len(sim.list_log)

    hub = await start_hub(registry, db_url, pii_key, site_secret, [dict(source, quota={
        "calls_per_second": 1000, "burst": 100})])
    try:
        await wait_until(lambda: _all_there(hub, sim), timeout=60, interval=0.2)
        # The second run read what was left of the window, each page once, from
        # the committed page down — not the window again from its first page.
        win = cursor["window"]
        span = (platform_time(datetime.fromisoformat(win["start"])),
                platform_time(datetime.fromisoformat(win["end"])))
        resumed = [page for start, end, page in sim.list_log[logged_before:] if (start, end) == span]
        assert resumed == list(range(win["next_page"], 0, -1))
        assert await count(hub, raw_events) == 1_200
        assert await count(hub, tickets) == 1_200
    finally:
        await hub.stop()


async def _cursor_of(registry: Registry, db_url: str, pii_key: str, site_secret: str) -> Any:
    from hub.storage import Database

    db = Database(db_url)
    try:
        return await load_cursor(db, "tb", "refunds")
    finally:
        await db.close()


async def _all_there(hub: Hub, sim: TaobaoSimulator) -> bool:
    return await ticket_statuses(hub) == expected(sim)


async def test_same_refund_by_message_and_by_poll_is_one_ticket_and_never_moves_back(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, sim: TaobaoSimulator) -> None:
    hub = await start_hub(registry, db_url, pii_key, site_secret, [taobao_source(sim)])
    try:
        refund = sim.create_refund()  # a TMC message now, the list API after the lag
        rid = str(refund["refund_id"])
        await wait_until(lambda: _status_is(hub, rid, "pending_review"), timeout=10)
        # Both roads led to it: the message (refund.get) and the poll (list).
        await wait_until(lambda: sim.calls["taobao.refund.get"] >= 1 and not sim.messages, timeout=10)
        await wait_until(lambda: _listed(sim, refund), timeout=10)
        assert await count(hub, tickets) == 1
        assert await count(hub, raw_events) == 1  # same version by both roads: one raw event

        old = copy.deepcopy(refund)
        sim.move(refund, "WAIT_BUYER_RETURN_GOODS" if refund["has_good_return"] else "SUCCESS")
        newer = STATUS[refund["status"]]
        await wait_until(lambda: _status_is(hub, rid, newer), timeout=10)

        # A lagging replica hands the poller the older version after the newer one.
        old["status"] = "SELLER_REFUSE_BUYER"
        await hub.pollers["tb"].store("refunds", PollBatch([_event(old, None, "poll")],
                                                            await load_cursor(hub.db, "tb", "refunds")))
        hub.wake_pipeline()
        await wait_until(lambda: _timeline_has(hub, "stale"), timeout=10)
        assert await _status_is(hub, rid, newer)
        assert await count(hub, tickets) == 1
    finally:
        await hub.stop()


def _listed(sim: TaobaoSimulator, refund: dict[str, Any]) -> bool:
    return sim.listed[refund["refund_id"]] > 0


async def _status_is(hub: Hub, rid: str, status: str) -> bool:
    return (await ticket_statuses(hub)).get(rid) == status


async def _timeline_has(hub: Hub, kind: str) -> bool:
    return await count(hub, ticket_events, ticket_events.c.kind == kind) > 0


@pytest.mark.parametrize(("breakage", "platform_says"), [
    ("session_valid", "SessionKey非法或已过期"),
    ("app_key_valid", "Invalid app Key"),
])
async def test_refused_credentials_show_unhealthy_others_keep_working_and_it_recovers(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, sim: TaobaoSimulator,
        website: WebsiteSimulator, breakage: str, platform_says: str) -> None:
    setattr(sim, breakage, False)
    hub = await start_hub(registry, db_url, pii_key, site_secret, [
        taobao_source(sim, mode=["poll"]), {"id": "site", "kind": "website", "secret": site_secret}])
    try:
        runner = hub.pollers["tb"]
        await wait_until(lambda: not runner.health.healthy, timeout=10)
        assert platform_says in (runner.health.last_error or "")
        assert runner.health.circuit.value in ("open", "half_open")
        await wait_until(lambda: _state_row(hub, healthy=False), timeout=10)
        assert "hub_source_healthy{source=\"tb\"} 0.0" in hub.metrics.render().decode()

        # The website source is unaffected.
        body, headers = website.sign(website.request())
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{hub.port}/webhooks/site", data=body, headers=headers) as resp:
            assert resp.status == 200
        await wait_until(lambda: _count_site_tickets(hub), timeout=10)

        # The platform accepts again: the source recovers by itself.
        setattr(sim, breakage, True)
        sim.create_refund()
        await wait_until(lambda: runner.health.healthy, timeout=10)
        await wait_until(lambda: _state_row(hub, healthy=True), timeout=10)
        assert runner.health.circuit.value == "closed"
        await wait_until(lambda: _count_tb_tickets(hub), timeout=10)
    finally:
        await hub.stop()


async def _state_row(hub: Hub, *, healthy: bool) -> bool:
    async with hub.db.read() as conn:
        row = (await conn.execute(sa.select(source_state).where(source_state.c.source_id == "tb"))).first()
    return row is not None and row.healthy is healthy


async def _count_site_tickets(hub: Hub) -> bool:
    return await count(hub, tickets, tickets.c.source_id == "site") == 1


async def _count_tb_tickets(hub: Hub) -> bool:
    return await count(hub, tickets, tickets.c.source_id == "tb") == 1


async def test_hub_sources_shows_the_platform_message(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, sim: TaobaoSimulator,
        tmp_path: Path) -> None:
    sim.session_valid = False
    source = taobao_source(sim, mode=["poll"])
    hub = await start_hub(registry, db_url, pii_key, site_secret, [source])
    try:
        await wait_until(lambda: _state_row(hub, healthy=False), timeout=10)
    finally:
        await hub.stop()
    config = tmp_path / "hub.yaml"
    config.write_text(yaml.safe_dump({"storage": {"url": db_url}, "security": {"pii_key": pii_key},
                                      "sources": [source]}, allow_unicode=True))
    res = subprocess.run([sys.executable, "-m", "hub", "sources", "-c", str(config)], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "COLUMNS": "250"})
    assert res.returncode == 0, res.stderr
    assert "unhealthy" in res.stdout and "SessionKey非法或已过期" in res.stdout


async def test_one_process_polls_a_source_at_a_time_and_another_takes_over(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, sim: TaobaoSimulator) -> None:
    now = utcnow()
    sim.populate(300, now - timedelta(hours=1), now - timedelta(seconds=30))
    source = taobao_source(sim, mode=["poll"], fetch_orders=False)
    first = await start_hub(registry, db_url, pii_key, site_secret, [source])
    second = await start_hub(registry, db_url, pii_key, site_secret, [source])
    try:
        await wait_until(lambda: _all_there(first, sim), timeout=30, interval=0.2)
        a, b = first.pollers["tb"], second.pollers["tb"]
        assert a.health.leased and not b.health.leased  # the second one waits
        assert b.health.events_stored == 0
        await first.stop()  # gives its lease back
        sim.create_refund()
        await wait_until(lambda: b.health.leased, timeout=10)
        await wait_until(lambda: _all_there(second, sim), timeout=10, interval=0.2)
        assert b.health.events_stored >= 1
        assert await count(second, raw_events) == 301
    finally:
        await second.stop()
        if not first.draining:
            await first.stop()


async def test_a_refund_that_cannot_be_read_now_holds_back_only_its_own_message(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, sim: TaobaoSimulator) -> None:
    # Messages only (no list poll to make up for them): 60 refunds, and re-reads that fail
    # half the time — after the client's 3 tries, about one message in eight per round.
    sim.redeliver_after, sim.fail_rate, sim.fail_methods = 0.5, 0.5, frozenset({"taobao.refund.get"})
    hub = await start_hub(registry, db_url, pii_key, site_secret,
                          [taobao_source(sim, mode=["messages"], messages_every="100ms")])
    try:
        refunds = [sim.create_refund() for _ in range(60)]
        await wait_until(lambda: _count_is(hub, 60), timeout=30, interval=0.1)
        assert sim.failed["taobao.refund.get"] > 0
        statuses = await ticket_statuses(hub)
        assert sorted(statuses) == sorted(str(r["refund_id"]) for r in refunds)
        await wait_until(lambda: not sim.messages, timeout=10)  # every message confirmed in the end
        # Batches went through in part: far fewer consumes than one full round per failed re-read.
        assert sim.calls["taobao.tmc.messages.consume"] < sim.failed["taobao.refund.get"]
    finally:
        await hub.stop()


async def _count_is(hub: Hub, n: int) -> bool:
    return await count(hub, tickets) == n
