"""Sync rules: which ticket changes produce which pushes. Pure data + matching."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub.config import SyncRule


@dataclass(frozen=True)
class Change:
    """One thing that happened to a ticket, as the sync rules see it."""

    type: str                # ticket.created | ticket.status_changed | ticket.updated | ticket.merged
    from_status: str | None
    to_status: str
    key: str                 # unique per ticket: the raw event and the kind of change; in the push's idempotency key
    # A call or message that joined the ticket (kind, channel, text, at): what downstream learns of it.
    interaction: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"from": self.from_status, "to": self.to_status}
        if self.interaction is not None:
            out["interaction"] = self.interaction
        return out


def destinations_for(rules: list[SyncRule], change: Change, ticket: Any) -> list[str]:
    """Destination ids to push ``change`` of ``ticket`` to, in rule order, each once."""
    out: list[str] = []
    for rule in rules:
        if change.type not in rule.on:
            continue
        if rule.status is not None and change.to_status not in rule.status:
            continue
        if rule.type is not None and ticket.type not in rule.type:
            continue
        if rule.channel is not None and ticket.channel not in rule.channel:
            continue
        if rule.source is not None and ticket.source_id not in rule.source:
            continue
        floor = rule.min_refund_fen
        if floor is not None and (ticket.refund_amount or 0) < floor:
            continue
        for dest in rule.to:
            if dest not in out:
                out.append(dest)
    return out
