"""Structured JSON logs (structlog) with customers' contact data redacted.

Redaction is one processor: values under keys that name contact data are
masked, and phone numbers anywhere in any string are masked too, so a message
that quotes a payload still never prints a number.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from hub.pii import mask_address, mask_email, mask_phone, mask_phones_in

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_PHONE_KEYS = {"phone", "mobile", "tel", "caller", "callee", "receiver_phone", "tel_number"}
_ADDRESS_KEYS = {"address", "addr", "receiver_address"}


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        value = mask_phones_in(value)
        return _EMAIL.sub(lambda m: mask_email(m.group(0)) or "", value)
    if isinstance(value, dict):
        return {k: _redact_field(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def _redact_field(key: Any, value: Any) -> Any:
    k = str(key).lower()
    if k in _PHONE_KEYS and isinstance(value, str):
        return mask_phone(value)
    if k in _ADDRESS_KEYS and isinstance(value, str):
        return mask_address(value)
    return _scrub(value)


def redact_pii(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    return {k: _redact_field(k, v) for k, v in event_dict.items()}


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_pii,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
