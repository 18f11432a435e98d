"""Public views of records: what pushes, the API and the CLI show.

Contact fields — phone, address, e-mail and the customer's name, and e-mail
identities — are masked unless the viewer (a destination with ``pii: true``,
a token with ``pii``) may see them in clear.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from hub.pii import PiiCipher, mask_address, mask_email, mask_name, mask_phone


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return _utc_iso(dt) if dt.tzinfo is UTC else _iso(dt)


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


# Cached: most times a batch renders are its one ``now`` (a ticket's created,
# updated, the event's timestamp, for each destination), and formatting them
# was ~6 % of planning a batch. UTC only: equal instants in other zones hash
# alike but are written with their own offset.
_utc_iso = functools.lru_cache(maxsize=1024)(_iso)


def parse_iso(text: str) -> datetime | None:
    """An operator's ISO 8601 time (``…Z`` or ``…+08:00``), or None when it is not one;
    the caller says whether a time without a zone will do."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def ticket_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id, "channel": row.channel, "source_id": row.source_id,
        "external_id": row.external_id, "type": row.type, "status": row.status,
        "reason_code": row.reason_code, "reason_text": row.reason_text,
        "description": row.description, "priority": row.priority,
        "refund_amount": row.refund_amount, "items": row.items, "order_id": row.order_id,
        "customer_id": row.customer_id, "queue": row.queue, "assignee": row.assignee,
        "flags": row.flags or [],
        "return_carrier": row.return_carrier, "return_waybill": row.return_waybill,
        "sla_due_at": iso(row.sla_due_at), "source_updated_at": iso(row.source_updated_at),
        "created_at": iso(row.created_at), "updated_at": iso(row.updated_at),
    }


def order_view(row: Any | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "id": row.id, "channel": row.channel, "external_id": row.external_id,
        "status": row.status, "paid_amount": row.paid_amount, "pay_reference": row.pay_reference,
        "items": row.items,
        "customer_id": row.customer_id, "placed_at": iso(row.placed_at), "is_stub": row.is_stub,
    }


def customer_view(row: Any | None, cipher: PiiCipher, *, pii: bool,
                  identities: list[tuple[str, str]] | None = None) -> dict[str, Any] | None:
    if row is None:
        return None
    phone = cipher.decrypt(row.phone_enc) if row.phone_enc else None
    address = cipher.decrypt(row.address_enc) if row.address_enc else None
    view: dict[str, Any] = {
        "id": row.id,
        "display_name": row.display_name if pii else mask_name(row.display_name),
        "phone": phone if pii else mask_phone(phone),
        "address": address if pii else mask_address(address),
        "email": row.email if pii else mask_email(row.email),
    }
    if identities is not None:
        # Phone identities hold a blind index: meaningless outside, so not shown.
        view["identities"] = [{"kind": k, "value": v if pii or k != "email" else mask_email(v)}
                              for k, v in identities if k != "phone"]
    return view
