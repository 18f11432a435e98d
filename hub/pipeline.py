"""The pipeline: pending raw events → map → link → lifecycle → timeline → outbox.

Each batch is one transaction: the raw events are claimed (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL), each is normalized by its source's compiled mapping
(pure), linked to its customer and order, applied to its ticket through the
lifecycle (pure decision), recorded in the timeline, and turned into outbox
rows by the sync rules — all committed together with the raw event's new
state (transactional outbox). A crash anywhere loses nothing and doubles
nothing: either all of an event's effects are committed or none are.

One event is one unit of failure. Whatever an event makes the mapping, a
cast or the database raise, that event is quarantined with a reason free of
PII (its savepoint rolled back) and the rest of the batch goes on. A
conflict with another hub process (two events creating the same ticket at
once) leaves it pending for the next batch. A batch that fails as a whole —
the database refusing something one event asked of it — is retried one
event at a time, and an event that breaks its transaction alone
``MAX_FAILED_ATTEMPTS`` times is quarantined: nothing retries forever.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
import structlog
from cryptography.exceptions import InvalidTag

from hub.config import DestinationConfig, SourceConfig, SyncRule
from hub.errors import Quarantine
from hub.interfaces import UNREADABLE
from hub.lifecycle import OPEN_STATUSES, Outcome, decide
from hub.linking import Merge, link_customer, link_order, update_by_id
from hub.mapping import InboundMapping, OutboundMapping
from hub.normalized import Normalized
from hub.pii import PiiCipher, mask_phones_in
from hub.records import (
    customers,
    identities,
    orders,
    outbox,
    raw_events,
    ticket_events,
    tickets,
    utcnow,
)
from hub.redaction import error_summary, scrub_error_text
from hub.storage import UNAVAILABLE, Database
from hub.sync import Change, destinations_for
from hub.views import customer_view, iso, order_view, ticket_view

log = structlog.get_logger("hub.pipeline")

# Ticket fields an event may update besides status.
UPDATABLE = ("type", "reason_code", "reason_text", "description", "priority", "refund_amount", "items")
MAX_CONFLICT_ATTEMPTS = 5
MAX_FAILED_ATTEMPTS = 3  # an event that breaks its transaction, taken alone this often: quarantined

# Built once (see hub.linking): per-event statement construction dominates on SQLite.
_SETTLE = update_by_id(raw_events)
_TICKET = sa.select(tickets).where(tickets.c.source_id == sa.bindparam("source_id"),
                                   tickets.c.external_id == sa.bindparam("external_id"))
_TICKET_FOR_UPDATE = _TICKET.with_for_update()
_NEW_TICKET = sa.insert(tickets).returning(tickets.c.id)
_UPDATE_TICKET = update_by_id(tickets)
_NEW_TIMELINE = sa.insert(ticket_events).returning(ticket_events.c.id)
_TICKET_OF_EVENT = sa.select(raw_events.c.ticket_id).where(
    raw_events.c.source_id == sa.bindparam("source_id"), raw_events.c.dedupe_key == sa.bindparam("dedupe_key"))
_OPEN_TICKET_OF = (sa.select(tickets.c.id)
                   .where(tickets.c.customer_id == sa.bindparam("cid"),
                          tickets.c.status.in_(sa.bindparam("open", expanding=True)))
                   .order_by(tickets.c.updated_at.desc(), tickets.c.id.desc()).limit(1))


@dataclass(frozen=True)
class SourceRuntime:
    config: SourceConfig
    mapping: InboundMapping

    @property
    def channel(self) -> str:
        return self.config.kind


@dataclass(frozen=True)
class DestinationRuntime:
    config: DestinationConfig
    mapping: OutboundMapping


FREE_TEXT = ("description", "reason_text")


def scrub_free_text(n: Normalized) -> None:
    """Phone numbers people type into free text are masked before it is stored:
    records and timeline hold no number in clear (the raw event, sealed, keeps
    the original)."""
    for key in FREE_TEXT:
        if isinstance(n.ticket.get(key), str):
            n.ticket[key] = mask_phones_in(n.ticket[key])
    if n.interaction is not None and isinstance(n.interaction.get("text"), str):
        n.interaction["text"] = mask_phones_in(n.interaction["text"])


def event_document(source_id: str, headers: dict[str, str] | None, body: Any) -> dict[str, Any]:
    """What a mapping reads: the parsed body, the kept headers, the source."""
    return {"body": body, "headers": headers or {}, "source": {"id": source_id}}


def parse_body(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as err:
        raise Quarantine(f"body is not JSON: {err}") from None


class Pipeline:
    def __init__(self, db: Database, cipher: PiiCipher, sources: dict[str, SourceRuntime],
                 destinations: dict[str, DestinationRuntime], rules: list[SyncRule], *,
                 batch: int = 100,
                 on_result: Callable[[str, str], None] | None = None):
        self.db = db
        self.cipher = cipher
        self.sources = sources
        self.destinations = destinations
        self.rules = rules
        self.batch = batch
        self.on_result = on_result  # (source_id, "done"|"quarantined"|"retry") → metrics
        self._claimed: list[int] = []  # ids of the batch in progress
        # After a batch failed as a whole: how many of its events to take one at a
        # time, so the one that breaks it is found and quarantined, not retried forever.
        self._alone = 0

    async def run_once(self) -> int:
        """Process one batch; returns how many raw events it settled."""
        size = 1 if self._alone else self.batch
        self._claimed = []
        try:
            results: list[tuple[str, str]] = await self.db.run_write(lambda c: self._batch(c, size))
        except Exception as err:
            if not self._claimed:
                raise
            if not self._alone:
                # Something in this batch broke the transaction: the database, or one event.
                self._alone = len(self._claimed)
                log.warning("pipeline batch failed; retrying its events one at a time",
                            events=len(self._claimed), error=error_summary(err))
                raise
            if not await self._count_failure(self._claimed[0], err):
                raise  # the database itself is failing: back off
            return 0
        if self._alone:
            self._alone -= 1
        for source_id, result in results:
            self._count(source_id, result)
        return sum(1 for _, result in results if result != "retry")

    async def _count_failure(self, raw_id: int, err: BaseException) -> bool:
        """One more failed attempt of an event processed alone; quarantined at the
        limit. False when even that write fails (the database is the problem)."""

        def count(conn: sa.Connection) -> int | None:
            attempts = conn.execute(
                sa.update(raw_events).where(raw_events.c.id == raw_id, raw_events.c.state == "pending")
                .values(attempts=raw_events.c.attempts + 1).returning(raw_events.c.attempts)).scalar()
            if attempts is not None and attempts >= MAX_FAILED_ATTEMPTS:
                self._settle(conn, raw_id, "quarantined", utcnow(),
                             reason=f"failed {attempts} times alone: {error_summary(err)}")
            return attempts

        try:
            attempts = await self.db.run_write(count)
        except Exception:  # noqa: BLE001 - the original error is what the caller reports
            return False
        log.error("event failed", event_id=raw_id, attempts=attempts, error=error_summary(err),
                  quarantined=attempts is not None and attempts >= MAX_FAILED_ATTEMPTS)
        if attempts is None or attempts >= MAX_FAILED_ATTEMPTS:
            self._alone = max(0, self._alone - 1)
        return True

    def _batch(self, conn: sa.Connection, size: int) -> list[tuple[str, str]]:
        # Runs synchronously inside one transaction (a worker thread on SQLite).
        stmt = (sa.select(raw_events.c.id, raw_events.c.source_id, raw_events.c.headers,
                          raw_events.c.body, raw_events.c.attempts)
                .where(raw_events.c.state == "pending").order_by(raw_events.c.id).limit(size))
        rows = conn.execute(self.db.for_update_skip_locked(stmt)).all()
        self._claimed = [row.id for row in rows]
        out = [(row.source_id, self._process(conn, row)) for row in rows]
        self._claimed = []
        return out

    def _normalize(self, rt: SourceRuntime | None, row: Any) -> Normalized:
        if rt is None:
            raise Quarantine(f"source {row.source_id!r} is not configured")
        problem = row.headers.get(UNREADABLE) if isinstance(row.headers, dict) else None
        if problem:
            raise Quarantine(str(problem))
        try:
            text = self.cipher.open_body(row.body)
        except (ValueError, InvalidTag, UnicodeDecodeError) as err:
            raise Quarantine(f"the sealed body cannot be opened ({type(err).__name__}): "
                             "was it sealed with a key no longer configured?") from None
        normalized = rt.mapping.apply(event_document(row.source_id, row.headers, parse_body(text)))
        scrub_free_text(normalized)
        return normalized

    def _process(self, conn: sa.Connection, row: Any) -> str:
        """Settle one raw event: "done", "quarantined", or "retry" (left pending)."""
        now = utcnow()
        rt = self.sources.get(row.source_id)
        label = rt.mapping.label if rt else None
        try:
            normalized = self._normalize(rt, row)
        except Quarantine as q:
            return self._quarantine(conn, row, str(q), label, now)
        except Exception as err:  # noqa: BLE001 - one event is one unit of failure
            log.error("event could not be normalized", source=row.source_id, event_id=row.id, exc_info=err)
            return self._quarantine(conn, row, f"internal error while mapping: {error_summary(err)}",
                                    label, now)
        assert rt is not None
        if normalized.ignored is not None:
            self._settle(conn, row.id, "done", now, reason=f"ignored: {normalized.ignored}",
                         mapping=rt.mapping.label)
            return "ignored"
        savepoint = conn.begin_nested()
        try:
            ticket_id = self._apply(conn, rt, row.id, normalized, now)
            savepoint.commit()
        except sa.exc.IntegrityError as err:
            # Another process created the same ticket/customer first: retry next batch.
            savepoint.rollback()
            attempts = row.attempts + 1
            if attempts >= MAX_CONFLICT_ATTEMPTS:
                return self._quarantine(conn, row, f"conflict after {attempts} attempts: "
                                        f"{error_summary(err)}", label, now)
            conn.execute(sa.update(raw_events).where(raw_events.c.id == row.id)
                         .values(attempts=attempts))
            return "retry"
        except UNAVAILABLE:
            raise
        except Quarantine as q:
            savepoint.rollback()
            return self._quarantine(conn, row, str(q), label, now)
        except Exception as err:  # noqa: BLE001 - a bug must not wedge the inbox
            savepoint.rollback()
            log.error("event failed", source=row.source_id, event_id=row.id, exc_info=err)
            return self._quarantine(conn, row, f"internal error: {error_summary(err)}", label, now)
        self._settle(conn, row.id, "done", now, mapping=rt.mapping.label, ticket_id=ticket_id)
        return "done"

    def _quarantine(self, conn: sa.Connection, row: Any, reason: str, label: str | None,
                    now: datetime) -> str:
        kept = self._settle(conn, row.id, "quarantined", now, reason=reason, mapping=label)
        log.warning("event quarantined", source=row.source_id, event_id=row.id, reason=kept)
        return "quarantined"

    def _count(self, source_id: str, result: str) -> None:
        if self.on_result is not None:
            self.on_result(source_id, result)

    def _settle(self, conn: sa.Connection, raw_id: int, state: str, now: datetime, *,
                reason: str | None = None, mapping: str | None = None,
                ticket_id: int | None = None) -> str | None:
        """The raw event's new state; its reason passes the redaction of error text
        on the way (what a mapping quotes of an event is a code, never data)."""
        if reason is not None:
            reason = scrub_error_text(reason)[:2000]
        conn.execute(_SETTLE, {"row_id": raw_id, "state": state, "reason": reason,
                               "mapping_version": mapping, "ticket_id": ticket_id, "processed_at": now})
        return reason

    # ------------------------------------------------------------ apply one event

    def _apply(self, conn: sa.Connection, rt: SourceRuntime, raw_id: int,
               n: Normalized, now: datetime) -> int:
        if n.interaction is not None and n.interaction.get("follows"):
            return self._follow_up(conn, rt, raw_id, n.interaction, now)
        customer_id, merges = link_customer(conn, self.cipher, n.customer, n.identities, now, raw_id)
        if n.interaction is not None and n.interaction.get("attach") and customer_id is not None:
            open_ticket = conn.execute(_OPEN_TICKET_OF, {"cid": customer_id, "open": list(OPEN_STATUSES)}).scalar()
            if open_ticket is not None:
                # A chat message or a call about what is already being handled:
                # part of that ticket's story, not a new ticket.
                self._interaction(conn, open_ticket, n.interaction, rt, raw_id, now)
                conn.execute(_UPDATE_TICKET, {"row_id": open_ticket, "updated_at": now})
                self._enqueue(conn, open_ticket,
                              [c for m in merges for c in self._record_merge(conn, m, raw_id, now)], now)
                return int(open_ticket)
        order_id = None
        if n.order is not None:
            order_id = link_order(conn, rt.channel, rt.config.id, n.order, customer_id, now)
        t = n.ticket
        current = conn.execute(_TICKET if self.db.is_sqlite else _TICKET_FOR_UPDATE,
                               {"source_id": rt.config.id, "external_id": t["external_id"]}).first()
        changes: list[Change] = []
        if current is None:
            given = {k: t.get(k) for k in UPDATABLE if t.get(k) is not None}
            ticket_id = int(conn.execute(_NEW_TICKET, {
                "channel": rt.channel, "source_id": rt.config.id, "external_id": t["external_id"],
                "status": t["status"], "order_id": order_id, "customer_id": customer_id,
                "queue": t.get("queue"), "source_updated_at": t.get("source_updated_at"),
                "created_at": now, "updated_at": now, **({"priority": "normal"} | given)}).scalar_one())
            tl = self._timeline(conn, ticket_id, "created", raw_id, now, to_status=t["status"])
            changes.append(Change("ticket.created", None, t["status"], tl))
        else:
            ticket_id = current.id
            decision = decide(current.status, current.source_updated_at, t["status"],
                              t.get("source_updated_at"))
            if decision.outcome in (Outcome.STALE, Outcome.REFUSED):
                self._timeline(conn, ticket_id, decision.outcome.value, raw_id, now,
                               from_status=current.status, to_status=t["status"],
                               detail={"reason": decision.reason})
            else:
                diff = {k: t[k] for k in UPDATABLE if t.get(k) is not None and t[k] != getattr(current, k)}
                values: dict[str, Any] = dict(diff)
                if order_id is not None and current.order_id is None:
                    values["order_id"] = order_id
                if customer_id is not None and current.customer_id is None:
                    values["customer_id"] = customer_id
                if t.get("source_updated_at") is not None:
                    values["source_updated_at"] = t["source_updated_at"]
                if decision.outcome is Outcome.MOVED:
                    values["status"] = decision.to_status
                if values:
                    values["updated_at"] = now
                    conn.execute(_UPDATE_TICKET, values | {"row_id": ticket_id})
                if decision.outcome is Outcome.MOVED:
                    tl = self._timeline(conn, ticket_id, "status_changed", raw_id, now,
                                        from_status=decision.from_status,
                                        to_status=decision.to_status,
                                        detail={"fields": sorted(diff)} if diff else None)
                    changes.append(Change("ticket.status_changed", decision.from_status,
                                          decision.to_status, tl))
                elif diff:
                    tl = self._timeline(conn, ticket_id, "updated", raw_id, now,
                                        detail={"fields": sorted(diff)})
                    changes.append(Change("ticket.updated", current.status, current.status, tl))
        if n.interaction is not None:
            self._interaction(conn, ticket_id, n.interaction, rt, raw_id, now)
        for merge in merges:
            changes.extend(self._record_merge(conn, merge, raw_id, now))
        self._enqueue(conn, ticket_id, changes, now)
        return ticket_id

    def _follow_up(self, conn: sa.Connection, rt: SourceRuntime, raw_id: int, turn: dict[str, Any],
                   now: datetime) -> int:
        """A turn that belongs with an earlier event (a recording after its call):
        recorded on whichever ticket that event went to."""
        ticket_id = conn.execute(_TICKET_OF_EVENT, {"source_id": rt.config.id,
                                                    "dedupe_key": str(turn["follows"])}).scalar()
        if ticket_id is None:
            raise Quarantine(f"follows event {turn['follows']!r}, which has no ticket (not received yet?)")
        self._interaction(conn, ticket_id, turn, rt, raw_id, now)
        return int(ticket_id)

    def _interaction(self, conn: sa.Connection, ticket_id: int, turn: dict[str, Any], rt: SourceRuntime,
                     raw_id: int, now: datetime) -> None:
        detail = {"channel": rt.channel, "source_id": rt.config.id, "text": turn.get("text"),
                  "at": iso(turn["at"]) if isinstance(turn.get("at"), datetime) else turn.get("at")}
        if turn.get("detail") is not None:
            detail["detail"] = turn["detail"]
        self._timeline(conn, ticket_id, str(turn["kind"]), raw_id, now, detail=detail)

    def _timeline(self, conn: sa.Connection, ticket_id: int, kind: str, raw_id: int | None,
                  now: datetime, *, from_status: str | None = None,
                  to_status: str | None = None, detail: Any = None) -> int:
        return int(conn.execute(_NEW_TIMELINE, {
            "ticket_id": ticket_id, "kind": kind, "from_status": from_status, "to_status": to_status,
            "detail": detail, "raw_event_id": raw_id, "at": now}).scalar_one())

    def _record_merge(self, conn: sa.Connection, merge: Merge, raw_id: int,
                      now: datetime) -> list[Change]:
        out = []
        for tid in merge.moved_ticket_ids:
            status = conn.execute(sa.select(tickets.c.status).where(tickets.c.id == tid)).scalar_one()
            tl = self._timeline(conn, tid, "merged", raw_id, now, detail={
                "from_customer": merge.loser_id, "into_customer": merge.winner_id, "reason": merge.reason})
            out.append(Change("ticket.merged", status, status, tl))
        return out

    # ------------------------------------------------------------ outbox

    def _enqueue(self, conn: sa.Connection, ticket_id: int, changes: list[Change],
                 now: datetime) -> None:
        if not changes:
            return
        contexts: dict[tuple[int, bool], dict[str, Any]] = {}
        rows = []
        for change in changes:
            for dest_id in destinations_for(self.rules, change):
                dest = self.destinations.get(dest_id)
                if dest is None:
                    continue
                tid = ticket_id if change.type != "ticket.merged" else self._ticket_of(conn, change)
                key = (tid, dest.config.pii)
                if key not in contexts:
                    contexts[key] = self._context(conn, tid, pii=dest.config.pii)
                ctx = contexts[key] | {
                    "change": change.as_dict(),
                    "event": {"type": change.type, "timestamp": iso(now)},
                }
                payload = orjson.dumps(dest.mapping.render(ctx)).decode()
                rows.append({
                    "destination_id": dest_id, "ticket_id": tid,
                    "ordering_key": f"{dest_id}:{tid}", "event_type": change.type,
                    "idempotency_key": f"msg_{dest_id}_{tid}_{change.timeline_id}",
                    "payload": payload, "state": "pending", "attempts": 0,
                    "next_attempt_at": now, "created_at": now,
                })
        if rows:
            conn.execute(sa.insert(outbox), rows)

    def _ticket_of(self, conn: sa.Connection, change: Change) -> int:
        return int(conn.execute(sa.select(ticket_events.c.ticket_id)
                                .where(ticket_events.c.id == change.timeline_id)).scalar_one())

    def _context(self, conn: sa.Connection, ticket_id: int, *, pii: bool) -> dict[str, Any]:
        t = conn.execute(sa.select(tickets).where(tickets.c.id == ticket_id)).one()
        o = conn.execute(sa.select(orders).where(orders.c.id == t.order_id)).first() if t.order_id else None
        c = None
        ids: list[tuple[str, str]] = []
        if t.customer_id:
            c = conn.execute(sa.select(customers).where(customers.c.id == t.customer_id)).first()
            ids = [(r.kind, r.value) for r in conn.execute(
                sa.select(identities.c.kind, identities.c.value)
                .where(identities.c.customer_id == t.customer_id).order_by(identities.c.id)).all()]
        return {"ticket": ticket_view(t), "order": order_view(o),
                "customer": customer_view(c, self.cipher, pii=pii, identities=ids)}
