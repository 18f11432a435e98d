"""Callbacks: a downstream system reporting back on a ticket the hub sent it.

The WMS says the goods came back (quantities, condition); finance says the
refund was paid (amount, reference). Such a report is an inbound event like
any other — ``POST /callbacks/{destination_id}``, Standard Webhooks signed
with the destination's ``callback_secret``, stored in the inbox and
acknowledged once committed, deduped — so it is durable, ordered and exactly
once in effect the same way. Its source id is ``callback:<destination>``
and its mapping (``<kind>_callback``, in ``mappings/``) has a ``callback``
section instead of a ticket: which ticket (the hub's id, which every push
carries), the status it reaches, what was received, the amount paid.

The pipeline moves the named ticket forward through the lifecycle (never
back, never creating one) and flags what it must not accept silently
(:func:`flags_for`): a partial receipt, more goods than the return named,
goods not in good condition, a refund that differs from the ticket's. Flags
go on the ticket, its timeline and every later push.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hub import standard_webhooks
from hub.config import DestinationConfig, SourceConfig
from hub.interfaces import InboundEvent, InboundRequest, Reply
from hub.jsonbody import parse_json_object

PREFIX = "callback:"
GOOD_CONDITIONS = frozenset({"good", "intact", "ok", "new", "完好", "正常"})
FLAGS = ("partial_receipt", "quantity_exceeds_return", "damaged_goods", "refund_amount_differs")

_ACCEPTED = Reply(200, b'{"status":"accepted"}')
_DUPLICATE = Reply(200, b'{"status":"duplicate"}')


def source_id_of(destination_id: str) -> str:
    return PREFIX + destination_id


class CallbackSource:
    """The inbound side of a destination that reports back (a WebhookSource)."""

    def __init__(self, destination: DestinationConfig):
        assert destination.callback_secret is not None
        self.destination = destination
        # Not a slug on purpose (the ":"), so it can never be a configured source's id.
        self.config = SourceConfig.model_construct(id=source_id_of(destination.id), kind="callback",
                                                   mapping=destination.callback_mapping_name, enabled=True)
        self._keys = [standard_webhooks.decode_secret(destination.callback_secret.get_secret_value())]

    def receive(self, request: InboundRequest) -> list[InboundEvent]:
        standard_webhooks.verify(self._keys, request.headers, request.body)
        doc = parse_json_object(request.body)
        kept = {"webhook-id": request.headers["webhook-id"],
                "webhook-timestamp": request.headers["webhook-timestamp"]}
        return [InboundEvent(body=request.body, document=doc, headers=kept)]

    def acknowledge(self, stored: int, duplicates: int) -> Reply:
        return _DUPLICATE if duplicates and not stored else _ACCEPTED


def _quantities(items: Any) -> Counter[str]:
    out: Counter[str] = Counter()
    for i in items if isinstance(items, list) else []:
        if isinstance(i, dict) and i.get("sku") is not None:
            qty = i.get("qty")
            try:
                out[str(i["sku"])] += 1 if qty is None else int(qty)
            except (TypeError, ValueError):
                out[str(i["sku"])] += 0
    return out


def flags_for(ticket_items: Any, ticket_refund: int | None, cb: dict[str, Any]) -> list[str]:
    """What a callback reports that differs from what the ticket expects. Pure."""
    flags: list[str] = []
    received = cb.get("received")
    if received is not None:
        expected, got = _quantities(ticket_items), _quantities(received)
        if any(got[sku] > n for sku, n in expected.items()) or set(got) - set(expected):
            flags.append("quantity_exceeds_return")
        if any(got[sku] < n for sku, n in expected.items()):
            flags.append("partial_receipt")
        if any(isinstance(i, dict) and i.get("condition") is not None
               and str(i["condition"]).lower() not in GOOD_CONDITIONS for i in received):
            flags.append("damaged_goods")
    paid = cb.get("refund_amount")
    if paid is not None and ticket_refund is not None and paid != ticket_refund:
        flags.append("refund_amount_differs")
    return flags
