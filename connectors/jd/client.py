"""A JD Open Platform (JOS, 京东宙斯) API client: signing, envelopes, error codes.

References (see also docs/platforms.md §2):
- 【开发规范】 http://help.jd.com/jos/question-580.html: gateway
  ``/routerjson``, system parameters (``method``, ``access_token``,
  ``app_key``, ``timestamp``, ``v=2.0``), business parameters as one
  ``360buy_param_json``, and the signature ``upper(md5(secret + sorted
  name+value + secret))`` — our test vector V2, from the JOS dev guide.
- JD's official Python SDK ``jd/api/base.py`` (``jd-sdk``/``seven-jd`` on
  PyPI): the timestamp it sends (``yyyy-MM-dd HH:mm:ss.SSS+0800``) and
  ``json.dumps(app_params, ensure_ascii=False)``.
- Envelopes from real responses: ``{"<method>_responce": {"code": "0", …}}``
  (JD's own spelling) and ``{"error_response": {"code": "19", "zh_desc",
  "en_desc"}}`` with a *string* code.

JD's published error-code table was not found; the codes below that are not
confirmed (12 invalid signature, 19 invalid access_token) are configurable per
source (``error_codes``), and the defaults say where each came from.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.platform_api import GatewayClient
from connectors.signing import md5_wrapped, sorted_concat
from hub.casts import SHANGHAI
from hub.errors import SourceAuthError, SourceRejected, SourceThrottled, SourceTransient
from hub.quota import TokenBucket
from hub.records import utcnow


@dataclass(frozen=True)
class JosErrorCodes:
    # Confirmed by real responses: 12 无效签名, 19 无效access_token. The others
    # follow the TOP-derived numbering JOS shares (app key, timestamp, session
    # expiry) and are overridable.
    auth: Collection[str] = dc_field(default_factory=lambda: {"11", "12", "19", "20", "21", "22"})
    # Call-frequency limits; not confirmed in a JD source: configurable.
    throttle: Collection[str] = dc_field(default_factory=lambda: {"67", "68", "69"})
    # Service unavailable / timeout on JD's side.
    transient: Collection[str] = dc_field(default_factory=lambda: {"1", "66", "91"})


class JdErrorCodesConfig(BaseModel):
    """Which JOS error codes mean what (JD's table is not public: override here)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    auth: list[str] = Field(default_factory=lambda: sorted(JosErrorCodes().auth))
    throttle: list[str] = Field(default_factory=lambda: sorted(JosErrorCodes().throttle))
    transient: list[str] = Field(default_factory=lambda: sorted(JosErrorCodes().transient))


def sign(params: Mapping[str, Any], secret: str) -> str:
    """upper(md5(secret + sorted name+value + secret)); ``360buy_param_json`` takes part."""
    return md5_wrapped(secret, sorted_concat(params))


def jos_timestamp(dt: datetime) -> str:
    """What JD's SDK sends: Beijing time with milliseconds and the zone."""
    local = dt.astimezone(SHANGHAI)
    return local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}+0800"


def param_json(params: Mapping[str, Any]) -> str:
    """``360buy_param_json``: one JSON object, keys sorted, UTF-8 kept as is."""
    return orjson.dumps({k: v for k, v in params.items() if v is not None},
                        option=orjson.OPT_SORT_KEYS).decode()


def response_key(method: str) -> str:
    """``jingdong.asc.query.list`` → ``jingdong_asc_query_list_responce`` (sic)."""
    return method.replace(".", "_") + "_responce"


def classify_error(err: Mapping[str, Any], codes: JosErrorCodes) -> Exception:
    code = str(err.get("code", ""))
    desc = err.get("zh_desc") or err.get("en_desc") or err.get("msg") or ""
    text = f"JOS error {code} {desc}".strip()
    if err.get("en_desc") and err.get("zh_desc"):
        text += f" ({err['en_desc']})"
    if code in codes.throttle:
        return SourceThrottled(text, retry_after=1.0)
    if code in codes.auth:
        return SourceAuthError(text)
    if code in codes.transient:
        return SourceTransient(text)
    return SourceRejected(text)


class JosClient(GatewayClient):
    platform = "JOS"

    def __init__(self, url: str, app_key: str, app_secret: str, access_token: str | None, *,
                 quota: TokenBucket | None = None, timeout: float = 15.0, attempts: int = 3,
                 codes: JosErrorCodes | None = None):
        super().__init__(url, quota=quota, timeout=timeout, attempts=attempts)
        self.app_key = app_key
        self.app_secret = app_secret
        self.access_token = access_token
        self.codes = codes or JosErrorCodes()

    def form(self, method: str, params: Mapping[str, Any], now: datetime | None = None) -> dict[str, str]:
        form = {"method": method, "app_key": self.app_key, "timestamp": jos_timestamp(now or utcnow()),
                "v": "2.0", "360buy_param_json": param_json(params)}
        if self.access_token:
            form["access_token"] = self.access_token
        form["sign"] = sign(form, self.app_secret)
        return form

    def unwrap(self, method: str, doc: dict[str, Any]) -> dict[str, Any]:
        if "error_response" in doc:
            raise classify_error(doc["error_response"], self.codes)
        inner = doc.get(response_key(method))
        if not isinstance(inner, dict):
            raise SourceTransient(f"JOS {method}: no {response_key(method)} in the answer")
        if str(inner.get("code", "0")) != "0":
            raise classify_error(inner, self.codes)
        return inner


class JosAccess(BaseModel):
    """The app's and the seller's JOS credentials and identity: a source and a
    write-back share them."""

    api_url: str = "https://api.jd.com/routerjson"
    app_key: str
    app_secret: SecretStr
    access_token: SecretStr
    bu_id: str | None = None          # the shop (venderId) for multi-shop apps
    operate_pin: str | None = None    # the seller account the calls act as
    error_codes: JdErrorCodesConfig = JdErrorCodesConfig()

    def jos_client(self, quota: TokenBucket, timeout: float, attempts: int = 3) -> JosClient:
        codes = self.error_codes
        return JosClient(self.api_url, self.app_key, self.app_secret.get_secret_value(),
                         self.access_token.get_secret_value(), quota=quota, timeout=timeout,
                         attempts=attempts,
                         codes=JosErrorCodes(set(codes.auth), set(codes.throttle), set(codes.transient)))

    def operator(self) -> dict[str, Any]:
        return {"buId": self.bu_id, "operatePin": self.operate_pin}
