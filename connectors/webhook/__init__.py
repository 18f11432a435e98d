"""The generic signed webhook destination (docs/architecture.md §5).

Manifest: kind ``webhook``; pushes the standard envelope rendered by
``mappings/webhook.yaml``, signed the Standard Webhooks way (``webhook-id``
is the push's idempotency key). ``receiver.py`` is a local receiver that
verifies and prints what it gets (the demo and the tests use it).
"""

from connectors.webhook.destination import SPEC as CONNECTOR

__all__ = ["CONNECTOR"]
