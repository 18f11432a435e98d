"""The dashboard, ``/dashboard``: what an admin keeps open on a second screen.

Server-rendered HTML (Jinja2 templates in this folder, charts as inline SVG
from :mod:`hub.dashboard.charts`), no script and no front-end build; the
overview reloads itself every :data:`REFRESH` seconds. English and Chinese
(:mod:`hub.dashboard.texts`), chosen by ``?lang=``, remembered in a cookie.

It reads what the admin API reads (:mod:`hub.admin.api` and
:mod:`hub.admin.queries`, masked the same way without ``pii``) and acts
through the same functions (a retry is :func:`hub.dead_letters.retry`,
audited with the signed-in token's name). Signing in takes a token of
``security.tokens`` once and gives a session cookie (see
:mod:`hub.admin.auth`): HttpOnly, SameSite=Strict, and every form carries a
CSRF token bound to the session.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import jinja2
import structlog
from aiohttp import web

from hub import dead_letters, reports, samples
from hub.admin import api, queries
from hub.admin.auth import Principal, Tokens, Unauthorized
from hub.dashboard import charts
from hub.dashboard.texts import language_of, translate
from hub.lifecycle import STATUSES
from hub.records import utcnow
from hub.storage import UNAVAILABLE

if TYPE_CHECKING:
    from hub.daemon import Hub

BASE = "/dashboard"
REFRESH = 30                 # seconds between the overview's reloads
SESSION_SECONDS = 12 * 3600
KPI_SECONDS = 60             # the 24-hour report is read at most once a minute per process
SESSION_COOKIE, LANG_COOKIE = "hub_session", "hub_lang"
log = structlog.get_logger("hub.dashboard")

_templates = jinja2.Environment(loader=jinja2.PackageLoader("hub.dashboard", "templates"),
                                autoescape=True, undefined=jinja2.StrictUndefined)


def _lang(request: web.Request) -> str:
    return language_of(request.query.get("lang"), request.cookies.get(LANG_COOKIE),
                       request.headers.get("Accept-Language"))


def _yuan(fen: int | None) -> str:
    return "" if fen is None else f"{fen / 100:,.2f}"


def _when(text: str | None) -> str:
    """An ISO time as a person reads it: to the second, UTC."""
    return "" if not text else text[:19].replace("T", " ")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Dashboard:
    def __init__(self, hub: Hub):
        self.hub = hub
        self.tokens = Tokens(list(hub.config.security.tokens))
        self._kpi: tuple[float, dict[str, Any]] | None = None

    # ------------------------------------------------------------ plumbing

    def _render(self, request: web.Request, name: str, *, code: int = 200, who: Principal | None = None,
                **values: Any) -> web.Response:
        lang = _lang(request)
        session = request.cookies.get(SESSION_COOKIE, "")
        html = _templates.get_template(name).render(
            t=lambda key, **v: translate(lang, key, **v), lang=lang, base=BASE, who=who, yuan=_yuan, when=_when,
            csrf=self.tokens.csrf_for(session) if who else "", refresh=values.pop("refresh", None), **values)
        resp = web.Response(status=code, text=html, content_type="text/html",
                            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                     "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                                "img-src 'self'; form-action 'self'"})
        if request.query.get("lang") == lang:
            resp.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, path=BASE, samesite="Lax")
        return resp

    def _who(self, request: web.Request) -> Principal | None:
        try:
            return self.tokens.from_session(request.cookies.get(SESSION_COOKIE))
        except Unauthorized:
            return None

    @staticmethod
    async def _posted(request: web.Request) -> Any:
        """The submitted form; a body that is not one is a 400, not an error of ours."""
        try:
            return await request.post()
        except web.HTTPException:
            raise
        except (ValueError, UnicodeDecodeError, AssertionError, LookupError) as err:
            raise web.HTTPBadRequest(text=f"not a form: {type(err).__name__}") from None

    async def _form(self, request: web.Request, who: Principal) -> Any:
        form = await self._posted(request)
        session = request.cookies.get(SESSION_COOKIE, "")
        if not session or form.get("csrf") != self.tokens.csrf_for(session):
            raise web.HTTPForbidden(text="this form is stale or not ours: reload the page")
        return form

    # ------------------------------------------------------------ pages

    async def overview(self, request: web.Request) -> web.StreamResponse:
        who = self._who(request)
        if who is None:
            return self._render(request, "login.html")
        q = (request.query.get("q") or "").strip()[:64]
        status_filter = request.query.get("status") or None
        if status_filter not in STATUSES:
            status_filter = None
        status = await api.status_of(self.hub)
        dead = await queries.list_dead_letters(self.hub.db, pii=who.pii)
        found = await self._tickets(q, status_filter, pii=who.pii)
        notice, notice_bad = self._notice(request)
        return self._render(request, "overview.html", who=who, refresh=REFRESH, status=status, dead=dead,
                            tickets=found, q=q, status_filter=status_filter, statuses=STATUSES,
                            kpi=await self._kpis(), charts=await self._charts(request), can_act=who.may("operator"),
                            notice=notice, notice_bad=notice_bad)

    async def _tickets(self, q: str, status: str | None, *, pii: bool) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        if q.isdigit() and len(q) < 19:
            one = await queries.list_tickets(self.hub.db, queries.TicketFilter(before=int(q) + 1, limit=1,
                                                                               status=status))
            found = [t for t in one if t["id"] == int(q)]
        if q and not found:
            found = await queries.list_tickets(self.hub.db, queries.TicketFilter(order=q, status=status, limit=25))
        if not q:
            found = await queries.list_tickets(self.hub.db, queries.TicketFilter(status=status, limit=25))
        # Free text a customer typed may hold a phone number: masked like the API.
        return [queries.masked(t, pii) for t in found]

    def _notice(self, request: web.Request) -> tuple[str | None, bool]:
        lang = _lang(request)
        done, push = request.query.get("done"), request.query.get("push", "")
        if done in ("retried", "not_dead") and push.isdigit():
            return translate(lang, done, id=push), done == "not_dead"
        return None, False

    async def _kpis(self) -> dict[str, Any]:
        if self._kpi is None or time.monotonic() - self._kpi[0] > KPI_SECONDS:
            now = utcnow()
            r = await reports.report(self.hub.db, reports.Period(now - timedelta(days=1), now))
            self._kpi = (time.monotonic(), {
                "created": r["volume"]["total"], "first_response": _duration(r["first_response"]["p50_seconds"]),
                "resolution": _duration(r["resolution"]["p50_seconds"]),
                "refunds": _yuan(r["refunds"]["total_fen"])})
        return self._kpi[1]

    async def _charts(self, request: web.Request) -> dict[str, str] | None:
        points = await samples.series(self.hub.db, utcnow() - timedelta(hours=1))
        if not points:
            return None
        lang = _lang(request)

        def t(key: str) -> str:
            return translate(lang, key)

        ends = [points[0].minute.strftime("%H:%M"), points[-1].minute.strftime("%H:%M UTC")]
        return {
            "flow": charts.lines([(t("received"), "#0969da", [p.received for p in points]),
                                  (t("settled"), "#1a7f37", [p.settled for p in points])], ends, t("charts")),
            "backlog": charts.lines([(t("inbox"), "#9a6700", [p.inbox_pending for p in points]),
                                     (t("pending"), "#8250df", [p.outbox_pending for p in points]),
                                     (t("dead"), "#cf222e", [p.dead for p in points])], ends, t("backlog")),
        }

    async def ticket(self, request: web.Request) -> web.StreamResponse:
        who = self._who(request)
        if who is None:
            raise web.HTTPSeeOther(BASE)
        raw = request.match_info["id"]
        if not raw.isdigit() or len(raw) > 18:
            raise web.HTTPNotFound(text="no such ticket")
        found = await queries.ticket_detail(self.hub.db, self.hub.cipher, int(raw), pii=who.pii)
        if found is None:
            raise web.HTTPNotFound(text="no such ticket")
        found["ticket"] = queries.masked(found["ticket"], who.pii)
        return self._render(request, "ticket.html", who=who, d=found)

    # ------------------------------------------------------------ actions

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await self._posted(request)
        token = form.get("token")
        try:
            who = self.tokens.authenticate(f"Bearer {token}" if isinstance(token, str) else None)
        except Unauthorized:
            return self._render(request, "login.html", code=401, error="bad_token")
        resp = web.HTTPSeeOther(BASE)
        resp.set_cookie(SESSION_COOKIE, self.tokens.session_for(who, SESSION_SECONDS), max_age=SESSION_SECONDS,
                        path=BASE, httponly=True, samesite="Strict", secure=request.secure)
        log.info("dashboard sign-in", token=who.name)
        raise resp

    async def logout(self, request: web.Request) -> web.StreamResponse:
        who = self._who(request)
        if who is not None:
            await self._form(request, who)
        resp = web.HTTPSeeOther(BASE)
        resp.del_cookie(SESSION_COOKIE, path=BASE)
        raise resp

    async def retry(self, request: web.Request) -> web.StreamResponse:
        who = self._who(request)
        if who is None:
            raise web.HTTPSeeOther(BASE)
        await self._form(request, who)
        if not who.may("operator"):
            raise web.HTTPForbidden(text=f"token {who.name!r} is a {who.role}; a retry needs operator")
        raw = request.match_info["id"]
        push_id = int(raw) if raw.isdigit() and len(raw) < 19 else -1
        done = await dead_letters.retry(self.hub.db, [push_id], actor=f"dashboard:{who.name}")
        self.hub.deliverer.wake.set()
        raise web.HTTPSeeOther(f"{BASE}?done={'retried' if done else 'not_dead'}&push={push_id}#dead-letters")


def add_routes(app: web.Application, hub: Hub) -> None:
    d = Dashboard(hub)

    def guarded(handler: Any) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except web.HTTPException:
                raise
            except UNAVAILABLE:
                return web.Response(status=503, text="the database is unavailable; try again shortly",
                                    headers={"Retry-After": "5"})
            except Exception:
                log.exception("dashboard error", path=request.path)
                return web.Response(status=500, text="internal error; see the hub's log")
        return handle

    app.router.add_get(BASE, guarded(d.overview))
    app.router.add_get(BASE + "/", guarded(d.overview))
    app.router.add_post(BASE + "/login", guarded(d.login))
    app.router.add_post(BASE + "/logout", guarded(d.logout))
    app.router.add_get(BASE + "/tickets/{id}", guarded(d.ticket))
    app.router.add_post(BASE + "/dead-letters/{id}/retry", guarded(d.retry))
