"""``hub demo`` part: a simulated Taobao shop whose refunds the hub polls and
whose TMC refund messages it consumes."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from connectors.simserver import PlatformQuota
from connectors.taobao.simulator import TaobaoSimulator
from hub.interfaces import DemoContext
from hub.records import utcnow


class TaobaoDemo:
    def __init__(self) -> None:
        self.sim = TaobaoSimulator(quota=PlatformQuota(calls_per_second=20, burst=20))

    async def start(self, ctx: DemoContext) -> dict[str, list[dict[str, Any]]]:
        now = utcnow()
        self.sim.populate(ctx.requests * 3, now - timedelta(hours=1), now - timedelta(minutes=2))
        await self.sim.start()
        return {"sources": [{
            "id": "tb-flagship", "kind": "taobao", "api_url": self.sim.url, "app_key": self.sim.app_key,
            "app_secret": self.sim.app_secret, "session": self.sim.session, "sign_method": "hmac-sha256",
            "poll_every": "2s", "messages_every": "1s", "lag": "1s", "initial_lookback": "2h",
            "quota": {"calls_per_second": 10, "burst": 10}}]}

    async def drive(self, ctx: DemoContext) -> None:
        sim = self.sim
        ctx.say(f"[magenta]→ taobao[/] shop holds {len(sim.refunds)} refunds from the last hour; "
                "the hub polls taobao.refunds.receive.get (signed hmac-sha256)")
        for i in range(ctx.requests):
            await asyncio.sleep(0.5)
            if i % 2 == 0:
                r = sim.create_refund()
                ctx.say(f"[magenta]→ taobao[/] buyer {r['buyer_nick']} asks a refund {r['refund_id']} "
                        f"of ¥{r['refund_fee']} ({r['reason']}) [dim]→ TMC taobao_refund_RefundCreated[/]")
            else:
                for rid, before, after in sim.advance(1):
                    ctx.say(f"[magenta]→ taobao[/] refund {rid}: {before} → {after}")
            if i == ctx.requests // 2:
                sim.quota.inject(1)
                ctx.say("[magenta]→ taobao[/] the gateway answers one call with 7 App Call Limited "
                        "[dim](the hub waits out the ban and carries on)[/]")

    async def stop(self) -> None:
        await self.sim.stop()
