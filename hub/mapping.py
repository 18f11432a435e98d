"""The declarative mapping engine (DESIGN §6).

An *inbound* mapping (``mappings/<name>.yaml``, ``kind: inbound``) says how a
raw event becomes ticket, order and customer fields and what its dedupe key
is. An *outbound* mapping (``kind: outbound``) says how a ticket change
becomes a destination's body. Both compile once at start-up into closures —
a compiled dotted path costs a few microseconds per event — and every error
in a file names its file, line and key.

A field spec is either a dotted path string (``data.order_id``) or a mapping:

``path`` / ``paths`` (first non-empty wins) / ``jmespath`` / ``value`` (constant),
then ``default``, ``map`` (with optional ``map_default``), ``cast`` and
``required``; ``each`` maps every element of a list with its own field specs.

Paths read the parsed body; ``@headers.<name>`` reads a request header
(lower-case) and ``@source.id`` the source's id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import jmespath
import jmespath.exceptions

from hub.errors import ConfigError, MappingError, Problem, Quarantine
from hub.lifecycle import PRIORITIES, STATUSES, TYPES
from hub.yamlfile import YamlDoc, join_path, load_yaml

SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")  # no DST since 1991

Getter = Callable[[Any], Any]

# --------------------------------------------------------------------- casts


class CastError(ValueError):
    pass


def _to_fen(v: Any) -> int:
    """Yuan (``"59.78"``, ``59.78``, ``59``) → fen, exactly, via Decimal."""
    try:
        d = Decimal(str(v).strip())
    except InvalidOperation:
        raise CastError(f"{v!r} is not an amount in yuan") from None
    fen = d * 100
    if fen != fen.to_integral_value():
        raise CastError(f"{v!r} has more than 2 decimals")
    return int(fen)


def _fen(v: Any) -> int:
    if isinstance(v, bool):
        raise CastError(f"{v!r} is not an amount in fen")
    try:
        d = Decimal(str(v).strip())
    except InvalidOperation:
        raise CastError(f"{v!r} is not an amount in fen") from None
    if d != d.to_integral_value():
        raise CastError(f"{v!r} is not a whole number of fen")
    return int(d)


def _int(v: Any) -> int:
    if isinstance(v, bool):
        raise CastError(f"{v!r} is not an integer")
    try:
        return int(str(v).strip())
    except ValueError:
        raise CastError(f"{v!r} is not an integer") from None


def _iso_datetime(v: Any) -> datetime:
    """ISO 8601; a time without a zone is platform local time (Asia/Shanghai)."""
    try:
        dt = datetime.fromisoformat(str(v).strip().replace("Z", "+00:00"))
    except ValueError:
        raise CastError(f"{v!r} is not an ISO 8601 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=SHANGHAI)
    return dt.astimezone(UTC)


def _local_datetime(v: Any) -> datetime:
    """``yyyy-MM-dd HH:mm:ss`` in Asia/Shanghai (Taobao, JD) → UTC."""
    try:
        dt = datetime.strptime(str(v).strip()[:19], "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise CastError(f"{v!r} is not a yyyy-MM-dd HH:mm:ss time") from None
    return dt.replace(tzinfo=SHANGHAI).astimezone(UTC)


def _unix(v: Any) -> datetime:
    try:
        return datetime.fromtimestamp(float(v), UTC)
    except (TypeError, ValueError, OverflowError):
        raise CastError(f"{v!r} is not a unix time in seconds") from None


def _unix_ms(v: Any) -> datetime:
    try:
        return datetime.fromtimestamp(float(v) / 1000, UTC)
    except (TypeError, ValueError, OverflowError):
        raise CastError(f"{v!r} is not a unix time in milliseconds") from None


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "1", "yes", "y"):
        return True
    if s in ("false", "0", "no", "n"):
        return False
    raise CastError(f"{v!r} is not a boolean")


def _fen_to_yuan(v: Any) -> str:
    return f"{Decimal(_fen(v)) / 100:.2f}"


CASTS: dict[str, Callable[[Any], Any]] = {
    "str": lambda v: str(v),
    "strip": lambda v: str(v).strip(),
    "lower": lambda v: str(v).strip().lower(),
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

# --------------------------------------------------------------------- paths


def compile_path(path: str) -> Getter:
    """``a.b.0.c`` → a getter returning None when any step is missing."""
    root = "body"
    if path.startswith("@"):
        root, _, path = path[1:].partition(".")
    steps: list[str | int] = [int(p) if p.lstrip("-").isdigit() else p for p in path.split(".") if p]

    def get(doc: Any) -> Any:
        cur = doc.get(root) if isinstance(doc, dict) else None
        for step in steps:
            if isinstance(cur, dict):
                cur = cur.get(step) if not isinstance(step, int) else cur.get(str(step))
            elif isinstance(cur, list) and isinstance(step, int):
                cur = cur[step] if -len(cur) <= step < len(cur) else None
            else:
                return None
            if cur is None:
                return None
        return cur

    return get


def compile_template_path(path: str) -> Getter:
    """Outbound paths read the render context directly (``ticket.status``)."""
    steps = [p for p in path.split(".") if p]

    def get(ctx: Any) -> Any:
        cur = ctx
        for step in steps:
            if isinstance(cur, dict):
                cur = cur.get(step)
            else:
                return None
        return cur

    return get


# --------------------------------------------------------------------- field specs


def _const(value: Any) -> Getter:
    def get(_doc: Any) -> Any:
        return value

    return get


_SPEC_KEYS = {"path", "paths", "jmespath", "value", "default", "map", "map_default", "cast",
              "required", "each"}
_EMPTY = (None, "")


class FieldFailure(Exception):
    """A field could not be produced; becomes the raw event's quarantine reason."""


