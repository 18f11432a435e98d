"""The declarative mapping engine (docs/architecture.md §6).

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

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jmespath
import jmespath.exceptions

from hub.casts import CASTS, CastError
from hub.errors import ConfigError, MappingError, Problem, Quarantine
from hub.normalized import (
    CALLBACK_FIELDS,
    CUSTOMER_FIELDS,
    IDENTITY_KINDS,
    INTERACTION_FIELDS,
    MAX_DEPTH,
    ORDER_FIELDS,
    REQUIRED_TICKET,
    TICKET_FIELDS,
    Normalized,
    check_identities,
    nesting_depth_over,
    section_checker,
)
from hub.redaction import describe
from hub.yamlfile import YamlDoc, join_path, load_yaml

Getter = Callable[[Any], Any]

CHECK_TICKET = section_checker("ticket", TICKET_FIELDS)
CHECK_ORDER = section_checker("order", ORDER_FIELDS)
CHECK_CUSTOMER = section_checker("customer", CUSTOMER_FIELDS)
CHECK_INTERACTION = section_checker("interaction", INTERACTION_FIELDS)
CHECK_CALLBACK = section_checker("callback", CALLBACK_FIELDS)

# --------------------------------------------------------------------- paths


def compile_path(path: str, *, empty_is_none: bool = False) -> Getter:
    """``a.b.0.c`` → a getter returning None when any step is missing (and,
    with ``empty_is_none``, when the value is ``""``)."""
    root = "body"
    if path.startswith("@"):
        root, _, path = path[1:].partition(".")
    steps: list[str | int] = [int(p) if p.lstrip("-").isdigit() else p for p in path.split(".") if p]
    if steps and all(isinstance(s, str) for s in steps):
        return _key_path(root, [str(s) for s in steps], empty_is_none)

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
        return None if empty_is_none and cur == "" else cur

    return get


def _key_path(root: str, keys: list[str], empty_is_none: bool) -> Getter:
    """A path of object keys only (nearly every path): no typed steps to tell
    apart, and this runs for every field of every event."""
    *inner, last = keys

    def get(doc: Any) -> Any:
        cur = doc.get(root) if isinstance(doc, dict) else None
        for key in inner:
            if not isinstance(cur, dict):
                return None
            cur = cur.get(key)
        if not isinstance(cur, dict):
            return None
        value = cur.get(last)
        return None if empty_is_none and value == "" else value

    return get


def compile_template_path(path: str) -> Getter:
    """Outbound paths read the render context directly (``ticket.status``)."""
    steps = [p for p in path.split(".") if p]
    if len(steps) == 2:
        # Nearly every outbound path is ``section.field``: no loop for it (each
        # push renders some fifty of them while its batch is planned).
        first, second = steps

        def get2(ctx: Any) -> Any:
            cur = ctx.get(first) if isinstance(ctx, dict) else None
            return cur.get(second) if isinstance(cur, dict) else None

        return get2

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


def _failing_as_field(cast: Callable[[Any], Any], label: str) -> Callable[[Any], Any]:
    """``cast``, its CastError raised as the field's FieldFailure (a quarantine reason)."""

    def run(value: Any) -> Any:
        try:
            return cast(value)
        except CastError as err:
            raise FieldFailure(f"{label}: {err}") from None

    return run


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
            return self._null_ok(path_of(spec)) if self.template_paths else compile_path(spec, empty_is_none=True)
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
                getters = [self._jmes(expr, join_path(where, "jmespath"))]
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
            known = CASTS.get(str(spec["cast"]))
            if known is None:
                self.error(join_path(where, "cast"), f"unknown cast {spec['cast']!r}; known: {', '.join(CASTS)}")
            else:
                cast = _failing_as_field(known, where)
        each: dict[str, Getter] | None = None
        if "each" in spec:
            if not isinstance(spec["each"], dict):
                self.error(join_path(where, "each"), "expected a mapping of item field → spec")
            else:
                sub = Compiler(self.doc, self.problems, template_paths=True)
                each = {k: sub.field(v, join_path(join_path(where, "each"), k)) for k, v in spec["each"].items()}
        label = where
        if len(getters) == 1 and each is None and vmap is None and default is None and not required:
            # The usual spec, a path and perhaps a cast: nothing else to decide per event.
            only = getters[0]

            def plain(doc: Any) -> Any:
                value = only(doc)
                if value is None or value == "":
                    return None
                return value if cast is None else cast(value)

            return plain

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
                if isinstance(value, (dict, list)):
                    raise FieldFailure(f"{label}: expected a code, got {describe(value)}")
                key = str(value).lower() if isinstance(value, bool) else str(value)
                if key in vmap:
                    value = vmap[key]
                elif has_map_default:
                    value = map_default
                else:
                    raise FieldFailure(f"{label}: value {describe(value)} has no entry in the map")
            if cast is not None and value is not None:
                value = cast(value)
            if each is not None:
                if not isinstance(value, list):
                    raise FieldFailure(f"{label}: expected a list, got {describe(value)}")
                for i, item in enumerate(value):
                    if not isinstance(item, dict):
                        raise FieldFailure(f"{label}[{i}]: expected an object, got {describe(item)}")
                value = [{k: g(item) for k, g in each.items()} for item in value]
            return value

        return get

    def _jmes(self, expr: Any, where: str) -> Getter:
        template = self.template_paths

        def get(doc: Any) -> Any:
            try:
                return expr.search(doc if template else doc.get("body"))
            except jmespath.exceptions.JMESPathError as err:
                # A function given the wrong type (join() of a number): the event's shape.
                raise FieldFailure(f"{where}: the JMESPath expression failed ({type(err).__name__})") from None

        return get

    @staticmethod
    def _null_ok(g: Getter) -> Getter:
        def get(doc: Any) -> Any:
            v = g(doc)
            return None if v == "" else v

        return get


