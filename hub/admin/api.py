"""The admin API, ``/api/v1``: sources, tickets, customers, pushes, dead letters,
reports, the backlog over time, audit.

Every endpoint is one entry of :data:`ENDPOINTS` — method, path, the role it
needs, its query parameters and what it does — from which both the routes and
the OpenAPI document (``GET /api/v1/openapi.json``, no token needed: it holds
no data) are made, so the two cannot drift apart. Answers are JSON; errors
are ``{"error", "message"}`` with 400 (a bad parameter), 401 (no or unknown
token, with ``WWW-Authenticate: Bearer``), 403 (a role that may not), 404.
Actions (retry, drop) are written to the audit log with the token's name.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
import structlog
from aiohttp import web

from hub import backlog, dead_letters, export, polling, replay, reports, samples
from hub.admin import queries
from hub.admin.auth import Forbidden, Principal, Tokens, Unauthorized
from hub.records import audit_log, utcnow
from hub.views import iso, parse_iso

if TYPE_CHECKING:
    from hub.daemon import Hub

PREFIX = "/api/v1"
log = structlog.get_logger("hub.admin")


class BadRequest(Exception):
    pass


@dataclass(frozen=True)
class Param:
    name: str
    kind: str = "string"   # string | integer | date-time
    where: str = "query"   # query | path
    help: str = ""


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    role: str | None                 # None: no token needed
    summary: str
    handler: Callable[[Hub, web.Request, Principal | None], Awaitable[Any]]
    params: tuple[Param, ...] = field(default_factory=tuple)
    body: dict[str, Any] | None = None  # JSON schema of the request body


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": code, "message": message}),
                        content_type="application/json", headers=headers)


def _arg(request: web.Request, p: Param) -> Any:
    raw = request.match_info.get(p.name) if p.where == "path" else request.query.get(p.name)
    if raw is None or raw == "":
        return None
    if p.kind == "integer":
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(f"{p.name} must be an integer, got {raw[:40]!r}") from None
        if not -2**63 <= value < 2**63:  # what the database's integers hold
            raise BadRequest(f"{p.name} is out of range")
        return value
    if p.kind == "date-time":
        when = parse_iso(raw)
        if when is None:
            raise BadRequest(f"{p.name} must be an ISO 8601 time, got {raw[:40]!r}")
        if when.tzinfo is None:
            raise BadRequest(f"{p.name} needs a time zone (…Z or …+08:00)")
        return when
    return raw


def _args(request: web.Request, params: tuple[Param, ...]) -> dict[str, Any]:
    return {p.name: _arg(request, p) for p in params}


# ---------------------------------------------------------------- handlers

async def sources_of(hub: Hub) -> list[dict[str, Any]]:
    """Every configured source with its health (what /sources, /status and the dashboard show)."""
    states = await polling.source_states(hub.db)
    out = []
    for s in hub.config.sources:
        kind = hub.registry.sources.get(s.kind)
        st = states.get(s.id, {})
        out.append({"id": s.id, "kind": s.kind, "enabled": s.enabled,
                    "intake": "poll" if kind is not None and kind.poller is not None else "webhook",
                    "healthy": st.get("healthy"), "circuit": st.get("circuit"),
                    "last_success_at": iso(st.get("last_success_at")), "lag_seconds": st.get("lag_seconds"),
                    "last_error": st.get("last_error"), "last_error_at": iso(st.get("last_error_at")),
                    "lease_owner": st.get("lease_owner"), "lease_until": iso(st.get("lease_until")),
                    "paused": bool(st.get("paused")), "quota": st.get("quota"),
                    "backfills": {k[len("backfill:"):]: v for k, v in st.get("cursors", {}).items()
                                  if k.startswith("backfill:")}})
    return out


async def _sources(hub: Hub, _request: web.Request, _who: Principal | None) -> Any:
    return {"sources": await sources_of(hub)}


async def _status(hub: Hub, _request: web.Request, _who: Principal | None) -> Any:
    return await status_of(hub)


async def status_of(hub: Hub) -> dict[str, Any]:
    """Ready or not and why, the inbox, every destination and every source."""
    counts = await backlog.count(hub.db, sorted(hub.deliverer.destinations))
    return {"ready": not (problems := await hub.readiness_problems()), "problems": problems,
            "inbox": counts.inbox,
            "destinations": {d: {**n, "degraded": hub.deliverer.destinations[d].health.degraded,
                                 "circuit": hub.deliverer.destinations[d].circuit.state.value,
                                 "last_error": queries.masked(hub.deliverer.destinations[d].health.last_error,
                                                               False)}
                             for d, n in counts.outbox.items()},
            "sources": await sources_of(hub)}


_PAGE = (Param("before", "integer", help="ids below this: the last id of the previous page"),
         Param("limit", "integer", help=f"at most this many (default 50, at most {queries.MAX_LIMIT})"))
_TICKET_FILTERS = (Param("channel"), Param("status"), Param("type"), Param("customer_id", "integer"),
                   Param("order", help="the order's external number, any channel"),
                   Param("since", "date-time", help="created at or after"),
                   Param("until", "date-time", help="created before"), *_PAGE)


async def _tickets(hub: Hub, request: web.Request, _who: Principal | None) -> Any:
    a = _args(request, _TICKET_FILTERS)
    a["limit"] = a["limit"] or 50
    return {"tickets": await queries.list_tickets(hub.db, queries.TicketFilter(**a))}


_ID = (Param("id", "integer", "path"),)


def _detail(read: Callable[..., Awaitable[dict[str, Any] | None]], what: str) -> Callable[..., Awaitable[Any]]:
    """A handler answering one record by the id in its path (404 if there is none)."""
    async def handle(hub: Hub, request: web.Request, who: Principal | None) -> Any:
        assert who is not None
        found = await read(hub.db, hub.cipher, _args(request, _ID)["id"], pii=who.pii)
        if found is None:
            raise web.HTTPNotFound(text=f"no such {what}")
        return found
    return handle


_ticket = _detail(queries.ticket_detail, "ticket")
_customer = _detail(queries.customer_detail, "customer")


_PUSH_FILTERS = (Param("state", help="pending | delivered | dead | dropped"), Param("destination"), *_PAGE)


async def _pushes(hub: Hub, request: web.Request, who: Principal | None) -> Any:
    assert who is not None
    a = _args(request, _PUSH_FILTERS)
    return {"pushes": await queries.list_pushes(hub.db, pii=who.pii, state=a["state"],
                                                destination=a["destination"], before=a["before"],
                                                limit=a["limit"] or 50)}


async def _dead(hub: Hub, request: web.Request, who: Principal | None) -> Any:
    assert who is not None
    dest = _args(request, (Param("destination"),))["destination"]
    return {"dead_letters": await queries.list_dead_letters(hub.db, pii=who.pii, destination=dest)}


async def _retry(hub: Hub, request: web.Request, who: Principal | None) -> Any:
    assert who is not None
    push_id = _args(request, _ID)["id"]
    if not await dead_letters.retry(hub.db, [push_id], actor=f"api:{who.name}"):
        raise web.HTTPNotFound(text=f"push {push_id} is not a dead letter")
    hub.deliverer.wake.set()
    return {"retried": push_id}


async def _drop(hub: Hub, request: web.Request, who: Principal | None) -> Any:
    assert who is not None
    push_id = _args(request, _ID)["id"]
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        raise BadRequest("the body must be JSON: {\"reason\": \"…\"}") from None
    reason = body.get("reason") if isinstance(body, dict) else None
    if not isinstance(reason, str) or not reason.strip():
        raise BadRequest("say why the push is dropped: {\"reason\": \"…\"}")
    if not await dead_letters.drop(hub.db, [push_id], actor=f"api:{who.name}", reason=reason[:500]):
        raise web.HTTPNotFound(text=f"push {push_id} is not a dead letter")
    hub.deliverer.wake.set()
    return {"dropped": push_id}


_EXPORT_FILTERS = (Param("status"), Param("channel"), Param("since", "date-time", help="created at or after"),
                   Param("until", "date-time", help="created before"))


async def _export_csv(hub: Hub, request: web.Request, who: Principal | None) -> Any:
    assert who is not None
    f = export.ExportFilter(**_args(request, _EXPORT_FILTERS))
    resp = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8",
                                       "Content-Disposition": 'attachment; filename="tickets.csv"'})
    await resp.prepare(request)
    buffer = io.StringIO()  # what csv writes, handed to the response a page at a time
    source = export.rows(hub.db, hub.cipher, f, pii=who.pii)

    async def paged() -> AsyncIterator[list[Any]]:
        n = 0
        async for row in source:
            yield row
            n += 1
            if n % export.PAGE == 0:  # hand over what is written, keep memory flat
                await resp.write(buffer.getvalue().encode())
                buffer.seek(0)
                buffer.truncate()

    await export.to_csv(buffer, paged())
    await resp.write(buffer.getvalue().encode())
    await resp.write_eof()
    await _audit_export(hub, who, "csv", f)
    return resp


async def _export_xlsx(hub: Hub, request: web.Request, who: Principal | None) -> Any:
    assert who is not None
    f = export.ExportFilter(**_args(request, _EXPORT_FILTERS))
    with tempfile.TemporaryDirectory(prefix="hub-export-") as tmp:
        path = Path(tmp) / "tickets.xlsx"
        await export.to_xlsx(path, export.rows(hub.db, hub.cipher, f, pii=who.pii))
        await _audit_export(hub, who, "xlsx", f)
        resp = web.FileResponse(path, headers={
            "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "Content-Disposition": 'attachment; filename="tickets.xlsx"'})
        await resp.prepare(request)
        await resp.write_eof()
        return resp


async def _audit_export(hub: Hub, who: Principal, kind: str, f: export.ExportFilter) -> None:
    """An export with contacts in clear is worth knowing about: every export is audited."""
    async with hub.db.write() as conn:
        await conn.execute(sa.insert(audit_log).values(
            actor=f"api:{who.name}", action=f"export.{kind}", target="tickets", at=utcnow(),
            detail={"pii": who.pii, "filter": {k: (iso(v) if isinstance(v, datetime) else v)
                                               for k, v in vars(f).items() if v is not None}}))


async def _audit(hub: Hub, request: web.Request, _who: Principal | None) -> Any:
    a = _args(request, _PAGE)
    return {"audit": await queries.list_audit(hub.db, before=a["before"], limit=a["limit"] or 50)}


_PERIOD = (Param("since", "date-time", help="tickets created at or after (default: 7 days ago)"),
           Param("until", "date-time", help="tickets created before (default: now)"))


def period_of(a: dict[str, Any]) -> reports.Period:
    until = a.get("until") or utcnow()
    since = a.get("since") or until - timedelta(days=7)
    if since >= until:
        raise BadRequest("since must be before until")
    return reports.Period(since, until)


async def _reports(hub: Hub, request: web.Request, _who: Principal | None) -> Any:
    r = await reports.report(hub.db, period_of(_args(request, _PERIOD)))
    return {**r, "since": iso(r["since"]), "until": iso(r["until"])}


_MINUTES = (Param("minutes", "integer", help="how far back, in minutes (default 60, at most 10080)"),)


async def _backlog(hub: Hub, request: web.Request, _who: Principal | None) -> Any:
    minutes = _args(request, _MINUTES)["minutes"] or 60
    if not 1 <= minutes <= 10080:
        raise BadRequest("minutes must be 1..10080 (a week)")
    points = await samples.series(hub.db, utcnow() - timedelta(minutes=minutes))
    return {"minutes": minutes, "points": [{"minute": iso(p.minute), "received": p.received,
                                            "settled": p.settled, "inbox_pending": p.inbox_pending,
                                            "outbox_pending": p.outbox_pending, "dead": p.dead}
                                           for p in points]}


_SOURCE = (Param("id", "string", "path"),)


def _pause(paused: bool) -> Callable[..., Awaitable[Any]]:
    async def handle(hub: Hub, request: web.Request, who: Principal | None) -> Any:
        assert who is not None
        source_id = _args(request, _SOURCE)["id"]
        source = next((s for s in hub.config.sources if s.id == source_id), None)
        if source is None:
            raise web.HTTPNotFound(text=f"no source {source_id!r} in the config")
        kind = hub.registry.sources.get(source.kind)
        if kind is None or kind.poller is None:
            raise BadRequest(f"{source_id} is a webhook source: the platform pushes, there is no poll to pause")
        changed = await polling.set_paused(hub.db, source_id, paused, actor=f"api:{who.name}")
        return {"source": source_id, "paused": paused, "changed": changed}
    return handle


_REPLAY_BODY: dict[str, Any] = {"type": "object", "properties": {
    "source": {"type": "string"}, "since": {"type": "string", "format": "date-time"},
    "until": {"type": "string", "format": "date-time"}, "ticket_ids": {"type": "array", "items": {"type": "integer"}},
    "quarantined": {"type": "boolean"}, "apply": {"type": "boolean", "description": "false (default): the diff only"}}}


def _replay_scope(body: Any) -> tuple[replay.Scope, bool]:
    if not isinstance(body, dict) or set(body) - set(_REPLAY_BODY["properties"]):
        raise BadRequest(f"the body is an object of {sorted(_REPLAY_BODY['properties'])}")
    times: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        raw = body.get(name)
        if raw is None:
            times[name] = None
            continue
        when = parse_iso(str(raw))
        if when is None:
            raise BadRequest(f"{name} must be an ISO 8601 time")
        if when.tzinfo is None:
            raise BadRequest(f"{name} needs a time zone")
        times[name] = when
    ids = body.get("ticket_ids") or []
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i < 2**63
                                            for i in ids) or len(ids) > 10_000:
        raise BadRequest("ticket_ids is a list of at most 10,000 ticket ids")
    source = body.get("source")
    if source is not None and not isinstance(source, str):
        raise BadRequest("source is a source id")
    return (replay.Scope(source=source, since=times["since"], until=times["until"], ticket_ids=tuple(ids),
                         quarantined=body.get("quarantined") is True), body.get("apply") is True)


async def _replay(hub: Hub, request: web.Request, who: Principal | None) -> Any:
    assert who is not None
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        raise BadRequest("the body must be JSON") from None
    scope, go = _replay_scope(body)
    p = hub.pipeline
    planned = await replay.plan(hub.db, hub.cipher, p.sources, p.rules, scope)
    answer: dict[str, Any] = {
        "examined": planned.examined, "unmappable": planned.unmappable,
        "tickets": [{"ticket_id": d.ticket_id, "source_id": d.source_id, "external_id": d.external_id,
                     "changes": queries.masked({k: {"now": b, "after": a} for k, (b, a) in d.changes.items()},
                                               who.pii),
                     "pushes_to": list(d.destinations)} for d in planned.tickets[:queries.MAX_LIMIT]],
        "requeue": [{"raw_event_id": r.raw_event_id, "source_id": r.source_id,
                     "was": queries.masked(r.reason, who.pii), "now": queries.masked(r.outcome, who.pii)}
                    for r in planned.requeue[:queries.MAX_LIMIT]],
        "applied": None}
    if go:
        done = await replay.apply(hub.db, hub.cipher, p.destinations, p.rules, planned, actor=f"api:{who.name}",
                                  mapping_labels={sid: rt.mapping.label for sid, rt in p.sources.items()})
        hub.wake_pipeline()
        hub.deliverer.wake.set()
        answer["applied"] = {"replay_id": done.replay_id, "tickets": done.tickets, "pushes": done.pushes,
                             "skipped": done.skipped, "requeued": done.requeued}
    return answer


async def _backfill(hub: Hub, request: web.Request, who: Principal | None) -> Any:
    assert who is not None
    source_id = _args(request, _SOURCE)["id"]
    source = next((s for s in hub.config.sources if s.id == source_id and s.enabled), None)
    if source is None:
        raise web.HTTPNotFound(text=f"no enabled source {source_id!r} in the config")
    kind = hub.registry.sources.get(source.kind)
    if kind is None or kind.poller is None:
        raise BadRequest(f"{source_id} is a webhook source: the platform pushes; ask it to redeliver")
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        raise BadRequest("the body must be JSON: {\"since\": \"2026-11-11T00:00:00+08:00\"}") from None
    raw = body.get("since") if isinstance(body, dict) else None
    since = parse_iso(raw) if isinstance(raw, str) else None
    if since is None or since.tzinfo is None:
        raise BadRequest("since: an ISO 8601 time with a zone, e.g. 2026-11-11T00:00:00+08:00")
    if since >= utcnow():
        raise BadRequest("since must be in the past")
    streams = await polling.backfillable(kind.poller, source)
    if not streams:
        raise BadRequest(f"{source_id} has no stream that can be read from a past time")
    await polling.request_backfill(hub.db, source_id, streams, since, actor=f"api:{who.name}")
    return {"source": source_id, "since": iso(since), "streams": streams}


async def _openapi(_hub: Hub, _request: web.Request, _who: Principal | None) -> Any:
    return openapi()


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/openapi.json", None, "This document", _openapi),
    Endpoint("GET", "/status", "viewer", "Ready or not and why, the inbox, every destination's pushes and "
             "health, every source", _status),
    Endpoint("GET", "/sources", "viewer", "Every source: kind, health, circuit, lag, last error, lease", _sources),
    Endpoint("POST", "/sources/{id}/pause", "operator", "Stop polling a source (every process) until resumed",
             _pause(True), _SOURCE),
    Endpoint("POST", "/sources/{id}/resume", "operator", "Poll a paused source again", _pause(False), _SOURCE),
    Endpoint("POST", "/sources/{id}/backfill", "operator", "Read a polled source again from a past time, beside "
             "the live poll (what is already stored is dropped by its dedupe key)", _backfill, _SOURCE,
             {"type": "object", "required": ["since"],
              "properties": {"since": {"type": "string", "format": "date-time"}}}),
    Endpoint("GET", "/backlog", "viewer", "The backlog once a minute: received, settled pushes, pending, dead",
             _backlog, _MINUTES),
    Endpoint("GET", "/reports", "viewer", "Volume by channel/type/reason, first-response and resolution times, "
             "refund totals by reason and SKU (top 100), over the tickets created in a period",
             _reports, _PERIOD),
    Endpoint("GET", "/tickets", "viewer", "Tickets, newest first, filtered", _tickets, _TICKET_FILTERS),
    Endpoint("GET", "/tickets/{id}", "viewer", "A ticket with its order, customer, timeline, raw events and "
             "pushes", _ticket, _ID),
    Endpoint("GET", "/customers/{id}", "viewer", "A customer with identities, orders and tickets", _customer, _ID),
    Endpoint("GET", "/outbox", "viewer", "Pushes, newest first (payloads only for tokens with pii)", _pushes,
             _PUSH_FILTERS),
    Endpoint("GET", "/dead-letters", "viewer", "Pushes that gave up, each with how many it holds back", _dead,
             (Param("destination"),)),
    Endpoint("POST", "/dead-letters/{id}/retry", "operator", "Send a dead push again; the ones behind it "
             "follow in order", _retry, _ID),
    Endpoint("POST", "/dead-letters/{id}/drop", "operator", "Give up on a dead push; the ones behind it go on",
             _drop, _ID, {"type": "object", "required": ["reason"],
                          "properties": {"reason": {"type": "string"}}}),
    Endpoint("GET", "/exports/tickets.csv", "viewer", "Tickets as CSV, streamed (contacts masked without pii)",
             _export_csv, _EXPORT_FILTERS),
    Endpoint("GET", "/exports/tickets.xlsx", "viewer", "Tickets as XLSX (contacts masked without pii)",
             _export_xlsx, _EXPORT_FILTERS),
    Endpoint("POST", "/replay", "operator", "Map stored events again with the current mappings: the diff "
             "(apply: false) or the diff applied, each changed ticket's ticket.updated pushed once", _replay, (),
             _REPLAY_BODY),
    Endpoint("GET", "/audit", "admin", "Admin actions: who, what, when, before and after", _audit, _PAGE),
)


def add_routes(app: web.Application, hub: Hub) -> None:
    tokens = Tokens(list(hub.config.security.tokens))
    by_path: dict[str, dict[str, Endpoint]] = {}
    for ep in ENDPOINTS:
        by_path.setdefault(ep.path, {})[ep.method] = ep
    for path, methods in by_path.items():
        for method, ep in methods.items():
            app.router.add_route(method, PREFIX + path, _handler(hub, tokens, ep))
        allow = ", ".join(methods)

        async def not_allowed(request: web.Request, allow: str = allow) -> web.Response:
            return _error(405, "method_not_allowed", f"{request.method} is not allowed here; use {allow}",
                          {"Allow": allow})

        app.router.add_route("*", PREFIX + path, not_allowed)


def _handler(hub: Hub, tokens: Tokens, ep: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            who = tokens.require(request.headers.get("Authorization"), ep.role) if ep.role else None
            result = await ep.handler(hub, request, who)
            return result if isinstance(result, web.StreamResponse) else _json(result)
        except Unauthorized as err:
            return _error(401, "unauthorized", str(err), {"WWW-Authenticate": 'Bearer realm="hub"'})
        except Forbidden as err:
            return _error(403, "forbidden", str(err))
        except BadRequest as err:
            return _error(400, "bad_request", str(err))
        except web.HTTPNotFound as err:
            return _error(404, "not_found", err.text or "not found")
        except Exception:
            log.exception("admin API error", path=request.path)
            return _error(500, "internal_error", "internal error; see the hub's log")
    return handle


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of :data:`ENDPOINTS`."""
    paths: dict[str, Any] = {}
    for ep in ENDPOINTS:
        op: dict[str, Any] = {
            "summary": ep.summary,
            "parameters": [{"name": p.name, "in": p.where, "required": p.where == "path",
                            "description": p.help,
                            "schema": {"type": "string", "format": "date-time"} if p.kind == "date-time"
                            else {"type": p.kind}} for p in ep.params],
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {}}}},
                          **({"401": {"description": "no or unknown token"},
                              "403": {"description": f"needs the {ep.role} role"}} if ep.role else {}),
                          **({"404": {"description": "not found"}} if "{" in ep.path else {})},
        }
        if ep.role:
            op["security"] = [{"bearer": []}]
            op["x-role"] = ep.role
        if ep.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ep.body}}}
        paths.setdefault(PREFIX + ep.path, {})[ep.method.lower()] = op
    return {"openapi": "3.1.0",
            "info": {"title": "After-sales hub admin API", "version": _version(),
                     "description": "Bearer tokens from security.tokens; roles viewer < operator < admin; "
                                    "phones, addresses, e-mails and names masked without the pii grant."},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "paths": paths}


def _version() -> str:
    try:
        return version("aftersales-hub")
    except PackageNotFoundError:
        return "unknown"
