"""The 400-line CDR push: authentication, refusals, dedupe, recordings."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import sqlalchemy as sa

from connectors.callcenter.simulator import CallCenterSimulator
from hub.daemon import Hub
from hub.records import raw_events, ticket_events, tickets
from hub.registry import Registry
from tests.conftest import count, make_config, wait_until

PASSWORD = "cc-push-password-1"
SECRET = "cc-signing-secret"


@pytest.fixture
async def hub(registry: Registry, db_url: str, pii_key: str, site_secret: str) -> AsyncIterator[Hub]:
    h = Hub(make_config(registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=None,
                        sources=[{"id": "cc", "kind": "callcenter", "username": "hub", "password": PASSWORD},
                                 {"id": "cc-signed", "kind": "callcenter", "signature_secret": SECRET}]),
            registry)
    await h.start()
    yield h
    await h.stop()


async def test_a_call_becomes_a_ticket_once_and_its_recording_joins_it(hub: Hub) -> None:
    cc = CallCenterSimulator(f"http://127.0.0.1:{hub.port}/webhooks/cc", "hub", PASSWORD)
    cdr = cc.cdr("13912345678", complaint=True)
    async with aiohttp.ClientSession() as http:
        assert await cc.push(http, cdr, push_uuid="u-1") == (200, '{"ErrCode":0}')
        assert (await cc.push(http, cdr, push_uuid="u-1"))[0] == 200  # TCCC's retry
        assert (await cc.push(http, cc.recording(cdr), action="record"))[0] == 200
        await wait_until(lambda: _settled(hub, 2))
    assert await count(hub, raw_events) == 2  # the CDR once, the recording push
    assert await count(hub, tickets, tickets.c.type == "complaint", tickets.c.priority == "high") == 1
    assert await count(hub, ticket_events, ticket_events.c.kind == "call") == 1
    async with hub.db.read() as conn:
        rec = (await conn.execute(sa.select(ticket_events).where(ticket_events.c.kind == "recording"))).one()
        call_ticket = (await conn.execute(sa.select(tickets.c.id))).scalar_one()
    assert rec.ticket_id == call_ticket and rec.detail["text"].endswith(f"{cdr['RecordId']}.mp3")


async def test_refusals_are_precise_and_store_nothing(hub: Hub) -> None:
    url = f"http://127.0.0.1:{hub.port}/webhooks/cc"
    cc = CallCenterSimulator(url, "hub", PASSWORD)
    async with aiohttp.ClientSession() as http:
        status, text = await cc.push(http, cc.cdr("13912345678"), auth="Basic aHViOndyb25n")
        assert status == 401 and "do not match" in text
        async with http.post(url, params={"action": "cdr"}, data=b"{}") as resp:
            assert resp.status == 401 and "missing" in await resp.text()
        status, text = await cc.push(http, {"Caller": "13912345678"})
        assert status == 400 and "SessionId" in text
        status, text = await cc.push(http, cc.cdr("13912345678"), action="hangup")
        assert status == 400 and "action" in text
    assert await count(hub, raw_events) == 0


async def test_signed_pushes_are_verified(hub: Hub) -> None:
    url = f"http://127.0.0.1:{hub.port}/webhooks/cc-signed"
    body = orjson.dumps(CallCenterSimulator(url, "", "").cdr("13712345678"))
    good = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    async with aiohttp.ClientSession() as http:
        async with http.post(url, params={"action": "cdr"}, data=body, headers={"X-Signature": "0" * 64}) as r:
            assert r.status == 401
        async with http.post(url, params={"action": "cdr"}, data=body, headers={"X-Signature": good}) as r:
            assert r.status == 200
    await wait_until(lambda: _settled(hub, 1))


async def _settled(hub: Hub, n: int) -> bool:
    return await count(hub, raw_events, raw_events.c.state == "done") == n


async def test_a_call_about_an_open_ticket_tells_downstream_once_with_the_call(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, receiver: Any,
        website: Any) -> None:
    from connectors.website.simulator import Customer

    person = Customer("u42", "张三", "13912345678", "zs@example.com", "上海市黄浦区南京东路 1 号")
    cfg = make_config(registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=receiver,
                      sources=[{"id": "site", "kind": "website", "secret": site_secret},
                               {"id": "cc", "kind": "callcenter", "username": "hub", "password": PASSWORD}],
                      sync=[{"on": ["ticket.created", "ticket.updated"], "to": "hook"}])
    h = Hub(cfg, registry)
    await h.start()
    try:
        cc = CallCenterSimulator(f"http://127.0.0.1:{h.port}/webhooks/cc", "hub", PASSWORD)
        async with aiohttp.ClientSession() as http:
            body, headers = website.sign(website.request(person))
            async with http.post(f"http://127.0.0.1:{h.port}/webhooks/site", data=body, headers=headers) as r:
                assert r.status == 200
            await receiver.wait_for(1, timeout=10)
            cdr = cc.cdr("139-1234-5678")  # the same phone, written another way
            assert (await cc.push(http, cdr, push_uuid="u-9"))[0] == 200
            assert (await cc.push(http, cdr, push_uuid="u-9"))[0] == 200  # TCCC's retry
            await receiver.wait_for(2, timeout=10)
        assert await count(h, tickets) == 1  # the call joined the open ticket
        types = [(r.body["type"], (r.body["data"]["change"].get("interaction") or {}).get("kind"))
                 for r in receiver.unique.values()]
        assert types == [("ticket.created", None), ("ticket.updated", "call")]
        update = list(receiver.unique.values())[1].body["data"]
        assert update["change"]["interaction"]["channel"] == "callcenter"
        assert "13912345678" not in orjson.dumps(update).decode()  # masked: the destination has no pii
        assert sorted(receiver.seen.values()) == [1, 1]
    finally:
        await h.stop()