@dataclass
class Compiler:
    doc: YamlDoc
    problems: list[Problem] = field(default_factory=list)
    template_paths: bool = False

    def error(self, path: str, message: str) -> None:
        self.problems.append(self.doc.problem(path, message))

    def field(self, spec: Any, where: str, *, allowed: tuple[str, ...] | None = None) -> Getter:
        """Compile one field spec into ``get(doc) -> value`` (raises FieldFailure)."""
        path_of = compile_template_path if self.template_paths else compile_path
        if isinstance(spec, str):
            return self._null_ok(path_of(spec))
        if not isinstance(spec, dict):
            if isinstance(spec, (int, float, bool)) or spec is None:
                return _const(spec)
            self.error(where, f"expected a path string or a field mapping, got {type(spec).__name__}")
            return _const(None)
        unknown = set(spec) - _SPEC_KEYS
        for key in sorted(unknown):
            self.error(join_path(where, key), f"unknown key (expected one of {', '.join(sorted(_SPEC_KEYS))})")
        sources = [k for k in ("path", "paths", "jmespath", "value") if k in spec]
        if len(sources) > 1:
            self.error(where, f"give one of path, paths, jmespath, value (got {', '.join(sources)})")
        getters: list[Getter]
        if "path" in spec:
            getters = [path_of(str(spec["path"]))]
        elif "paths" in spec:
            if not isinstance(spec["paths"], list) or not spec["paths"]:
                self.error(join_path(where, "paths"), "expected a non-empty list of paths")
                getters = []
            else:
                getters = [path_of(str(p)) for p in spec["paths"]]
        elif "jmespath" in spec:
            try:
                expr = jmespath.compile(str(spec["jmespath"]))
                getters = [self._jmes(expr)]
            except jmespath.exceptions.JMESPathError as err:
                self.error(join_path(where, "jmespath"), f"invalid JMESPath: {err}")
                getters = []
        elif "value" in spec:
            getters = [_const(spec["value"])]
        elif "each" not in spec:
            self.error(where, "needs one of path, paths, jmespath or value")
            getters = []
        else:
            getters = []
        default = spec.get("default")
        required = bool(spec.get("required", False))
        vmap: dict[str, Any] | None = None
        if "map" in spec:
            if not isinstance(spec["map"], dict):
                self.error(join_path(where, "map"), "expected a mapping of platform value → standard value")
            else:
                vmap = {str(k): v for k, v in spec["map"].items()}
                if allowed is not None:
                    for k, v in spec["map"].items():
                        if v not in allowed:
                            self.error(join_path(join_path(where, "map"), str(k)),
                                       f"{v!r} is not one of {', '.join(allowed)}")
        has_map_default = "map_default" in spec
        map_default = spec.get("map_default")
        if allowed is not None:
            for key in ("value", "default", "map_default"):
                if key in spec and spec[key] not in (None, "") and spec[key] not in allowed:
                    self.error(join_path(where, key), f"{spec[key]!r} is not one of {', '.join(allowed)}")
        cast: Callable[[Any], Any] | None = None
        if "cast" in spec:
            cast = CASTS.get(str(spec["cast"]))
            if cast is None:
                self.error(join_path(where, "cast"), f"unknown cast {spec['cast']!r}; known: {', '.join(CASTS)}")
        each: dict[str, Getter] | None = None
        if "each" in spec:
            if not isinstance(spec["each"], dict):
                self.error(join_path(where, "each"), "expected a mapping of item field → spec")
            else:
                sub = Compiler(self.doc, self.problems, template_paths=True)
                each = {k: sub.field(v, join_path(join_path(where, "each"), k)) for k, v in spec["each"].items()}
        label = where

        def get(doc: Any) -> Any:
            value = None
            for g in getters:
                value = g(doc)
                if value not in _EMPTY:
                    break
            if value in _EMPTY:
                value = default
            if value in _EMPTY:
                if required:
                    raise FieldFailure(f"{label}: required value is missing")
                return None
            if vmap is not None:
                key = str(value).lower() if isinstance(value, bool) else str(value)
                if key in vmap:
                    value = vmap[key]
                elif has_map_default:
                    value = map_default
                else:
                    raise FieldFailure(f"{label}: value {value!r} has no entry in the map")
            if cast is not None and value is not None:
                try:
                    value = cast(value)
                except CastError as err:
                    raise FieldFailure(f"{label}: {err}") from None
            if each is not None:
                if not isinstance(value, list):
                    raise FieldFailure(f"{label}: expected a list, got {type(value).__name__}")
                value = [{k: g(item) for k, g in each.items()} for item in value]
            return value

        return get

    def _jmes(self, expr: Any) -> Getter:
        template = self.template_paths

        def get(doc: Any) -> Any:
            return expr.search(doc if template else doc.get("body"))

        return get

    @staticmethod
    def _null_ok(g: Getter) -> Getter:
        def get(doc: Any) -> Any:
            v = g(doc)
            return None if v == "" else v

        return get


