"""The WAL is copied into the database file by the checkpointer, not by commits."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from hub.checkpoint import SAFETY_NET_PAGES, SQLITE_AUTOCHECKPOINT, Checkpointer
from hub.storage import Database


async def test_commits_leave_the_wal_to_the_checkpointer(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        def write(conn: sqlite3.Connection) -> int:
            conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
            conn.executemany("INSERT INTO t (v) VALUES (?)", [("x" * 500,) for _ in range(3000)])
            return int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

        # More than SQLite's default mark of 1,000 pages, in commits of the hub's connection.
        for _ in range(4):
            assert await db.run_sqlite_write(write) == SAFETY_NET_PAGES
        frames = _wal_pages(path)
        assert frames > 1000, "the commits copied the WAL themselves"

        ckpt = Checkpointer(str(path), every=0.05)
        beat = asyncio.Event()
        task = asyncio.create_task(ckpt.run(beat.set))
        await asyncio.wait_for(beat.wait(), 5)
        assert ckpt.last is not None
        busy, in_wal, copied = ckpt.last
        assert busy == 0 and in_wal >= frames and copied == in_wal
        ckpt.stop()
        await asyncio.wait_for(task, 5)
        await ckpt.close()
        # Every row is in the database file itself now.
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 12000
    finally:
        await db.close()


def _wal_pages(path: Path) -> int:
    """Frames in the -wal file: a 32-byte header, then each page behind a 24-byte frame header."""
    return (Path(f"{path}-wal").stat().st_size - 32) // (4096 + 24)


async def test_without_a_checkpointer_commits_checkpoint_as_sqlite_does(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", sqlite_autocheckpoint=SQLITE_AUTOCHECKPOINT)
    try:
        got = await db.run_sqlite_write(lambda c: int(c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]))
        assert got == SQLITE_AUTOCHECKPOINT
    finally:
        await db.close()
