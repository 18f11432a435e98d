"""Running polled sources: lease, quota, circuit breaker, cursor, health.

A connector says *what* to read (its :class:`~hub.interfaces.PollStream`s
yield batches of events with the cursor that holds once they are stored);
this module says *how*: one process at a time per source (a lease row in
``source_state``), each batch's raw events and cursor committed in one
transaction (a crash resumes from the last batch on disk, never skipping and
never doubling an effect), platform errors sorted into wait (throttled),
open the circuit (credentials refused) or count a failure (transient), and
the source's health kept where ``/metrics``, the admin API and ``hub
sources`` read it. One failing source never stops another: each runs in its
own tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from hub.circuit import CircuitBreaker, CircuitState
from hub.config import PolledSourceConfig
from hub.errors import (
    SourceAuthError,
    SourceError,
    SourceRejected,
    SourceThrottled,
    SourceTransient,
)
from hub.inbox import NewRawEvent, insert_rows, intake, render_rows
from hub.interfaces import UNREADABLE, InboundEvent, PollBatch, PollingSource, PollStream
from hub.mapping import InboundMapping
from hub.metrics import Metrics
from hub.pii import PiiCipher
from hub.records import audit_log, source_cursors, source_state, utcnow
from hub.redaction import error_summary
from hub.storage import UNAVAILABLE, Database
from hub.supervisor import Worker, WorkerFn

log = structlog.get_logger("hub.polling")

LEASE_SECONDS = 120.0


_OWNERS_HERE: set[str] = set()  # owners made by this process (several hubs may share one, in tests)


def process_owner() -> str:
    """Who holds a lease: readable by an operator, unique per process start."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    _OWNERS_HERE.add(owner)
    return owner


def owner_gone(owner: str | None) -> bool:
    """True when ``owner`` was a process on this host that no longer runs.

    A hub restarted after a crash (systemd's Restart=, a SIGKILL, an OOM)
    then takes its sources back at once instead of waiting out the dead
    process's lease. Only this host's processes can be judged; a lease held
    elsewhere waits for its expiry. A pid that has since been reused looks
    alive, which errs on the side of waiting. (Hosts must not share a
    hostname; containers get their own.)
    """
    host, _, rest = (owner or "").partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        # This very pid: another hub of this process, or its past self before a re-exec.
        return owner not in _OWNERS_HERE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass  # it runs, as another user (PermissionError)
    return False


class LeaseLost(Exception):
    """Another process took the source's lease (ours expired): stop and re-acquire."""


@dataclass
class SourceHealth:
    """What the admin sees of a polled source."""

    healthy: bool = True
    circuit: CircuitState = CircuitState.CLOSED
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    watermark: datetime | None = None
    leased: bool = False
    events_stored: int = 0

    def lag_seconds(self, now: datetime) -> float | None:
        return None if self.watermark is None else max(0.0, (now - self.watermark).total_seconds())


def upsert(db: Database, table: sa.Table, values: dict[str, Any], keys: list[str]) -> Any:
    """INSERT … ON CONFLICT (keys) DO UPDATE for both dialects."""
    dialect_insert = sqlite.insert if db.is_sqlite else postgresql.insert
    stmt = dialect_insert(table).values(**values)
    return stmt.on_conflict_do_update(index_elements=keys,
                                      set_={k: v for k, v in values.items() if k not in keys})


async def load_cursor(db: Database, source_id: str, stream: str) -> Any:
    async with db.read() as conn:
        return (await conn.execute(sa.select(source_cursors.c.cursor).where(
            source_cursors.c.source_id == source_id, source_cursors.c.stream == stream))).scalar()


BACKFILL_BATCHES = 20  # pages of a backfill read per round, after the live stream


def backfill_stream(stream: str) -> str:
    """The cursor name under which a stream's backfill keeps its place."""
    return f"backfill:{stream}"


