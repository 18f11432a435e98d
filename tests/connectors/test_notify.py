"""Customer notices: Aliyun SendSms signed as the platform documents it,
e-mail through a real local SMTP server; each notice once per change however
often the provider stalls; nobody without a contact is sent anything; the
number never in a receipt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from connectors.notify.aliyun import outcome, pop_signature
from connectors.notify.destination import NotifyDestinationConfig, fill
from connectors.notify.sms_simulator import SmsSimulator
from connectors.notify.smtp_simulator import SmtpSimulator
from connectors.website.simulator import Customer, WebsiteSimulator
from hub.errors import Permanent, Retryable
from hub.records import outbox
from hub.registry import Registry
from tests.conftest import make_config, running, wait_until


def test_the_signature_matches_the_platforms_worked_example() -> None:
    # Alibaba Cloud's documented SendSms example (signature version 1.0), GET form.
    params = {"AccessKeyId": "testId", "Action": "SendSms", "Format": "XML", "OutId": "123",
              "PhoneNumbers": "15300000001", "RegionId": "cn-hangzhou", "SignName": "阿里云短信测试专用",
              "SignatureMethod": "HMAC-SHA1", "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
              "SignatureVersion": "1.0", "TemplateCode": "SMS_71390007", "TemplateParam": '{"customer":"test"}',
              "Timestamp": "2017-07-12T02:42:19Z", "Version": "2017-05-25"}
    assert pop_signature("testSecret", "GET", params) == "zJDF+Lrzhj/ThnlvIToysFRq6t4="


def test_answers_and_templates() -> None:
    assert outcome(200, '{"Code":"OK","BizId":"9^0"}') == "9^0"
    with pytest.raises(Retryable, match="BUSINESS_LIMIT_CONTROL"):
        outcome(200, '{"Code":"isv.BUSINESS_LIMIT_CONTROL","Message":"流控"}')
    with pytest.raises(Permanent) as refused:
        outcome(200, '{"Code":"isv.MOBILE_NUMBER_ILLEGAL","Message":"非法手机号 13912345678"}')
    assert "13912345678" not in str(refused.value)
    assert fill("退款 ¥{refund}（{ticket}）", {"refund": "19.90", "ticket": "T1"}) == "退款 ¥19.90（T1）"
    for unsafe in ("{name.__class__}", "{0}", "{params[x]}", "{missing}"):
        with pytest.raises(Permanent):
            fill(unsafe, {"name": "x"})
    with pytest.raises(ValueError, match="needs pii: true"):
        NotifyDestinationConfig(id="sms", kind="notify", via="sms", access_key_id="a", access_key_secret="b",
                                sign_name="店")


@pytest.fixture
async def providers() -> AsyncIterator[tuple[SmsSimulator, SmtpSimulator]]:
    sms, smtp = SmsSimulator(throttle_next=1), SmtpSimulator(defer=1)
    await sms.start()
    smtp.start()
    yield sms, smtp
    await sms.stop()
    smtp.stop()


async def test_each_notice_goes_once_by_each_way_and_only_to_whom_it_can(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, website: WebsiteSimulator,
        providers: tuple[SmsSimulator, SmtpSimulator]) -> None:
    sms, smtp = providers
    cfg = make_config(
        registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=None,
        destinations=[{"id": "sms", "kind": "notify", "via": "sms", "url": sms.url, "pii": True,
                       "access_key_id": sms.access_key_id, "access_key_secret": sms.access_key_secret,
                       "sign_name": "好店"},
                      {"id": "mail", "kind": "notify", "via": "email", "pii": True, "smtp_host": "127.0.0.1",
                       "smtp_port": smtp.port, "starttls": False, "sender": "售后 <aftersales@shop.example>"}],
        sync=[{"on": "ticket.status_changed", "status": ["awaiting_return", "resolved"], "to": ["sms", "mail"]}])
    known = Customer("u1", "李雷", "13912345678", "lilei@example.com", "北京市海淀区中关村 1 号")
    unknown = Customer("u2", "韩梅梅", "", "", "")
    async with running(cfg, registry) as hub, aiohttp.ClientSession() as http:
        for person, rid in ((known, "N1"), (unknown, "N2")):
            first = website.request(person, request_id=rid, kind="return")
            then = website.request(person, request_id=rid, order_id=first["data"]["order_id"], kind="return",
                                   event_type="aftersale.updated", status="awaiting_return")
            for m in (first, then):
                body, headers = website.sign(m)
                async with http.post(f"http://127.0.0.1:{hub.port}/webhooks/site", data=body,
                                     headers=headers) as r:
                    assert r.status == 200

        async def settled() -> list[Any]:
            async with hub.db.read() as conn:
                rows = (await conn.execute(sa.select(outbox.c.destination_id, outbox.c.state, outbox.c.attempts,
                                                     outbox.c.last_status, outbox.c.last_error)
                                           .order_by(outbox.c.id))).all()
            return rows if len(rows) == 4 and {r.state for r in rows} == {"delivered"} else []

        await wait_until(settled, timeout=30, interval=0.1)
        rows = await settled()
    assert [(r.destination_id, r.attempts) for r in rows] == [("sms", 2), ("mail", 2), ("sms", 1), ("mail", 1)]
    # Sent (SMS 200, SMTP 250) after one deferral each; nothing to send to a customer without a contact (204).
    assert [r.last_status for r in rows] == [200, 250, 204, 204]
    assert not [r for r in rows if "13912345678" in (r.last_error or "")]
    assert [(m["phone"], m["template"], m["sign"]) for m in sms.sent] == [("13912345678", "SMS_480100001", "好店")]
    assert sms.sent[0]["params"]["order"].startswith("SO")
    (mail,) = smtp.received
    assert mail["To"] == "lilei@example.com" and "N1" in mail["Subject"] and "请寄回商品" in mail["Subject"]
    assert "李雷" in mail.get_content() and mail["Message-ID"].startswith("<msg_mail_")
    assert set(smtp.copies.values()) == {1}
