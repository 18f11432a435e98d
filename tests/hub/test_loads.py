"""hub.loads: what a batch reads comes back exactly as SQLAlchemy Core gives it
(SQLite's driver-SQL path decodes with the columns' own processors), and the
terms select the rows asked for and no others."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from hub.loads import Reader, Where
from hub.records import customers, identities, orders, tickets
from hub.storage import Database

WHEN = datetime(2026, 11, 11, 0, 0, 1, 250_000, tzinfo=UTC)


def _insert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    conn.execute(table.insert(), [{**dict.fromkeys(table.c.keys()), **row} for row in rows])


def _seed(conn: sa.Connection) -> None:
    _insert(conn, customers, [
        {"id": 1, "display_name": "张三", "phone_enc": "v1:k:abc", "phone_index": "f" * 64, "email": None,
         "created_at": WHEN, "updated_at": WHEN},
        {"id": 2, "display_name": None, "merged_into_id": 1, "created_at": WHEN, "updated_at": WHEN},
    ])
    _insert(conn, identities, [
        {"id": 10, "customer_id": 1, "kind": "site_user", "value": "u1", "created_at": WHEN},
        {"id": 11, "customer_id": 1, "kind": "phone", "value": "a" * 64, "created_at": WHEN},
        {"id": 12, "customer_id": 2, "kind": "site_user", "value": "u2", "created_at": WHEN},
        {"id": 13, "customer_id": 2, "kind": "email", "value": "u1", "created_at": WHEN},
    ])
    _insert(conn, orders, [
        {"id": 5, "channel": "website", "source_id": "site", "external_id": "SO1", "customer_id": 1,
         "items": [{"sku": "A", "qty": 2}], "paid_amount": 1990, "is_stub": False, "placed_at": WHEN,
         "created_at": WHEN, "updated_at": WHEN},
        {"id": 6, "channel": "taobao", "source_id": "tb", "external_id": "SO1", "customer_id": None,
         "is_stub": True, "created_at": WHEN, "updated_at": WHEN},
    ])
    _insert(conn, tickets, [
        {"id": 7, "channel": "website", "source_id": "site", "external_id": "AS1", "type": "refund_only",
         "status": "new", "priority": "normal", "order_id": 5, "customer_id": 1, "refund_amount": 1990,
         "items": [{"sku": "A", "qty": 1}], "flags": ["amount_mismatch"], "source_updated_at": WHEN,
         "created_at": WHEN, "updated_at": WHEN},
        {"id": 8, "channel": "website", "source_id": "site", "external_id": "AS2", "type": "return_refund",
         "status": "resolved", "priority": "normal", "customer_id": 1, "created_at": WHEN, "updated_at": WHEN},
    ])


def _core(conn: sa.Connection, table: sa.Table, where: Any, names: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    cols = [table.c[n] for n in names] if names else [table]
    return [dict(r._mapping) for r in conn.execute(sa.select(*cols).where(where).order_by(table.c.id))]


def _typed(rows: list[dict[str, Any]]) -> list[dict[str, tuple[type, Any]]]:
    """Values with their types: 1 and True, or a naive and an aware time, differ here."""
    return [{k: (type(v), v) for k, v in row.items()} for row in rows]


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    db = Database(db_url)
    await db.migrate()
    try:
        await db.run_write(_seed)
        yield db
    finally:
        await db.close()


async def test_rows_read_back_exactly_as_core_reads_them(db: Database) -> None:
    def compare(conn: sa.Connection) -> None:
        read = Reader(conn, db)
        cases: list[tuple[sa.Table, Where, Any, tuple[str, ...] | None]] = [
            (customers, Where().values("id", {1, 2, 99}), customers.c.id.in_([1, 2, 99]), None),
            (orders, Where().pairs("channel", "external_id", {("website", "SO1"), ("jd", "SO1")}),
             sa.and_(orders.c.channel == "website", orders.c.external_id == "SO1"), None),
            (tickets, Where().pairs("source_id", "external_id", {("site", "AS1")}).values("id", {8}),
             tickets.c.id.in_([7, 8]), None),
            (identities, Where().values("customer_id", {1}), identities.c.customer_id == 1,
             ("id", "customer_id", "kind", "value")),
        ]
        for table, where, core_where, names in cases:
            got = list(read.rows(table, where, names))
            assert got, table.name
            assert _typed(got) == _typed(_core(conn, table, core_where, names)), table.name
        # Aware UTC times, JSON as lists, booleans as booleans — not the stored text and ints.
        t = next(read.rows(tickets, Where().values("id", {7})))
        assert t["created_at"] == WHEN and t["created_at"].tzinfo is not None
        assert t["items"] == [{"sku": "A", "qty": 1}] and t["flags"] == ["amount_mismatch"]
        o = next(read.rows(orders, Where().values("id", {5})))
        assert o["is_stub"] is False

    await db.run_write(compare)


async def test_terms_select_the_pairs_asked_for_and_the_among_filter(db: Database) -> None:
    def check(conn: sa.Connection) -> None:
        read = Reader(conn, db)
        # ("site_user", "u1") and ("email", "u1"): the same value under two kinds.
        found = {(r["kind"], r["value"]) for r in read.rows(
            identities, Where().pairs("kind", "value", {("site_user", "u1"), ("email", "nobody")}),
            ("customer_id", "kind", "value"))}
        assert found == {("site_user", "u1")}
        open_of_1 = [r["id"] for r in read.rows(
            tickets, Where().values("customer_id", {1}, among={"status": {"new", "processing"}}))]
        assert open_of_1 == [7]
        assert list(read.rows(tickets, Where())) == []  # nothing asked: nothing read
        either = [r["id"] for r in read.rows(
            orders, Where().pairs("channel", "external_id", {("taobao", "SO1")}).values("id", {5}))]
        assert either == [5, 6]  # terms OR'ed, in id order

    await db.run_write(check)
