"""Fuzz every HTTP entry point of a running hub with arbitrary bytes: request
lines, query strings, header values (not UTF-8, control characters, huge),
bodies — unsigned, and validly signed so they get past verification into
parsing, the inbox and the pipeline. Every answer is a 2xx or a 4xx; never a
5xx, never a hang; afterwards every stored event is settled, no worker has
failed, and the hub is still ready."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.wechat.crypto import signature
from connectors.wechat.simulator import new_aes_key
from hub import standard_webhooks
from hub.admin.auth import Tokens
from hub.daemon import Hub
from hub.mapping import default_mappings_dir
from hub.records import raw_events
from hub.registry import Registry
from tests.conftest import make_config
from tests.hostile import hostile_values, paths, replaced

PASSWORD = "cc-push-password-1"
CC_SECRET = "cc-signing-secret"
WX_TOKEN = "wx-token"
ADMIN_TOKEN = "fuzz-admin-token-0123456789"


@dataclass
class Live:
    hub: Hub
    loop: asyncio.AbstractEventLoop
    site_key: bytes

    @property
    def port(self) -> int:
        assert self.hub.port is not None
        return self.hub.port

    def run(self, coro: object, timeout: float = 60) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def live(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One hub for every example, on an event loop of its own thread (hypothesis
    drives plain functions): website, call-center (HTTP Basic and signed) and
    WeChat (plain and safe mode) sources."""
    site_secret = standard_webhooks.new_secret()
    db = Path(tmp_path_factory.mktemp("fuzz-http")) / "hub.db"
    cfg = make_config(
        registry, db_url=f"sqlite+aiosqlite:///{db}", pii_key=base64.b64encode(os.urandom(32)).decode(),
        site_secret=site_secret, receiver=None,
        sources=[{"id": "site", "kind": "website", "secret": site_secret},
                 {"id": "cc", "kind": "callcenter", "username": "hub", "password": PASSWORD},
                 {"id": "cc-signed", "kind": "callcenter", "signature_secret": CC_SECRET},
                 {"id": "wx", "kind": "wechat", "app_id": "wx1234567890abcdef", "token": WX_TOKEN,
                  "encoding_aes_key": new_aes_key(), "fetch_details": False}],
        server={"listen": "127.0.0.1:0", "max_body_bytes": 65536, "body_timeout": "5s"},
        security={"pii_key": base64.b64encode(os.urandom(32)).decode(),
                  "tokens": [{"name": "fuzz", "token": ADMIN_TOKEN, "role": "admin"}]})
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    hub = Hub(cfg, registry)
    live = Live(hub, loop, standard_webhooks.decode_secret(site_secret))
    live.run(hub.start())
    try:
        yield live
    finally:
        live.run(hub.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def exchange(port: int, request: bytes, timeout: float = 15) -> int:
    """Send raw bytes, read to the end; the status code (0: closed without an answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head = data.split(b"\r\n", 1)[0]
    parts = head.split(b" ")
    return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() else 0


# Header values: any bytes but CR and LF (those would end the header, not fuzz it).
header_bytes = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
header_names = st.one_of(
    st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "authorization",
                     "x-signature", "x-tccc-push-uuid", "content-type", "content-encoding",
                     "user-agent", "accept", "x-forwarded-for", "cookie"]),
    st.text("abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=20))
def _sample_body(source: str) -> object:
    path = default_mappings_dir() / "tests" / source
    return json.loads(sorted(path.glob("*.input.json"))[0].read_text())["body"]


@st.composite
def fuzzed_sample(draw: st.DrawFn) -> bytes:
    """A real event of one of the sources with arbitrary JSON somewhere in it."""
    source = draw(st.sampled_from(["website", "callcenter", "wechat"]))
    doc = _sample_body(source)
    if source == "callcenter":
        doc = doc["cdr"]  # the connector wraps the pushed record itself
    elif source == "wechat":
        doc = doc["message"]
    where = paths(doc)
    doc = replaced(doc, draw(st.sampled_from(where)), draw(hostile_values))
    try:
        return orjson.dumps(doc)
    except TypeError:  # nested past what orjson writes: as text, by hand
        return b'{"data": ' + b"[" * 300 + b"]" * 300 + b"}"


bodies = st.one_of(
    fuzzed_sample(), fuzzed_sample(),
    st.binary(max_size=2000),
    st.text(max_size=500).map(str.encode),
    st.sampled_from([b"{}", b"[]", b"null", b'{"type": "aftersale.requested"}', b"<xml></xml>",
                     b'<xml><Encrypt><![CDATA[AAAA]]></Encrypt></xml>', b"[" * 2000 + b"]" * 2000,
                     b'<!DOCTYPE x [<!ENTITY a "aaaa">]><xml>&a;</xml>', b"\xff\xfe\x00\x01"]))
queries = st.one_of(st.just(b""), st.binary(max_size=80).map(lambda b: urllib.parse.quote_from_bytes(b).encode()),
                    st.sampled_from([b"action=cdr", b"action=record", b"action=%ff", b"encrypt_type=aes",
                                     b"echostr=x&signature=y&timestamp=1&nonce=2", b"a=%zz&&==&",
                                     b"limit=-5&before=99999999999999999999999", b"since=%ff&until=2026-13-01",
                                     b"customer_id=1e9&status=%00", b"limit=" + b"9" * 5000]))
ENDPOINTS = [("POST", "/webhooks/site"), ("POST", "/webhooks/cc"), ("POST", "/webhooks/cc-signed"),
             ("POST", "/webhooks/wx"), ("GET", "/webhooks/wx"), ("GET", "/healthz"), ("GET", "/readyz"),
             ("GET", "/metrics"), ("POST", "/webhooks/nope"), ("PUT", "/webhooks/site"),
             ("DELETE", "/metrics"), ("GET", "/%ff%fe/../x"),
             # The admin API; "signed" here means with a valid bearer token.
             ("GET", "/api/v1/openapi.json"), ("GET", "/api/v1/sources"), ("GET", "/api/v1/tickets"),
             ("GET", "/api/v1/tickets/1"), ("GET", "/api/v1/customers/1"), ("GET", "/api/v1/outbox"),
             ("GET", "/api/v1/dead-letters"), ("POST", "/api/v1/dead-letters/1/retry"),
             ("POST", "/api/v1/dead-letters/1/drop"), ("GET", "/api/v1/audit"), ("PATCH", "/api/v1/audit"),
             ("GET", "/api/v1/reports"), ("GET", "/api/v1/backlog"), ("POST", "/api/v1/sources/site/pause"),
             ("POST", "/api/v1/replay"), ("POST", "/api/v1/sources/site/backfill"),
             # The dashboard; "signed" here means with a session cookie.
             ("GET", "/dashboard"), ("POST", "/dashboard/login"), ("POST", "/dashboard/logout"),
             ("GET", "/dashboard/tickets/1"), ("POST", "/dashboard/dead-letters/1/retry")]
FRAMING = {"content-length", "transfer-encoding", "connection", "host", "expect", "upgrade", "te", "trailer"}


def build(method: str, path: str, query: bytes, headers: dict[str, bytes], body: bytes) -> bytes:
    target = path.encode() + (b"?" + query if query else b"")
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close",
             b"Content-Length: %d" % len(body)]
    lines += [name.encode() + b": " + value for name, value in headers.items() if name.lower() not in FRAMING]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def signed_headers(live: Live, endpoint: str, body: bytes, headers: dict[str, bytes],
                   query: bytes) -> tuple[dict[str, bytes], bytes]:
    """Headers (and query) that pass the endpoint's verification for this body."""
    now = int(time.time())
    if endpoint == "/webhooks/site":
        signed = standard_webhooks.headers_for(live.site_key, f"msg_fuzz_{hashlib.sha1(body).hexdigest()}", body, now)
        return {**headers, **{k: v.encode() for k, v in signed.items() if k != "content-type"}}, query
    if endpoint == "/webhooks/cc":
        return {**headers, "authorization": b"Basic " + base64.b64encode(f"hub:{PASSWORD}".encode())}, query
    if endpoint == "/webhooks/cc-signed":
        return {**headers, "x-signature": hmac.new(CC_SECRET.encode(), body, hashlib.sha256).hexdigest().encode()}, query
    if endpoint == "/webhooks/wx":
        nonce = "n0nce"
        params = f"timestamp={now}&nonce={nonce}&signature={signature(WX_TOKEN, str(now), nonce)}"
        return headers, params.encode() + (b"&" + query if query else b"")
    if endpoint.startswith("/api/"):
        return {**headers, "authorization": b"Bearer " + ADMIN_TOKEN.encode()}, query
    if endpoint.startswith("/dashboard"):
        tokens = Tokens(list(live.hub.config.security.tokens))
        session = tokens.session_for(tokens.authenticate(f"Bearer {ADMIN_TOKEN}"), 600)
        return {**headers, "cookie": f"hub_session={session}".encode()}, query
    return headers, query


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(endpoint=st.sampled_from(ENDPOINTS), query=queries, body=bodies, sign=st.booleans(),
       headers=st.dictionaries(header_names, header_bytes, max_size=6))
def test_arbitrary_requests_get_2xx_or_4xx(live: Live, endpoint: tuple[str, str], query: bytes, body: bytes,
                                           sign: bool, headers: dict[str, bytes]) -> None:
    method, path = endpoint
    if sign:
        headers, query = signed_headers(live, path, body, headers, query)
    status = exchange(live.port, build(method, path, query, headers, body))
    assert 200 <= status < 500, (status, method, path, query, headers, body[:200])


@settings(deadline=None)
@given(line=st.binary(min_size=1, max_size=300).map(lambda b: b.replace(b"\r\n", b"")))
def test_an_arbitrary_request_line_is_4xx(live: Live, line: bytes) -> None:
    status = exchange(live.port, line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert 400 <= status < 500 or (status == 200 and line.startswith(b"GET /healthz")), (status, line)


def test_afterwards_everything_stored_is_settled_and_no_worker_failed(live: Live) -> None:
    async def pending() -> int:
        async with live.hub.db.read() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(raw_events)
                                           .where(raw_events.c.state == "pending"))).scalar_one())

    deadline = time.monotonic() + 30
    while live.run(pending()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live.run(pending()) == 0
    assert live.run(live.hub.readiness_problems()) == []
    assert {w.name: w.restarts for w in live.hub.supervisor.workers.values() if w.restarts} == {}
