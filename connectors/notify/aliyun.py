"""Aliyun SMS ``SendSms`` (dysmsapi, RPC style, API version 2017-05-25).

The request is signed the Alibaba Cloud RPC way (signature version 1.0):
every parameter but ``Signature``, percent-encoded (RFC 3986: space as
``%20``, ``*`` as ``%2A``, ``~`` kept), sorted by name and joined as
``k=v&…``; the string to sign is ``METHOD&%2F&`` + that query encoded once
more; ``Signature = base64(HMAC-SHA1(AccessKeySecret + "&", string))``. The
answer is JSON: ``Code == "OK"`` is sent; throttling
(``isv.BUSINESS_LIMIT_CONTROL``) and the platform's own trouble are
retried, a number or template the platform refuses is permanent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from hub.errors import Permanent, Retryable
from hub.pii import mask_contacts_in

VERSION = "2017-05-25"
# Refusals of the message itself: sending it again cannot help.
PERMANENT = ("isv.MOBILE_NUMBER_ILLEGAL", "isv.TEMPLATE_MISSING_PARAMETERS", "isv.INVALID_PARAMETERS",
             "isv.SMS_TEMPLATE_ILLEGAL", "isv.SMS_SIGNATURE_ILLEGAL", "isv.PARAM_LENGTH_LIMIT",
             "isv.TEMPLATE_PARAMS_ILLEGAL", "isv.BLACK_KEY_CONTROL_LIMIT", "isv.DENY_IP_RANGE")


def percent_encode(text: str) -> str:
    return urllib.parse.quote(text, safe="~")


def pop_signature(secret: str, method: str, params: Mapping[str, str]) -> str:
    query = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items())
                     if k != "Signature")
    to_sign = f"{method}&{percent_encode('/')}&{percent_encode(query)}"
    return base64.b64encode(hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()).decode()


def send_sms_params(access_key_id: str, secret: str, *, phone: str, sign_name: str, template_code: str,
                    template_params: Mapping[str, Any], out_id: str, region: str = "cn-hangzhou",
                    now: float | None = None, nonce: str | None = None) -> dict[str, str]:
    """The signed form of one SendSms call (POST)."""
    params = {
        "AccessKeyId": access_key_id, "Action": "SendSms", "Format": "JSON", "RegionId": region,
        "SignatureMethod": "HMAC-SHA1", "SignatureNonce": nonce or str(uuid.uuid4()), "SignatureVersion": "1.0",
        "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), "Version": VERSION,
        "PhoneNumbers": phone, "SignName": sign_name, "TemplateCode": template_code,
        "TemplateParam": orjson.dumps(dict(template_params)).decode(), "OutId": out_id,
    }
    params["Signature"] = pop_signature(secret, "POST", params)
    return params


def outcome(status: int, body: str) -> str:
    """The answer → the BizId of the message sent, or Retryable/Permanent (numbers masked)."""
    if status >= 500 or status == 429:
        raise Retryable(f"SMS provider answered HTTP {status}")
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Retryable(f"SMS provider answered HTTP {status} with no JSON") from None
    code = str(answer.get("Code")) if isinstance(answer, dict) else "?"
    message = mask_contacts_in(str(answer.get("Message", "")))[:160] if isinstance(answer, dict) else ""
    if code == "OK":
        return str(answer.get("BizId") or "")
    if code in PERMANENT:
        raise Permanent(f"SMS refused: {code} {message}", body=f"{code} {message}")
    raise Retryable(f"SMS not sent: {code} {message}")
