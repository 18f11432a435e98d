"""The pipeline's rendering stage: ticket changes → outbox rows. Pure; no I/O.

Each change of a ticket goes, by the sync rules, to some destinations; each
destination's outbound mapping renders the ticket as it stands right after
that change (its order, its customer — masked unless the destination has
``pii: true``). The row's idempotency key is made of the destination, the
ticket and the change's key (the raw event that made it and its kind), so a
change is pushed once per destination however often anything is retried.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from hub.config import SyncRule
from hub.pii import PiiCipher
from hub.runtimes import DestinationRuntime
from hub.sync import Change, destinations_for
from hub.views import customer_view, iso, order_view, ticket_view


def ticket_context(cipher: PiiCipher, ticket: Any, order: Any | None, customer: Any | None,
                   identities: list[tuple[str, str]], *, pii: bool) -> dict[str, Any]:
    """What an outbound mapping reads of a ticket."""
    return {"ticket": ticket_view(ticket), "order": order_view(order),
            "customer": customer_view(customer, cipher, pii=pii, identities=identities if customer else [])}


def outbox_rows(rules: list[SyncRule], destinations: dict[str, DestinationRuntime], cipher: PiiCipher,
                ticket: Any, order: Any | None, customer: Any | None, identities: list[tuple[str, str]],
                changes: list[Change], now: datetime) -> list[dict[str, Any]]:
    """The outbox rows for ``changes`` of one ticket, as it stands now."""
    rows: list[dict[str, Any]] = []
    contexts: dict[bool, dict[str, Any]] = {}
    timestamp = iso(now)
    for change in changes:
        # What a change adds to the context is the same for each of its destinations.
        about = {"change": change.as_dict(), "event": {"type": change.type, "timestamp": timestamp}}
        for dest_id in destinations_for(rules, change, ticket):
            dest = destinations.get(dest_id)
            if dest is None:
                continue
            pii = dest.config.pii
            if pii not in contexts:
                contexts[pii] = ticket_context(cipher, ticket, order, customer, identities, pii=pii)
            ctx = contexts[pii] | about
            rows.append({
                "destination_id": dest_id, "ticket_id": ticket.id,
                "ordering_key": f"{dest_id}:{ticket.id}", "event_type": change.type,
                "idempotency_key": f"msg_{dest_id}_{ticket.id}_{change.key}",
                "payload": orjson.dumps(dest.mapping.render(ctx)).decode(),
                "state": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now,
            })
    return rows
