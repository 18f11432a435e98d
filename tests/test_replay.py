"""``hub replay`` after a mapping change, against a running hub and a real
receiver: the diff first (nothing written), then on confirmation the tickets
change, their ``ticket.updated`` pushes go out once each, a quarantined event
the new mapping accepts goes through, and a second replay finds nothing."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from connectors.webhook.receiver import Receiver
from connectors.website.simulator import WebsiteSimulator
from hub.cli import app
from hub.config import parse_config
from hub.daemon import Hub
from hub.mapping import default_mappings_dir
from hub.records import audit_log, outbox, raw_events, ticket_events, tickets
from hub.registry import Registry
from hub.yamlfile import YamlDoc
from tests.conftest import running, wait_until


def _config(db_url: str, pii_key: str, site_secret: str, receiver: Receiver, mappings: Path) -> dict[str, Any]:
    return {
        "server": {"listen": "127.0.0.1:0"}, "storage": {"url": db_url}, "security": {"pii_key": pii_key},
        "mappings_dir": str(mappings),
        "sources": [{"id": "site", "kind": "website", "secret": site_secret}],
        "destinations": [{"id": "hook", "kind": "webhook", "url": receiver.url, "secret": receiver.secret}],
        "sync": [{"on": ["ticket.created", "ticket.status_changed", "ticket.updated"], "to": "hook"}],
        "pipeline": {"tick": "100ms"}, "delivery": {"tick": "50ms"}, "logging": {"level": "warning"},
    }


async def _post(hub: Hub, website: WebsiteSimulator, message: dict[str, Any]) -> None:
    body, headers = website.sign(message)
    async with aiohttp.ClientSession() as http, \
            http.post(f"http://127.0.0.1:{hub.port}/webhooks/site", data=body, headers=headers) as r:
        assert r.status == 200


async def _reasons(hub: Hub) -> dict[str, str]:
    async with hub.db.read() as conn:
        return dict((await conn.execute(sa.select(tickets.c.external_id, tickets.c.reason_code))).all())


async def _count(hub: Hub, table: sa.Table, *where: Any) -> int:
    async with hub.db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table).where(*where))).scalar_one())


async def test_replay_shows_the_diff_then_applies_it_and_pushes_once(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, receiver: Receiver,
        website: WebsiteSimulator, tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(default_mappings_dir(), mappings)
    data = _config(db_url, pii_key, site_secret, receiver, mappings)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(data))
    messages = []
    for request_id, reason, kind in (("R1", "wrong_item", "refund"), ("R2", "wrong_item", "return"),
                                     ("R3", "damaged", "refund"), ("R4", "damaged", "swap")):
        m = website.request(request_id=request_id, kind=kind)
        m["data"]["reason"] = reason
        messages.append(m)

    cfg = parse_config(YamlDoc(data, "(test)"), registry)
    async with running(cfg, registry) as hub:
        for m in messages:
            await _post(hub, website, m)
        await receiver.wait_for(3, timeout=10)
        await wait_until(lambda: _count(hub, raw_events, raw_events.c.state == "quarantined"), timeout=10)
        assert await _reasons(hub) == {"R1": "wrong_item", "R2": "wrong_item", "R3": "damaged"}

    # The mapping is fixed: the merchant's code for a wrong item changed, and "swap" is an exchange.
    site = mappings / "website.yaml"
    text = site.read_text()
    site.write_text(text.replace("      wrong_item: wrong_item\n", "      wrong_item: wrong_goods\n")
                    .replace("      exchange: exchange\n", "      exchange: exchange\n      swap: exchange\n")
                    .replace("version: 1", "version: 2"))

    async with running(cfg, registry) as hub:   # the hub reloaded with the new mapping
        runner = CliRunner()
        args = ["replay", "-c", str(config_file), "--quarantined"]
        # Asked and refused: the diff is shown, nothing is written.
        shown = await asyncio.to_thread(runner.invoke, app, args, input="n\n")
        assert shown.exit_code == 0, shown.output
        assert "tickets that change (2 of 3 looked at)" in shown.output, shown.output
        assert "wrong_item" in shown.output and "wrong_goods" in shown.output
        assert "1 of 1 would now go through" in shown.output and "nothing changed" in shown.output
        assert await _reasons(hub) == {"R1": "wrong_item", "R2": "wrong_item", "R3": "damaged"}
        assert await _count(hub, outbox) == 3

        applied = await asyncio.to_thread(runner.invoke, app, args, input="y\n")
        assert applied.exit_code == 0, applied.output
        assert "2 tickets updated, 2 pushes queued, 1 events requeued" in applied.output

        await receiver.wait_for(6, timeout=10)  # 3 created + 2 updated + the requeued event's created
        async def settled() -> bool:
            return await _count(hub, raw_events, raw_events.c.state.in_(["pending", "quarantined"])) == 0

        await wait_until(settled, timeout=10)
        assert await _reasons(hub) == {"R1": "wrong_goods", "R2": "wrong_goods", "R3": "damaged", "R4": "damaged"}
        async with hub.db.read() as conn:
            types = Counter((await conn.execute(sa.select(outbox.c.event_type))).scalars())
            replayed = (await conn.execute(sa.select(ticket_events.c.detail)
                                           .where(ticket_events.c.kind == "replayed"))).scalars().all()
            audit = (await conn.execute(sa.select(audit_log.c.action, audit_log.c.detail))).all()
        assert types == {"ticket.created": 4, "ticket.updated": 2}
        assert [d["fields"] for d in replayed] == [{"reason_code": ["wrong_item", "wrong_goods"]}] * 2
        assert [(a, d["pushes"], d["requeued"]) for a, d in audit] == [("replay", 2, 1)]

        # Again: the tickets already hold what the mapping makes of their events.
        again = await asyncio.to_thread(runner.invoke, app, [*args, "--yes"])
        assert again.exit_code == 0 and "nothing to replay" in again.output, again.output
        await asyncio.sleep(0.5)
        assert await _count(hub, outbox) == 6
        assert sorted(receiver.seen.values()) == [1] * 6   # every push delivered once


async def test_replay_through_the_api_diff_first_and_a_ticket_changed_meanwhile_is_left_alone(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, receiver: Receiver,
        website: WebsiteSimulator, tmp_path: Path) -> None:
    from hub import replay

    mappings = tmp_path / "mappings"
    shutil.copytree(default_mappings_dir(), mappings)
    data = _config(db_url, pii_key, site_secret, receiver, mappings)
    data["security"]["tokens"] = [{"name": "bob", "token": "ops-token-0123456789", "role": "operator"}]
    m1, m2 = website.request(request_id="A1", kind="refund"), website.request(request_id="A2", kind="refund")
    m1["data"]["reason"] = m2["data"]["reason"] = "late"
    async with running(parse_config(YamlDoc(data, "(test)"), registry), registry) as hub:
        for m in (m1, m2):
            await _post(hub, website, m)
        await receiver.wait_for(2, timeout=10)
    site = mappings / "website.yaml"
    site.write_text(site.read_text().replace("      late: late_delivery\n", "      late: courier_late\n"))
    async with running(parse_config(YamlDoc(data, "(test)"), registry), registry) as hub:
        url = f"http://127.0.0.1:{hub.port}/api/v1/replay"
        auth = {"Authorization": "Bearer ops-token-0123456789"}
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json={"source": "site"}, headers=auth) as r:
                body = await r.json()
                assert r.status == 200 and body["applied"] is None, body
                assert [t["changes"] for t in body["tickets"]] == [
                    {"reason_code": {"now": "late_delivery", "after": "courier_late"}}] * 2
            async with http.post(url, json={"source": "site", "bogus": 1}, headers=auth) as r:
                assert r.status == 400
        # Between the plan and its application the pipeline changes A1's reason: A1 is skipped.
        p = hub.pipeline
        planned = await replay.plan(hub.db, hub.cipher, p.sources, p.rules, replay.Scope(source="site"))
        async with hub.db.write() as conn:
            await conn.execute(sa.update(tickets).where(tickets.c.external_id == "A1").values(reason_code="other"))
        done = await replay.apply(hub.db, hub.cipher, p.destinations, p.rules, planned, actor="test",
                                  mapping_labels={})
        assert (done.tickets, done.pushes, len(done.skipped)) == (1, 1, 1)
        assert await _reasons(hub) == {"A1": "other", "A2": "courier_late"}
        await receiver.wait_for(3, timeout=10)
