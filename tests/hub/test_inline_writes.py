"""SQLite writes run on the event loop's thread (``run_sqlite_write(inline=True)``):
only while nobody else writes, never blocking the loop on the lock, never on
the plain connection while the sqlite thread is still in a transaction on it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from hub.storage import Database


async def _database(tmp_path: Path, busy_timeout: float = 30.0) -> Database:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/hub.db", busy_timeout=busy_timeout)
    await db.run_sqlite_write(lambda c: c.execute("CREATE TABLE t (v INTEGER)"))
    return db


def _insert(value: int) -> Callable[[sqlite3.Connection], str]:
    def work(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
        return threading.current_thread().name
    return work


def _values(tmp_path: Path) -> list[int]:
    with sqlite3.connect(tmp_path / "hub.db") as conn:
        return [r[0] for r in conn.execute("SELECT v FROM t ORDER BY v")]


async def test_an_inline_write_runs_on_the_loops_thread_and_commits(tmp_path: Path) -> None:
    db = await _database(tmp_path)
    try:
        assert await db.run_sqlite_write(_insert(1), inline=True) == threading.current_thread().name
        assert await db.run_sqlite_write(_insert(2)) != threading.current_thread().name  # the sqlite thread
        assert _values(tmp_path) == [1, 2]
    finally:
        await db.close()


async def test_an_inline_write_waits_for_another_writer_without_holding_the_loop(tmp_path: Path) -> None:
    db = await _database(tmp_path)
    other = sqlite3.connect(tmp_path / "hub.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's write transaction
        other.execute("INSERT INTO t (v) VALUES (1)")
        write = asyncio.create_task(db.run_sqlite_write(_insert(2), inline=True))
        ticks = 0
        for _ in range(20):  # the loop goes on while the write waits for the lock
            await asyncio.sleep(0.005)
            ticks += 1
        assert not write.done() and ticks == 20
        other.execute("COMMIT")
        async with asyncio.timeout(5):
            assert await write == threading.current_thread().name
        assert _values(tmp_path) == [1, 2]
    finally:
        other.close()
        await db.close()


async def test_an_inline_write_gives_up_after_the_busy_timeout(tmp_path: Path) -> None:
    db = await _database(tmp_path, busy_timeout=0.2)
    other = sqlite3.connect(tmp_path / "hub.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            async with asyncio.timeout(5):
                await db.run_sqlite_write(_insert(1), inline=True)
        other.execute("ROLLBACK")
        await db.run_sqlite_write(_insert(2), inline=True)  # and the connection is fine after
        assert _values(tmp_path) == [2]
    finally:
        other.close()
        await db.close()


async def test_an_inline_write_waits_for_a_cancelled_callers_transaction_still_in_the_thread(
        tmp_path: Path) -> None:
    """Cancelling a caller lets go of the in-process write lock, but its
    transaction goes on in the sqlite thread on the same connection: an inline
    write meanwhile must wait for it, not interleave its statements with it."""
    db = await _database(tmp_path)
    started, finish = threading.Event(), threading.Event()
    order: list[str] = []

    def slow(conn: sqlite3.Connection) -> None:
        started.set()
        conn.execute("INSERT INTO t (v) VALUES (1)")
        finish.wait(5)
        order.append("thread")

    def quick(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (v) VALUES (2)")
        order.append("inline")

    try:
        caller = asyncio.create_task(db.run_sqlite_write(slow))
        await asyncio.to_thread(started.wait, 5)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        write = asyncio.create_task(db.run_sqlite_write(quick, inline=True))
        await asyncio.sleep(0.05)
        assert not write.done()
        finish.set()
        async with asyncio.timeout(5):
            await write
        assert order == ["thread", "inline"]
        assert _values(tmp_path) == [1, 2]
    finally:
        finish.set()
        await db.close()


async def test_the_hot_writers_statement_journals_stay_in_memory(tmp_path: Path) -> None:
    db = await _database(tmp_path)
    try:
        # 2 = MEMORY: a multi-row INSERT's statement journal never spills to a temporary file.
        assert await db.run_sqlite_write(lambda c: c.execute("PRAGMA temp_store").fetchone()[0]) == 2
    finally:
        await db.close()
