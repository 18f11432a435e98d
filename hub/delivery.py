"""Delivery: outbox rows → signed pushes, at least once, in order per ticket,
and no destination able to hold up another (or its own other tickets).

**Claims.** Each destination has ``max_in_flight`` slots and a queue of up to
``batch`` claimed rows behind them. A claim takes, per destination, at most what
slots and queue have room for, and only rows
that are the oldest *open* row of their ordering key (destination, ticket) —
open meaning pending, or dead: a dead letter holds that ticket's later
pushes to that destination until an operator retries or drops it
(:mod:`hub.dead_letters`), so a ``status_changed`` never arrives without its
``created``. Claimed rows get a lease (``claimed_until``) and a fresh claim
token; on PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several hub processes
claim side by side.

**Attempts.** A claimed row is attempted in a task of its own as soon as a
slot is free, cut off at the destination's timeout (the hub's one cut-off: a
destination's ``deliver`` sets none of its own); one that could not start
with its whole timeout still inside its lease (less the time to record) is
given back untried, so an attempt never outlives its claim. A destination
that hangs fills only its own slots; its answers are read up to its
``max_response_bytes`` (:func:`receipt_of`). An attempt still unanswered
after the destination's ``slow_after`` gives its slot to the next push and
waits aside (at most ``ASIDE_PER_SLOT`` × ``max_in_flight`` of them): at a
thousand pushes a second, 1 % hanging for a 10 s timeout would otherwise
hold a hundred slots, and every other ticket of that destination would
queue behind them. Aside must hold what hangs over a timeout — at 1,700
pushes a second, 1 % hanging is 170 at once — or the hung fill the slots
again (measured: with room for 64 aside, the other tickets' p99 7.2 s).
One timer per attempt serves both: it fires at ``slow_after`` (aside), then
at the timeout (cancelled). At three thousand pushes a second, the two timers
and ``asyncio.timeout``'s bookkeeping were ~4 % of delivery's CPU.

**Recording.** Outcomes are recorded as they complete — the recorder commits
whatever has completed so far in one transaction, with its timeline events —
each fenced by its claim token: an outcome whose row has since been claimed
again changes nothing. While ``batch`` outcomes wait to be recorded no more
is claimed, so what waits in memory stays bounded.

**Not synced to disk.** Claims and outcomes commit without waiting for the
disk (``durable=False``: SQLite's ``synchronous = NORMAL``, PostgreSQL's
``synchronous_commit = off``, for these transactions only). A crash of the
process loses none of them; a power cut may lose the last ones, and then a
push is sent again under its idempotency key — at least once, as always —
and a claim is simply made again. On SQLite each synced commit held the one
write lock through an fsync: delivery's took ~5 ms each, a quarter of the
time intake's and the pipeline's commits waited for it (bench/e2e.py, 20,000
requests).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import sqlalchemy as sa
import structlog

from hub import outbox_sqlite
from hub.circuit import CircuitBreaker, CircuitState
from hub.config import record_margin
from hub.errors import Permanent, Retryable
from hub.interfaces import Destination, Push, Receipt
from hub.quota import TokenBucket
from hub.records import outbox, ticket_events, utcnow
from hub.retry import RetryPolicy, parse_retry_after
from hub.storage import PLAN_AFRESH, Database

log = structlog.get_logger("hub.delivery")

RETRYABLE_4XX = frozenset({408, 409, 429})
KEEP_RESPONSE = 2000  # characters of a failed response kept for the operator
MAX_RESPONSE_BYTES = 65536
OPEN_STATES = outbox_sqlite.OPEN_STATES  # what holds a ticket's later pushes back
ASIDE_PER_SLOT = 4  # slow attempts waiting aside, per slot (each holds a connection)


def classify(status: int, body: str, retry_after: str | None) -> None:
    """Raise Retryable/Permanent for a non-2xx response; return for success."""
    if 200 <= status < 300:
        return
    text = body[:KEEP_RESPONSE]
    if status >= 500 or status in RETRYABLE_4XX:
        raise Retryable(f"HTTP {status}", status=status, body=text,
                        retry_after=parse_retry_after(retry_after))
    raise Permanent(f"HTTP {status}", status=status, body=text)


async def receipt_of(resp: aiohttp.ClientResponse, limit: int = MAX_RESPONSE_BYTES) -> Receipt:
    """A destination's answer, read up to ``limit`` bytes, as a Receipt — or
    Retryable/Permanent. A longer answer is cut off and its connection closed,
    so a destination that answers with 300 MB costs 64 KB."""
    chunks: list[bytes] = []
    size = 0
    content = resp.content
    while size < limit and not content.at_eof():
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if not content.at_eof():
        resp.close()  # the rest stays unread: this connection is not reused
    body = b"".join(chunks).decode("utf-8", errors="replace")
    classify(resp.status, body, resp.headers.get("retry-after"))
    return Receipt(resp.status, body[:200])


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
    limit: int                 # slots: attempts in the air at once
    timeout: float
    slow_after: float = 2.0    # an attempt unanswered this long waits aside, freeing its slot
    health: DestinationHealth = field(default_factory=DestinationHealth)
    # Backs off as a whole when attempts keep failing; paces pushes to ``rate`` a second.
    circuit: CircuitBreaker = field(default_factory=lambda: CircuitBreaker(10, 30.0, 600.0))
    bucket: TokenBucket | None = None
    # When the latest attempt that got an answer started (loop time): a failure of an
    # attempt started before it says nothing about the destination now.
    answered_since: float = float("-inf")
    in_flight: int = 0
    aside: int = 0             # slow attempts that gave their slot back (at most ASIDE_PER_SLOT × ``limit``)
    queue: collections.deque[Claim] = field(default_factory=collections.deque)  # claimed, not started


@dataclass(slots=True)
class Slot:
    """One attempt's hold on its destination: a slot, until it is set aside as slow;
    and its one timer, for being slow and then for timing out."""

    aside: bool = False
    done: bool = False
    timer: asyncio.TimerHandle | None = None
    slow_at: float | None = None       # loop time: past it, unanswered means slow (once)
    deadline: float | None = None      # loop time: past it, the attempt is cancelled
    task: asyncio.Task[None] | None = None
    timed_out: bool = False


@dataclass(frozen=True)
class Claim:
    row: Any
    token: str
    deadline: float            # loop time by which the outcome must be recorded


@dataclass(frozen=True)
class Outcome:
    claim: Claim
    state: str                 # delivered | pending | dead | released (no attempt made)
    status: int | None
    error: str | None
    response: str | None
    next_attempt_at: datetime | None
    at: datetime

    @property
    def row(self) -> Any:
        return self.claim.row


# Only what an attempt needs: every extra datetime column costs a parse per row.
_CLAIMED_COLUMNS = (outbox.c.id, outbox.c.destination_id, outbox.c.ticket_id, outbox.c.idempotency_key,
                    outbox.c.event_type, outbox.c.payload, outbox.c.attempts, outbox.c.first_attempt_at)
_EARLIER = outbox.alias("earlier")


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
        # Kept, not asked for: in Python 3.11 every get_running_loop() is a
        # getpid() system call, and the hot path asked several times a push.
        self._loop: asyncio.AbstractEventLoop | None = None
        self.wake = asyncio.Event()       # claim again: new rows, or slots freed
        self.completed = asyncio.Event()  # outcomes wait to be recorded
        self._outcomes: list[Outcome] = []
        self._attempts: set[asyncio.Task[None]] = set()

    @property
    def _running(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "start() the Deliverer first"
        return self._loop

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300),
            headers={"user-agent": "aftersales-hub/0.1"},
            # No timeout of aiohttp's own (its default is five minutes): each attempt
            # is cut off by the Deliverer at its destination's timeout, one timer a push.
            timeout=aiohttp.ClientTimeout(),
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
                               .values(claimed_until=None, claim_token=None))

    # ------------------------------------------------------------ claims

    async def claim_once(self) -> int:
        """Claim what the destinations have room for; attempts start as slots free. How many."""
        if len(self._outcomes) >= self.batch:
            return 0  # the recorder is behind: what waits in memory stays bounded
        # Each destination keeps up to ``batch`` claimed rows queued behind its
        # slots, so a freed slot is refilled without a database round trip; it
        # claims again once that queue is half empty (claims of many rows, not of one).
        want = {d: room for d, a in self.destinations.items() if (room := self._room(a))}
        if not want:
            return 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lease - record_margin(self.lease)
        token = secrets.token_hex(8)
        if self.db.is_sqlite:
            now = utcnow()
            until = now + timedelta(seconds=self.lease)
            # Short and not synced: on the loop's own thread (Database.run_sqlite_write).
            rows: list[Any] = await self.db.run_sqlite_write(
                lambda raw: outbox_sqlite.claim(raw, want, self.batch, now, until, token), urgent=False,
                durable=False, inline=True)
        else:
            rows = await self.db.run_write(lambda conn: self._claim_rows(conn, want, token), durable=False)
        for row in rows:
            self.destinations[row.destination_id].queue.append(Claim(row, token, deadline))
        for d in want:
            self._pump(d)
        return len(rows)

    async def has_due(self) -> bool:
        """Whether a claim would find a push (a read: no write lock). As the claim
        asks: rows in flight (claimed) or held behind an earlier push of their
        ticket are not due — counted, every poll would open a write transaction
        while a hanging push holds its claim."""
        if not self.destinations:
            return False
        now = utcnow()
        if self.db.is_sqlite:
            # Asked every delivery.poll by an idle delivery process: driver SQL on
            # the plain driver's reading thread, not an expression through aiosqlite.
            dests = sorted(self.destinations)
            return await self.db.run_read_sync(lambda conn: outbox_sqlite.any_due(conn, dests, now))
        stmt = (sa.select(outbox.c.id).where(outbox.c.destination_id.in_(sorted(self.destinations)),
                                             outbox.c.state == "pending", outbox.c.next_attempt_at <= now,
                                             sa.or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now),
                                             ~_older_open())
                .limit(1))
        async with self.db.read() as conn:
            await conn.execute(PLAN_AFRESH)  # the claim's anti-join: hub.storage.PLAN_AFRESH
            return (await conn.execute(stmt)).first() is not None

    def _room(self, a: ActiveDestination) -> int:
        """How many rows a claim should take for this destination now (0: not worth one)."""
        state = a.circuit.state
        if state is CircuitState.OPEN:
            return 0  # backing off as a whole: nothing is claimed, the others go on
        if state is CircuitState.HALF_OPEN:
            return 1 if a.in_flight == 0 and not a.queue else 0  # one trial push
        room = a.limit + self.batch - a.in_flight - len(a.queue)
        return room if room >= max(1, self.batch // 2) or (room > 0 and not a.queue) else 0

    def _pump(self, dest: str) -> None:
        """Start queued attempts while the destination has free slots."""
        active = self.destinations[dest]
        state = active.circuit.state
        if state is CircuitState.OPEN:
            while active.queue:  # given back untouched: claimed again once the cooldown has passed
                self._outcomes.append(Outcome(active.queue.popleft(), "released", None, None, None, None,
                                              utcnow()))
                self.completed.set()
            return
        limit = 1 if state is CircuitState.HALF_OPEN else active.limit
        if not active.queue or active.in_flight >= limit:
            return
        loop = self._running
        while active.queue and active.in_flight < limit:
            claim = active.queue.popleft()
            active.in_flight += 1
            slow_at = loop.time() + active.slow_after
            slot = Slot(slow_at=slow_at)
            slot.timer = loop.call_at(slow_at, self._on_timer, dest, slot)
            task = loop.create_task(self._attempt(claim, slot))
            self._attempts.add(task)
            task.add_done_callback(self._attempts.discard)

    def _on_timer(self, dest: str, slot: Slot) -> None:
        """An attempt's timer: past its deadline it is cancelled (a timeout); past
        ``slow_after`` it is set aside; then the timer is set for what comes next."""
        slot.timer = None
        if slot.done:
            return
        loop = self._running
        now = loop.time()
        if slot.deadline is not None and now >= slot.deadline and slot.task is not None:
            slot.timed_out = True
            slot.task.cancel()
            return
        if slot.slow_at is not None and now >= slot.slow_at:
            slot.slow_at = None  # judged once, room aside or not
            self._set_aside(dest, slot)
        self._arm(dest, slot)

    def _arm(self, dest: str, slot: Slot) -> None:
        """Set the attempt's one timer for the earlier of being slow and timing out."""
        when = min((t for t in (slot.slow_at, slot.deadline) if t is not None), default=None)
        if when is None or (slot.timer is not None and slot.timer.when() <= when):
            return
        if slot.timer is not None:
            slot.timer.cancel()
        slot.timer = self._running.call_at(when, self._on_timer, dest, slot)

    def _set_aside(self, dest: str, slot: Slot) -> None:
        """A slow attempt gives its slot to the next push, if there is room aside."""
        active = self.destinations[dest]
        if slot.done or slot.aside or active.aside >= ASIDE_PER_SLOT * active.limit:
            return
        slot.aside = True
        active.in_flight -= 1
        active.aside += 1
        self._pump(dest)
        if self._room(active):
            self.wake.set()

    def _claim_rows(self, conn: sa.Connection, free: dict[str, int], token: str) -> list[Any]:
        # Synchronous Core in one transaction (PostgreSQL; SQLite: hub.outbox_sqlite).
        # Planned for the outbox as it is now, not as it was when the statement
        # was first prepared (hub.storage.PLAN_AFRESH).
        self.db.plan_afresh(conn)
        now = utcnow()
        older_open = _older_open()
        claimed: list[Any] = []
        budget = self.batch
        for dest, room in free.items():
            if budget <= 0:
                break
            stmt = (sa.select(*_CLAIMED_COLUMNS)
                    .where(outbox.c.destination_id == dest, outbox.c.state == "pending",
                           outbox.c.next_attempt_at <= now,
                           sa.or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now),
                           ~older_open)
                    # Longest due first, along ix_outbox_claim (destination, state,
                    # next_attempt_at, id): the scan stops at the limit, no sort.
                    .order_by(outbox.c.next_attempt_at, outbox.c.id).limit(min(room, budget)))
            rows = conn.execute(self.db.for_update_skip_locked(stmt)).all()
            claimed.extend(rows)
            budget -= len(rows)
        if claimed:
            conn.execute(sa.update(outbox).where(outbox.c.id.in_([r.id for r in claimed]))
                         .values(claimed_until=now + timedelta(seconds=self.lease), claim_token=token))
        return claimed

    # ------------------------------------------------------------ attempts

    async def _attempt(self, claim: Claim, slot: Slot) -> None:
        row = claim.row
        active = self.destinations[row.destination_id]
        loop = self._running
        t0 = loop.time()
        budget = active.timeout
        if claim.deadline - t0 < budget:
            # Waited in the queue too long to be tried with its whole timeout inside
            # the lease: give the claim back untouched rather than risk outliving it.
            self._done(Outcome(claim, "released", None, None, None, None, utcnow()), slot)
            return
        assert self.http is not None
        push = Push(outbox_id=row.id, destination_id=row.destination_id,
                    idempotency_key=row.idempotency_key, event_type=row.event_type,
                    payload=row.payload.encode(), attempt=row.attempts + 1)
        if active.bucket is not None:
            await active.bucket.acquire()  # the destination's rate: waits its turn, inside the lease
            if claim.deadline - loop.time() < budget:
                self._done(Outcome(claim, "released", None, None, None, None, utcnow()), slot)
                return
        started = utcnow()
        slot.task = asyncio.current_task(loop)
        slot.deadline = loop.time() + budget
        self._arm(row.destination_id, slot)
        try:
            receipt = await active.destination.deliver(push, self.http)
            result = Outcome(claim, "delivered", receipt.status, None, None, None, utcnow())
        except asyncio.CancelledError:
            if not slot.timed_out:
                raise  # stopping: not this attempt's outcome
            assert slot.task is not None
            slot.task.uncancel()  # our own cut-off, turned into an outcome (as asyncio.timeout does)
            result = self._retry_or_die(claim, active.policy, started, None,
                                        f"no answer within {budget:.1f} s", None, None)
        except Permanent as err:
            result = Outcome(claim, "dead", err.status, str(err), err.body, None, utcnow())
        except Retryable as err:
            result = self._retry_or_die(claim, active.policy, started, err.status, str(err),
                                        err.body, err.retry_after)
        except (aiohttp.ClientError, OSError) as err:
            result = self._retry_or_die(claim, active.policy, started, None,
                                        f"{type(err).__name__}: {err}", None, None)
        except Exception as err:  # noqa: BLE001 - a destination's bug is this push's failure
            log.error("push attempt failed unexpectedly", destination=row.destination_id,
                      outbox_id=row.id, exc_info=err)
            result = self._retry_or_die(claim, active.policy, started, None,
                                        f"internal error: {type(err).__name__}", None, None)
        active.health.record(result.state, result.error)
        self._count_for_circuit(row.destination_id, active, result, t0)
        if result.state == "pending":
            log.info("push failed; will retry", destination=row.destination_id, ticket_id=row.ticket_id,
                     outbox_id=row.id, attempt=row.attempts + 1, status=result.status, error=result.error,
                     next_attempt_at=result.next_attempt_at.isoformat() if result.next_attempt_at else None)
        if self.on_result is not None:
            self.on_result(row.destination_id, result.state if result.state != "pending" else "retry",
                           loop.time() - t0)
        self._done(result, slot)

    @staticmethod
    def _count_for_circuit(dest: str, active: ActiveDestination, result: Outcome, started: float) -> None:
        """An answer — delivered, or one push refused — means the destination is up;
        errors and silence count towards leaving it alone, unless an attempt started
        after this one has been answered since (a few hung pushes timing out together
        are not an outage)."""
        before = active.circuit.state
        if result.state == "delivered" or (result.state == "dead" and result.status is not None
                                           and 400 <= result.status < 500):
            active.answered_since = max(active.answered_since, started)
            active.circuit.success()
            if before is not CircuitState.CLOSED:
                log.info("destination answering again: circuit closed", destination=dest)
            return
        if started < active.answered_since:
            return
        trial_from = active.circuit.trial_from()
        if trial_from is not None and started < trial_from:
            return  # in the air when the circuit opened: no trial, the cooldown stands
        active.circuit.failure()
        if active.circuit.state is CircuitState.OPEN and before is not CircuitState.OPEN:
            log.warning("destination keeps failing: left alone as a whole", destination=dest,
                        failures=active.circuit.failures, retry_in=round(active.circuit.remaining(), 1),
                        error=result.error)

    def _done(self, outcome: Outcome, slot: Slot) -> None:
        dest = outcome.row.destination_id
        active = self.destinations[dest]
        slot.done = True
        if slot.timer is not None:
            slot.timer.cancel()
        if slot.aside:
            active.aside -= 1
        else:
            active.in_flight -= 1
        self._outcomes.append(outcome)
        self.completed.set()
        self._pump(dest)
        if self._room(self.destinations[dest]):
            self.wake.set()  # worth claiming more (not on every completion: a claim costs a transaction)

    def _retry_or_die(self, claim: Claim, policy: RetryPolicy, started: datetime, status: int | None,
                      error: str, body: str | None, retry_after: float | None) -> Outcome:
        row = claim.row
        first = row.first_attempt_at or started
        decision = policy.decide(row.attempts + 1, (started - first).total_seconds(), retry_after)
        now = utcnow()
        if decision.give_up:
            return Outcome(claim, "dead", status, f"gave up after {row.attempts + 1} attempts: {error}",
                           body, None, now)
        return Outcome(claim, "pending", status, error, body, now + timedelta(seconds=decision.delay), now)

    # ------------------------------------------------------------ recording

    async def record_once(self) -> int:
        """Record every outcome completed so far, in one transaction; how many."""
        self.completed.clear()
        if not self._outcomes:
            return 0
        batch, self._outcomes = self._outcomes, []
        try:
            if self.db.is_sqlite:
                # Rendered here, so the write lock is held only for the driver's statements.
                rendered = self._render_sqlite(batch)
                stale = await self.db.run_sqlite_write(lambda raw: outbox_sqlite.record(raw, rendered),
                                                       urgent=False, durable=False, inline=True)
            else:
                stale = await self.db.run_write(lambda conn: self._record(conn, batch), durable=False)
        except BaseException:
            self._outcomes[:0] = batch  # recorded on the next try
            raise
        for o in batch:
            if o.state == "dead" and o.row.id not in stale:
                log.warning("push dead-lettered: this ticket's later pushes to it wait",
                            destination=o.row.destination_id, ticket_id=o.row.ticket_id,
                            outbox_id=o.row.id, error=o.error)
        if stale:
            log.warning("late push outcomes discarded: their claims had been taken again",
                        outbox_ids=sorted(stale))
        self.wake.set()  # these tickets' next pushes may be due now
        return len(batch)

    async def drain(self, grace: float) -> None:
        """At stop: give back what is queued, let attempts in flight finish (up to
        ``grace``), then record them."""
        for active in self.destinations.values():
            while active.queue:
                self._outcomes.append(Outcome(active.queue.popleft(), "released", None, None, None,
                                              None, utcnow()))
        if self._attempts:
            _, pending = await asyncio.wait(set(self._attempts), timeout=grace)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.record_once()

    @staticmethod
    def _render_sqlite(outcomes: list[Outcome]) -> list[outbox_sqlite.RenderedOutcome]:
        now = utcnow()
        return [outbox_sqlite.render(
            o.row.id, o.claim.token, o.state, attempts=o.row.attempts + 1, first=o.row.first_attempt_at or o.at,
            status=o.status, error=o.error, response=o.response, next_at=o.next_attempt_at or now, now=now,
            timeline=None if o.state == "released" else _timeline(o)) for o in outcomes]

    def _record(self, conn: sa.Connection, outcomes: list[Outcome]) -> set[int]:
        """Write the outcomes whose claims still hold; return the ids of those that
        no longer do (their lease ran out and the row was claimed again)."""
        ids = [o.row.id for o in outcomes]
        held: dict[int, str | None] = dict(conn.execute(self.db.for_update(
            sa.select(outbox.c.id, outbox.c.claim_token)
            .where(outbox.c.id.in_(ids), outbox.c.state == "pending"))).all())
        valid = [o for o in outcomes if held.get(o.row.id) == o.claim.token]
        stale = {o.row.id for o in outcomes} - {o.row.id for o in valid}
        now = utcnow()
        delivered: dict[int | None, list[int]] = {}
        released: list[int] = []
        others = []
        timeline = []
        for o in valid:
            if o.state == "released":
                released.append(o.row.id)
                continue
            if o.state == "delivered":
                delivered.setdefault(o.status, []).append(o.row.id)
            else:
                others.append({
                    "_id": o.row.id, "_state": o.state, "_attempts": o.row.attempts + 1,
                    "_first": o.row.first_attempt_at or o.at, "_status": o.status,
                    "_error": o.error, "_response": o.response,
                    "_next": o.next_attempt_at or now,
                })
            timeline.append(_timeline(o))
        # Successes share one statement per status code: the common case costs
        # one UPDATE per batch, not one per push.
        for status, done in delivered.items():
            conn.execute(sa.update(outbox).where(outbox.c.id.in_(done)).values(
                state="delivered", attempts=outbox.c.attempts + 1,
                first_attempt_at=sa.func.coalesce(outbox.c.first_attempt_at, now),
                last_status=status, last_error=None, last_response=None,
                delivered_at=now, claimed_until=None, claim_token=None))
        if others:
            conn.execute(_RECORD_FAILURE, others)
        if released:
            conn.execute(sa.update(outbox).where(outbox.c.id.in_(released))
                         .values(claimed_until=None, claim_token=None))
        if timeline:
            conn.execute(sa.insert(ticket_events), timeline)
        return stale


