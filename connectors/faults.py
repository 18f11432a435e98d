"""Bad days for the downstream simulators (ERP, WMS, finance, SMS): told to
fail at random, be slow, time out or answer 429, the way a real system does
on Double 11. Each simulator asks :meth:`Faults.before` at the top of a
request and answers with what it returns, if anything.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Faults:
    fail_rate: float = 0.0      # answer 500 this share of the time
    throttle_rate: float = 0.0  # answer 429 with Retry-After: 1
    hang_rate: float = 0.0      # hold the request for ``hang`` seconds (the caller times out)
    hang: float = 30.0
    delay: float = 0.0          # every answer this much later
    down: bool = False          # refuse everything with 503 (an outage)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    injected: dict[str, int] = field(default_factory=lambda: {"500": 0, "429": 0, "hang": 0, "503": 0})

    async def before(self) -> web.Response | None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            self.injected["503"] += 1
            return web.Response(status=503, text="down for maintenance")
        roll = self.rng.random()
        if roll < self.hang_rate:
            self.injected["hang"] += 1
            await asyncio.sleep(self.hang)
            return web.Response(status=504, text="too late")
        roll -= self.hang_rate
        if roll < self.throttle_rate:
            self.injected["429"] += 1
            return web.Response(status=429, text="slow down", headers={"Retry-After": "1"})
        roll -= self.throttle_rate
        if roll < self.fail_rate:
            self.injected["500"] += 1
            return web.Response(status=500, text="internal error")
        return None
