"""WeChat mini-program / 微信小店 message push: URL check, plain and safe mode,
XML and JSON, customer-service messages and after-sale events.

References (docs/platforms.md §3):
- Message push: https://developers.weixin.qq.com/miniprogram/dev/framework/server-ability/message-push.html
  (GET ``signature``/``timestamp``/``nonce``/``echostr``; POST plain or
  ``encrypt_type=aes`` with ``msg_signature``; XML or JSON; answer ``success``
  within 5 s or WeChat retries, three times in all).
- Customer-service messages: .../customer-message/receive.html (``MsgId`` is
  an int in JSON, a string from cloud functions: kept as text).
- 微信小店 ``channels_ec_aftersale_update`` (safe mode + JSON only) and the
  detail API ``/channels/ec/aftersale/getaftersaleorder``; access tokens from
  ``/cgi-bin/token``.

XML goes through defusedxml with DTDs forbidden: no entity expansion, no
external references, whatever the body says. Dedupe: ``MsgId`` for messages,
``FromUserName`` + ``CreateTime`` (+ event and status) for events.
"""

from __future__ import annotations

import time
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
import orjson
import structlog
from defusedxml import DefusedXmlException
from pydantic import ConfigDict, SecretStr, field_validator, model_validator

from connectors.wechat.api import WechatApi
from connectors.wechat.crypto import WxCrypto, aes_key, check_signature
from hub.config import Duration, SourceConfig
from hub.errors import PayloadError, SourceError, VerificationError
from hub.interfaces import ConnectorSpec, InboundEvent, InboundRequest, Reply, SourceKind
from hub.jsonbody import parse_json_object

log = structlog.get_logger("connectors.wechat")

AFTERSALE_EVENT = "channels_ec_aftersale_update"


