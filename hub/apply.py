"""The pipeline's middle stage: a batch of normalized events applied to the records, set-based.

For one claimed batch, :class:`Records` loads what the batch touches — the
identities it names, their customers, the tickets and orders it names, the
open tickets of those customers — with one query per table
(:mod:`hub.loads`: every lookup an index search, never a scan), then
applies the events one after another *in memory*, in raw-event order (so the
events of one ticket in one batch apply in order and each sees the last), and
finally writes what changed with one statement per table: new rows as
multi-row inserts, changed rows as one executemany, customer merges as bulk
moves. The caller settles the raw events and commits in the same transaction.

Deciding is pure: linking, merges, the lifecycle (:func:`hub.lifecycle.decide`,
the stale-event guard) and the pushes each change makes
(:mod:`hub.outbox_rows`) run on the rows in memory. Two things may still ask
the database mid-way, both rare: the tickets of a customer being merged away,
and more row ids when the batch needs more than it reserved.

One event is one unit of failure: every change an event makes in memory is
journalled, and an event that raises (a quarantine, or a bug) is undone to
where it began while the others keep theirs. New rows get their ids up front
(:class:`Ids`) so the timeline and the pushes can name them before anything
is written.

On SQLite a batch is *planned* (claimed, loaded, applied, rendered) on a read
snapshot, outside the write lock, and only its writes take the lock: intake's
commits wait for a few milliseconds of inserts, never for a batch's Python.

On PostgreSQL the rows a batch will change are loaded ``FOR UPDATE`` (tickets
and customers, in id order): a second hub process touching the same ticket
waits for this commit and then sees it, so a ticket's changes — and its pushes
— follow one another. Two processes creating the same ticket or customer at
once collide on a unique index at write; the batch is then retried by the
pipeline one event at a time, against what the other committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hub.bulk import Writes
from hub.callbacks import flags_for
from hub.config import SyncRule
from hub.errors import Quarantine
from hub.lifecycle import OPEN_STATUSES, Outcome, can_move, decide
from hub.linking import WEAK_KINDS, identity_pairs
from hub.loads import Reader, Where
from hub.normalized import Normalized
from hub.outbox_rows import outbox_rows
from hub.pii import PiiCipher, normalize_phone
from hub.records import (
    customer_merges,
    customers,
    identities,
    orders,
    outbox,
    raw_events,
    ticket_events,
    tickets,
)
from hub.runtimes import DestinationRuntime, SourceRuntime
from hub.storage import Database
from hub.sync import Change
from hub.views import iso

# Ticket fields an event may update besides status.
UPDATABLE = ("type", "reason_code", "reason_text", "description", "priority", "refund_amount", "items",
             "return_carrier", "return_waybill")
# Columns the pipeline writes back to rows it changed (what it may change, and no more).
TICKET_WRITES = (*UPDATABLE, "status", "order_id", "customer_id", "source_updated_at", "flags", "updated_at")
CUSTOMER_WRITES = ("display_name", "phone_enc", "phone_index", "address_enc", "email", "identities",
                   "merged_into_id", "updated_at")
IDENTITY_WRITES = ("customer_id",)  # a merge moves an identity; nothing else changes one
ORDER_WRITES = ("status", "paid_amount", "pay_reference", "items", "customer_id", "placed_at", "is_stub", "updated_at")


_MISSING = object()


class Row:
    """A record in memory: its columns as attributes (what the views read) and by name."""

    def __init__(self, values: Any):
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:  # only for a column nobody set: a bug, said plainly
        raise AttributeError(name)

    def __getitem__(self, name: str) -> Any:
        return self.__dict__[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self.__dict__[name] = value

    def columns(self) -> dict[str, Any]:
        """The row's columns (its own dict: read it, do not keep it)."""
        return self.__dict__


_EMPTY: dict[str, dict[str, None]] = {}


def _blank(table: sa.Table, **values: Any) -> Row:
    """A new row: every column of ``table``, None unless given."""
    empty = _EMPTY.get(table.name)
    if empty is None:
        empty = _EMPTY[table.name] = dict.fromkeys(table.c.keys())
    row = Row(empty)
    row.__dict__.update(values)
    return row


