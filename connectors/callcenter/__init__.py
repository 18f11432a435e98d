"""Call-center (400 line / CTI): call detail records pushed after each call.

Manifest: kind ``callcenter``, ingress ``webhook`` (``POST
/webhooks/{source_id}?action=cdr``), auth HTTP Basic or an HMAC-SHA256 body
signature, default format Tencent Cloud Contact Center's CDR push, default
mapping ``mappings/callcenter.yaml``. References: see ``connector.py``;
docs/platforms.md §4.
"""

from connectors.callcenter.connector import SPEC as CONNECTOR

__all__ = ["CONNECTOR"]
