"""Taobao write-back against the simulated gateway: each hub decision becomes
the one TOP call that carries it out, never an echo of Taobao's own move."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.taobao.simulator import TaobaoSimulator
from connectors.taobao.writeback import TaobaoWriteback, TaobaoWritebackConfig
from hub.daemon import Hub
from hub.errors import Permanent, Retryable
from hub.interfaces import Push
from hub.records import outbox, tickets
from hub.registry import Registry
from tests.conftest import count, deliver_once, make_config, render_push, running, wait_until
from tests.connectors.test_taobao_flow import taobao_source

ADDRESS = {"name": "售后仓", "address": "杭州市余杭区仓前街道1号", "post": "311100",
           "mobile": "13900000000", "seller_address_id": 1001}


@pytest.fixture
async def sim() -> AsyncIterator[TaobaoSimulator]:
    s = TaobaoSimulator(seed=8)
    await s.start()
    yield s
    await s.stop()


def writeback(sim: TaobaoSimulator, **extra: Any) -> TaobaoWriteback:
    return TaobaoWriteback(TaobaoWritebackConfig(**({
        "id": "tbw", "kind": "taobao", "api_url": sim.url, "app_key": sim.app_key,
        "app_secret": sim.app_secret, "session": sim.session, "source": "tb",
        "return_address": ADDRESS} | extra)))


def push_for(refund: dict[str, Any], to_status: str, amount: int | None = None) -> Push:
    ctx = {"ticket": {"external_id": str(refund["refund_id"]), "source_id": "tb", "channel": "taobao",
                      "refund_amount": amount if amount is not None else round(float(refund["refund_fee"]) * 100)},
           "change": {"from": "pending_review", "to": to_status}}
    return render_push("taobao_writeback", ctx, "tbw")


async def test_reject_refuses_on_taobao_once(sim: TaobaoSimulator) -> None:
    refund = sim.create_refund()
    dest = writeback(sim)
    receipt = await deliver_once(dest, push_for(refund, "rejected"))
    assert receipt.status == 200 and "refused" in receipt.body
    assert refund["status"] == "SELLER_REFUSE_BUYER" and sim.calls["taobao.refund.refuse"] == 1
    again = await deliver_once(dest, push_for(refund, "rejected"))  # a retry of the same push
    assert "already" in again.body and sim.calls["taobao.refund.refuse"] == 1


async def test_agree_refund_and_agree_return(sim: TaobaoSimulator) -> None:
    dest = writeback(sim)
    refund_only = next(r for r in (sim.create_refund() for _ in range(20)) if not r["has_good_return"])
    await deliver_once(dest, push_for(refund_only, "refund_pending"))
    assert refund_only["status"] == "SUCCESS"
    with_return = next(r for r in (sim.create_refund() for _ in range(20)) if r["has_good_return"])
    await deliver_once(dest, push_for(with_return, "awaiting_return"))
    assert with_return["status"] == "WAIT_BUYER_RETURN_GOODS"
    assert sim.calls["taobao.rp.returngoods.agree"] == 1 and sim.calls["taobao.rp.refunds.agree"] == 1


async def test_what_cannot_be_done_is_permanent(sim: TaobaoSimulator) -> None:
    dest = writeback(sim)
    refund = sim.create_refund()
    with pytest.raises(Permanent, match="now asks"):
        await deliver_once(dest, push_for(refund, "refund_pending", amount=1))
    sim.move(refund, "CLOSED")
    with pytest.raises(Permanent, match="can no longer be refused"):
        await deliver_once(dest, push_for(refund, "rejected"))
    returning = next(r for r in (sim.create_refund() for _ in range(20)) if r["has_good_return"])
    with pytest.raises(Permanent, match="return_address is not configured"):
        await deliver_once(writeback(sim, return_address=None), push_for(returning, "awaiting_return"))


async def test_call_limit_is_retryable_with_the_ban_time(sim: TaobaoSimulator) -> None:
    refund = sim.create_refund()
    sim.quota.inject(1)
    with pytest.raises(Retryable) as err:
        await deliver_once(writeback(sim), push_for(refund, "rejected"))
    assert err.value.retry_after == 1.0


async def test_taobao_own_move_is_not_echoed_back(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, sim: TaobaoSimulator) -> None:
    cfg = make_config(registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=None,
                      sources=[taobao_source(sim)],
                      destinations=[{"id": "tbw", "kind": "taobao", "api_url": sim.url,
                                     "app_key": sim.app_key, "app_secret": sim.app_secret,
                                     "session": sim.session, "source": "tb"}],
                      sync=[{"on": "ticket.status_changed", "status": "rejected", "to": "tbw"}])
    hub = Hub(cfg, registry)
    await hub.start()
    try:
        refund = sim.create_refund()
        await wait_until(lambda: sim.calls["taobao.tmc.messages.confirm"] >= 1, timeout=10)
        sim.move(refund, "SELLER_REFUSE_BUYER")  # the seller refused in Taobao's own console
        await wait_until(lambda: _delivered(hub), timeout=10)
        assert sim.calls["taobao.refund.refuse"] == 0
    finally:
        await hub.stop()


async def _delivered(hub: Any) -> bool:
    return await count(hub, outbox, outbox.c.state == "delivered") == 1


@pytest.mark.parametrize("paced", [True, False])
async def test_a_backlog_waits_for_the_quota_before_its_attempts_not_inside_them(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, sim: TaobaoSimulator,
        paced: bool) -> None:
    # 40 pushes at once against a TOP quota of 20 calls/s with a burst of 5 and a 1 s timeout.
    # Paced by the quota (the default), each attempt starts when its calls are there; with
    # the pushes let loose (a rate far above the quota), the later ones wait for the
    # client's bucket inside their timeout and fail as if Taobao had not answered.
    tbw = {"id": "tbw", "kind": "taobao", "api_url": sim.url, "app_key": sim.app_key,
           "app_secret": sim.app_secret, "session": sim.session, "source": "tb", "timeout": "1s",
           "quota": {"calls_per_second": 20, "burst": 5}} | ({} if paced else {"rate": 1000})
    cfg = make_config(registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=None,
                      sources=[taobao_source(sim)], destinations=[tbw],
                      sync=[{"on": "ticket.status_changed", "status": "rejected", "to": "tbw"}])
    async with running(cfg, registry) as hub:
        refunds = [sim.create_refund() for _ in range(40)]
        await wait_until(lambda: _tickets(hub, 40), timeout=15, interval=0.1)
        for r in refunds:
            sim.move(r, "SELLER_REFUSE_BUYER")
        await wait_until(lambda: _pushes(hub, 40), timeout=15, interval=0.1)
        if paced:
            await wait_until(lambda: _settled(hub), timeout=30, interval=0.1)
            async with hub.db.read() as conn:
                attempts = list((await conn.execute(sa.select(outbox.c.attempts))).scalars())
            assert attempts == [1] * 40  # no attempt timed out waiting for the quota
        else:  # what pacing prevents
            await wait_until(lambda: _timed_out(hub), timeout=15, interval=0.1)


async def _tickets(hub: Any, n: int) -> bool:
    return await count(hub, tickets) == n


async def _pushes(hub: Any, n: int) -> bool:
    return await count(hub, outbox) == n


async def _timed_out(hub: Any) -> bool:
    return await count(hub, outbox, outbox.c.last_error.like("no answer within%")) > 0


async def _settled(hub: Any) -> bool:
    return await count(hub, outbox, outbox.c.state != "delivered") == 0