@dataclass(slots=True)
class Event:
    """One claimed event, normalized, as this stage takes it."""

    raw_id: int
    dedupe_key: str
    source: SourceRuntime
    n: Normalized
    pairs: list[tuple[str, str]] = field(default_factory=list)  # identities as stored


@dataclass(slots=True)
class Merge:
    winner_id: int
    loser_id: int
    reason: str
    moved_ticket_ids: tuple[int, ...]


class Ids:
    """Ids for new rows, known before they are written.

    SQLite: one pipeline inserts into these tables (processing is one
    process, :mod:`hub.processes`), so the next ids are the largest plus one,
    read as the batch is planned; should anything else have inserted one
    meanwhile, the write fails on the primary key and the batch is retried.
    PostgreSQL: drawn from each table's sequence, reserved in one query per
    table for what the batch can at most create (gaps are harmless; other
    processes draw from the same sequences)."""

    def __init__(self, conn: sa.Connection, is_sqlite: bool):
        self.conn = conn
        self.is_sqlite = is_sqlite
        self._next: dict[str, int] = {}
        self._reserved: dict[str, list[int]] = {}

    def reserve(self, table: sa.Table, n: int) -> None:
        if self.is_sqlite or n <= 0:
            return
        have = self._reserved.setdefault(table.name, [])
        if len(have) < n:
            have.extend(self._draw(table, n - len(have)))

    def take(self, table: sa.Table) -> int:
        if self.is_sqlite:
            nxt = self._next.get(table.name)
            if nxt is None:
                # Driver SQL: built and compiled once per batch and table, the
                # expression cost more than SQLite's walk to the last row.
                nxt = int(self.conn.exec_driver_sql(f"SELECT max(id) FROM {table.name}").scalar() or 0) + 1
            self._next[table.name] = nxt + 1
            return nxt
        have = self._reserved.setdefault(table.name, [])
        if not have:
            have.extend(self._draw(table, 8))
        return have.pop(0)

    def _draw(self, table: sa.Table, n: int) -> list[int]:
        return [r[0] for r in self.conn.execute(
            sa.text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
            {"t": table.name, "n": n})]


