"""What one raw event says in the standard model's terms, and the shape it must have.

A mapping reads whatever the platform sent; before any of it reaches the
database, :func:`section_checker` holds each field to its kind — text is text, an
amount is whole fen in range, a time is an aware datetime in range, items are
a bounded list of flat objects, a code is one of its values — so a wrong
type is a quarantine with a reason, never a database error that rolls back a
whole batch. Ids that go into unique indexes are bounded (a PostgreSQL btree
refuses rows over ~2.7 KB). Pure; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hub.casts import EARLIEST, LATEST, MAX_FEN
from hub.errors import Quarantine
from hub.lifecycle import PRIORITIES, STATUSES, TYPES
from hub.redaction import describe

MAX_ID = 128          # characters of an external id (platform ids are under 64)
MAX_IDENTITY = 256    # characters of an identity value
MAX_ITEMS = 500       # lines of one order or request
MAX_DEPTH = 64        # nesting of a body (real payloads stay under 10)

# Field → kind. A kind is "text", "id", "amount", "time", "items", "flag", "json",
# or a tuple of the codes allowed.
TICKET_FIELDS: dict[str, Any] = {
    "external_id": "id", "type": TYPES, "status": STATUSES, "reason_code": "text",
    "reason_text": "text", "description": "text", "priority": PRIORITIES, "refund_amount": "amount",
    "items": "items", "source_updated_at": "time", "created_at": "time", "queue": "text",
    "return_carrier": "text", "return_waybill": "id",
}
ORDER_FIELDS: dict[str, Any] = {
    "external_id": "id", "status": "text", "paid_amount": "amount", "items": "items",
    "placed_at": "time", "pay_reference": "id",
    # any_channel: the number names an order of any channel (a caller keying
    # in a Taobao order number), not one of this source's own.
    "match": ("own_channel", "any_channel"),
}
CUSTOMER_FIELDS: dict[str, Any] = {"display_name": "text", "phone": "text", "address": "text",
                                   "email": "text"}
IDENTITY_KINDS = ("taobao_open_uid", "taobao_nick", "jd_pin", "wechat_openid", "wechat_unionid",
                  "phone", "email", "site_user")
REQUIRED_TICKET = ("external_id", "type", "status")
# attach: true → the turn goes on the customer's open ticket when there is one.
# follows: the dedupe key of an earlier event of the same source whose ticket this
# turn belongs to (a call's recording follows the call's record).
INTERACTION_FIELDS: dict[str, Any] = {
    "kind": ("message", "call", "recording"), "text": "text", "attach": "flag", "at": "time",
    "detail": "json", "follows": "text",
}


# A downstream system reporting back on a ticket the hub sent it: which ticket
# (the hub's id, as every push carries it), where it has got to, what it found.
CALLBACK_FIELDS: dict[str, Any] = {
    "ticket_id": "id", "status": STATUSES, "received": "items", "refund_amount": "amount",
    "reference": "text", "note": "text", "at": "time",
}


@dataclass(frozen=True)
class Normalized:
    """What one raw event says, in the standard model's terms."""

    ticket: dict[str, Any]
    order: dict[str, Any] | None
    customer: dict[str, Any]
    identities: list[tuple[str, str]]
    # A conversation turn (a chat message, a call): recorded on the customer's
    # open ticket when ``attach`` and there is one, else on the ticket it opens.
    interaction: dict[str, Any] | None = None
    # Why this event makes no ticket at all (a session-opened ping, say), or None.
    ignored: str | None = None
    # A callback moves a ticket the hub already has (and makes none): see hub.callbacks.
    callback: dict[str, Any] | None = None


def nesting_depth_over(doc: Any, limit: int = MAX_DEPTH) -> bool:
    """True when ``doc`` nests deeper than ``limit``. Recursive, but never deeper
    than ``limit``: the walk stops there, so no body can exhaust the stack."""
    return isinstance(doc, (dict, list)) and _deeper(doc, 1, limit)


def _deeper(node: dict[str, Any] | list[Any], depth: int, limit: int) -> bool:
    if depth > limit:
        return True
    for child in (node.values() if isinstance(node, dict) else node):
        if isinstance(child, (dict, list)) and _deeper(child, depth + 1, limit):
            return True
    return False


