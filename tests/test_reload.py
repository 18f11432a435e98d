"""SIGHUP reloads the config without dropping in-flight work, and says so to systemd.

``hub run`` (its parent and three or two processes, SQLite; and a single process)
notifies a socket the test owns. A reload to a config with a second website
source: RELOADING, then READY; every request sent meanwhile is acknowledged
(none refused, none lost: each becomes its ticket and its push once); new
processes replace the old; the new source answers. A broken file: refused,
nothing replaced, the hub goes on as it was.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
import yaml

from connectors.webhook.receiver import Receiver
from connectors.website.simulator import WebsiteSimulator
from hub import standard_webhooks
from hub.records import raw_events, tickets
from hub.storage import Database
from tests.conftest import wait_until
from tests.daemons import Daemon, daemon


class Notified:
    """The socket systemd would own: every message the hub sends, in order."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    async def wait_for(self, prefix: str, after: int = 0, timeout: float = 60) -> int:
        """Index of the first message from ``after`` on that starts with ``prefix``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for i, m in enumerate(self.drain()[after:], after):
                if m.startswith(prefix):
                    return i
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no {prefix!r} after message {after}: {self.messages}")


@pytest.fixture
def notified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Notified:
    path = tmp_path / "notify.sock"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    n = Notified(path)
    yield n  # type: ignore[misc]
    n.sock.close()


def _config(tmp_path: Path, pii_key: str, site_secret: str, receiver: Receiver, processes: int,
            extra_sources: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"storage": {"url": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"},
            "security": {"pii_key": pii_key},
            "sources": [{"id": "site", "kind": "website", "secret": site_secret}, *(extra_sources or [])],
            "destinations": [{"id": "hook", "kind": "webhook", "url": receiver.url, "secret": receiver.secret}],
            "sync": [{"on": ["ticket.created"], "to": "hook"}],
            "pipeline": {"tick": "100ms"}, "delivery": {"tick": "50ms"},
            "supervisor": {"processes": processes}, "logging": {"level": "warning"}}


async def _keep_sending(http: aiohttp.ClientSession, hub: Daemon, site: WebsiteSimulator,
                        sent: list[str], statuses: list[int | str], until: asyncio.Event) -> None:
    while not until.is_set():
        msg = site.request()
        body, headers = site.sign(msg)
        try:
            async with http.post(f"{hub.url}/webhooks/site", data=body, headers=headers) as r:
                statuses.append(r.status)
                if r.status == 200:
                    sent.append(msg["data"]["request_id"])
        except aiohttp.ClientError as err:
            statuses.append(type(err).__name__)
        await asyncio.sleep(0.01)


async def _ticket_ids(db_url: str) -> list[tuple[str, str]]:
    db = Database(db_url)
    try:
        async with db.read() as conn:
            return [tuple(r) for r in (await conn.execute(sa.select(tickets.c.source_id,  # type: ignore[misc]
                                                                    tickets.c.external_id))).all()]
    finally:
        await db.close()


async def _pending(db_url: str) -> int:
    db = Database(db_url)
    try:
        async with db.read() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(raw_events)
                                           .where(raw_events.c.state == "pending"))).scalar_one())
    finally:
        await db.close()


@pytest.mark.parametrize("processes", [3, 2, 1])
async def test_sighup_reloads_without_dropping_anything(
        tmp_path: Path, pii_key: str, site_secret: str, receiver: Receiver, notified: Notified,
        processes: int) -> None:
    cfg = _config(tmp_path, pii_key, site_secret, receiver, processes)
    hub = daemon(tmp_path, cfg)
    site = WebsiteSimulator(secret=site_secret, seed=5)
    second = standard_webhooks.new_secret()
    hub.start()
    try:
        # A connection per request: a keep-alive connection the old process closes as
        # a request is being written on it is HTTP/1.1's own race, not a missing
        # listener; a refused or reset connection here would be one.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            await hub.ready(http)
            ready = await notified.wait_for("READY=1")
            before = hub.pids
            async with http.post(f"{hub.url}/webhooks/site2", data=b"{}") as r:
                assert r.status == 404  # not configured yet

            # A broken file: refused; nothing is replaced, no RELOADING.
            good = hub.config.read_text()
            hub.config.write_text(good.replace("kind: website", "kind: websit", 1))
            assert hub.proc is not None
            hub.proc.send_signal(signal.SIGHUP)
            refused = await notified.wait_for("STATUS=reload refused", after=ready + 1)
            assert not any(m.startswith("RELOADING") for m in notified.messages[ready + 1:refused + 1])
            assert hub.pids == before

            # A good one, while requests keep coming.
            cfg["sources"].append({"id": "site2", "kind": "website", "secret": second})
            hub.config.write_text(yaml.safe_dump({**cfg, "server": {"listen": f"127.0.0.1:{hub.port}"}}))
            sent: list[str] = []
            statuses: list[int | str] = []
            done = asyncio.Event()
            sender = asyncio.create_task(_keep_sending(http, hub, site, sent, statuses, done))
            await asyncio.sleep(0.5)
            mark = len(notified.drain())
            hub.proc.send_signal(signal.SIGHUP)
            reloading = await notified.wait_for("RELOADING=1", after=mark)
            assert "MONOTONIC_USEC=" in notified.messages[reloading]
            await notified.wait_for("READY=1", after=reloading + 1)
            await hub.ready(http)
            await asyncio.sleep(0.5)
            done.set()
            await sender

            if processes > 1:
                # Same parent (systemd's main PID); every process it runs is new.
                assert hub.pids[0] == before[0] and not set(hub.pids[1:]) & set(before[1:])
                assert set(statuses) == {200}, statuses  # the port was never without a listener
            else:
                assert hub.pids == before  # the same PID, started afresh on the new file
                assert statuses.count(200) == len(sent) and sent
            new_site = WebsiteSimulator(secret=second, seed=6)
            body, headers = new_site.sign(new_site.request())
            async with http.post(f"{hub.url}/webhooks/site2", data=body, headers=headers) as r:
                assert r.status == 200
            await receiver.wait_for(len(sent) + 1, timeout=30)

            async def settled() -> bool:
                return await _pending(cfg["storage"]["url"]) == 0

            await wait_until(settled, timeout=20)
        assert hub.stop() == 0, hub.log_tail()
    finally:
        if hub.proc is not None and hub.proc.poll() is None:
            hub.proc.kill()
    ids = await _ticket_ids(cfg["storage"]["url"])
    assert len(ids) == len(set(ids)) == len(sent) + 1  # each acknowledged request became one ticket
    assert {e for s, e in ids if s == "site"} == set(sent) and [s for s, _ in ids].count("site2") == 1
    assert len(receiver.unique) == len(sent) + 1