# --------------------------------------------------------------------- inbound

TICKET_FIELDS = {
    "external_id": None, "type": TYPES, "status": STATUSES, "reason_code": None,
    "reason_text": None, "description": None, "priority": PRIORITIES, "refund_amount": None,
    "items": None, "source_updated_at": None, "created_at": None, "queue": None,
}
ORDER_FIELDS = {"external_id": None, "status": None, "paid_amount": None, "items": None,
                "placed_at": None,
                # any_channel: the number names an order of any channel (a caller keying
                # in a Taobao order number), not one of this source's own.
                "match": ("own_channel", "any_channel")}
CUSTOMER_FIELDS = {"display_name": None, "phone": None, "address": None, "email": None}
IDENTITY_KINDS = ("taobao_open_uid", "taobao_nick", "jd_pin", "wechat_openid", "wechat_unionid",
                  "phone", "email", "site_user")
REQUIRED_TICKET = ("external_id", "type", "status")
# attach: true → the turn goes on the customer's open ticket when there is one.
# follows: the dedupe key of an earlier event of the same source whose ticket this
# turn belongs to (a call's recording follows the call's record).
INTERACTION_FIELDS = {"kind": ("message", "call", "recording"), "text": None, "attach": None, "at": None,
                      "detail": None, "follows": None}


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


