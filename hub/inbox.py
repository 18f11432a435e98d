"""The inbox: durable, deduplicated intake of raw events with group commit.

Requests hand their events to one :class:`InboxWriter` and await a future.
The writer takes everything queued (up to ``batch_max`` rows), inserts it in
one transaction with ``ON CONFLICT DO NOTHING`` on (source_id, dedupe_key),
commits, and only then resolves the futures — so a request is acknowledged
only after its events are on disk, while one fsync serves every request that
arrived during the previous commit (docs/architecture.md §3). Batches form by themselves
under load; ``batch_delay`` can make them larger at the cost of latency.

On SQLite the whole transaction is one hop to the database thread (plain
sqlite3, which lets go of the GIL while it writes and syncs), so the event
loop goes on taking requests during the commit. On PostgreSQL the writer keeps
one connection: no pool checkout or ping per batch.

Nothing here can leave a request waiting forever: every waiter has a deadline
(answered by one timer, :meth:`InboxWriter._expire`), whatever goes wrong in
a batch is told to each of its waiters, and the writer itself runs under the
hub's supervisor (:mod:`hub.supervisor`), restarted if it ever dies.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from hub.bulk import sqlite_time
from hub.errors import PayloadError, Quarantine, StorageUnavailable
from hub.interfaces import InboundEvent
from hub.mapping import InboundMapping
from hub.pii import PiiCipher
from hub.records import utcnow
from hub.storage import Database, storage_errors_as_unavailable
from hub.supervisor import wait_at_most


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


def event_document(source_id: str, headers: dict[str, str] | None, body: Any) -> dict[str, Any]:
    """What a mapping reads: the parsed body, the kept headers, the source."""
    return {"body": body, "headers": headers or {}, "source": {"id": source_id}}


def intake(source_id: str, mapping: InboundMapping, cipher: PiiCipher,
           events: list[InboundEvent]) -> list[NewRawEvent]:
    """The one way an inbound event becomes a raw event, for webhooks and pollers alike.

    Its dedupe key is what the source's mapping says. An event whose key
    cannot be found is still kept — under the SHA-256 of its body, so a resend
    of the same bytes is still a duplicate — and the pipeline quarantines it
    with the mapping's reason: refusing it would lose it (a poller has no one
    to refuse it to; a platform told 400 may never send it again). The body
    carries phones and addresses, so it is sealed before it touches the disk."""
    out = []
    for e in events:
        try:
            key = mapping.dedupe_key(event_document(source_id, e.headers, e.document))
        except Quarantine:
            raw = e.body.encode() if isinstance(e.body, str) else e.body
            key = "body-sha256:" + hashlib.sha256(raw).hexdigest()
        out.append(NewRawEvent(source_id, key, cipher.seal_body(e.body), e.headers))
    return out


_Item = tuple[list[NewRawEvent], asyncio.Future[Stored], float]  # events, waiter, deadline (loop time)
EXPIRY_TICK = 0.25  # how often waiters past their deadline are answered


class InboxWriter:
    def __init__(self, db: Database, *, batch_max: int = 500, batch_delay: float = 0.0,
                 on_commit: Callable[[int, float], None] | None = None):
        self.db = db
        self.batch_max = batch_max
        self.batch_delay = batch_delay
        self.on_commit = on_commit  # (rows, seconds) → metrics
        self._pending: collections.deque[_Item] = collections.deque()
        self._writing: list[_Item] = []  # the batch being committed
        self._expiry: asyncio.TimerHandle | None = None
        self.queued = 0  # events waiting in the queue (for /metrics)
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._conn: AsyncConnection | None = None  # PostgreSQL: kept across batches

    async def submit(self, events: list[NewRawEvent], timeout: float | None = None) -> Stored:
        """Store ``events`` durably; returns once committed. Raises StorageUnavailable,
        also when the commit has not happened within ``timeout`` seconds."""
        if self._closing:
            raise StorageUnavailable("the hub is shutting down")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Stored] = loop.create_future()
        self._pending.append((events, fut, loop.time() + timeout if timeout is not None else math.inf))
        self.queued += len(events)
        self._wake.set()
        if timeout is not None and self._expiry is None:
            self._expiry = loop.call_later(EXPIRY_TICK, self._expire)
        return await fut

    def _expire(self) -> None:
        """Answer the waiters whose deadline has passed (one timer for all of them:
        a wait_for per request costs more than the rest of its wait). An item
        not yet taken never will be; one being written may still land, and the
        platform's resend is then a duplicate."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = [fut for _, fut, deadline in self._writing if deadline <= now]
        for _, fut, deadline in self._pending:  # oldest first
            if deadline > now:
                break
            late.append(fut)
        for fut in late:
            _fail(fut, StorageUnavailable("not committed in time (the database is slow or locked)"))
        if self._pending or self._writing:
            self._expiry = loop.call_later(EXPIRY_TICK, self._expire)

    def closing(self) -> None:
        """Take no more: :meth:`run` returns once what is queued is committed."""
        self._closing = True
        self._wake.set()

    def start(self) -> None:
        """Run the writer as a plain task (tests, benchmarks): the hub supervises :meth:`run`."""
        self._task = asyncio.create_task(self.run(), name="inbox-writer")

    async def close(self) -> None:
        """Commit anything still queued (if :meth:`run` was cut short), then let go."""
        self.closing()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._pending:
            await self._commit(self._take())
        await self._drop_connection()

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.close()

    async def run(self, beat: Callable[[], None] = lambda: None, idle: float = 5.0) -> None:
        """The writer: one group commit after another, until :meth:`closing` and drained."""
        while True:
            beat()
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await wait_at_most(self._wake, idle)
                continue
            if self.batch_delay > 0:
                await asyncio.sleep(self.batch_delay)
            await self._commit(self._take())

    def _take(self) -> list[_Item]:
        """Up to ``batch_max`` rows of what is queued; abandoned waiters' events are dropped."""
        batch: list[_Item] = []
        rows = 0
        while self._pending and rows < self.batch_max:
            item = self._pending.popleft()
            self.queued -= len(item[0])
            if item[1].done():  # its deadline passed and it was answered 503
                continue
            batch.append(item)
            rows += len(item[0])
        return batch

    async def _commit(self, batch: list[_Item]) -> None:
        """Write one batch; every waiter hears how it went, whatever goes wrong."""
        now = utcnow()
        try:
            params = render_rows(self.db, [e for item in batch for e in item[0]], now)
            writing = self._writing = batch
        except (TypeError, ValueError):  # headers that are not JSON-able text: find whose
            params, writing = [], []
            for item in batch:
                try:
                    params.extend(render_rows(self.db, item[0], now))
                    writing.append(item)
                except (TypeError, ValueError) as err:
                    _fail(item[1], PayloadError(f"event cannot be stored: {type(err).__name__}"))
            self._writing = writing
        started = time.perf_counter()
        try:
            new_keys = await self._write(params) if params else set()
        except asyncio.CancelledError:
            for _, fut, _ in writing:
                _fail(fut, StorageUnavailable("the hub is shutting down"))
            raise
        except Exception as err:  # noqa: BLE001 - every waiter must hear about it
            unavailable = storage_errors_as_unavailable(err) or StorageUnavailable(
                f"inbox write failed: {type(err).__name__}")
            for _, fut, _ in writing:
                _fail(fut, unavailable)
            return
        finally:
            self._writing = []
        elapsed = time.perf_counter() - started
        for events, fut, _ in writing:
            new = sum(1 for e in events if (e.source_id, e.dedupe_key) in new_keys)
            if not fut.done():
                fut.set_result(Stored(stored=new, duplicates=len(events) - new))
        if self.on_commit is not None and params:
            self.on_commit(len(new_keys), elapsed)

    async def _write(self, params: list[tuple[Any, ...]]) -> set[tuple[str, str]]:
        """Insert one batch in one transaction; return the (source, key) pairs that were new."""
        if self.db.is_sqlite:
            return await self.db.run_sqlite_write(lambda raw: insert_rows_sqlite(raw.execute, params))
        if self._conn is None:
            self._conn = await self.db.writer_connection()
        try:
            pg = await _asyncpg(self._conn)
            async with pg.transaction():
                return await insert_rows_pg(pg, params)
        except BaseException:
            await self._drop_connection()  # a broken connection is not reused
            raise


