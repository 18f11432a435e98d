"""The return loop across the downstream systems, against their simulators:
a return request → ERP upsert → WMS return notice → the WMS reports the goods
received → finance refund record → finance reports it paid → resolved, the
ERP told each step and the customer sent an SMS and an e-mail at "send it
back" and at "refunded"; every system saw each push once, in order. And what a
report must not slip past: partial or damaged goods, a different amount, a
forged or unknown callback, a second copy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from connectors.erp.simulator import ErpSimulator
from connectors.finance.simulator import finance
from connectors.notify.sms_simulator import SmsSimulator
from connectors.notify.smtp_simulator import SmtpSimulator
from connectors.reporting import ReportingReceiver
from connectors.website.simulator import WebsiteSimulator
from connectors.wms.simulator import warehouse
from hub import standard_webhooks
from hub.daemon import Hub
from hub.records import raw_events, ticket_events, tickets
from hub.registry import Registry
from tests.conftest import make_config, running, settled, wait_until

SYNC = [{"on": ["ticket.created", "ticket.status_changed", "ticket.updated"], "to": "erp"},
        {"on": "ticket.status_changed", "status": "awaiting_return", "to": "wms"},
        {"on": "ticket.status_changed", "status": "return_received", "to": "finance"},
        {"on": "ticket.status_changed", "status": ["awaiting_return", "resolved"], "to": ["sms", "mail"]}]


@pytest.fixture
async def notices() -> AsyncIterator[tuple[SmsSimulator, SmtpSimulator]]:
    sms, smtp = SmsSimulator(), SmtpSimulator()
    await sms.start()
    smtp.start()
    yield sms, smtp
    await sms.stop()
    smtp.stop()


@pytest.fixture
async def systems() -> AsyncIterator[tuple[ErpSimulator, ReportingReceiver, ReportingReceiver]]:
    erp, wms, fin = ErpSimulator(), warehouse(short={"P2"}, damaged={"D3"}), finance(short_paid={"M4"})
    for s in (erp, wms, fin):
        await s.start()
    yield erp, wms, fin
    for s in (erp, wms, fin):
        await s.stop()


@pytest.fixture
async def loop_hub(registry: Registry, db_url: str, pii_key: str, site_secret: str,
                   systems: tuple[ErpSimulator, ReportingReceiver, ReportingReceiver],
                   notices: tuple[SmsSimulator, SmtpSimulator]) -> AsyncIterator[Hub]:
    erp, wms, fin = systems
    sms, smtp = notices
    cfg = make_config(registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=None,
                      destinations=[{"id": "erp", "kind": "erp", "url": erp.url, "app_key": erp.app_key,
                                     "app_secret": erp.app_secret, "access_token": erp.access_token,
                                     "shop_id": 10001},
                                    wms.config(), fin.config(),
                                    {"id": "sms", "kind": "notify", "via": "sms", "url": sms.url, "pii": True,
                                     "access_key_id": sms.access_key_id,
                                     "access_key_secret": sms.access_key_secret, "sign_name": "好店"},
                                    {"id": "mail", "kind": "notify", "via": "email", "pii": True,
                                     "smtp_host": "127.0.0.1", "smtp_port": smtp.port, "starttls": False,
                                     "sender": "aftersales@shop.example"}],
                      sync=SYNC)
    async with running(cfg, registry) as hub:
        for s in (wms, fin):
            s.hub_url = f"http://127.0.0.1:{hub.port}"
        yield hub


async def _request(hub: Hub, website: WebsiteSimulator, request_id: str) -> None:
    first = website.request(request_id=request_id, kind="return")
    then = website.request(request_id=request_id, order_id=first["data"]["order_id"], kind="return",
                           event_type="aftersale.updated", status="awaiting_return")
    async with aiohttp.ClientSession() as http:
        for m in (first, then):
            body, headers = website.sign(m)
            async with http.post(f"http://127.0.0.1:{hub.port}/webhooks/site", data=body, headers=headers) as r:
                assert r.status == 200


async def _ticket(hub: Hub, external_id: str) -> Any:
    async with hub.db.read() as conn:
        return (await conn.execute(sa.select(tickets).where(tickets.c.external_id == external_id))).first()


async def test_a_return_goes_round_the_loop_once_and_in_order(
        loop_hub: Hub, website: WebsiteSimulator,
        systems: tuple[ErpSimulator, ReportingReceiver, ReportingReceiver],
        notices: tuple[SmsSimulator, SmtpSimulator]) -> None:
    erp, wms, fin = systems
    sms, smtp = notices
    await _request(loop_hub, website, "R1")

    async def resolved() -> bool:
        t = await _ticket(loop_hub, "R1")
        return t is not None and t.status == "resolved" and await settled(loop_hub)

    await wait_until(resolved, timeout=30, interval=0.1)
    assert erp.history("R1") == ["WAIT_SELLER_AGREE", "WAIT_BUYER_RETURN_GOODS", "WAIT_SELLER_CONFIRM_GOODS",
                                 "SUCCESS"]
    assert [p["data"]["status"] for p in wms.acted] == ["awaiting_return"]
    assert [p["data"]["status"] for p in fin.acted] == ["return_received"]
    assert set(wms.seen.values()) == set(fin.seen.values()) == {1}
    assert len(wms.reports) == len(fin.reports) == 1
    # The customer heard twice each way: please send it back; refunded.
    assert [m["template"] for m in sms.sent] == ["SMS_480100001", "SMS_480100003"]
    assert ["请寄回商品" in m["Subject"] for m in smtp.received] == [True, False]
    assert "退款已完成" in smtp.received[1]["Subject"] and set(smtp.copies.values()) == {1}
    t = await _ticket(loop_hub, "R1")
    assert t.flags in (None, [])
    async with loop_hub.db.read() as conn:
        kinds = [(e.kind, e.to_status) for e in (await conn.execute(
            sa.select(ticket_events).where(ticket_events.c.ticket_id == t.id).order_by(ticket_events.c.id))).all()
            if e.kind in ("callback", "status_changed")]
    assert kinds == [("status_changed", "awaiting_return"), ("callback", "return_received"),
                     ("status_changed", "return_received"), ("callback", "resolved"), ("status_changed", "resolved")]


async def test_partial_damaged_and_short_paid_are_flagged_never_silently_accepted(
        loop_hub: Hub, website: WebsiteSimulator,
        systems: tuple[ErpSimulator, ReportingReceiver, ReportingReceiver]) -> None:
    erp, wms, fin = systems
    for rid in ("P2", "D3", "M4"):
        await _request(loop_hub, website, rid)

    async def done() -> bool:
        found = [await _ticket(loop_hub, rid) for rid in ("P2", "D3", "M4")]
        return all(t is not None and t.status == "resolved" for t in found) \
            and len(fin.reports) == 3 and await settled(loop_hub)

    await wait_until(done, timeout=30, interval=0.1)
    # Flagged, not refused: the refund goes on and the team sees the flag on the ticket.
    # One short: nothing came back (the request had one item), so no receipt line at all.
    assert (await _ticket(loop_hub, "P2")).flags == ["partial_receipt"]
    assert (await _ticket(loop_hub, "D3")).flags == ["damaged_goods"]
    assert (await _ticket(loop_hub, "M4")).flags == ["refund_amount_differs"]
    # Flags travel with the ticket: finance saw the damaged one flagged, the ERP its final record.
    assert [p["data"]["flags"] for p in fin.acted if p["data"]["after_sale_no"] == "D3"] == [["damaged_goods"]]


async def test_a_forged_unknown_or_repeated_callback_changes_nothing(
        loop_hub: Hub, website: WebsiteSimulator,
        systems: tuple[ErpSimulator, ReportingReceiver, ReportingReceiver]) -> None:
    _, wms, _ = systems
    url = f"http://127.0.0.1:{loop_hub.port}/callbacks/wms"
    key = standard_webhooks.decode_secret(wms.callback_secret)
    body = b'{"type":"return.received","data":{"ticket_id":999,"receipt_no":"RK1","received":[]}}'
    async with aiohttp.ClientSession() as http:
        forged = standard_webhooks.headers_for(standard_webhooks.decode_secret(standard_webhooks.new_secret()),
                                               "cb_x", body)
        async with http.post(url, data=body, headers=forged) as r:
            assert r.status == 401
        async with http.post(f"http://127.0.0.1:{loop_hub.port}/callbacks/nope", data=body,
                             headers=standard_webhooks.headers_for(key, "cb_y", body)) as r:
            assert r.status == 404
        async with http.post(f"http://127.0.0.1:{loop_hub.port}/webhooks/callback:wms", data=body,
                             headers=standard_webhooks.headers_for(key, "cb_z", body)) as r:
            assert r.status == 404  # reports come in at /callbacks/ only
        statuses = []
        for msg_id in ("cb_1", "cb_1", "cb_2"):  # a retry, then the same report under a new id
            async with http.post(url, data=body, headers=standard_webhooks.headers_for(key, msg_id, body)) as r:
                assert r.status == 200
                statuses.append((await r.json())["status"])
    # The retry is a duplicate of its message; the same report under a new id is one by its content.
    assert statuses == ["accepted", "duplicate", "duplicate"]

    async def quarantined() -> list[Any]:
        async with loop_hub.db.read() as conn:
            return list((await conn.execute(sa.select(raw_events.c.reason)
                                            .where(raw_events.c.state == "quarantined"))).scalars())

    await wait_until(quarantined, timeout=10)
    assert await quarantined() == ["callback for ticket '999', which the hub does not have"]