async def request_backfill(db: Database, source_id: str, streams: list[str], since: datetime, *,
                           actor: str) -> None:
    """Ask the process that polls ``source_id`` to read ``streams`` again from
    ``since`` up to now, beside the live poll; audited. Events already stored are
    dropped by their dedupe key, so a backfill adds only what is missing. A
    backfill already under way starts again from the new ``since``."""
    now = utcnow()
    async with db.write() as conn:
        for stream in streams:
            await conn.execute(upsert(db, source_cursors, {
                "source_id": source_id, "stream": backfill_stream(stream),
                "cursor": {"since": since.astimezone(UTC).isoformat()}, "updated_at": now},
                ["source_id", "stream"]))
        await conn.execute(sa.insert(audit_log).values(
            actor=actor, action="source.backfill", target=source_id, at=now,
            detail={"since": since.astimezone(UTC).isoformat(), "streams": streams}))


async def backfillable(make_source: Any, config: Any) -> list[str]:
    """The names of the streams of a polled source that can be read from a past time."""
    source = make_source(config)
    try:
        return [st.name for st in source.streams() if st.backfill]
    finally:
        await source.aclose()


async def backfills(db: Database, source_id: str) -> dict[str, Any]:
    """The backfills under way for a source: stream → its cursor (gone once done)."""
    prefix = backfill_stream("")
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(source_cursors.c.stream, source_cursors.c.cursor).where(
            source_cursors.c.source_id == source_id, source_cursors.c.stream.startswith(prefix)))).all()
    return {r.stream[len(prefix):]: r.cursor for r in rows}


