"""The standard records (docs/architecture.md §2) as SQLModel tables.

Money is an integer number of fen. Times are timezone-aware UTC: SQLite keeps
no zone, so :class:`UTCDateTime` stores naive UTC and hands back aware values.
Hot paths (inbox insert, claims, outbox writes) use these tables' ``__table__``
with SQLAlchemy Core rather than ORM sessions (docs/architecture.md §3).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A DateTime that refuses naive input and always returns aware UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the hub stores aware UTC times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _ts(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=nullable, index=index))


def _json(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=sa.Column(sa.JSON(), nullable=nullable))


class Customer(SQLModel, table=True):
    __tablename__ = "customers"

    id: int | None = Field(default=None, primary_key=True)
    display_name: str | None = None
    # AES-GCM ciphertexts ("v1:<key id>:<base64>"); never the clear values.
    phone_enc: str | None = None
    address_enc: str | None = None
    # Keyed blind index (HMAC) of the normalized phone: whether an event brings a new
    # number, told without decrypting. Not indexed: lookups by phone go through
    # customer_identities (migration 0009).
    phone_index: str | None = None
    email: str | None = None
    # What the customer is known by: [[identity id, kind, value], …] in id order,
    # the customer_identities rows naming it, kept with the row so a batch reads
    # them with the customer and a new identity of an old customer changes this
    # row (written anyway) instead of a page of an index by customer (migration
    # 0011). The table stays the lookup by (kind, value). Use :func:`known_by`.
    identities: list[Any] | None = _json()
    merged_into_id: int | None = Field(default=None, foreign_key="customers.id")
    created_at: datetime | None = _ts(nullable=False)
    updated_at: datetime | None = _ts(nullable=False)


class CustomerIdentity(SQLModel, table=True):
    __tablename__ = "customer_identities"
    __table_args__ = (
        sa.UniqueConstraint("kind", "value", name="uq_identity_kind_value"),
    )

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customers.id")
    kind: str
    # For kind "phone" this is the blind index, never the number itself.
    value: str
    created_at: datetime | None = _ts(nullable=False)


def known_by(customer: Any) -> list[tuple[str, str]]:
    """A customer row's identities as (kind, value), in the order they were
    first seen (``customers.identities``; None on a row nobody linked yet)."""
    return [(kind, value) for _, kind, value in (customer.identities or ())]


class CustomerMerge(SQLModel, table=True):
    """Two customers found to be one person: recorded, never silent."""

    __tablename__ = "customer_merges"

    id: int | None = Field(default=None, primary_key=True)
    winner_id: int = Field(foreign_key="customers.id")
    loser_id: int = Field(foreign_key="customers.id")
    reason: str
    raw_event_id: int | None = None
    at: datetime | None = _ts(nullable=False)


class Order(SQLModel, table=True):
    __tablename__ = "orders"
    __table_args__ = (
        sa.UniqueConstraint("channel", "external_id", name="uq_order_channel_external"),
        # An order number keyed in by a caller may be any channel's (match: any_channel).
        sa.Index("ix_orders_external_id", "external_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    channel: str
    source_id: str
    external_id: str
    status: str | None = None
    paid_amount: int | None = None  # fen
    pay_reference: str | None = None  # the payment's transaction number (what a refund goes back against)
    items: Any = _json()
    customer_id: int | None = Field(default=None, foreign_key="customers.id", index=True)
    placed_at: datetime | None = _ts()
    is_stub: bool = True  # created from an event that only named it
    created_at: datetime | None = _ts(nullable=False)
    updated_at: datetime | None = _ts(nullable=False)


class Ticket(SQLModel, table=True):
    __tablename__ = "tickets"
    __table_args__ = (sa.UniqueConstraint("source_id", "external_id", name="uq_ticket_source_external"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str
    source_id: str
    external_id: str
    type: str
    status: str = Field(index=True)
    reason_code: str | None = None
    reason_text: str | None = None
    description: str | None = None
    priority: str = "normal"
    refund_amount: int | None = None  # fen
    items: Any = _json()
    order_id: int | None = Field(default=None, foreign_key="orders.id", index=True)
    customer_id: int | None = Field(default=None, foreign_key="customers.id", index=True)
    queue: str | None = None
    assignee: str | None = None
    # What a downstream report showed that differs from what was expected (hub.callbacks.FLAGS).
    flags: Any = _json()
    # The buyer's parcel back to the merchant, once shipped (carrier name, waybill number).
    return_carrier: str | None = None
    return_waybill: str | None = None
    sla_due_at: datetime | None = _ts()
    source_updated_at: datetime | None = _ts()
    # Indexed: reports and exports over a period read the tickets created in it.
    created_at: datetime | None = _ts(nullable=False, index=True)
    updated_at: datetime | None = _ts(nullable=False)


class TicketEvent(SQLModel, table=True):
    """Append-only timeline: created, status_changed, updated, stale, refused,
    message, call, note, sync_sent, sync_failed, sync_dead, merged."""

    __tablename__ = "ticket_events"

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    kind: str
    from_status: str | None = None
    to_status: str | None = None
    detail: Any = _json()
    raw_event_id: int | None = Field(default=None, foreign_key="raw_events.id")
    at: datetime | None = _ts(nullable=False)


class RawEvent(SQLModel, table=True):
    """The inbox: every inbound event exactly as received."""

    __tablename__ = "raw_events"
    __table_args__ = (
        sa.UniqueConstraint("source_id", "dedupe_key", name="uq_raw_source_dedupe"),
        sa.Index("ix_raw_events_state_id", "state", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    source_id: str
    dedupe_key: str
    received_at: datetime | None = _ts(nullable=False)
    headers: Any = _json()
    # Exactly as received, sealed with the PII key (bodies carry phones and addresses).
    body: str
    state: str = "pending"  # pending | done | quarantined
    reason: str | None = None
    mapping_version: str | None = None
    ticket_id: int | None = None
    attempts: int = 0
    processed_at: datetime | None = _ts()


class Outbox(SQLModel, table=True):
    """One push of one ticket change to one destination."""

    __tablename__ = "outbox"
    __table_args__ = (
        # Claims, per destination, longest due first.
        sa.Index("ix_outbox_claim", "destination_id", "state", "next_attempt_at", "id"),
        sa.Index("ix_outbox_ordering", "ordering_key", "state", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    destination_id: str
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    ordering_key: str
    event_type: str
    idempotency_key: str = Field(unique=True)
    payload: str
    # pending | delivered | dead (held: the ticket's later pushes wait) | dropped (by an operator)
    state: str = "pending"
    attempts: int = 0
    next_attempt_at: datetime | None = _ts(nullable=False)
    first_attempt_at: datetime | None = _ts()
    claimed_until: datetime | None = _ts()
    # Who holds the claim: an outcome is recorded only while the row still carries
    # its attempt's token (a late attempt whose lease ran out changes nothing).
    claim_token: str | None = None
    last_status: int | None = None
    last_error: str | None = None
    last_response: str | None = None
    created_at: datetime | None = _ts(nullable=False)
    delivered_at: datetime | None = _ts()


class AuditLog(SQLModel, table=True):
    """Admin actions (retry, drop, replay), who did them and when."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    actor: str
    action: str
    target: str | None = None
    detail: Any = _json()
    at: datetime | None = _ts(nullable=False)


