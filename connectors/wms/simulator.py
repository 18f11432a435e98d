"""A warehouse: takes the hub's return inbound notices and, once the parcel
"arrives", reports what came back — by default everything, in good
condition; told otherwise (``short``, ``damaged``), less or damaged goods.

One receipt per ticket, however many notices it had. With ``needs_waybill``
the parcel arrives only once a notice names its waybill (a marketplace tells
the hub when the buyer ships; a website return may never say).
"""

from __future__ import annotations

from typing import Any

from connectors.reporting import ReportingReceiver

EXPECTING = ("awaiting_return", "return_shipped")


def warehouse(destination_id: str = "wms", *, short: set[str] | None = None,
              damaged: set[str] | None = None, needs_waybill: bool = False, **kw: Any) -> ReportingReceiver:
    """``short``/``damaged``: after-sales numbers whose goods come back one short / damaged."""
    short, damaged = short or set(), damaged or set()
    counter = iter(range(1, 10**9))
    received_for: set[Any] = set()

    def report(push: dict[str, Any]) -> dict[str, Any] | None:
        d = push.get("data") or {}
        if d.get("status") not in EXPECTING or d.get("ticket_id") in received_for:
            return None
        if needs_waybill and not (d.get("return_waybill") or {}).get("waybill_no"):
            return None
        received_for.add(d.get("ticket_id"))
        received = []
        for line in d.get("expected") or []:
            qty = int(line.get("qty") or 1) - (1 if d.get("after_sale_no") in short else 0)
            if qty > 0:
                received.append({"sku": line.get("sku"), "qty": qty,
                                 "condition": "damaged" if d.get("after_sale_no") in damaged else "good"})
        return {"type": "return.received",
                "data": {"ticket_id": d.get("ticket_id"), "receipt_no": f"RK{next(counter):08d}",
                         "received": received}}

    return ReportingReceiver(destination_id, report, **kw)
