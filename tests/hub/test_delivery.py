"""Delivery against a scripted receiver: retry with backoff, dead letters,
Retry-After, and per-ticket ordering."""

from __future__ import annotations

import sys
import time
from typing import Any

import aiohttp
import sqlalchemy as sa

from connectors.webhook.receiver import Receiver
from connectors.website.simulator import WebsiteSimulator
from hub.config import RetryConfig
from hub.daemon import Hub
from hub.delivery import DestinationHealth
from hub.records import outbox, ticket_events
from hub.retry import RetryPolicy, parse_retry_after
from tests.conftest import wait_until


async def _send(http: aiohttp.ClientSession, hub: Hub, website: WebsiteSimulator, msg: dict) -> None:
    body, headers = website.sign(msg)
    async with http.post(f"http://127.0.0.1:{hub.port}/webhooks/site", data=body, headers=headers) as r:
        assert r.status == 200


async def _outbox_rows(hub: Hub) -> list:
    async with hub.db.read() as conn:
        return list((await conn.execute(sa.select(outbox).order_by(outbox.c.id))).all())


async def _first_push_when(hub: Hub, state: str) -> Any:
    """Wait until the first outbox row reaches ``state``; return it."""

    async def reached() -> bool:
        rows = await _outbox_rows(hub)
        return bool(rows) and rows[0].state == state

    await wait_until(reached)
    return (await _outbox_rows(hub))[0]


async def test_500_then_200_is_delivered_once_after_backoff(
        hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator, receiver: Receiver) -> None:
    receiver.script.append((500, {}, "upstream broke"))
    await _send(http, hub, website, website.request())
    row = await _first_push_when(hub, "delivered")
    assert row.attempts == 2 and row.last_status == 200
    # The retry came after the backoff (initial 100 ms), not at once.
    assert (row.delivered_at - row.first_attempt_at).total_seconds() >= 0.1
    assert len(receiver.received) == 1 and len(receiver.unique) == 1
    async with hub.db.read() as conn:
        kinds = [r[0] for r in (await conn.execute(
            sa.select(ticket_events.c.kind).where(ticket_events.c.kind.like("sync_%"))
            .order_by(ticket_events.c.id))).all()]
    assert kinds == ["sync_failed", "sync_sent"]


async def test_400_is_dead_lettered_with_the_response(
        hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator, receiver: Receiver) -> None:
    receiver.script.append((400, {}, '{"code": "E_SHOP", "msg": "unknown shop"}'))
    await _send(http, hub, website, website.request())
    row = await _first_push_when(hub, "dead")
    assert row.attempts == 1 and row.last_status == 400
    assert row.last_response == '{"code": "E_SHOP", "msg": "unknown shop"}'
    assert row.last_error == "HTTP 400"
    assert receiver.received == []


async def test_429_with_retry_after_waits(
        hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator, receiver: Receiver) -> None:
    receiver.script.append((429, {"Retry-After": "2"}, "slow down"))
    started = time.monotonic()
    await _send(http, hub, website, website.request())
    await receiver.wait_for(1, timeout=15)
    waited = time.monotonic() - started
    row = await _first_push_when(hub, "delivered")  # the receiver answers before the hub records it
    assert row.attempts == 2
    # Backoff alone would retry after ~0.1 s; Retry-After: 2 holds it for 2 s.
    assert waited >= 2.0
    assert (row.delivered_at - row.first_attempt_at).total_seconds() >= 2.0


async def test_later_push_for_a_ticket_never_overtakes_an_earlier_one(
        hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator, receiver: Receiver) -> None:
    receiver.script.extend([(503, {}, "down"), (503, {}, "down")])
    msg = website.request()
    await _send(http, hub, website, msg)
    upd = website.request(request_id=msg["data"]["request_id"], order_id=msg["data"]["order_id"],
                          event_type="aftersale.cancelled")
    await _send(http, hub, website, upd)
    await receiver.wait_for(2)
    order = [r.body["type"] for r in receiver.received]
    assert order == ["ticket.created", "ticket.status_changed"]


def test_retry_policy_backs_off_exponentially_and_gives_up() -> None:
    policy = RetryPolicy(RetryConfig(initial=5, multiplier=2, max_delay=3600, jitter=0,
                                     give_up_after=86400, max_attempts=50))
    delays = [policy.decide(n, 0).delay for n in range(1, 8)]
    assert delays == [5, 10, 20, 40, 80, 160, 320]
    assert policy.decide(20, 0).delay == 3600  # capped
    assert policy.decide(50, 0).give_up  # attempts exhausted
    assert policy.decide(3, 86401).give_up  # a day has passed
    assert policy.decide(1, 0, retry_after=120).delay == 120
    # Jitter stays within its bound.
    jittery = RetryPolicy(RetryConfig(initial=1, jitter=0.5))
    assert all(1 <= jittery.decide(1, 0).delay <= 1.5 for _ in range(50))


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert parse_retry_after("30") == 30
    assert abs(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 60) - 60) < 1
    assert parse_retry_after("soon") is None


def test_destination_health_degrades_after_repeated_failures_and_recovers() -> None:
    health = DestinationHealth(threshold=3)
    for _ in range(2):
        health.record("pending", "HTTP 503")
    assert not health.degraded
    health.record("dead", "HTTP 400")
    assert health.degraded and health.last_error == "HTTP 400"
    health.record("delivered")
    assert not health.degraded and health.failures_in_a_row == 0


async def test_metrics_show_a_failing_destination_as_degraded(
        hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator, receiver: Receiver) -> None:
    receiver.script.extend([(503, {}, "down")] * 5)  # the test config gives up after 5 attempts
    await _send(http, hub, website, website.request())
    await _first_push_when(hub, "dead")
    text = hub.metrics.render().decode()
    assert 'hub_deliveries_total{destination="hook",result="retry"} 4.0' in text
    assert 'hub_destination_degraded{destination="hook"} 1.0' in text
    # The next push goes through: no longer degraded.
    await _send(http, hub, website, website.request())
    await receiver.wait_for(1)
    await wait_until(lambda: 'hub_destination_degraded{destination="hook"} 0.0'
                     in hub.metrics.render().decode())


async def test_metrics_carry_the_build_and_the_process(hub: Hub, http: aiohttp.ClientSession) -> None:
    from importlib.metadata import version

    async with http.get(f"http://127.0.0.1:{hub.port}/metrics") as r:
        assert r.status == 200
        text = await r.text()
    assert f'hub_build_info{{python="{sys.version.split()[0]}",version="{version("aftersales-hub")}"}} 1.0' in text
    rss = next(line for line in text.splitlines() if line.startswith("process_resident_memory_bytes "))
    assert float(rss.split()[1]) > 10_000_000  # a real process's, not a placeholder
    assert "python_gc_collections_total" in text
