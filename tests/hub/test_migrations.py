"""The migrations build exactly the schema the records describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from hub.migrate import current_revision, head_revision
from hub.records import metadata
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
