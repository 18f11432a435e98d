"""A simulated merchant website that posts after-sales requests to the hub,
signed exactly as the Standard Webhooks spec says (the hub must verify them
the real way). Used by ``hub demo``, the tests and ``bench/ingest.py``.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from connectors.fakedata import CITIES, GIVEN, KINDS, PRODUCTS, REASONS, SURNAMES, phone
from hub import standard_webhooks


@dataclass
class Customer:
    user_id: str
    name: str
    phone: str
    email: str
    address: str


@dataclass
class WebsiteSimulator:
    secret: str
    seed: int = 11
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._key = standard_webhooks.decode_secret(self.secret)
        self._n = 0

    def customer(self) -> Customer:
        r = self.rng
        uid = f"u{r.randint(100000, 999999)}"
        return Customer(uid, r.choice(SURNAMES) + r.choice(GIVEN) + r.choice(["", *GIVEN]),
                        phone(r), f"{uid}@example.com", r.choice(CITIES) + f"{r.randint(1, 999)}号")

    def request(self, customer: Customer | None = None, *, kind: str | None = None,
                request_id: str | None = None, order_id: str | None = None,
                event_type: str = "aftersale.requested", status: str | None = None,
                when: datetime | None = None) -> dict[str, Any]:
        """One after-sales request message (the body the site posts)."""
        r = self.rng
        self._n += 1
        c = customer or self.customer()
        sku, title, price = r.choice(PRODUCTS)
        reason, text = r.choice(REASONS)
        data: dict[str, Any] = {
            "request_id": request_id or f"AS{20261111000 + self._n}{r.randint(10, 99)}",
            "order_id": order_id or f"SO{r.randint(10**9, 10**10 - 1)}",
            "kind": kind or r.choice(KINDS), "reason": reason, "description": text,
            "amount": price, "items": [{"sku": sku, "title": title, "qty": 1}],
            "customer": {"user_id": c.user_id, "name": c.name, "phone": c.phone, "email": c.email,
                         "address": c.address},
        }
        if status:
            data["status"] = status
        ts = (when or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
        return {"type": event_type, "timestamp": ts, "data": data}

    def sign(self, message: dict[str, Any] | bytes, msg_id: str | None = None,
             timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
        """Body bytes and Standard Webhooks headers for one POST."""
        body = message if isinstance(message, bytes) else orjson.dumps(message)
        mid = msg_id or f"msg_{uuid.uuid4().hex}"
        return body, standard_webhooks.headers_for(self._key, mid, body,
                                                   int(time.time()) if timestamp is None else timestamp)
