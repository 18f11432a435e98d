"""The seams between the core and the connectors: typed requests, events,
pushes, and the Protocols a source or destination implements.

A connector package exposes a :class:`ConnectorSpec` through the
``hub.connectors`` entry-point group; the core only ever sees these types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import aiohttp

from hub.config import DestinationConfig, SourceConfig
from hub.quota import TokenBucket


@dataclass(slots=True)
class InboundRequest:
    """An HTTP request to ``/webhooks/{source_id}``, framework-free."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # case-insensitive names
    body: bytes
    remote: str | None = None


# A header an event may carry (and the inbox keeps): why its connector could not
# read the record (see hub.polling.unreadable); the pipeline quarantines it so.
UNREADABLE = "hub-unreadable"


@dataclass(slots=True)
class InboundEvent:
    """One event found in a verified request, ready for the inbox."""

    body: str | bytes               # stored exactly as received (UTF-8)
    document: Any                   # parsed body, read by the mapping
    headers: dict[str, str] = field(default_factory=dict)  # headers worth keeping


@dataclass(frozen=True)
class Reply:
    """What the platform expects back once its events are durably stored."""

    status: int = 200
    body: bytes = b'{"status":"accepted"}'
    content_type: str = "application/json"


class WebhookSource(Protocol):
    """A source the platform pushes to.

    Optional: ``challenge(request) -> Reply`` answers a platform that checks the
    URL with a GET first (WeChat), and ``receive`` may be a coroutine when it must
    ask the platform for details before the events are worth storing.
    """

    config: SourceConfig

    def receive(self, request: InboundRequest) -> list[InboundEvent]:
        """Verify and split a request; raise an IngressError subclass to refuse it."""
        ...

    def acknowledge(self, stored: int, duplicates: int) -> Reply:
        """The reply once every event is committed (or was already)."""
        ...


@dataclass
class PollBatch:
    """Events one poll step found, and the cursor that is true once they are stored.

    The runner commits ``events`` and ``cursor`` in one transaction, so a
    restart resumes exactly after the last batch on disk. ``after_commit``
    runs once they are (e.g. confirming platform messages, which the platform
    would otherwise redeliver). ``watermark`` is how far the source has now
    been read (a window's end), for the lag the admin sees.
    """

    events: list[InboundEvent]
    cursor: Any
    after_commit: Callable[[], Awaitable[None]] | None = None
    watermark: datetime | None = None


class PollStream(Protocol):
    """One thing a polled source reads on its own cadence (a list window, a message queue)."""

    name: str
    interval: float
    # Whether an operator may read it again from a past time (``hub backfill``):
    # a modified-time list can, a message queue cannot. Its cursor is then
    # ``{"since": ISO time}`` to start from.
    backfill: bool

    def poll(self, cursor: Any) -> AsyncIterator[PollBatch]:
        """Read from ``cursor`` (None the first time) to the end; raise SourceError on failure."""
        ...


class PollingSource(Protocol):
    config: SourceConfig
    quota: TokenBucket  # every call of every stream takes a token

    def streams(self) -> list[PollStream]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Push:
    outbox_id: int
    destination_id: str
    idempotency_key: str
    event_type: str
    payload: bytes
    attempt: int


@dataclass(frozen=True)
class Receipt:
    status: int
    body: str


class Destination(Protocol):
    config: DestinationConfig

    async def deliver(self, push: Push, http: aiohttp.ClientSession) -> Receipt:
        """Send one push; raise Retryable or Permanent on failure. The Deliverer
        cuts the call off at the destination's ``timeout``: no timeout of its own."""
        ...


@dataclass(frozen=True)
class SourceKind:
    kind: str
    config_model: type[SourceConfig] = SourceConfig
    webhook: Callable[[Any], WebhookSource] | None = None
    poller: Callable[[Any], PollingSource] | None = None
    available: bool = True
    summary: str = ""


@dataclass(frozen=True)
class DestinationKind:
    kind: str
    config_model: type[DestinationConfig] = DestinationConfig
    factory: Callable[[Any], Destination] | None = None
    available: bool = True
    summary: str = ""


@dataclass(frozen=True)
class ConnectorSpec:
    """What one connector package plugs in."""

    name: str
    sources: tuple[SourceKind, ...] = ()
    destinations: tuple[DestinationKind, ...] = ()
    demo: Callable[[], DemoPart] | None = None


@dataclass
class DemoContext:
    """What the demo hands each connector's demo part."""

    say: Callable[[str], None]
    requests: int = 8
    hub_url: str = ""


class DemoPart(Protocol):
    """A connector's contribution to ``hub demo``: a simulator to start and drive."""

    async def start(self, ctx: DemoContext) -> dict[str, list[dict[str, Any]]]:
        """Start simulators; return config entries {"sources": [...], "destinations": [...]}
        and, for destinations told only some changes, their {"sync": [...]} rules."""
        ...

    async def drive(self, ctx: DemoContext) -> None:
        """Send traffic at the running hub (sources); destinations may do nothing."""
        ...

    async def stop(self) -> None: ...