def _older_open() -> Any:
    """An earlier push of the same ticket to the same destination is still open: this one waits."""
    return sa.exists().where(_EARLIER.c.ordering_key == outbox.c.ordering_key,
                             _EARLIER.c.state.in_(OPEN_STATES), _EARLIER.c.id < outbox.c.id)


def _timeline(o: Outcome) -> dict[str, Any]:
    """The ticket's timeline event for an attempt's outcome."""
    kind = {"delivered": "sync_sent", "dead": "sync_dead", "pending": "sync_failed"}[o.state]
    detail: dict[str, Any] = {"destination": o.row.destination_id, "outbox_id": o.row.id,
                              "attempt": o.row.attempts + 1, "status": o.status}
    if o.error:
        detail["error"] = o.error
    if o.next_attempt_at:
        detail["next_attempt_at"] = o.next_attempt_at.isoformat()
    return {"ticket_id": o.row.ticket_id, "kind": kind, "detail": detail, "at": o.at}


_RECORD_FAILURE = (sa.update(outbox).where(outbox.c.id == sa.bindparam("_id")).values(
    state=sa.bindparam("_state"), attempts=sa.bindparam("_attempts"),
    first_attempt_at=sa.bindparam("_first"), last_status=sa.bindparam("_status"),
    last_error=sa.bindparam("_error"), last_response=sa.bindparam("_response"),
    next_attempt_at=sa.bindparam("_next"), claimed_until=None, claim_token=None))
