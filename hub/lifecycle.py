"""The one ticket lifecycle shared by every channel, as pure functions.

Platforms move faster than we see them (a poll may find a refund already
SUCCESS), so any *forward* move along the main path is legal, skipping steps.
Moving *backwards* is not: a platform that reports an earlier status than the
ticket has is either stale or wrong, and the ticket keeps its status while the
event is kept in the timeline. ``rejected`` can be re-opened into review (the
buyer appeals); terminal ``closed`` goes nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

MAIN_PATH = (
    "new",
    "pending_review",
    "awaiting_return",
    "return_shipped",
    "return_received",
    "refund_pending",
    "resolved",
    "closed",
)
STATUSES = (*MAIN_PATH, "rejected", "cancelled")
TYPES = (
    "refund_only",
    "return_refund",
    "exchange",
    "repair",
    "reissue",
    "inquiry",
    "complaint",
    "logistics",
)
PRIORITIES = ("low", "normal", "high", "urgent")
OPEN_STATUSES = frozenset(STATUSES) - {"resolved", "closed", "rejected", "cancelled"}


def _transitions() -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {}
    for i, status in enumerate(MAIN_PATH):
        table[status] = set(MAIN_PATH[i + 1 :])
        if status not in ("resolved", "closed"):
            table[status] |= {"rejected", "cancelled"}
    table["rejected"] = {"pending_review", "closed", "cancelled"}
    table["cancelled"] = {"closed"}
    return {k: frozenset(v) for k, v in table.items()}


TRANSITIONS: dict[str, frozenset[str]] = _transitions()


def can_move(src: str, dst: str) -> bool:
    return dst in TRANSITIONS.get(src, frozenset())


class Outcome(StrEnum):
    MOVED = "moved"          # status changes
    UNCHANGED = "unchanged"  # same status (other fields may still change)
    STALE = "stale"          # older than what the ticket already reflects
    REFUSED = "refused"      # newer, but the move is not in the transition table


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    from_status: str
    to_status: str
    reason: str = ""


def decide(
    current_status: str,
    current_updated_at: datetime | None,
    event_status: str | None,
    event_updated_at: datetime | None,
) -> Decision:
    """What an event does to a ticket's status. Pure; no I/O."""
    if (
        current_updated_at is not None
        and event_updated_at is not None
        and event_updated_at < current_updated_at
    ):
        return Decision(
            Outcome.STALE,
            current_status,
            current_status,
            f"event time {event_updated_at.isoformat()} is older than the ticket's "
            f"{current_updated_at.isoformat()}",
        )
    if event_status is None or event_status == current_status:
        return Decision(Outcome.UNCHANGED, current_status, current_status)
    if can_move(current_status, event_status):
        return Decision(Outcome.MOVED, current_status, event_status)
    return Decision(
        Outcome.REFUSED,
        current_status,
        current_status,
        f"{current_status} → {event_status} is not a legal move",
    )
