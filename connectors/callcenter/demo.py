"""``hub demo`` part: the 400 line pushing call records; one caller is a
Taobao-style buyer calling about an order by number."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import aiohttp

from connectors import fakedata
from connectors.callcenter.simulator import CallCenterSimulator
from hub.interfaces import DemoContext
from hub.pii import mask_phone


class CallcenterDemo:
    def __init__(self) -> None:
        self.password = secrets.token_urlsafe(16)
        self.sim: CallCenterSimulator | None = None

    async def start(self, ctx: DemoContext) -> dict[str, list[dict[str, Any]]]:
        return {"sources": [{"id": "cc-400", "kind": "callcenter", "username": "hub", "password": self.password}]}

    async def drive(self, ctx: DemoContext) -> None:
        sim = CallCenterSimulator(f"{ctx.hub_url}/webhooks/cc-400", "hub", self.password)
        async with aiohttp.ClientSession() as http:
            for i in range(3):
                await asyncio.sleep(0.5)
                phone = fakedata.phone(sim.rng)
                cdr = sim.cdr(phone, complaint=i == 0, order_no=f"SO88120344{i:02d}" if i < 2 else None)
                status, text = await sim.push(http, cdr)
                ctx.say(f"[cyan]→ 400 line[/] call from {mask_phone(phone)} "
                        f"({'complaint' if i == 0 else 'inquiry'}, IVR {' '.join(cdr['IVRKeyPressed'])}) "
                        f"[dim]→ HTTP {status} {text}[/]")
            status, text = await sim.push(http, sim.cdr("13800000000"), auth="Basic d3Jvbmc6d3Jvbmc=")
            ctx.say(f"[yellow]→ 400 line[/] a push with the wrong password [dim]→ HTTP {status}[/]")

    async def stop(self) -> None:
        return None
