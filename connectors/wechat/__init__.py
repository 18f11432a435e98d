"""WeChat mini-program / 微信小店: message push in plain or safe mode.

Manifest: kind ``wechat``, ingress ``webhook`` (``GET /webhooks/{source_id}``
answers WeChat's URL check, ``POST`` takes messages and events), auth sha1
``signature`` / ``msg_signature`` with the token and AES-256-CBC with the
EncodingAESKey, default mapping ``mappings/wechat.yaml``. References: see
``crypto.py`` and ``connector.py``; docs/platforms.md §3.
"""

from connectors.wechat.connector import SPEC as CONNECTOR

__all__ = ["CONNECTOR"]
