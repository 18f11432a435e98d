"""The whole return loop from a marketplace: a Taobao refund with goods return
→ ticket → ERP upsert → (the seller agrees the return on Taobao) WMS return
notice → (the buyer ships) the buyer's waybill reaches the WMS and the ERP →
the WMS reports the goods received → finance refund record → finance reports
it paid → the hub agrees the refund on Taobao (write-back) → resolved → the
customer gets an SMS and an e-mail; every system saw each of its pushes once,
in order, and Taobao's own moves were never echoed back at it."""

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
from connectors.taobao.simulator import TaobaoSimulator
from connectors.website.simulator import Customer, WebsiteSimulator
from connectors.wms.simulator import warehouse
from hub.daemon import Hub
from hub.records import outbox, tickets
from hub.registry import Registry
from tests.conftest import make_config, running, settled, wait_until
from tests.connectors.test_taobao_flow import taobao_source
from tests.connectors.test_taobao_writeback import ADDRESS

SYNC = [{"on": ["ticket.created", "ticket.status_changed", "ticket.updated"], "source": "tb", "to": "erp"},
        {"on": "ticket.status_changed", "status": ["awaiting_return", "return_shipped"], "to": "wms"},
        {"on": "ticket.status_changed", "status": "return_received", "to": "finance"},
        {"on": "ticket.status_changed", "status": ["awaiting_return", "resolved"], "source": "tb",
         "to": "tbw"},
        {"on": "ticket.status_changed", "status": ["awaiting_return", "resolved"], "to": ["sms", "mail"]}]


@pytest.fixture
async def taobao() -> AsyncIterator[TaobaoSimulator]:
    s = TaobaoSimulator(seed=11)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def downstream() -> AsyncIterator[dict[str, Any]]:
    systems: dict[str, Any] = {"erp": ErpSimulator(), "wms": warehouse(needs_waybill=True), "fin": finance(),
                               "sms": SmsSimulator(), "smtp": SmtpSimulator()}
    for name in ("erp", "wms", "fin", "sms"):
        await systems[name].start()
    systems["smtp"].start()
    yield systems
    for name in ("erp", "wms", "fin", "sms"):
        await systems[name].stop()
    systems["smtp"].stop()


@pytest.fixture
async def loop_hub(registry: Registry, db_url: str, pii_key: str, site_secret: str, taobao: TaobaoSimulator,
                   downstream: dict[str, Any]) -> AsyncIterator[Hub]:
    erp, wms, fin = downstream["erp"], downstream["wms"], downstream["fin"]
    sms, smtp = downstream["sms"], downstream["smtp"]
    cfg = make_config(
        registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=None,
        sources=[{"id": "site", "kind": "website", "secret": site_secret}, taobao_source(taobao)],
        destinations=[{"id": "erp", "kind": "erp", "url": erp.url, "app_key": erp.app_key,
                       "app_secret": erp.app_secret, "access_token": erp.access_token, "shop_id": 10001},
                      wms.config(), fin.config(),
                      {"id": "tbw", "kind": "taobao", "api_url": taobao.url, "app_key": taobao.app_key,
                       "app_secret": taobao.app_secret, "session": taobao.session, "source": "tb",
                       "return_address": ADDRESS},
                      {"id": "sms", "kind": "notify", "via": "sms", "url": sms.url, "pii": True,
                       "access_key_id": sms.access_key_id, "access_key_secret": sms.access_key_secret,
                       "sign_name": "好店"},
                      {"id": "mail", "kind": "notify", "via": "email", "pii": True, "smtp_host": "127.0.0.1",
                       "smtp_port": smtp.port, "starttls": False, "sender": "aftersales@shop.example"}],
        sync=SYNC)
    async with running(cfg, registry) as hub:
        for s in (wms, fin):
            s.hub_url = f"http://127.0.0.1:{hub.port}"
        yield hub


async def _ticket(hub: Hub, external_id: str) -> Any:
    async with hub.db.read() as conn:
        return (await conn.execute(sa.select(tickets).where(tickets.c.external_id == external_id))).first()


async def _status(hub: Hub, external_id: str) -> str | None:
    t = await _ticket(hub, external_id)
    return None if t is None else t.status


async def _pushes(hub: Hub, ticket_id: int, destination: str) -> list[str]:
    async with hub.db.read() as conn:
        return list((await conn.execute(
            sa.select(outbox.c.state).where(outbox.c.ticket_id == ticket_id,
                                            outbox.c.destination_id == destination)
            .order_by(outbox.c.id))).scalars())


