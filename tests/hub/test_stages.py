"""The pipeline's stages, each on a bare database (no daemon, no HTTP):
claim and settle (hub.claim), applying a batch to the records (hub.apply,
written through hub.bulk's two kinds of Writes), and rendering outbox rows
(hub.outbox_rows, pure)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from connectors.webhook.destination import WebhookDestinationConfig
from connectors.website.simulator import WebsiteSimulator
from hub import claim as claims
from hub import standard_webhooks
from hub.apply import Event, Records
from hub.bulk import ConnectionWrites, SqliteWrites, Writes
from hub.claim import Settlement
from hub.config import SourceConfig, SyncRule
from hub.inbox import InboxWriter, NewRawEvent, event_document
from hub.mapping import MappingSet
from hub.outbox_rows import outbox_rows
from hub.pii import PiiCipher
from hub.records import customers, outbox, raw_events, ticket_events, tickets, utcnow
from hub.runtimes import DestinationRuntime, SourceRuntime
from hub.storage import Database
from hub.sync import Change
from hub.views import iso

RULES = [SyncRule(on=["ticket.created", "ticket.status_changed"], to=["hook"])]


@dataclass
class Bare:
    db: Database
    cipher: PiiCipher
    source: SourceRuntime
    destinations: dict[str, DestinationRuntime]
    site: WebsiteSimulator
    inbox: InboxWriter

    async def store(self, messages: list[dict[str, Any]]) -> None:
        await self.inbox.submit([
            NewRawEvent("site", m["id"], self.cipher.seal_body(orjson.dumps(m)), {"webhook-id": m["id"]})
            for m in messages])


@pytest.fixture
async def bare(db_url: str) -> AsyncIterator[Bare]:
    db = Database(db_url)
    await db.migrate()
    cipher = PiiCipher(os.urandom(32))
    source = SourceRuntime(SourceConfig(id="site", kind="website"), MappingSet().inbound("website"))
    dest = WebhookDestinationConfig(id="hook", kind="webhook", url="http://127.0.0.1:9/hook",
                                    secret=standard_webhooks.new_secret())  # type: ignore[arg-type]
    destinations = {"hook": DestinationRuntime(dest, MappingSet().outbound("webhook"))}
    inbox = InboxWriter(db)
    inbox.start()
    try:
        yield Bare(db, cipher, source, destinations, WebsiteSimulator(secret=standard_webhooks.new_secret(), seed=11), inbox)
    finally:
        await inbox.close()
        await db.close()


def _message(msg: dict[str, Any], n: int) -> dict[str, Any]:
    return {**msg, "id": f"msg_{n}"}


# ---------------------------------------------------------------- claim, settle


async def test_claim_takes_the_oldest_pending_and_settle_marks_each_outcome(bare: Bare) -> None:
    await bare.store([_message(bare.site.request(), n) for n in range(5)])
    now = utcnow()

    def first(conn: sa.Connection) -> list[int]:
        rows = claims.claim(conn, bare.db, 3)
        claims.settle(ConnectionWrites(conn), [
            Settlement(rows[0].id, "done"), Settlement(rows[1].id, "quarantined", "bad amount"),
            Settlement(rows[2].id, "pending", attempts=1)], now)
        return [r.id for r in rows]

    ids = await bare.db.run_write(first)
    assert ids == sorted(ids) and len(ids) == 3
    async with bare.db.read() as conn:
        states = {r.id: (r.state, r.reason, r.attempts) for r in
                  (await conn.execute(sa.select(raw_events).order_by(raw_events.c.id))).all()}
    assert [states[i] for i in ids] == [("done", None, 0), ("quarantined", "bad amount", 0), ("pending", None, 1)]
    # The retried one is pending again: the next claim takes it first, then the two untouched.
    again = await bare.db.run_write(lambda conn: [r.id for r in claims.claim(conn, bare.db, 10)])
    assert again == [ids[2], *sorted(set(states) - set(ids))]


@pytest.mark.parametrize("writes", ["connection", "rendered"])
async def test_settling_an_event_someone_else_settled_loses_the_claim(bare: Bare, writes: str) -> None:
    if not bare.db.is_sqlite:
        pytest.skip("PostgreSQL claims lock their rows: nobody else can settle them meanwhile")
    await bare.store([_message(bare.site.request(), 1)])
    rows = await bare.db.run_write(lambda conn: claims.claim(conn, bare.db, 1))
    done = [Settlement(rows[0].id, "done")]
    await bare.db.run_write(lambda conn: claims.settle(ConnectionWrites(conn), done, utcnow()))
    with pytest.raises(claims.ClaimLost):
        if writes == "connection":
            await bare.db.run_write(lambda conn: claims.settle(ConnectionWrites(conn), done, utcnow()))
        else:
            w = SqliteWrites()
            claims.settle(w, done, utcnow())
            await bare.db.run_sqlite_write(w.run, urgent=False)


# ---------------------------------------------------------------- apply


async def test_a_batch_is_loaded_applied_in_order_and_written_once(bare: Bare) -> None:
    """Three events in one batch: a request, its later status change, and a
    second request of the same customer — one customer, two tickets, the
    first one ending in the later status, each change pushed once."""
    person = bare.site.customer()
    first = bare.site.request(person)
    later = bare.site.request(person, request_id=first["data"]["request_id"], order_id=first["data"]["order_id"],
                              event_type="aftersale.updated", status="awaiting_return")
    other = bare.site.request(person)
    await bare.store([_message(m, n) for n, m in enumerate([first, later, other])])
    now = utcnow()

    def plan(conn: sa.Connection) -> tuple[Records, list[int]]:
        rows = claims.claim(conn, bare.db, 10)
        events = [Event(r.id, r.dedupe_key, bare.source, bare.source.mapping.apply(
            event_document("site", r.headers, orjson.loads(bare.cipher.open_body(r.body))))) for r in rows]
        records = Records(conn, bare.db, bare.cipher, RULES, bare.destinations)
        records.load(events)
        return records, [records.apply(ev, now) for ev in events]

    def write(w: Writes, records: Records, raw_ids: list[int]) -> None:
        records.write(w)
        claims.settle(w, [Settlement(i, "done") for i in raw_ids], now)

    async with bare.db.read() as conn:
        raw_ids = (await conn.execute(sa.select(raw_events.c.id).order_by(raw_events.c.id))).scalars().all()
    if bare.db.is_sqlite:  # as the pipeline does: planned on a snapshot, rendered, run under the lock
        records, ticket_ids = await bare.db.run_read_sync(plan)
        rendered = SqliteWrites()
        write(rendered, records, raw_ids)
        await bare.db.run_sqlite_write(rendered.run, urgent=False)
    else:
        def both(conn: sa.Connection) -> list[int]:
            records, ids = plan(conn)
            write(ConnectionWrites(conn), records, raw_ids)
            return ids
        ticket_ids = await bare.db.run_write(both)

    assert ticket_ids[0] == ticket_ids[1] != ticket_ids[2]
    async with bare.db.read() as conn:
        people = (await conn.execute(sa.select(customers))).all()
        found = {r.id: r for r in (await conn.execute(sa.select(tickets))).all()}
        pushes = (await conn.execute(sa.select(outbox).order_by(outbox.c.id))).all()
        timeline = (await conn.execute(sa.select(ticket_events.c.ticket_id, ticket_events.c.kind)
                                       .order_by(ticket_events.c.id))).all()
        states = (await conn.execute(sa.select(raw_events.c.state))).scalars().all()
    assert len(people) == 1 and {t.customer_id for t in found.values()} == {people[0].id}
    assert people[0].phone_enc and person.phone not in str(people[0].phone_enc)  # sealed at rest
    assert found[ticket_ids[0]].status == "awaiting_return" and found[ticket_ids[2]].status == "new"
    assert [(p.ticket_id, p.event_type, p.idempotency_key) for p in pushes] == [
        (ticket_ids[0], "ticket.created", f"msg_hook_{ticket_ids[0]}_{raw_ids[0]}.created"),
        (ticket_ids[0], "ticket.status_changed", f"msg_hook_{ticket_ids[0]}_{raw_ids[1]}.status_changed"),
        (ticket_ids[2], "ticket.created", f"msg_hook_{ticket_ids[2]}_{raw_ids[2]}.created"),
    ]
    assert [k for t, k in timeline if t == ticket_ids[0]][:2] == ["created", "status_changed"]
    assert states == ["done"] * 3


async def test_an_event_undone_leaves_no_trace_of_itself(bare: Bare) -> None:
    """The undo journal: what one event changed in memory is put back exactly,
    so a quarantined event writes nothing and the others still do."""
    person = bare.site.customer()
    await bare.store([_message(bare.site.request(person), 1), _message(bare.site.request(person), 2)])

    def plan(conn: sa.Connection) -> tuple[int, int, int, int]:
        rows = claims.claim(conn, bare.db, 10)
        events = [Event(r.id, r.dedupe_key, bare.source, bare.source.mapping.apply(
            event_document("site", r.headers, orjson.loads(bare.cipher.open_body(r.body))))) for r in rows]
        records = Records(conn, bare.db, bare.cipher, RULES, bare.destinations)
        records.load(events)
        records.apply(events[0], utcnow())
        before = (len(records.new["tickets"]), len(records.pushes), len(records.timeline))
        mark = records.mark()
        records.apply(events[1], utcnow())
        records.undo(mark)
        after = (len(records.new["tickets"]), len(records.pushes), len(records.timeline))
        assert after == before
        (customer,) = records.new["customers"].values()
        return len(records.new["customers"]), len(records.new["tickets"]), len(records.pushes), customer["id"]

    n_customers, n_tickets, n_pushes, _ = await bare.db.run_write(plan)
    assert (n_customers, n_tickets, n_pushes) == (1, 1, 1)


# ---------------------------------------------------------------- outbox rows (pure)


def _ticket(**over: Any) -> SimpleNamespace:
    now = utcnow()
    values = dict(id=7, channel="website", source_id="site", external_id="AS7", type="refund_only",
                  status="refund_pending", reason_code="quality", reason_text=None, description=None,
                  priority="normal", refund_amount=1999, items=None, order_id=None, customer_id=3, queue=None,
                  assignee=None, flags=None, return_carrier=None, return_waybill=None, sla_due_at=None,
                  source_updated_at=now, created_at=now, updated_at=now)
    return SimpleNamespace(**(values | over))


def test_times_in_pushes_are_iso_with_their_own_offset() -> None:
    utc = datetime(2026, 11, 11, 0, 0, 1, 250000, tzinfo=UTC)
    beijing = utc.astimezone(timezone(timedelta(hours=8)))
    assert iso(utc) == "2026-11-11T00:00:01.250000Z"
    assert iso(utc) == "2026-11-11T00:00:01.250000Z"  # the second time from the cache: the same
    assert iso(beijing) == "2026-11-11T08:00:01.250000+08:00"  # the same instant, not the cached text
    assert iso(None) is None


def test_outbox_rows_follow_the_rules_and_mask_contacts_for_destinations_without_pii(bare: Bare) -> None:
    cipher = bare.cipher
    customer = SimpleNamespace(id=3, display_name="王小明", phone_enc=cipher.encrypt("13912345678"),
                               address_enc=cipher.encrypt("杭州市西湖区文三路 99 号"), email="xm@example.com")
    changes = [Change("ticket.created", None, "new", "41.created"),
               Change("ticket.status_changed", "new", "refund_pending", "42.status"),
               Change("ticket.updated", "refund_pending", "refund_pending", "43.updated")]  # no rule for it
    now = utcnow() + timedelta(seconds=1)
    rows = outbox_rows(RULES, bare.destinations, cipher, _ticket(), None, customer, [("platform_user", "u1")],
                       changes, now)
    assert [(r["event_type"], r["idempotency_key"], r["ordering_key"]) for r in rows] == [
        ("ticket.created", "msg_hook_7_41.created", "hook:7"),
        ("ticket.status_changed", "msg_hook_7_42.status", "hook:7")]
    text = rows[1]["payload"]
    assert "13912345678" not in text and "文三路" not in text and "xm@example.com" not in text
    body = orjson.loads(text)
    assert body["type"] == "ticket.status_changed" and orjson.dumps(body).count(b"refund_pending") >= 1
    # The same destination with pii: true sees the number.
    open_dest = {"hook": DestinationRuntime(bare.destinations["hook"].config.model_copy(update={"pii": True}),
                                            bare.destinations["hook"].mapping)}
    clear = outbox_rows(RULES, open_dest, cipher, _ticket(), None, customer, [], changes[:1], now)
    assert "13912345678" in clear[0]["payload"]


def test_rendered_writes_are_plain_driver_tuples(tmp_path: Any) -> None:
    """SqliteWrites renders times and JSON once, as the column types would; run
    on a plain sqlite3 connection it stores what SQLAlchemy would read back."""
    path = tmp_path / "w.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE ticket_events (id INTEGER PRIMARY KEY, ticket_id INT, kind TEXT, from_status TEXT,"
                 " to_status TEXT, detail JSON, raw_event_id INT, at DATETIME)")
    w = SqliteWrites()
    at = utcnow()
    w.insert(ticket_events, [{"ticket_id": 1, "kind": "created", "from_status": None, "to_status": "new",
                              "detail": {"a": "测试"}, "raw_event_id": 2, "at": at}])
    conn.execute("BEGIN")
    w.run(conn)
    conn.execute("COMMIT")
    (data, stored_at), = conn.execute("SELECT detail, at FROM ticket_events").fetchall()
    assert orjson.loads(data) == {"a": "测试"}
    assert stored_at == at.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    conn.close()