class PollRunner:
    """Runs one polled source's streams until stopped."""

    def __init__(self, db: Database, cipher: PiiCipher, source: PollingSource,
                 mapping: InboundMapping, *, owner: str, metrics: Metrics | None = None,
                 on_stored: Any = None, lease_seconds: float = LEASE_SECONDS):
        self.db = db
        self.cipher = cipher
        self.source = source
        self.config: PolledSourceConfig = source.config  # type: ignore[assignment]
        self.mapping = mapping
        self.owner = owner
        self.metrics = metrics
        self.on_stored = on_stored  # (new rows) → wakes the pipeline
        self.lease_seconds = lease_seconds
        c = self.config.circuit
        self.circuit = CircuitBreaker(c.failures, c.cooldown, c.max_cooldown)
        self.health = SourceHealth()
        self._lease_until: datetime | None = None
        self._quota_seen = (time.monotonic(), 0)  # (when, calls) at the last health save
        self._stopping = asyncio.Event()
        self._state_lock = asyncio.Lock()

    @property
    def source_id(self) -> str:
        return self.config.id

    # ------------------------------------------------------------ lifecycle

    def workers(self) -> list[tuple[str, WorkerFn]]:
        """One supervised worker per stream (:class:`hub.supervisor.Supervisor` runs them)."""
        return [(f"poll-{self.source_id}-{s.name}", functools.partial(self._stream_loop, s))
                for s in self.source.streams()]

    def request_stop(self) -> None:
        """Stop after the batch in flight commits (the supervisor cancels what overruns)."""
        self._stopping.set()

    async def close(self) -> None:
        """Give the lease back and close the platform client."""
        with contextlib.suppress(*UNAVAILABLE):
            await self._release_lease()
        await self.source.aclose()

    async def _sleep(self, seconds: float, worker: Worker | None = None) -> None:
        if worker is not None:
            worker.excuse(seconds + 5)  # waiting on purpose: not a stall
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=max(0.0, seconds))

    # ------------------------------------------------------------ one stream

    async def _stream_loop(self, stream: PollStream, worker: Worker) -> None:
        while not self._stopping.is_set():
            worker.beat()
            throttled = False
            try:
                if await self._paused():
                    if self.health.leased:  # ours until now (a renew refused by the pause forgot it)
                        await self._release_lease(force=True)
                    self.health.leased = False
                    await self._sleep(min(stream.interval, 5.0), worker)
                    continue
                if not await self._hold_lease():
                    self.health.leased = False
                    await self._sleep(min(stream.interval, self.lease_seconds / 2), worker)
                    continue
                self.health.leased = True
                wait = self.circuit.remaining()
                if wait > 0:
                    await self._sleep(wait, worker)
                    continue
                throttled, _ = await self._poll_stream(stream, worker)
                if not throttled and stream.backfill:
                    throttled = await self._backfill_step(stream, worker)
                await self._save_health()
            except UNAVAILABLE as err:
                log.error("poll: storage unavailable", source=self.source_id, error=str(err))
                await self._sleep(5, worker)
                continue
            except LeaseLost:
                log.warning("poll: lease lost to another process", source=self.source_id)
                self._lease_until = None
                continue
            except Exception as err:
                # A bug in a connector must not kill its loop silently.
                log.error("poll step failed", source=self.source_id, stream=stream.name, exc_info=err)
                self._failed(SourceError("internal error; see the hub's log"), trip=False)
                with contextlib.suppress(*UNAVAILABLE):
                    await self._save_health()
            if not throttled:
                await self._sleep(stream.interval, worker)

    async def _backfill_step(self, stream: PollStream, worker: Worker) -> bool:
        """A few pages of an operator's backfill of this stream, if one is asked
        for (:func:`request_backfill`); the live stream goes first every round,
        so a month's backfill never holds back today's events. True when throttled."""
        name = backfill_stream(stream.name)
        if await load_cursor(self.db, self.source_id, name) is None:
            return False
        throttled, finished = await self._poll_stream(stream, worker, cursor_name=name,
                                                      max_batches=BACKFILL_BATCHES)
        if finished:
            async with self.db.write() as conn:
                await conn.execute(sa.delete(source_cursors).where(
                    source_cursors.c.source_id == self.source_id, source_cursors.c.stream == name))
            log.info("backfill done: read up to now", source=self.source_id, stream=stream.name)
        return throttled

    async def _poll_stream(self, stream: PollStream, worker: Worker, *, cursor_name: str | None = None,
                           max_batches: int | None = None) -> tuple[bool, bool]:
        """Read the stream to its end (or ``max_batches`` of it) from the cursor
        ``cursor_name`` (the stream's own by default). (throttled — go again at once:
        the bucket does the waiting —, read to the end)."""
        name = cursor_name or stream.name
        cursor = await load_cursor(self.db, self.source_id, name)
        n = 0
        try:
            async for batch in prefetched(stream.poll(cursor)):
                await self.store(name, batch)
                worker.beat()
                if batch.after_commit is not None:
                    await batch.after_commit()
                n += 1
                if self._stopping.is_set():
                    return False, False
                if max_batches is not None and n >= max_batches:
                    self._succeeded()
                    return False, False
        except SourceThrottled as err:
            hold = err.retry_after if err.retry_after is not None else 1.0
            self.source.quota.hold(hold)
            worker.excuse(hold + 5)
            self._note_error(err, "throttled")
            log.warning("poll throttled by the platform", source=self.source_id, stream=stream.name,
                        hold=hold, error=str(err))
            return True, False
        except SourceAuthError as err:
            self._failed(err, trip=True)
            return False, False
        except (SourceTransient, SourceRejected) as err:
            self._failed(err, trip=False)
            return False, False
        self._succeeded()
        return False, True

    def _note_error(self, err: SourceError, kind: str) -> None:
        self.health.last_error = str(err)
        self.health.last_error_at = utcnow()
        if self.metrics is not None:
            self.metrics.source_errors.labels(self.source_id, kind).inc()

    def _failed(self, err: SourceError, *, trip: bool) -> None:
        if trip:
            self.circuit.trip()
        else:
            self.circuit.failure()
        self._note_error(err, "auth" if trip else "failure")
        self.health.circuit = self.circuit.state
        # Refused credentials make the source unhealthy at once; other failures
        # once they have opened the circuit.
        self.health.healthy = not trip and self.circuit.state is CircuitState.CLOSED
        log.error("poll failed", source=self.source_id, error=str(err), circuit=self.circuit.state.value,
                  retry_in=round(self.circuit.remaining(), 1))
        self._export()

    def _succeeded(self) -> None:
        recovered = not self.health.healthy
        self.circuit.success()
        now = utcnow()
        self.health.healthy = True
        self.health.circuit = self.circuit.state
        self.health.last_success_at = now
        if recovered:
            log.info("source recovered", source=self.source_id)
        self._export()

    def _export(self) -> None:
        if self.metrics is None:
            return
        m, sid, h = self.metrics, self.source_id, self.health
        m.source_healthy.labels(sid).set(1 if h.healthy else 0)
        m.source_circuit_open.labels(sid).set(0 if h.circuit is CircuitState.CLOSED else 1)
        if h.last_success_at is not None:
            m.source_last_success.labels(sid).set(h.last_success_at.timestamp())
        lag = h.lag_seconds(utcnow())
        if lag is not None:
            m.source_lag.labels(sid).set(lag)

    # ------------------------------------------------------------ storage

    def _raw(self, batch: PollBatch) -> list[NewRawEvent]:
        return intake(self.source_id, self.mapping, self.cipher, batch.events)

    async def store(self, stream: str, batch: PollBatch) -> int:
        """The batch's events and its cursor, in one transaction, under our lease."""
        now = utcnow()
        rows = render_rows(self.db, self._raw(batch), now)
        async with self.db.write() as conn:
            await self._renew_lease(conn, now)
            new = await insert_rows(conn, rows) if rows else set()
            await conn.execute(upsert(self.db, source_cursors, {
                "source_id": self.source_id, "stream": stream, "cursor": batch.cursor,
                "updated_at": now}, ["source_id", "stream"]))
        if batch.watermark is not None:
            self.health.watermark = batch.watermark
        self.health.events_stored += len(new)
        if self.metrics is not None:
            self.metrics.ingest_events.labels(self.source_id).inc(len(new))
        if new and self.on_stored is not None:
            self.on_stored(len(new))
        return len(new)

    # ------------------------------------------------------------ lease

    async def _hold_lease(self) -> bool:
        now = utcnow()
        if self._lease_until is not None and self._lease_until - now > timedelta(seconds=self.lease_seconds / 2):
            return True
        async with self.db.write() as conn:
            await self._ensure_state_row(conn, now)
            until = now + timedelta(seconds=self.lease_seconds)
            take = sa.update(source_state).values(lease_owner=self.owner, lease_until=until, updated_at=now)
            res = await conn.execute(take.where(
                source_state.c.source_id == self.source_id,
                sa.or_(source_state.c.lease_owner.is_(None), source_state.c.lease_owner == self.owner,
                       source_state.c.lease_until.is_(None), source_state.c.lease_until < now)))
            got = res.rowcount == 1
            if not got:  # held, and not expired: by a process that may be gone
                holder = (await conn.execute(sa.select(source_state.c.lease_owner).where(
                    source_state.c.source_id == self.source_id))).scalar()
                if owner_gone(holder):
                    res = await conn.execute(take.where(source_state.c.source_id == self.source_id,
                                                        source_state.c.lease_owner == holder))
                    got = res.rowcount == 1
                    log.warning("poll: took over the lease of a process that is gone", source=self.source_id,
                                owner=holder)
        self._lease_until = until if got else None
        return got

    async def _paused(self) -> bool:
        async with self.db.read() as conn:
            return bool((await conn.execute(sa.select(source_state.c.paused).where(
                source_state.c.source_id == self.source_id))).scalar())

    async def _renew_lease(self, conn: AsyncConnection, now: datetime) -> None:
        until = now + timedelta(seconds=self.lease_seconds)
        # A pause taken while a stream is read stops it after the page in hand.
        res = await conn.execute(sa.update(source_state).where(
            source_state.c.source_id == self.source_id, source_state.c.lease_owner == self.owner,
            source_state.c.paused.is_(False),
        ).values(lease_until=until))
        if res.rowcount != 1:
            raise LeaseLost(self.source_id)
        self._lease_until = until

    async def _release_lease(self, *, force: bool = False) -> None:
        if self._lease_until is None and not force:
            return
        async with self.db.write() as conn:
            await conn.execute(sa.update(source_state).where(
                source_state.c.source_id == self.source_id, source_state.c.lease_owner == self.owner,
            ).values(lease_owner=None, lease_until=None))
        self._lease_until = None

    async def _ensure_state_row(self, conn: AsyncConnection, now: datetime) -> None:
        await _ensure_state_row(self.db, conn, self.source_id, now)

    async def _save_health(self) -> None:
        """Health goes to the database so the admin API and other processes see it."""
        h, now = self.health, utcnow()
        quota, (then, calls_then), mono = self.source.quota, self._quota_seen, time.monotonic()
        per_minute = (quota.calls - calls_then) * 60 / (mono - then) if mono - then >= 1 else None
        if per_minute is not None:
            self._quota_seen = (mono, quota.calls)
        async with self._state_lock, self.db.write() as conn:
            await self._ensure_state_row(conn, now)
            await conn.execute(sa.update(source_state).where(
                source_state.c.source_id == self.source_id).values(
                healthy=h.healthy, circuit=h.circuit.value, last_success_at=h.last_success_at,
                last_error=h.last_error, last_error_at=h.last_error_at,
                lag_seconds=h.lag_seconds(now), quota_limit_per_minute=quota.rate * 60, updated_at=now,
                **({"quota_calls_per_minute": round(per_minute, 1)} if per_minute is not None else {})))


