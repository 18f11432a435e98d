"""One async storage layer over SQLite (WAL) and PostgreSQL (asyncpg).

SQLite has a single writer per file, so in-process write transactions queue on
an asyncio lock (fair, no busy-wait sleeps) and open with ``BEGIN IMMEDIATE``
so a transaction never fails half-way on a lock upgrade. PostgreSQL needs
neither: rows are claimed with ``FOR UPDATE SKIP LOCKED`` and many hub
processes share the database.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from hub.checkpoint import SAFETY_NET_PAGES
from hub.errors import StorageUnavailable

T = TypeVar("T")

# PostgreSQL keeps one plan for a statement asyncpg has prepared (a "generic
# plan") once it judges that plan no dearer than planning each execution
# afresh, and judges it on the tables as they were: for a statement first run
# on an empty outbox, a seq scan inside the claim's anti-join (cost 12 on ten
# pages), kept while the outbox grows. Without an ANALYZE to invalidate it
# (autovacuum off, or not yet come round) a claim of 256 rows out of 18,000
# read the outbox once for every row it claimed: 0.8 s. Claims of 0.3–4 s
# held the hub's PostgreSQL deliveries to 86–274 tickets/s at 1,000
# requests/s with three destinations.
# Statements whose best plan changes as their table grows run after this
# (transaction-scoped) and are planned for the table as it is. Not for every
# statement: on every connection it cost PostgreSQL +340 µs of CPU a ticket.
PLAN_AFRESH = sa.text("SET LOCAL plan_cache_mode = force_custom_plan")

# Errors that mean "the database did not take it", as opposed to a bug in a statement.
UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sqlite3.OperationalError, OSError,
               ConnectionError, asyncio.TimeoutError)


class Database:
    def __init__(self, url: str, *, sqlite_synchronous: str = "full", busy_timeout: float = 30.0,
                 sqlite_cache_mb: int = 16, sqlite_autocheckpoint: int = SAFETY_NET_PAGES,
                 echo: bool = False):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            path = sa.engine.make_url(url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": busy_timeout}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self._write_lock = WriteLock() if self.is_sqlite else None
        self._sync_engine: sa.Engine | None = None
        self._sync_thread: ThreadPoolExecutor | None = None
        self._read_thread: ThreadPoolExecutor | None = None
        # The hot writers' plain connection (see run_sqlite_write), used by one thread at a time.
        self._raw: sqlite3.Connection | None = None
        self._raw_lock = threading.Lock()
        self._raw_trace: Callable[[str], None] | None = None  # see trace_raw
        self._pragmas = (sqlite_synchronous, int(busy_timeout * 1000), sqlite_cache_mb, sqlite_autocheckpoint)
        if self.is_sqlite:
            _install_sqlite_hooks(self.engine.sync_engine, *self._pragmas)
            # Statement-heavy transactions (the pipeline) run on the plain sqlite3
            # driver in one worker thread: aiosqlite hops threads several times per
            # statement, which costs more than the statement itself (docs/architecture.md §3).
            self._sync_engine = sa.create_engine(
                sa.engine.make_url(url).set(drivername="sqlite"), echo=echo,
                connect_args={"timeout": busy_timeout, "check_same_thread": False},
                poolclass=sa.pool.SingletonThreadPool)
            _install_sqlite_hooks(self._sync_engine, *self._pragmas)
            self._sync_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-sqlite")
            # Long reads (the pipeline planning a batch) run on a thread of their own,
            # with a connection of their own: the writers' thread stays free for commits.
            self._read_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-sqlite-read")

    @property
    def sqlite_path(self) -> str | None:
        """The SQLite file (None on PostgreSQL or in memory)."""
        path = sa.engine.make_url(self.url).database if self.is_sqlite else None
        return path if path and path != ":memory:" else None

    @property
    def dialect(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    def write_lock(self, *, urgent: bool = False) -> contextlib.AbstractAsyncContextManager[Any]:
        """Held around every write transaction on SQLite (one writer per file);
        ``urgent`` (the inbox) goes before every other waiter."""
        return self._write_lock.hold(urgent) if self._write_lock else contextlib.nullcontext()

    async def writer_connection(self) -> AsyncConnection:
        """A connection kept open by a hot writer (the PostgreSQL inbox) across transactions."""
        return await self.engine.connect()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; commits on success, rolls back on error."""
        async with self.write_lock():
            async with self.engine.connect() as conn:
                if self.is_sqlite:
                    conn = await conn.execution_options(hub_write=True)
                async with conn.begin():
                    yield conn

    async def run_write(self, work: Callable[[sa.Connection], T], *, durable: bool = True) -> T:
        """Run ``work(conn)`` — plain synchronous SQLAlchemy Core — as one write
        transaction: in the SQLite worker thread, or through asyncpg on PostgreSQL.
        ``durable=False``: see :meth:`run_sqlite_write` (PostgreSQL: the commit
        does not wait for its WAL to reach the disk, ``synchronous_commit = off``)."""
        if self._sync_engine is not None and self._sync_thread is not None:
            engine = self._sync_engine

            def run() -> T:
                with engine.connect() as conn:
                    conn = conn.execution_options(hub_write=True)
                    with conn.begin():
                        return work(conn)

            return await self._in_sqlite_thread(run)
        async with self.engine.connect() as aconn, aconn.begin():
            if not durable:
                await aconn.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))
            return await aconn.run_sync(work)

    async def run_read_sync(self, work: Callable[[sa.Connection], T]) -> T:
        """SQLite only: ``work(conn)`` in one read transaction (a snapshot; no write
        lock, so intake and the other writers go on), on the reading thread."""
        assert self._sync_engine is not None and self._read_thread is not None, "run_read_sync is for SQLite"
        engine = self._sync_engine

        def run() -> T:
            with engine.connect() as conn, conn.begin():
                return work(conn)

        return await asyncio.get_running_loop().run_in_executor(self._read_thread, run)

    async def run_sqlite_write(self, work: Callable[[sqlite3.Connection], T], *, urgent: bool = True,
                               durable: bool = True, inline: bool = False) -> T:
        """SQLite only: ``work(conn)`` on a plain sqlite3 connection as one write
        transaction, in the sqlite thread (``inline``: on the event loop's
        thread, below). For the hottest writers (the inbox,
        ``urgent``: first in line for the lock; the pipeline's rendered batch):
        no SQLAlchemy layers, and the thread needs the GIL only between its few
        statements — each time it does, it must win it from the event loop.

        ``durable=False``: the commit does not wait for the disk (``synchronous
        = NORMAL`` for this transaction). Still atomic, and safe from a crash
        of the process; only a power cut or a kernel crash before the next
        synced commit (anyone's: the WAL is one file) can undo it. For writes
        whose loss repeats work rather than losing it: delivery's claims and
        outcomes (a push whose outcome was lost is sent again under its
        idempotency key) and the pipeline's batches (made again from their
        synced raw events, :mod:`hub.pipeline`).

        ``inline=True``: the transaction runs on the event loop's thread, which
        it holds from ``BEGIN`` to ``COMMIT``; while another process holds the
        write lock it is polled for, the loop going on between tries. For short
        transactions that do not sync (delivery's claims and outcomes): handing
        one to the thread and back costs more than the transaction — ~110 µs of
        CPU for the hop alone on a 2-core VM, where waking a thread on the other
        core is dear, and the threads then pass the GIL to and fro at every
        statement (docs/throughput.md, "Sixteenth session")."""
        assert self._sync_thread is not None, "run_sqlite_write is for SQLite"
        async with self.write_lock(urgent=urgent):
            if inline:
                return await self._inline_transaction(work, durable)
            result = await asyncio.get_running_loop().run_in_executor(
                self._sync_thread, lambda: self._raw_transaction(work, durable, wait=True))
            assert not isinstance(result, _Busy)
            return result

    async def _inline_transaction(self, work: Callable[[sqlite3.Connection], T], durable: bool) -> T:
        """``work`` on this thread, as soon as nobody else is writing: polled, the
        event loop going on between tries, for up to the busy timeout."""
        waits = lock_waits(self._pragmas[1] / 1000)
        while isinstance(result := self._raw_transaction(work, durable, wait=False), _Busy):
            delay = next(waits, None)
            if delay is None:
                raise sqlite3.OperationalError("database is locked")
            await asyncio.sleep(delay)
        return result

    def _raw_transaction(self, work: Callable[[sqlite3.Connection], T], durable: bool,
                         wait: bool) -> T | _Busy:
        """``work``'s result, once committed; :data:`BUSY` if ``wait`` is False and
        the write lock is taken (then nothing was run): the event loop's thread
        must never block on it."""
        if not self._raw_lock.acquire(blocking=wait):
            # The sqlite thread is still in a transaction of this process, one whose
            # caller was cancelled (which let go of the in-process write lock).
            return BUSY
        try:
            return self._raw_transaction_held(work, durable, wait)
        finally:
            self._raw_lock.release()

    def _raw_transaction_held(self, work: Callable[[sqlite3.Connection], T], durable: bool,
                              wait: bool) -> T | _Busy:
        conn = self._raw_connection()
        relaxed = not durable and self._pragmas[0].lower() == "full"
        if relaxed:  # not allowed inside a transaction
            conn.execute("PRAGMA synchronous=NORMAL")
        try:
            if wait:
                poll_for_write_lock(conn.execute, self._pragmas[1] / 1000)
            elif not begin_now(conn.execute):
                return BUSY
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException as err:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(err, sqlite3.OperationalError):  # e.g. disk I/O: start afresh next time
                    self._raw = None
                    conn.close()
                raise
        finally:
            if relaxed and self._raw is conn:
                try:
                    conn.execute("PRAGMA synchronous=FULL")
                except sqlite3.Error:  # never left relaxed for the next writer: a fresh one
                    self._raw = None
                    conn.close()
                    raise
        return result

    def _raw_connection(self) -> sqlite3.Connection:
        if self._raw is None:
            path = sa.engine.make_url(self.url).database or ":memory:"
            conn = sqlite3.connect(path, timeout=self._pragmas[1] / 1000, check_same_thread=False)
            _configure_sqlite(conn, *self._pragmas)
            # The lock is polled for (poll_for_write_lock, begin_now), so no busy
            # timeout: each try is one statement, with nothing to set and reset.
            # Inside a write transaction nothing else here waits for a lock in WAL
            # mode (a commit's checkpoint is PASSIVE).
            conn.execute("PRAGMA busy_timeout=0")
            # A statement that may stop half-way (a multi-row INSERT, a row with a
            # foreign key) keeps the pages it changes in a statement journal, which
            # SQLite spills past 64 KiB into a temporary file: created, written and
            # unlinked in /var/tmp for every inbox batch of some 30 rows or more.
            # In memory, a 64-row inbox commit took ~20 % less CPU (docs/throughput.md).
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.set_trace_callback(self._raw_trace)
            self._raw = conn
        return self._raw

    def trace_raw(self, callback: Callable[[str], None] | None) -> None:
        """Have ``callback`` called with every statement the plain sqlite3
        connection runs, values written in (the query-plan test explains them)."""
        self._raw_trace = callback
        if self._raw is not None:
            self._raw.set_trace_callback(callback)

    async def _in_sqlite_thread(self, run: Callable[[], T]) -> T:
        assert self._sync_thread is not None
        async with self.write_lock():
            return await asyncio.get_running_loop().run_in_executor(self._sync_thread, run)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            async with conn.begin():
                yield conn

    def for_update(self, stmt: sa.Select[Any]) -> sa.Select[Any]:
        """Rows this transaction will update, locked on PostgreSQL (claimers skip them)."""
        return stmt if self.is_sqlite else stmt.with_for_update()

    async def autovacuum_off(self) -> bool:
        """PostgreSQL with autovacuum off: nothing ANALYZEs the hub's tables. The
        planner then guesses, and a batch's lookup of its tickets by
        ``(source_id, external_id IN (…))`` walks every ticket of the source
        (15–25 ms at 100,000 tickets, growing with them; 0.7 ms analyzed)
        instead of one probe each."""
        if self.is_sqlite:
            return False
        async with self.engine.connect() as conn:
            return (await conn.execute(sa.text("SHOW autovacuum"))).scalar() == "off"

    def plan_afresh(self, conn: sa.Connection) -> None:
        """The rest of this transaction planned for the tables as they are now
        (:data:`PLAN_AFRESH`; SQLite keeps no plans across statements)."""
        if not self.is_sqlite:
            conn.execute(PLAN_AFRESH)

    def for_update_skip_locked(self, stmt: sa.Select[Any]) -> sa.Select[Any]:
        """Row claims: SKIP LOCKED on PostgreSQL; SQLite's single writer needs none."""
        return stmt if self.is_sqlite else stmt.with_for_update(skip_locked=True)

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True
        except UNAVAILABLE:
            return False

    async def migrate(self) -> None:
        """Bring the schema to the newest migration (alembic upgrade head)."""
        from hub.migrate import upgrade

        await upgrade(self)

    async def close(self) -> None:
        await self.engine.dispose()
        if self._sync_engine is not None and self._sync_thread is not None:
            engine, raw = self._sync_engine, self._raw

            def close_all() -> None:
                engine.dispose()
                if raw is not None:
                    raw.close()

            self._raw = None
            if self._read_thread is not None:
                self._read_thread.shutdown(wait=True)  # a read in progress finishes first
            await asyncio.get_running_loop().run_in_executor(self._sync_thread, close_all)
            self._sync_thread.shutdown(wait=True)
            self._sync_engine = self._sync_thread = self._read_thread = None


