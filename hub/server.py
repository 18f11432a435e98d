"""The HTTP face of the hub (aiohttp): webhooks in, health and metrics out.

Every refusal is a precise 4xx with a JSON body ``{"error", "message"}``; a
storage failure is a 503 with Retry-After (the platform will resend), never a
500 and never a 200 for something not on disk.
"""

from __future__ import annotations

import asyncio
import functools
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
import structlog
from aiohttp import web

from hub import callbacks, dashboard
from hub.admin import api as admin_api
from hub.errors import IngressError, PayloadTooLarge, StorageUnavailable
from hub.inbox import intake
from hub.interfaces import InboundRequest, WebhookSource
from hub.limits import request_cost
from hub.mapping import InboundMapping
from hub.metrics import children

if TYPE_CHECKING:
    from hub.daemon import Hub

log = structlog.get_logger("hub.server")
HUB_KEY = web.AppKey("hub", object)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    try:
        body = orjson.dumps({"error": code, "message": message})
    except TypeError:  # a message quoting undecodable input: keep it readable, escaped
        body = orjson.dumps({"error": code,
                             "message": message.encode("utf-8", "backslashreplace").decode("ascii")})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def undecodable(request: web.Request) -> str | None:
    """What in the request line or headers is not UTF-8, or None.

    aiohttp hands over header bytes that are not UTF-8 as lone surrogates and
    percent-escapes in the query as U+FFFD; either would reach a signature
    check, a log line or the inbox as text that is not text."""
    for name, value in request.headers.items():
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"header {name} is not valid UTF-8"
    raw = request.rel_url.raw_query_string
    if "%" in raw:
        try:
            urllib.parse.unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return "the query string is not valid UTF-8"
    return None


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body, refused past ``limit`` bytes (PayloadTooLarge). Read here, not with
    ``request.read()``, which keeps a copy on the request for as long as the
    handler runs — through the wait for the commit."""
    chunks = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(hub: Hub) -> web.Application:
    server = hub.config.server
    app = web.Application(client_max_size=server.max_body_bytes)
    app[HUB_KEY] = hub
    max_body = server.max_body_bytes
    budget = hub.intake_budget
    counted = children(hub.metrics.ingest)  # (source, result) → counter

    async def callback(request: web.Request) -> web.Response:
        """A destination reporting back: a webhook under the name ``callback:<id>`` (hub.callbacks)."""
        return await inbound(request, callbacks.source_id_of(request.match_info["destination_id"]))

    async def webhook(request: web.Request) -> web.Response:
        source_id = request.match_info["source_id"]
        if source_id.startswith(callbacks.PREFIX):  # reports come in at /callbacks/ only
            return _error(404, "unknown_source", f"no webhook source {source_id[:80]!r}")
        return await inbound(request, source_id)

    async def inbound(request: web.Request, source_id: str) -> web.Response:
        rt = hub.webhook_sources.get(source_id)
        if rt is None:
            counted("(unknown)", "unknown_source").inc()
            known = "configured" if hub.config.source(source_id) else "not configured"
            return _error(404, "unknown_source", f"no webhook source {source_id!r} ({known})")
        if hub.draining:
            return _error(503, "shutting_down", "the hub is shutting down; retry shortly",
                          {"Retry-After": "5"})
        problem = undecodable(request)
        if problem is not None:
            counted(source_id, "bad_encoding").inc()
            return _error(400, "bad_encoding", problem)
        length = request.content_length
        if length is not None and length > max_body:
            counted(source_id, "too_large").inc()
            return _error(413, PayloadTooLarge.code,
                          f"body of {length} bytes is over the {max_body}-byte limit")
        # A compressed body may inflate up to the limit: charge the limit.
        charge = request_cost(length if length is not None and "content-encoding" not in request.headers
                              else max_body)
        if not budget.take(charge):
            counted(source_id, "overloaded").inc()
            # Closed, not kept alive: aiohttp would otherwise read the unread body to drain it.
            return _error(503, "overloaded", "the hub holds as many requests as it may; retry shortly",
                          {"Retry-After": "2", "Connection": "close"})
        try:
            return await accept(request, source_id, *rt)
        finally:
            budget.give_back(charge)

    async def accept(request: web.Request, source_id: str, connector: WebhookSource,
                     mapping: InboundMapping) -> web.Response:
        try:
            if request.content.is_eof():  # all of it arrived with the head: nothing to wait for
                body = await read_body(request, max_body)
            else:
                async with asyncio.timeout(server.body_timeout):
                    body = await read_body(request, max_body)
        except PayloadTooLarge:
            counted(source_id, "too_large").inc()
            return _error(413, PayloadTooLarge.code, f"body is over the {max_body}-byte limit",
                          {"Connection": "close"})
        except TimeoutError:
            counted(source_id, "body_timeout").inc()
            return _error(408, "request_timeout",
                          f"body not received within {server.body_timeout:.0f} s", {"Connection": "close"})
        except web.RequestPayloadError as err:
            counted(source_id, "bad_body").inc()
            return _error(400, "bad_body", f"body could not be read: {type(err.__cause__ or err).__name__}")
        inbound = InboundRequest(method=request.method, path=request.path, query=request.query,
                                 headers=request.headers, body=body, remote=request.remote)
        try:
            events = connector.receive(inbound)
            if not isinstance(events, list):  # a coroutine: it must ask its platform first
                events = await events
            raw = intake(source_id, mapping, hub.cipher, events)
        except IngressError as err:
            counted(source_id, err.code).inc()
            log.info("webhook refused", source=source_id, status=err.status, reason=str(err))
            return _error(err.status, err.code, str(err))
        # Only the sealed copies wait for the commit: the parsed documents, often
        # several times the body's size, are let go first.
        del events, inbound, body
        try:
            stored = await hub.inbox.submit(raw, timeout=server.inbox_timeout)
        except IngressError as err:  # an event the database cannot take as it is
            counted(source_id, err.code).inc()
            return _error(err.status, err.code, str(err))
        except StorageUnavailable as err:
            counted(source_id, "unavailable").inc()
            log.error("inbox write failed", source=source_id, error=str(err))
            return _error(503, "storage_unavailable", "events not stored; retry later",
                          {"Retry-After": "5"})
        counted(source_id, "accepted" if stored.stored else "duplicate").inc()
        reply = connector.acknowledge(stored.stored, stored.duplicates)
        return web.Response(status=reply.status, body=reply.body, content_type=reply.content_type)

    async def challenge(request: web.Request) -> web.Response:
        """GET on a webhook URL: the platform checking it is ours (WeChat's echostr)."""
        source_id = request.match_info["source_id"]
        rt = hub.webhook_sources.get(source_id)
        if rt is None:
            return _error(404, "unknown_source", f"no webhook source {source_id!r}")
        problem = undecodable(request)
        if problem is not None:
            counted(source_id, "bad_encoding").inc()
            return _error(400, "bad_encoding", problem)
        answer = getattr(rt[0], "challenge", None)
        if answer is None:
            return _error(405, "method_not_allowed", f"source {source_id!r} takes POST only",
                          {"Allow": "POST"})
        inbound = InboundRequest(method="GET", path=request.path, query=request.query,
                                 headers=request.headers, body=b"", remote=request.remote)
        try:
            reply = answer(inbound)
        except IngressError as err:
            counted(source_id, err.code).inc()
            log.info("webhook challenge refused", source=source_id, status=err.status, reason=str(err))
            return _error(err.status, err.code, str(err))
        return web.Response(status=reply.status, body=reply.body, content_type=reply.content_type)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        problems = await hub.readiness_problems()
        if problems:
            return web.json_response({"status": "not ready", "problems": problems}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=hub.metrics.render(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    _add(app, "/webhooks/{source_id}", POST=webhook, GET=challenge)
    _add(app, "/callbacks/{destination_id}", POST=callback)
    _add(app, "/healthz", GET=healthz)
    _add(app, "/readyz", GET=readyz)
    _add(app, "/metrics", GET=metrics)
    admin_api.add_routes(app, hub)
    dashboard.add_routes(app, hub)
    app.router.add_route("*", "/{path:.*}", _no_such_endpoint)
    return app


# Errors are JSON without a middleware: aiohttp's middleware chain costs about
# 12 µs a request, a tenth of the whole ingest path (bench/ingest.py).
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _add(app: web.Application, path: str, **handlers: Handler) -> None:
    """Routes for ``path``, each answering an unexpected error with a JSON 500,
    and a JSON 405 for any other method."""
    for method, handler in handlers.items():
        app.router.add_route(method, path, _json_errors(handler))
    allow = ", ".join(handlers)

    async def method_not_allowed(request: web.Request) -> web.Response:
        return _error(405, "method_not_allowed", f"{request.method} is not allowed here; use {allow}",
                      {"Allow": allow})

    app.router.add_route("*", path, method_not_allowed)


def _json_errors(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400 and exc.content_type != "application/json":
                return _error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
            raise
        except Exception:
            log.exception("unhandled error", path=request.path)
            return _error(500, "internal_error", "internal error; see the hub's log")
    return wrapped


async def _no_such_endpoint(request: web.Request) -> web.Response:
    return _error(404, "not_found", f"no endpoint at {request.path}")
