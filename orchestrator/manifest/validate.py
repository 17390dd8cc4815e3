"""Validate a manifest and report every problem at once, each at its file, line and column.

Two passes share one list of problems: the core fields (with each target's ``name`` and
``kind``), then each target's own settings against its plugin's config model.  Pydantic's errors
become :class:`~orchestrator.errors.ManifestIssue` values with a hint: the nearest known field
for a misspelled key, the allowed values for an enum, the expected type.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from orchestrator.errors import Location, ManifestError, ManifestIssue, UserError, display_path
from orchestrator.manifest.model import Manifest, TargetConfig
from orchestrator.manifest.source import TEMPLATE, TEMPLATE_HINT, SourceMap, format_path, load_source
from orchestrator.registry import TargetRegistry, default_registry


@dataclass(frozen=True)
class LoadedManifest:
    manifest: Manifest
    path: Path  # absolute; for a string or dict, a virtual file in base_dir
    digest: str  # of the resolved manifest (after variables): a saved plan checks it
    source_map: SourceMap


MAX_MANIFEST_BYTES = 256 << 10  # a real manifest is a few KiB; YAML is parsed in pure Python
_TOO_LARGE = f"the manifest is larger than {MAX_MANIFEST_BYTES >> 10} KiB"
_TOO_LARGE_HINT = "a manifest names its model, code and files; it does not hold them"


class _CoreTarget(TargetConfig):
    """Every target's name and kind, checked whether or not its kind is installed."""

    model_config = ConfigDict(extra="allow")


# Core pass: targets' own settings are left to each plugin, which validates its entry afterwards.
_CoreManifest = create_model(
    "_CoreManifest",
    __base__=Manifest,
    targets=(list[_CoreTarget], Field(min_length=1)),
)


def load_manifest(
    source: str | Path | Mapping[str, Any],
    *,
    variables: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    registry: TargetRegistry | None = None,
    use_environ: bool = True,
) -> LoadedManifest:
    """Load and validate a manifest from a path, a YAML string or a dict.

    ``variables`` (``--var``) take precedence over the process environment.  Raises
    :class:`ManifestError` with every problem found.
    """
    registry = registry or default_registry()
    env: dict[str, str] = dict(os.environ) if use_environ else {}
    env.update(variables or {})
    if isinstance(source, Mapping):
        import yaml

        text, path = yaml.safe_dump(dict(source), sort_keys=False), (base_dir or Path.cwd()) / "<dict>"
    elif isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml"))):
        path = Path(source).absolute()
        text = _read_manifest(path, str(source))
    else:
        text, path = str(source), (base_dir or Path.cwd()) / "<string>"
    display = display_path(path)
    if len(text) > MAX_MANIFEST_BYTES:  # a YAML string or a dict given to the Python API
        raise ManifestError(issues=[ManifestIssue(Location(display), "", _TOO_LARGE, _TOO_LARGE_HINT)])
    doc = load_source(text, display, env)
    issues = list(doc.issues)
    reported = {i.field for i in doc.issues if i.field}  # pydantic would report them again
    if doc.data is None:  # nothing, or a lone null ("null", "~", "---")
        raise ManifestError(issues=issues or [ManifestIssue(Location(display, 1, 1), "", "the manifest is empty")])
    if not isinstance(doc.data, dict):
        raise ManifestError(issues=issues + [ManifestIssue(Location(display, 1, 1), "", "the manifest must be a mapping of fields")])

    ctx = {"base_dir": base_dir or path.parent}
    smap = doc.source_map
    core = None
    try:
        core = _CoreManifest.model_validate(doc.data, context=ctx)
    except ValidationError as e:
        issues.extend(i for i in _issues(e, doc.data, smap, prefix=(), model=_CoreManifest)
                      if i.field not in reported)

    configs: list[TargetConfig] = []
    targets = doc.data.get("targets")
    seen: dict[str, int] = {}
    if isinstance(targets, list):
        for i, entry in enumerate(targets):
            if not isinstance(entry, dict):
                continue  # reported by the core pass
            cfg = _validate_target(entry, i, registry, smap, ctx, issues, reported)
            if cfg is not None:
                configs.append(cfg)
            name = entry.get("name")
            if isinstance(name, str):
                if name in seen:
                    issues.append(ManifestIssue(smap.locate(("targets", i, "name")), f"targets[{i}].name",
                                                f"duplicate target name {name!r} (also targets[{seen[name]}])"))
                else:
                    seen[name] = i
    scoring = (doc.data.get("scoring") or {}).get("type") if isinstance(doc.data.get("scoring"), dict) else None
    if isinstance(targets, list) and isinstance(scoring, str):
        for i, entry in enumerate(targets):
            kind = entry.get("kind") if isinstance(entry, dict) else None
            if isinstance(kind, str) and registry.has(kind) and kind not in registry.broken:
                supported = {s.value for s in registry.get(kind).scoring_types}
                if scoring in {"real-time", "near-real-time", "batch"} and scoring not in supported:
                    able = sorted(k for k, c in registry.plugins.items() if scoring in {s.value for s in c.scoring_types})
                    issues.append(ManifestIssue(
                        smap.locate(("targets", i, "kind")), f"targets[{i}].kind",
                        f"target kind {kind!r} does not support {scoring} scoring",
                        hint=f"kinds that do: {', '.join(able) or 'none installed'}",
                    ))
    if core is not None:
        issues.extend(_python_issues(core, smap))
    if not issues and core is not None and len(configs) != len(core.targets):  # pragma: no cover - a bug
        issues.append(ManifestIssue(smap.locate(("targets",)), "targets", "a target was not validated"))
    if issues or core is None:
        issues.sort(key=lambda x: (x.location.line, x.location.column))
        raise ManifestError(issues=issues)
    fields = {k: getattr(core, k) for k in Manifest.model_fields if k != "targets"}
    manifest = Manifest.model_construct(**fields, targets=configs)
    # Location-independent: a saved plan may be applied from another checkout of the same files.
    base = json.dumps(str(ctx["base_dir"].resolve()))[1:-1]
    digest = hashlib.sha256(manifest.model_dump_json().replace(base, "<manifest-dir>").encode()).hexdigest()[:16]
    return LoadedManifest(manifest, path, digest, smap)


