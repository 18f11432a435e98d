"""``hub backup``: a consistent, self-contained copy of a live SQLite database."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import yaml
from typer.testing import CliRunner

from hub import standard_webhooks
from hub.backup import backup_sqlite
from hub.cli import app
from hub.storage import Database
from tests.conftest import seed_pushes


def _config(tmp_path: Path, pii_key: str, url: str) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "storage": {"url": url}, "security": {"pii_key": pii_key},
        "destinations": [{"id": "hook", "kind": "webhook", "url": "http://127.0.0.1:9/hook",
                          "secret": standard_webhooks.new_secret()}]}))
    return config


async def _seed(url: str) -> None:
    db = Database(url)
    await db.migrate()
    await seed_pushes(db, [{"payload": "x" * 2000} for _ in range(300)])
    await db.close()


def test_a_backup_taken_while_writes_go_on_is_whole_and_consistent(tmp_path: Path, pii_key: str) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    asyncio.run(_seed(url))
    # A writer keeps committing (in WAL, not yet checkpointed) while the copy is taken.
    stop = threading.Event()
    written = [0]

    def write() -> None:
        conn = sqlite3.connect(tmp_path / "hub.db", timeout=30)
        while not stop.is_set():
            conn.execute("INSERT INTO audit_log (actor, action, target, detail, at) "
                         "VALUES ('t', 'tick', ?, '{}', '2026-12-01 00:00:00.000000')", (str(written[0]),))
            conn.commit()
            written[0] += 1
        conn.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        result = CliRunner().invoke(app, ["backup", str(tmp_path / "copy.db"), "-c",
                                          str(_config(tmp_path, pii_key, url))])
    finally:
        stop.set()
        writer.join()
    assert result.exit_code == 0, result.output
    assert "integrity ok" in result.output
    copy = sqlite3.connect(tmp_path / "copy.db")
    assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one file, no -wal needed
    assert copy.execute("SELECT count(*) FROM outbox").fetchone()[0] == 300
    ticks = [int(r[0]) for r in copy.execute("SELECT target FROM audit_log ORDER BY id")]
    assert ticks == list(range(len(ticks))) and len(ticks) <= written[0]  # a prefix: one snapshot
    copy.close()
    assert not (tmp_path / "copy.db.partial").exists()


def test_a_failed_backup_leaves_nothing_that_looks_finished(tmp_path: Path, pii_key: str) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    asyncio.run(_seed(url))
    result = CliRunner().invoke(app, ["backup", str(tmp_path / "no-such-dir" / "copy.db"), "-c",
                                      str(_config(tmp_path, pii_key, url))])
    assert result.exit_code == 1 and "backup failed" in result.output
    assert not (tmp_path / "no-such-dir").exists()
    try:
        backup_sqlite(url, tmp_path / "hub.db")
    except ValueError as err:
        assert "overwrite" in str(err)
    else:
        raise AssertionError("a backup onto the database itself must be refused")


def test_postgres_is_pointed_at_pg_dump(tmp_path: Path, pii_key: str) -> None:
    result = CliRunner().invoke(app, ["backup", str(tmp_path / "x"), "-c", str(_config(
        tmp_path, pii_key, "postgresql+asyncpg://hub:secret@db.internal/hub"))])
    assert result.exit_code == 0 and "pg_dump -Fc" in result.output and "secret" not in result.output
