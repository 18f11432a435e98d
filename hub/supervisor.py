"""Every background task of the hub, watched: restarted when it dies, reported when it stalls.

A *worker* is a coroutine that runs until the hub stops (the inbox writer,
the pipeline, delivery, each poll stream). It is handed its :class:`Worker`
and calls ``beat()`` whenever it has made progress or has finished waiting;
no worker waits longer than a few seconds without beating, so silence means
stuck, not idle — except a wait it announces with ``excuse(seconds)`` (a
poller waiting out a platform's ban). Work driven from elsewhere (the
scheduler's gauge refresh) gets a beat of its own with :meth:`Supervisor.watch`.

- A worker that raises is logged (the traceback's messages scrubbed) and
  started again after a backoff (0.5 s doubling to ``max_backoff``); its
  first beat afterwards resets the backoff. While it keeps failing, /readyz
  says so.
- A worker (or watch) whose last beat is older than its ``stall_after`` is
  *stalled*: /readyz answers 503 with the reason, and :meth:`stalled` is what
  keeps the systemd watchdog from being pinged, so a process stuck for good
  is restarted by systemd (``WatchdogSec``) instead of sitting there ready.
  A stalled coroutine is not restarted: what holds it (a database call in a
  worker thread) cannot be cancelled from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from hub.redaction import error_summary

log = structlog.get_logger("hub.supervisor")

Beat = Callable[[], None]


@dataclass
class Worker:
    """One worker or watch, as the supervisor sees it (and as the worker reports to it)."""

    name: str
    stall_after: float
    last_beat: float
    run: Callable[[Worker], Awaitable[None]] | None = None
    task: asyncio.Task[None] | None = None
    failures_in_a_row: int = 0
    restarts: int = 0
    last_error: str | None = None
    stopping: bool = False
    ended: bool = False
    excused_until: float = 0.0
    _clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def beat(self) -> None:
        """Progress: the worker did something, or finished a wait."""
        self.last_beat = self._clock()
        self.failures_in_a_row = 0

    def excuse(self, seconds: float) -> None:
        """A wait of ``seconds`` that is not a stall (the caller knows why it waits)."""
        self.beat()
        self.excused_until = max(self.excused_until, self.last_beat + seconds)

    def stalled_for(self, now: float) -> float | None:
        quiet = now - self.last_beat
        if self.stopping or self.ended or quiet <= self.stall_after or now < self.excused_until:
            return None
        return quiet


WorkerFn = Callable[[Worker], Awaitable[None]]


async def wait_at_most(event: asyncio.Event, seconds: float) -> None:
    """How a worker waits: until ``event`` is set or ``seconds`` pass (the timer
    sets the event). asyncio.wait_for would make a task on every wait, and
    workers wait after every step."""
    handle = asyncio.get_running_loop().call_later(seconds, event.set)
    try:
        await event.wait()
    finally:
        handle.cancel()


class Supervisor:
    def __init__(self, *, stall_after: float = 60.0, max_backoff: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_restart: Callable[[str], None] | None = None):
        self.stall_after = stall_after
        self.max_backoff = max_backoff
        self.clock = clock
        self.on_restart = on_restart  # (worker name) → metrics
        self.workers: dict[str, Worker] = {}

    @property
    def beat_every(self) -> float:
        """How long an idle worker may wait before it beats (well inside ``stall_after``)."""
        return min(5.0, self.stall_after / 4)

    def spawn(self, name: str, run: WorkerFn, *, stall_after: float | None = None) -> Worker:
        """Run ``run(worker)`` as a supervised task."""
        w = Worker(name, stall_after or self.stall_after, self.clock(), run=run, _clock=self.clock)
        self.workers[name] = w
        w.task = asyncio.create_task(self._keep(w), name=name)
        return w

    def watch(self, name: str, *, stall_after: float | None = None) -> Beat:
        """A beat for work that runs elsewhere; silent past ``stall_after`` means stalled."""
        w = Worker(name, stall_after or self.stall_after, self.clock(), _clock=self.clock)
        self.workers[name] = w
        return w.beat

    async def _keep(self, w: Worker) -> None:
        assert w.run is not None
        backoff = 0.5
        while not w.stopping:
            try:
                await w.run(w)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - a worker must not die silently
                w.failures_in_a_row += 1
                w.restarts += 1
                w.last_error = error_summary(err)
                # Failing fast is not being stuck: the worker shows as failing, not stalled.
                w.last_beat = self.clock()
                w.excused_until = w.last_beat + backoff
                if w.failures_in_a_row == 1:
                    backoff = 0.5
                log.error("worker failed; restarting", worker=w.name, attempt=w.failures_in_a_row,
                          retry_in=backoff, exc_info=err)
                if self.on_restart is not None:
                    self.on_restart(w.name)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            w.ended = True  # returned on purpose: the hub is stopping it
            return

    async def stop(self, names: list[str], grace: float) -> None:
        """Let these workers finish (up to ``grace`` seconds), then cancel what is left."""
        tasks = []
        for name in names:
            w = self.workers.get(name)
            if w is None:
                continue
            w.stopping = True
            if w.task is not None:
                tasks.append(w.task)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def names(self, prefix: str) -> list[str]:
        return [n for n in self.workers if n.startswith(prefix)]

    def stalled(self) -> list[str]:
        """Workers silent for longer than they may be: what withholds the watchdog ping."""
        now = self.clock()
        return [f"{w.name} stalled: no progress for {quiet:.0f} s"
                for w in self.workers.values() if (quiet := w.stalled_for(now)) is not None]

    def problems(self) -> list[str]:
        """Everything /readyz reports: stalls, and workers that keep failing."""
        out = self.stalled()
        for w in self.workers.values():
            if w.stopping:
                continue
            if w.task is not None and w.task.done() and not w.ended:
                out.append(f"{w.name} stopped")
            elif w.ended:
                out.append(f"{w.name} ended")
            elif w.failures_in_a_row:
                out.append(f"{w.name} failing: {w.failures_in_a_row} times in a row, last {w.last_error}")
        return out
