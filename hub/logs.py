"""Structured JSON logs (structlog) with customers' contact data redacted.

Every line the process writes goes through the same processors, the hub's
own (structlog) and the libraries' (aiohttp, asyncio, APScheduler: stdlib
logging, routed here):

- :func:`redact_pii`: values under keys that name contact data are masked,
  and phone numbers and e-mail addresses in any string;
- :func:`format_exc_info`: a traceback whose exception messages are scrubbed
  (:func:`hub.redaction.format_exception`: a message quoting a name or an
  address loses it);
- :class:`RepeatLimiter`: the same message more than ``limit`` times in a
  window is counted instead of written, so one broken upstream cannot fill
  the disk with copies of one line.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from hub.pii import mask_address, mask_contacts_in, mask_email, mask_name, mask_phone
from hub.redaction import format_exception, scrub_error_text

_PHONE_KEYS = {"phone", "mobile", "tel", "caller", "callee", "receiver_phone", "receiver_mobile",
               "tel_number"}
_ADDRESS_KEYS = {"address", "addr", "receiver_address"}
_NAME_KEYS = {"name", "display_name", "receiver_name", "buyer_name"}
_EMAIL_KEYS = {"email", "e-mail", "mail"}
# Keys holding text someone else wrote about a failure (``exception`` is
# scrubbed as it is formatted, frame by frame).
_ERROR_KEYS = {"error", "reason"}


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return mask_contacts_in(value)
    if depth > 8:
        return "<nested>"
    if isinstance(value, dict):
        return {k: _redact_field(k, v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, depth + 1) for v in value]
    if isinstance(value, BaseException):
        return scrub_error_text(f"{type(value).__name__}: {value}")
    return value


def _redact_field(key: Any, value: Any, depth: int = 0) -> Any:
    k = str(key).lower()
    if isinstance(value, str):
        if k in _PHONE_KEYS:
            return mask_phone(value)
        if k in _ADDRESS_KEYS:
            return mask_address(value)
        if k in _NAME_KEYS:
            return mask_name(value)
        if k in _EMAIL_KEYS:
            return mask_email(value)
        if k in _ERROR_KEYS:
            return scrub_error_text(value)
    return _scrub(value, depth)


def redact_pii(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    return {k: _redact_field(k, v) for k, v in event_dict.items()}


def format_exc_info(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``exc_info`` → ``exception``: the traceback, messages scrubbed."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info:
        if exc_info is True:
            exc_info = sys.exc_info()
        err = exc_info if isinstance(exc_info, BaseException) else (
            exc_info[1] if isinstance(exc_info, tuple) else None)
        if err is not None:
            event_dict["exception"] = format_exception(err)
    return event_dict


class RepeatLimiter:
    """Writes at most ``limit`` lines per (level, message) in each ``window``
    seconds; the next line written after a quiet stretch says how many were
    left out (``suppressed``). A structlog processor, and a logging filter
    for the libraries' records."""

    def __init__(self, limit: int = 20, window: float = 60.0, clock: Any = time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._seen: dict[tuple[str, str], list[float]] = {}  # key → [window start, count, dropped]
        self._lock = threading.Lock()  # stdlib records arrive from other threads too

    def allow(self, level: str, message: str) -> int | None:
        """None: leave this line out; else how many like it were left out before it."""
        if self.limit <= 0:
            return 0
        key = (level, message[:200])
        now = self.clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is None or now - entry[0] >= self.window:
                if len(self._seen) > 10_000:  # many distinct messages: forget old windows
                    self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window}
                self._seen[key] = [now, 1, 0]
                return int(entry[2]) if entry is not None else 0
            entry[1] += 1
            if entry[1] > self.limit:
                entry[2] += 1
                return None
            return 0

    def __call__(self, _logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        dropped = self.allow(method, str(event_dict.get("event", "")))
        if dropped is None:
            raise structlog.DropEvent
        if dropped:
            event_dict["suppressed"] = dropped
        return event_dict

    def filter(self, record: logging.LogRecord) -> bool:
        dropped = self.allow(record.levelname.lower(), str(record.msg))
        if dropped:
            record.suppressed = dropped
        return dropped is not None


def _suppressed(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    record = event_dict.get("_record")
    if record is not None and getattr(record, "suppressed", None):
        event_dict["suppressed"] = record.suppressed
    return event_dict


_COMMON: list[Any] = [structlog.processors.TimeStamper(fmt="iso", utc=True), format_exc_info, redact_pii]


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None, *,
              repeat_limit: int = 20, repeat_window: float = 60.0) -> None:
    renderer: Any = (structlog.processors.JSONRenderer(ensure_ascii=False) if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=False))
    out = stream or sys.stderr
    limiter = RepeatLimiter(repeat_limit, repeat_window)
    numeric = getattr(logging, level.upper())
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                    limiter, *_COMMON, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # The libraries' own lines (aiohttp, asyncio, APScheduler) take the same path.
    handler = logging.StreamHandler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.stdlib.add_log_level,
                           _suppressed, *_COMMON],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_hub", False)]:
        root.removeHandler(old)
    handler.addFilter(limiter)
    handler._hub = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
