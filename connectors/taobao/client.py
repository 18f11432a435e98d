"""A Taobao Open Platform (TOP) API client: signing, envelopes, error codes.

References (see also docs/platforms.md §1):
- "API调用方法详解", open.taobao.com docId=101617 (mirrors at
  api.1688.com/doc2/detail.htm?articleId=101617 and open.alitrip.com):
  gateway, common parameters, the signing algorithm and its worked example
  (our test vector V1).
- The official Java SDK's ``TaobaoUtils.signTopRequest`` (empty values are
  not signed) and the classic Python SDK ``top/api/base.py``.
- Error codes: the old official 错误码 page (codes below 100), and
  ``sempr/taobaopy`` for the isp.* sub-codes worth retrying.

A call is a form POST of the common parameters (``method``, ``app_key``,
``session``, ``timestamp`` in Beijing time, ``v=2.0``, ``format=json``,
``sign_method``) plus the API's own, signed with the app secret. The answer
is ``{"<method>_response": {...}}`` or ``{"error_response": {code, msg,
sub_code, sub_msg}}``, sorted here into the hub's source errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, SecretStr

from connectors.platform_api import GatewayClient
from connectors.signing import hmac_hex, md5_wrapped, sorted_concat
from connectors.window_poll import platform_time
from hub.errors import SourceAuthError, SourceRejected, SourceThrottled, SourceTransient
from hub.quota import TokenBucket
from hub.records import utcnow

SIGN_METHODS = ("md5", "hmac", "hmac-sha256")

# Codes below 100 are the platform's own (docs/platforms.md §1.3).
THROTTLE_CODES = {4, 5, 6, 7, 8}           # user/session/partner/app call limits, frequency
AUTH_CODES = {11, 12, 13, 24, 25, 26, 27, 28, 29}  # permissions, signature, session, app key
TRANSIENT_CODES = {3, 10}                  # upload failed, service currently unavailable
THROTTLE_SUB_CODES = ("accesscontrol.limited-by",)
AUTH_SUB_CODES = ("invalid-sessionkey", "session-expired", "invalid-session", "sessionkey-not-exist")
_BAN = re.compile(r"(\d+)\s*more\s*seconds?", re.IGNORECASE)


def sign_string(params: Mapping[str, Any]) -> str:
    """Sorted name+value pairs, no separators; ``sign`` and empty values left out."""
    return sorted_concat(params)


def sign(params: Mapping[str, Any], secret: str, method: str = "md5") -> str:
    """The TOP signature of ``params``: upper-case hex (md5/hmac 32, hmac-sha256 64 chars)."""
    text = sorted_concat(params)
    if method == "md5":
        return md5_wrapped(secret, text)
    if method == "hmac":
        return hmac_hex(secret, text, "md5")
    if method == "hmac-sha256":
        return hmac_hex(secret, text, "sha256")
    raise ValueError(f"unknown sign_method {method!r}; expected one of {', '.join(SIGN_METHODS)}")


def response_key(method: str) -> str:
    """``taobao.refunds.receive.get`` → ``refunds_receive_get_response``."""
    name = method[len("taobao."):] if method.startswith("taobao.") else method
    return name.replace(".", "_") + "_response"


def classify_error(err: Mapping[str, Any]) -> Exception:
    """An ``error_response`` → the hub's source error, carrying the platform's words."""
    code = int(err.get("code") or 0)
    sub_code = str(err.get("sub_code") or "")
    text = f"TOP error {code} {err.get('msg', '')}".strip()
    if sub_code or err.get("sub_msg"):
        text += f" ({sub_code}: {err.get('sub_msg', '')})"
    if code in THROTTLE_CODES or sub_code.startswith(THROTTLE_SUB_CODES):
        m = _BAN.search(f"{err.get('msg', '')} {err.get('sub_msg', '')}")
        return SourceThrottled(text, retry_after=float(m.group(1)) if m else 1.0)
    if code in AUTH_CODES or any(s in sub_code for s in AUTH_SUB_CODES):
        return SourceAuthError(text)
    if code in TRANSIENT_CODES or sub_code.startswith("isp."):
        return SourceTransient(text)
    return SourceRejected(text)


class TopClient(GatewayClient):
    platform = "TOP"

    def __init__(self, url: str, app_key: str, app_secret: str, session: str | None, *,
                 sign_method: str = "hmac-sha256", quota: TokenBucket | None = None,
                 timeout: float = 15.0, attempts: int = 3):
        if sign_method not in SIGN_METHODS:
            raise ValueError(f"unknown sign_method {sign_method!r}")
        super().__init__(url, quota=quota, timeout=timeout, attempts=attempts)
        self.app_key = app_key
        self.app_secret = app_secret
        self.session = session
        self.sign_method = sign_method

    def form(self, method: str, params: Mapping[str, Any], now: datetime | None = None) -> dict[str, str]:
        form: dict[str, str] = {
            "method": method, "app_key": self.app_key, "timestamp": platform_time(now or utcnow()),
            "v": "2.0", "format": "json", "sign_method": self.sign_method,
        }
        if self.session:
            form["session"] = self.session
        for k, v in params.items():
            if v is None:
                continue
            form[k] = ("true" if v else "false") if isinstance(v, bool) else str(v)
        form["sign"] = sign(form, self.app_secret, self.sign_method)
        return form

    def unwrap(self, method: str, doc: dict[str, Any]) -> dict[str, Any]:
        if "error_response" in doc:
            raise classify_error(doc["error_response"])
        inner = doc.get(response_key(method))
        if not isinstance(inner, dict):
            raise SourceTransient(f"TOP {method}: no {response_key(method)} in the answer")
        return inner


class TopAccess(BaseModel):
    """The app's and the seller's TOP credentials: a source and a write-back share them."""

    api_url: str = "https://gw.api.taobao.com/router/rest"
    app_key: str
    app_secret: SecretStr
    session: SecretStr
    sign_method: Literal["md5", "hmac", "hmac-sha256"] = "hmac-sha256"

    def top_client(self, quota: TokenBucket, timeout: float, attempts: int = 3) -> TopClient:
        return TopClient(self.api_url, self.app_key, self.app_secret.get_secret_value(),
                         self.session.get_secret_value(), sign_method=self.sign_method, quota=quota,
                         timeout=timeout, attempts=attempts)