class SourceState(SQLModel, table=True):
    """A polled source's lease and health, readable by every hub process.

    Exactly one process polls a source at a time: it holds the lease until
    ``lease_until`` and renews it with every page it commits (docs/architecture.md §9).
    """

    __tablename__ = "source_state"

    source_id: str = Field(primary_key=True)
    lease_owner: str | None = None
    lease_until: datetime | None = _ts()
    healthy: bool = True
    circuit: str = "closed"  # closed | open | half_open
    last_success_at: datetime | None = _ts()
    last_error: str | None = None
    last_error_at: datetime | None = _ts()
    # How far behind now the committed cursor is (seconds), as of the last poll.
    lag_seconds: float | None = None
    # Platform calls per minute over the last health save, against the quota's rate.
    quota_calls_per_minute: float | None = None
    quota_limit_per_minute: float | None = None
    # Paused by an operator (admin API): no process polls it until resumed.
    paused: bool = Field(default=False, sa_column=sa.Column(sa.Boolean(), nullable=False,
                                                            server_default=sa.false()))
    updated_at: datetime | None = _ts(nullable=False)


class SourceCursor(SQLModel, table=True):
    """Where a poll stream has got to, committed with the raw events it produced."""

    __tablename__ = "source_cursors"

    source_id: str = Field(primary_key=True)
    stream: str = Field(primary_key=True)
    cursor: Any = _json(nullable=False)
    updated_at: datetime | None = _ts(nullable=False)


class BacklogSample(SQLModel, table=True):
    """The backlog once a minute, for the dashboard's charts over time.

    Counters, not rates: ``received`` is the highest raw event id, ``pushes``
    the highest outbox id, so a rate is the difference of two samples. The
    first process to write a minute's row wins; older rows are trimmed.
    """

    __tablename__ = "backlog_samples"

    minute: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), primary_key=True))
    received: int = 0
    inbox_pending: int = 0
    quarantined: int = 0
    pushes: int = 0
    outbox_pending: int = 0
    dead: int = 0


metadata = SQLModel.metadata
raw_events = RawEvent.__table__  # type: ignore[attr-defined]
outbox = Outbox.__table__  # type: ignore[attr-defined]
tickets = Ticket.__table__  # type: ignore[attr-defined]
ticket_events = TicketEvent.__table__  # type: ignore[attr-defined]
orders = Order.__table__  # type: ignore[attr-defined]
customers = Customer.__table__  # type: ignore[attr-defined]
identities = CustomerIdentity.__table__  # type: ignore[attr-defined]
customer_merges = CustomerMerge.__table__  # type: ignore[attr-defined]
audit_log = AuditLog.__table__  # type: ignore[attr-defined]
source_state = SourceState.__table__  # type: ignore[attr-defined]
source_cursors = SourceCursor.__table__  # type: ignore[attr-defined]
backlog_samples = BacklogSample.__table__  # type: ignore[attr-defined]
