"""Read a manifest's YAML safely, remembering where every key and value stands.

Pure: text in, (data, positions) out.  Only YAML's safe types are built (no tags that run code),
duplicate keys are errors (PyYAML would silently keep the last one), and ``${VAR}`` /
``${VAR:-default}`` references in string values are substituted from the given variables, so a
location is known for every problem, including an unset variable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from orchestrator.errors import Location, ManifestIssue

Path_ = tuple[str | int, ...]

# ${NAME} or ${NAME:-default}; $${...} is an escaped literal "${...}".
_VAR = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


_PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp"))


@dataclass
class SourceMap:
    """Positions of keys and values by field path, for error messages."""

    file: str
    keys: dict[Path_, Location] = field(default_factory=dict)
    values: dict[Path_, Location] = field(default_factory=dict)
    scalars: set[Path_] = field(default_factory=set)
    # Variables used at each path (names only: values may be secrets).
    variables: dict[Path_, list[str]] = field(default_factory=dict)

    def locate(self, path: Path_) -> Location:
        """The most precise known location for ``path``, walking up to the nearest known parent:
        a scalar's value, else the key that introduces it."""
        p = tuple(path)
        while p:
            if p in self.scalars:
                return self.values[p]
            if p in self.keys:
                return self.keys[p]
            if p in self.values:
                return self.values[p]
            p = p[:-1]
        return self.values.get((), Location(self.file, 1, 1))


@dataclass
class SourceDocument:
    data: Any
    source_map: SourceMap
    issues: list[ManifestIssue]


def _loc(file: str, node: yaml.Node) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


def substitute(text: str, variables: Mapping[str, str]) -> tuple[str, list[str], list[str]]:
    """Substitute ${VAR} references. Returns (text, names used, names missing)."""
    used: list[str] = []
    missing: list[str] = []

    def repl(m: re.Match[str]) -> str:
        escaped, name, default = m.group(1), m.group(2), m.group(3)
        if escaped:
            return m.group(0)[1:]
        used.append(name)
        if name in variables:
            return variables[name]
        if default is not None:
            return default
        missing.append(name)
        return m.group(0)

    return _VAR.sub(repl, text), used, missing


def format_path(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def load_source(text: str, file: str, variables: Mapping[str, str]) -> SourceDocument:
    """Parse YAML ``text`` (named ``file`` in messages) into plain data with positions."""
    smap = SourceMap(file)
    issues: list[ManifestIssue] = []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        issues.append(ManifestIssue(loc, "", f"invalid YAML: {e.problem or e}"))
        return SourceDocument(None, smap, issues)
    except yaml.YAMLError as e:  # pragma: no cover - every PyYAML parse error is marked
        issues.append(ManifestIssue(Location(file), "", f"invalid YAML: {e}"))
        return SourceDocument(None, smap, issues)
    if root is None:
        issues.append(ManifestIssue(Location(file, 1, 1), "", "the manifest is empty"))
        return SourceDocument(None, smap, issues)

    constructor = yaml.SafeLoader("")

    def build(node: yaml.Node, path: Path_) -> Any:
        smap.values[path] = _loc(file, node)
        if node.tag not in _PLAIN_TAGS:
            # Plain data only: a tag such as !!python/object could mean "run code" elsewhere.
            issues.append(ManifestIssue(_loc(file, node), format_path(path),
                                        f"unsupported YAML tag {node.tag.replace('tag:yaml.org,2002:', '!!')}",
                                        hint="manifests hold plain data: strings, numbers, lists and mappings"))
            return None
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    issues.append(ManifestIssue(_loc(file, key_node), format_path(path), "keys must be plain strings"))
                    continue
                key = str(constructor.construct_object(key_node))
                if key in out:
                    first = smap.keys[path + (key,)]
                    issues.append(ManifestIssue(
                        _loc(file, key_node), format_path(path + (key,)),
                        f"duplicate key (first defined at line {first.line})",
                    ))
                    continue
                smap.keys[path + (key,)] = _loc(file, key_node)
                out[key] = build(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item, path + (i,)) for i, item in enumerate(node.value)]
        smap.scalars.add(path)
        value = constructor.construct_object(node)
        if isinstance(value, str) and "$" in value:
            value, used, missing = substitute(value, variables)
            if used:
                smap.variables[path] = used
            for name in missing:
                issues.append(ManifestIssue(
                    _loc(file, node), format_path(path),
                    f"variable ${{{name}}} is not set",
                    hint=f"export {name}=..., pass --var {name}=..., or write ${{{name}:-default}}",
                ))
        return value

    try:
        data = build(root, ())
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        issues.append(ManifestIssue(loc, "", f"unsupported YAML: {e.problem}"))
        return SourceDocument(None, smap, issues)
    return SourceDocument(data, smap, issues)
