"""Tickets as the after-sales team's spreadsheet: CSV or XLSX, streamed.

The columns are the ones such a team keeps by hand (:data:`COLUMNS`). Rows
are read in pages of :data:`PAGE` tickets along the primary key, each page
with one query per table it needs (orders, customers, the timeline's
first-response and resolution times), and written out before the next page
is read: memory stays flat however many tickets there are. Contacts are
masked unless the export is made with ``pii`` (the same masking as pushes
and the API). XLSX goes through XlsxWriter in its constant-memory mode (rows
flushed as written); CSV is UTF-8 with a BOM, so Excel opens the Chinese
text as such.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hub.pii import PiiCipher
from hub.records import customers, orders, ticket_events, tickets
from hub.storage import Database
from hub.views import customer_view, iso

PAGE = 1000

COLUMNS = ("ticket", "channel", "source", "external id", "order", "sku", "product", "customer", "phone",
           "problem type", "reason", "status", "refund (yuan)", "paid (yuan)", "created", "first response",
           "resolved", "notes", "rating")
# Timeline kinds that answer the customer (the first of them is the first response).
RESPONSES = ("status_changed", "message", "call", "note")


@dataclass(frozen=True)
class ExportFilter:
    status: str | None = None
    channel: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def rows(db: Database, cipher: PiiCipher, f: ExportFilter, *, pii: bool) -> AsyncIterator[list[Any]]:
    """Every matching ticket as a row of :data:`COLUMNS`, oldest first, page by page."""
    after = 0
    while True:
        stmt = sa.select(tickets).where(tickets.c.id > after).order_by(tickets.c.id).limit(PAGE)
        for column, value in ((tickets.c.status, f.status), (tickets.c.channel, f.channel)):
            if value is not None:
                stmt = stmt.where(column == value)
        if f.since is not None:
            stmt = stmt.where(tickets.c.created_at >= f.since)
        if f.until is not None:
            stmt = stmt.where(tickets.c.created_at < f.until)
        async with db.read() as conn:
            page = (await conn.execute(stmt)).all()
            if not page:
                return
            ids = [t.id for t in page]
            order_ids = sorted({t.order_id for t in page if t.order_id is not None})
            customer_ids = sorted({t.customer_id for t in page if t.customer_id is not None})
            by_order = {o.id: o for o in (await conn.execute(
                sa.select(orders.c.id, orders.c.external_id, orders.c.paid_amount)
                .where(orders.c.id.in_(order_ids)))).all()} if order_ids else {}
            by_customer = {c.id: c for c in (await conn.execute(
                sa.select(customers).where(customers.c.id.in_(customer_ids)))).all()} if customer_ids else {}
            events = (await conn.execute(
                sa.select(ticket_events.c.ticket_id, ticket_events.c.kind, ticket_events.c.to_status,
                          ticket_events.c.detail, ticket_events.c.at)
                .where(ticket_events.c.ticket_id.in_(ids), ticket_events.c.kind.in_(RESPONSES))
                .order_by(ticket_events.c.id))).all()
        first: dict[int, datetime] = {}
        resolved: dict[int, datetime] = {}
        notes: dict[int, list[str]] = {}
        for e in events:
            first.setdefault(e.ticket_id, e.at)
            if e.kind == "status_changed" and e.to_status == "resolved":
                resolved[e.ticket_id] = e.at
            if e.kind == "note" and isinstance(e.detail, dict) and e.detail.get("text"):
                notes.setdefault(e.ticket_id, []).append(str(e.detail["text"]))
        for t in page:
            order = by_order.get(t.order_id) if t.order_id else None
            c = customer_view(by_customer.get(t.customer_id), cipher, pii=pii) if t.customer_id else None
            items = t.items if isinstance(t.items, list) else []
            yield [t.id, t.channel, t.source_id, t.external_id, order.external_id if order else None,
                   " ".join(str(i.get("sku")) for i in items if isinstance(i, dict) and i.get("sku")) or None,
                   " ".join(str(i.get("title")) for i in items if isinstance(i, dict) and i.get("title")) or None,
                   c["display_name"] if c else None, c["phone"] if c else None,
                   t.type, t.reason_text or t.reason_code, t.status, _yuan(t.refund_amount),
                   _yuan(order.paid_amount) if order else None, iso(t.created_at), iso(first.get(t.id)),
                   iso(resolved.get(t.id)), "; ".join(notes.get(t.id, [])) or None, None]
        after = page[-1].id


def _yuan(fen: int | None) -> str | None:
    return None if fen is None else f"{fen / 100:.2f}"


async def to_csv(out: io.TextIOBase | Any, source: AsyncIterator[list[Any]],
                 progress: Callable[[int], None] | None = None) -> int:
    """Write a UTF-8 CSV (with BOM) to the text stream ``out``; how many rows."""
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    n = 0
    async for row in source:
        writer.writerow(["" if v is None else v for v in row])
        n += 1
        if progress is not None and n % PAGE == 0:
            progress(n)
    return n


async def to_xlsx(path: Path, source: AsyncIterator[list[Any]],
                  progress: Callable[[int], None] | None = None) -> int:
    """Write an XLSX workbook to ``path``, rows flushed as written; how many rows."""
    import xlsxwriter  # only exports need it

    book = xlsxwriter.Workbook(str(path), {"constant_memory": True, "strings_to_numbers": False,
                                           "strings_to_urls": False})
    try:
        sheet = book.add_worksheet("tickets")
        bold = book.add_format({"bold": True})
        sheet.write_row(0, 0, COLUMNS, bold)
        sheet.freeze_panes(1, 0)
        n = 0
        async for row in source:
            n += 1
            sheet.write_row(n, 0, row)
            if progress is not None and n % PAGE == 0:
                progress(n)
    finally:
        book.close()
    return n
