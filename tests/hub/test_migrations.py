"""The migrations build exactly the schema the records describe."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from hub.migrate import current_revision, head_revision, upgrade
from hub.records import customers, known_by, metadata
from hub.storage import Database


async def test_upgrade_reaches_head_and_matches_the_records(db_url: str) -> None:
    db = Database(db_url)
    try:
        assert await current_revision(db) is None
        await db.migrate()
        await db.migrate()  # idempotent
        assert await current_revision(db) == head_revision()
        async with db.engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": False}), metadata))
        assert diff == []
    finally:
        await db.close()


async def test_0011_lists_each_customers_identities_on_its_row(db_url: str) -> None:
    """An existing database: every customer's identities, in id order, end up on
    its row (none for a customer merged away or never linked), and the index
    by customer is gone."""
    db = Database(db_url)
    try:
        await upgrade(db, "0010")
        t = "'2026-11-11 00:00:00'"
        async with db.engine.begin() as conn:
            for sql in (
                f"INSERT INTO customers (id, created_at, updated_at) VALUES (1, {t}, {t}), (2, {t}, {t}), "
                f"(3, {t}, {t})",
                "UPDATE customers SET merged_into_id = 1 WHERE id = 3",
                "INSERT INTO customer_identities (id, customer_id, kind, value, created_at) VALUES "
                f"(7, 1, 'phone', 'ab12', {t}), (5, 1, 'site_user', 'u5', {t}), (9, 1, 'wechat_openid', 'o9', {t}), "
                f"(6, 2, 'site_user', 'u6', {t})",
            ):
                await conn.execute(sa.text(sql))
        await upgrade(db)
        async with db.read() as conn:
            rows = {r.id: r for r in (await conn.execute(sa.select(customers))).all()}
            indexes = await conn.run_sync(lambda c: sa.inspect(c).get_indexes("customer_identities"))
        assert rows[1].identities == [[5, "site_user", "u5"], [7, "phone", "ab12"], [9, "wechat_openid", "o9"]]
        assert known_by(rows[1]) == [("site_user", "u5"), ("phone", "ab12"), ("wechat_openid", "o9")]
        assert rows[2].identities == [[6, "site_user", "u6"]]
        assert rows[3].identities == [] and known_by(rows[3]) == []
        assert "ix_customer_identities_customer" not in {i["name"] for i in indexes}
    finally:
        await db.close()