# --------------------------------------------------------------------- inbound

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
    _callback: dict[str, Getter] | None = None

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def dedupe_key(self, doc: dict[str, Any]) -> str:
        try:
            parts = [g(doc) for g in self._dedupe]
        except FieldFailure as err:
            raise Quarantine(f"mapping {self.label}: {err}") from None
        if any(p in _EMPTY for p in parts):
            raise Quarantine("dedupe key is missing from the event")
        return bounded_key(":".join(_key_part(p) for p in parts))

    def apply(self, doc: dict[str, Any]) -> Normalized:
        """Pure: ``{"body", "headers", "source"}`` → Normalized, or Quarantine."""
        if nesting_depth_over(doc.get("body")):
            raise Quarantine(f"mapping {self.label}: body nests deeper than {MAX_DEPTH} levels")
        try:
            return self._apply(doc)
        except (FieldFailure, Quarantine) as err:
            raise Quarantine(f"mapping {self.label}: {err}") from None

    def _apply(self, doc: dict[str, Any]) -> Normalized:
        ignored = self._ignore(doc) if self._ignore is not None else None
        if ignored not in _EMPTY and ignored is not False:
            reason = ignored if isinstance(ignored, str) else describe(ignored)
            return Normalized(ticket={}, order=None, customer={}, identities=[], ignored=reason[:200])
        interaction = None
        if self._interaction is not None:
            turn = {k: g(doc) for k, g in self._interaction.items()}
            if turn.get("kind") not in _EMPTY:  # else this event is not a conversation turn
                interaction = CHECK_INTERACTION(turn)
        if self._callback is not None:
            cb = CHECK_CALLBACK({k: g(doc) for k, g in self._callback.items()})
            if cb.get("ticket_id") in _EMPTY:
                raise Quarantine("callback.ticket_id is missing")
            return Normalized(ticket={}, order=None, customer={}, identities=[], callback=cb)
        if interaction is not None and interaction.get("follows") not in _EMPTY:
            # It joins an earlier event's ticket: nothing of its own to normalize.
            interaction["follows"] = bounded_key(interaction["follows"])
            return Normalized(ticket={}, order=None, customer={}, identities=[], interaction=interaction)
        ticket = {k: g(doc) for k, g in self._ticket.items()}
        for key in REQUIRED_TICKET:
            if ticket.get(key) in _EMPTY:
                raise Quarantine(f"ticket.{key} is missing")
        ticket = CHECK_TICKET(ticket)
        order = {k: g(doc) for k, g in self._order.items()}
        order_out = CHECK_ORDER(order) if order.get("external_id") not in _EMPTY else None
        customer = CHECK_CUSTOMER({k: g(doc) for k, g in self._customer.items()})
        idents = check_identities([(k, v) for k, g in self._identities.items()
                                   if (v := g(doc)) not in _EMPTY])
        return Normalized(ticket=ticket, order=order_out, customer=customer, identities=idents,
                          interaction=interaction)


MAX_KEY = 200  # characters of a dedupe key kept as it is


def _key_part(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return str(value)
    raise Quarantine(f"dedupe key: expected text, got {describe(value)}")


def bounded_key(key: str) -> str:
    """A dedupe key as the unique index takes it: a long key, or one with
    characters a database column refuses (NUL, lone surrogates), is replaced by
    its SHA-256, so equal keys stay equal and the insert never fails."""
    if len(key) <= MAX_KEY and key.isprintable():
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


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
        kind = allowed[key]
        out[key] = c.field(spec, join_path(name, key), allowed=kind if isinstance(kind, tuple) else None)
    return out


def _compile_inbound(doc: YamlDoc, name: str) -> InboundMapping:
    data = doc.data
    c = Compiler(doc)
    for key in sorted(set(data) - {"name", "kind", "version", "description", "dedupe_key",
                                   "ticket", "order", "customer", "identities", "interaction",
                                   "ignore", "callback"}):
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
    callback = _section(c, data, "callback", CALLBACK_FIELDS) if "callback" in data else None
    if callback is not None:
        for key in ("ticket_id", "status"):
            if key not in callback:
                c.error(join_path("callback", key), "required field is missing")
        if ticket:
            c.error("ticket", "a callback mapping moves the ticket it names; it has no ticket section")
    for key in REQUIRED_TICKET if callback is None else ():
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
                          customer, identities, interaction, ignore, callback)


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
