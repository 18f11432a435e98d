"""The pipeline: pending raw events → map → link → lifecycle → timeline → outbox.

Three stages, each a module of its own and tested on a bare database:

1. :mod:`hub.claim` claims a batch of pending raw events (``FOR UPDATE SKIP
   LOCKED`` on PostgreSQL, so several hub processes share the inbox) and, at
   the end, settles every one of them in one statement;
2. each event is normalized by its source's compiled mapping (pure, here);
3. :mod:`hub.apply` loads what the whole batch touches with one query per
   table, applies the events in order in memory (linking, merges, the
   lifecycle, the pushes :mod:`hub.outbox_rows` renders) and writes the
   result with one statement per table.

All of it is one transaction with the raw events' new states (transactional
outbox): a crash anywhere loses nothing and doubles nothing.

**On SQLite the batch's commit does not wait for the disk** (``durable=False``,
``synchronous = NORMAL`` for that transaction; intake's commits stay synced).
What it writes is derived from raw events that are: a crash of the process
loses nothing, and a power cut can only take back a suffix of the WAL — the
last batches (and delivery's last outcomes) since anyone's synced commit or
the last checkpoint, never an earlier batch without the later ones. Their
raw events are then pending again and are processed again in the same
order, to the same ids (the largest plus one, :class:`hub.apply.Ids`) and
so to the same push idempotency keys: a push already sent is sent again
under its key, exactly once in effect. Not on PostgreSQL: ids come from
sequences there, which do not roll back, so a replay would make new keys.
Measured in process with a million customers seeded, the commit's fsync
was ~80 µs an event of the pipeline's ~590 (20,000 events).

One event is one unit of failure. Whatever an event makes the mapping, a
cast or the apply stage raise, that event is quarantined with a reason free
of PII (its changes in memory undone) and the rest of the batch goes on. A
batch that fails as a whole — the database refusing something one event
asked of it, or another hub process creating the same ticket first — is
retried one event at a time — at once when the database refused a row
(an integrity error: most often one another process had just created, which
the event then joins), after the supervisor's backoff otherwise — and an
event that breaks its transaction alone ``MAX_FAILED_ATTEMPTS`` times is
quarantined: nothing retries forever.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
import structlog
from cryptography.exceptions import InvalidTag

from hub import claim as claims
from hub.apply import Event, Records
from hub.bulk import ConnectionWrites, SqliteWrites
from hub.claim import Claimed, Settlement
from hub.config import SyncRule
from hub.errors import Quarantine
from hub.inbox import event_document
from hub.interfaces import UNREADABLE
from hub.normalized import Normalized
from hub.pii import PiiCipher, mask_phones_in
from hub.records import utcnow
from hub.redaction import error_summary
from hub.runtimes import DestinationRuntime, SourceRuntime
from hub.storage import UNAVAILABLE, Database

__all__ = ["DestinationRuntime", "Pipeline", "SourceRuntime", "parse_body", "scrub_free_text"]

log = structlog.get_logger("hub.pipeline")

MAX_FAILED_ATTEMPTS = 3  # an event that breaks its transaction, taken alone this often: quarantined

FREE_TEXT = ("description", "reason_text")


def scrub_free_text(n: Normalized) -> None:
    """Phone numbers people type into free text are masked before it is stored:
    records and timeline hold no number in clear (the raw event, sealed, keeps
    the original)."""
    for key in FREE_TEXT:
        if isinstance(n.ticket.get(key), str):
            n.ticket[key] = mask_phones_in(n.ticket[key])
    if n.interaction is not None and isinstance(n.interaction.get("text"), str):
        n.interaction["text"] = mask_phones_in(n.interaction["text"])


def parse_body(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as err:
        raise Quarantine(f"body is not JSON: {err}") from None


def normalize_row(cipher: PiiCipher, rt: SourceRuntime | None, row: Any) -> Normalized:
    """A stored raw event (``source_id``, ``headers``, sealed ``body``) through its
    source's mapping as it is now: what the pipeline does, and what a replay redoes."""
    if rt is None:
        raise Quarantine(f"source {row.source_id!r} is not configured")
    problem = row.headers.get(UNREADABLE) if isinstance(row.headers, dict) else None
    if problem:
        raise Quarantine(str(problem))
    try:
        text = cipher.open_body(row.body)
    except (ValueError, InvalidTag, UnicodeDecodeError) as err:
        raise Quarantine(f"the sealed body cannot be opened ({type(err).__name__}): "
                         "was it sealed with a key no longer configured?") from None
    normalized = rt.mapping.apply(event_document(row.source_id, row.headers, parse_body(text)))
    scrub_free_text(normalized)
    return normalized


