"""WeChat end to end: the URL check, safe-mode JSON and XML pushes made the
way WeChat makes them, forgeries refused with nothing stored, hostile XML
refused with memory flat, customer-service messages on the open ticket, and
after-sale events with their detail fetched under a cached access token."""

from __future__ import annotations

import resource
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from connectors.wechat.simulator import WechatPlatform, WechatPusher, new_aes_key, to_xml
from hub.daemon import Hub
from hub.records import identities, raw_events, ticket_events, tickets
from hub.registry import Registry
from tests.conftest import count, make_config, wait_until

TOKEN = "hubtesttoken"
APP_ID = "wxba5fad812f8e6fb9"


@pytest.fixture
async def platform() -> AsyncIterator[WechatPlatform]:
    p = WechatPlatform(app_id=APP_ID)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
def aes_key() -> str:
    return new_aes_key()


@pytest.fixture
async def hub(registry: Registry, db_url: str, pii_key: str, site_secret: str, aes_key: str,
              platform: WechatPlatform) -> AsyncIterator[Hub]:
    sources = [
        {"id": "wx", "kind": "wechat", "app_id": APP_ID, "token": TOKEN, "encoding_aes_key": aes_key,
         "app_secret": platform.app_secret, "api_url": platform.base_url},
        {"id": "wx-shop", "kind": "wechat", "app_id": APP_ID, "token": TOKEN, "encoding_aes_key": aes_key,
         "safe_mode_only": True, "app_secret": platform.app_secret, "api_url": platform.base_url},
    ]
    h = Hub(make_config(registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=None,
                        sources=sources), registry)
    await h.start()
    yield h
    await h.stop()


def pusher(hub: Hub, aes_key: str, source: str = "wx", **kw: Any) -> WechatPusher:
    return WechatPusher(f"http://127.0.0.1:{hub.port}/webhooks/{source}", TOKEN, APP_ID, aes_key, **kw)


async def test_url_check_echoes_echostr_and_refuses_a_forged_one(hub: Hub, aes_key: str) -> None:
    p = pusher(hub, aes_key)
    async with aiohttp.ClientSession() as http:
        status, text = await p.check_url(http)
        assert status == 200 and text.isdigit()  # the echostr itself, plain text
        forged = WechatPusher(p.url, "not-the-token", APP_ID, aes_key)
        status, text = await forged.check_url(http)
        assert status == 401 and "signature does not match" in text


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_safe_mode_message_opens_an_inquiry_and_the_next_one_joins_it(
        hub: Hub, aes_key: str, fmt: str) -> None:
    p = pusher(hub, aes_key, fmt=fmt)
    openid = p.openid()
    async with aiohttp.ClientSession() as http:
        assert await p.send(http, p.text(openid, "你好，我买的杯子碎了怎么办")) == (200, "success")
        await wait_until(lambda: _count_is(hub, tickets, 1))
        assert await p.send(http, p.text(openid, "订单号 12345")) == (200, "success")
        await wait_until(lambda: _count_is(hub, ticket_events, 2, ticket_events.c.kind == "message"))
    async with hub.db.read() as conn:
        t = (await conn.execute(sa.select(tickets))).one()
        texts = [r.detail["text"] for r in (await conn.execute(
            sa.select(ticket_events).where(ticket_events.c.kind == "message").order_by(ticket_events.c.id))).all()]
    assert (t.type, t.status, t.channel) == ("inquiry", "new", "wechat")
    assert texts == ["你好，我买的杯子碎了怎么办", "订单号 12345"]
    assert await count(hub, tickets) == 1


