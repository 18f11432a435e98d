"""``hub demo`` part: the simulated website posting realistic requests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aiohttp
from rich.markup import escape

from connectors.website.simulator import WebsiteSimulator
from hub import standard_webhooks
from hub.interfaces import DemoContext


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class WebsiteDemo:
    def __init__(self) -> None:
        self.sim = WebsiteSimulator(secret=standard_webhooks.new_secret())

    async def start(self, ctx: DemoContext) -> dict[str, list[dict[str, Any]]]:
        return {"sources": [{"id": "site", "kind": "website", "secret": self.sim.secret}]}

    async def drive(self, ctx: DemoContext) -> None:
        url = f"{ctx.hub_url}/webhooks/site"
        sim = self.sim
        async with aiohttp.ClientSession() as http:

            async def post(label: str, body: bytes, headers: dict[str, str]) -> None:
                async with http.post(url, data=body, headers=headers) as resp:
                    text = await resp.text()
                    colour = "cyan" if resp.status < 300 else "yellow"
                    ctx.say(f"[{colour}]→ website[/] {label} [dim]→ HTTP {resp.status} {escape(text)}[/]")

            sent = []
            for _ in range(ctx.requests):
                msg = sim.request()
                d = msg["data"]
                body, headers = sim.sign(msg)
                sent.append((msg, body, headers))
                await post(f"{d['kind']} request {d['request_id']} for order {d['order_id']} "
                           f"(¥{d['amount']}, {escape(d['reason'])})", body, headers)
                await asyncio.sleep(0.25)
            if sent:
                msg, body, headers = sent[0]
                await post(f"resends {msg['data']['request_id']} (same webhook-id: a retry)", body, headers)
                upd = dict(msg, type="aftersale.updated", timestamp=_now(),
                           data=dict(msg["data"], status="awaiting_return"))
                await asyncio.sleep(0.3)
                await post(f"{msg['data']['request_id']}: buyer was told to send it back", *sim.sign(upd))
            if len(sent) > 1:
                msg = sent[1][0]
                cancel = dict(msg, type="aftersale.cancelled", timestamp=_now())
                await post(f"{msg['data']['request_id']}: buyer cancelled", *sim.sign(cancel))
            body, headers = sim.sign(sim.request())
            headers["webhook-signature"] = "v1,Zm9yZ2VkIHNpZ25hdHVyZQ=="
            await post("a forged request (wrong signature)", body, headers)

    async def stop(self) -> None:
        return None
