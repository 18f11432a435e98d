"""A local Aliyun SMS gateway (dysmsapi ``SendSms``): checks the access key,
the RPC signature, the timestamp and that no nonce is used twice, as the
real one does; keeps each message once by its ``OutId`` (the push's
idempotency key), and can have a bad day (:class:`connectors.faults.Faults`)
or throttle (``isv.BUSINESS_LIMIT_CONTROL``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from connectors.faults import Faults
from connectors.notify.aliyun import pop_signature
from connectors.simserver import serve


@dataclass
class SmsSimulator:
    access_key_id: str = "LTAI-hub-test"
    access_key_secret: str = "sms-secret-for-tests"
    faults: Faults = field(default_factory=Faults)
    throttle_next: int = 0                       # answer this many with the platform's flow control
    sent: list[dict[str, Any]] = field(default_factory=list)   # each message once, in order
    copies: dict[str, int] = field(default_factory=dict)        # OutId → requests that carried it
    nonces: set[str] = field(default_factory=set)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/", self._send)
        self._runner, self.port = await serve(app)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _answer(code: str, message: str, **extra: Any) -> web.Response:
        return web.json_response({"Code": code, "Message": message, "RequestId": f"req-{time.time_ns()}",
                                  **extra})

    async def _send(self, request: web.Request) -> web.Response:
        bad_day = await self.faults.before()
        if bad_day is not None:
            return bad_day
        form = {k: str(v) for k, v in (await request.post()).items()}
        if form.get("AccessKeyId") != self.access_key_id:
            return self._answer("InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        if form.get("Signature") != pop_signature(self.access_key_secret, request.method, form):
            return self._answer("SignatureDoesNotMatch", "Specified signature is not matched with our calculation.")
        try:
            sent_at = datetime.strptime(form.get("Timestamp", ""), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            return self._answer("MissingTimestamp", "Timestamp is mandatory for this action.")
        if abs(time.time() - sent_at.timestamp()) > 900:
            return self._answer("InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
        nonce = form.get("SignatureNonce", "")
        if not nonce or nonce in self.nonces:
            return self._answer("SignatureNonceUsed", "Specified signature nonce was used already.")
        self.nonces.add(nonce)
        if self.throttle_next > 0:
            self.throttle_next -= 1
            return self._answer("isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1")
        phone = form.get("PhoneNumbers", "")
        if not (phone.isdigit() and len(phone) == 11 and phone.startswith("1")):
            return self._answer("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        if not form.get("TemplateCode", "").startswith("SMS_"):
            return self._answer("isv.SMS_TEMPLATE_ILLEGAL", "模板不合法")
        out_id = form.get("OutId", "")
        self.copies[out_id] = self.copies.get(out_id, 0) + 1
        if self.copies[out_id] == 1 or not out_id:
            self.sent.append({"phone": phone, "template": form["TemplateCode"], "sign": form.get("SignName"),
                              "params": orjson.loads(form.get("TemplateParam") or "{}"), "out_id": out_id})
        return self._answer("OK", "OK", BizId=f"{len(self.sent):06d}^0")
