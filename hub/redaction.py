"""What the hub says about data it could not handle, without repeating the data.

Quarantine reasons, exception messages and tracebacks end up in a table an
operator reads and in log lines shipped elsewhere, so they never carry a
customer's phone, name or address. A name or an address has no shape a
pattern can find, so the rule is to not repeat values at all:

- :func:`describe` names a value by its shape ("a string of 12 characters", "an
  object"), quoting it only when it looks like a code (``'teleport'``,
  ``'WAIT_SELLER_AGREE'``, ``'12.345'``): codes are what a mapping author
  needs to see, and no code has a name or a phone number in it.
- :func:`scrub_error_text` is for text someone else wrote (an exception's
  message): contact data masked, quoted literals that are not codes and every
  non-ASCII run replaced. Python's and the libraries' own messages are ASCII,
  so what goes is what came from the data.
- :func:`error_summary` and :func:`format_exception` describe an exception by
  its type and where it was raised, and as a traceback whose messages are scrubbed.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path
from typing import Any

from hub.pii import mask_contacts_in

_CODE = re.compile(r"[A-Za-z0-9_.:+-]{1,40}")
_LONG_DIGITS = re.compile(r"\d{5}")
_QUOTED = re.compile(r"'((?:[^'\\\n]|\\.){0,400})'|\"((?:[^\"\\\n]|\\.){0,400})\"")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_ROOT = Path(__file__).resolve().parent.parent  # the project: hub/ and connectors/


def looks_like_code(text: str) -> bool:
    """A platform status, a kind, a number of a few digits: safe to repeat."""
    return bool(_CODE.fullmatch(text)) and not _LONG_DIGITS.search(text)


def describe(value: Any) -> str:
    """A value as a reason may mention it: quoted if it looks like a code, else by shape."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if looks_like_code(text) else f"a number of {len(text)} characters"
    if isinstance(value, str):
        if looks_like_code(value):
            return repr(value)
        return "an empty string" if not value else f"a string of {len(value)} characters"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    return f"a {type(value).__name__}"


def _quoted(m: re.Match[str]) -> str:
    inner = m.group(1) if m.group(1) is not None else m.group(2)
    quote = m.group(0)[0]
    return m.group(0) if looks_like_code(inner) else f"{quote}<{len(inner)} chars>{quote}"


def scrub_error_text(text: str) -> str:
    """An exception message (or a reason) with nothing of the data left in it."""
    text = mask_contacts_in(text)
    text = _QUOTED.sub(_quoted, text)
    return _NON_ASCII.sub("<…>", text)


def _where(tb: Any) -> str | None:
    """``hub/casts.py:77``: the innermost frame in the project's own code."""
    place = None
    for frame in traceback.extract_tb(tb):
        try:
            rel = Path(frame.filename).resolve().relative_to(_ROOT)
        except ValueError:
            continue
        if rel.parts and rel.parts[0] in ("hub", "connectors"):
            place = f"{rel.as_posix()}:{frame.lineno}"
    return place


def error_summary(err: BaseException) -> str:
    """``OverflowError in hub/casts.py:77``: enough to find the bug, nothing of the event."""
    name = type(err).__name__
    orig = getattr(err, "orig", None)  # a database error wraps the driver's
    if isinstance(orig, BaseException):
        name = f"{name} ({type(orig).__name__})"
    where = _where(err.__traceback__)
    return f"{name} in {where}" if where else name


def format_exception(err: BaseException) -> str:
    """A traceback as Python prints it, each exception's message scrubbed."""
    # (exception, the line Python prints after it, before the one it led to)
    chain: list[tuple[BaseException, str | None]] = [(err, None)]
    while len(chain) < 10:
        cur = chain[-1][0]
        if cur.__cause__ is not None:
            nxt, link = cur.__cause__, "The above exception was the direct cause of the following exception:"
        elif cur.__context__ is not None and not cur.__suppress_context__:
            nxt, link = cur.__context__, "During handling of the above exception, another exception occurred:"
        else:
            break
        if any(nxt is e for e, _ in chain):
            break
        chain.append((nxt, link))
    lines: list[str] = []
    for exc, after in reversed(chain):
        if exc.__traceback__ is not None:
            lines.append("Traceback (most recent call last):\n")
            # Source lines are code, but code may quote text too: no contact, no CJK.
            lines.extend(_NON_ASCII.sub("<…>", mask_contacts_in(frame))
                         for frame in traceback.format_list(traceback.extract_tb(exc.__traceback__)))
        name = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
        message = scrub_error_text(str(exc))
        lines.append(f"{name}: {message}\n" if message else f"{name}\n")
        if after is not None:
            lines.append(f"\n{after}\n\n")
    return "".join(lines).rstrip("\n")