def _python_where(smap: SourceMap) -> str:
    loc = smap.keys.get(("environment", "python"))
    return f"environment.python ({loc.file}:{loc.line})" if loc else "environment.python"


def _python_issues(core: Manifest, smap: SourceMap) -> list[ManifestIssue]:
    """A conda file pinning another Python than environment.python asks for."""
    from orchestrator.pythons import choose_python

    try:
        choose_python(core.environment, _python_where(smap))
    except UserError as e:
        return [ManifestIssue(smap.locate(("environment", "python")), "environment.python", e.message, e.hint)]
    return []


def check_interpreter(loaded: LoadedManifest, registry: TargetRegistry | None = None) -> list[ManifestIssue]:
    """When a target builds its environment on this machine (a plugin with ``local_python``):
    is the Python it asks for installed where uv finds it?  Runs ``uv`` (no download), so it
    is ``validate``'s check, not every load's."""
    registry = registry or default_registry()
    kinds = {t.kind for t in loaded.manifest.targets}
    if not any(registry.has(k) and getattr(registry.get(k), "local_python", False) for k in kinds):
        return []
    from orchestrator.pythons import choose_python, find_python

    smap = loaded.source_map
    choice = choose_python(loaded.manifest.environment, _python_where(smap))
    try:
        find_python(choice)
    except UserError as e:
        field = ("environment", "conda_file") if choice.conda_line else ("environment", "python")
        return [ManifestIssue(smap.locate(field), format_path(field), e.message, e.hint)]
    return []


