"""The daemon: wires storage, inbox, pipeline, delivery, scheduler and server.

Start order: database (migrated) → mappings compiled → connectors built →
inbox writer → pipeline and delivery loops → APScheduler ticks → HTTP.
Stop (SIGTERM) reverses it: refuse new webhooks (503), let in-flight requests
finish and their events commit, finish the pipeline batch and the pushes in
flight, then close — exit 0 with nothing half-done.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import resource
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from hub import backlog, samples, schema_version, systemd
from hub.callbacks import CallbackSource
from hub.checkpoint import SAFETY_NET_PAGES, SQLITE_AUTOCHECKPOINT, Checkpointer
from hub.circuit import CircuitBreaker
from hub.config import HubConfig
from hub.delivery import ActiveDestination, Deliverer
from hub.errors import ConfigError, MappingError, Problem
from hub.inbox import InboxWriter
from hub.interfaces import WebhookSource
from hub.limits import ByteBudget
from hub.listener import ConnectionLimit, listen
from hub.mapping import InboundMapping, MappingSet
from hub.metrics import Metrics, children
from hub.pii import PiiCipher
from hub.pipeline import DestinationRuntime, Pipeline, SourceRuntime
from hub.polling import LEASE_SECONDS, PollRunner, process_owner
from hub.processes import ALL, describe
from hub.quota import TokenBucket
from hub.records import utcnow
from hub.registry import Registry
from hub.retry import RetryPolicy
from hub.server import build_app
from hub.storage import UNAVAILABLE, Database
from hub.supervisor import Supervisor, Worker, wait_at_most
from hub.wake import WakeListener, WakeSender

log = structlog.get_logger("hub.daemon")


def compile_mappings(cfg: HubConfig, registry: Registry) -> tuple[MappingSet, list[Problem]]:
    """Compile every mapping the config names; collect every problem.

    Kinds this build cannot run yet are skipped: their mappings arrive with them.
    """
    mappings = MappingSet(cfg.mappings_dir)
    problems: list[Problem] = []
    groups: list[tuple[str, list[Any], str, dict[str, Any]]] = [
        ("sources", list(cfg.sources), "inbound", dict(registry.sources)),
        ("destinations", list(cfg.destinations), "outbound", dict(registry.destinations))]
    for where, items, want, kinds in groups:
        for i, item in enumerate(items):
            kind = kinds.get(item.kind)
            if kind is None or not kind.available:
                continue
            try:
                m = mappings.get(item.mapping_name)
            except MappingError as err:
                problems.extend(err.problems)
                continue
            got = "inbound" if isinstance(m, InboundMapping) else "outbound"
            if got != want:
                problems.append(Problem(f"{where}[{i}].mapping",
                                        f"mapping {item.mapping_name!r} is {got}, expected {want}"))
    for i, d in enumerate(cfg.destinations):
        if d.callback_secret is None or not d.enabled:
            continue
        try:
            m = mappings.get(d.callback_mapping_name)
        except MappingError as err:
            problems.extend(err.problems)
            continue
        if not isinstance(m, InboundMapping):
            problems.append(Problem(f"destinations[{i}].callback_mapping",
                                    f"mapping {d.callback_mapping_name!r} is outbound, expected inbound"))
    return mappings, problems


ACCEPTED_GRACE = 0.5  # seconds a stopping process still serves what it had just accepted


def build_runtimes(cfg: HubConfig, registry: Registry) -> tuple[dict[str, SourceRuntime],
                                                                dict[str, DestinationRuntime]]:
    """Every enabled source and destination with its compiled mapping (MappingError
    naming every problem): what the daemon runs and what ``hub replay`` redoes."""
    mappings, problems = compile_mappings(cfg, registry)
    if problems:
        raise MappingError(problems)
    sources = {s.id: SourceRuntime(s, mappings.inbound(s.mapping_name)) for s in cfg.sources if s.enabled}
    for d in cfg.destinations:  # a destination that reports back is a source too (hub.callbacks)
        if d.enabled and d.callback_secret is not None:
            cb = CallbackSource(d)
            sources[cb.config.id] = SourceRuntime(cb.config, mappings.inbound(d.callback_mapping_name))
    dests = {d.id: DestinationRuntime(d, mappings.outbound(d.mapping_name))
             for d in cfg.destinations if d.enabled}
    return sources, dests


# Collections after this many container allocations (less frees) rather than
# Python's 700: every event and push allocates hundreds of objects that live
# for a few milliseconds, and at 700 the young generation was collected
# thousands of times a second, 5-10 % of a hub process's CPU (measured with
# gc.callbacks under bench/e2e.py). A collection still runs every few
# thousand requests; the older generations' ratios are Python's own.
GC_THRESHOLD = (50_000, 10, 10)


def settle_heap() -> None:
    """Move everything built at start-up out of the collector's way (a long-lived
    server otherwise re-scans it on every full collection) and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


