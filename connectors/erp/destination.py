"""The ERP destination: each ticket change upserts the after-sales order in the ERP.

Two variants (``variant``):

- ``jushuitan`` (聚水潭 ``/open/aftersale/upload``): form-encoded
  ``app_key, access_token, timestamp, charset, version, biz`` plus the md5
  ``sign`` (:mod:`connectors.erp.signing`). ``biz`` is a JSON array of one
  record rendered by ``mappings/erp.yaml`` with the destination's
  ``shop_id`` added. Success is ``code == 0`` *and* the record accepted: the
  answer lists each record's outcome, and a refused record is a permanent
  failure naming the ERP's reason. The upload is an upsert keyed by
  ``outer_as_id`` (the platform's after-sales number), so a retry after a
  lost answer changes nothing.
- ``webhook``: the same record as JSON, signed the Standard Webhooks way
  (``webhook-id`` = the push's idempotency key), for an ERP of the merchant's own.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import aiohttp
import orjson
from pydantic import ConfigDict, SecretStr, model_validator

from connectors.erp.signing import jushuitan_sign
from hub import standard_webhooks
from hub.config import DestinationConfig
from hub.delivery import receipt_of
from hub.errors import Permanent, Retryable
from hub.interfaces import Push, Receipt

# Codes that refuse the request itself (bad parameters): retrying the same push cannot help.
# Everything else — throttling, the ERP's own trouble, refused credentials (which an
# operator renews) — is retried with backoff; the dead-letter queue catches what never recovers.
PERMANENT_CODES = frozenset({40})


class ErpDestinationConfig(DestinationConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    variant: Literal["jushuitan", "webhook"] = "jushuitan"
    url: str
    # jushuitan
    app_key: str | None = None
    app_secret: SecretStr | None = None
    access_token: SecretStr | None = None
    shop_id: int | None = None
    # webhook
    secret: SecretStr | None = None

    @model_validator(mode="after")
    def _variant_fields(self) -> ErpDestinationConfig:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("url must be an http:// or https:// URL")
        need = ("app_key", "app_secret", "access_token", "shop_id") if self.variant == "jushuitan" else ("secret",)
        missing = [k for k in need if getattr(self, k) in (None, "")]
        if missing:
            raise ValueError(f"variant {self.variant} needs {', '.join(missing)}")
        if self.variant == "webhook" and self.secret is not None:
            standard_webhooks.decode_secret(self.secret.get_secret_value())
        return self


class ErpDestination:
    def __init__(self, config: ErpDestinationConfig):
        self.config = config
        self._key = (standard_webhooks.decode_secret(config.secret.get_secret_value())
                     if config.variant == "webhook" and config.secret else b"")

    async def deliver(self, push: Push, http: aiohttp.ClientSession) -> Receipt:
        if self.config.variant == "webhook":
            headers = standard_webhooks.headers_for(self._key, push.idempotency_key, push.payload)
            async with http.post(self.config.url, data=push.payload, headers=headers) as r:
                return await receipt_of(r, self.config.max_response_bytes)
        return await self._upload(push, http)

    def form(self, push: Push, now: int | None = None) -> dict[str, str]:
        """The signed form of one upload (public: the simulator's tests read it)."""
        c = self.config
        assert c.app_key and c.app_secret and c.access_token and c.shop_id is not None
        record = orjson.loads(push.payload)
        record["shop_id"] = c.shop_id
        params = {"app_key": c.app_key, "access_token": c.access_token.get_secret_value(),
                  "timestamp": str(now if now is not None else int(time.time())), "charset": "utf-8",
                  "version": "2", "biz": orjson.dumps([record]).decode()}
        params["sign"] = jushuitan_sign(c.app_secret.get_secret_value(), params)
        return params

    async def _upload(self, push: Push, http: aiohttp.ClientSession) -> Receipt:
        async with http.post(self.config.url, data=self.form(push)) as r:
            receipt = await receipt_of(r, self.config.max_response_bytes)  # HTTP-level failures raise here
        return outcome(receipt)


def outcome(receipt: Receipt) -> Receipt:
    """A 聚水潭 answer → delivered, or Retryable/Permanent naming the ERP's own code and words."""
    try:
        answer: Any = orjson.loads(receipt.body)
    except orjson.JSONDecodeError:
        raise Retryable(f"ERP answered HTTP {receipt.status} with no JSON") from None
    if not isinstance(answer, dict):
        raise Retryable("ERP answered something that is not an object")
    code, msg = answer.get("code"), str(answer.get("msg") or answer.get("message") or "")[:200]
    if code != 0:
        if code in PERMANENT_CODES:
            raise Permanent(f"ERP code {code}: {msg}", body=receipt.body[:200])
        raise Retryable(f"ERP code {code}: {msg}")
    records = ((answer.get("data") or {}).get("datas") if isinstance(answer.get("data"), dict) else None) or []
    refused = [r for r in records if isinstance(r, dict) and r.get("issuccess") is False]
    if refused:
        first = refused[0]
        raise Permanent(f"ERP refused after-sale {first.get('outer_as_id')}: {str(first.get('msg'))[:160]}",
                        body=receipt.body[:200])
    return Receipt(receipt.status, receipt.body[:200])
