"""Delivery: outbox rows → signed pushes, at least once, in order per ticket.

A claim takes due rows that are the *oldest pending* row of their ordering key
(destination, ticket), so a later push never overtakes an earlier one that is
still backing off; claimed rows get a lease (``claimed_until``), and on
PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several hub processes claim side by
side. Pushes go out concurrently (per-destination limit), then every outcome
is recorded in one transaction with its timeline event: delivered, retry at
``next_attempt_at`` (backoff), or dead with the response kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import sqlalchemy as sa
import structlog

from hub.errors import Permanent, Retryable
from hub.interfaces import Destination, Push
from hub.records import outbox, ticket_events, utcnow
from hub.retry import RetryPolicy, parse_retry_after
from hub.storage import Database

log = structlog.get_logger("hub.delivery")

RETRYABLE_4XX = frozenset({408, 409, 429})
KEEP_RESPONSE = 2000  # characters of a failed response kept for the operator


def classify(status: int, body: str, retry_after: str | None) -> None:
    """Raise Retryable/Permanent for a non-2xx response; return for success."""
    if 200 <= status < 300:
        return
    text = body[:KEEP_RESPONSE]
    if status >= 500 or status in RETRYABLE_4XX:
        raise Retryable(f"HTTP {status}", status=status, body=text,
                        retry_after=parse_retry_after(retry_after))
    raise Permanent(f"HTTP {status}", status=status, body=text)


@dataclass
class DestinationHealth:
    """A destination is *degraded* once ``threshold`` attempts in a row failed;
    one success clears it. Kept per process, shown in /metrics."""

    threshold: int = 5
    failures_in_a_row: int = 0
    last_error: str | None = None

    def record(self, result: str, error: str | None = None) -> None:
        if result == "delivered":
            self.failures_in_a_row, self.last_error = 0, None
        else:
            self.failures_in_a_row += 1
            self.last_error = error

    @property
    def degraded(self) -> bool:
        return self.failures_in_a_row >= self.threshold


@dataclass
class ActiveDestination:
    destination: Destination
    policy: RetryPolicy
    limit: asyncio.Semaphore
    health: DestinationHealth = field(default_factory=DestinationHealth)


@dataclass(frozen=True)
class Outcome:
    row: Any
    state: str                 # delivered | pending | dead
    status: int | None
    error: str | None
    response: str | None
    next_attempt_at: datetime | None
    at: datetime


# Only what an attempt needs: every extra datetime column costs a parse per row.
_CLAIMED_COLUMNS = (outbox.c.id, outbox.c.destination_id, outbox.c.ticket_id, outbox.c.idempotency_key,
                    outbox.c.event_type, outbox.c.payload, outbox.c.attempts, outbox.c.first_attempt_at)


class Deliverer:
    def __init__(self, db: Database, destinations: dict[str, ActiveDestination], *,
                 batch: int = 256, lease: float = 60.0,
                 on_result: Callable[[str, str, float], None] | None = None):
        self.db = db
        self.destinations = destinations
        self.batch = batch
        self.lease = lease
        self.on_result = on_result  # (destination, result, seconds) → metrics
        self.http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300),
            headers={"user-agent": "aftersales-hub/0.1"},
        )

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
            self.http = None
        for active in self.destinations.values():
            # Platform write-backs hold their own API clients.
            aclose = getattr(active.destination, "aclose", None)
            if aclose is not None:
                await aclose()

    async def release_claims(self) -> None:
        """Single-process start-up: claims left by a killed process are ours to retake."""
        async with self.db.write() as conn:
            await conn.execute(sa.update(outbox).where(outbox.c.state == "pending",
                                                       outbox.c.claimed_until.is_not(None))
                               .values(claimed_until=None))

    async def run_once(self) -> int:
        rows = await self._claim()
        if not rows:
            return 0
        outcomes = await asyncio.gather(*(self._attempt(r) for r in rows))
        await self._record(outcomes)
        return len(rows)

    async def _claim(self) -> list[Any]:
        if not self.destinations:
            return []
        return await self.db.run_write(self._claim_rows)

    def _claim_rows(self, conn: sa.Connection) -> list[Any]:
        # Synchronous Core in one transaction (the sqlite thread on SQLite).
        now = utcnow()
        earlier = outbox.alias("earlier")
        older_pending = sa.exists().where(
            earlier.c.ordering_key == outbox.c.ordering_key,
            earlier.c.state == "pending",
            earlier.c.id < outbox.c.id,
        )
        stmt = (sa.select(*_CLAIMED_COLUMNS)
                .where(outbox.c.state == "pending",
                       outbox.c.next_attempt_at <= now,
                       sa.or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now),
                       outbox.c.destination_id.in_(list(self.destinations)),
                       ~older_pending)
                # Longest due first. It is also the order of ix_outbox_due (state,
                # next_attempt_at, id), so the scan stops at the batch size instead of
                # sorting every due row on each claim (10x slower with 10k due).
                .order_by(outbox.c.next_attempt_at, outbox.c.id).limit(self.batch))
        rows = conn.execute(self.db.for_update_skip_locked(stmt)).all()
        if rows:
            conn.execute(sa.update(outbox).where(outbox.c.id.in_([r.id for r in rows]))
                         .values(claimed_until=now + timedelta(seconds=self.lease)))
        return list(rows)

    async def _attempt(self, row: Any) -> Outcome:
        active = self.destinations[row.destination_id]
        assert self.http is not None
        push = Push(outbox_id=row.id, destination_id=row.destination_id,
                    idempotency_key=row.idempotency_key, event_type=row.event_type,
                    payload=row.payload.encode(), attempt=row.attempts + 1)
        started = utcnow()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        async with active.limit:
            try:
                receipt = await active.destination.deliver(push, self.http)
                result = Outcome(row, "delivered", receipt.status, None, None, None, utcnow())
            except Permanent as err:
                result = Outcome(row, "dead", err.status, str(err), err.body, None, utcnow())
            except Retryable as err:
                result = self._retry_or_die(row, active.policy, started, err.status, str(err),
                                            err.body, err.retry_after)
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                result = self._retry_or_die(row, active.policy, started, None,
                                            f"{type(err).__name__}: {err}", None, None)
        active.health.record(result.state, result.error)
        if self.on_result is not None:
            self.on_result(row.destination_id, result.state if result.state != "pending" else "retry",
                           loop.time() - t0)
        return result

    def _retry_or_die(self, row: Any, policy: RetryPolicy, started: datetime, status: int | None,
                      error: str, body: str | None, retry_after: float | None) -> Outcome:
        first = row.first_attempt_at or started
        decision = policy.decide(row.attempts + 1, (started - first).total_seconds(), retry_after)
        now = utcnow()
        if decision.give_up:
            return Outcome(row, "dead", status, f"gave up after {row.attempts + 1} attempts: {error}",
                           body, None, now)
        return Outcome(row, "pending", status, error, body, now + timedelta(seconds=decision.delay), now)

    async def _record(self, outcomes: list[Outcome]) -> None:
        now = utcnow()
        delivered: dict[int | None, list[int]] = {}
        others = []
        timeline = []
        for o in outcomes:
            if o.state == "delivered":
                delivered.setdefault(o.status, []).append(o.row.id)
            else:
                others.append({
                    "_id": o.row.id, "_state": o.state, "_attempts": o.row.attempts + 1,
                    "_first": o.row.first_attempt_at or o.at, "_status": o.status,
                    "_error": o.error, "_response": o.response,
                    "_next": o.next_attempt_at or now,
                })
            kind = {"delivered": "sync_sent", "dead": "sync_dead", "pending": "sync_failed"}[o.state]
            detail: dict[str, Any] = {"destination": o.row.destination_id, "outbox_id": o.row.id,
                                      "attempt": o.row.attempts + 1, "status": o.status}
            if o.error:
                detail["error"] = o.error
            if o.next_attempt_at:
                detail["next_attempt_at"] = o.next_attempt_at.isoformat()
            timeline.append({"ticket_id": o.row.ticket_id, "kind": kind, "detail": detail, "at": o.at})
            if o.state == "dead":
                log.warning("push dead-lettered", destination=o.row.destination_id,
                            ticket_id=o.row.ticket_id, outbox_id=o.row.id, error=o.error)

        def write(conn: sa.Connection) -> None:
            # Successes share one statement per status code: the common case costs
            # one UPDATE per batch, not one per push.
            for status, ids in delivered.items():
                conn.execute(sa.update(outbox).where(outbox.c.id.in_(ids)).values(
                    state="delivered", attempts=outbox.c.attempts + 1,
                    first_attempt_at=sa.func.coalesce(outbox.c.first_attempt_at, now),
                    last_status=status, last_error=None, last_response=None,
                    delivered_at=now, claimed_until=None))
            if others:
                conn.execute(_RECORD_FAILURE, others)
            conn.execute(sa.insert(ticket_events), timeline)

        await self.db.run_write(write)


_RECORD_FAILURE = (sa.update(outbox).where(outbox.c.id == sa.bindparam("_id")).values(
    state=sa.bindparam("_state"), attempts=sa.bindparam("_attempts"),
    first_attempt_at=sa.bindparam("_first"), last_status=sa.bindparam("_status"),
    last_error=sa.bindparam("_error"), last_response=sa.bindparam("_response"),
    next_attempt_at=sa.bindparam("_next"), claimed_until=None))
