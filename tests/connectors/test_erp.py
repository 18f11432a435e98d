"""The ERP destination against the local 聚水潭: the signed form, the record
as the ERP keeps it, every push once and in order through a bad day, and
the ERP's own refusals as dead letters naming its reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from connectors.erp.destination import ErpDestination, ErpDestinationConfig, outcome
from connectors.erp.signing import jushuitan_sign, jushuitan_verify
from connectors.erp.simulator import ErpSimulator
from connectors.faults import Faults
from connectors.website.simulator import WebsiteSimulator
from hub.errors import Permanent, Retryable
from hub.interfaces import Push, Receipt
from hub.records import outbox
from hub.registry import Registry
from tests.conftest import make_config, running, wait_until


def test_the_sign_is_the_secret_then_the_sorted_pairs_md5_lower_hex() -> None:
    params = {"version": "2", "app_key": "AK", "timestamp": "1733011200", "charset": "utf-8",
              "access_token": "TOK", "biz": '[{"outer_as_id":"1"}]'}
    # md5("s3cret" + "access_tokenTOK" + "app_keyAK" + "biz[…]" + "charsetutf-8" + "timestamp…" + "version2")
    assert jushuitan_sign("s3cret", params) == "cb7c8a88d22de355bf4f919f2712219d"
    assert jushuitan_verify("s3cret", {**params, "sign": "CB7C8A88D22DE355BF4F919F2712219D"})
    assert not jushuitan_verify("s3cret", {**params, "biz": "[]", "sign": "cb7c8a88d22de355bf4f919f2712219d"})


def test_answers_become_outcomes() -> None:
    ok = '{"code":0,"msg":"执行成功","data":{"datas":[{"outer_as_id":"A","issuccess":true}]}}'
    assert outcome(Receipt(200, ok)).status == 200
    with pytest.raises(Permanent, match="refused after-sale A: 已确认"):
        outcome(Receipt(200, '{"code":0,"data":{"datas":[{"outer_as_id":"A","issuccess":false,"msg":"已确认"}]}}'))
    with pytest.raises(Permanent, match="code 40"):
        outcome(Receipt(200, '{"code":40,"msg":"参数错误"}'))
    with pytest.raises(Retryable, match="code 11: 签名错误"):  # credentials get fixed: retried
        outcome(Receipt(200, '{"code":11,"msg":"签名错误"}'))
    with pytest.raises(Retryable):
        outcome(Receipt(200, "<html>gateway</html>"))


@pytest.fixture
async def erp() -> AsyncIterator[ErpSimulator]:
    s = ErpSimulator(faults=Faults(fail_rate=0.3, throttle_rate=0.1, rng=__import__("random").Random(3)))
    await s.start()
    yield s
    await s.stop()


def _erp_destination(sim: ErpSimulator, **extra: Any) -> dict[str, Any]:
    return {"id": "erp", "kind": "erp", "url": sim.url, "app_key": sim.app_key, "app_secret": sim.app_secret,
            "access_token": sim.access_token, "shop_id": 10001, "mapping": "erp"} | extra


async def test_each_change_upserts_once_and_in_order_through_a_bad_day(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, erp: ErpSimulator,
        website: WebsiteSimulator) -> None:
    cfg = make_config(registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=None,
                      destinations=[_erp_destination(erp)],
                      sync=[{"on": ["ticket.created", "ticket.status_changed"], "to": "erp"}])
    async with running(cfg, registry) as hub, aiohttp.ClientSession() as http:
        ids = []
        for n in range(5):
            first = website.request(request_id=f"E{n}", kind="return")
            ids.append(first["data"]["request_id"])
            for m in (first, website.request(request_id=f"E{n}", order_id=first["data"]["order_id"],
                                             kind="return", event_type="aftersale.updated",
                                             status="awaiting_return")):
                body, headers = website.sign(m)
                async with http.post(f"http://127.0.0.1:{hub.port}/webhooks/site", data=body, headers=headers) as r:
                    assert r.status == 200

        async def delivered() -> bool:
            async with hub.db.read() as conn:
                states = (await conn.execute(sa.select(outbox.c.state))).scalars().all()
            return len(states) == 10 and set(states) == {"delivered"}

        await wait_until(delivered, timeout=60, interval=0.1)
    assert sum(erp.faults.injected.values()) > 0  # it did have a bad day
    for outer in ids:
        assert erp.history(outer) == ["WAIT_SELLER_AGREE", "WAIT_BUYER_RETURN_GOODS"]
    record = erp.records["E0"]
    assert record["shop_id"] == 10001 and record["type"] == "普通退货" and record["so_id"].startswith("SO")
    assert record["refund"].count(".") == 1 and record["items"][0]["qty"] == 1
    assert record["items"][0]["type"] == "退货" and record["good_status"] == "BUYER_RECEIVED"


async def test_a_record_the_erp_refuses_is_a_dead_letter_with_its_reason(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, website: WebsiteSimulator) -> None:
    sim = ErpSimulator(locked={"L1"})
    await sim.start()
    try:
        cfg = make_config(registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=None,
                          destinations=[_erp_destination(sim)], sync=[{"on": ["ticket.created"], "to": "erp"}])
        async with running(cfg, registry) as hub, aiohttp.ClientSession() as http:
            body, headers = website.sign(website.request(request_id="L1"))
            async with http.post(f"http://127.0.0.1:{hub.port}/webhooks/site", data=body, headers=headers) as r:
                assert r.status == 200

            async def dead() -> Any:
                async with hub.db.read() as conn:
                    return (await conn.execute(sa.select(outbox.c.last_error).where(outbox.c.state == "dead"))).first()

            await wait_until(dead, timeout=10)
            assert "不可修改" in (await dead()).last_error
        assert sim.refused == ["L1"] and sim.records == {}
    finally:
        await sim.stop()


def test_a_variant_names_what_it_lacks() -> None:
    with pytest.raises(ValueError, match="variant jushuitan needs app_key, app_secret, access_token, shop_id"):
        ErpDestinationConfig(id="erp", kind="erp", url="https://x/upload")
    with pytest.raises(ValueError, match="variant webhook needs secret"):
        ErpDestinationConfig(id="erp", kind="erp", variant="webhook", url="https://x/hook")
    cfg = ErpDestinationConfig(id="erp", kind="erp", url="https://x/upload", app_key="k", app_secret="s",
                               access_token="t", shop_id=7)
    form = ErpDestination(cfg).form(Push(1, "erp", "msg_1", "ticket.created", b'{"outer_as_id":"X"}', 1), now=5)
    assert form["biz"] == '[{"outer_as_id":"X","shop_id":7}]' and jushuitan_verify("s", form)
