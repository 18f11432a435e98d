"""Taobao/Tmall: refunds polled from the TOP API, refund messages from TMC.

Manifest: kind ``taobao``, ingress ``poll`` (``taobao.refunds.receive.get``
by modified-time window) and ``messages`` (TMC ``taobao_refund_*`` topics via
``taobao.tmc.messages.consume``/``confirm``), auth TOP request signing (md5,
hmac, hmac-sha256 with the app secret) plus the seller's session, default
mapping ``mappings/taobao.yaml``. References: see ``client.py`` and
``connector.py``; docs/platforms.md §1.
"""

from connectors.taobao.connector import SPEC as CONNECTOR

__all__ = ["CONNECTOR"]