def unreadable(record: Any, err: BaseException) -> InboundEvent:
    """A record a connector could not turn into an event, kept anyway: stored
    like any (so the page's cursor moves on and nothing is lost) and
    quarantined by the pipeline with the reason, for a replay once fixed."""
    try:
        body = orjson.dumps({"unreadable": record}).decode()
    except TypeError:  # nested past what orjson writes, or not JSON at all
        body = '{"unreadable": null}'
    reason = f"the connector could not read this record: {error_summary(err)}"
    return InboundEvent(body=body, document={}, headers={UNREADABLE: reason})


_END = object()


async def prefetched(batches: AsyncIterator[PollBatch]) -> AsyncIterator[PollBatch]:
    """``batches``, with the next one already being fetched while the caller
    stores this one: a page's platform round trip overlaps the previous page's
    commit. Order is kept, so cursors still commit in order; an error from the
    platform arrives after the batches read before it."""
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)

    async def produce() -> None:
        try:
            async for batch in batches:
                await queue.put(batch)
            await queue.put(_END)
        except Exception as err:  # noqa: BLE001 - handed to the consumer, in order
            await queue.put(err)

    task = asyncio.create_task(produce())
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def window_end(now: datetime, lag: float) -> datetime:
    """The newest modified time a poll may read now, to whole seconds (the APIs' unit)."""
    return (now - timedelta(seconds=lag)).astimezone(UTC).replace(microsecond=0)


