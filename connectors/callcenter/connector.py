"""Call-center source: call detail records (CDR) pushed after each call.

Default format: Tencent Cloud Contact Center's CDR push (docs/platforms.md
§4; https://cloud.tencent.com/document/product/679/67257): ``POST
{url}?action=cdr&version=1`` with JSON ``SessionId``, ``Caller``, ``Callee``,
``Direction`` (0 inbound, 1 outbound), ``StartTimestamp`` /
``AcceptTimestamp`` / ``EndedTimestamp`` (unix s), ``Duration``,
``SeatUser``, ``IVRKeyPressed`` / ``IVRKeyPressedEx``, ``HungUpSide``,
``EndStatusString``, ``RecordId``; recordings follow as ``action=record``.
The answer is ``{"ErrCode":0}`` (anything else makes TCCC retry, three times).

Authentication is the vendor's push option HTTP Basic (``username`` /
``password``), or — for vendors that sign — an HMAC-SHA256 of the body in a
header (``signature_secret``, ``signature_header``). Retries carry the same
``X-TCCC-PUSH-UUID``; the dedupe key is the session id and action.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any, Literal

import orjson
from pydantic import ConfigDict, SecretStr, model_validator

from connectors.signing import same_signature
from hub.config import SourceConfig
from hub.errors import PayloadError, VerificationError
from hub.interfaces import ConnectorSpec, InboundEvent, InboundRequest, Reply, SourceKind
from hub.jsonbody import parse_json_object

KEPT_HEADERS = ("x-tccc-push-uuid",)
ACTIONS = ("cdr", "record")


class CallcenterSourceConfig(SourceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["tccc"] = "tccc"
    username: str | None = None
    password: SecretStr | None = None
    signature_secret: SecretStr | None = None
    signature_header: str = "X-Signature"

    @model_validator(mode="after")
    def _some_auth(self) -> CallcenterSourceConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together (HTTP Basic)")
        if self.password is None and self.signature_secret is None:
            raise ValueError("needs username/password (HTTP Basic) or signature_secret: "
                             "unauthenticated pushes are refused")
        return self


class CallcenterSource:
    def __init__(self, config: CallcenterSourceConfig):
        self.config = config
        self._basic = (f"{config.username}:{config.password.get_secret_value()}".encode()
                       if config.password is not None else None)
        self._secret = config.signature_secret.get_secret_value().encode() if config.signature_secret else None

    def _authenticate(self, request: InboundRequest) -> None:
        if self._basic is not None:
            header = request.headers.get("authorization", "")
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic" or not value:
                raise VerificationError("HTTP Basic credentials are missing")
            try:
                given = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise VerificationError("HTTP Basic credentials are not base64") from None
            if not hmac.compare_digest(given, self._basic):
                raise VerificationError("HTTP Basic credentials do not match")
        if self._secret is not None:
            given_sig = request.headers.get(self.config.signature_header, "")
            if not given_sig:
                raise VerificationError(f"{self.config.signature_header} is missing")
            expected = hmac.new(self._secret, request.body, hashlib.sha256).hexdigest()
            if not same_signature(given_sig.lower(), expected):
                raise VerificationError(f"{self.config.signature_header} does not match the body")

    def receive(self, request: InboundRequest) -> list[InboundEvent]:
        self._authenticate(request)
        action = request.query.get("action", "cdr")
        if action not in ACTIONS:
            raise PayloadError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
        record = parse_json_object(request.body)
        if action == "cdr" and not record.get("SessionId"):
            raise PayloadError("CDR has no SessionId")
        doc: dict[str, Any] = {"action": action, "cdr" if action == "cdr" else "record": record}
        headers = {h: request.headers[h] for h in KEPT_HEADERS if h in request.headers}
        return [InboundEvent(body=orjson.dumps(doc).decode(), document=doc, headers=headers)]

    def acknowledge(self, stored: int, duplicates: int) -> Reply:
        return Reply(200, b'{"ErrCode":0}')


def _demo() -> Any:
    from connectors.callcenter.demo import CallcenterDemo

    return CallcenterDemo()


SPEC = ConnectorSpec(
    name="callcenter",
    demo=_demo,
    sources=(SourceKind("callcenter", CallcenterSourceConfig, webhook=CallcenterSource,
                        summary="400 line call records (Tencent Cloud Contact Center CDR push)"),),
)
