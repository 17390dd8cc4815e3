"""Read a manifest's YAML safely, remembering where every key and value stands.

Pure: text in, (data, positions) out.  Only YAML's safe types are built (no tags that run code),
duplicate keys are errors (PyYAML would silently keep the last one), and ``${VAR}`` /
``${VAR:-default}`` references in string values are substituted from the given variables, so a
location is known for every problem, including an unset variable.
"""

from __future__ import annotations

import math
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


def _loc(file: str, node: yaml.Node | yaml.Event) -> Location:
    mark = node.start_mark
    return Location(file, mark.line + 1, mark.column + 1) if mark is not None else Location(file)


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


# Bounds that keep a hostile or broken manifest finite: a real one is a few hundred values, four
# or five levels deep.  Aliases are expanded, so "billion laughs" is stopped by MAX_VALUES.
MAX_DEPTH = 32
MAX_VALUES = 10_000
MAX_NUMBER = 2**53  # the largest integer a float (and JSON) holds exactly; any setting is far below it

TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][\w.-]*)\s*\}\}")
TEMPLATE_HINT = ("this looks like an unrendered template; deployctl substitutes ${{VAR}} itself, from the "
                 "environment or --var: write ${{{name}}}")

# PyYAML's problems, explained.
_YAML_HINTS = (
    ("cannot start any token", "YAML indents with spaces; a tab or a stray character such as '@' or '`' "
     "cannot start a value (quote it)"),
    ("mapping values are not allowed here", "a value containing ': ' must be quoted, or this line is indented "
     "deeper than the key above it"),
    ("could not find expected ':'", "each line of a mapping needs 'key: value'; check quotes and indentation"),
    ("did not find expected key", "check the indentation: keys of one mapping must line up"),
    ("expected <block end>", "check the indentation: items of one list or mapping must line up"),
    ("did not find expected '-' indicator", "check the indentation: the items of a list must line up"),
    ("found undefined alias", "an *alias must name an &anchor defined above it"),
    ("found unexpected end of stream", "a quote is never closed"),
    ("expected ',' or ']'", "a '[' is never closed, or a ',' is missing between items"),
    ("expected ',' or '}'", "a '{' is never closed, or a ',' is missing between items"),
    ("found unknown escape character", "in double quotes a backslash starts an escape: use single quotes"),
)