class Records:
    """What one batch touches, in memory, and what it changed."""

    def __init__(self, conn: sa.Connection, db: Database, cipher: PiiCipher, rules: list[SyncRule],
                 destinations: dict[str, DestinationRuntime]):
        self.conn = conn
        self.db = db
        self.cipher = cipher.remembering()  # for this batch: each phone opened, sealed, indexed once
        self.rules = rules
        self.destinations = destinations
        self.ids = Ids(conn, db.is_sqlite)
        self.read = Reader(conn, db)
        self.customers: dict[int, Row] = {}
        self.owner: dict[tuple[str, str], int] = {}           # identity → customer (as stored)
        self.identities_of: dict[int, list[Row]] = {}          # customer → its identities, by id
        # (customers.identities is rendered from identities_of when the batch is written)
        self.tickets: dict[int, Row] = {}
        self.ticket_key: dict[tuple[str, str], int] = {}       # (source, external id) → ticket
        self.orders: dict[int, Row] = {}
        self.order_key: dict[tuple[str, str], int] = {}        # (channel, external id) → order
        self.order_number: dict[str, list[int]] = {}           # external id → orders of any channel
        self.event_ticket: dict[tuple[str, str], int] = {}     # (source, dedupe key) → ticket
        self.loaded_tickets_of: set[int] = set()               # customers whose every ticket is here
        self.called_back: set[int] = set()                     # tickets the batch's callbacks name
        # What to write.
        self.new: dict[str, dict[int, Row]] = {t.name: {} for t in (customers, identities, orders, tickets)}
        self.dirty: dict[str, dict[int, Row]] = {t.name: {} for t in (customers, identities, orders, tickets)}
        self.timeline: list[dict[str, Any]] = []
        self.merges: list[dict[str, Any]] = []
        self.moves: list[tuple[int, int]] = []                 # (loser, winner): rows not in memory follow
        self.pushes: list[dict[str, Any]] = []
        # (container, key, old value or _MISSING): how to put back what an event changed.
        self._undo: list[tuple[Any, Any, Any]] = []

    # ------------------------------------------------------------ undo journal

    def mark(self) -> tuple[int, ...]:
        return (len(self._undo), len(self.timeline), len(self.merges), len(self.moves), len(self.pushes))

    def undo(self, mark: tuple[int, ...]) -> None:
        journal, timeline, merges, moves, pushes = mark
        while len(self._undo) > journal:
            container, key, old = self._undo.pop()
            if isinstance(container, Row):
                container[key] = old
            elif old is _MISSING:
                container.pop(key, None)
            else:
                container[key] = old
        del self.timeline[timeline:], self.merges[merges:], self.moves[moves:], self.pushes[pushes:]

    def _put(self, d: dict[Any, Any], key: Any, value: Any) -> None:
        self._undo.append((d, key, d.get(key, _MISSING)))
        d[key] = value

    def _assign(self, row: Row, key: str, value: Any) -> None:
        self._undo.append((row, key, row[key]))
        row[key] = value

    def _set(self, table: sa.Table, row: Row, key: str, value: Any) -> bool:
        """Change one column of a row (journalled); False when it already held ``value``."""
        if row[key] == value and type(row[key]) is type(value):
            return False
        self._assign(row, key, value)
        if row["id"] not in self.new[table.name]:
            self._put(self.dirty[table.name], row["id"], row)
        return True

    def _insert(self, table: sa.Table, row: Row) -> None:
        self._put(self.new[table.name], row["id"], row)

    # ------------------------------------------------------------ load

    def load(self, events: list[Event]) -> None:
        """Everything the batch touches, one query per table (a few when it must chase merges)."""
        read = self.read
        for ev in events:
            ev.pairs = identity_pairs(self.cipher, ev.n.identities)
        pairs = {p for ev in events for p in ev.pairs}
        found: set[int] = set()
        for r in read.rows(identities, Where().pairs("kind", "value", pairs), ("customer_id", "kind", "value")):
            if (r["kind"], r["value"]) in pairs:
                self.owner[(r["kind"], r["value"])] = r["customer_id"]
                found.add(r["customer_id"])
        follows = {(ev.source.config.id, str(ev.n.interaction["follows"])) for ev in events
                   if ev.n.interaction is not None and ev.n.interaction.get("follows")}
        ticket_ids: set[int] = set()
        for r in read.rows(raw_events, Where().pairs("source_id", "dedupe_key", follows),
                           ("source_id", "dedupe_key", "ticket_id")):
            if (r["source_id"], r["dedupe_key"]) in follows and r["ticket_id"] is not None:
                self.event_ticket[(r["source_id"], r["dedupe_key"])] = r["ticket_id"]
                ticket_ids.add(r["ticket_id"])
        for ev in events:
            if ev.n.callback is not None and str(ev.n.callback["ticket_id"]).isdigit():
                self.called_back.add(int(ev.n.callback["ticket_id"]))
        ticket_ids |= self.called_back
        keys = {(ev.source.config.id, str(ev.n.ticket["external_id"])) for ev in events
                if ev.n.callback is None and not (ev.n.interaction is not None and ev.n.interaction.get("follows"))}
        self._load_tickets(Where().pairs("source_id", "external_id", keys).values("id", ticket_ids), keys)
        found.update(t.customer_id for t in self.tickets.values() if t.customer_id is not None)
        self._load_customers(found)
        for cid, row in self.customers.items():
            # Kept on the customer's row (migration 0011): no index by customer to read.
            theirs = self.identities_of[cid] = [Row({"id": i, "customer_id": cid, "kind": kind, "value": value})
                                                for i, kind, value in row.identities or ()]
            for ident in theirs:
                self.owner[(ident.kind, ident.value)] = cid
        if self.customers and any(ev.n.interaction is not None and ev.n.interaction.get("attach") for ev in events):
            self._load_tickets(Where().values("customer_id", set(self.customers), among={"status": OPEN_STATUSES}),
                               None)
        self._load_orders(events)
        # At most one customer, order and ticket per event.
        self.ids.reserve(customers, sum(1 for ev in events if ev.pairs and not any(p in self.owner for p in ev.pairs)))
        self.ids.reserve(identities, len([p for p in pairs if p not in self.owner]))
        self.ids.reserve(orders, sum(1 for ev in events if ev.n.order is not None))
        self.ids.reserve(tickets, len([k for k in keys if k not in self.ticket_key]))

    def _load_tickets(self, where: Where, keys: set[tuple[str, str]] | None) -> None:
        """Tickets matching ``where``; with ``keys``, only those keys and the followed events' tickets."""
        followed = set(self.event_ticket.values()) | self.called_back
        for r in self.read.rows(tickets, where, for_update=True):
            if keys is not None and (r["source_id"], r["external_id"]) not in keys and r["id"] not in followed:
                continue  # a combination nobody asked for
            if r["id"] not in self.tickets:
                row = Row(r)
                self.tickets[row.id] = row
                self.ticket_key[(row.source_id, row.external_id)] = row.id

    def _load_customers(self, ids: set[int]) -> None:
        """The customers, and whoever they were merged into (until every root is here)."""
        want = ids - set(self.customers)
        while want:
            for r in self.read.rows(customers, Where().values("id", want), for_update=True):
                self.customers[r["id"]] = Row(r)
            want = {c.merged_into_id for c in self.customers.values()
                    if c.merged_into_id is not None} - set(self.customers)

    def _load_orders(self, events: list[Event]) -> None:
        own = {(ev.source.channel, str(ev.n.order["external_id"])) for ev in events
               if ev.n.order is not None and ev.n.order.get("match") != "any_channel"}
        anywhere = {str(ev.n.order["external_id"]) for ev in events
                    if ev.n.order is not None and ev.n.order.get("match") == "any_channel"}
        by_id = {t.order_id for t in self.tickets.values() if t.order_id is not None}
        where = Where().pairs("channel", "external_id", own).values("external_id", anywhere).values("id", by_id)
        for r in self.read.rows(orders, where):
            row = Row(r)
            if (row.channel, row.external_id) in own or row.external_id in anywhere or row.id in by_id:
                self._remember_order(row)

    def _remember_order(self, row: Row) -> None:
        self.orders[row.id] = row
        self.order_key[(row.channel, row.external_id)] = row.id
        self.order_number.setdefault(row.external_id, []).append(row.id)

    # ------------------------------------------------------------ apply one event

    def root(self, customer_id: int) -> int:
        seen = set()
        while customer_id not in seen:
            seen.add(customer_id)
            row = self.customers.get(customer_id)
            if row is None or row.merged_into_id is None:
                return customer_id
            customer_id = row.merged_into_id
        return customer_id

    def apply(self, ev: Event, now: datetime) -> int:
        """Apply one event in memory; returns its ticket id. The caller undoes it on error."""
        n, rt = ev.n, ev.source
        if n.callback is not None:
            return self._callback(ev, n.callback, now)
        turn = n.interaction
        if turn is not None and turn.get("follows"):
            return self._follow_up(ev, turn, now)
        customer_id, merges = self._link_customer(ev, now)
        if turn is not None and turn.get("attach") and customer_id is not None:
            open_ticket = self._open_ticket_of(customer_id)
            if open_ticket is not None:
                # A chat message or a call about what is already being handled:
                # part of that ticket's story, not a new ticket.
                joined = self._interaction(open_ticket, turn, rt, ev.raw_id, now)
                self._set(tickets, open_ticket, "updated_at", now)
                self._render(open_ticket, [joined], now)
                self._record_merges(merges, ev.raw_id, now)
                self._remember_event(ev, open_ticket.id)
                return int(open_ticket.id)
        order = self._link_order(rt, n.order, customer_id, now) if n.order is not None else None
        t = n.ticket
        changes: list[Change] = []
        tid = self.ticket_key.get((rt.config.id, str(t["external_id"])))
        if tid is None:
            given = {k: t.get(k) for k in UPDATABLE if t.get(k) is not None}
            ticket = _blank(tickets, id=self.ids.take(tickets), channel=rt.channel, source_id=rt.config.id,
                            external_id=t["external_id"], status=t["status"],
                            order_id=order.id if order else None, customer_id=customer_id,
                            queue=t.get("queue"), source_updated_at=t.get("source_updated_at"),
                            created_at=now, updated_at=now, **({"priority": "normal"} | given))
            self._insert(tickets, ticket)
            self._put(self.tickets, ticket.id, ticket)
            self._put(self.ticket_key, (ticket.source_id, ticket.external_id), ticket.id)
            tl = self._timeline(ticket.id, "created", ev.raw_id, now, to_status=t["status"])
            changes.append(Change("ticket.created", None, t["status"], tl))
        else:
            ticket = self.tickets[tid]
            decision = decide(ticket.status, ticket.source_updated_at, t["status"], t.get("source_updated_at"))
            if decision.outcome in (Outcome.STALE, Outcome.REFUSED):
                self._timeline(ticket.id, decision.outcome.value, ev.raw_id, now, from_status=ticket.status,
                               to_status=t["status"], detail={"reason": decision.reason})
            else:
                before = ticket.status
                diff = sorted(k for k in UPDATABLE if t.get(k) is not None and t[k] != ticket[k])
                changed = bool(diff)
                for k in diff:
                    self._set(tickets, ticket, k, t[k])
                if order is not None and ticket.order_id is None:
                    changed = self._set(tickets, ticket, "order_id", order.id) or changed
                if customer_id is not None and ticket.customer_id is None:
                    changed = self._set(tickets, ticket, "customer_id", customer_id) or changed
                if t.get("source_updated_at") is not None:
                    changed = self._set(tickets, ticket, "source_updated_at", t["source_updated_at"]) or changed
                if decision.outcome is Outcome.MOVED:
                    changed = self._set(tickets, ticket, "status", decision.to_status) or changed
                if changed:
                    self._set(tickets, ticket, "updated_at", now)
                if decision.outcome is Outcome.MOVED:
                    tl = self._timeline(ticket.id, "status_changed", ev.raw_id, now, from_status=before,
                                        to_status=decision.to_status,
                                        detail={"fields": diff} if diff else None)
                    changes.append(Change("ticket.status_changed", before, decision.to_status, tl))
                elif diff:
                    tl = self._timeline(ticket.id, "updated", ev.raw_id, now, detail={"fields": diff})
                    changes.append(Change("ticket.updated", before, before, tl))
        if turn is not None:
            joined = self._interaction(ticket, turn, rt, ev.raw_id, now)
            if not changes:  # a turn on a ticket that did not change otherwise: tell downstream of it
                changes.append(joined)
        self._render(ticket, changes, now)
        self._record_merges(merges, ev.raw_id, now)
        self._remember_event(ev, ticket.id)
        return int(ticket.id)

    def _callback(self, ev: Event, cb: dict[str, Any], now: datetime) -> int:
        """A downstream report: the ticket it names moves forward (never back), and
        what differs from what the ticket expects is flagged (hub.callbacks)."""
        raw = str(cb["ticket_id"])
        ticket = self.tickets.get(int(raw)) if raw.isdigit() else None
        if ticket is None:
            raise Quarantine(f"callback for ticket {raw[:40]!r}, which the hub does not have")
        found = flags_for(ticket.items, ticket.refund_amount, cb)
        detail = {"from": ev.source.config.id, "reference": cb.get("reference"), "note": cb.get("note"),
                  "received": cb.get("received"), "refund_amount": cb.get("refund_amount"), "flags": found}
        self._timeline(ticket.id, "callback", ev.raw_id, now, to_status=cb["status"],
                       detail={k: v for k, v in detail.items() if v not in (None, [])})
        changes: list[Change] = []
        before = ticket.status
        new_flags = sorted(set(ticket.flags or []) | set(found))
        flagged = new_flags != sorted(ticket.flags or [])
        if flagged:
            self._set(tickets, ticket, "flags", new_flags)
        if can_move(before, cb["status"]):
            self._set(tickets, ticket, "status", cb["status"])
            tl = self._timeline(ticket.id, "status_changed", ev.raw_id, now, from_status=before,
                                to_status=cb["status"], detail={"by": ev.source.config.id})
            changes.append(Change("ticket.status_changed", before, cb["status"], tl))
        elif cb["status"] != before:
            self._timeline(ticket.id, "refused", ev.raw_id, now, from_status=before, to_status=cb["status"],
                           detail={"reason": f"{before} cannot move to {cb['status']}"})
        if flagged and not changes:
            tl = self._timeline(ticket.id, "updated", ev.raw_id, now, detail={"fields": ["flags"]})
            changes.append(Change("ticket.updated", before, before, tl))
        if flagged or changes:
            self._set(tickets, ticket, "updated_at", now)
        self._render(ticket, changes, now)
        self._remember_event(ev, ticket.id)
        return int(ticket.id)

    def _remember_event(self, ev: Event, ticket_id: int) -> None:
        # A later event of this batch may follow this one (a recording after its call).
        self._put(self.event_ticket, (ev.source.config.id, ev.dedupe_key), ticket_id)

    def _follow_up(self, ev: Event, turn: dict[str, Any], now: datetime) -> int:
        """A turn that belongs with an earlier event: recorded on whichever ticket that event went to."""
        tid = self.event_ticket.get((ev.source.config.id, str(turn["follows"])))
        if tid is None or tid not in self.tickets:
            raise Quarantine(f"follows event {turn['follows']!r}, which has no ticket (not received yet?)")
        joined = self._interaction(self.tickets[tid], turn, ev.source, ev.raw_id, now)
        self._render(self.tickets[tid], [joined], now)
        self._remember_event(ev, tid)
        return tid

    def _open_ticket_of(self, customer_id: int) -> Row | None:
        candidates = [t for t in self.tickets.values()
                      if t.customer_id is not None and self.root(t.customer_id) == customer_id
                      and t.status in OPEN_STATUSES]
        if not candidates:
            return None
        return max(candidates, key=lambda t: (t.updated_at, t.id))

    def _interaction(self, ticket: Row, turn: dict[str, Any], rt: SourceRuntime, raw_id: int,
                     now: datetime) -> Change:
        """The turn on the ticket's timeline; the change that tells downstream of it."""
        detail = {"channel": rt.channel, "source_id": rt.config.id, "text": turn.get("text"),
                  "at": iso(turn["at"]) if isinstance(turn.get("at"), datetime) else turn.get("at")}
        shared = {"kind": str(turn["kind"]), **detail}  # the platform's own detail stays in the timeline
        if turn.get("detail") is not None:
            detail["detail"] = turn["detail"]
        tl = self._timeline(ticket.id, str(turn["kind"]), raw_id, now, detail=detail)
        return Change("ticket.updated", ticket.status, ticket.status, tl, interaction=shared)

    def _timeline(self, ticket_id: int, kind: str, raw_id: int, now: datetime, *,
                  from_status: str | None = None, to_status: str | None = None, detail: Any = None) -> str:
        """A timeline entry; returns the key of the change it records (see :class:`hub.sync.Change`)."""
        self.timeline.append({"ticket_id": ticket_id, "kind": kind, "from_status": from_status,
                              "to_status": to_status, "detail": detail, "raw_event_id": raw_id, "at": now})
        return f"{raw_id}.{kind}"

    def _render(self, ticket: Row, changes: list[Change], now: datetime) -> None:
        if not changes:
            return
        cid = self.root(ticket.customer_id) if ticket.customer_id is not None else None
        customer = self.customers.get(cid) if cid is not None else None
        ids = [(i.kind, i.value) for i in self.identities_of.get(cid, [])] if cid is not None else []
        order = self.orders.get(ticket.order_id) if ticket.order_id is not None else None
        self.pushes.extend(outbox_rows(self.rules, self.destinations, self.cipher, ticket, order, customer,
                                       ids, changes, now))

    # ------------------------------------------------------------ customers

    def _link_customer(self, ev: Event, now: datetime) -> tuple[int | None, list[Merge]]:
        """Find or create the event's customer; merge customers its strong identities join."""
        pairs = ev.pairs
        if not pairs:
            return None, []
        strong: dict[int, str] = {}
        weak: set[int] = set()
        for kind, value in pairs:
            cid = self.owner.get((kind, value))
            if cid is None:
                continue
            root = self.root(cid)
            if kind in WEAK_KINDS:
                weak.add(root)
            else:
                strong.setdefault(root, kind)
        merges: list[Merge] = []
        if strong:
            customer_id = min(strong)
            for loser in sorted(set(strong) - {customer_id}):
                merges.append(self._merge(customer_id, loser, f"same {strong[loser]}", now, ev.raw_id))
        elif len(weak) == 1 and all(k in WEAK_KINDS for k, _ in pairs):
            # A nickname alone may find a customer; beside a strong identity no one
            # has seen yet it is someone else with the same (often masked) nick.
            customer_id = next(iter(weak))
        else:
            row = _blank(customers, id=self.ids.take(customers), created_at=now, updated_at=now)
            self._insert(customers, row)
            self._put(self.customers, row.id, row)
            self._put(self.identities_of, row.id, [])
            customer_id = row.id
        for kind, value in pairs:
            if (kind, value) in self.owner:
                continue  # merges move identities, never drop them
            ident = _blank(identities, id=self.ids.take(identities), customer_id=customer_id, kind=kind,
                           value=value, created_at=now)
            self._insert(identities, ident)
            self._put(self.owner, (kind, value), customer_id)
            self._put(self.identities_of, customer_id, [*self.identities_of.get(customer_id, []), ident])
        self._update_contact(self.customers[customer_id], ev.n.customer, now)
        return customer_id, merges

    def _update_contact(self, row: Row, fields: dict[str, Any], now: datetime) -> None:
        changed = False
        if fields.get("display_name") and not row.display_name:
            self._set(customers, row, "display_name", fields["display_name"])
            changed = True
        phone = normalize_phone(fields.get("phone"))
        if phone:
            index = self.cipher.blind_index(phone)
            if index != row.phone_index:
                self._set(customers, row, "phone_enc", self.cipher.encrypt(phone))
                self._set(customers, row, "phone_index", index)
                changed = True
        if fields.get("address") and (row.address_enc is None
                                      or self.cipher.decrypt(row.address_enc) != fields["address"]):
            self._set(customers, row, "address_enc", self.cipher.encrypt(fields["address"]))
            changed = True
        if fields.get("email") and fields["email"] != row.email:
            self._set(customers, row, "email", fields["email"])
            changed = True
        if changed:
            self._set(customers, row, "updated_at", now)

    def _merge(self, winner: int, loser: int, reason: str, now: datetime, raw_id: int) -> Merge:
        """The younger customer folds into the older: its tickets, orders and identities move."""
        self._load_every_ticket_of(loser)
        moved = []
        for t in sorted(self.tickets.values(), key=lambda t: t.id):
            if t.customer_id is not None and self.root(t.customer_id) == loser:
                self._set(tickets, t, "customer_id", winner)
                self._set(tickets, t, "updated_at", now)
                moved.append(t.id)
        for o in self.orders.values():
            if o.customer_id is not None and self.root(o.customer_id) == loser:
                self._set(orders, o, "customer_id", winner)
        theirs = self.identities_of.get(loser, [])
        for ident in theirs:
            self._set(identities, ident, "customer_id", winner)
            self._put(self.owner, (ident.kind, ident.value), winner)
        self._put(self.identities_of, winner,
                  sorted([*self.identities_of.get(winner, []), *theirs], key=lambda i: i.id))
        self._put(self.identities_of, loser, [])
        row = self.customers[loser]
        self._set(customers, row, "merged_into_id", winner)
        self._set(customers, row, "updated_at", now)
        self.moves.append((loser, winner))
        self.merges.append({"winner_id": winner, "loser_id": loser, "reason": reason, "raw_event_id": raw_id,
                            "at": now})
        return Merge(winner, loser, reason, tuple(moved))

    def _load_every_ticket_of(self, customer_id: int) -> None:
        """Rare (a merge): the loser's tickets not in memory yet."""
        if customer_id in self.loaded_tickets_of or customer_id in self.new[customers.name]:
            return
        self._load_tickets(Where().values("customer_id", [customer_id]), None)
        self.loaded_tickets_of.add(customer_id)

    def _record_merges(self, merges: list[Merge], raw_id: int, now: datetime) -> None:
        for merge in merges:
            for tid in merge.moved_ticket_ids:
                t = self.tickets[tid]
                tl = self._timeline(tid, "merged", raw_id, now, detail={
                    "from_customer": merge.loser_id, "into_customer": merge.winner_id, "reason": merge.reason})
                self._render(t, [Change("ticket.merged", t.status, t.status, tl)], now)

    # ------------------------------------------------------------ orders

    def _link_order(self, rt: SourceRuntime, fields: dict[str, Any], customer_id: int | None,
                    now: datetime) -> Row:
        """Find or create the order; an order only named by an event is a stub."""
        number = str(fields["external_id"])
        oid = self.order_key.get((rt.channel, number))
        if oid is None and fields.get("match") == "any_channel":
            found = self.order_number.get(number, [])
            if len(found) == 1:  # ambiguous across channels: do not guess
                oid = found[0]
        known = {k: v for k, v in fields.items() if k not in ("external_id", "match") and v is not None}
        full = "paid_amount" in known or "placed_at" in known
        if oid is None:
            row = _blank(orders, id=self.ids.take(orders), channel=rt.channel, source_id=rt.config.id,
                         external_id=number, customer_id=customer_id, is_stub=not full, created_at=now,
                         updated_at=now, **known)
            self._insert(orders, row)
            self._put(self.orders, row.id, row)
            self._put(self.order_key, (row.channel, number), row.id)
            self._put(self.order_number, number, [*self.order_number.get(number, []), row.id])
            return row
        row = self.orders[oid]
        changed = False
        for k, v in known.items():
            if row[k] != v:
                self._set(orders, row, k, v)
                changed = True
        if customer_id is not None and row.customer_id is None:
            self._set(orders, row, "customer_id", customer_id)
            changed = True
        if full and row.is_stub:
            self._set(orders, row, "is_stub", False)
            changed = True
        if changed:
            self._set(orders, row, "updated_at", now)
        return row

    # ------------------------------------------------------------ write

    def _render_identities(self) -> None:
        """Each customer's ``identities`` column from what the batch left in
        identities_of: rows whose list changed become dirty (new ones get theirs)."""
        for cid, theirs in self.identities_of.items():
            row = self.customers.get(cid)
            if row is None:
                continue
            listed = [[i.id, i.kind, i.value] for i in theirs]
            if listed != row.identities:  # None (never listed) too
                self._set(customers, row, "identities", listed)

    def write(self, w: Writes) -> None:
        """Everything the batch changed, to ``w`` (on SQLite rendered now and run
        in the write transaction later, on another connection than the one the
        batch was loaded on): inserts in dependency order, then updates, then moves."""
        self._render_identities()
        for table in (customers, identities, orders, tickets):
            w.insert(table, [r.columns() for r in self.new[table.name].values()])
        for table, columns in ((customers, CUSTOMER_WRITES), (identities, IDENTITY_WRITES),
                               (orders, ORDER_WRITES), (tickets, TICKET_WRITES)):
            w.update(table, columns, [r.columns() for r in self.dirty[table.name].values()])
        for loser, winner in self.moves:
            # Orders and tickets of the loser this batch did not load follow it too
            # (its identities are all here: they came with its row, and moved above).
            for table in (orders, tickets):
                w.reassign(table, "customer_id", loser, winner)
        w.insert(ticket_events, self.timeline)
        w.insert(customer_merges, self.merges)
        w.insert(outbox, self.pushes)
