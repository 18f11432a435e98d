"""A local receiver of signed pushes: verifies each Standard Webhooks
signature, dedupes by ``webhook-id`` as a real receiver should, and records
(and optionally prints) what arrived. Used by ``hub demo``, the tests and
``bench/deliver.py``; its replies can be scripted (500 then 200, 429 …).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from connectors.simserver import serve
from hub import standard_webhooks
from hub.errors import VerificationError


@dataclass
class Received:
    msg_id: str
    body: dict[str, Any]
    signature_ok: bool
    attempt: int


@dataclass
class Receiver:
    secret: str
    say: Callable[[Received], None] | None = None
    # Scripted replies, consumed one per request: (status, headers, body).
    script: deque[tuple[int, dict[str, str], str]] = field(default_factory=deque)
    verify: bool = True
    # Seconds to sit on a push before answering, by (webhook-id, how many times it
    # arrived): a destination that hangs on some pushes.
    hang: Callable[[str, int], float] | None = None
    # Answer with a body this many bytes long, streamed (a destination gone mad).
    huge_answer: int = 0
    received: list[Received] = field(default_factory=list)
    streamed: int = 0  # bytes of huge answers actually written
    hits: int = 0      # every request, scripted refusals included
    seen: dict[str, int] = field(default_factory=dict)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def unique(self) -> dict[str, Received]:
        """First delivery of each webhook-id (what a deduping receiver acts on)."""
        out: dict[str, Received] = {}
        for r in self.received:
            out.setdefault(r.msg_id, r)
        return out

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        if self.script:
            status, extra, text = self.script.popleft()
            return web.Response(status=status, headers=extra, text=text)
        ok = True
        if self.verify:
            try:
                standard_webhooks.verify([standard_webhooks.decode_secret(self.secret)], headers, body)
            except VerificationError as err:
                return web.json_response({"error": str(err)}, status=401)
        msg_id = headers.get("webhook-id", "")
        self.seen[msg_id] = self.seen.get(msg_id, 0) + 1
        rec = Received(msg_id, orjson.loads(body), ok, self.seen[msg_id])
        self.received.append(rec)
        if self.say is not None:
            self.say(rec)
        wait = self.hang(msg_id, rec.attempt) if self.hang is not None else 0
        if wait:
            await asyncio.sleep(wait)
        if self.huge_answer:
            return await self._huge(request)
        return web.json_response({"ok": True})

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = self.huge_answer
        await resp.prepare(request)
        chunk = b" " * 65536
        try:
            while self.streamed < self.huge_answer:
                piece = chunk[:self.huge_answer - self.streamed]
                await resp.write(piece)
                self.streamed += len(piece)
        except (ConnectionResetError, RuntimeError):
            pass  # the hub stopped reading and closed: what it should do
        return resp

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner, self.port = await serve(app, port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` distinct webhook-ids have arrived."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.unique) < count:
            if loop.time() > deadline:
                raise TimeoutError(f"received {len(self.unique)} of {count} pushes")
            await asyncio.sleep(0.02)