async def test_forgeries_get_a_clear_4xx_and_nothing_is_stored(hub: Hub, aes_key: str) -> None:
    p = pusher(hub, aes_key)
    msg = p.text(p.openid())
    async with aiohttp.ClientSession() as http:
        query, body = p.envelope(msg)
        bad_sig = dict(query, msg_signature="0" * 40)
        status, text = await _post(http, p.url, bad_sig, body)
        assert status == 401 and "msg_signature does not match" in text
        other_app = WechatPusher(p.url, TOKEN, "wx0000000000000000", aes_key)
        status, text = await other_app.send(http, msg)
        assert status == 401 and "another appid" in text
        wrong_key = WechatPusher(p.url, TOKEN, APP_ID, new_aes_key())
        status, text = await wrong_key.send(http, msg)
        assert status == 400 and ("bad padding" in text or "length" in text or "another appid" in text)
        plain = pusher(hub, aes_key, source="wx-shop", safe=False)
        status, text = await plain.send(http, msg)
        assert status == 401 and "safe mode only" in text
        stale = await p.send(http, msg, timestamp=1714112445)
        assert stale[0] == 401 and "from now" in stale[1]
    assert await count(hub, raw_events) == 0


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<xml><ToUserName>gh</ToUserName><Content>&lol9;</Content></xml>"""
EXTERNAL = b"""<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>
<xml><Content>&e;</Content></xml>"""


async def test_hostile_xml_is_refused_and_memory_stays_flat(hub: Hub, aes_key: str) -> None:
    p = pusher(hub, aes_key, safe=False, fmt="xml")
    async with aiohttp.ClientSession() as http:
        query, _ = p.envelope(p.text(p.openid()))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for _ in range(20):
            for body in (BILLION_LAUGHS, EXTERNAL):
                status, text = await _post(http, p.url, query, body)
                assert status == 400 and "XML refused" in text
        # Hidden inside a safe-mode envelope too.
        safe = pusher(hub, aes_key, fmt="xml")
        from connectors.wechat.crypto import WxCrypto
        crypto = WxCrypto(TOKEN, aes_key, APP_ID)
        enc = crypto.encrypt(BILLION_LAUGHS)
        q, _ = safe.envelope(safe.text(safe.openid()))
        q["msg_signature"] = crypto.msg_signature(q["timestamp"], q["nonce"], enc)
        status, text = await _post(http, p.url, q, to_xml({"ToUserName": "gh", "Encrypt": enc}).encode())
        assert status == 400 and "XML refused" in text
        grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 20_000  # a billion laughs expanded would need gigabytes
    assert await count(hub, raw_events) == 0


async def test_aftersale_events_fetch_detail_with_one_cached_token(
        hub: Hub, aes_key: str, platform: WechatPlatform) -> None:
    p = pusher(hub, aes_key, source="wx-shop")
    openid = p.openid()
    order = platform.create_order(openid, unionid="oUnion_42", kind="RETURN")
    async with aiohttp.ClientSession() as http:
        assert (await p.send(http, p.aftersale_event(order)))[0] == 200
        await wait_until(lambda: _status(hub, order["after_sale_order_id"], "pending_review"))
        platform.move(order, "USER_WAIT_RETURN")
        assert (await p.send(http, p.aftersale_event(order)))[0] == 200
        await wait_until(lambda: _status(hub, order["after_sale_order_id"], "awaiting_return"))
        platform.expire_tokens()  # another process took a new token: ours is refused
        platform.move(order, "MERCHANT_WAIT_RECEIPT")
        assert (await p.send(http, p.aftersale_event(order)))[0] == 200
        await wait_until(lambda: _status(hub, order["after_sale_order_id"], "return_shipped"))
    assert platform.calls["getaftersaleorder"] == 4  # 3 events, one retried after the refresh
    assert platform.calls["token"] == 2              # cached, refreshed once
    async with hub.db.read() as conn:
        t = (await conn.execute(sa.select(tickets))).one()
        kinds = {(r.kind, r.value) for r in (await conn.execute(sa.select(identities))).all()}
    assert t.type == "return_refund" and t.refund_amount == order["refund_info"]["amount"]
    assert {("wechat_openid", openid), ("wechat_unionid", "oUnion_42")} <= kinds


async def _post(http: aiohttp.ClientSession, url: str, query: dict[str, str], body: bytes) -> tuple[int, str]:
    async with http.post(url, params=query, data=body) as resp:
        return resp.status, await resp.text()


async def _count_is(hub: Hub, table: sa.Table, n: int, *where: Any) -> bool:
    return await count(hub, table, *where) == n


async def _status(hub: Hub, external_id: str, status: str) -> bool:
    return await count(hub, tickets, tickets.c.external_id == external_id, tickets.c.status == status) == 1