def _fail(fut: asyncio.Future[Stored], err: Exception) -> None:
    if not fut.done():
        fut.set_exception(err)


def render_rows(db: Database, events: list[NewRawEvent], now: datetime) -> list[tuple[Any, ...]]:
    """Rows as the driver takes them: timestamp and JSON already rendered, so the
    hot path skips per-row type processing (docs/architecture.md §3)."""
    # What records.UTCDateTime + the dialect would bind: naive UTC text on SQLite.
    received_at: Any = sqlite_time(now) if db.is_sqlite else now
    return [(e.source_id, e.dedupe_key, received_at, orjson.dumps(e.headers).decode(), e.body)
            for e in events]


async def insert_rows(conn: AsyncConnection, params: list[tuple[Any, ...]]) -> set[tuple[str, str]]:
    """Insert rendered rows in ``conn``'s open transaction, skipping ones already
    there; return the (source, dedupe key) pairs that were new."""
    if conn.dialect.name == "sqlite":
        return await conn.run_sync(lambda c: insert_rows_sqlite(c.exec_driver_sql, params))
    return await insert_rows_pg(await _asyncpg(conn), params)


async def _asyncpg(conn: AsyncConnection) -> Any:
    """asyncpg itself, under SQLAlchemy's connection (and in its transaction):
    statements prepared once, parameters encoded in C."""
    return (await conn.get_raw_connection()).driver_connection


