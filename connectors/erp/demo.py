"""``hub demo`` part: a local 聚水潭 that prints each after-sales record it upserts."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from connectors.erp.simulator import ErpSimulator
from hub.interfaces import DemoContext


class ErpDemo:
    def __init__(self) -> None:
        self.sim = ErpSimulator()

    async def start(self, ctx: DemoContext) -> dict[str, list[dict[str, Any]]]:
        sim = self.sim
        await sim.start()

        def show(record: dict[str, Any]) -> None:
            ctx.say(f"[green]← erp[/] 聚水潭 upsert {escape(str(record.get('outer_as_id')))} "
                    f"{escape(str(record.get('type')))} {record.get('shop_status')} ¥{record.get('refund') or '–'} "
                    f"[dim]sign ✔[/]")

        sim.on_upload = show
        return {"destinations": [{"id": "erp", "kind": "erp", "url": sim.url, "app_key": sim.app_key,
                                  "app_secret": sim.app_secret, "access_token": sim.access_token,
                                  "shop_id": 10001}]}

    async def drive(self, ctx: DemoContext) -> None:
        return None

    async def stop(self) -> None:
        await self.sim.stop()
