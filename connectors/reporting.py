"""What the WMS and finance simulators share: a system that takes the hub's
signed pushes and, some time later, reports back on them.

It verifies each push's Standard Webhooks signature, dedupes by
``webhook-id`` as a real receiver must (a retried push changes nothing),
records what it acted on in arrival order, can have a bad day
(:class:`connectors.faults.Faults`), and for a push its ``report`` function
answers, POSTs a signed callback to the hub's ``/callbacks/{destination}``
after ``delay`` seconds — again until the hub acknowledges it, as a real
system retries its own notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from connectors.faults import Faults
from connectors.simserver import serve
from hub import standard_webhooks
from hub.errors import VerificationError

Report = Callable[[dict[str, Any]], dict[str, Any] | None]  # a push's body → the callback's body, or None


@dataclass
class ReportingReceiver:
    destination_id: str
    report: Report
    secret: str = field(default_factory=standard_webhooks.new_secret)           # verifies pushes
    callback_secret: str = field(default_factory=standard_webhooks.new_secret)  # signs reports
    hub_url: str = ""                       # where the hub listens (set once it has started)
    delay: float = 0.2                      # seconds between a push and its report
    faults: Faults = field(default_factory=Faults)
    say: Callable[[str], None] | None = None   # the demo prints what it does
    acted: list[dict[str, Any]] = field(default_factory=list)   # first copy of each push, in order
    seen: dict[str, int] = field(default_factory=dict)           # webhook-id → copies received
    reports: list[dict[str, Any]] = field(default_factory=list)  # callbacks the hub acknowledged
    port: int = 0
    _runner: web.AppRunner | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _sent: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/push"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/push", self._push)
        self._runner, self.port = await serve(app)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._runner is not None:
            await self._runner.cleanup()

    def config(self, **extra: Any) -> dict[str, Any]:
        """This system as a destination entry of the hub's config."""
        return {"id": self.destination_id, "kind": self.destination_id, "url": self.url, "secret": self.secret,
                "callback_secret": self.callback_secret} | extra

    async def _push(self, request: web.Request) -> web.Response:
        bad_day = await self.faults.before()
        if bad_day is not None:
            return bad_day
        body = await request.read()
        try:
            msg_id = standard_webhooks.verify([standard_webhooks.decode_secret(self.secret)],
                                              {k.lower(): v for k, v in request.headers.items()}, body)
        except VerificationError as err:
            return web.json_response({"error": str(err)}, status=401)
        self.seen[msg_id] = self.seen.get(msg_id, 0) + 1
        if self.seen[msg_id] > 1:
            return web.json_response({"ok": True, "duplicate": True})
        push = orjson.loads(body)
        self.acted.append(push)
        answer = self.report(push)
        if self.say is not None:
            d = push.get("data") or {}
            self.say(f"[green]← {self.destination_id}[/] {push.get('type')} ticket #{d.get('ticket_id')} "
                     f"{d.get('after_sale_no')} ({d.get('status')})"
                     + (f" [dim]→ reports {answer.get('type')} in {self.delay:.1f} s[/]" if answer else ""))
        if answer is not None:
            task = asyncio.create_task(self._report(answer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response({"ok": True})

    async def _report(self, answer: dict[str, Any]) -> None:
        await asyncio.sleep(self.delay)
        self._sent += 1
        msg_id = f"cb_{self.destination_id}_{self._sent}"
        body = orjson.dumps({"timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **answer})
        key = standard_webhooks.decode_secret(self.callback_secret)
        pause = 0.2
        async with aiohttp.ClientSession() as http:
            while True:
                headers = {**standard_webhooks.headers_for(key, msg_id, body), "content-type": "application/json"}
                try:
                    async with http.post(f"{self.hub_url}/callbacks/{self.destination_id}", data=body,
                                         headers=headers) as r:
                        if r.status < 300:
                            self.reports.append(answer)
                            if self.say is not None:
                                self.say(f"[magenta]→ {self.destination_id} callback[/] {answer.get('type')} "
                                         f"ticket #{(answer.get('data') or {}).get('ticket_id')} "
                                         f"[dim]→ HTTP {r.status}[/]")
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)


class ReportingDemo:
    """``hub demo`` part for a system that reports back (the WMS, finance)."""

    def __init__(self, make: Callable[..., ReportingReceiver], statuses: tuple[str, ...]):
        self._make = make
        self.statuses = statuses  # the ticket statuses this system is told about
        self.sim: ReportingReceiver | None = None

    async def start(self, ctx: Any) -> dict[str, list[dict[str, Any]]]:
        self.sim = self._make(say=ctx.say, delay=0.5)
        await self.sim.start()
        return {"destinations": [self.sim.config()],
                "sync": [{"on": ["ticket.created", "ticket.status_changed"], "status": list(self.statuses),
                          "to": self.sim.destination_id}]}

    async def drive(self, ctx: Any) -> None:
        assert self.sim is not None
        self.sim.hub_url = ctx.hub_url  # known once the hub listens

    async def stop(self) -> None:
        if self.sim is not None:
            await self.sim.stop()
