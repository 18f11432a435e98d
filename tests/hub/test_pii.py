"""Customers' contact data: encrypted at rest, blind-indexed, masked in
pushes and logs — the database file never holds a phone number in clear."""

from __future__ import annotations

import base64
import io
import json
import os

import aiohttp
import pytest
import sqlalchemy as sa
import structlog

from connectors.webhook.receiver import Receiver
from connectors.website.simulator import Customer, WebsiteSimulator
from hub import logs
from hub.daemon import Hub
from hub.pii import PiiCipher, mask_phone, normalize_phone
from hub.records import customers, raw_events, tickets
from hub.registry import Registry
from tests.conftest import count, make_config, wait_until


def test_phone_normalization() -> None:
    for raw in ("13812345678", "+86 138 1234 5678", "0086-138-1234-5678", "86 13812345678",
                "(+86)138-1234-5678"):
        assert normalize_phone(raw) == "13812345678"
    assert normalize_phone("+1 (415) 555-0100") == "+14155550100"
    assert mask_phone("+86 138-1234-5678") == "138****5678"


def test_encryption_round_trip_and_key_rotation() -> None:
    old, new = os.urandom(32), os.urandom(32)
    sealed = PiiCipher(old).encrypt("13812345678")
    assert sealed and "13812345678" not in sealed and sealed.startswith("v1:")
    assert PiiCipher(new, old_keys=[old]).decrypt(sealed) == "13812345678"
    with pytest.raises(ValueError, match="cannot decrypt"):
        PiiCipher(new).decrypt(sealed)
    a, b = PiiCipher(old), PiiCipher(new)
    assert a.blind_index("+86 138 1234 5678") == a.blind_index("13812345678")
    assert a.blind_index("13812345678") != b.blind_index("13812345678")  # keyed
    # After the rotation new data is sealed with the new key, and the index stays the first key's.
    rotated = PiiCipher(new, old_keys=[old])
    assert rotated.encrypt("13812345678").split(":")[1] == PiiCipher.key_id(new)  # type: ignore[union-attr]
    assert rotated.blind_index("13812345678") == a.blind_index("13812345678")


async def test_database_holds_no_clear_phone_and_same_phone_is_one_customer(
        hub: Hub, http: aiohttp.ClientSession, website: WebsiteSimulator, receiver: Receiver) -> None:
    phone = "13912345678"
    a = Customer("u1", "赵敏", phone, "zm@example.com", "上海市浦东新区张江路88号")
    b = Customer("u2", "赵敏", "+86 139-1234-5678", "other@example.com", "上海市浦东新区张江路88号")
    for c in (a, b):
        body, headers = website.sign(website.request(c))
        async with http.post(f"http://127.0.0.1:{hub.port}/webhooks/site", data=body, headers=headers) as r:
            assert r.status == 200

    async def processed() -> bool:
        return await count(hub, raw_events, raw_events.c.state == "done") == 2

    await wait_until(processed)
    await receiver.wait_for(2)
    # Two site accounts, one phone: one customer holding both tickets.
    assert await count(hub, customers) == 1
    async with hub.db.read() as conn:
        owners = {r[0] for r in (await conn.execute(sa.select(tickets.c.customer_id))).all()}
        raw_bodies = [r[0] for r in (await conn.execute(sa.select(raw_events.c.body))).all()]
    assert len(owners) == 1
    # Raw events are kept exactly as received, but sealed: they open to the original.
    assert all(b.startswith("v1:") for b in raw_bodies)
    assert any(phone in hub.cipher.open_body(b) for b in raw_bodies)
    await _assert_no_clear_phone(hub, [phone, "139-1234-5678", "上海市浦东新区张江路88号"])
    for push in receiver.received:
        assert phone not in json.dumps(push.body, ensure_ascii=False)


async def _assert_no_clear_phone(hub: Hub, needles: list[str]) -> None:
    if hub.db.is_sqlite:
        path = hub.db.engine.url.database
        async with hub.db.write() as conn:
            await conn.exec_driver_sql("SELECT 1")
        async with hub.db.engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        data = b""
        for suffix in ("", "-wal"):
            if os.path.exists(str(path) + suffix):
                data += open(str(path) + suffix, "rb").read()
        for needle in needles:
            assert needle.encode() not in data, f"{needle} found in the database file"
        return
    async with hub.db.read() as conn:
        for table in ("customers", "customer_identities", "orders", "tickets", "ticket_events", "outbox"):
            rows = (await conn.execute(sa.text(f"SELECT * FROM {table}"))).all()
            dump = json.dumps([list(map(str, r)) for r in rows], ensure_ascii=False)
            for needle in needles:
                assert needle not in dump, f"{needle} found in {table}"