@dataclass
class InboundMapping:
    name: str
    version: str
    file: str
    _dedupe: list[Getter]
    _ticket: dict[str, Getter]
    _order: dict[str, Getter]
    _customer: dict[str, Getter]
    _identities: dict[str, Getter]
    _interaction: dict[str, Getter] | None = None
    _ignore: Getter | None = None

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def dedupe_key(self, doc: dict[str, Any]) -> str:
        parts = [g(doc) for g in self._dedupe]
        if any(p in _EMPTY for p in parts):
            raise Quarantine("dedupe key is missing from the event")
        return ":".join(str(p) for p in parts)

    def apply(self, doc: dict[str, Any]) -> Normalized:
        """Pure: ``{"body", "headers", "source"}`` → Normalized, or Quarantine."""
        try:
            ignored = self._ignore(doc) if self._ignore is not None else None
            if ignored not in _EMPTY and ignored is not False:
                return Normalized(ticket={}, order=None, customer={}, identities=[], ignored=str(ignored))
            interaction = ({k: g(doc) for k, g in self._interaction.items()}
                           if self._interaction is not None else None)
            if interaction is not None and interaction.get("kind") in _EMPTY:
                interaction = None  # this event is not a conversation turn
            if interaction is not None and interaction.get("follows") not in _EMPTY:
                # It joins an earlier event's ticket: nothing of its own to normalize.
                return Normalized(ticket={}, order=None, customer={}, identities=[], interaction=interaction)
            ticket = {k: g(doc) for k, g in self._ticket.items()}
            order = {k: g(doc) for k, g in self._order.items()}
            customer = {k: g(doc) for k, g in self._customer.items()}
            idents = [(k, str(v)) for k, g in self._identities.items() if (v := g(doc)) not in _EMPTY]
        except FieldFailure as err:
            raise Quarantine(f"mapping {self.label}: {err}") from None
        for key in REQUIRED_TICKET:
            if ticket.get(key) in _EMPTY:
                raise Quarantine(f"mapping {self.label}: ticket.{key} is missing")
        ticket["external_id"] = str(ticket["external_id"])
        order_out = order if order.get("external_id") not in _EMPTY else None
        if order_out is not None:
            order_out["external_id"] = str(order_out["external_id"])
        return Normalized(ticket=ticket, order=order_out, customer=customer, identities=idents,
                          interaction=interaction)


def _section(c: Compiler, data: dict[str, Any], name: str, allowed: dict[str, Any]) -> dict[str, Getter]:
    sec = data.get(name) or {}
    if not isinstance(sec, dict):
        c.error(name, "expected a mapping of field → spec")
        return {}
    out = {}
    for key, spec in sec.items():
        if key not in allowed:
            c.error(join_path(name, key), f"unknown {name} field (expected one of {', '.join(allowed)})")
            continue
        out[key] = c.field(spec, join_path(name, key), allowed=allowed[key])
    return out


def _compile_inbound(doc: YamlDoc, name: str) -> InboundMapping:
    data = doc.data
    c = Compiler(doc)
    for key in sorted(set(data) - {"name", "kind", "version", "description", "dedupe_key",
                                   "ticket", "order", "customer", "identities", "interaction",
                                   "ignore"}):
        c.error(key, "unknown key")
    dedupe_spec = data.get("dedupe_key")
    if dedupe_spec is None:
        c.error("dedupe_key", "required key is missing")
        dedupe: list[Getter] = []
    else:
        specs = dedupe_spec if isinstance(dedupe_spec, list) else [dedupe_spec]
        dedupe = [c.field(s, join_path("dedupe_key", i) if isinstance(dedupe_spec, list) else "dedupe_key")
                  for i, s in enumerate(specs)]
    ticket = _section(c, data, "ticket", TICKET_FIELDS)
    for key in REQUIRED_TICKET:
        if key not in ticket and not any(p.path == join_path("ticket", key) for p in c.problems):
            c.error(join_path("ticket", key), "required field is missing")
    order = _section(c, data, "order", ORDER_FIELDS)
    customer = _section(c, data, "customer", CUSTOMER_FIELDS)
    identities = _section(c, data, "identities", {k: None for k in IDENTITY_KINDS})
    interaction = _section(c, data, "interaction", INTERACTION_FIELDS) if "interaction" in data else None
    if interaction is not None and "kind" not in interaction:
        c.error("interaction.kind", "required field is missing (message or call)")
    ignore = c.field(data["ignore"], "ignore") if "ignore" in data else None
    if c.problems:
        raise MappingError(c.problems)
    return InboundMapping(name, str(data.get("version")), doc.file, dedupe, ticket, order,
                          customer, identities, interaction, ignore)


