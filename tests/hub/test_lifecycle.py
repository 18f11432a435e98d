"""The lifecycle is a pure function: forward moves (skipping allowed), no
moves backwards, stale events never move a ticket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hub.lifecycle import MAIN_PATH, STATUSES, Outcome, can_move, decide

T = datetime(2026, 11, 11, tzinfo=UTC)


@pytest.mark.parametrize(("src", "dst", "legal"), [
    ("new", "pending_review", True),
    ("new", "resolved", True),                 # a poll can see only the end
    ("awaiting_return", "return_received", True),
    ("return_received", "awaiting_return", False),
    ("resolved", "closed", True),
    ("resolved", "rejected", False),
    ("rejected", "pending_review", True),      # appeal
    ("closed", "new", False),
    ("cancelled", "pending_review", False),
])
def test_transition_table(src: str, dst: str, legal: bool) -> None:
    assert can_move(src, dst) is legal


def test_no_backward_move_on_the_main_path() -> None:
    for i, src in enumerate(MAIN_PATH):
        for dst in MAIN_PATH[:i]:
            assert not can_move(src, dst)
    assert not any(can_move("closed", s) for s in STATUSES)


def test_decisions() -> None:
    assert decide("new", T, "awaiting_return", T + timedelta(seconds=1)).outcome is Outcome.MOVED
    stale = decide("awaiting_return", T, "pending_review", T - timedelta(seconds=1))
    assert stale.outcome is Outcome.STALE and stale.to_status == "awaiting_return"
    refused = decide("resolved", T, "pending_review", T + timedelta(hours=1))
    assert refused.outcome is Outcome.REFUSED and "not a legal move" in refused.reason
    assert decide("new", T, "new", T).outcome is Outcome.UNCHANGED
    assert decide("new", None, "cancelled", None).outcome is Outcome.MOVED
