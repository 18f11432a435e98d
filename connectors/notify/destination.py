"""The ``notify`` destination: a notice to the customer at the status changes
the sync rules send it, by SMS (Aliyun ``SendSms``) or e-mail (SMTP) — one
destination per way (``via``), so each notice is sent once per change per way
however the other fares.

What to say comes from ``mappings/notify.yaml``: per status, an SMS template
code with its parameters and an e-mail subject and body (zh-CN), filled from
the ticket (``{ticket}``, ``{order}``, ``{refund}``, ``{name}`` — only plain
names, nothing else a template could reach). A status with no template, or
a customer with no number (or address), is not notified: the push is
settled with a receipt saying so. The destination must have ``pii: true``
(it needs the contact in clear); the number never appears in a receipt, an
error or a log line.
"""

from __future__ import annotations

import string
from typing import Any, Literal

import aiohttp
import orjson
from pydantic import ConfigDict, SecretStr, model_validator

from connectors.notify import aliyun
from connectors.notify.email import Smtp, message, send
from hub.config import DestinationConfig
from hub.errors import Permanent, Retryable
from hub.interfaces import Push, Receipt


class NotifyDestinationConfig(DestinationConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    via: Literal["sms", "email"]
    # sms: Aliyun SMS
    url: str | None = "https://dysmsapi.aliyuncs.com/"
    access_key_id: str | None = None
    access_key_secret: SecretStr | None = None
    sign_name: str | None = None          # the approved 签名 shown in the message
    region: str = "cn-hangzhou"
    # email: SMTP
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    sender: str | None = None             # From:
    starttls: bool = True

    @model_validator(mode="after")
    def _needs(self) -> NotifyDestinationConfig:
        if not self.pii:
            raise ValueError("a notify destination needs pii: true (it sends to the customer's own number)")
        need = (("url", "access_key_id", "access_key_secret", "sign_name") if self.via == "sms"
                else ("smtp_host", "sender"))
        missing = [k for k in need if getattr(self, k) in (None, "")]
        if missing:
            raise ValueError(f"via {self.via} needs {', '.join(missing)}")
        return self


class _Plain(string.Formatter):
    """``{name}`` from the given values and nothing more: no attribute, index or format spec."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        if not field_name.isidentifier():
            raise KeyError(field_name)
        return self.get_value(field_name, args, kwargs), field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        return "" if value is None else str(value)


def fill(template: str, values: dict[str, Any]) -> str:
    try:
        return _Plain().vformat(template, (), values)
    except (KeyError, ValueError, IndexError) as err:
        raise Permanent(f"template names an unknown or unsafe field: {err}") from None


class NotifyDestination:
    def __init__(self, config: NotifyDestinationConfig):
        self.config = config
        c = config
        self._smtp = Smtp(c.smtp_host or "", c.smtp_port, c.sender or "", c.smtp_username,
                          c.smtp_password.get_secret_value() if c.smtp_password else None, c.starttls,
                          float(c.timeout)) if c.via == "email" else None

    async def deliver(self, push: Push, http: aiohttp.ClientSession) -> Receipt:
        notice = orjson.loads(push.payload)
        if self.config.via == "sms":
            return await self._sms(notice, push, http)
        return await self._email(notice, push)

    async def _sms(self, notice: dict[str, Any], push: Push, http: aiohttp.ClientSession) -> Receipt:
        sms = notice.get("sms") or {}
        if not sms.get("template"):
            return Receipt(204, f"no SMS for status {notice.get('status')}")
        if not notice.get("phone"):
            return Receipt(204, "the customer has no phone number: not sent")
        c = self.config
        assert c.access_key_id and c.access_key_secret and c.sign_name and c.url
        form = aliyun.send_sms_params(
            c.access_key_id, c.access_key_secret.get_secret_value(), phone=str(notice["phone"]),
            sign_name=c.sign_name, template_code=str(sms["template"]),
            template_params={k: "" if v is None else str(v) for k, v in (sms.get("params") or {}).items()},
            out_id=push.idempotency_key[:256], region=c.region)
        try:
            async with http.post(c.url, data=form) as resp:
                body = (await resp.content.read(65536)).decode("utf-8", errors="replace")
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as err:
            raise Retryable(f"SMS provider unreachable: {type(err).__name__}") from None
        biz_id = aliyun.outcome(status, body)
        return Receipt(200, f"SMS sent (BizId {biz_id})")

    async def _email(self, notice: dict[str, Any], push: Push) -> Receipt:
        mail = notice.get("email_message") or {}
        if not mail.get("subject") or not mail.get("body"):
            return Receipt(204, f"no e-mail for status {notice.get('status')}")
        if not notice.get("email"):
            return Receipt(204, "the customer has no e-mail address: not sent")
        values = notice.get("params") or {}
        assert self._smtp is not None
        m = message(self._smtp, str(notice["email"]), fill(str(mail["subject"]), values),
                    fill(str(mail["body"]), values), push.idempotency_key)
        await send(self._smtp, m)
        return Receipt(250, "e-mail accepted by the mail server")
