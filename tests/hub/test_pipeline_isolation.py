"""One event is one unit of failure: the pipeline stage on a bare database.

Whatever one raw event makes a mapping, a cast or the database do, that event
is quarantined with a reason free of PII and the rest of its batch is
processed: extreme numbers, impossible dates, deep nesting, wrong types, an
exception nobody foresaw, and an event that breaks its whole transaction.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from connectors.website.simulator import Customer, WebsiteSimulator
from hub import standard_webhooks
from hub.apply import Records
from hub.config import SourceConfig
from hub.inbox import InboxWriter, NewRawEvent
from hub.mapping import MappingSet
from hub.pii import PiiCipher
from hub.pipeline import Pipeline, SourceRuntime
from hub.records import customers, raw_events, tickets
from hub.storage import Database
from tests.hostile import ADDRESS, DEEP, EMAIL, NAME, PHONE, hostile_timestamps, hostile_variants


@dataclass
class Bare:
    db: Database
    cipher: PiiCipher
    pipeline: Pipeline
    inbox: InboxWriter
    site: WebsiteSimulator
    n: int = 0

    async def store(self, bodies: list[bytes]) -> list[str]:
        keys = []
        events = []
        for body in bodies:
            self.n += 1
            key = f"msg_{self.n}"
            keys.append(key)
            events.append(NewRawEvent("site", key, self.cipher.seal_body(body),
                                      {"webhook-id": key, "webhook-timestamp": "0"}))
        await self.inbox.submit(events)
        return keys

    async def states(self) -> dict[str, tuple[str, str | None]]:
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(raw_events.c.dedupe_key, raw_events.c.state,
                                                 raw_events.c.reason))).all()
        return {r.dedupe_key: (r.state, r.reason) for r in rows}


@pytest.fixture
async def bare(db_url: str) -> AsyncIterator[Bare]:
    db = Database(db_url)
    await db.migrate()
    cipher = PiiCipher(base64.b64decode(base64.b64encode(os.urandom(32))))
    rt = SourceRuntime(SourceConfig(id="site", kind="website"), MappingSet().inbound("website"))
    pipeline = Pipeline(db, cipher, {"site": rt}, {}, [])
    inbox = InboxWriter(db)
    inbox.start()
    try:
        yield Bare(db, cipher, pipeline, inbox, WebsiteSimulator(secret=standard_webhooks.new_secret(), seed=4))
    finally:
        await inbox.close()
        await db.close()


def _customer() -> Customer:
    return Customer("u77", NAME, PHONE, EMAIL, ADDRESS)


def _hostile_bodies(site: WebsiteSimulator) -> list[bytes]:
    bodies = []
    for field, value in hostile_variants():
        msg = site.request(_customer())
        if value is None:
            del msg["data"][field]
        else:
            msg["data"][field] = value
        bodies.append(orjson.dumps(msg).replace(b'"DEEP"', DEEP))
    for ts in hostile_timestamps():
        msg = site.request(_customer())
        msg["timestamp"] = ts
        bodies.append(orjson.dumps(msg))
    bodies.append(b'{"type": "aftersale.requested", "data": ')  # stored before a parser saw it
    return bodies


async def _drain(p: Pipeline) -> None:
    # Bounded: a cast that did arithmetic on 1e999999999 would hold this for minutes.
    async def run() -> None:
        while await p.run_once():
            pass

    await asyncio.wait_for(run(), timeout=60)


async def test_hostile_events_are_quarantined_and_the_rest_of_the_batch_goes_on(bare: Bare) -> None:
    normal = [orjson.dumps(bare.site.request()) for _ in range(10)]
    hostile = _hostile_bodies(bare.site)
    bodies = [b for pair in zip(hostile, normal * 5, strict=False) for b in pair] + hostile[len(normal) * 5:]
    keys = await bare.store(bodies)
    await _drain(bare.pipeline)

    states = await bare.states()
    normal_keys = {k for k, b in zip(keys, bodies, strict=True) if b in normal}
    assert {states[k][0] for k in normal_keys} == {"done"}
    quarantined = {k: reason for k, (state, reason) in states.items() if state == "quarantined"}
    assert set(quarantined) == set(keys) - normal_keys  # every hostile one, nothing else
    assert all(reason for reason in quarantined.values())
    for reason in quarantined.values():
        for clear in (NAME, PHONE, ADDRESS, EMAIL, "文三路", "ouyang"):
            assert clear not in reason, reason
    async with bare.db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(tickets))).scalar_one() == 10
    reasons = "\n".join(quarantined.values())
    for expected in ("'Infinity' is not an amount", "more than 500 items", "nests deeper than 64",
                     "outside 2000..2099", "expected text, got an object", "longer than 128",
                     "NUL character", "body is not JSON"):
        assert expected in reasons


async def test_an_exception_nobody_foresaw_quarantines_that_event_only(bare: Bare) -> None:
    mapping = bare.pipeline.sources["site"].mapping
    real = mapping.apply

    def apply(doc: dict[str, Any]) -> Any:
        if doc["body"]["data"]["request_id"] == "boom":
            raise RecursionError(f"maximum recursion depth exceeded for {NAME} {PHONE}")
        return real(doc)

    mapping.apply = apply  # type: ignore[method-assign]
    try:
        boom = bare.site.request(_customer(), request_id="boom")
        keys = await bare.store([orjson.dumps(bare.site.request()), orjson.dumps(boom),
                                 orjson.dumps(bare.site.request())])
        await _drain(bare.pipeline)
    finally:
        mapping.apply = real  # type: ignore[method-assign]
    states = await bare.states()
    assert [states[k][0] for k in keys] == ["done", "quarantined", "done"]
    reason = states[keys[1]][1]
    assert reason is not None and reason.startswith("internal error while mapping: RecursionError in ")
    assert NAME not in reason and PHONE not in reason


async def test_an_event_that_breaks_its_transaction_is_found_and_quarantined(
        bare: Bare, monkeypatch: pytest.MonkeyPatch) -> None:
    """A storage error that only one event causes (here injected into the stage that
    applies events) fails the whole batch; the pipeline then takes that batch's events
    one at a time, so the others go through and that one is quarantined after a few
    tries instead of holding every later event back forever."""
    real = Records.apply

    def apply(records: Records, ev: Any, now: Any) -> int:
        if ev.n.ticket["external_id"] == "poison":
            raise sqlite3.OperationalError("string or blob too big")
        return real(records, ev, now)

    monkeypatch.setattr(Records, "apply", apply)
    poison = orjson.dumps(bare.site.request(request_id="poison"))
    keys = await bare.store([orjson.dumps(bare.site.request()) for _ in range(3)] + [poison]
                            + [orjson.dumps(bare.site.request()) for _ in range(3)])
    for _ in range(40):
        try:
            settled = await bare.pipeline.run_once()
        except Exception:  # noqa: BLE001 - the daemon's loop backs off and runs it again
            continue
        states = await bare.states()
        if all(state != "pending" for state, _ in states.values()) and not settled:
            break
    states = await bare.states()
    assert [states[k][0] for k in keys] == ["done"] * 3 + ["quarantined"] + ["done"] * 3
    assert (states[keys[3]][1] or "").startswith("failed 3 times alone: OperationalError in ")
    # Back to whole batches once the poison is out.
    assert bare.pipeline._alone == 0


async def test_a_record_its_connector_could_not_read_is_quarantined_with_why(bare: Bare) -> None:
    from hub.interfaces import UNREADABLE
    from hub.polling import unreadable

    event = unreadable({"refund_id": {"x": 1}}, TypeError("unhashable type: 'dict'"))
    bare.n += 1
    await bare.inbox.submit([NewRawEvent("site", "poll-1", bare.cipher.seal_body(event.body), event.headers)])
    await _drain(bare.pipeline)
    state, reason = (await bare.states())["poll-1"]
    assert state == "quarantined" and reason == event.headers[UNREADABLE]
    assert reason.startswith("the connector could not read this record: TypeError")


async def test_a_customer_another_process_created_first_is_joined_at_once(
        bare: Bare, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two hub processes meeting a new customer at once: the one that writes second
    collides on the identities' unique index. That is not the database failing —
    the batch is taken one event at a time straight away (no exception for the
    supervisor to back off on), and the event joins the customer the other made."""
    real = Records.write
    raced: list[bool] = []

    def other_process_commits_first() -> None:
        rows = ("INSERT INTO customers (id, identities, created_at, updated_at) "
                "VALUES (424242, '[[424242, \"site_user\", \"u77\"]]', {t}, {t})",
                "INSERT INTO customer_identities (id, customer_id, kind, value, created_at) "
                "VALUES (424242, 424242, 'site_user', 'u77', {t})")
        if bare.db.is_sqlite:
            conn = sqlite3.connect(sa.make_url(db_url).database or "")
            with conn:
                for sql in rows:
                    conn.execute(sql.format(t="'2026-11-11 00:00:00.000000'"))
            conn.close()
            return

        async def insert() -> None:
            import asyncpg

            pg = await asyncpg.connect(sa.make_url(db_url).set(drivername="postgresql").render_as_string(False))
            try:
                async with pg.transaction():
                    for sql in rows:
                        await pg.execute(sql.format(t="now()"))
            finally:
                await pg.close()

        asyncio.run(insert())

    def write(records: Records, w: Any) -> None:
        if not raced:
            raced.append(True)
            # Another process, between this batch's reads and its writes.
            t = threading.Thread(target=other_process_commits_first)
            t.start()
            t.join()
        real(records, w)

    monkeypatch.setattr(Records, "write", write)
    keys = await bare.store([orjson.dumps(bare.site.request(_customer())),
                             orjson.dumps(bare.site.request())])
    settled = await bare.pipeline.run_once()  # raises nothing
    assert raced and settled == 1 and bare.pipeline._alone == 1
    await _drain(bare.pipeline)
    assert bare.pipeline._alone == 0
    states = await bare.states()
    assert [states[k][0] for k in keys] == ["done", "done"]
    async with bare.db.read() as conn:
        joined = (await conn.execute(sa.select(tickets.c.customer_id).order_by(tickets.c.id))).scalars().all()
        listed = (await conn.execute(sa.select(customers.c.identities).where(customers.c.id == 424242))).scalar()
    assert joined[0] == 424242 and joined[1] != 424242
    # The event's phone and e-mail joined the other process's customer, on its row too.
    assert listed[0] == [424242, "site_user", "u77"]
    assert [kind for _, kind, _ in listed] == ["site_user", "phone", "email"]