def test_logs_never_print_a_phone_or_address() -> None:
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    try:
        log = structlog.get_logger("test")
        log.info("customer called from 13812345678", phone="+86 138-1234-5678",
                 address="杭州市西湖区文三路90号", payload={"customer": {"phone": "13812345678",
                                                                   "email": "wang@example.com"}})
        log.warning("raw body", body='{"phone": "139 1234 5678"}')
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    for clear in ("13812345678", "138-1234-5678", "139 1234 5678", "文三路90号", "wang@example.com"):
        assert clear not in text
    assert "138****5678" in text
    first = json.loads(text.splitlines()[0])
    assert first["address"] == "杭州市西湖区****"


def test_pii_key_must_be_32_bytes() -> None:
    with pytest.raises(ValueError):
        PiiCipher(base64.b64decode(base64.b64encode(b"short")))


async def test_a_key_rotation_keeps_customers_whole(
        registry: Registry, db_url: str, site_secret: str, website: WebsiteSimulator) -> None:
    old_key, new_key = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    phone = "13712345678"

    async def send(hub: Hub, customer: Customer) -> None:
        body, headers = website.sign(website.request(customer))
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{hub.port}/webhooks/site", data=body, headers=headers) as r:
            assert r.status == 200

    before = Hub(make_config(registry, db_url=db_url, pii_key=old_key, site_secret=site_secret,
                             receiver=None), registry)
    await before.start()
    try:
        await send(before, Customer("u1", "钱芳", phone, "qf@example.com", "杭州市西湖区文三路1号"))
        await wait_until(lambda: _done(before, 1))
    finally:
        await before.stop()

    cfg = make_config(registry, db_url=db_url, pii_key=new_key, site_secret=site_secret, receiver=None,
                      security={"pii_key": new_key, "previous_pii_keys": [old_key]})
    after = Hub(cfg, registry)
    await after.start()
    try:
        # Same phone, another site account, after the rotation: still the one customer.
        await send(after, Customer("u9", "钱芳", f"+86 {phone}", "qf2@example.com", "杭州市西湖区文三路1号"))
        await wait_until(lambda: _done(after, 2))
        assert await count(after, customers) == 1
        async with after.db.read() as conn:
            sealed = (await conn.execute(sa.select(raw_events.c.body).order_by(raw_events.c.id))).scalars().all()
            row = (await conn.execute(sa.select(customers))).one()
        # Old events still open; new ones are sealed with the new key.
        assert phone in after.cipher.open_body(sealed[0])
        assert sealed[0].split(":")[1] == PiiCipher.key_id(base64.b64decode(old_key))
        assert sealed[1].split(":")[1] == PiiCipher.key_id(base64.b64decode(new_key))
        assert after.cipher.decrypt(row.phone_enc) == phone
    finally:
        await after.stop()


async def _done(hub: Hub, n: int) -> bool:
    return await count(hub, raw_events, raw_events.c.state == "done") == n


def test_gcm_nonces_never_repeat_across_refills_or_a_fork() -> None:
    from hub.pii import _nonces

    seen = [_nonces.take() for _ in range(3 * _nonces.BATCH + 7)]  # crosses three refills
    assert len(set(seen)) == len(seen) and {len(n) for n in seen} == {12}
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what it would seal with next
        os.write(write, b"".join(_nonces.take() for _ in range(50)))
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 12 * 50)
    os.close(read)
    parent = b"".join(_nonces.take() for _ in range(50))
    # The child inherited the parent's pool; had it kept it, both would seal with the same nonces.
    assert len(child) == 600 and child != parent
    child_nonces = {child[i:i + 12] for i in range(0, 600, 12)}
    assert not child_nonces & {parent[i:i + 12] for i in range(0, 600, 12)}


def test_a_remembering_copy_opens_what_it_sealed_without_the_key_and_agrees_with_the_original() -> None:
    cipher = PiiCipher(os.urandom(32))
    twin = cipher.remembering()
    stored = twin.encrypt("13800138000")
    assert stored is not None and "13800138000" not in stored
    assert cipher.decrypt(stored) == "13800138000"  # what the copy seals, anyone with the key opens
    twin._by_id = {}  # the key gone: only the memory can open it now
    assert twin.decrypt(stored) == "13800138000"
    with pytest.raises(ValueError):
        twin.decrypt(cipher.encrypt("13900139000"))  # never seen: it needs the key
    assert twin.blind_index("+86 138-0013-8000") == cipher.blind_index("13800138000")
    assert cipher._memo is None  # the original remembers nothing
