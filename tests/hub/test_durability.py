"""Which commits wait for the disk: all but delivery's claims and outcomes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from hub.storage import Database


def _synchronous(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA synchronous").fetchone()[0])


async def test_a_relaxed_sqlite_commit_leaves_the_next_one_synced(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    try:
        assert await db.run_sqlite_write(_synchronous) == 2                  # FULL
        assert await db.run_sqlite_write(_synchronous, durable=False) == 1   # NORMAL
        assert await db.run_sqlite_write(_synchronous) == 2

        def fails(conn: sqlite3.Connection) -> None:
            raise ValueError("a bug in the middle of a relaxed transaction")

        with pytest.raises(ValueError):
            await db.run_sqlite_write(fails, durable=False)
        assert await db.run_sqlite_write(_synchronous) == 2
    finally:
        await db.close()


async def test_a_configured_normal_stays_normal(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", sqlite_synchronous="normal")
    try:
        assert await db.run_sqlite_write(_synchronous, durable=False) == 1
        assert await db.run_sqlite_write(_synchronous) == 1
    finally:
        await db.close()


@pytest.mark.postgres
async def test_a_relaxed_postgres_commit_does_not_wait_for_its_wal(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        def setting(conn: sa.Connection) -> str:
            return str(conn.execute(sa.text("SHOW synchronous_commit")).scalar())

        assert await db.run_write(setting) == "on"
        assert await db.run_write(setting, durable=False) == "off"
        assert await db.run_write(setting) == "on"  # SET LOCAL: that transaction only
    finally:
        await db.close()
