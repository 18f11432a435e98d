"""Finds the installed connectors (entry-point group ``hub.connectors``) and
validates each source's and destination's kind-specific config with them."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from hub.config import DestinationConfig, SourceConfig, _pydantic_problems
from hub.errors import Problem
from hub.interfaces import ConnectorSpec, DestinationKind, SourceKind
from hub.yamlfile import YamlDoc

GROUP = "hub.connectors"


class Registry:
    def __init__(self, specs: list[ConnectorSpec]):
        self.specs = specs
        self.sources: dict[str, SourceKind] = {}
        self.destinations: dict[str, DestinationKind] = {}
        for spec in specs:
            for s in spec.sources:
                self.sources[s.kind] = s
            for d in spec.destinations:
                self.destinations[d.kind] = d

    @classmethod
    def discover(cls) -> Registry:
        specs: list[ConnectorSpec] = []
        for ep in entry_points(group=GROUP):
            loaded = ep.load()
            specs.extend(loaded if isinstance(loaded, (list, tuple)) else [loaded])
        return cls(specs)

    def validate_source(self, src: SourceConfig, where: str, doc: YamlDoc,
                        problems: list[Problem]) -> SourceConfig:
        kind = self.sources.get(src.kind)
        if kind is None:
            problems.append(doc.problem(f"{where}.kind", f"unknown source kind {src.kind!r}; "
                                        f"known: {', '.join(sorted(self.sources))}"))
            return src
        return _validate(kind.config_model, src, where, doc, problems)

    def validate_destination(self, dst: DestinationConfig, where: str, doc: YamlDoc,
                             problems: list[Problem]) -> DestinationConfig:
        kind = self.destinations.get(dst.kind)
        if kind is None:
            problems.append(doc.problem(f"{where}.kind", f"unknown destination kind {dst.kind!r}; "
                                        f"known: {', '.join(sorted(self.destinations))}"))
            return dst
        return _validate(kind.config_model, dst, where, doc, problems)

    def unavailable(self, cfg: Any) -> list[str]:
        """Sources and destinations whose kind this build cannot run yet."""
        out = []
        for s in cfg.sources:
            k = self.sources.get(s.kind)
            if s.enabled and k is not None and not k.available:
                out.append(f"source {s.id!r}: kind {s.kind!r} is not available yet")
        for d in cfg.destinations:
            k2 = self.destinations.get(d.kind)
            if d.enabled and k2 is not None and not k2.available:
                out.append(f"destination {d.id!r}: kind {d.kind!r} is not available yet")
        return out


def _validate(model: Any, item: Any, where: str, doc: YamlDoc, problems: list[Problem]) -> Any:
    if type(item) is model:
        return item
    try:
        return model.model_validate(item.model_dump(exclude_unset=True))  # extras included
    except ValidationError as err:
        problems.extend(_pydantic_problems(err, doc, where, model=model))
        return item