async def test_a_taobao_return_goes_round_the_whole_loop_once_and_in_order(
        loop_hub: Hub, taobao: TaobaoSimulator, website: WebsiteSimulator, downstream: dict[str, Any]) -> None:
    erp, wms, fin = downstream["erp"], downstream["wms"], downstream["fin"]
    sms, smtp = downstream["sms"], downstream["smtp"]
    refund = taobao.create_refund(has_good_return=True)
    trade = taobao.trades[refund["tid"]]
    rid = str(refund["refund_id"])

    # The buyer once asked on the shop's website with the same phone and an
    # e-mail address: one customer, so the notices reach both.
    buyer = Customer(user_id="u-77", name=trade["receiver_name"], phone=trade["receiver_mobile"],
                     email="chen.jing@example.cn", address=trade["receiver_address"])
    body, headers = website.sign(website.request(buyer, kind="inquiry", request_id="W1"))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{loop_hub.port}/webhooks/site", data=body, headers=headers) as r:
            assert r.status == 200

    await wait_until(lambda: _is(loop_hub, rid, "pending_review"), timeout=15, interval=0.05)
    await wait_until(lambda: erp.history(rid) == ["WAIT_SELLER_AGREE"], timeout=15, interval=0.05)

    taobao.move(refund, "WAIT_BUYER_RETURN_GOODS")      # the seller agrees the return in 千牛
    await wait_until(lambda: len(wms.acted) == 1, timeout=15, interval=0.05)
    taobao.move(refund, "WAIT_SELLER_CONFIRM_GOODS")    # the buyer ships it back

    async def resolved() -> bool:
        return await _status(loop_hub, rid) == "resolved" and refund["status"] == "SUCCESS" \
            and await settled(loop_hub)

    await wait_until(resolved, timeout=40, interval=0.1)

    t = await _ticket(loop_hub, rid)
    assert (t.return_carrier, t.return_waybill) == (refund["company_name"], refund["sid"])
    # The ERP: every step of the one record, the waybill once the buyer shipped.
    ups = [u for u in erp.uploads if u["outer_as_id"] == rid]
    assert [(u["shop_status"], u["good_status"]) for u in ups] == [
        ("WAIT_SELLER_AGREE", "BUYER_RECEIVED"), ("WAIT_BUYER_RETURN_GOODS", "BUYER_RECEIVED"),
        ("WAIT_SELLER_CONFIRM_GOODS", "BUYER_RETURNED_GOODS"), ("WAIT_SELLER_CONFIRM_GOODS", "SELLER_RECEIVED"),
        ("SUCCESS", "SELLER_RECEIVED")]
    assert [u.get("l_id") for u in ups] == [None, None, refund["sid"], refund["sid"], refund["sid"]]
    # The WMS: the notice, then the waybill; one receipt, reported once.
    assert [(p["data"]["status"], p["data"]["return_waybill"]["waybill_no"]) for p in wms.acted] == [
        ("awaiting_return", None), ("return_shipped", refund["sid"])]
    assert len(wms.reports) == 1 and wms.reports[0]["data"]["received"] == [
        {"sku": refund["outer_id"], "qty": refund["num"], "condition": "good"}]
    # Finance: one refund record, in fen, against the buyer's payment, paid once.
    assert [(p["data"]["status"], p["data"]["amount_fen"], p["data"]["pay_reference"]) for p in fin.acted] == [
        ("return_received", round(float(refund["refund_fee"]) * 100), refund["alipay_no"])]
    assert len(fin.reports) == 1
    assert set(wms.seen.values()) == set(fin.seen.values()) == {1}
    # Taobao: the seller's own agreement was not echoed back; the refund was agreed once, by the hub.
    assert taobao.calls["taobao.rp.returngoods.agree"] == 0
    assert taobao.calls["taobao.rp.refunds.agree"] == 1
    assert await _pushes(loop_hub, t.id, "tbw") == ["delivered", "delivered"]
    # The customer: please send it back; refunded — by SMS to the Taobao phone, by e-mail from the website.
    assert [(m["phone"], m["template"]) for m in sms.sent] == [
        (trade["receiver_mobile"], "SMS_480100001"), (trade["receiver_mobile"], "SMS_480100003")]
    assert [m["To"] for m in smtp.received] == ["chen.jing@example.cn"] * 2
    assert "请寄回商品" in smtp.received[0]["Subject"] and "退款已完成" in smtp.received[1]["Subject"]
    assert set(smtp.copies.values()) == {1}
    assert t.flags in (None, [])


async def _is(hub: Hub, external_id: str, status: str) -> bool:
    return await _status(hub, external_id) == status
