"""Prometheus metrics, one registry per hub instance (tests run many)."""

from __future__ import annotations

import platform
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)


def children(metric: Any) -> Callable[..., Any]:
    """``metric.labels(*values)``, remembered: labels() validates and locks on
    every call (~1.6 µs), too slow for a per-request or per-push counter."""
    known: dict[tuple[str, ...], Any] = {}

    def child(*values: str) -> Any:
        found = known.get(values)
        if found is None:
            found = known[values] = metric.labels(*values)
        return found

    return child


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_* (CPU, RSS, open fds), python_gc_*, python_info: as every Python exporter has them.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        build = Info("hub_build", "The running hub's version and Python.", registry=self.registry)
        build.info({"version": _version(), "python": platform.python_version()})
        r = self.registry
        self.ingest = Counter("hub_ingest_requests_total", "Webhook requests by source and result",
                              ["source", "result"], registry=r)
        self.ingest_events = Counter("hub_ingest_events_total", "Raw events stored (new) by source",
                                     ["source"], registry=r)
        self.commit_seconds = Histogram(
            "hub_inbox_commit_seconds", "Group-commit transaction time", registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0))
        self.commit_rows = Histogram("hub_inbox_commit_rows", "Rows per group commit", registry=r,
                                     buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
        self.pipeline = Counter("hub_pipeline_events_total", "Raw events settled by source and result",
                                ["source", "result"], registry=r)
        self.deliveries = Counter("hub_deliveries_total", "Push attempts by destination and result",
                                  ["destination", "result"], registry=r)
        self.delivery_seconds = Histogram("hub_delivery_seconds", "Push attempt duration",
                                          ["destination"], registry=r)
        self.inbox_backlog = Gauge("hub_inbox_events", "Raw events by state", ["state"], registry=r)
        self.outbox_backlog = Gauge(
            "hub_outbox_pushes", "Outbox rows by destination and state (pending, dead, and held: "
            "pending behind a dead letter of their ticket)", ["destination", "state"], registry=r)
        self.destination_degraded = Gauge(
            "hub_destination_degraded", "1 when the destination's recent pushes keep failing",
            ["destination"], registry=r)
        self.source_healthy = Gauge("hub_source_healthy", "1 while the polled source's calls succeed",
                                    ["source"], registry=r)
        self.source_circuit_open = Gauge("hub_source_circuit_open",
                                         "1 while the source's circuit breaker stops calls", ["source"],
                                         registry=r)
        self.source_lag = Gauge("hub_source_lag_seconds", "How far behind now the source has been read",
                                ["source"], registry=r)
        self.source_last_success = Gauge("hub_source_last_success_timestamp_seconds",
                                         "When the source's last poll succeeded", ["source"], registry=r)
        self.source_errors = Counter("hub_source_errors_total",
                                     "Platform call failures by source and kind (throttled, auth, failure)",
                                     ["source", "kind"], registry=r)

        self.worker_restarts = Counter("hub_worker_restarts_total",
                                       "Background workers restarted after an error", ["worker"], registry=r)
        self.inbox_queue = Gauge("hub_inbox_queue_events", "Events waiting for their group commit",
                                 registry=r)
        self.intake_bytes = Gauge("hub_intake_pending_bytes",
                                  "Bytes of requests held while they wait for their commit", registry=r)
        self.connections_open = Gauge("hub_connections_open", "HTTP connections open", registry=r)
        self.connections_refused = Counter("hub_connections_refused_total",
                                           "Connections answered 503 at server.max_connections", registry=r)
        self.workers_stalled = Gauge("hub_workers_stalled", "Background workers making no progress",
                                     registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _version() -> str:
    try:
        return version("aftersales-hub")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"
