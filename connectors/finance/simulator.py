"""A finance system: takes the hub's refund records and, once paid, reports
the refund executed — the amount asked for, or (``short_paid``) a fen less.
"""

from __future__ import annotations

from typing import Any

from connectors.reporting import ReportingReceiver

PAYABLE = ("return_received", "refund_pending")


def finance(destination_id: str = "finance", *, short_paid: set[str] | None = None,
            **kw: Any) -> ReportingReceiver:
    short_paid = short_paid or set()
    counter = iter(range(1, 10**9))

    def report(push: dict[str, Any]) -> dict[str, Any] | None:
        d = push.get("data") or {}
        if d.get("status") not in PAYABLE or d.get("amount_fen") is None:
            return None
        amount = int(d["amount_fen"]) - (1 if d.get("after_sale_no") in short_paid else 0)
        return {"type": "refund.executed",
                "data": {"ticket_id": d.get("ticket_id"), "pay_reference": f"PAY{next(counter):010d}",
                         "amount_fen": amount}}

    return ReportingReceiver(destination_id, report, **kw)
