"""Which commits wait for the disk: all but delivery's claims and outcomes and,
on SQLite, the pipeline's batches."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from connectors.website.simulator import WebsiteSimulator
from hub import standard_webhooks
from hub.config import SourceConfig
from hub.inbox import InboxWriter, NewRawEvent
from hub.mapping import MappingSet
from hub.pii import PiiCipher
from hub.pipeline import Pipeline, SourceRuntime
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


async def test_on_sqlite_intake_commits_synced_and_the_pipeline_does_not(tmp_path: Path) -> None:
    """The inbox's rows are what an acknowledgement promised; a pipeline batch is
    derived from them and made again, to the same ids and keys, if a power cut
    takes it back (hub.pipeline)."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    await db.migrate()
    statements: list[str] = []
    db.trace_raw(statements.append)
    cipher = PiiCipher(os.urandom(32))
    rt = SourceRuntime(SourceConfig(id="site", kind="website"), MappingSet().inbound("website"))
    pipeline = Pipeline(db, cipher, {"site": rt}, {}, [])
    inbox = InboxWriter(db)
    inbox.start()
    try:
        site = WebsiteSimulator(secret=standard_webhooks.new_secret(), seed=5)
        await inbox.submit([NewRawEvent("site", f"m{i}", cipher.seal_body(orjson.dumps(site.request())),
                                        {"webhook-id": f"m{i}"}) for i in range(3)])
        assert await pipeline.run_once() == 3
    finally:
        await inbox.close()
        await db.close()

    # Replay the trace: the synchronous setting each transaction committed under.
    mode, current, committed = "FULL", [], []
    for statement in statements:
        if statement.startswith("PRAGMA synchronous="):
            mode = statement.split("=", 1)[1]
        elif statement == "COMMIT":
            committed.append((mode, current))
            current = []
        elif not statement.startswith("PRAGMA"):
            current.append(statement)

    def mode_of(prefix: str) -> set[str]:
        return {m for m, body in committed if any(s.startswith(prefix) for s in body)}

    assert mode_of("INSERT INTO raw_events") == {"FULL"}
    assert mode_of("INSERT INTO tickets") == {"NORMAL"}
    assert mode == "FULL"  # and back to synced after the batch
