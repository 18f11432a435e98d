"""SIGKILL the daemon after it acknowledged events but before it delivered
them; start it again: every event becomes its ticket and every push arrives,
none twice by idempotency key."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa

from connectors.webhook.receiver import Receiver
from connectors.website.simulator import WebsiteSimulator
from hub import standard_webhooks
from hub.storage import Database
from tests.daemons import daemon, free_port

pytestmark = pytest.mark.slow
N = 60


async def test_sigkill_after_ack_loses_nothing_and_doubles_nothing(
        tmp_path: Path, db_url: str, pii_key: str, site_secret: str) -> None:
    receiver_port = free_port()
    receiver_secret = standard_webhooks.new_secret()
    hub = daemon(tmp_path, {
        "storage": {"url": db_url},
        "security": {"pii_key": pii_key},
        "sources": [{"id": "site", "kind": "website", "secret": site_secret}],
        "destinations": [{"id": "erp-hook", "kind": "webhook", "secret": receiver_secret,
                          "url": f"http://127.0.0.1:{receiver_port}/hook", "timeout": "2s"}],
        "sync": [{"on": ["ticket.created"], "to": "erp-hook"}],
        "pipeline": {"tick": "100ms"},
        "delivery": {"tick": "100ms", "lease": "3s",
                     "retry": {"initial": "100ms", "max_delay": "300ms", "jitter": "50ms"}},
        "logging": {"level": "warning"},
    })
    website = WebsiteSimulator(secret=site_secret, seed=3)
    messages = [website.request() for _ in range(N)]
    async with aiohttp.ClientSession() as http:
        hub.start()
        try:
            await hub.ready(http)

            async def send(msg: dict) -> int:
                body, headers = website.sign(msg)
                async with http.post(f"{hub.url}/webhooks/site", data=body, headers=headers) as r:
                    return r.status

            statuses = await asyncio.gather(*(send(m) for m in messages))
            assert statuses == [200] * N  # acknowledged: on disk
        finally:
            hub.kill()

        # The receiver was down the whole time, so nothing was delivered yet.
        receiver = Receiver(secret=receiver_secret)
        await receiver.start(port=receiver_port)
        hub.start()
        try:
            await hub.ready(http)
            await receiver.wait_for(N, timeout=60)
        finally:
            assert hub.stop() == 0, hub.log_tail()
            await receiver.stop()

    ids = [r.body["data"]["ticket"]["external_id"] for r in receiver.unique.values()]
    assert sorted(ids) == sorted(m["data"]["request_id"] for m in messages)
    assert len(receiver.unique) == N  # one idempotency key per ticket.created, none doubled
    db = Database(db_url)
    try:
        async with db.read() as conn:
            tickets = (await conn.execute(sa.text("SELECT count(*) FROM tickets"))).scalar_one()
            delivered = (await conn.execute(sa.text(
                "SELECT count(*) FROM outbox WHERE state = 'delivered'"))).scalar_one()
            pending = (await conn.execute(sa.text(
                "SELECT count(*) FROM raw_events WHERE state <> 'done'"))).scalar_one()
    finally:
        await db.close()
    assert (tickets, delivered, pending) == (N, N, 0)


async def test_sigterm_drains_every_acknowledged_request_and_exits_0(
        tmp_path: Path, pii_key: str, site_secret: str) -> None:
    db_path = tmp_path / "hub.db"
    hub = daemon(tmp_path, {
        "storage": {"url": f"sqlite+aiosqlite:///{db_path}"},
        "security": {"pii_key": pii_key},
        "sources": [{"id": "site", "kind": "website", "secret": site_secret}],
        "logging": {"level": "warning"},
    })
    website = WebsiteSimulator(secret=site_secret, seed=5)
    signed = [website.sign(website.request()) for _ in range(300)]
    hub.start()
    async with aiohttp.ClientSession() as http:
        await hub.ready(http)

        answered = 0
        halfway = asyncio.Event()

        async def send(body: bytes, headers: dict[str, str]) -> int:
            nonlocal answered
            try:
                async with http.post(f"{hub.url}/webhooks/site", data=body, headers=headers) as r:
                    return r.status
            except aiohttp.ClientError:
                return 0  # the listener had already closed: not acknowledged
            finally:
                answered += 1
                if answered == 100:
                    halfway.set()

        sends = [asyncio.create_task(send(b, h)) for b, h in signed]
        await halfway.wait()
        assert hub.proc is not None
        hub.proc.send_signal(signal.SIGTERM)  # mid-burst: about 200 requests still open
        statuses = await asyncio.gather(*sends)
    assert hub.proc.wait(30) == 0, hub.log_tail()
    assert set(statuses) <= {200, 503, 0}
    acknowledged = statuses.count(200)
    assert acknowledged >= 100
    db = Database(f"sqlite+aiosqlite:///{db_path}")
    try:
        async with db.read() as conn:
            stored = (await conn.execute(sa.text("SELECT count(*) FROM raw_events"))).scalar_one()
    finally:
        await db.close()
    assert stored >= acknowledged  # every 200 is on disk
    assert stored <= len(signed)
