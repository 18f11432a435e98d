"""`hub run` on several processes sharing one stream, one of them SIGKILLed mid-run.

Website requests (with status updates) arrive over the shared port while a
Taobao source is polled; a hub process is killed in the middle — on
PostgreSQL the one holding the poll lease, of three that hold every role; on
SQLite the intake process of its three (one role each). Afterwards: every event became its
ticket once, every push was delivered (at least once, and the receiver saw
each idempotency key), a ticket's pushes arrived in the order they were made,
and the poll lease went to a survivor (PostgreSQL) or the killed process was
restarted by the parent (SQLite).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa

from connectors.taobao.simulator import TaobaoSimulator
from connectors.webhook.receiver import Receiver
from connectors.website.simulator import WebsiteSimulator
from hub.records import outbox, raw_events, source_state, tickets, utcnow
from hub.storage import Database
from tests.conftest import resend_until_answered, wait_until
from tests.connectors.test_taobao_flow import taobao_source
from tests.daemons import daemon


@pytest.fixture
async def sim() -> AsyncIterator[TaobaoSimulator]:
    s = TaobaoSimulator(seed=21)
    await s.start()
    yield s
    await s.stop()


async def _lease_owner(db: Database) -> str | None:
    async with db.read() as conn:
        return (await conn.execute(sa.select(source_state.c.lease_owner)
                                   .where(source_state.c.source_id == "tb"))).scalar()


def _pid_of_owner(owner: str) -> int:
    return int(owner.split(":")[1])


async def test_processes_share_a_stream_and_survive_one_killed(
        tmp_path: Path, db_url: str, pii_key: str, site_secret: str, sim: TaobaoSimulator,
        receiver: Receiver) -> None:
    now = utcnow()
    sim.populate(120, now - timedelta(hours=1), now - timedelta(seconds=30))
    postgres = not db_url.startswith("sqlite")
    hub = daemon(tmp_path, {
        "storage": {"url": db_url},
        "security": {"pii_key": pii_key},
        "sources": [{"id": "site", "kind": "website", "secret": site_secret},
                    taobao_source(sim, mode=["poll"], fetch_orders=False, lease="3s")],
        "destinations": [{"id": "hook", "kind": "webhook", "url": receiver.url, "secret": receiver.secret,
                          "timeout": "2s"}],
        "sync": [{"on": ["ticket.created", "ticket.status_changed"], "to": "hook"}],
        "pipeline": {"tick": "100ms"},
        "delivery": {"tick": "50ms", "lease": "5s",
                     "retry": {"initial": "100ms", "max_delay": "1s", "jitter": "10ms"}},
        "supervisor": {"processes": 3 if postgres else "auto", "max_backoff": "1s"},
        "logging": {"level": "warning"},
    })
    site = WebsiteSimulator(secret=site_secret, seed=31)
    db = Database(db_url)
    hub.start()
    try:
        async with aiohttp.ClientSession() as http:
            await hub.ready(http)
            await wait_until(lambda: _lease_owner(db), timeout=20)

            async def post(msg: dict[str, object]) -> None:
                body, headers = site.sign(msg)
                status = await resend_until_answered(http, f"{hub.url}/webhooks/site", body, headers,
                                                     pause=0.1, attempts=100)
                assert status == 200

            requests = [site.request() for _ in range(150)]
            updates = [site.request(request_id=m["data"]["request_id"], order_id=m["data"]["order_id"],
                                    event_type="aftersale.updated", status="awaiting_return")
                       for m in requests[:60]]
            sender = asyncio.gather(*(post(m) for m in requests[:75]))
            await sender
            # Kill one process mid-stream: on PostgreSQL the poll lease holder.
            children = hub.pids[1:]
            assert len(children) == 3
            # Forked children name their roles for ps and systemctl status.
            titles = sorted(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
                            for pid in children)
            expected = ["intake,processing,delivery"] * 3 if postgres else ["delivery", "intake", "processing"]
            assert titles == [f"hub: {roles} ({hub.config.resolve()})" for roles in expected]
            owner = await _lease_owner(db)
            assert owner is not None
            victim = _pid_of_owner(owner) if postgres else children[0]
            assert victim in children
            os.kill(victim, signal.SIGKILL)
            for msg in requests[75:]:
                sim.create_refund()
                await post(msg)
            await asyncio.gather(*(post(m) for m in updates))
            if postgres:
                await wait_until(lambda: _moved(db, owner), timeout=30)
            else:
                await wait_until(lambda: len(hub.pids) == 4 and victim not in hub.pids, timeout=30)
            total_refunds = len(sim.refunds)
            await wait_until(lambda: _all_done(db, 150, total_refunds), timeout=90, interval=0.3)
            await wait_until(lambda: _all_delivered(db), timeout=60, interval=0.3)
            async with db.read() as conn:
                keys = (await conn.execute(sa.select(outbox.c.ticket_id, outbox.c.idempotency_key)
                                           .order_by(outbox.c.id))).all()
                site_tickets = (await conn.execute(
                    sa.select(tickets.c.external_id).where(tickets.c.source_id == "site"))).scalars().all()
                tb_tickets = (await conn.execute(
                    sa.select(sa.func.count()).select_from(tickets).where(tickets.c.source_id == "tb"))).scalar()
    finally:
        assert hub.stop() == 0
        await db.close()
    # Every event its ticket, once.
    assert sorted(site_tickets) == sorted(str(m["data"]["request_id"]) for m in requests)
    assert tb_tickets == total_refunds
    # Every push delivered, and the receiver saw each key: 150 + 120+ created, 60 status changes, …
    seen = receiver.unique
    assert {k for _, k in keys} == set(seen)
    assert len(seen) >= 150 + total_refunds + 60
    # In order per ticket: first arrivals follow the order the pushes were made.
    made: dict[int, list[str]] = {}
    for ticket_id, key in keys:
        made.setdefault(ticket_id, []).append(key)
    arrived: dict[int, list[str]] = {}
    for r in receiver.received:
        tid = int(r.body["data"]["ticket"]["id"])
        if r.msg_id not in arrived.setdefault(tid, []):
            arrived[tid].append(r.msg_id)
    assert arrived == made


async def _moved(db: Database, old: str) -> bool:
    owner = await _lease_owner(db)
    return owner is not None and owner != old


async def _all_done(db: Database, site_requests: int, refunds: int) -> bool:
    async with db.read() as conn:
        pending = (await conn.execute(sa.select(sa.func.count()).select_from(raw_events)
                                      .where(raw_events.c.state != "done"))).scalar()
        made = (await conn.execute(sa.select(sa.func.count()).select_from(tickets))).scalar()
    assert pending is not None
    return pending == 0 and made == site_requests + refunds


async def _all_delivered(db: Database) -> bool:
    async with db.read() as conn:
        left = (await conn.execute(sa.select(sa.func.count()).select_from(outbox)
                                   .where(outbox.c.state != "delivered"))).scalar()
    return left == 0


async def test_the_parent_tells_systemd_ready_and_pings_while_its_processes_do(
        tmp_path: Path, pii_key: str, site_secret: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # a ping every 0.5 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    hub = daemon(tmp_path, {"storage": {"url": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"},
                            "security": {"pii_key": pii_key},
                            "sources": [{"id": "site", "kind": "website", "secret": site_secret}],
                            "supervisor": {"processes": 2}, "logging": {"level": "warning"}})
    hub.start()
    got: list[str] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline and got.count("WATCHDOG=1") < 3:
            try:
                got.append(sock.recv(4096).decode())
            except TimeoutError:
                await asyncio.sleep(0)
        assert len(hub.pids) == 3  # the parent and its two processes
    finally:
        assert hub.stop() == 0
        sock.close()
    assert got[0] == "READY=1", got  # once, when both processes are ready; nothing before it
    assert got.count("READY=1") == 1
    assert got.count("WATCHDOG=1") >= 3


def _allowed_cpus(pid: int, tid: int) -> str:
    for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no Cpus_allowed_list for {pid}/{tid}")


async def test_each_process_runs_on_the_cores_its_roles_are_given(
        tmp_path: Path, pii_key: str, site_secret: str, http: aiohttp.ClientSession) -> None:
    """supervisor.cpu_affinity: intake and delivery on core 0, the pipeline on the
    last core; every thread a child starts later inherits its core."""
    last = max(os.sched_getaffinity(0))
    hub = daemon(tmp_path, {"storage": {"url": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"},
                            "security": {"pii_key": pii_key},
                            "sources": [{"id": "site", "kind": "website", "secret": site_secret}],
                            "supervisor": {"processes": 3, "cpu_affinity": {
                                "intake": [0], "delivery": [0], "processing": [last]}},
                            "logging": {"level": "warning"}})
    hub.start()
    try:
        await hub.ready(http)
        titles = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode() for pid in hub.pids[1:]}
        assert len(titles) == 3
        def threads(pid: int) -> list[int]:
            return [int(t) for t in os.listdir(f"/proc/{pid}/task")]

        # Ready is intake answering; the others start their database threads as
        # their first poll comes round: the event loop and at least one of those.
        await wait_until(lambda: all(len(threads(pid)) > 1 for pid in titles))
        for pid, title in titles.items():
            want = str(last) if title.startswith("hub: processing") else "0"
            assert {_allowed_cpus(pid, t) for t in threads(pid)} == {want}, title
        # The parent keeps the cores it was started with; nothing was refused.
        assert _allowed_cpus(hub.pid, hub.pid) == _allowed_cpus(os.getpid(), os.getpid())
        assert "running unpinned" not in hub.log_tail()
    finally:
        assert hub.stop() == 0
