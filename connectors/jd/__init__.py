"""JD: after-sales service orders polled from the JOS API.

Manifest: kind ``jd``, ingress ``poll`` (``jingdong.asc.query.list`` by
update-time window, ``jingdong.asc.query.view`` for detail,
``jingdong.pop.order.get`` for the order), auth JOS md5 request signing with
the app secret plus the seller's access token, default mapping
``mappings/jd.yaml``. References: see ``client.py`` and ``connector.py``;
docs/platforms.md §2.
"""

from connectors.jd.connector import SPEC as CONNECTOR

__all__ = ["CONNECTOR"]
