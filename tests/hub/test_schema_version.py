"""The schema check every process makes at start, without Alembic."""

from __future__ import annotations

import sqlalchemy as sa

from hub import schema_version
from hub.migrate import head_revision
from hub.storage import Database


def test_the_head_read_from_the_files_is_alembics() -> None:
    assert schema_version.head() is not None
    assert schema_version.head() == head_revision()


async def test_a_database_is_current_only_at_the_head(db_url: str) -> None:
    db = Database(db_url)
    try:
        assert not await schema_version.is_current(db)  # new: no alembic_version yet
        await db.migrate()
        assert await schema_version.is_current(db)
        async with db.write() as conn:  # an older hub's schema
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = '0008'"))
        assert not await schema_version.is_current(db)
    finally:
        await db.close()
