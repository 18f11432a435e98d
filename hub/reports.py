"""Reports over any period: volume, first-response and resolution times,
refund totals — what an after-sales lead reads each morning.

A period is the tickets *created* in ``[since, until)``, read along
``ix_tickets_created_at``: a report costs what its period holds, never the
whole history. Volume and refunds by reason are grouped by the database;
times and refunds by SKU need each ticket's timeline and items, so those are
read page by page (:data:`PAGE` tickets and one timeline query per page)
and only numbers are kept.

First response is the first timeline entry that answers the customer
(:data:`hub.export.RESPONSES`: a status change, message, call or note);
resolution is the first move to ``resolved``. A ticket that has neither yet
counts as open for that figure, not as zero.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from statistics import fmean
from typing import Any

import sqlalchemy as sa

from hub.export import RESPONSES
from hub.records import ticket_events, tickets
from hub.storage import Database

PAGE = 1000


@dataclass(frozen=True)
class Period:
    since: datetime
    until: datetime


def _in(period: Period) -> Any:
    return sa.and_(tickets.c.created_at >= period.since, tickets.c.created_at < period.until)


async def volume(db: Database, period: Period) -> dict[str, Any]:
    """Tickets created in the period, by channel, type and reason."""
    reason = sa.func.coalesce(tickets.c.reason_code, tickets.c.reason_text, "")
    out: dict[str, Any] = {}
    async with db.read() as conn:
        out["total"] = (await conn.execute(sa.select(sa.func.count()).select_from(tickets)
                                           .where(_in(period)))).scalar_one()
        for name, column in (("by_channel", tickets.c.channel), ("by_type", tickets.c.type),
                             ("by_reason", reason)):
            rows = (await conn.execute(sa.select(column.label("k"), sa.func.count().label("n"))
                                       .where(_in(period)).group_by(column)
                                       .order_by(sa.func.count().desc()))).all()
            out[name] = {(r.k or "(none)"): r.n for r in rows}
    return out


def _summary(seconds: list[float], total: int) -> dict[str, Any]:
    seconds.sort()

    def pct(p: float) -> float | None:
        return round(seconds[min(len(seconds) - 1, int(p * len(seconds)))], 1) if seconds else None

    return {"count": len(seconds), "open": total - len(seconds),
            "mean_seconds": round(fmean(seconds), 1) if seconds else None,
            "p50_seconds": pct(0.5), "p90_seconds": pct(0.9), "max_seconds": seconds[-1] if seconds else None}


def _sku_shares(items: Any, refund: int) -> dict[str, int]:
    """A ticket's refund split over its SKUs: by each item's amount when given,
    else by quantity; the fen left by rounding go to the first SKU."""
    lines = [i for i in items if isinstance(i, dict) and i.get("sku")] if isinstance(items, list) else []
    if not lines:
        return {"(no sku)": refund}

    def weight(i: dict[str, Any]) -> float:
        for key in ("amount", "refund_amount", "qty"):
            try:
                value = float(i.get(key) or 0)
            except (TypeError, ValueError):
                continue
            if value > 0:
                return value
        return 1.0

    weights = [(str(i["sku"]), weight(i)) for i in lines]
    whole = sum(w for _, w in weights)
    shares: Counter[str] = Counter()
    for sku, w in weights:
        shares[sku] += int(refund * w / whole)
    shares[weights[0][0]] += refund - sum(shares.values())
    return dict(shares)


async def times_and_refunds(db: Database, period: Period) -> dict[str, Any]:
    """First-response and resolution times, and refund totals by reason and SKU."""
    first_response: list[float] = []
    resolution: list[float] = []
    by_reason: Counter[str] = Counter()
    by_sku: Counter[str] = Counter()
    refunded = total = refund_tickets = 0
    after = 0
    while True:
        async with db.read() as conn:
            page = (await conn.execute(
                sa.select(tickets.c.id, tickets.c.created_at, tickets.c.refund_amount, tickets.c["items"],
                          tickets.c.reason_code, tickets.c.reason_text)
                .where(_in(period), tickets.c.id > after).order_by(tickets.c.id).limit(PAGE))).all()
            if not page:
                break
            events = (await conn.execute(
                sa.select(ticket_events.c.ticket_id, ticket_events.c.kind, ticket_events.c.to_status,
                          ticket_events.c.at)
                .where(ticket_events.c.ticket_id.in_([t.id for t in page]),
                       ticket_events.c.kind.in_(RESPONSES))
                .order_by(ticket_events.c.id))).all()
        first: dict[int, datetime] = {}
        resolved: dict[int, datetime] = {}
        for e in events:
            first.setdefault(e.ticket_id, e.at)
            if e.kind == "status_changed" and e.to_status == "resolved":
                resolved.setdefault(e.ticket_id, e.at)
        for t in page:
            total += 1
            if t.id in first:
                first_response.append(max(0.0, (first[t.id] - t.created_at).total_seconds()))
            if t.id in resolved:
                resolution.append(max(0.0, (resolved[t.id] - t.created_at).total_seconds()))
            if t.refund_amount:
                refund_tickets += 1
                refunded += t.refund_amount
                by_reason[t.reason_code or t.reason_text or "(none)"] += t.refund_amount
                by_sku.update(_sku_shares(t.items, t.refund_amount))
        after = page[-1].id
    return {"first_response": _summary(first_response, total), "resolution": _summary(resolution, total),
            "refunds": {"tickets": refund_tickets, "total_fen": refunded,
                        "by_reason_fen": dict(by_reason.most_common()),
                        "by_sku_fen": dict(by_sku.most_common(100))}}


async def report(db: Database, period: Period) -> dict[str, Any]:
    return {"since": period.since, "until": period.until, "volume": await volume(db, period),
            **(await times_and_refunds(db, period))}