class Hub:
    """One hub process: all of it, or some of its roles (see :mod:`hub.processes`)."""

    def __init__(self, config: HubConfig, registry: Registry, roles: frozenset[str] = ALL):
        self.config = config
        self.registry = registry
        self.roles = roles
        self.metrics = Metrics()
        self._deliveries = children(self.metrics.deliveries)
        self._delivery_seconds = children(self.metrics.delivery_seconds)
        self._degraded = children(self.metrics.destination_degraded)
        self.db = Database(config.storage.url, sqlite_synchronous=config.storage.sqlite_synchronous,
                           busy_timeout=config.storage.sqlite_busy_timeout,
                           sqlite_cache_mb=config.storage.sqlite_cache_mb,
                           sqlite_autocheckpoint=SAFETY_NET_PAGES if config.storage.sqlite_checkpoint_every
                           else SQLITE_AUTOCHECKPOINT)
        self.cipher = PiiCipher.from_config(config.security)
        self.draining = False
        self.webhook_sources: dict[str, tuple[WebhookSource, InboundMapping]] = {}
        self.pollers: dict[str, PollRunner] = {}
        self.owner = process_owner()
        self.supervisor = Supervisor(stall_after=config.supervisor.stall_after,
                                     max_backoff=config.supervisor.max_backoff,
                                     on_restart=lambda name: self._restarts(name).inc())
        self._restarts = children(self.metrics.worker_restarts)
        self._gauges_beat: Callable[[], None] = lambda: None
        self.intake_budget = ByteBudget(config.server.max_pending_bytes)
        m = self.metrics
        m.intake_bytes.set_function(lambda: self.intake_budget.in_use)
        m.workers_stalled.set_function(lambda: len(self.supervisor.stalled()))
        self._stopping = asyncio.Event()
        self._wake_pipeline = asyncio.Event()
        self._wake_pipeline_elsewhere: Callable[[], None] = lambda: None
        self._wake_delivery_elsewhere: Callable[[], None] = lambda: None
        self._wake_listeners: list[WakeListener] = []
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        refused = self.metrics.connections_refused
        self.connections = ConnectionLimit(config.server.max_connections, on_refused=refused.inc)
        self.metrics.connections_open.set_function(lambda: self.connections.open)
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self._gauges_lock = asyncio.Lock()  # stop() waits for a refresh in flight
        self.port: int | None = None
        self.checkpointer: Checkpointer | None = None

    # ------------------------------------------------------------ wiring

    def _build(self) -> None:
        unavailable = self.registry.unavailable(self.config)
        if unavailable:
            raise ConfigError([Problem("", f"{u}; disable it (enabled: false) or remove it")
                               for u in unavailable])
        sources, dests = build_runtimes(self.config, self.registry)
        for d in self.config.destinations:
            if d.enabled and d.callback_secret is not None:
                cb = CallbackSource(d)
                self.webhook_sources[cb.config.id] = (cb, sources[cb.config.id].mapping)
        for s in self.config.sources:
            if not s.enabled:
                continue
            rt = sources[s.id]
            kind = self.registry.sources[s.kind]
            if kind.webhook is not None:
                self.webhook_sources[s.id] = (kind.webhook(s), rt.mapping)
            if kind.poller is not None:
                self.pollers[s.id] = PollRunner(self.db, self.cipher, kind.poller(s), rt.mapping,
                                                lease_seconds=float(getattr(s, "lease", LEASE_SECONDS)),
                                                owner=self.owner, metrics=self.metrics,
                                                on_stored=lambda _n: self.wake_pipeline())
        active: dict[str, ActiveDestination] = {}
        for d in self.config.destinations:
            if not d.enabled:
                continue
            factory = self.registry.destinations[d.kind].factory
            assert factory is not None
            active[d.id] = ActiveDestination(
                factory(d), RetryPolicy(self.config.retry_for(d)), limit=d.max_in_flight, timeout=d.timeout,
                slow_after=d.slow_after,
                circuit=CircuitBreaker(d.circuit.failures, d.circuit.cooldown, d.circuit.max_cooldown),
                bucket=TokenBucket(d.rate, max(1, int(d.rate))) if d.rate else None)
        st = self.config.storage
        self.inbox = InboxWriter(self.db, batch_max=st.batch_max, batch_delay=st.batch_delay,
                                 on_commit=self._on_commit)
        self.metrics.inbox_queue.set_function(lambda: self.inbox.queued)
        settled = children(self.metrics.pipeline)
        self.pipeline = Pipeline(self.db, self.cipher, sources, dests, list(self.config.sync),
                                 batch=self.config.pipeline.batch,
                                 on_result=lambda s, r: settled(s, r).inc())
        self.deliverer = Deliverer(self.db, active, batch=self.config.delivery.batch,
                                   lease=self.config.delivery.lease, on_result=self._on_delivery)

    def _on_commit(self, rows: int, seconds: float) -> None:
        self.metrics.commit_seconds.observe(seconds)
        self.metrics.commit_rows.observe(rows)
        if rows:
            # Once a group commit, not once a request: across processes a wake-up
            # is a datagram, a system call on each side (7 % of intake's CPU when
            # every request sent its own).
            self.wake_pipeline()

    def _on_delivery(self, dest: str, result: str, seconds: float) -> None:
        self._deliveries(dest, result).inc()
        self._delivery_seconds(dest).observe(seconds)
        health = self.deliverer.destinations[dest].health
        self._degraded(dest).set(1 if health.degraded else 0)

    def wake_pipeline(self) -> None:
        """New raw events: the pipeline here, or the process that holds it (:mod:`hub.wake`)."""
        self._wake_pipeline.set()
        self._wake_pipeline_elsewhere()

    def _pushes_ready(self) -> None:
        """A batch committed, perhaps with pushes: delivery here, or where it runs."""
        self.deliverer.wake.set()
        self._wake_delivery_elsewhere()

    # ------------------------------------------------------------ lifecycle

    async def start(self, *, serve: bool = True) -> None:
        self._build()
        if self.config.storage.auto_migrate and not await schema_version.is_current(self.db):
            await self.db.migrate()
        roles = self.roles
        if "processing" in roles and await self.db.autovacuum_off():
            log.warning("postgresql autovacuum is off: nothing analyzes the hub's tables, and its batch "
                        "lookups slow down as they grow; turn it on, or ANALYZE them regularly (README)")
        sup = self.supervisor
        deliverer = self.deliverer
        # Roles split across processes (SQLite) wake each other; in one process, events do.
        if "processing" not in roles:
            self._wake_pipeline_elsewhere = WakeSender("processing")
        if "delivery" not in roles:
            self._wake_delivery_elsewhere = WakeSender("delivery")
        if "processing" in roles and "intake" not in roles:
            self._wake_listeners.append(WakeListener("processing", self._wake_pipeline.set))
        if "delivery" in roles and "processing" not in roles:
            self._wake_listeners.append(WakeListener("delivery", deliverer.wake.set))
        for listener in self._wake_listeners:
            await listener.start()
        if "delivery" in roles:
            if self.db.is_sqlite:
                await deliverer.release_claims()  # the only delivering process on this file
            await deliverer.start()
            # Without processing here the pipeline's process wakes delivery (hub.wake, a
            # hint): it also looks for due pushes itself, every delivery.poll.
            poll = None if "processing" in roles else self.config.delivery.poll
            claim = ((lambda: deliverer.claim_once()) if poll is None
                     else _when(deliverer.has_due, lambda: deliverer.claim_once()))
            sup.spawn("delivery", lambda w: self._loop(w, claim, deliverer.wake, idle=poll))
            sup.spawn("delivery-recorder", lambda w: self._loop(w, lambda: deliverer.record_once(),
                                                                deliverer.completed))
        if "intake" in roles:
            sup.spawn("inbox-writer", lambda w: self.inbox.run(w.beat, sup.beat_every))
        path = self.db.sqlite_path
        if "processing" in roles and path is not None and self.config.storage.sqlite_checkpoint_every:
            # One process checkpoints the file: the one that writes the most (hub.checkpoint).
            ckpt = self.checkpointer = Checkpointer(path, self.config.storage.sqlite_checkpoint_every,
                                                    self.config.storage.sqlite_synchronous)
            sup.spawn("checkpointer", lambda w: ckpt.run(w.beat))
        if "processing" in roles and self.config.pipeline.enabled:
            # Without intake here intake's process wakes the pipeline (hub.wake, a hint):
            # it also looks for work itself, every pipeline.poll.
            idle = None if "intake" in roles else self.config.pipeline.poll
            step = ((lambda: self.pipeline.run_once()) if idle is None
                    else _when(self.pipeline.has_pending, lambda: self.pipeline.run_once()))
            cfg = self.config.pipeline
            sup.spawn("pipeline", lambda w: self._loop(w, step, self._wake_pipeline, after=self._pushes_ready,
                                                       idle=idle, gather=(cfg.gather, cfg.batch)))
        if "intake" in roles:
            for runner in self.pollers.values():
                for name, work in runner.workers():
                    sup.spawn(name, work)
        self._gauges_beat = sup.watch("gauges")
        # Jobs are coroutines so they run on the event loop: APScheduler runs
        # plain functions in a thread, where neither asyncio.Event.set() is safe
        # nor a watchdog ping proves anything about the loop.
        if "processing" in roles:
            self.scheduler.add_job(self._tick, "interval", args=[self._wake_pipeline],
                                   seconds=self.config.pipeline.tick, id="pipeline-tick", coalesce=True,
                                   max_instances=1)
        if "delivery" in roles:
            self.scheduler.add_job(self._tick, "interval", args=[self.deliverer.wake],
                                   seconds=self.config.delivery.tick, id="delivery-tick", coalesce=True,
                                   max_instances=1)
        if "intake" in roles:
            self.scheduler.add_job(self.refresh_gauges, "interval", seconds=sup.beat_every, id="gauges",
                                   coalesce=True, max_instances=1)
        interval = systemd.watchdog_interval()
        if interval:
            self.scheduler.add_job(self.watchdog, "interval", seconds=interval, id="watchdog",
                                   coalesce=True, max_instances=1)
        self.scheduler.start()
        if serve and "intake" in roles:
            srv = self.config.server
            _allow_open_files(srv.max_connections + 256)
            # aiohttp's keep-alive timer runs from the moment a connection opens:
            # it closes a client that sends no whole request head in time.
            self._runner = web.AppRunner(build_app(self), access_log=None, shutdown_timeout=10,
                                         keepalive_timeout=srv.header_timeout)
            await self._runner.setup()
            assert self._runner.server is not None  # set up: it makes the connections' handlers
            settle_heap()  # before listening: the full collection holds the loop
            # Started by `hub run`: every intake process serves the one socket it bound.
            self._listener = await listen(self._runner.server, srv.host, srv.port, self.connections,
                                          inherited=self.listen_fd)
            self.port = self._listener.sockets[0].getsockname()[1]
            if self.listen_fd is not None and self.port != srv.port and srv.port != 0:
                log.warning("server.listen changed: it takes effect when the hub is restarted",
                            listening=self.port, configured=srv.port)
        if self._listener is None:
            settle_heap()
        log.info("hub started", roles=describe(roles), listen=f"{self.config.server.host}:{self.port}",
                 sources=sorted(self.pipeline.sources), polling=sorted(self.pollers), destinations=sorted(self.deliverer.destinations),
                 storage=self.db.dialect)

    async def stop(self) -> None:
        log.info("hub stopping: draining")
        # No new connections first: one accepted until now is served as usual (during a
        # reload its client meant the hub, and the new process would have served it).
        if self._listener is not None:
            self._listener.close()
            if self.connections.open:
                # A connection accepted just now may not have sent its request yet:
                # aiohttp would close it as idle. Let such requests arrive and be served.
                await asyncio.sleep(ACCEPTED_GRACE)
        self.draining = True
        sup = self.supervisor
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self._runner is not None:
            await self._runner.cleanup()  # waits for in-flight requests, closes the rest
            self._runner = None
        if self._listener is not None:
            await self._listener.wait_closed()
            self._listener = None
        for runner in self.pollers.values():
            runner.request_stop()
        await sup.stop(sup.names("poll-"), grace=5)
        for runner in self.pollers.values():
            await runner.close()
        for connector, _ in self.webhook_sources.values():
            aclose = getattr(connector, "aclose", None)  # e.g. WeChat's API client
            if aclose is not None:
                await aclose()
        self.inbox.closing()
        await sup.stop(["inbox-writer"], grace=self.config.server.inbox_timeout)
        await self.inbox.close()
        self._stopping.set()
        self._wake_pipeline.set()
        self.deliverer.wake.set()
        self.deliverer.completed.set()
        await sup.stop(["pipeline", "delivery"], grace=30)
        if self.checkpointer is not None:
            self.checkpointer.stop()
            await sup.stop(["checkpointer"], grace=30)
            await self.checkpointer.close()
        for listener in self._wake_listeners:
            listener.close()
        for sender in (self._wake_pipeline_elsewhere, self._wake_delivery_elsewhere):
            if isinstance(sender, WakeSender):
                sender.close()
        # Pushes in flight finish (each is cut off before its lease ends) and are recorded.
        await self.deliverer.drain(grace=self.config.delivery.lease)
        await sup.stop(["delivery-recorder"], grace=5)
        await self.deliverer.close()
        async with self._gauges_lock:
            await self.db.close()
        log.info("hub stopped")

    listen_fd: int | None = None  # the listening socket `hub run` bound, inherited (hub.listener)

    @staticmethod
    async def _tick(wake: asyncio.Event) -> None:
        wake.set()

    async def _loop(self, worker: Worker, step: Callable[[], Awaitable[int]], wake: asyncio.Event,
                    after: Callable[[], None] | None = None, idle: float | None = None,
                    gather: tuple[float, int] = (0.0, 0)) -> None:
        """Run ``step`` until it finds nothing, then sleep until woken (or a few seconds).
        With ``gather`` (seconds, full): after a step that did less than ``full``,
        wait that long before the next, so that more work is there to share its cost.

        An error ends the loop: the supervisor logs it and starts it again after a
        backoff (storage down, or a bug), and /readyz shows it meanwhile."""
        pause, full = gather
        while not self._stopping.is_set():
            wake.clear()
            done = await step()
            worker.beat()
            if done:
                if after is not None:
                    after()
                if pause and done < full:
                    await asyncio.sleep(pause)
                continue
            await wait_at_most(wake, idle or self.supervisor.beat_every)
            worker.beat()

    async def watchdog(self) -> None:
        """The systemd watchdog ping: sent from the event loop (so a blocked loop
        sends none), and only while every worker is making progress."""
        stalled = self.supervisor.stalled()
        if stalled:
            log.error("watchdog ping withheld: workers stalled", stalled=stalled)
            systemd.notify("STATUS=stalled: " + "; ".join(stalled))
            return
        systemd.notify("WATCHDOG=1")

    # ------------------------------------------------------------ health

    async def readiness_problems(self) -> list[str]:
        problems = []
        if self.draining:
            problems.append("shutting down")
        if not await self.db.ping():
            problems.append("database unreachable")
        problems.extend(self.supervisor.problems())
        return problems

    async def refresh_gauges(self) -> None:
        if self.draining:
            return
        async with self._gauges_lock:
            try:
                await self._refresh_gauges()
            except asyncio.CancelledError:
                # APScheduler cancels a running job when it shuts down (we are
                # stopping); the gauges simply keep their last values.
                return
        self._gauges_beat()

    async def _refresh_gauges(self) -> None:
        try:
            b = await backlog.count(self.db, sorted(self.deliverer.destinations))
        except UNAVAILABLE:
            return
        for state, n in b.inbox.items():
            self.metrics.inbox_backlog.labels(state).set(n)
        for dest, states in b.outbox.items():
            for state, n in states.items():
                self.metrics.outbox_backlog.labels(dest, state).set(n)
        with contextlib.suppress(*UNAVAILABLE):
            await samples.record(self.db, b, utcnow())


