"""The WMS destination (kind ``wms``): a return inbound notice for each
ticket change the sync rules send it (``mappings/wms.yaml``: expected SKUs
and quantities, the order, the sender), as signed JSON; with a
``callback_secret`` the WMS reports goods received at
``/callbacks/{id}`` (``mappings/wms_callback.yaml``). ``simulator.py`` is a
warehouse that receives the notice and reports back.
"""

from connectors.webhook.destination import WebhookDestination, WebhookDestinationConfig
from hub.interfaces import ConnectorSpec, DemoPart, DestinationKind


def _demo() -> DemoPart:
    from connectors.reporting import ReportingDemo
    from connectors.wms.simulator import EXPECTING, warehouse

    return ReportingDemo(warehouse, EXPECTING)

CONNECTOR = ConnectorSpec(
    name="wms",
    demo=_demo,
    destinations=(DestinationKind("wms", WebhookDestinationConfig, factory=WebhookDestination,
                                  summary="WMS return inbound notice; reports goods received"),),
)

__all__ = ["CONNECTOR"]