def _read_manifest(path: Path, shown: str) -> str:
    """The manifest's text: a regular file (a FIFO or a device would block or never end) of at
    most MAX_MANIFEST_BYTES, in UTF-8."""

    def fail(message: str, hint: str | None = None) -> ManifestError:
        return ManifestError(issues=[ManifestIssue(Location(shown), "", message, hint)])

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise fail("manifest file not found") from None
    except OSError as e:
        raise fail(f"cannot read manifest: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise fail("the manifest is not a regular file", "give the path of a .yaml file")
        data = f.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise fail(_TOO_LARGE, _TOO_LARGE_HINT)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ManifestError(issues=[ManifestIssue(Location(shown, line, 0), "", "the manifest is not UTF-8 text")]) from None


def _validate_target(entry: dict[str, Any], i: int, registry: TargetRegistry, smap: SourceMap,
                     ctx: dict[str, Any], issues: list[ManifestIssue], reported: set[str]) -> TargetConfig | None:
    kind = entry.get("kind")
    if not isinstance(kind, str):
        return None  # the core pass reports a missing or mistyped kind
    try:
        model = registry.get(kind).config_model
    except UserError as e:  # not installed, or its plugin failed to load
        issues.append(ManifestIssue(smap.locate(("targets", i, "kind")), f"targets[{i}].kind", e.message))
        return None
    try:
        return model.model_validate(entry, context=ctx)
    except ValidationError as e:
        # name/kind problems were already reported by the core pass
        found = _issues(e, entry, smap, prefix=("targets", i), model=model)
        issues.extend(x for x in found
                      if x.field not in (f"targets[{i}].name", f"targets[{i}].kind") and x.field not in reported)
        return None


def _clean_loc(loc: tuple[Any, ...], data: Any, err_type: str) -> tuple[Any, ...]:
    """Drop the union-branch labels pydantic inserts, keeping the path through the data."""
    out: list[Any] = []
    node = data
    for j, part in enumerate(loc):
        last = j == len(loc) - 1
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            out.append(part)
            node = node[part]
        elif last and err_type in ("missing", "extra_forbidden") and isinstance(part, str):
            out.append(part)
    return tuple(out)


def _model_at(model: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that holds the field at ``path`` (for did-you-mean)."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        current = _unwrap(current.model_fields[part].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    for arg in (typing.get_args(tp) or ()):
        inner = _unwrap(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return tp


def _shown(value: Any, width: int = 60) -> str:
    """A value as the user wrote it (repr: a trailing space shows), clipped."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


_TYPE_WORDS = {
    "int": "an integer", "float": "a number", "string": "a string", "bool": "true or false",
    "dict": "a mapping", "list": "a list", "model": "a mapping",
}


def _describe(err: Mapping[str, Any], variables: list[str] | None = None) -> tuple[str, str | None]:
    """(message, hint) for one pydantic error.  A value that came from ``variables`` is named by
    them, never shown: it may be a secret."""
    t, ctx = err["type"], err.get("ctx") or {}
    value = ", ".join(f"${{{v}}}" for v in variables) if variables else _shown(err.get("input"))
    if t == "missing":
        return "required field is missing", None
    if t in ("literal_error", "enum"):
        return f"invalid value {value}", f"allowed values: {ctx.get('expected', '')}"
    if t == "string_pattern_mismatch":
        return f"invalid value {value}", f"must match {ctx.get('pattern')}"
    if t == "finite_number":
        return "expected a finite number", None
    if t == "too_short" and ctx.get("min_length") == 1:
        return "must not be empty", None
    if t in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"])), None
    for suffix in ("_type", "_parsing"):
        if t.endswith(suffix):
            word = _TYPE_WORDS.get(t[: -len(suffix)], t[: -len(suffix)])
            return f"expected {word}", None
    return err["msg"], None


def _issues(e: ValidationError, data: Any, smap: SourceMap, prefix: tuple[Any, ...],
            model: type[BaseModel]) -> list[ManifestIssue]:
    grouped: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for err in e.errors(include_url=False):
        loc = _clean_loc(tuple(err["loc"]), data, err["type"])
        grouped.setdefault(loc, []).append(err)
    out: list[ManifestIssue] = []
    for loc, errs in grouped.items():
        full = prefix + loc
        field = format_path(full)
        first = errs[0]
        location = smap.keys.get(full) or smap.locate(full) if first["type"] == "extra_forbidden" else smap.locate(full)
        if first["type"] == "extra_forbidden":
            holder = _model_at(model, loc[:-1])
            allowed = sorted(holder.model_fields) if holder else []
            import difflib

            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else (f"known fields: {', '.join(allowed)}" if allowed else None)
            out.append(ManifestIssue(location, field, "unknown field", hint))
        elif len(errs) > 1:  # a union: say what any branch would accept
            wants: list[str] = []
            for x in errs:
                msg, hint = _describe(x, smap.variables.get(full))
                text = hint.replace("allowed values: ", "") if hint else msg.replace("expected ", "")
                if text not in wants:
                    wants.append(text)
            out.append(ManifestIssue(location, field, "invalid value", "expected " + " or ".join(wants)))
        else:
            msg, hint = _describe(first, smap.variables.get(full))
            value = first.get("input")
            if isinstance(value, str) and full not in smap.variables and (m := TEMPLATE.search(value)):
                hint = TEMPLATE_HINT.format(name=m.group(1))
            out.append(ManifestIssue(location, field, msg, hint))
    return out
