"""Several hundred hostile events in a stream of normal ones, against the daemon
as operators run it, killed and restarted half-way: every normal event becomes
its push, every hostile one is quarantined with a reason free of PII,
/healthz answers in under 100 ms throughout, and afterwards no table, no
byte of the database file and no log line holds the hostile customer's
phone, name or address (or a normal customer's phone or address) in clear,
in any of the ways people write them."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import sqlalchemy as sa

from connectors.callcenter.simulator import CallCenterSimulator
from connectors.webhook.receiver import Receiver
from connectors.website.simulator import Customer, WebsiteSimulator
from hub import standard_webhooks
from hub.storage import Database
from tests.conftest import resend_until_answered
from tests.daemons import Daemon, daemon
from tests.hostile import (
    ADDRESS,
    DEEP,
    EMAIL,
    NAME,
    PHONE,
    PHONES,
    clear_forms,
    hostile_timestamps,
    hostile_variants,
)

pytestmark = pytest.mark.slow
PASSWORD = "cc-push-password-1"
NORMAL, HOSTILE = 240, 300
TEXT_PHONES = ["139.1234.5678", "(139)12345678", "0571-8888 6666", "+86 571 8888 6666", "138 0000 1111"]


def _hostile_website(site: WebsiteSimulator, rng: random.Random) -> list[bytes]:
    out = []
    for _ in range(HOSTILE - 40):
        msg = site.request(Customer("u-hostile", NAME, rng.choice(PHONES), EMAIL, ADDRESS))
        msg["data"]["description"] = f"我是{NAME}，电话{rng.choice(PHONES)}，地址{ADDRESS}"
        if rng.random() < 0.2:
            msg["timestamp"] = rng.choice(hostile_timestamps())
        else:
            field, value = rng.choice(hostile_variants())
            if value is None:
                del msg["data"][field]
            else:
                msg["data"][field] = value
        out.append(orjson.dumps(msg).replace(b'"DEEP"', DEEP))
    return out


def _hostile_calls(cc: CallCenterSimulator, rng: random.Random) -> list[dict[str, Any]]:
    bad: list[tuple[str, Any]] = [
        ("EndedTimestamp", "1e999999999"), ("EndedTimestamp", -1), ("StartTimestamp", {"t": 1}),
        ("EndedTimestamp", 253402300800), ("Caller", {"number": PHONE}), ("Caller", [PHONE]),
        ("IVRKeyPressed", [[[[["1"]]]]]), ("SessionId", {"id": NAME}), ("EndStatusString", {"s": ADDRESS}),
    ]
    out = []
    for _ in range(40):
        cdr = cc.cdr(rng.choice(PHONES))
        field, value = rng.choice(bad)
        cdr[field] = value
        out.append(cdr)
    return out


async def test_hostile_events_in_a_stream_across_a_restart(
        tmp_path: Path, db_url: str, pii_key: str, site_secret: str) -> None:
    rng = random.Random(20261111)
    receiver = Receiver(secret=standard_webhooks.new_secret())
    await receiver.start()
    hub = daemon(tmp_path, {
        "storage": {"url": db_url},
        "security": {"pii_key": pii_key},
        "sources": [{"id": "site", "kind": "website", "secret": site_secret},
                    {"id": "cc", "kind": "callcenter", "username": "hub", "password": PASSWORD}],
        "destinations": [{"id": "erp", "kind": "webhook", "url": receiver.url, "secret": receiver.secret}],
        "sync": [{"on": ["ticket.created"], "to": "erp"}],
        "pipeline": {"tick": "100ms"},
        "delivery": {"tick": "100ms", "retry": {"initial": "100ms", "max_delay": "1s", "jitter": "50ms"}},
        "logging": {"level": "info"},
    })
    site = WebsiteSimulator(secret=site_secret, seed=42)
    cc = CallCenterSimulator(f"{hub.url}/webhooks/cc?action=cdr&version=1", "hub", PASSWORD)
    basic = {"Authorization": "Basic " + base64.b64encode(f"hub:{PASSWORD}".encode()).decode(),
             "Content-Type": "application/json"}

    normal_ids: list[str] = []
    normal_contacts: list[str] = []
    stream: list[tuple[str, bytes, dict[str, str] | None, bool]] = []  # (url, body, headers, hostile)
    for i in range(NORMAL):
        if i % 6 == 0:
            cdr = cc.cdr(f"13{rng.randint(100000000, 999999999)}", complaint=True)
            normal_ids.append(cdr["SessionId"])
            normal_contacts.append(cdr["Caller"])
            stream.append(("cc", orjson.dumps(cdr), basic, False))
            continue
        customer = site.customer()
        msg = site.request(customer)
        msg["data"]["description"] = f"杯子碎了，请打{rng.choice(TEXT_PHONES)}"
        normal_ids.append(msg["data"]["request_id"])
        normal_contacts += [customer.phone, customer.address]
        stream.append(("site", orjson.dumps(msg), None, False))
    stream += [("site", b, None, True) for b in _hostile_website(site, rng)]
    stream += [("cc", orjson.dumps(c), basic, True) for c in _hostile_calls(cc, rng)]
    rng.shuffle(stream)

    latencies: list[float] = []
    sending = True

    async def watch_healthz(http: aiohttp.ClientSession) -> None:
        loop = asyncio.get_running_loop()
        while sending:
            started = loop.time()
            try:
                async with http.get(f"{hub.url}/healthz") as r:
                    assert r.status == 200
                    latencies.append(loop.time() - started)
            except aiohttp.ClientConnectionError:
                pass  # killed and not back yet: nothing to time
            await asyncio.sleep(0.005)

    statuses: list[int] = []
    async with aiohttp.ClientSession() as http:
        hub.start()
        await hub.ready(http)
        watcher = asyncio.create_task(watch_healthz(http))
        gate = asyncio.Semaphore(12)

        async def send(kind: str, body: bytes, headers: dict[str, str] | None) -> None:
            async with gate:
                if kind == "site":
                    signed_body, signed = site.sign(body)
                    statuses.append(await resend_until_answered(http, f"{hub.url}/webhooks/site", signed_body, signed))
                else:
                    assert headers is not None
                    statuses.append(await resend_until_answered(http, cc.url, body, headers))

        half = len(stream) // 2
        await asyncio.gather(*(send(k, b, h) for k, b, h, _ in stream[:half]))
        hub.kill()  # mid-stream: some events stored, not yet processed or pushed
        hub.start()
        sends = asyncio.gather(*(send(k, b, h) for k, b, h, _ in stream[half:]))
        await hub.ready(http)
        await sends
        await receiver.wait_for(NORMAL, timeout=120)
        await _settled(db_url)
        sending = False
        await watcher
        assert hub.stop() == 0, hub.log_tail()
    await receiver.stop()

    assert set(statuses) <= {200, 400}  # 400: bodies no parser could read (deep nesting past 1,024)
    pushed = {r.body["data"]["ticket"]["external_id"] for r in receiver.unique.values()}
    assert pushed == set(normal_ids) and len(receiver.unique) == NORMAL
    latencies.sort()
    print(f"/healthz: {len(latencies)} answers, p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
          f"slowest {latencies[-1] * 1000:.1f} ms")
    # What this guards against is an event holding the loop or the GIL for seconds
    # (an exponent's arithmetic took 25 s); on a 2-core box running CI beside the
    # hub's processes, the scheduler alone costs a sample ~100 ms now and then.
    assert len(latencies) > 30 and latencies[len(latencies) // 2] < 0.02 and latencies[-1] < 0.25, \
        f"/healthz p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, slowest {latencies[-1] * 1000:.0f} ms"

    states, reasons = await _raw_states(db_url)
    assert states.get("pending", 0) == 0
    assert states["quarantined"] >= HOSTILE - statuses.count(400)
    assert all(reasons), "every quarantine says why"
    leaks = clear_forms() + TEXT_PHONES + [c for c in normal_contacts if c]
    await _no_clear_text_anywhere(db_url, hub, leaks)


async def _settled(db_url: str) -> None:
    db = Database(db_url)
    try:
        for _ in range(300):
            async with db.read() as conn:
                pending = (await conn.execute(sa.text(
                    "SELECT count(*) FROM raw_events WHERE state = 'pending'"))).scalar_one()
            if not pending:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{pending} raw events still pending")
    finally:
        await db.close()


async def _raw_states(db_url: str) -> tuple[dict[str, int], list[str]]:
    db = Database(db_url)
    try:
        async with db.read() as conn:
            states = dict((await conn.execute(sa.text(
                "SELECT state, count(*) FROM raw_events GROUP BY state"))).all())
            reasons = list((await conn.execute(sa.text(
                "SELECT reason FROM raw_events WHERE state = 'quarantined'"))).scalars())
    finally:
        await db.close()
    return states, reasons


async def _no_clear_text_anywhere(db_url: str, hub: Daemon, needles: list[str]) -> None:
    db = Database(db_url)
    try:
        async with db.read() as conn:
            tables = [t for t in ("raw_events", "customers", "customer_identities", "customer_merges", "orders",
                                  "tickets", "ticket_events", "outbox", "audit_log", "source_state")]
            for table in tables:
                rows = (await conn.execute(sa.text(f"SELECT * FROM {table}"))).all()
                dump = json.dumps([[str(v) for v in r] for r in rows], ensure_ascii=False)
                for needle in needles:
                    assert needle not in dump, f"{needle!r} in clear in {table}"
        if db.is_sqlite:
            async with db.engine.connect() as conn:
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            path = Path(str(db.engine.url.database))
            data = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
            for needle in needles:
                assert needle.encode() not in data, f"{needle!r} in the database file"
    finally:
        await db.close()
    log = hub.log.read_text(encoding="utf-8")
    assert "event quarantined" in log
    for needle in needles:
        assert needle not in log, f"{needle!r} in the log"