async def insert_rows_pg(pg: Any, params: list[tuple[Any, ...]]) -> set[tuple[str, str]]:
    new: set[tuple[str, str]] = set()
    for chunk in _chunks(params):
        new.update((r[0], r[1]) for r in await pg.fetch(_insert_sql("postgresql", len(chunk)), *_flat(chunk)))
    return new


Execute = Callable[[str, tuple[Any, ...]], Any]  # returns a cursor: rowcount, lastrowid, rows


def insert_rows_sqlite(execute: Execute, params: list[tuple[Any, ...]]) -> set[tuple[str, str]]:
    """The SQLite insert, synchronous: ``execute`` is a sqlite3 connection's
    ``execute`` or a SQLAlchemy Connection's ``exec_driver_sql``.

    No RETURNING, which costs one step (and one GIL hand-off) per row. The
    transaction holds the only write lock and SQLite gives each new row the
    next rowid, so the rows inserted here are the last `inserted` ids up to the
    last insert's rowid; usually they are all of them."""
    inserted, last_id = 0, 0
    for chunk in _chunks(params):
        cur = execute(_insert_sql("sqlite", len(chunk)), _flat(chunk))
        if cur.rowcount:
            inserted, last_id = inserted + cur.rowcount, cur.lastrowid
    if inserted == len(params):
        return {(row[0], row[1]) for row in params}
    if not inserted:
        return set()
    return {(r[0], r[1]) for r in execute("SELECT source_id, dedupe_key FROM raw_events WHERE id > ?",
                                          (last_id - inserted,))}


def _flat(rows: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    return tuple(v for row in rows for v in row)


_LARGEST_CHUNK = 512  # 5 parameters a row; SQLite allows 32766, PostgreSQL 32767


def _chunks(params: list[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    """Split into chunks whose sizes are powers of two: a handful of statement
    texts, so the drivers' prepared-statement caches always hit (a batch of
    every size would re-parse a statement of hundreds of parameters each time)."""
    out, i, size = [], 0, _LARGEST_CHUNK
    while i < len(params):
        while size > len(params) - i:
            size //= 2
        out.append(params[i:i + size])
        i += size
    return out


@functools.lru_cache(maxsize=64)
def _insert_sql(dialect: str, rows: int) -> str:
    """INSERT of ``rows`` rows in one statement; on PostgreSQL it reports the rows it inserted."""
    if dialect == "sqlite":
        values = ", ".join(["(?, ?, ?, ?, ?, 'pending', 0)"] * rows)
    else:  # asyncpg: numbered parameters; headers arrive as JSON text
        values = ", ".join(f"(${5 * r + 1}, ${5 * r + 2}, ${5 * r + 3}, ${5 * r + 4}::json, ${5 * r + 5}, "
                           "'pending', 0)" for r in range(rows))
    return ("INSERT INTO raw_events (source_id, dedupe_key, received_at, headers, body, state, attempts) "
            f"VALUES {values} ON CONFLICT (source_id, dedupe_key) DO NOTHING"
            + ("" if dialect == "sqlite" else " RETURNING source_id, dedupe_key"))