async def source_states(db: Database) -> dict[str, dict[str, Any]]:
    """Every polled source's health, lease and cursors as the database has them
    (what ``hub sources``, the demo and the admin API show)."""
    async with db.read() as conn:
        states = (await conn.execute(sa.select(source_state))).all()
        cursors = (await conn.execute(sa.select(source_cursors))).all()
    out: dict[str, dict[str, Any]] = {}
    for s in states:
        out[s.source_id] = {
            "healthy": s.healthy, "circuit": s.circuit, "last_success_at": s.last_success_at,
            "last_error": s.last_error, "last_error_at": s.last_error_at, "lag_seconds": s.lag_seconds,
            "lease_owner": s.lease_owner, "lease_until": s.lease_until, "paused": s.paused,
            "quota": {"calls_per_minute": s.quota_calls_per_minute, "limit_per_minute": s.quota_limit_per_minute},
            "cursors": {}}
    for c in cursors:
        out.setdefault(c.source_id, {"cursors": {}})["cursors"][c.stream] = c.cursor
    return out


async def set_paused(db: Database, source_id: str, paused: bool, *, actor: str) -> bool:
    """Pause or resume a polled source for every process; audited. False when it
    already was so (nothing changed, nothing audited)."""
    now = utcnow()
    async with db.write() as conn:
        await _ensure_state_row(db, conn, source_id, now)
        res = await conn.execute(sa.update(source_state).where(
            source_state.c.source_id == source_id, source_state.c.paused.is_(not paused),
        ).values(paused=paused, updated_at=now))
        if res.rowcount != 1:
            return False
        await conn.execute(sa.insert(audit_log).values(
            actor=actor, action="source.pause" if paused else "source.resume", target=source_id, at=now,
            detail={"before": {"paused": not paused}, "after": {"paused": paused}}))
    return True


async def _ensure_state_row(db: Database, conn: AsyncConnection, source_id: str, now: datetime) -> None:
    dialect_insert = sqlite.insert if db.is_sqlite else postgresql.insert
    await conn.execute(dialect_insert(source_state).values(
        source_id=source_id, healthy=True, circuit="closed", updated_at=now,
    ).on_conflict_do_nothing(index_elements=["source_id"]))
