"""Intake never hangs: every decoding problem in a request line, header or
body is a precise 4xx (no secret needed to try), a request waiting on a
locked database gets 503 + Retry-After at its deadline, and past the byte
budget the next request is turned away at once. Nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from connectors.callcenter.simulator import CallCenterSimulator
from connectors.website.simulator import WebsiteSimulator
from hub.daemon import Hub
from hub.limits import request_cost
from hub.records import raw_events
from hub.registry import Registry
from tests.conftest import count, http_request, make_config, raw_http, running

PASSWORD = "cc-push-password-1"
BASIC = "Basic " + base64.b64encode(f"hub:{PASSWORD}".encode()).decode()


@pytest.fixture
async def hub(registry: Registry, tmp_path: Path, pii_key: str, site_secret: str) -> AsyncIterator[Hub]:
    cfg = make_config(registry, db_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", pii_key=pii_key,
                      site_secret=site_secret, receiver=None,
                      sources=[{"id": "site", "kind": "website", "secret": site_secret},
                               {"id": "cc", "kind": "callcenter", "username": "hub", "password": PASSWORD}],
                      server={"listen": "127.0.0.1:0", "max_body_bytes": 65536, "inbox_timeout": "1s",
                              "max_pending_bytes": 300_000},
                      storage={"url": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", "sqlite_busy_timeout": "20s"})
    async with running(cfg, registry) as h:
        yield h


def _cdr_request(cc: CallCenterSimulator, extra: dict[str, str | bytes]) -> bytes:
    body = orjson.dumps(cc.cdr("13912345678"))
    return http_request("POST", "/webhooks/cc?action=cdr&version=1",
                        {"Authorization": BASIC, "Content-Type": "application/json", **extra}, body)


async def test_a_header_that_is_not_utf8_is_400_and_intake_goes_on(hub: Hub) -> None:
    cc = CallCenterSimulator(f"http://127.0.0.1:{hub.port}/webhooks/cc", "hub", PASSWORD)
    status, _, body = await raw_http(hub.port, _cdr_request(cc, {"X-TCCC-PUSH-UUID": b"u-\xff\xfe"}))
    assert status == 400
    assert orjson.loads(body) == {"error": "bad_encoding", "message": "header X-TCCC-PUSH-UUID is not valid UTF-8"}
    # The writer lives on: the next push (and every other source's) is stored.
    status, _, body = await raw_http(hub.port, _cdr_request(cc, {"X-TCCC-PUSH-UUID": "u-2"}))
    assert (status, body) == (200, b'{"ErrCode":0}')
    assert await count(hub, raw_events) == 1


async def test_broken_signature_headers_are_401_or_400_without_a_secret(hub: Hub, website: WebsiteSimulator) -> None:
    body, headers = website.sign(website.request())
    cases = [
        ({"webhook-signature": "v1,签名不对"}, 401),
        ({"webhook-signature": b"v1,\xff\xfe"}, 400),
        ({"webhook-id": b"msg_\xff"}, 400),
        ({"webhook-id": "消息"}, 401),
        ({"webhook-timestamp": "１７６２８１９２００"}, 401),
        ({"webhook-timestamp": "9" * 5000}, 401),
    ]
    for change, expected in cases:
        status, _, reply = await raw_http(hub.port, http_request("POST", "/webhooks/site", {**headers, **change}, body))
        assert status == expected, (change, reply)
        assert orjson.loads(reply)["error"] in ("verification_failed", "bad_encoding")
    assert await count(hub, raw_events) == 0


async def test_a_query_string_that_is_not_utf8_is_400(hub: Hub) -> None:
    cc = CallCenterSimulator(f"http://127.0.0.1:{hub.port}/webhooks/cc", "hub", PASSWORD)
    request = _cdr_request(cc, {}).replace(b"?action=cdr", b"?action=%ff%fe")
    status, _, reply = await raw_http(hub.port, request)
    assert status == 400 and orjson.loads(reply)["message"] == "the query string is not valid UTF-8"


async def _locked(path: str) -> sqlite3.Connection:
    blocker = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    await asyncio.to_thread(blocker.execute, "BEGIN IMMEDIATE")
    return blocker


async def test_a_request_waiting_on_a_locked_database_gets_503_at_its_deadline(
        hub: Hub, website: WebsiteSimulator) -> None:
    path = str(hub.db.engine.url.database)
    body, headers = website.sign(website.request())
    blocker = await _locked(path)
    try:
        started = time.monotonic()
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{hub.port}/webhooks/site", data=body, headers=headers) as r:
            status, retry_after, reply = r.status, r.headers.get("Retry-After"), await r.json()
        waited = time.monotonic() - started
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (status, retry_after, reply["error"]) == (503, "5", "storage_unavailable")
    assert waited < 5  # the deadline (1 s here), not the database's 20 s busy timeout
    # The platform sends it again: stored now (or found stored, had the write landed late).
    async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{hub.port}/webhooks/site", data=body, headers=headers) as r:
        assert r.status == 200 and (await r.json())["status"] in ("accepted", "duplicate")
    assert await count(hub, raw_events) == 1


async def test_past_the_byte_budget_requests_are_turned_away_at_once(hub: Hub, website: WebsiteSimulator) -> None:
    path = str(hub.db.engine.url.database)
    messages = []
    for _ in range(12):
        msg = website.request()
        msg["data"]["description"] = "很大的描述" * 3000  # ~45 KB each; the budget is 300 KB
        messages.append(website.sign(msg))
    blocker = await _locked(path)
    try:
        async with aiohttp.ClientSession() as http:
            async def send(body: bytes, headers: dict[str, str]) -> tuple[int, float, str]:
                started = time.monotonic()
                async with http.post(f"http://127.0.0.1:{hub.port}/webhooks/site", data=body,
                                     headers=headers) as r:
                    return r.status, time.monotonic() - started, (await r.json())["error"]

            results = await asyncio.gather(*(send(b, h) for b, h in messages))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    overloaded = [r for r in results if r[2] == "overloaded"]
    waited = [r for r in results if r[2] == "storage_unavailable"]
    assert {r[0] for r in results} == {503}
    charge = request_cost(len(messages[0][0]))
    assert len(waited) == 300_000 // charge and len(overloaded) == 12 - len(waited)
    assert max(r[1] for r in overloaded) < 0.5  # answered unread, not after the deadline
    assert hub.intake_budget.in_use == 0