# --------------------------------------------------------------------- outbound


@dataclass
class OutboundMapping:
    name: str
    version: str
    file: str
    _render: Getter

    def render(self, context: dict[str, Any]) -> Any:
        try:
            return self._render(context)
        except FieldFailure as err:
            raise Quarantine(f"outbound mapping {self.name}@{self.version}: {err}") from None


def _compile_template(c: Compiler, node: Any, where: str) -> Getter:
    if isinstance(node, str):
        if node.startswith("$$"):
            return _const(node[1:])
        if node.startswith("$"):
            return compile_template_path(node[1:])
        return _const(node)
    if isinstance(node, dict):
        if set(node) == {"$field"}:
            return c.field(node["$field"], join_path(where, "$field"))
        parts = {k: _compile_template(c, v, join_path(where, str(k))) for k, v in node.items()}
        return lambda ctx: {k: g(ctx) for k, g in parts.items()}
    if isinstance(node, list):
        items = [_compile_template(c, v, join_path(where, i)) for i, v in enumerate(node)]
        return lambda ctx: [g(ctx) for g in items]
    return _const(node)


def _compile_outbound(doc: YamlDoc, name: str) -> OutboundMapping:
    data = doc.data
    c = Compiler(doc, template_paths=True)
    for key in sorted(set(data) - {"name", "kind", "version", "description", "body"}):
        c.error(key, "unknown key")
    if "body" not in data:
        c.error("body", "required key is missing")
    render = _compile_template(c, data.get("body"), "body")
    if c.problems:
        raise MappingError(c.problems)
    return OutboundMapping(name, str(data.get("version")), doc.file, render)


# --------------------------------------------------------------------- loading


def default_mappings_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "mappings"


def load_mapping(path: str | Path) -> InboundMapping | OutboundMapping:
    p = Path(path)
    try:
        doc = load_yaml(p)
    except ConfigError as err:
        raise MappingError(err.problems) from None
    except OSError as err:
        raise MappingError([Problem("", f"cannot read mapping: {err.strerror}", str(p))]) from None
    if not isinstance(doc.data, dict):
        raise MappingError([doc.problem("", "a mapping file must be a YAML mapping")])
    problems = []
    if "version" not in doc.data:
        problems.append(doc.problem("version", "required key is missing (bump it when the mapping changes)"))
    kind = doc.data.get("kind")
    if kind not in ("inbound", "outbound"):
        problems.append(doc.problem("kind", "must be 'inbound' or 'outbound'"))
    if problems:
        raise MappingError(problems)
    name = str(doc.data.get("name") or p.stem)
    return _compile_inbound(doc, name) if kind == "inbound" else _compile_outbound(doc, name)


class MappingSet:
    """Every mapping the config names, compiled once at start-up."""

    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory else default_mappings_dir()
        self._cache: dict[str, InboundMapping | OutboundMapping] = {}

    def path_of(self, name: str) -> Path:
        return self.directory / f"{name}.yaml"

    def get(self, name: str) -> InboundMapping | OutboundMapping:
        if name not in self._cache:
            self._cache[name] = load_mapping(self.path_of(name))
        return self._cache[name]

    def inbound(self, name: str) -> InboundMapping:
        m = self.get(name)
        if not isinstance(m, InboundMapping):
            raise MappingError([Problem("kind", "expected an inbound mapping", str(self.path_of(name)))])
        return m

    def outbound(self, name: str) -> OutboundMapping:
        m = self.get(name)
        if not isinstance(m, OutboundMapping):
            raise MappingError([Problem("kind", "expected an outbound mapping", str(self.path_of(name)))])
        return m
