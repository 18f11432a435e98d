"""Shared fixtures: a real database (SQLite file, or a fresh PostgreSQL
database when HUB_TEST_POSTGRES_URL is set), a running hub on loopback with
the website source and a signed-webhook receiver, and the website simulator."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from hypothesis import settings

from connectors.webhook.receiver import Receiver
from connectors.website.simulator import WebsiteSimulator
from hub import standard_webhooks
from hub.config import HubConfig, parse_config
from hub.daemon import Hub
from hub.records import outbox, raw_events, tickets, utcnow
from hub.registry import Registry
from hub.storage import Database
from hub.yamlfile import YamlDoc

PG_URL = os.environ.get("HUB_TEST_POSTGRES_URL")

# The fuzz harness (hypothesis): reproducible by default, so CI runs the same
# examples every time; HYPOTHESIS_PROFILE=explore searches ten times wider.
settings.register_profile("ci", max_examples=200, derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", max_examples=2000, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _asyncpg_url(url: str) -> sa.URL:
    u = sa.make_url(url)
    return u.set(drivername="postgresql+asyncpg")


@pytest.fixture
def pii_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture(scope="session")
def registry() -> Registry:
    return Registry.discover()


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    if not PG_URL:
        pytest.skip("HUB_TEST_POSTGRES_URL is not set")
    import asyncpg

    base = _asyncpg_url(PG_URL)
    name = f"hub_test_{uuid.uuid4().hex[:12]}"
    admin_dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return _sqlite_url(tmp_path)
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def site_secret() -> str:
    return standard_webhooks.new_secret()


@pytest.fixture
def website(site_secret: str) -> WebsiteSimulator:
    return WebsiteSimulator(secret=site_secret, seed=7)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(secret=standard_webhooks.new_secret())
    await r.start()
    yield r
    await r.stop()


def make_config(registry: Registry, *, db_url: str, pii_key: str, site_secret: str,
                receiver: Receiver | None, **overrides: Any) -> HubConfig:
    data: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0", "max_body_bytes": 65536},
        "storage": {"url": db_url},
        "security": {"pii_key": pii_key},
        "sources": [{"id": "site", "kind": "website", "secret": site_secret}],
        "destinations": [],
        "sync": [],
        "pipeline": {"tick": "100ms"},
        "delivery": {"tick": "50ms",
                     "retry": {"initial": "100ms", "max_delay": "1s", "jitter": "10ms",
                               "give_up_after": "1h", "max_attempts": 5}},
        "logging": {"level": "warning"},
    }
    if receiver is not None:
        data["destinations"] = [{"id": "hook", "kind": "webhook", "url": receiver.url,
                                 "secret": receiver.secret}]
        data["sync"] = [{"on": ["ticket.created", "ticket.status_changed"], "to": "hook"}]
    for key, value in overrides.items():
        data[key] = value
    return parse_config(YamlDoc(data, "(test config)"), registry)


async def start_hub(registry: Registry, db_url: str, pii_key: str, site_secret: str,
                    sources: list[dict[str, Any]]) -> Hub:
    """A started hub with these sources and no destination (the caller stops it)."""
    hub = Hub(make_config(registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret,
                          receiver=None, sources=sources), registry)
    await hub.start()
    return hub


@contextlib.asynccontextmanager
async def running(cfg: HubConfig, registry: Registry) -> AsyncIterator[Hub]:
    """A started hub for the length of the block, stopped (drained) after it."""
    h = Hub(cfg, registry)
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


@pytest.fixture
async def hub(registry: Registry, db_url: str, pii_key: str, site_secret: str,
              receiver: Receiver) -> AsyncIterator[Hub]:
    async with running(make_config(registry, db_url=db_url, pii_key=pii_key, site_secret=site_secret,
                                   receiver=receiver), registry) as h:
        yield h


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)


async def count(hub: Hub, table: sa.Table, *where: Any) -> int:
    async with hub.db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table).where(*where))).scalar_one())


async def settled(hub: Hub) -> bool:
    """Nothing left to do: every push delivered and every stored event processed."""
    return (await count(hub, outbox, outbox.c.state != "delivered") == 0
            and await count(hub, raw_events, raw_events.c.state == "pending") == 0)


def render_push(mapping: str, ctx: dict[str, Any], destination: str) -> Any:
    """A Push as the pipeline would make it: ``ctx`` rendered by the outbound mapping."""
    import orjson

    from hub.interfaces import Push
    from hub.mapping import MappingSet

    payload = orjson.dumps(MappingSet().outbound(mapping).render(ctx))
    return Push(1, destination, f"msg_{destination}_1_1", "ticket.status_changed", payload, 1)


async def deliver_once(destination: Any, push: Any) -> Any:
    """One delivery attempt, as a delivery worker makes it."""
    async with aiohttp.ClientSession() as session:
        return await destination.deliver(push, session)


async def raw_http(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as it is (any bytes, however malformed) and read the answer:
    status, headers (lower-case names), body. Status 0: closed without one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)  # the server closes after answering
    except ConnectionResetError:
        raw = b""
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        return 0, {}, raw
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split(" ")[1]), {k.lower(): v for k, v in headers.items()}, body


def http_request(method: str, path: str, headers: dict[str, str | bytes], body: bytes = b"") -> bytes:
    """One HTTP/1.1 request as bytes; header values may be bytes (not UTF-8, say)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close",
             b"Content-Length: %d" % len(body)]
    for name, value in headers.items():
        lines.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def seed_pushes(db: Database, pushes: list[dict[str, Any]], ticket_id: int = 1) -> None:
    """A ticket and outbox rows for it as the pipeline leaves them (pending, due
    now, to destination "hook"); each dict overrides what it names."""
    now = utcnow()
    async with db.write() as conn:
        await conn.execute(sa.insert(tickets).values(
            id=ticket_id, channel="website", source_id="site", external_id=f"AS{ticket_id}", type="refund_only",
            status="new", priority="normal", created_at=now, updated_at=now))
        rows = []
        for i, push in enumerate(pushes, 1):
            dest = push.get("destination_id", "hook")
            rows.append({"destination_id": dest, "ticket_id": ticket_id, "ordering_key": f"{dest}:{ticket_id}",
                         "event_type": "ticket.created", "idempotency_key": f"msg_{dest}_{ticket_id}_{i}",
                         "payload": '{"type": "ticket.created"}', "state": "pending", "attempts": 0,
                         "last_status": None, "last_error": None, "next_attempt_at": now, "created_at": now}
                        | push)
        await conn.execute(sa.insert(outbox), rows)


async def resend_until_answered(http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
                                *, pause: float = 0.2, attempts: int | None = None) -> int:
    """POST as a platform does: again on 503 or a dropped connection, until answered; the status."""
    tried = 0
    while attempts is None or tried < attempts:
        tried += 1
        try:
            async with http.post(url, data=body, headers=headers) as r:
                if r.status != 503:
                    return r.status
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(pause)
    raise AssertionError(f"never answered after {tried} attempts")


async def dead_letter(hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator, receiver: Receiver,
                      customer: Any) -> int:
    """One ticket of ``customer`` whose push the receiver refused for good: the dead letter's outbox id."""
    receiver.script.append((400, {}, f"bad request: customer {customer.phone} unknown"))
    body, headers = website.sign(website.request(customer))
    async with http.post(f"http://127.0.0.1:{hub.port}/webhooks/site", data=body, headers=headers) as r:
        assert r.status == 200

    async def dead() -> list[Any]:
        async with hub.db.read() as conn:
            return list((await conn.execute(sa.select(outbox.c.id).where(outbox.c.state == "dead"))).all())

    await wait_until(dead, timeout=10)
    return int((await dead())[0].id)
