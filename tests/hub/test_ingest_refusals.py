"""Bad input gets a precise 4xx and nothing stored as processed; a mapping
error quarantines the raw event with its reason; storage down answers 503."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import aiohttp
import orjson
import sqlalchemy as sa

from connectors.website.simulator import WebsiteSimulator
from hub.daemon import Hub
from hub.records import raw_events, tickets
from hub.registry import Registry
from tests.conftest import count, make_config, wait_until


async def _post(http: aiohttp.ClientSession, hub: Hub, body: bytes, headers: dict[str, str],
                source: str = "site") -> tuple[int, dict]:
    async with http.post(f"http://127.0.0.1:{hub.port}/webhooks/{source}", data=body,
                         headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_wrong_signature_is_401(hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator) -> None:
    body, headers = website.sign(website.request())
    headers["webhook-signature"] = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    status, reply = await _post(http, hub, body, headers)
    assert status == 401 and reply == {"error": "verification_failed",
                                       "message": "webhook-signature does not match"}
    assert await count(hub, raw_events) == 0


async def test_missing_signature_is_401(hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator) -> None:
    body, headers = website.sign(website.request())
    del headers["webhook-signature"]
    status, reply = await _post(http, hub, body, headers)
    assert status == 401 and "webhook-signature" in reply["message"]
    assert await count(hub, raw_events) == 0


async def test_body_changed_after_signing_is_401(hub: Hub, http: aiohttp.ClientSession,
                                                 website: WebsiteSimulator) -> None:
    body, headers = website.sign(website.request())
    status, _ = await _post(http, hub, body.replace(b'"amount"', b'"amount" '), headers)
    assert status == 401
    assert await count(hub, raw_events) == 0


async def test_stale_timestamp_is_401(hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator) -> None:
    body, headers = website.sign(website.request(), timestamp=int(time.time()) - 3600)
    status, reply = await _post(http, hub, body, headers)
    assert status == 401 and "too old" in reply["message"]
    assert await count(hub, raw_events) == 0


async def test_broken_json_is_400(hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator) -> None:
    body, headers = website.sign(b'{"type": "aftersale.requested", "data": {')
    status, reply = await _post(http, hub, body, headers)
    assert status == 400 and reply["error"] == "bad_payload" and "not valid JSON" in reply["message"]
    assert await count(hub, raw_events) == 0


async def test_oversized_body_is_413(hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator) -> None:
    msg = website.request()
    msg["data"]["description"] = "x" * 70_000  # the test hub's limit is 64 KiB
    body, headers = website.sign(msg)
    status, reply = await _post(http, hub, body, headers)
    assert status == 413 and reply["error"] == "payload_too_large"
    assert await count(hub, raw_events) == 0


async def test_unknown_source_is_404(hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator) -> None:
    body, headers = website.sign(website.request())
    status, reply = await _post(http, hub, body, headers, source="nope")
    assert status == 404 and reply["error"] == "unknown_source" and "'nope'" in reply["message"]
    assert await count(hub, raw_events) == 0


async def test_wrong_endpoint_or_method_is_json(hub: Hub, http: aiohttp.ClientSession) -> None:
    base = f"http://127.0.0.1:{hub.port}"
    async with http.get(f"{base}/nowhere") as resp:
        assert resp.status == 404
        assert await resp.json() == {"error": "not_found", "message": "no endpoint at /nowhere"}
    async with http.put(f"{base}/webhooks/site", data=b"{}") as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "POST, GET"
        assert (await resp.json())["error"] == "method_not_allowed"
    async with http.post(f"{base}/healthz") as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "GET"


async def test_a_bug_in_a_connector_is_a_json_500_and_stores_nothing(
        hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator) -> None:
    connector, _ = hub.webhook_sources["site"]

    def broken(_request: object) -> None:
        raise RuntimeError("a bug")

    connector.receive = broken  # type: ignore[method-assign]
    status, reply = await _post(http, hub, *website.sign(website.request()))
    assert status == 500 and reply == {"error": "internal_error", "message": "internal error; see the hub's log"}
    assert await count(hub, raw_events) == 0


async def test_mapping_failure_is_quarantined_with_reason(
        hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator) -> None:
    bad_kind = website.request()
    bad_kind["data"]["kind"] = "teleport"
    bad_amount = website.request()
    bad_amount["data"]["amount"] = "12.345"
    for msg in (bad_kind, bad_amount):
        status, _ = await _post(http, hub, *website.sign(msg))
        assert status == 200  # stored: the raw event is kept, never lost

    async def settled() -> bool:
        return await count(hub, raw_events, raw_events.c.state == "quarantined") == 2

    await wait_until(settled)
    async with hub.db.read() as conn:
        reasons = [r[0] for r in (await conn.execute(
            sa.select(raw_events.c.reason).order_by(raw_events.c.id))).all()]
    assert reasons == [
        "mapping website@1: ticket.type: value 'teleport' has no entry in the map",
        "mapping website@1: ticket.refund_amount: '12.345' has more than 2 decimals",
    ]
    assert await count(hub, tickets) == 0


async def test_storage_unavailable_is_503_and_nothing_acknowledged(
        registry: Registry, tmp_path: Path, pii_key: str, site_secret: str,
        http: aiohttp.ClientSession, website: WebsiteSimulator) -> None:
    path = tmp_path / "locked.db"
    cfg = make_config(registry, db_url=f"sqlite+aiosqlite:///{path}", pii_key=pii_key,
                      site_secret=site_secret, receiver=None)
    cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"sqlite_busy_timeout": 0.3})})
    hub = Hub(cfg, registry)
    await hub.start()
    try:
        await _locked_out_then_back(hub, str(path), http, website)
    finally:
        await hub.stop()


async def _locked_out_then_back(hub: Hub, path: str, http: aiohttp.ClientSession,
                                website: WebsiteSimulator) -> None:
    # Another process holds the write lock: the hub cannot commit.
    # (In a thread: the hub's own connections need the event loop to finish
    # their transactions while the blocker waits for the lock.)
    blocker = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    await asyncio.to_thread(blocker.execute, "BEGIN IMMEDIATE")
    try:
        body, headers = website.sign(website.request())
        status, reply = await _post(http, hub, body, headers)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert status == 503 and reply["error"] == "storage_unavailable"
    # Once storage is back, the platform's retry of the same message is taken.
    status, reply = await _post(http, hub, body, headers)
    assert (status, reply["status"]) == (200, "accepted")
    assert orjson.loads(hub.cipher.open_body((await _raw_bodies(hub))[0])) == orjson.loads(body)


async def _raw_bodies(hub: Hub) -> list[str]:
    async with hub.db.read() as conn:
        return [r[0] for r in (await conn.execute(sa.select(raw_events.c.body))).all()]