@dataclass(slots=True)
class Mapped:
    """A claimed batch after mapping: the events to apply, and the outcomes of the rest."""

    events: list[Event] = field(default_factory=list)
    settled: list[Settlement] = field(default_factory=list)
    results: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Plan:
    """A batch decided: its records' changes and every event's outcome, not yet written."""

    records: Records | None
    settled: list[Settlement]
    results: list[tuple[str, str]]  # (source, done | ignored | quarantined), for the metrics
    now: datetime
    rendered: SqliteWrites | None = None  # SQLite: the writes, ready for the driver


class Pipeline:
    def __init__(self, db: Database, cipher: PiiCipher, sources: dict[str, SourceRuntime],
                 destinations: dict[str, DestinationRuntime], rules: list[SyncRule], *,
                 batch: int = 100,
                 on_result: Callable[[str, str], None] | None = None):
        self.db = db
        self.cipher = cipher
        self.sources = sources
        self.destinations = destinations
        self.rules = rules
        self.batch = batch
        self.on_result = on_result  # (source_id, "done"|"ignored"|"quarantined") → metrics
        self._claimed: list[int] = []  # ids of the batch in progress
        # After a batch failed as a whole: how many of its events to take one at a
        # time, so the one that breaks it is found and quarantined, not retried forever.
        self._alone = 0

    async def run_once(self) -> int:
        """Process one batch; returns how many raw events it settled."""
        size = 1 if self._alone else self.batch
        self._claimed = []
        try:
            if self.db.is_sqlite:
                # Planned and rendered on a snapshot; under the write lock only the
                # driver's statements and the commit (hub.apply, hub.bulk).
                plan = await self.db.run_read_sync(lambda c: self._render(self._plan(c, size)))
                assert plan.rendered is not None
                await self.db.run_sqlite_write(plan.rendered.run, urgent=False, durable=False)
                self._claimed = []
                results = plan.results
            else:
                results = await self._run_postgres(size)
        except claims.ClaimLost as err:
            log.warning("pipeline batch dropped: its events were settled meanwhile", error=str(err))
            return 0
        except Exception as err:
            if not self._claimed:
                raise
            if not self._alone:
                # Something in this batch broke the transaction: the database, or one event.
                self._alone = len(self._claimed)
                log.warning("pipeline batch failed; retrying its events one at a time",
                            events=len(self._claimed), error=error_summary(err))
                if isinstance(err, (sa.exc.IntegrityError, sqlite3.IntegrityError)):
                    # The database refused a row — most often one another hub process
                    # created first (the same new customer or ticket). The data, not
                    # the database: no backoff. The first event, alone, at once,
                    # against what the other committed (an event that breaks a
                    # constraint by itself is counted and quarantined as any other).
                    return await self.run_once()
                raise
            if not await self._count_failure(self._claimed[0], err):
                raise  # the database itself is failing: back off
            return 0
        if self._alone:
            self._alone -= 1
        for source_id, result in results:
            self._count(source_id, result)
        return len(results)

    async def _run_postgres(self, size: int) -> list[tuple[str, str]]:
        """One transaction: claim (rows locked, SKIP LOCKED for the other processes),
        map the events in a worker thread — the event loop, which intake shares
        here, goes on answering meanwhile — then decide and write."""
        async with self.db.write() as conn:
            rows = await conn.run_sync(lambda c: self._claim(c, size))
            if not rows:
                return []
            normalized = await asyncio.to_thread(self._normalize_all, rows)
            return await conn.run_sync(lambda c: self._write(c, self._decide(c, normalized)))

    async def has_pending(self) -> bool:
        """Whether any raw event waits (a read: no write lock). Asked every
        ``pipeline.poll`` by an idle pipeline without intake: on SQLite on the
        plain driver's reading thread (aiosqlite's hops cost more than the query)."""
        if self.db.is_sqlite:
            return await self.db.run_read_sync(claims.any_pending)
        async with self.db.read() as conn:
            return await conn.run_sync(claims.any_pending)

    async def _count_failure(self, raw_id: int, err: BaseException) -> bool:
        """One more failed attempt of an event processed alone; quarantined at the
        limit. False when even that write fails (the database is the problem)."""

        def count(conn: sa.Connection) -> int | None:
            attempts = claims.count_failure(conn, raw_id)
            if attempts is not None and attempts >= MAX_FAILED_ATTEMPTS:
                claims.settle(ConnectionWrites(conn), [Settlement(raw_id, "quarantined",
                                                f"failed {attempts} times alone: {error_summary(err)}")],
                              utcnow())
            return attempts

        try:
            attempts = await self.db.run_write(count)
        except Exception:  # noqa: BLE001 - the original error is what the caller reports
            return False
        log.error("event failed", event_id=raw_id, attempts=attempts, error=error_summary(err),
                  quarantined=attempts is not None and attempts >= MAX_FAILED_ATTEMPTS)
        if attempts is None or attempts >= MAX_FAILED_ATTEMPTS:
            self._alone = max(0, self._alone - 1)
        return True

    def _plan(self, conn: sa.Connection, size: int) -> Plan:
        """Claim a batch and decide all of it in memory (synchronous: a worker thread on SQLite)."""
        return self._decide(conn, self._normalize_all(self._claim(conn, size)))

    def _claim(self, conn: sa.Connection, size: int) -> list[Claimed]:
        rows = claims.claim(conn, self.db, size)
        self._claimed = [row.id for row in rows]
        return rows

    def _normalize_all(self, rows: list[Claimed]) -> Mapped:
        """Every claimed event mapped (pure: no database), or its outcome if it goes no further."""
        out = Mapped()
        for row in rows:
            rt = self.sources.get(row.source_id)
            try:
                normalized = self._normalize(rt, row)
            except Quarantine as q:
                out.settled.append(self._quarantined(row, str(q), rt))
                out.results.append((row.source_id, "quarantined"))
                continue
            except Exception as err:  # noqa: BLE001 - one event is one unit of failure
                log.error("event could not be normalized", source=row.source_id, event_id=row.id, exc_info=err)
                out.settled.append(self._quarantined(row, f"internal error while mapping: {error_summary(err)}", rt))
                out.results.append((row.source_id, "quarantined"))
                continue
            assert rt is not None
            if normalized.ignored is not None:
                out.settled.append(Settlement(row.id, "done", f"ignored: {normalized.ignored}", rt.mapping.label))
                out.results.append((row.source_id, "ignored"))
                continue
            out.events.append(Event(row.id, row.dedupe_key, rt, normalized))
        return out

    def _decide(self, conn: sa.Connection, n: Mapped) -> Plan:
        """The normalized events applied, in order, to what they touch (loaded on ``conn``)."""
        now = utcnow()
        records = None
        if n.events:
            records = Records(conn, self.db, self.cipher, self.rules, self.destinations)
            records.load(n.events)
            for ev in n.events:
                n.settled.append(self._apply(records, ev, now))
                n.results.append((ev.source.config.id, "done" if n.settled[-1].state == "done" else "quarantined"))
        return Plan(records, n.settled, n.results, now)

    def _write(self, conn: sa.Connection, plan: Plan) -> list[tuple[str, str]]:
        """What the batch did, and every event's outcome, in the one write transaction."""
        w = ConnectionWrites(conn)
        if plan.records is not None:
            plan.records.write(w)
        claims.settle(w, plan.settled, plan.now)
        self._claimed = []
        return plan.results

    @staticmethod
    def _render(plan: Plan) -> Plan:
        """SQLite: the batch's writes rendered for the driver, still outside the lock."""
        plan.rendered = SqliteWrites()
        if plan.records is not None:
            plan.records.write(plan.rendered)
        claims.settle(plan.rendered, plan.settled, plan.now)
        return plan

    def _normalize(self, rt: SourceRuntime | None, row: Claimed) -> Normalized:
        return normalize_row(self.cipher, rt, row)

    def _apply(self, records: Records, ev: Event, now: Any) -> Settlement:
        """One event applied in memory; on any error its changes are undone and it is quarantined."""
        mark = records.mark()
        label = ev.source.mapping.label
        try:
            ticket_id = records.apply(ev, now)
        except UNAVAILABLE:
            raise  # the database, not the event: the whole batch waits
        except sa.exc.DBAPIError:
            raise  # a statement the database refused: found by retrying events alone
        except Quarantine as q:
            records.undo(mark)
            return self._quarantined_event(ev, str(q))
        except Exception as err:  # noqa: BLE001 - a bug must not wedge the inbox
            records.undo(mark)
            log.error("event failed", source=ev.source.config.id, event_id=ev.raw_id, exc_info=err)
            return self._quarantined_event(ev, f"internal error: {error_summary(err)}")
        return Settlement(ev.raw_id, "done", mapping=label, ticket_id=ticket_id)

    def _quarantined_event(self, ev: Event, reason: str) -> Settlement:
        kept = claims.reason_text(reason)
        log.warning("event quarantined", source=ev.source.config.id, event_id=ev.raw_id, reason=kept)
        return Settlement(ev.raw_id, "quarantined", reason, ev.source.mapping.label)

    def _quarantined(self, row: Claimed, reason: str, rt: SourceRuntime | None) -> Settlement:
        kept = claims.reason_text(reason)
        log.warning("event quarantined", source=row.source_id, event_id=row.id, reason=kept)
        return Settlement(row.id, "quarantined", reason, rt.mapping.label if rt else None)

    def _count(self, source_id: str, result: str) -> None:
        if self.on_result is not None:
            self.on_result(source_id, result)