class WechatSourceConfig(SourceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    app_id: str
    token: SecretStr
    encoding_aes_key: SecretStr | None = None   # needed for safe (and compatible) mode
    safe_mode_only: bool = False                 # 微信小店 pushes are always safe mode
    app_secret: SecretStr | None = None          # for detail lookups through the platform API
    api_url: str = "https://api.weixin.qq.com"
    fetch_details: bool = True
    detail_timeout: Duration = 2.0               # WeChat waits 5 s for our answer in all
    tolerance: Duration = 300.0                  # refuse timestamps further from now (0 = off)

    @field_validator("encoding_aes_key")
    @classmethod
    def _key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            aes_key(v.get_secret_value())
        return v

    @model_validator(mode="after")
    def _safe_needs_key(self) -> WechatSourceConfig:
        if self.safe_mode_only and self.encoding_aes_key is None:
            raise ValueError("safe_mode_only needs encoding_aes_key")
        return self


MAX_XML_DEPTH = 32  # WeChat's messages nest three levels


def xml_to_dict(elem: Element, depth: int = 1) -> Any:
    children = list(elem)
    if not children:
        return (elem.text or "").strip()
    if depth >= MAX_XML_DEPTH:
        raise PayloadError(f"XML nests deeper than {MAX_XML_DEPTH} levels")
    out: dict[str, Any] = {}
    for child in children:
        value = xml_to_dict(child, depth + 1)
        if child.tag in out:  # repeated tags become a list
            prev = out[child.tag]
            out[child.tag] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[child.tag] = value
    return out


def parse_xml(body: bytes) -> dict[str, Any]:
    try:
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as err:
        raise PayloadError(f"XML refused: {type(err).__name__} (DTDs, entities and external "
                           "references are not accepted)") from None
    except SafeET.ParseError as err:
        raise PayloadError(f"body is not well-formed XML: {err}") from None
    parsed = xml_to_dict(root)
    if not isinstance(parsed, dict):
        raise PayloadError("XML body has no fields")
    return parsed


def parse_message(body: bytes) -> tuple[str, dict[str, Any]]:
    if body.lstrip()[:1] == b"{":
        return "json", parse_json_object(body)
    return "xml", parse_xml(body)


def dedupe_of(msg: dict[str, Any]) -> str:
    if msg.get("MsgId") not in (None, ""):
        return f"msg:{msg['MsgId']}"
    status = (msg.get("finder_shop_aftersale_status_update") or {}).get("status", "")
    return f"event:{msg.get('FromUserName', '')}:{msg.get('CreateTime', '')}:{msg.get('Event', '')}:{status}"


class WechatSource:
    def __init__(self, config: WechatSourceConfig):
        self.config = config
        self._token = config.token.get_secret_value()
        self.crypto = (WxCrypto(self._token, config.encoding_aes_key.get_secret_value(), config.app_id)
                       if config.encoding_aes_key else None)
        self.api = (WechatApi(config.api_url, config.app_id, config.app_secret.get_secret_value(),
                              timeout=config.detail_timeout)
                    if config.app_secret and config.fetch_details else None)

    def _fresh(self, timestamp: str) -> None:
        if not self.config.tolerance:
            return
        try:
            ts = int(timestamp)
        except ValueError:
            raise VerificationError("timestamp is missing or not a number") from None
        if abs(time.time() - ts) > self.config.tolerance:
            raise VerificationError(f"timestamp {ts} is more than {self.config.tolerance:.0f}s from now")

    def challenge(self, request: InboundRequest) -> Reply:
        q = request.query
        self._fresh(q.get("timestamp", ""))
        check_signature(q.get("signature"), self._token, q.get("timestamp", ""), q.get("nonce", ""))
        echostr = q.get("echostr")
        if not echostr:
            raise PayloadError("echostr is missing")
        # WeChat wants echostr back as it is: plain text, not JSON.
        return Reply(200, echostr.encode(), "text/plain")

    async def receive(self, request: InboundRequest) -> list[InboundEvent]:
        q = request.query
        ts, nonce = q.get("timestamp", ""), q.get("nonce", "")
        self._fresh(ts)
        fmt, outer = parse_message(request.body)
        encrypted = q.get("encrypt_type") == "aes"
        if encrypted:
            if self.crypto is None:
                raise VerificationError("safe-mode message, but no encoding_aes_key is configured")
            enc = outer.get("Encrypt")
            if not isinstance(enc, str) or not enc:
                raise PayloadError("safe-mode body has no Encrypt")
            # The doc is explicit: in safe mode verify msg_signature, not signature.
            check_signature(q.get("msg_signature"), self._token, ts, nonce, enc, what="msg_signature")
            _, msg = parse_message(self.crypto.decrypt(enc))
        else:
            if self.config.safe_mode_only:
                raise VerificationError("plain-mode message refused: this source takes safe mode only")
            check_signature(q.get("signature"), self._token, ts, nonce)
            msg = outer
        doc = {"message": msg, "detail": await self._detail(msg), "format": fmt,
               "encrypted": encrypted, "dedupe": dedupe_of(msg)}
        return [InboundEvent(body=orjson.dumps(doc).decode(), document=doc)]

    async def _detail(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """The after-sale order behind an id-only event; None if WeChat does not
        answer in time (the event is stored anyway: its status is in the push)."""
        if self.api is None or msg.get("Event") != AFTERSALE_EVENT:
            return None
        info = msg.get("finder_shop_aftersale_status_update") or {}
        order_id = info.get("after_sale_order_id")
        if not order_id:
            return None
        try:
            resp = await self.api.post("/channels/ec/aftersale/getaftersaleorder",
                                       {"after_sale_order_id": str(order_id)})
        except SourceError as err:
            log.warning("after-sale detail not fetched; stored from the push alone",
                        source=self.config.id, after_sale_order_id=str(order_id), error=str(err))
            return None
        detail = resp.get("after_sale_order")
        return detail if isinstance(detail, dict) else None

    def acknowledge(self, stored: int, duplicates: int) -> Reply:
        return Reply(200, b"success", "text/plain")

    async def aclose(self) -> None:
        if self.api is not None:
            await self.api.aclose()


def _demo() -> Any:
    from connectors.wechat.demo import WechatDemo

    return WechatDemo()


SPEC = ConnectorSpec(
    name="wechat",
    demo=_demo,
    sources=(SourceKind("wechat", WechatSourceConfig, webhook=WechatSource,
                        summary="WeChat mini-program / 微信小店 message push (plain or safe mode)"),),
)
