"""Poll leases after a crash: a hub restarted on the same host takes its
sources back at once from a process that is gone, and never from one that
still runs (or runs elsewhere) before its lease expires."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from connectors.taobao.simulator import TaobaoSimulator
from hub import polling
from hub.daemon import Hub
from hub.records import source_state, utcnow
from hub.registry import Registry
from tests.conftest import start_hub, wait_until
from tests.connectors.test_taobao_flow import taobao_source


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_only_a_process_of_this_host_that_has_ended_is_gone() -> None:
    host = socket.gethostname()
    assert polling.owner_gone(f"{host}:{_dead_pid()}:abcd1234")
    assert polling.owner_gone(f"{host}:{os.getpid()}:0ld5e1f0")        # this pid's past self (a re-exec)
    assert not polling.owner_gone(polling.process_owner())             # another hub of this process
    assert not polling.owner_gone(f"{host}:{os.getppid()}:abcd1234")   # alive
    assert not polling.owner_gone(f"elsewhere-{host}:{_dead_pid()}:abcd1234")  # cannot tell: wait it out
    assert not polling.owner_gone(None) and not polling.owner_gone("garbage")


@pytest.fixture
async def sim() -> AsyncIterator[TaobaoSimulator]:
    s = TaobaoSimulator(seed=5)
    await s.start()
    yield s
    await s.stop()


@pytest.mark.parametrize("alive", [False, True])
async def test_a_restarted_hub_takes_back_the_lease_of_its_dead_self_at_once(
        registry: Registry, db_url: str, pii_key: str, site_secret: str, sim: TaobaoSimulator, alive: bool) -> None:
    hub = await start_hub(registry, db_url, pii_key, site_secret, [taobao_source(sim)])
    try:
        await wait_until(lambda: _owner(hub), timeout=10)
        # As a SIGKILL leaves it: the lease held for two more minutes by a process that is gone (or not).
        holder = f"{socket.gethostname()}:{os.getppid() if alive else _dead_pid()}:deadbeef"
        async with hub.db.write() as conn:
            await conn.execute(sa.update(source_state).where(source_state.c.source_id == "tb").values(
                lease_owner=holder, lease_until=utcnow() + timedelta(minutes=2)))
        hub.pollers["tb"]._lease_until = None  # as a new process starts: holding nothing
        calls = sum(sim.calls.values())
        if alive:
            await asyncio.sleep(2)  # ten poll intervals
            assert sum(sim.calls.values()) - calls <= 2 and await _owner(hub) == holder
        else:
            await wait_until(lambda: _taken(hub, holder), timeout=5)
            await wait_until(lambda: _more_calls(sim, calls + 3), timeout=5)
    finally:
        await hub.stop()


async def _owner(hub: Hub) -> str | None:
    async with hub.db.read() as conn:
        return (await conn.execute(sa.select(source_state.c.lease_owner).where(
            source_state.c.source_id == "tb"))).scalar()


async def _taken(hub: Hub, holder: str) -> bool:
    owner = await _owner(hub)
    return owner is not None and owner != holder


async def _more_calls(sim: TaobaoSimulator, n: int) -> bool:
    return sum(sim.calls.values()) >= n
