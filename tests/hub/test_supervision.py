"""The daemon's workers under supervision: made to fail on purpose, the inbox
writer and the pipeline turn /readyz 503 with the reason, are restarted, and
no acknowledged event is lost; a stalled worker also withholds the systemd
watchdog ping, which is sent from the event loop only while all make progress."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from connectors.webhook.receiver import Receiver
from connectors.website.simulator import WebsiteSimulator
from hub.daemon import Hub
from hub.records import raw_events
from hub.registry import Registry
from tests.conftest import count, make_config, running, wait_until


async def _ready(http: aiohttp.ClientSession, hub: Hub) -> tuple[int, Any]:
    async with http.get(f"http://127.0.0.1:{hub.port}/readyz") as r:
        return r.status, await r.json()


async def _post(http: aiohttp.ClientSession, hub: Hub, website: WebsiteSimulator) -> int:
    body, headers = website.sign(website.request())
    async with http.post(f"http://127.0.0.1:{hub.port}/webhooks/site", data=body, headers=headers) as r:
        return r.status


async def _readyz_says(http: aiohttp.ClientSession, hub: Hub, words: str) -> list[str]:
    seen: list[str] = []

    async def check() -> bool:
        status, body = await _ready(http, hub)
        seen[:] = body.get("problems", [])
        return status == 503 and any(words in p for p in seen)

    await wait_until(check, timeout=10)
    return seen


async def test_the_inbox_writer_fails_is_restarted_and_the_waiting_request_is_stored(
        hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator, receiver: Receiver) -> None:
    real_take = hub.inbox._take
    failures = 3

    def take() -> Any:
        nonlocal failures
        if failures:
            failures -= 1
            raise RuntimeError("the writer broke")  # outside any batch: the task itself dies
        return real_take()

    hub.inbox._take = take  # type: ignore[method-assign]
    request = asyncio.create_task(_post(http, hub, website))
    problems = await _readyz_says(http, hub, "inbox-writer failing")
    assert any("last RuntimeError" in p for p in problems)
    assert await request == 200  # held in the queue across the restarts, then committed
    await wait_until(lambda: _ready_ok(http, hub))
    assert hub.supervisor.workers["inbox-writer"].restarts == 3
    await receiver.wait_for(1)
    assert await count(hub, raw_events) == 1


async def _ready_ok(http: aiohttp.ClientSession, hub: Hub) -> bool:
    return (await _ready(http, hub))[0] == 200


async def test_the_pipeline_fails_is_restarted_and_every_acknowledged_event_is_processed(
        hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator, receiver: Receiver) -> None:
    real = hub.pipeline.run_once
    failures = 3

    async def run_once() -> int:
        nonlocal failures
        if failures:
            failures -= 1
            raise RuntimeError("the pipeline broke")
        return await real()

    hub.pipeline.run_once = run_once  # type: ignore[method-assign]
    statuses = await asyncio.gather(*(_post(http, hub, website) for _ in range(5)))
    assert statuses == [200] * 5
    await _readyz_says(http, hub, "pipeline failing")
    await receiver.wait_for(5, timeout=20)
    assert await count(hub, raw_events, raw_events.c.state == "done") == 5
    await wait_until(lambda: _ready_ok(http, hub))


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A socket standing in for systemd's: what the hub notifies arrives here."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def _drain(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


@pytest.fixture
async def quick_stall_hub(registry: Registry, db_url: str, pii_key: str, site_secret: str,
                          receiver: Receiver) -> AsyncIterator[Hub]:
    cfg = make_config(registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret, receiver=receiver,
                      supervisor={"stall_after": "1s"})
    async with running(cfg, registry) as h:
        yield h


async def test_a_stalled_pipeline_turns_readyz_503_and_withholds_the_watchdog_ping(
        quick_stall_hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator,
        receiver: Receiver, notify_socket: socket.socket) -> None:
    hub = quick_stall_hub
    await hub.watchdog()
    assert _drain(notify_socket) == ["WATCHDOG=1"]
    real = hub.pipeline.run_once
    release = asyncio.Event()

    async def hang() -> int:
        await release.wait()  # stuck, as on a database call that never returns
        return await real()

    hub.pipeline.run_once = hang  # type: ignore[method-assign]
    hub.wake_pipeline()
    assert await _post(http, hub, website) == 200
    problems = await _readyz_says(http, hub, "pipeline stalled")
    assert any(p.startswith("pipeline stalled: no progress for ") for p in problems)
    await hub.watchdog()
    sent = _drain(notify_socket)
    assert "WATCHDOG=1" not in sent and any(m.startswith("STATUS=stalled: pipeline") for m in sent)

    hub.pipeline.run_once = real  # type: ignore[method-assign]
    release.set()
    await receiver.wait_for(1)
    await wait_until(lambda: _ready_ok(http, hub))
    await hub.watchdog()
    assert _drain(notify_socket) == ["WATCHDOG=1"]
