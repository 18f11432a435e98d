"""``hub demo`` part: a local receiver that prints every signed push it gets."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from connectors.webhook.receiver import Received, Receiver
from hub import standard_webhooks
from hub.interfaces import DemoContext


class WebhookDemo:
    def __init__(self) -> None:
        self.receiver: Receiver | None = None

    async def start(self, ctx: DemoContext) -> dict[str, list[dict[str, Any]]]:
        secret = standard_webhooks.new_secret()

        def show(r: Received) -> None:
            data = r.body.get("data", {})
            t = data.get("ticket") or {}
            change = data.get("change") or {}
            cust = data.get("customer") or {}
            move = f"{change.get('from') or '∅'} → {change.get('to')}"
            again = f" [dim](redelivery #{r.attempt})[/]" if r.attempt > 1 else ""
            ctx.say(f"[green]← receiver[/] {escape(r.body.get('type', '?'))} ticket #{t.get('id')} "
                    f"{escape(str(t.get('external_id')))} [bold]{escape(move)}[/] "
                    f"customer {escape(str(cust.get('display_name')))} {escape(str(cust.get('phone')))} "
                    f"[dim]id={escape(r.msg_id)} signature ✔[/]{again}")

        self.receiver = Receiver(secret=secret, say=show)
        await self.receiver.start()
        return {"destinations": [{"id": "demo-receiver", "kind": "webhook", "url": self.receiver.url,
                                  "secret": secret}]}

    async def drive(self, ctx: DemoContext) -> None:
        return None

    async def stop(self) -> None:
        if self.receiver is not None:
            await self.receiver.stop()
