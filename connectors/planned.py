"""Kinds the config already accepts but this build cannot run yet.

``hub check-config`` validates their common fields; ``hub run`` names them
and refuses to start while one is enabled. Each moves to its own package when
its connector lands.
"""

from __future__ import annotations

from hub.interfaces import ConnectorSpec, DestinationKind

CONNECTORS = ConnectorSpec(
    name="planned",
    destinations=tuple(DestinationKind(k, available=False, summary=s) for k, s in (
        ("notify", "customer notices at status changes: SMS and e-mail"),
    )),
)
