"""Website source: verify the Standard Webhooks signature, keep the message."""

from __future__ import annotations

from pydantic import ConfigDict, Field, SecretStr, field_validator

from hub import standard_webhooks
from hub.config import Duration, SourceConfig
from hub.interfaces import ConnectorSpec, DemoPart, InboundEvent, InboundRequest, Reply, SourceKind
from hub.jsonbody import parse_json_object


class WebsiteSourceConfig(SourceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: SecretStr
    # Old secrets still accepted during a rotation.
    previous_secrets: list[SecretStr] = Field(default_factory=list)
    tolerance: Duration = standard_webhooks.DEFAULT_TOLERANCE

    @field_validator("secret")
    @classmethod
    def _whsec(cls, v: SecretStr) -> SecretStr:
        standard_webhooks.decode_secret(v.get_secret_value())
        return v


_ACCEPTED = Reply(200, b'{"status":"accepted"}')
_DUPLICATE = Reply(200, b'{"status":"duplicate"}')


class WebsiteSource:
    def __init__(self, config: WebsiteSourceConfig):
        self.config = config
        self._keys = [standard_webhooks.decode_secret(s.get_secret_value())
                      for s in [config.secret, *config.previous_secrets]]
        self._tolerance = int(config.tolerance)

    def receive(self, request: InboundRequest) -> list[InboundEvent]:
        standard_webhooks.verify(self._keys, request.headers, request.body, tolerance=self._tolerance)
        doc = parse_json_object(request.body)
        headers = request.headers
        # verify() has just required both headers.
        kept = {"webhook-id": headers["webhook-id"], "webhook-timestamp": headers["webhook-timestamp"]}
        return [InboundEvent(body=request.body, document=doc, headers=kept)]

    def acknowledge(self, stored: int, duplicates: int) -> Reply:
        return _DUPLICATE if duplicates and not stored else _ACCEPTED


def _demo() -> DemoPart:
    from connectors.website.demo import WebsiteDemo

    return WebsiteDemo()


SPEC = ConnectorSpec(
    name="website",
    demo=_demo,
    sources=(SourceKind("website", WebsiteSourceConfig, webhook=WebsiteSource,
                        summary="merchant website, Standard Webhooks"),),
)
