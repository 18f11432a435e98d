"""The ERP destination (kind ``erp``): each ticket change upserts the
after-sales order in the merchant's ERP.

Manifest: kind ``erp``, variants ``jushuitan`` (聚水潭 open platform, form +
md5 sign) and ``webhook`` (JSON, Standard Webhooks); outbound mapping
``mappings/erp.yaml``; ``simulator.py`` is a local 聚水潭 that checks the
sign and records each upsert.
"""

from connectors.erp.destination import ErpDestination, ErpDestinationConfig
from hub.interfaces import ConnectorSpec, DemoPart, DestinationKind


def _demo() -> DemoPart:
    from connectors.erp.demo import ErpDemo

    return ErpDemo()

CONNECTOR = ConnectorSpec(
    name="erp",
    demo=_demo,
    destinations=(DestinationKind("erp", ErpDestinationConfig, factory=ErpDestination,
                                  summary="ERP after-sales order upsert (聚水潭 or signed JSON)"),),
)

__all__ = ["CONNECTOR"]
