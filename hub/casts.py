"""Casts a mapping may apply to a value (``cast: yuan``), each of bounded cost.

A platform (or an attacker with a valid signature) controls every value, so a
cast checks the *shape* of its input before any arithmetic: digit counts and
plain decimal notation before a ``Decimal`` is made (``int(Decimal("1e999999"))``
holds the GIL for tens of seconds), finite numbers only, times inside
:data:`EARLIEST`..:data:`LATEST` before any time-zone arithmetic (year 1 at
+08:00 overflows). A value that does not fit raises :class:`CastError`, whose
message describes the value without repeating it unless it looks like a code
(:func:`hub.redaction.describe`): quarantine reasons must not carry PII.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hub.redaction import describe

SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")  # no DST since 1991

# Amounts live in integer columns (PostgreSQL int4): 21,474,836.47 yuan is far
# beyond any after-sales amount, and a value past it would fail in the database.
MAX_FEN = 2_147_483_647
# Any time an after-sales event carries: the platforms' own lifetimes, with room.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
MAX_TEXT = 64  # characters of a number or time worth parsing at all

# ASCII digits only: int() would take any script's (٥, ５) and so would \d.
_DECIMAL = re.compile(r"(\d*)(?:\.(\d*))?", re.ASCII)
_FEN = re.compile(r"\d{1,10}(?:\.0*)?", re.ASCII)
_INT = re.compile(r"[+-]?\d{1,18}", re.ASCII)
_SECONDS = re.compile(r"\d{1,13}(?:\.\d{0,9})?", re.ASCII)


class CastError(ValueError):
    pass


def _number_text(v: Any, what: str) -> str:
    """A number or numeric string as plain text, or CastError.

    Floats are written with ``repr`` (shortest round-trip form), so 59.9 stays
    "59.9"; exponents and non-finite values never reach a pattern that accepts them.
    """
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise CastError(f"{describe(v)} is not {what}")
    if isinstance(v, float):
        if not math.isfinite(v):
            raise CastError(f"{describe(v)} is not {what}")
        text = repr(v)
    elif isinstance(v, int):
        if abs(v) >= 10**20:  # int → str is quadratic in the digits; stop long before
            raise CastError(f"{describe(v)} is out of range for {what}")
        text = str(v)
    else:
        if len(v) > MAX_TEXT:
            raise CastError(f"{describe(v)} is not {what}")
        text = v.strip()
    return text


def _to_fen(v: Any) -> int:
    """Yuan (``"59.78"``, ``59.78``, ``59``) → fen, exactly."""
    text = _number_text(v, "an amount in yuan")
    if text.startswith("-"):
        raise CastError(f"{describe(v)} is a negative amount")
    m = _DECIMAL.fullmatch(text.lstrip("+"))
    if m is None or not (m.group(1) or m.group(2)):
        raise CastError(f"{describe(v)} is not an amount in yuan (digits, at most 2 decimals)")
    whole, frac = m.group(1), m.group(2) or ""
    if len(frac) > 2:
        raise CastError(f"{describe(v)} has more than 2 decimals")
    if len(whole) > 8:
        raise CastError(f"{describe(v)} is over the largest amount ({MAX_FEN / 100:.2f} yuan)")
    fen = int(whole or "0") * 100 + int((frac + "00")[:2])  # at most 10 digits: exact
    if fen > MAX_FEN:
        raise CastError(f"{describe(v)} is over the largest amount ({MAX_FEN / 100:.2f} yuan)")
    return fen


def _fen(v: Any) -> int:
    text = _number_text(v, "an amount in fen")
    if text.startswith("-"):
        raise CastError(f"{describe(v)} is a negative amount")
    if not _FEN.fullmatch(text.lstrip("+")):
        raise CastError(f"{describe(v)} is not a whole number of fen")
    fen = int(text.lstrip("+").split(".")[0])
    if fen > MAX_FEN:
        raise CastError(f"{describe(v)} is over the largest amount ({MAX_FEN} fen)")
    return fen


def _int(v: Any) -> int:
    text = _number_text(v, "an integer")
    if not _INT.fullmatch(text):
        raise CastError(f"{describe(v)} is not an integer")
    return int(text)


def _in_range(dt: datetime, v: Any) -> datetime:
    # Compared before any conversion: astimezone() of year 1 at +08:00 overflows.
    if not EARLIEST.year <= dt.year < LATEST.year:
        raise CastError(f"{describe(v)} is outside {EARLIEST.year}..{LATEST.year - 1}")
    aware = dt if dt.tzinfo is not None else dt.replace(tzinfo=SHANGHAI)
    out = aware.astimezone(UTC)
    if not EARLIEST <= out < LATEST:
        raise CastError(f"{describe(v)} is outside {EARLIEST.year}..{LATEST.year - 1}")
    return out


def _time_text(v: Any, what: str) -> str:
    if not isinstance(v, str) or len(v) > MAX_TEXT:
        raise CastError(f"{describe(v)} is not {what}")
    return v.strip()


def _iso_datetime(v: Any) -> datetime:
    """ISO 8601; a time without a zone is platform local time (Asia/Shanghai)."""
    text = _time_text(v, "an ISO 8601 time")
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CastError(f"{describe(v)} is not an ISO 8601 time") from None
    return _in_range(dt, v)


def _local_datetime(v: Any) -> datetime:
    """``yyyy-MM-dd HH:mm:ss`` in Asia/Shanghai (Taobao, JD) → UTC."""
    text = _time_text(v, "a yyyy-MM-dd HH:mm:ss time")
    try:
        dt = datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise CastError(f"{describe(v)} is not a yyyy-MM-dd HH:mm:ss time") from None
    return _in_range(dt, v)


def _epoch(v: Any, scale: float, what: str) -> datetime:
    text = _number_text(v, what)
    if not _SECONDS.fullmatch(text):
        raise CastError(f"{describe(v)} is not {what}")
    seconds = float(text) / scale
    if not EARLIEST.timestamp() <= seconds < LATEST.timestamp():
        raise CastError(f"{describe(v)} is outside {EARLIEST.year}..{LATEST.year - 1}")
    return datetime.fromtimestamp(seconds, UTC)


def _unix(v: Any) -> datetime:
    return _epoch(v, 1, "a unix time in seconds")


def _unix_ms(v: Any) -> datetime:
    return _epoch(v, 1000, "a unix time in milliseconds")


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (str, int)) and not isinstance(v, bool):
        s = str(v).strip().lower() if isinstance(v, str) and len(v) <= MAX_TEXT else str(v)
        if s in ("true", "1", "yes", "y"):
            return True
        if s in ("false", "0", "no", "n"):
            return False
    raise CastError(f"{describe(v)} is not a boolean")


def _text(v: Any) -> str:
    """Text from text or a number; an object or a list is not text."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int) and abs(v) < 10**20 or isinstance(v, float) and math.isfinite(v):
        return str(v)
    raise CastError(f"{describe(v)} is not text")


def _fen_to_yuan(v: Any) -> str:
    fen = _fen(v)
    return f"{fen // 100}.{fen % 100:02d}"


CASTS: dict[str, Callable[[Any], Any]] = {
    "str": _text,
    "strip": lambda v: _text(v).strip(),
    "lower": lambda v: _text(v).strip().lower(),
    "int": _int,
    "bool": _bool,
    "yuan": _to_fen,          # yuan in → fen out
    "fen": _fen,              # already fen; checked to be whole
    "fen_to_yuan": _fen_to_yuan,
    "datetime": _iso_datetime,
    "local_datetime": _local_datetime,
    "unix": _unix,
    "unix_ms": _unix_ms,
}
