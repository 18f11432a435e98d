"""Every statement the hub runs on its hot paths uses an index: no cost that grows with the data.

A real hub (website and call-center sources, a webhook destination) takes
requests, calls that join tickets, recordings that follow calls, an order
number keyed in for any channel, duplicates and status changes; every
SELECT / UPDATE / DELETE it sends the database meanwhile is captured, then
explained. A full scan of a table that grows — SQLite's ``SCAN <table>``,
PostgreSQL's ``Seq Scan`` with sequential scans priced out of reach — fails.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from connectors.callcenter.simulator import CallCenterSimulator
from connectors.website.simulator import WebsiteSimulator
from hub.daemon import Hub
from hub.registry import Registry
from hub.storage import Database
from tests.conftest import Receiver, make_config, running, wait_until

GROWING = ("raw_events", "customers", "customer_identities", "customer_merges", "orders", "tickets",
           "ticket_events", "outbox", "audit_log")


class Captured:
    def __init__(self) -> None:
        self.statements: dict[str, Any] = {}  # SQL → one set of its parameters
        self.raw: dict[str, str] = {}         # shape → one traced statement, values written in

    def listen(self, engine: sa.Engine) -> None:
        @event.listens_for(engine, "before_cursor_execute")
        def seen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                 executemany: bool) -> None:
            head = statement.lstrip().split(None, 1)[0].upper()
            if head in ("SELECT", "UPDATE", "DELETE", "WITH") and "sqlite_master" not in statement \
                    and "alembic_version" not in statement:
                self.statements.setdefault(statement, parameters[0] if executemany else parameters)

    def trace(self, statement: str) -> None:
        """The plain sqlite3 writes (the inbox's, the pipeline's rendered batches), values written in."""
        head = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        if head in ("SELECT", "UPDATE", "DELETE", "WITH"):
            # One statement per shape: literals vary, the plan does not.
            shape = re.sub(r"'[^']*'|\b\d+(\.\d+)?\b", "?", statement)
            if shape not in self.raw:
                self.raw[shape] = statement
                self.statements[statement] = None


@pytest.fixture
def captured() -> Iterator[Captured]:
    yield Captured()


def _sqlite_scans(path: str, statements: dict[str, Any]) -> list[str]:
    found = []
    conn = sqlite3.connect(path)
    try:
        for sql, params in statements.items():
            plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}", params or ()).fetchall()
            for *_, detail in plan:
                m = re.match(r"SCAN (\w+)", detail)
                if m and m.group(1) in GROWING:
                    found.append(f"{detail}\n    in: {sql}")
    finally:
        conn.close()
    return found


async def _postgres_scans(db_url: str, statements: dict[str, Any]) -> list[str]:
    found = []
    db = Database(db_url)
    async with db.engine.connect() as conn:
        pg = (await conn.get_raw_connection()).driver_connection
        await pg.execute("SET enable_seqscan = off")  # an index that exists is then always chosen
        for sql, params in statements.items():
            rows = await pg.fetch(f"EXPLAIN (FORMAT JSON) {sql}", *(params or ()))
            plan = rows[0][0]
            if isinstance(plan, (str, bytes)):
                plan = orjson.loads(plan)

            def walk(node: dict[str, Any], sql: str = sql) -> None:
                if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") in GROWING:
                    found.append(f"Seq Scan on {node['Relation Name']}\n    in: {sql}")
                for child in node.get("Plans", []):
                    walk(child)

            walk(plan[0]["Plan"])
    await db.close()
    return found


async def test_no_hot_statement_scans_a_growing_table(registry: Registry, db_url: str, pii_key: str,
                                                      site_secret: str, receiver: Receiver,
                                                      captured: Captured) -> None:
    cfg = make_config(registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=receiver,
                      sources=[{"id": "site", "kind": "website", "secret": site_secret},
                               {"id": "cc", "kind": "callcenter", "format": "tccc", "username": "hub",
                                "password": "pw", "mapping": "callcenter"}])
    async with running(cfg, registry) as hub, aiohttp.ClientSession() as http:
        if hub.db._sync_engine is not None:
            captured.listen(hub.db._sync_engine)
            hub.db.trace_raw(captured.trace)
        captured.listen(hub.db.engine.sync_engine)
        site = WebsiteSimulator(secret=site_secret, seed=8)
        calls = CallCenterSimulator(f"{hub_url(hub)}/webhooks/cc", "hub", "pw")
        people = [site.customer() for _ in range(6)]
        orders = []
        for person in people:
            msg = site.request(person)
            orders.append(msg["data"]["order_id"])
            body, headers = site.sign(msg)
            for _ in range(2):  # and its duplicate
                async with http.post(f"{hub_url(hub)}/webhooks/site", data=body, headers=headers) as r:
                    assert r.status == 200
            later = site.request(person, request_id=msg["data"]["request_id"], order_id=msg["data"]["order_id"],
                                 event_type="aftersale.updated", status="awaiting_return")
            body, headers = site.sign(later)
            async with http.post(f"{hub_url(hub)}/webhooks/site", data=body, headers=headers) as r:
                assert r.status == 200
        for person, order in zip(people, orders, strict=True):
            cdr = calls.cdr(person.phone, complaint=True, order_no=order)  # joins the open ticket
            assert (await calls.push(http, cdr))[0] == 200
            assert (await calls.push(http, calls.recording(cdr), action="record"))[0] == 200
        stranger = calls.cdr("13900001111", complaint=True, order_no=orders[0])  # any channel's order
        assert (await calls.push(http, stranger))[0] == 200
        await receiver.wait_for(12, timeout=20)
        await wait_until(lambda: _settled(hub), timeout=20)
        await hub.refresh_gauges()
        await hub.deliverer.has_due()  # what a process that polls for work reads when idle
        await hub.pipeline.has_pending()
        statements = dict(captured.statements)
    assert len(statements) >= 10, statements.keys()  # the capture saw the pipeline and delivery
    if hub.db.is_sqlite:
        # The pipeline's rendered batches went through the plain connection: seen too.
        assert any(sql.startswith("UPDATE raw_events") for sql in captured.raw.values()), captured.raw
        assert any(sql.startswith("UPDATE tickets") for sql in captured.raw.values()), captured.raw
        scans = _sqlite_scans(sa.make_url(db_url).database or "", statements)
    else:
        scans = await _postgres_scans(db_url, statements)
    assert not scans, "full scans of growing tables:\n" + "\n".join(scans)


def hub_url(hub: Hub) -> str:
    return f"http://127.0.0.1:{hub.port}"


async def _settled(hub: Hub) -> bool:
    async with hub.db.read() as conn:
        pending = (await conn.execute(sa.text("SELECT count(*) FROM raw_events WHERE state = 'pending'"))).scalar()
    return pending == 0