class _Busy:
    """Another connection was writing: see :meth:`Database.run_sqlite_write`."""


BUSY = _Busy()


class WriteLock:
    """One SQLite writer at a time, first come first served — except that an
    urgent waiter (the inbox, whose commit a webhook request is waiting for)
    goes before every other. So a request waits for at most the one
    transaction already running, never for a queue of pipeline batches."""

    def __init__(self) -> None:
        self._held = False
        self._urgent: collections.deque[asyncio.Future[None]] = collections.deque()
        self._others: collections.deque[asyncio.Future[None]] = collections.deque()

    @contextlib.asynccontextmanager
    async def hold(self, urgent: bool = False) -> AsyncIterator[None]:
        await self._acquire(urgent)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, urgent: bool) -> None:
        if not self._held and not self._urgent and not self._others:
            self._held = True
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._others).append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # handed the lock as it was cancelled: pass it on
            raise

    def _release(self) -> None:
        for queue in (self._urgent, self._others):
            while queue:
                fut = queue.popleft()
                if not fut.done():
                    fut.set_result(None)  # the lock passes to it, still held
                    return
        self._held = False


def _install_sqlite_hooks(sync_engine: sa.Engine, synchronous: str, busy_ms: int, cache_mb: int,
                         autocheckpoint: int) -> None:
    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        _configure_sqlite(dbapi_conn, synchronous, busy_ms, cache_mb, autocheckpoint)

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get("hub_write", False):
            begin_immediate(conn.exec_driver_sql, busy_ms / 1000)
        else:
            conn.exec_driver_sql("BEGIN")


