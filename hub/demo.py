"""``hub demo``: the daemon on a temporary SQLite with every connector's
simulator around it, printing events flowing in and pushes flowing out.

The core knows no connector: it asks each installed connector for its demo
part (``ConnectorSpec.demo``), which starts its simulator and contributes the
sources/destinations to a generated config.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from hub.config import parse_config
from hub.daemon import Hub
from hub.interfaces import DemoContext, DemoPart
from hub.polling import source_states
from hub.records import outbox, raw_events, tickets
from hub.registry import Registry
from hub.yamlfile import YamlDoc


async def run_demo(*, seconds: float, requests: int, console: Console, keep: bool = False) -> int:
    registry = Registry.discover()
    parts: list[DemoPart] = [spec.demo() for spec in registry.specs if spec.demo is not None]

    token = secrets.token_urlsafe(18)
    ctx = DemoContext(say=lambda line: console.print(line, highlight=False), requests=requests)
    workdir = Path(tempfile.mkdtemp(prefix="hub-demo-"))
    sources: list[dict[str, Any]] = []
    destinations: list[dict[str, Any]] = []
    sync: list[dict[str, Any]] = []
    for part in parts:
        got = await part.start(ctx)
        sources += got.get("sources", [])
        destinations += got.get("destinations", [])
        sync += got.get("sync", [])
    # Destinations whose part says what they are told get that; the rest every change.
    routed = {d for rule in sync for d in ([rule["to"]] if isinstance(rule["to"], str) else rule["to"])}
    everything = [d["id"] for d in destinations if d["id"] not in routed]
    data = {
        "server": {"listen": "127.0.0.1:0"},
        "storage": {"url": f"sqlite+aiosqlite:///{workdir / 'hub.db'}"},
        # A fresh admin token each run (no contacts in clear: the masking is part of the tour).
        "security": {"pii_key": base64.b64encode(os.urandom(32)).decode(),
                     "tokens": [{"name": "demo", "token": token, "role": "admin"}]},
        "sources": sources,
        "destinations": destinations,
        "sync": [{"on": ["ticket.created", "ticket.status_changed"], "to": everything}, *sync],
        "pipeline": {"tick": "200ms"},
        "delivery": {"tick": "200ms"},
        "logging": {"level": "warning", "format": "console"},
    }
    cfg = parse_config(YamlDoc(data, "(demo config)"), registry)
    hub = Hub(cfg, registry)
    from hub import logs

    logs.configure("error", "console")
    await hub.start()
    ctx.hub_url = f"http://127.0.0.1:{hub.port}"
    console.rule(f"[bold]after-sales hub demo[/] — listening on {ctx.hub_url}, SQLite at {workdir / 'hub.db'}")
    console.print(f"sources: {', '.join(s['id'] for s in sources)}   destinations: "
                  f"{', '.join(d['id'] for d in destinations)}   (Ctrl-C to stop)\n")
    try:
        drivers = [asyncio.create_task(p.drive(ctx)) for p in parts]
        await asyncio.gather(*drivers)
        if seconds > 0:
            await asyncio.sleep(seconds)
        else:
            await asyncio.Event().wait()
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        await _summary(hub, console)
        console.print(f"\n[bold]dashboard:[/] {ctx.hub_url}/dashboard   [bold]token:[/] {token}   "
                      f"(admin API: {ctx.hub_url}/api/v1/openapi.json)", highlight=False)
        if keep:
            console.print("staying up (--keep): sign in with the token above; Ctrl-C stops", highlight=False)
            with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
                await asyncio.Event().wait()
        await hub.stop()
        for part in parts:
            await part.stop()
    return 0


async def _summary(hub: Hub, console: Console) -> None:
    async with hub.db.read() as conn:
        inbox: dict[str, int] = dict((await conn.execute(sa.select(raw_events.c.state, sa.func.count())
                                         .group_by(raw_events.c.state))).all())
        statuses = (await conn.execute(sa.select(tickets.c.status, sa.func.count())
                                       .group_by(tickets.c.status))).all()
        pushes: dict[str, int] = dict((await conn.execute(sa.select(outbox.c.state, sa.func.count())
                                          .group_by(outbox.c.state))).all())
    table = Table(title="what the hub did")
    table.add_column("records")
    table.add_column("count", justify="right")
    table.add_row("raw events stored (done / quarantined / pending)",
                  f"{inbox.get('done', 0)} / {inbox.get('quarantined', 0)} / {inbox.get('pending', 0)}")
    for status, n in statuses:
        table.add_row(f"tickets {status}", str(n))
    table.add_row("pushes (delivered / pending / dead)",
                  f"{pushes.get('delivered', 0)} / {pushes.get('pending', 0)} / {pushes.get('dead', 0)}")
    for source_id, st in sorted((await source_states(hub.db)).items()):
        if "healthy" in st:
            note = f" — last error: {st['last_error']}" if st["last_error"] else ""
            table.add_row(f"polled source {source_id}",
                          ("healthy" if st["healthy"] else "UNHEALTHY") + note)
    console.print()
    console.print(table)