def excerpt(text: str, line: int, column: int, width: int = 100) -> str | None:
    """The 1-based ``line`` of ``text`` with a caret under ``column``, clipped to ``width``."""
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return None
    src = lines[line - 1].expandtabs(1)  # a tab is one column in YAML's marks
    col = max(column - 1, 0)
    cut = max(0, col - width // 2) if len(src) > width else 0
    shown = ("…" if cut else "") + src[cut:cut + width] + ("…" if len(src) > cut + width else "")
    gutter = f"{line} | "
    return f"{gutter}{shown}\n{' ' * (len(gutter) - 2)}| {' ' * (col - cut + (1 if cut else 0))}^"


def _yaml_issue(e: yaml.MarkedYAMLError, text: str, file: str) -> ManifestIssue:
    mark = e.problem_mark or e.context_mark
    loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
    problem = e.problem or str(e)
    hint = next((h for key, h in _YAML_HINTS if key in problem), None)
    ctx = e.context_mark
    if e.context and ctx is not None and (mark is None or ctx.line != mark.line):
        hint = f"{e.context} at line {ctx.line + 1}" + (f": {hint}" if hint else "")
    shown = excerpt(text, loc.line, loc.column) if mark else None
    if shown is None and ctx is not None:  # the problem is at the end of the file: show where it began
        shown = excerpt(text, ctx.line + 1, ctx.column + 1)
    return ManifestIssue(loc, "", f"invalid YAML: {problem}", hint=hint, excerpt=shown)


def _prescan(text: str, file: str) -> ManifestIssue | None:
    """Walk the YAML's events (PyYAML's parser is a loop, its composer recursive) and refuse
    nesting or a number of values the composer could not take."""
    depth = values = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                return ManifestIssue(_loc(file, event), "", f"nested more than {MAX_DEPTH} levels deep",
                                     hint="a manifest is a few levels of mappings and lists")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        if isinstance(event, (yaml.NodeEvent)):
            values += 1
            if values > MAX_VALUES:
                return ManifestIssue(_loc(file, event), "", f"more than {MAX_VALUES:,} values",
                                     hint="a manifest holds a few hundred at most")
    return None


_INVALID = object()  # a scalar YAML resolves to a type it then cannot build


def _template(node: yaml.Node) -> str | None:
    """The name in ``{{NAME}}`` when YAML read an unquoted template as a mapping of a mapping."""
    if not (isinstance(node, yaml.MappingNode) and node.flow_style and len(node.value) == 1):
        return None
    key, value = node.value[0]
    if not (isinstance(key, yaml.MappingNode) and key.flow_style and len(key.value) == 1
            and isinstance(value, yaml.ScalarNode) and value.tag.endswith(":null")):
        return None
    inner, empty = key.value[0]
    if isinstance(inner, yaml.ScalarNode) and isinstance(empty, yaml.ScalarNode) and empty.tag.endswith(":null"):
        return str(inner.value)
    return None


def load_source(text: str, file: str, variables: Mapping[str, str]) -> SourceDocument:
    """Parse YAML ``text`` (named ``file`` in messages) into plain data with positions."""
    smap = SourceMap(file)
    issues: list[ManifestIssue] = []
    try:
        too_big = _prescan(text, file)
        if too_big is not None:
            return SourceDocument(None, smap, [too_big])
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        issues.append(_yaml_issue(e, text, file))
        return SourceDocument(None, smap, issues)
    except yaml.YAMLError as e:  # pragma: no cover - every PyYAML parse error is marked
        issues.append(ManifestIssue(Location(file), "", f"invalid YAML: {e}"))
        return SourceDocument(None, smap, issues)
    if root is None:
        issues.append(ManifestIssue(Location(file, 1, 1), "", "the manifest is empty"))
        return SourceDocument(None, smap, issues)

    constructor = yaml.SafeLoader("")
    built = 0
    open_nodes: set[int] = set()  # collections being built: meeting one again is a recursive alias

    class _Stop(Exception):
        """Building stops: the manifest is out of bounds (the issue is recorded)."""

    def stop(node: yaml.Node, path: Path_, message: str, hint: str | None = None) -> _Stop:
        issues.append(ManifestIssue(_loc(file, node), format_path(path), message, hint))
        return _Stop()

    def build(node: yaml.Node, path: Path_) -> Any:
        nonlocal built
        built += 1
        if built > MAX_VALUES:
            raise stop(node, path, f"expands to more than {MAX_VALUES:,} values",
                       "YAML aliases (*name) repeat what they name: a manifest holds a few hundred values")
        if len(path) > MAX_DEPTH:
            raise stop(node, path, f"nested more than {MAX_DEPTH} levels deep (through aliases)")
        smap.values[path] = _loc(file, node)
        if node.tag not in _PLAIN_TAGS:
            # Plain data only: a tag such as !!python/object could mean "run code" elsewhere.
            issues.append(ManifestIssue(_loc(file, node), format_path(path),
                                        f"unsupported YAML tag {node.tag.replace('tag:yaml.org,2002:', '!!')}",
                                        hint="manifests hold plain data: strings, numbers, lists and mappings"))
            return None
        if isinstance(node, yaml.CollectionNode):
            if id(node) in open_nodes:
                raise stop(node, path, "recursive YAML alias: this value contains itself")
            open_nodes.add(id(node))
            try:
                return build_collection(node, path)
            finally:
                open_nodes.discard(id(node))
        return build_scalar(node, path)

    def build_collection(node: yaml.CollectionNode, path: Path_) -> Any:
        name = _template(node)
        if name is not None:
            smap.scalars.add(path)
            issues.append(ManifestIssue(_loc(file, node), format_path(path), f"{{{{{name}}}}} is not a value",
                                        hint=TEMPLATE_HINT.format(name=name)))
            return f"{{{{{name}}}}}"
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    issues.append(ManifestIssue(_loc(file, key_node), format_path(path), "keys must be plain strings",
                                                hint="quote a key that starts with '{' or '['"))
                    continue
                key = construct(key_node, path)
                if key is _INVALID:
                    continue
                key = str(key)
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
        return [build(item, path + (i,)) for i, item in enumerate(node.value)]

    def construct(node: yaml.Node, path: Path_) -> Any:
        """A scalar's value (a key's or a value's), or _INVALID with the issue recorded."""
        try:
            return constructor.construct_object(node)
        except ValueError:  # a 5,000-digit integer, the 30th of February
            issues.append(ManifestIssue(_loc(file, node), format_path(path), f"invalid value {str(node.value)[:40]!r}",
                                        hint="quote it if it is meant as a string"))
            return _INVALID

    def build_scalar(node: yaml.Node, path: Path_) -> Any:
        smap.scalars.add(path)
        value = construct(node, path)
        if value is _INVALID:
            return None
        if isinstance(value, float) and not math.isfinite(value):
            issues.append(ManifestIssue(_loc(file, node), format_path(path), f"{node.value} is not a number",
                                        hint="give a finite number"))
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_NUMBER:
            issues.append(ManifestIssue(_loc(file, node), format_path(path), f"{str(node.value)[:40]} is too large",
                                        hint=f"numbers are at most {MAX_NUMBER:,}"))
            return None
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
    except _Stop:
        return SourceDocument(None, smap, issues)
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        issues.append(ManifestIssue(loc, "", f"unsupported YAML: {e.problem}"))
        return SourceDocument(None, smap, issues)
    return SourceDocument(data, smap, issues)
