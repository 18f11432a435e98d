"""The inbox: durable, deduplicated intake of raw events with group commit.

Requests hand their events to one :class:`InboxWriter` and await a future.
The writer gathers whatever arrives within ``batch_delay`` (up to
``batch_max`` rows), inserts the batch in one transaction with
``ON CONFLICT DO NOTHING`` on (source_id, dedupe_key), commits, and only then
resolves the futures — so a request is acknowledged only after its events are
on disk, while one fsync serves hundreds of requests (DESIGN §3).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from hub.errors import StorageUnavailable
from hub.records import utcnow
from hub.storage import Database, storage_errors_as_unavailable


@dataclass(slots=True)
class NewRawEvent:
    source_id: str
    dedupe_key: str
    body: str
    headers: dict[str, str]


@dataclass(slots=True)
class Stored:
    """Outcome of one submission: how many rows were new, how many duplicates."""

    stored: int
    duplicates: int


_Item = tuple[list[NewRawEvent], asyncio.Future[Stored]]


class InboxWriter:
    def __init__(self, db: Database, *, batch_max: int = 500, batch_delay: float = 0.002,
                 on_commit: Callable[[int, float], None] | None = None):
        self.db = db
        self.batch_max = batch_max
        self.batch_delay = batch_delay
        self.on_commit = on_commit  # (rows, seconds) → metrics; wakes the pipeline
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # One connection for the writer's lifetime: no pool checkout/reset per batch.
        self._conn: AsyncConnection | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inbox-writer")

    async def submit(self, events: list[NewRawEvent]) -> Stored:
        """Store ``events`` durably; returns once committed. Raises StorageUnavailable."""
        if self._closing or self._task is None:
            raise StorageUnavailable("the hub is shutting down")
        fut: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((events, fut))
        return await fut

    async def close(self) -> None:
        """Commit everything already submitted, then stop."""
        self._closing = True
        if self._task is not None:
            self._queue.put_nowait(([], asyncio.get_running_loop().create_future()))
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop_connection()

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.close()

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            # Let the batch fill for batch_delay, then take everything queued: one
            # sleep per batch rather than a timed wait per request.
            if self.batch_delay > 0 and self._queue.qsize() < self.batch_max:
                await asyncio.sleep(self.batch_delay)
            rows = len(batch[0][0])
            while rows < self.batch_max and not self._queue.empty():
                item = self._queue.get_nowait()
                batch.append(item)
                rows += len(item[0])
            await self._commit(batch)
            if self._closing and self._queue.empty():
                return

    async def _commit(self, batch: list[_Item]) -> None:
        params = render_rows(self.db, [e for events, _ in batch for e in events], utcnow())
        started = time.perf_counter()
        try:
            new_keys = await self._write(params) if params else set()
        except Exception as err:  # noqa: BLE001 - every waiter must hear about it
            unavailable = storage_errors_as_unavailable(err) or StorageUnavailable(
                f"inbox write failed: {type(err).__name__}: {err}")
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(unavailable)
            return
        elapsed = time.perf_counter() - started
        for events, fut in batch:
            new = sum(1 for e in events if (e.source_id, e.dedupe_key) in new_keys)
            if not fut.done():
                fut.set_result(Stored(stored=new, duplicates=len(events) - new))
        if self.on_commit is not None and params:
            self.on_commit(len(new_keys), elapsed)

    async def _write(self, params: list[tuple[Any, ...]]) -> set[tuple[str, str]]:
        """Insert one batch in one statement; return the (source, key) pairs that were new."""
        async with self.db.write_lock():
            if self._conn is None:
                self._conn = await self.db.writer_connection()
            conn = self._conn
            try:
                async with conn.begin():
                    return await insert_rows(conn, self.db.dialect, params)
            except BaseException:
                await self._drop_connection()  # a broken connection is not reused
                raise


def render_rows(db: Database, events: list[NewRawEvent], now: datetime) -> list[tuple[Any, ...]]:
    """Rows as the driver takes them: timestamp and JSON already rendered, so the
    hot path skips per-row type processing (DESIGN §3)."""
    # What records.UTCDateTime + the dialect would bind: naive UTC text on SQLite.
    received_at: Any = now.replace(tzinfo=None).isoformat(sep=" ") if db.is_sqlite else now
    return [(e.source_id, e.dedupe_key, received_at, orjson.dumps(e.headers).decode(), e.body)
            for e in events]


async def insert_rows(conn: AsyncConnection, dialect: str,
                      params: list[tuple[Any, ...]]) -> set[tuple[str, str]]:
    """Insert rendered rows in the caller's transaction, skipping ones already
    there; return the (source, dedupe key) pairs that were new."""
    new: set[tuple[str, str]] = set()
    # Chunks keep each statement under the bound-parameter limit.
    for i in range(0, len(params), _ROWS_PER_STATEMENT):
        chunk = params[i:i + _ROWS_PER_STATEMENT]
        flat = tuple(v for row in chunk for v in row)
        res = await conn.exec_driver_sql(_insert_sql(dialect, len(chunk)), flat)
        new.update((r[0], r[1]) for r in res)  # type: ignore[misc]
    return new


_ROWS_PER_STATEMENT = 1000  # 5 parameters a row; SQLite allows 32766, PostgreSQL 32767


@functools.lru_cache(maxsize=128)
def _insert_sql(dialect: str, rows: int) -> str:
    """INSERT of ``rows`` rows in one statement, reporting the rows it actually inserted."""
    if dialect == "sqlite":
        values = ", ".join(["(?, ?, ?, ?, ?, 'pending', 0)"] * rows)
    else:  # asyncpg: numbered parameters; headers arrive as JSON text
        values = ", ".join(f"(${5 * r + 1}, ${5 * r + 2}, ${5 * r + 3}, ${5 * r + 4}::json, ${5 * r + 5}, "
                           "'pending', 0)" for r in range(rows))
    return ("INSERT INTO raw_events (source_id, dedupe_key, received_at, headers, body, state, attempts) "
            f"VALUES {values} ON CONFLICT (source_id, dedupe_key) DO NOTHING "
            "RETURNING source_id, dedupe_key")
