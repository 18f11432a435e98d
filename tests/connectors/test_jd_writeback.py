"""JD write-back against the simulated JOS gateway: a hub rejection becomes
jingdong.asc.audit.refuse once, never twice, never on a service past review."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from connectors.jd.simulator import JdSimulator
from connectors.jd.writeback import JdWriteback, JdWritebackConfig
from hub.errors import Permanent, Retryable
from hub.interfaces import Push
from tests.conftest import deliver_once, render_push


@pytest.fixture
async def sim() -> AsyncIterator[JdSimulator]:
    s = JdSimulator(seed=2)
    await s.start()
    yield s
    await s.stop()


def writeback(sim: JdSimulator) -> JdWriteback:
    return JdWriteback(JdWritebackConfig(
        id="jdw", kind="jd", api_url=sim.url, app_key=sim.app_key, app_secret=sim.app_secret,
        access_token=sim.access_token, source="jd"))


def push_for(service: dict[str, Any], to_status: str, source: str = "jd") -> Push:
    ctx = {"ticket": {"external_id": str(service["serviceId"]), "source_id": source},
           "order": {"external_id": str(service["orderId"])}, "change": {"to": to_status}}
    return render_push("jd_writeback", ctx, "jdw")


async def test_rejection_refuses_once(sim: JdSimulator) -> None:
    service = sim.create_service()
    dest = writeback(sim)
    assert "refused service" in (await deliver_once(dest, push_for(service, "rejected"))).body
    assert service["serviceStatus"] == 10003 and service["approveNotes"]
    assert "already refused" in (await deliver_once(dest, push_for(service, "rejected"))).body
    assert sim.calls["jingdong.asc.audit.refuse"] == 1


async def test_other_pushes_are_no_ops(sim: JdSimulator) -> None:
    service = sim.create_service()
    dest = writeback(sim)
    assert (await deliver_once(dest, push_for(service, "awaiting_return"))).status == 204
    assert (await deliver_once(dest, push_for(service, "rejected", source="other"))).status == 204
    assert sum(sim.calls.values()) == 0


async def test_past_review_is_permanent_and_limits_retry(sim: JdSimulator) -> None:
    service = sim.create_service()
    sim.move(service, 10005)
    with pytest.raises(Permanent, match="no longer under review"):
        await deliver_once(writeback(sim), push_for(service, "rejected"))
    sim.quota.inject(1)
    with pytest.raises(Retryable, match="67"):
        await deliver_once(writeback(sim), push_for(sim.create_service(), "rejected"))