def _text(where: str, v: Any, limit: int | None = None) -> str:
    if v.__class__ is str and v.isascii() and "\x00" not in v and (limit is None or len(v) <= limit):
        return v  # the common case, decided at once
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise Quarantine(f"{where}: expected text, got {describe(v)}")
    if isinstance(v, float) and not math.isfinite(v):
        raise Quarantine(f"{where}: expected text, got {describe(v)}")
    if isinstance(v, int) and abs(v) >= 10**20:
        raise Quarantine(f"{where}: expected text, got {describe(v)}")
    s = v if isinstance(v, str) else str(v)
    if limit is not None and len(s) > limit:
        raise Quarantine(f"{where}: longer than {limit} characters ({len(s)})")
    if "\x00" in s:
        raise Quarantine(f"{where}: text holds a NUL character")
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise Quarantine(f"{where}: text is not valid Unicode") from None
    return s


def _scalar(where: str, v: Any) -> Any:
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v) or abs(v) >= 10**20:
            raise Quarantine(f"{where}: number out of range")
        return v
    return _text(where, v)


def _value(where: str, kind: Any, v: Any) -> Any:
    if isinstance(kind, tuple):
        if not isinstance(v, str) or v not in kind:
            raise Quarantine(f"{where}: {describe(v)} is not one of {', '.join(kind)}")
        return v
    if kind == "text":
        return _text(where, v)
    if kind == "id":
        return _text(where, v, MAX_ID)
    if kind == "amount":
        if isinstance(v, bool) or not isinstance(v, int):
            raise Quarantine(f"{where}: expected whole fen (cast: yuan or fen), got {describe(v)}")
        if not 0 <= v <= MAX_FEN:
            raise Quarantine(f"{where}: amount out of range (0..{MAX_FEN} fen)")
        return v
    if kind == "time":
        if not isinstance(v, datetime) or v.tzinfo is None:
            raise Quarantine(f"{where}: expected a time (a datetime/unix cast), got {describe(v)}")
        if not EARLIEST <= v < LATEST:
            raise Quarantine(f"{where}: time outside {EARLIEST.year}..{LATEST.year - 1}")
        return v
    if kind == "items":
        if not isinstance(v, list):
            raise Quarantine(f"{where}: expected a list of items, got {describe(v)}")
        if len(v) > MAX_ITEMS:
            raise Quarantine(f"{where}: more than {MAX_ITEMS} items ({len(v)})")
        out = []
        for i, item in enumerate(v):
            if not isinstance(item, dict):
                raise Quarantine(f"{where}[{i}]: expected an object, got {describe(item)}")
            out.append({_text(f"{where}[{i}] key", k, 64): _scalar(f"{where}[{i}].{k}", x)
                        for k, x in item.items()})
        return out
    if kind == "flag":
        if not isinstance(v, bool):
            raise Quarantine(f"{where}: expected true or false, got {describe(v)}")
        return v
    return v  # "json": any JSON value; nesting is bounded for the whole body


Check = Callable[[dict[str, Any]], dict[str, Any]]


def section_checker(name: str, kinds: dict[str, Any]) -> Check:
    """The check of one section: ``values`` with each field held to its kind
    (numbers as text where text is wanted), Quarantine naming the field
    otherwise; None means absent. Each field's check is chosen once, here:
    a compiled mapping runs it for every event."""
    checks = {k: _field_check(f"{name}.{k}", kind) for k, kind in kinds.items()}

    def check(values: dict[str, Any]) -> dict[str, Any]:
        return {k: (None if v is None else checks[k](v)) for k, v in values.items()}

    return check


def _field_check(where: str, kind: Any) -> Callable[[Any], Any]:
    if isinstance(kind, tuple):
        codes = frozenset(kind)
        return lambda v: v if v.__class__ is str and v in codes else _value(where, kind, v)
    if kind in ("text", "id"):
        limit = MAX_ID if kind == "id" else None
        return lambda v: _text(where, v, limit)
    return lambda v: _value(where, kind, v)


def check_identities(pairs: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    return [(k, _text(f"identities.{k}", v, MAX_IDENTITY)) for k, v in pairs]
