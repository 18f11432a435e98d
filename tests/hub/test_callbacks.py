"""What a downstream report must not slip past, as a pure function."""

from __future__ import annotations

from hub.callbacks import flags_for

ITEMS = [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}]


def test_a_report_that_matches_the_ticket_raises_no_flag() -> None:
    assert flags_for(ITEMS, 19900, {"received": [{"sku": "A", "qty": 2, "condition": "good"},
                                                 {"sku": "B", "qty": 1, "condition": "完好"}]}) == []
    assert flags_for(ITEMS, 19900, {"refund_amount": 19900}) == []


def test_short_extra_damaged_and_a_different_amount_are_each_flagged() -> None:
    assert flags_for(ITEMS, None, {"received": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 1}]}) == [
        "partial_receipt"]
    assert flags_for(ITEMS, None, {"received": [{"sku": "A", "qty": 3}, {"sku": "B", "qty": 1}]}) == [
        "quantity_exceeds_return"]
    assert flags_for(ITEMS, None, {"received": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1},
                                                {"sku": "Z", "qty": 1}]}) == ["quantity_exceeds_return"]
    assert flags_for(ITEMS, None, {"received": [{"sku": "A", "qty": 2, "condition": "damaged"},
                                                {"sku": "B", "qty": 1}]}) == ["damaged_goods"]
    assert flags_for(ITEMS, 19900, {"refund_amount": 19800}) == ["refund_amount_differs"]
    # A line with a quantity that is not a number counts as nothing received.
    assert flags_for(ITEMS, None, {"received": [{"sku": "A", "qty": "two"}, {"sku": "B", "qty": 1}]}) == [
        "partial_receipt"]
