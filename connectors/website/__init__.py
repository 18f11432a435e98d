"""The merchant's own website: after-sales requests posted as Standard Webhooks.

Manifest: kind ``website``, ingress ``webhook`` (POST /webhooks/{source_id}),
auth Standard Webhooks HMAC-SHA256 (``secret: whsec_…``), default mapping
``mappings/website.yaml``. Reference: https://www.standardwebhooks.com/ (spec
``spec/standard-webhooks.md``).
"""

from connectors.website.connector import SPEC as CONNECTOR

__all__ = ["CONNECTOR"]
