"""What the platform simulators share: a local aiohttp server, the platform's
call quota as the platform enforces it, and a switch to refuse credentials.

Each simulator (``connectors/<channel>/simulator.py``) adds its own routes,
signing rules, error bodies and store; this is only the plumbing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from aiohttp import web

from hub.records import utcnow


@dataclass
class PlatformQuota:
    """Calls allowed per second per app, counted the way a gateway counts: a
    token bucket; ``inject(n)`` makes the next ``n`` calls fail as over-quota."""

    calls_per_second: float = 1000.0
    burst: int = 1000
    injected: int = 0
    refused: int = 0
    _tokens: float = field(default=0.0, init=False)
    _updated: float = field(default_factory=time.monotonic, init=False)

    def __post_init__(self) -> None:
        self._tokens = float(self.burst)

    def inject(self, calls: int) -> None:
        self.injected += calls

    def take(self) -> float | None:
        """None if the call may go; else how many seconds the caller is banned for."""
        if self.injected > 0:
            self.injected -= 1
            self.refused += 1
            return 1.0
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.calls_per_second)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        self.refused += 1
        return max(1.0, (1 - self._tokens) / self.calls_per_second)


async def serve(app: web.Application, port: int = 0) -> tuple[web.AppRunner, int]:
    """Run ``app`` on 127.0.0.1 (``port`` 0: any free one); the runner and the port it got."""
    # A simulator told to hang holds its handlers: stopping does not wait for them.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@dataclass
class SimServer:
    """Start/stop a simulator's aiohttp app on a local port; hold what every
    platform simulator has: its clock, its quota, and churn — records that move
    while a poller pages (``churn_per_list_call`` moves on each list call, for
    ``churn_budget`` calls; None = forever)."""

    quota: PlatformQuota = field(default_factory=PlatformQuota)
    clock: Callable[[], datetime] = utcnow
    churn_per_list_call: int = 0
    churn_budget: int | None = None
    port: int = field(default=0, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)

    # A gateway simulator (one URL, the method in a parameter, as TOP and JOS
    # have) names its path and implements handle(); others build their own app.
    gateway_path: ClassVar[str] = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.gateway_path}"

    def build_app(self) -> web.Application:
        if not self.gateway_path:
            raise NotImplementedError
        app = web.Application()
        app.router.add_route("*", self.gateway_path, self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    # A simulator whose records move says where they are and how they move.
    status_field: ClassVar[str] = "status"
    terminal: ClassVar[tuple[Any, ...]] = ()
    rng: random.Random = field(default_factory=random.Random, init=False, repr=False)

    def records(self) -> dict[Any, dict[str, Any]]:
        return {}

    def next_status(self, record: dict[str, Any]) -> Any:
        """Where ``record`` goes next (a random branch where the platform has several), or None."""
        return None

    def move(self, record: dict[str, Any], status: Any) -> None:
        raise NotImplementedError

    def advance(self, count: int = 1) -> list[tuple[Any, Any, Any]]:
        """Move up to ``count`` random open records one step along; the moves made
        as (id, from, to)."""
        store = self.records()
        open_ids = [k for k, v in store.items() if v[self.status_field] not in self.terminal]
        moves = []
        for rid in self.rng.sample(open_ids, min(count, len(open_ids))):
            before, after = store[rid][self.status_field], self.next_status(store[rid])
            if after is not None:
                self.move(store[rid], after)
                moves.append((rid, before, after))
        return moves

    async def gateway_params(self, request: web.Request) -> dict[str, str]:
        """A gateway call's parameters, from the query and a form body alike."""
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        return params

    def churn(self) -> None:
        if self.churn_per_list_call and (self.churn_budget is None or self.churn_budget > 0):
            self.advance(self.churn_per_list_call)
            if self.churn_budget is not None:
                self.churn_budget -= 1

    async def start(self, port: int = 0) -> None:
        self._runner, self.port = await serve(self.build_app(), port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
