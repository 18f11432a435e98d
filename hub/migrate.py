"""Schema migrations with Alembic, run from code (``hub db upgrade`` and start-up).

On PostgreSQL an advisory lock makes concurrent start-ups of several hub
processes take turns instead of racing to create the same tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

if TYPE_CHECKING:
    from hub.storage import Database

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_ID = 0x4855_4221  # "HUB!"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(db: Database) -> str | None:
    async with db.engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def upgrade(db: Database, revision: str = "head") -> None:
    cfg = alembic_config()

    def run(conn: sa.Connection) -> None:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)

    async with db.engine.connect() as conn:
        if not db.is_sqlite:
            await conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_ID})
        try:
            await conn.run_sync(run)
            await conn.commit()
        finally:
            if not db.is_sqlite:
                await conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_ID})
                await conn.commit()