LOCK_POLL = (0.0002, 0.002)  # seconds: first and longest wait between tries for the write lock


def begin_immediate(execute: Callable[[str], Any], timeout: float) -> None:
    """BEGIN IMMEDIATE, waiting up to ``timeout`` for another process's write
    transaction to end — polled every few hundred microseconds. SQLite's own
    busy handler sleeps 1, 2, 5, 10, 15 … ms between tries: the inbox of one
    hub process would wait up to ten times longer than the other process's
    transaction lasted."""
    execute("PRAGMA busy_timeout=0")
    try:
        poll_for_write_lock(execute, timeout)
    finally:
        execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")


def lock_waits(timeout: float) -> Iterator[float]:
    """The pauses between tries for the write lock, 0.2 ms growing to 2 ms,
    until ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    delay = LOCK_POLL[0]
    while time.monotonic() < deadline:
        yield delay
        delay = min(delay * 1.5, LOCK_POLL[1])


def poll_for_write_lock(execute: Callable[[str], Any], timeout: float) -> None:
    """:func:`begin_immediate` on a connection whose busy timeout is already 0."""
    waits = lock_waits(timeout)
    while not begin_now(execute):
        delay = next(waits, None)
        if delay is None:
            execute("BEGIN IMMEDIATE")  # a last try: still locked, its error is the caller's
            return
        time.sleep(delay)


def begin_now(execute: Callable[[str], Any]) -> bool:
    """BEGIN IMMEDIATE on a connection whose busy timeout is 0, if no other
    connection holds the write lock: False, and no transaction, if one does.
    ``execute``: a sqlite3 connection's, or a SQLAlchemy connection's."""
    try:
        execute("BEGIN IMMEDIATE")
        return True
    except sqlite3.OperationalError as err:
        if "locked" not in str(err):
            raise
    except sa.exc.OperationalError as err:
        if "locked" not in str(err.orig):
            raise
    return False


def _configure_sqlite(dbapi_conn: Any, synchronous: str, busy_ms: int, cache_mb: int,
                      autocheckpoint: int) -> None:
    # Take BEGIN into our own hands (see _on_begin), as SQLAlchemy's docs advise.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA synchronous={synchronous.upper()}")
    cur.execute(f"PRAGMA busy_timeout={busy_ms}")
    cur.execute("PRAGMA foreign_keys=ON")
    # Negative: KiB. The cache only grows as pages are read (see StorageConfig.sqlite_cache_mb).
    cur.execute(f"PRAGMA cache_size=-{int(cache_mb) * 1024}")
    # With a checkpointer (hub.checkpoint) a commit copies pages itself only if the
    # WAL grows past this safety net; without one, SQLite's own 1,000.
    cur.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint)}")
    cur.close()


def storage_errors_as_unavailable(err: BaseException) -> StorageUnavailable | None:
    if isinstance(err, UNAVAILABLE):
        return StorageUnavailable(f"database unavailable: {type(err).__name__}: {err}")
    if isinstance(err, sa.exc.DBAPIError) and err.connection_invalidated:
        return StorageUnavailable(f"database connection lost: {err}")
    return None
