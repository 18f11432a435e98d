"""``hub demo`` part: WeChat pushing customer-service messages and 微信小店
after-sale events to the hub in safe mode, with the platform API mocked."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from rich.markup import escape

from connectors.wechat.simulator import WechatPlatform, WechatPusher, new_aes_key
from hub.interfaces import DemoContext

TOKEN = "demo-wechat-token"


class WechatDemo:
    def __init__(self) -> None:
        self.platform = WechatPlatform()
        self.aes_key = new_aes_key()

    async def start(self, ctx: DemoContext) -> dict[str, list[dict[str, Any]]]:
        await self.platform.start()
        return {"sources": [{"id": "wx-shop", "kind": "wechat", "app_id": self.platform.app_id, "token": TOKEN,
                             "encoding_aes_key": self.aes_key, "safe_mode_only": True,
                             "app_secret": self.platform.app_secret, "api_url": self.platform.base_url}]}

    async def drive(self, ctx: DemoContext) -> None:
        p = WechatPusher(f"{ctx.hub_url}/webhooks/wx-shop", TOKEN, self.platform.app_id, self.aes_key)
        say = ctx.say
        async with aiohttp.ClientSession() as http:
            status, text = await p.check_url(http)
            say(f"[green]→ wechat[/] URL check (GET, sha1 signature) [dim]→ HTTP {status} echostr {text}[/]")
            buyers = [p.openid() for _ in range(2)]
            for openid in buyers:
                msg = p.text(openid)
                status, text = await p.send(http, msg)
                say(f"[green]→ wechat[/] {openid[:10]}… says “{escape(msg['Content'])}” "
                    f"[dim](AES safe mode) → HTTP {status} {text}[/]")
                await asyncio.sleep(0.3)
            order = self.platform.create_order(buyers[0], unionid="oUnion_demo")
            for status_name in ("MERCHANT_PROCESSING", "USER_WAIT_RETURN", "MERCHANT_WAIT_RECEIPT"):
                self.platform.move(order, status_name)
                status, text = await p.send(http, p.aftersale_event(order))
                say(f"[green]→ wechat[/] 微信小店 after-sale {order['after_sale_order_id']} → {status_name} "
                    f"[dim](detail fetched with a cached access token) → HTTP {status} {text}[/]")
                await asyncio.sleep(0.4)
            forged = WechatPusher(p.url, "wrong-token", self.platform.app_id, self.aes_key)
            status, text = await forged.send(http, p.text(buyers[1]))
            say(f"[yellow]→ wechat[/] a forged push (wrong token) [dim]→ HTTP {status} {escape(text)}[/]")

    async def stop(self) -> None:
        await self.platform.stop()
