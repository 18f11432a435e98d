"""Delivery that one push, one destination or one late attempt cannot upset:
pushes are recorded as they complete (a hanging one holds nobody up), an
attempt is cut off before its claim's lease ends, a late outcome is fenced
off by its claim token, answers are read up to a cap, and a dead letter
holds its ticket's later pushes until an operator retries or drops it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from connectors.webhook.destination import WebhookDestination, WebhookDestinationConfig
from connectors.webhook.receiver import Receiver
from connectors.website.simulator import WebsiteSimulator
from hub import dead_letters, standard_webhooks
from hub.config import RetryConfig
from hub.daemon import Hub
from hub.delivery import ActiveDestination, Claim, Deliverer, Outcome, Slot
from hub.records import outbox, ticket_events, utcnow
from hub.registry import Registry
from hub.retry import RetryPolicy
from hub.storage import Database
from tests.conftest import make_config, running, seed_pushes, wait_until

FAST_RETRY = {"initial": "100ms", "max_delay": "1s", "jitter": "10ms", "give_up_after": "1h", "max_attempts": 5}


async def _send(http: aiohttp.ClientSession, hub: Hub, website: WebsiteSimulator, msg: dict) -> None:
    body, headers = website.sign(msg)
    async with http.post(f"http://127.0.0.1:{hub.port}/webhooks/site", data=body, headers=headers) as r:
        assert r.status == 200


async def _rows(db: Database) -> list[Any]:
    async with db.read() as conn:
        return list((await conn.execute(sa.select(outbox).order_by(outbox.c.id))).all())


@pytest.fixture
async def short_lease_hub(registry: Registry, db_url: str, pii_key: str, site_secret: str,
                          receiver: Receiver) -> AsyncIterator[Hub]:
    cfg = make_config(registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=receiver,
                      delivery={"tick": "50ms", "lease": "2s", "retry": FAST_RETRY},
                      destinations=[{"id": "hook", "kind": "webhook", "url": receiver.url,
                                     "secret": receiver.secret, "timeout": "1s"}])
    async with running(cfg, registry) as h:
        yield h


async def test_a_hanging_push_holds_up_no_other_ticket(
        short_lease_hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator,
        receiver: Receiver) -> None:
    hub = short_lease_hub
    hung_ids: list[str] = []

    def hang(msg_id: str, arrival: int) -> float:
        if not hung_ids:
            hung_ids.append(msg_id)
        return 30 if msg_id == hung_ids[0] and arrival == 1 else 0  # the first push, first time

    receiver.hang = hang
    # One burst: processed in one pipeline batch, so the pushes are claimed together
    # and the hanging one shares its claim with the others.
    await asyncio.gather(*(_send(http, hub, website, website.request()) for _ in range(31)))

    async def others_recorded() -> bool:
        return sum(r.state == "delivered" for r in await _rows(hub.db)) == 30

    await wait_until(others_recorded, timeout=10)
    # Each push is recorded as it completes: the 30 are on disk while the hanging
    # one is still in the air (a batch recorded at its slowest push would hold all).
    (hung,) = [r for r in await _rows(hub.db) if r.state != "delivered"]
    assert (hung.state, hung.attempts, hung.idempotency_key) == ("pending", 0, hung_ids[0])
    # The hanging attempt is cut off inside its lease (1 s timeout, 2 s lease),
    # recorded as a failure and retried; once delivered nothing more is sent,
    # even after its lease is long gone.
    await wait_until(lambda: _all_delivered(hub, 31), timeout=10)
    await asyncio.sleep(2.5)
    assert receiver.seen[hung_ids[0]] == 2 and all(n == 1 for k, n in receiver.seen.items() if k != hung_ids[0])
    row = next(r for r in await _rows(hub.db) if r.idempotency_key == hung_ids[0])
    assert (row.state, row.attempts, row.last_status) == ("delivered", 2, 200)
    async with hub.db.read() as conn:
        events = (await conn.execute(sa.select(ticket_events.c.kind, ticket_events.c.detail).where(
            ticket_events.c.ticket_id == row.ticket_id, ticket_events.c.kind.like("sync_%"))
            .order_by(ticket_events.c.id))).all()
    assert [e.kind for e in events] == ["sync_failed", "sync_sent"]
    assert events[0].detail["error"] == "no answer within 1.0 s"  # the Deliverer's cut-off, not aiohttp's


async def test_slow_attempts_give_their_slots_to_the_next_pushes(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, http: aiohttp.ClientSession,
        website: WebsiteSimulator, receiver: Receiver) -> None:
    """Two slots and nine pushes that hang: the slow ones are set aside (eight
    of them, the bound: four per slot), and the one slot left carries every
    other ticket's push while they hang — instead of all waiting for the 5 s
    timeout."""
    hung: list[str] = []

    def hang(msg_id: str, arrival: int) -> float:
        if arrival == 1 and (msg_id in hung or len(hung) < 9):
            if msg_id not in hung:
                hung.append(msg_id)
            return 30
        return 0

    receiver.hang = hang
    cfg = make_config(registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=receiver,
                      delivery={"tick": "50ms", "lease": "20s", "retry": FAST_RETRY},
                      destinations=[{"id": "hook", "kind": "webhook", "url": receiver.url,
                                     "secret": receiver.secret, "timeout": "5s", "max_in_flight": 2,
                                     "slow_after": "200ms"}])
    async with running(cfg, registry) as hub:
        await asyncio.gather(*(_send(http, hub, website, website.request()) for _ in range(21)))

        async def others_delivered() -> bool:
            return sum(r.state == "delivered" for r in await _rows(hub.db)) == 12

        await wait_until(others_delivered, timeout=4)  # well before the hung ones time out
        active = hub.deliverer.destinations["hook"]
        assert (active.aside, active.in_flight) == (8, 1)  # eight set aside, the ninth holds a slot
        assert {r.idempotency_key for r in await _rows(hub.db) if r.state != "delivered"} == set(hung)
        await wait_until(lambda: _all_delivered(hub, 21), timeout=15)
    assert all(receiver.seen[k] == 2 for k in hung)
    assert all(n == 1 for k, n in receiver.seen.items() if k not in hung)


async def _all_delivered(hub: Hub, n: int) -> bool:
    rows = await _rows(hub.db)
    return len(rows) == n and all(r.state == "delivered" for r in rows)


@pytest.fixture
async def bare_deliverer(db_url: str, receiver: Receiver) -> AsyncIterator[tuple[Database, Any]]:
    db = Database(db_url)
    await db.migrate()
    await seed_pushes(db, [{}])
    cfg = WebhookDestinationConfig(id="hook", kind="webhook", url=receiver.url,
                                   secret=receiver.secret, timeout=1.0)  # type: ignore[arg-type]

    def make(lease: float = 2.0) -> Deliverer:
        return Deliverer(db, {"hook": ActiveDestination(WebhookDestination(cfg), RetryPolicy(RetryConfig()),
                                                        limit=8, timeout=1.0)}, lease=lease)

    try:
        yield db, make
    finally:
        await db.close()


async def test_a_late_outcome_is_fenced_off_and_changes_nothing(
        bare_deliverer: tuple[Database, Any], receiver: Receiver) -> None:
    db, make = bare_deliverer
    late, current = make(), make()
    # The late one claimed the push, then stalled (a paused process) until its lease ran out.
    rows = await db.run_write(lambda conn: late._claim_rows(conn, {"hook": 1}, "token-late"))
    assert len(rows) == 1
    async with db.write() as conn:
        await conn.execute(sa.update(outbox).values(claimed_until=utcnow()))
    await current.start()
    try:
        assert await current.claim_once() == 1  # taken again: the lease had passed
        await wait_until(lambda: current._outcomes)
        assert await current.record_once() == 1
    finally:
        await current.close()
    # The late attempt's outcome arrives now — a failure — and finds another claim.
    late.destinations["hook"].in_flight = 1
    late._done(Outcome(Claim(rows[0], "token-late", 0.0), "pending", 503, "HTTP 503", "busy",
                       utcnow(), utcnow()), Slot())
    assert await late.record_once() == 1
    (row,) = await _rows(db)
    assert (row.state, row.attempts, row.last_status, row.claim_token) == ("delivered", 1, 200, None)
    async with db.read() as conn:
        kinds = (await conn.execute(sa.select(ticket_events.c.kind))).scalars().all()
    assert kinds == ["sync_sent"] and len(receiver.received) == 1


async def test_a_cancelled_attempt_is_not_taken_for_its_own_timeout(
        bare_deliverer: tuple[Database, Any], receiver: Receiver) -> None:
    """The Deliverer cuts an attempt off by cancelling its task; a cancellation
    from outside (the process stopping) must stay one, not become an outcome."""
    db, make = bare_deliverer
    receiver.hang = lambda _msg_id, _arrival: 30
    d = make(lease=60.0)
    await d.start()
    try:
        assert await d.claim_once() == 1
        (task,) = d._attempts
        await wait_until(lambda: receiver.seen)  # in the air
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert d._outcomes == []
    finally:
        await d.close()


async def test_an_attempt_whose_lease_is_gone_before_it_starts_is_not_sent(
        bare_deliverer: tuple[Database, Any], receiver: Receiver) -> None:
    db, make = bare_deliverer
    d = make()
    await d.start()
    try:
        rows = await db.run_write(lambda conn: d._claim_rows(conn, {"hook": 1}, "token"))
        d.destinations["hook"].in_flight = 1
        await d._attempt(Claim(rows[0], "token", asyncio.get_running_loop().time() - 1), Slot())
        assert await d.record_once() == 1
    finally:
        await d.close()
    (row,) = await _rows(db)
    assert (row.state, row.attempts, row.claimed_until) == ("pending", 0, None)  # due again, untouched
    assert receiver.received == []


async def test_a_huge_answer_is_read_up_to_the_cap(bare_deliverer: tuple[Database, Any],
                                                   receiver: Receiver) -> None:
    db, make = bare_deliverer
    receiver.huge_answer = 300 * 1024 * 1024
    d = make()
    await d.start()
    try:
        assert await d.claim_once() == 1
        await wait_until(lambda: d._outcomes, timeout=10)
        await d.record_once()
    finally:
        await d.close()
    (row,) = await _rows(db)
    assert row.state == "delivered"
    # What the receiver managed to write before the hub closed: socket buffers, not 300 MB.
    await asyncio.sleep(0.2)
    assert receiver.streamed < 32 * 1024 * 1024


async def test_a_dead_letter_holds_its_tickets_later_pushes_until_retried(
        hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator, receiver: Receiver) -> None:
    receiver.script.append((400, {}, '{"msg": "unknown shop"}'))
    msg = website.request()
    await _send(http, hub, website, msg)
    await wait_until(lambda: _states(hub, ["dead"]))
    update = website.request(request_id=msg["data"]["request_id"], order_id=msg["data"]["order_id"],
                             event_type="aftersale.cancelled")
    await _send(http, hub, website, update)
    other = website.request()
    await _send(http, hub, website, other)
    await receiver.wait_for(1)  # another ticket's push goes out
    await asyncio.sleep(0.5)
    assert [r.body["data"]["ticket"]["external_id"] for r in receiver.received] == [other["data"]["request_id"]]
    await hub.refresh_gauges()
    assert 'hub_outbox_pushes{destination="hook",state="held"} 1.0' in hub.metrics.render().decode()
    dead = await dead_letters.list_dead(hub.db)
    assert [(d.event_type, d.last_status, d.held) for d in dead] == [("ticket.created", 400, 1)]

    assert await dead_letters.retry(hub.db, [dead[0].id], actor="test") == [dead[0].id]
    await receiver.wait_for(3)
    mine = [r.body["type"] for r in receiver.received
            if r.body["data"]["ticket"]["external_id"] == msg["data"]["request_id"]]
    assert mine == ["ticket.created", "ticket.status_changed"]  # in order, none skipped
    await hub.refresh_gauges()
    assert 'hub_outbox_pushes{destination="hook",state="held"} 0.0' in hub.metrics.render().decode()


async def test_a_dropped_dead_letter_lets_the_later_pushes_go(
        hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator, receiver: Receiver) -> None:
    receiver.script.append((422, {}, "no"))
    msg = website.request()
    await _send(http, hub, website, msg)
    await wait_until(lambda: _states(hub, ["dead"]))
    await _send(http, hub, website, website.request(request_id=msg["data"]["request_id"],
                                                   order_id=msg["data"]["order_id"],
                                                   event_type="aftersale.cancelled"))
    (dead,) = await dead_letters.list_dead(hub.db)
    with pytest.raises(ValueError):
        await dead_letters.drop(hub.db, [dead.id], actor="test", reason=" ")
    assert await dead_letters.drop(hub.db, [dead.id], actor="test", reason="shop closed") == [dead.id]
    await receiver.wait_for(1)
    assert [r.body["type"] for r in receiver.received] == ["ticket.status_changed"]
    assert await dead_letters.retry(hub.db, [dead.id], actor="test") == []  # no longer dead
    async with hub.db.read() as conn:
        audit = (await conn.execute(sa.text("SELECT actor, action, target FROM audit_log"))).all()
    assert [tuple(a) for a in audit] == [("test", "dlq.drop", f"outbox:{dead.id}")]


async def _states(hub: Hub, want: list[str]) -> bool:
    return [r.state for r in await _rows(hub.db)] == want


def test_a_destination_timeout_must_fit_in_the_lease(registry: Registry, pii_key: str, site_secret: str) -> None:
    from hub.errors import ConfigError

    receiver = Receiver(secret=standard_webhooks.new_secret())
    with pytest.raises(ConfigError) as err:
        make_config(registry, db_url="sqlite+aiosqlite:///x.db", pii_key=pii_key, site_secret=site_secret,
                    receiver=receiver, delivery={"lease": "10s"},
                    destinations=[{"id": "hook", "kind": "webhook", "url": "http://127.0.0.1:1/hook",
                                   "secret": receiver.secret, "timeout": "9s"}])
    assert [p.path for p in err.value.problems] == ["destinations[0].timeout"]
    assert "does not fit in delivery.lease (10s) less 2s" in str(err.value)


async def test_a_destination_that_keeps_failing_is_left_alone_and_drains_once_it_answers(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, website: WebsiteSimulator) -> None:
    down, up = Receiver(secret=standard_webhooks.new_secret()), Receiver(secret=standard_webhooks.new_secret())
    await down.start()
    await up.start()
    down.script.extend([(503, {}, "down for maintenance")] * 1000)
    try:
        cfg = make_config(
            registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=None,
            destinations=[{"id": "down", "kind": "webhook", "url": down.url, "secret": down.secret,
                           "circuit": {"failures": 3, "cooldown": "1s", "max_cooldown": "60s"}},
                          {"id": "up", "kind": "webhook", "url": up.url, "secret": up.secret}],
            sync=[{"on": "ticket.created", "to": ["down", "up"]}])
        async with running(cfg, registry) as hub, aiohttp.ClientSession() as http:
            # Many pushes in the air when it opens (one burst, one batch, claimed together):
            # their failures are no trials, so the cooldown does not grow towards
            # max_cooldown while it is down.
            await asyncio.gather(*(_send(http, hub, website, website.request()) for _ in range(40)))
            await up.wait_for(40, timeout=10)  # the healthy one is not held up
            active = hub.deliverer.destinations["down"]
            await wait_until(lambda: active.circuit.state.value == "open", timeout=10)
            hits = down.hits
            await asyncio.sleep(0.6)
            assert down.hits == hits  # left alone while the circuit is open
            status = await (await http.get(f"http://127.0.0.1:{hub.port}/healthz")).text()
            assert status
            down.script.clear()  # it answers again
            await down.wait_for(40, timeout=15)
            await wait_until(lambda: active.circuit.state.value == "closed", timeout=10)
        assert set(down.seen.values()) == set(up.seen.values()) == {1}
    finally:
        await down.stop()
        await up.stop()


async def test_a_destinations_rate_paces_its_pushes(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, website: WebsiteSimulator) -> None:
    paced = Receiver(secret=standard_webhooks.new_secret())
    arrived: list[float] = []
    paced.say = lambda _r: arrived.append(asyncio.get_running_loop().time())
    await paced.start()
    try:
        cfg = make_config(registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=None,
                          destinations=[{"id": "paced", "kind": "webhook", "url": paced.url, "secret": paced.secret,
                                         "rate": 4}],
                          sync=[{"on": "ticket.created", "to": "paced"}])
        async with running(cfg, registry) as hub, aiohttp.ClientSession() as http:
            for _ in range(8):
                body, headers = website.sign(website.request())
                async with http.post(f"http://127.0.0.1:{hub.port}/webhooks/site", data=body, headers=headers) as r:
                    assert r.status == 200
            await paced.wait_for(8, timeout=15)
        # A burst of 4, then one every quarter of a second: the last four take at least ~0.75 s.
        assert arrived[-1] - arrived[3] >= 0.7, [round(t - arrived[0], 2) for t in arrived]
    finally:
        await paced.stop()


async def test_hung_pushes_timing_out_together_are_not_an_outage(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, website: WebsiteSimulator,
        receiver: Receiver) -> None:
    """Five pushes hang and time out at once, after the others were answered: the
    destination answered attempts started after them, so its circuit stays closed."""
    hung: set[str] = set()

    def hang(msg_id: str, arrival: int) -> float:
        if len(hung) < 5 and arrival == 1 and msg_id not in hung:
            hung.add(msg_id)
            return 5
        return 0

    receiver.hang = hang
    cfg = make_config(registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=None,
                      destinations=[{"id": "hook", "kind": "webhook", "url": receiver.url, "secret": receiver.secret,
                                     "timeout": "1s", "circuit": {"failures": 3, "cooldown": "30s"}}],
                      sync=[{"on": "ticket.created", "to": "hook"}])
    async with running(cfg, registry) as hub, aiohttp.ClientSession() as http:
        await asyncio.gather(*(_send(http, hub, website, website.request()) for _ in range(20)))
        await wait_until(lambda: _all_delivered(hub, 20), timeout=20)
        assert hub.deliverer.destinations["hook"].circuit.state.value == "closed"
    assert len(hung) == 5 and all(receiver.seen[h] == 2 for h in hung)