def _when(has_work: Callable[[], Awaitable[bool]], step: Callable[[], Awaitable[int]]) -> Callable[[], Awaitable[int]]:
    """``step`` only when a read says there is work: a worker that polls (no
    request or batch wakes it) would otherwise open a write transaction — on
    SQLite, take the other process's write lock — every time it looks. Right
    after a step that found work there is likely more: no read first."""
    busy = False

    async def run() -> int:
        nonlocal busy
        done = await step() if busy or await has_work() else 0
        busy = done > 0
        return done
    return run


def _allow_open_files(needed: int) -> None:
    """Raise the soft open-files limit toward the hard one: every connection is a file."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def run_until_signalled(hub: Hub, ready: Callable[[Hub], Any] | None = None,
                              reload_ok: Callable[[], bool] | None = None) -> bool:
    """Start, notify systemd, wait for SIGTERM/SIGINT, drain and stop.

    SIGHUP: with ``reload_ok`` (a single hub process: nobody else to reload it),
    when it says the new config passes, tell systemd RELOADING, drain and stop
    like SIGTERM and return True — the caller starts afresh on the new file. A
    config that does not pass leaves the hub running. Without it (a process the
    parent started: the parent reloads) SIGHUP is ignored."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloading = False
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def hup() -> None:
        nonlocal reloading
        if reload_ok is None or reloading or stop.is_set():
            return
        if reload_ok():
            reloading = True
            systemd.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
            stop.set()
        else:
            systemd.notify("STATUS=reload refused: the config has problems (see the log)")

    loop.add_signal_handler(signal.SIGHUP, hup)
    await hub.start()
    systemd.notify("READY=1")
    if ready is not None:
        ready(hub)
    await stop.wait()
    if not reloading:
        systemd.notify("STOPPING=1")
    await hub.stop()
    return reloading
