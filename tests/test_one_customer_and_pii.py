"""One customer across channels, and no phone number in clear anywhere.

A Taobao buyer files a refund; calls the 400 line from the same phone (in
another format) about it, keying in the order number; files a 微信小店
after-sale leaving that phone; and a second WeChat app sees the same unionid.
All of it is one customer. Then the database — every table's every column,
and the SQLite file bytes — and the hub's own log hold no trace of the number.
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from connectors.callcenter.simulator import CallCenterSimulator
from connectors.taobao.simulator import TaobaoSimulator
from connectors.wechat.simulator import WechatPlatform, WechatPusher, new_aes_key
from hub import logs
from hub.daemon import Hub
from hub.records import (
    customer_merges,
    customers,
    identities,
    metadata,
    orders,
    ticket_events,
    tickets,
)
from hub.registry import Registry
from tests.conftest import count, make_config, wait_until
from tests.connectors.test_taobao_flow import taobao_source

PASSWORD = "cc-push-password-1"
WX_TOKEN = "wx-token"


@pytest.fixture
async def sims() -> AsyncIterator[tuple[TaobaoSimulator, WechatPlatform]]:
    tb, wx = TaobaoSimulator(seed=31), WechatPlatform()
    await tb.start()
    await wx.start()
    yield tb, wx
    await tb.stop()
    await wx.stop()


@pytest.fixture
def log_lines() -> AsyncIterator[io.StringIO]:
    buf = io.StringIO()
    logs.configure("debug", "json", stream=buf)
    yield buf
    logs.configure("warning", "json")


async def test_one_customer_across_taobao_the_400_line_and_wechat_and_no_phone_in_clear(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, tmp_path: Path,
        sims: tuple[TaobaoSimulator, WechatPlatform], log_lines: io.StringIO) -> None:
    tb, wx = sims
    aes = new_aes_key()
    wechat = {"kind": "wechat", "app_id": wx.app_id, "token": WX_TOKEN, "encoding_aes_key": aes,
              "app_secret": wx.app_secret, "api_url": wx.base_url}
    cfg = make_config(registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=None,
                      sources=[taobao_source(tb, mode=["messages"]),
                               {"id": "cc-400", "kind": "callcenter", "username": "hub", "password": PASSWORD},
                               {"id": "wx-shop", **wechat}, {"id": "wx-mini", **wechat}])
    hub = Hub(cfg, registry)
    await hub.start()
    try:
        base = f"http://127.0.0.1:{hub.port}/webhooks"
        refund = tb.create_refund()
        trade = tb.trades[refund["tid"]]
        phone = trade["receiver_mobile"]
        await wait_until(lambda: _tickets(hub, 1), timeout=10)
        taobao_customer = await _customer_of(hub, str(refund["refund_id"]))

        cc = CallCenterSimulator(f"{base}/cc-400", "hub", PASSWORD)
        spaced = f"+86 {phone[:3]}-{phone[3:7]}-{phone[7:]}"  # how the switch shows it
        async with aiohttp.ClientSession() as http:
            # 1. A call about the open refund: it joins that ticket.
            call = cc.cdr(spaced, order_no=str(refund["tid"]))
            assert (await cc.push(http, call))[0] == 200
            await wait_until(lambda: _timeline(hub, "call", 1), timeout=10)
            assert await count(hub, tickets) == 1

            # 2. The refund is done; a complaint call opens its own ticket, same customer,
            #    linked to the Taobao order by the number keyed into the IVR.
            tb.move(refund, "SUCCESS")
            await wait_until(lambda: _status(hub, str(refund["refund_id"]), "resolved"), timeout=10)
            complaint = cc.cdr(phone, complaint=True, order_no=str(refund["tid"]))
            assert (await cc.push(http, complaint))[0] == 200
            await wait_until(lambda: _tickets(hub, 2), timeout=10)
            assert await _customer_of(hub, complaint["SessionId"]) == taobao_customer
            assert await _order_of(hub, complaint["SessionId"]) == await _order_of(hub, str(refund["refund_id"]))

            # 3. WeChat: the mini-program sees the buyer first (openid + unionid, no phone):
            #    a new customer for now. Then a 微信小店 after-sale leaves the same unionid
            #    *and* the phone: the two customers are one, and the merge is recorded.
            shop = WechatPusher(f"{base}/wx-shop", WX_TOKEN, wx.app_id, aes)
            mini = WechatPusher(f"{base}/wx-mini", WX_TOKEN, wx.app_id, aes)
            other = wx.create_order(mini.openid(), unionid="oUnion_buyer")
            other["details"]["tel_number"] = ""
            assert (await mini.send(http, mini.aftersale_event(other)))[0] == 200
            await wait_until(lambda: _tickets(hub, 3), timeout=10)
            assert await _customer_of(hub, other["after_sale_order_id"]) != taobao_customer
            order = wx.create_order(shop.openid(), unionid="oUnion_buyer")
            order["details"]["tel_number"] = phone
            assert (await shop.send(http, shop.aftersale_event(order)))[0] == 200
            await wait_until(lambda: _tickets(hub, 4), timeout=10)
            assert await count(hub, customer_merges) == 1
            assert await _timeline(hub, "merged", 1)
            assert (await mini.send(http, mini.text(other["openid"], f"我的手机号是{phone}，请回电")))[0] == 200
            await wait_until(lambda: _timeline(hub, "message", 1), timeout=10)

        async with hub.db.read() as conn:
            owners = {r.customer_id for r in (await conn.execute(sa.select(tickets.c.customer_id))).all()}
            roots = {await _root(conn, c) for c in owners}
        assert roots == {taobao_customer}, "every ticket belongs to the one customer"
        await _identities_listed_where_they_point(hub)

        # No phone number in clear: every column of every table…
        digits = re.sub(r"\D", "", phone)
        forms = {digits, f"{digits[:3]}-{digits[3:7]}-{digits[7:]}", f"{digits[:3]} {digits[3:7]} {digits[7:]}"}
        dump = await _dump_all_tables(hub)
        assert not [f for f in forms if f in dump], "a phone number is stored in clear"
        assert f"{digits[:3]}****{digits[-4:]}" in dump  # the chat text kept, the number masked
    finally:
        await hub.stop()
    # …the SQLite file and its WAL, byte for byte…
    if db_url.startswith("sqlite"):
        path = Path(db_url.split("///", 1)[1])
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert digits.encode() not in raw and phone.encode() not in raw
    # …and the hub's log.
    text = log_lines.getvalue()
    assert text, "the log captured something"
    assert digits not in text and not [f for f in forms if f in text]


async def _tickets(hub: Hub, n: int) -> bool:
    return await count(hub, tickets) == n


async def _timeline(hub: Hub, kind: str, n: int) -> bool:
    return await count(hub, ticket_events, ticket_events.c.kind == kind) == n


async def _status(hub: Hub, external_id: str, status: str) -> bool:
    return await count(hub, tickets, tickets.c.external_id == external_id, tickets.c.status == status) == 1


async def _customer_of(hub: Hub, external_id: str) -> int:
    async with hub.db.read() as conn:
        cid = (await conn.execute(sa.select(tickets.c.customer_id)
                                  .where(tickets.c.external_id == external_id))).scalar_one()
        return await _root(conn, cid)


async def _order_of(hub: Hub, external_id: str) -> Any:
    async with hub.db.read() as conn:
        return (await conn.execute(sa.select(orders.c.channel, orders.c.external_id).join(
            tickets, tickets.c.order_id == orders.c.id).where(tickets.c.external_id == external_id))).one()


async def _root(conn: Any, cid: int) -> int:
    while True:
        nxt = (await conn.execute(sa.select(customers.c.merged_into_id).where(customers.c.id == cid))).scalar()
        if nxt is None:
            return cid
        cid = nxt


async def _identities_listed_where_they_point(hub: Hub) -> None:
    """Each customer's row lists exactly the identities that name it, in id order
    (the merged-away one none: its identities moved with it)."""
    async with hub.db.read() as conn:
        rows = (await conn.execute(sa.select(customers))).all()
        named = (await conn.execute(sa.select(identities).order_by(identities.c.id))).all()
    assert len(named) >= 4
    for c in rows:
        assert c.identities == [[i.id, i.kind, i.value] for i in named if i.customer_id == c.id]
        if c.merged_into_id is not None:
            assert c.identities == []


async def _dump_all_tables(hub: Hub) -> str:
    out = []
    async with hub.db.read() as conn:
        for table in metadata.sorted_tables:
            for row in (await conn.execute(sa.select(table))).all():
                out.append(repr(tuple(row)))
    return "\n".join(out)
