"""The finance destination (kind ``finance``): a refund record (amount in
fen, reason, order, flags) for each ticket change the sync rules send it
(``mappings/finance.yaml``), as signed JSON; with a ``callback_secret``
finance reports the refund executed at ``/callbacks/{id}``
(``mappings/finance_callback.yaml``). ``simulator.py`` pays and reports back.
"""

from connectors.webhook.destination import WebhookDestination, WebhookDestinationConfig
from hub.interfaces import ConnectorSpec, DemoPart, DestinationKind


def _demo() -> DemoPart:
    from connectors.finance.simulator import PAYABLE, finance
    from connectors.reporting import ReportingDemo

    return ReportingDemo(finance, PAYABLE)


CONNECTOR = ConnectorSpec(
    name="finance",
    demo=_demo,
    destinations=(DestinationKind("finance", WebhookDestinationConfig, factory=WebhookDestination,
                                  summary="finance refund record; reports the refund executed"),),
)

__all__ = ["CONNECTOR"]
