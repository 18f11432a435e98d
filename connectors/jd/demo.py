"""``hub demo`` part: a simulated JD shop whose after-sales services the hub polls."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from connectors.jd.simulator import STATUS_NAMES, JdSimulator
from connectors.simserver import PlatformQuota
from hub.interfaces import DemoContext
from hub.records import utcnow


class JdDemo:
    def __init__(self) -> None:
        self.sim = JdSimulator(quota=PlatformQuota(calls_per_second=30, burst=30))

    async def start(self, ctx: DemoContext) -> dict[str, list[dict[str, Any]]]:
        now = utcnow()
        self.sim.populate(ctx.requests * 2, now - timedelta(hours=1), now - timedelta(minutes=2))
        await self.sim.start()
        return {"sources": [{
            "id": "jd-main", "kind": "jd", "api_url": self.sim.url, "app_key": self.sim.app_key,
            "app_secret": self.sim.app_secret, "access_token": self.sim.access_token,
            "poll_every": "2s", "lag": "1s", "initial_lookback": "2h",
            "quota": {"calls_per_second": 20, "burst": 20}}]}

    async def drive(self, ctx: DemoContext) -> None:
        sim = self.sim
        ctx.say(f"[blue]→ jd[/] shop holds {len(sim.services)} after-sales services; the hub polls "
                "jingdong.asc.query.list (+ .view, jingdong.pop.order.get), md5-signed")
        for i in range(ctx.requests):
            await asyncio.sleep(0.6)
            if i % 3 == 0:
                s = sim.create_service()
                ctx.say(f"[blue]→ jd[/] {s['customerName']} opens service {s['serviceId']} "
                        f"({s['customerExpectName']}, {s['questionTypeName']})")
            else:
                for sid, before, after in sim.advance(1):
                    ctx.say(f"[blue]→ jd[/] service {sid}: {STATUS_NAMES[before]} → {STATUS_NAMES[after]}")

    async def stop(self) -> None:
        await self.sim.stop()
