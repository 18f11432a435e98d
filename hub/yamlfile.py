"""Load YAML while remembering the line of every key path.

Config and mapping errors must say where they are ("config.yaml:42:
sources[2].app_key: ..."), so files are composed node by node and each value's
key path (``sources[2].app_key``) is mapped to its 1-based line number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hub.errors import Problem


@dataclass
class YamlDoc:
    """A parsed YAML document plus where each key path came from."""

    data: Any
    file: str
    lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, path: str) -> int | None:
        """Line of ``path`` or of its nearest ancestor that has one."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""

    def problem(self, path: str, message: str) -> Problem:
        return Problem(path=path, message=message, file=self.file, line=self.line_of(path))


def join_path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)


def parse_yaml(text: str, file: str) -> YamlDoc:
    """Parse ``text``; a syntax error becomes a single located Problem."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            reason = getattr(err, "problem", None) or str(err)
            from hub.errors import ConfigError

            raise ConfigError([Problem("", f"YAML syntax error: {reason}", file, line)]) from err
        doc = YamlDoc(data=None, file=file)
        if node is None:
            doc.data = {}
            return doc

        def walk(n: yaml.Node, path: str) -> Any:
            doc.lines.setdefault(path, n.start_mark.line + 1)
            if isinstance(n, yaml.MappingNode):
                out: dict[Any, Any] = {}
                for key_node, value_node in n.value:
                    # Keys stay text: YAML 1.1 would read `on:` (sync rules) as True.
                    key = (key_node.value if isinstance(key_node, yaml.ScalarNode)
                           else loader.construct_object(key_node, deep=True))
                    out[key] = walk(value_node, join_path(path, str(key)))
                return out
            if isinstance(n, yaml.SequenceNode):
                return [walk(item, join_path(path, i)) for i, item in enumerate(n.value)]
            return loader.construct_object(n, deep=True)

        doc.data = walk(node, "")
        return doc
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> YamlDoc:
    p = Path(path)
    return parse_yaml(p.read_text(encoding="utf-8"), str(p))
