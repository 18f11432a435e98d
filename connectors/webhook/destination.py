"""Signed JSON POST to a URL; the shape every push follows (docs/architecture.md §5)."""

from __future__ import annotations

import aiohttp
from pydantic import ConfigDict, SecretStr, field_validator

from hub import standard_webhooks
from hub.config import DestinationConfig
from hub.delivery import receipt_of
from hub.interfaces import ConnectorSpec, DemoPart, DestinationKind, Push, Receipt


class WebhookDestinationConfig(DestinationConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    secret: SecretStr

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @field_validator("secret")
    @classmethod
    def _whsec(cls, v: SecretStr) -> SecretStr:
        standard_webhooks.decode_secret(v.get_secret_value())
        return v


class WebhookDestination:
    def __init__(self, config: WebhookDestinationConfig):
        self.config = config
        self._key = standard_webhooks.decode_secret(config.secret.get_secret_value())

    async def deliver(self, push: Push, http: aiohttp.ClientSession) -> Receipt:
        headers = standard_webhooks.headers_for(self._key, push.idempotency_key, push.payload)
        async with http.post(self.config.url, data=push.payload, headers=headers) as resp:
            return await receipt_of(resp, self.config.max_response_bytes)


def _demo() -> DemoPart:
    from connectors.webhook.demo import WebhookDemo

    return WebhookDemo()


SPEC = ConnectorSpec(
    name="webhook",
    demo=_demo,
    destinations=(DestinationKind("webhook", WebhookDestinationConfig, factory=WebhookDestination,
                                  summary="generic signed JSON webhook"),),
)
