"""Validate a manifest and report every problem at once, each at its file, line and column.

Two passes share one list of problems: the core fields (with each target's ``name`` and
``kind``), then each target's own settings against its plugin's config model.  Pydantic's errors
become :class:`~orchestrator.errors.ManifestIssue` values with a hint: the nearest known field
for a misspelled key, the allowed values for an enum, the expected type.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError, create_model

from orchestrator.errors import Location, ManifestError, ManifestIssue, UserError
from orchestrator.manifest.model import Manifest, TargetConfig
from orchestrator.manifest.source import SourceMap, format_path, load_source
from orchestrator.registry import TargetRegistry, default_registry


@dataclass(frozen=True)
class LoadedManifest:
    manifest: Manifest
    path: Path  # absolute; for a string or dict, a virtual file in base_dir
    digest: str  # of the resolved manifest (after variables): a saved plan checks it
    source_map: SourceMap


# Core pass: targets are plain mappings here; each plugin validates its own entry afterwards.
_CoreManifest = create_model(
    "_CoreManifest",
    __base__=Manifest,
    targets=(list[dict[str, Any]], ...),
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
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ManifestError(issues=[ManifestIssue(Location(str(source)), "", "manifest file not found")]) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ManifestError(issues=[ManifestIssue(Location(str(source)), "", f"cannot read manifest: {e}")]) from None
    else:
        text, path = str(source), (base_dir or Path.cwd()) / "<string>"
    display = _display_path(path)
    doc = load_source(text, display, env)
    issues = list(doc.issues)
    if doc.data is None:
        raise ManifestError(issues=issues)
    if not isinstance(doc.data, dict):
        raise ManifestError(issues=issues + [ManifestIssue(Location(display, 1, 1), "", "the manifest must be a mapping of fields")])

    ctx = {"base_dir": base_dir or path.parent}
    smap = doc.source_map
    core = None
    try:
        core = _CoreManifest.model_validate(doc.data, context=ctx)
    except ValidationError as e:
        issues.extend(_issues(e, doc.data, smap, prefix=(), model=_CoreManifest))

    configs: list[TargetConfig] = []
    targets = doc.data.get("targets")
    seen: dict[str, int] = {}
    if isinstance(targets, list):
        for i, entry in enumerate(targets):
            if not isinstance(entry, dict):
                continue  # reported by the core pass
            cfg = _validate_target(entry, i, registry, smap, ctx, issues)
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
    if issues or core is None:
        issues.sort(key=lambda x: (x.location.line, x.location.column))
        raise ManifestError(issues=issues)
    fields = {k: getattr(core, k) for k in Manifest.model_fields if k != "targets"}
    manifest = Manifest.model_construct(**fields, targets=configs)
    # Location-independent: a saved plan may be applied from another checkout of the same files.
    base = json.dumps(str(ctx["base_dir"].resolve()))[1:-1]
    digest = hashlib.sha256(manifest.model_dump_json().replace(base, "<manifest-dir>").encode()).hexdigest()[:16]
    return LoadedManifest(manifest, path, digest, smap)


def _display_path(path: Path) -> str:
    """Relative to the working directory when below it (short, clickable), else absolute."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # pragma: no cover - other drive on Windows
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _validate_target(entry: dict[str, Any], i: int, registry: TargetRegistry, smap: SourceMap,
                     ctx: dict[str, Any], issues: list[ManifestIssue]) -> TargetConfig | None:
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
        issues.extend(x for x in found if x.field not in (f"targets[{i}].name", f"targets[{i}].kind"))
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


_TYPE_WORDS = {
    "int": "an integer", "float": "a number", "string": "a string", "bool": "true or false",
    "dict": "a mapping", "list": "a list", "model": "a mapping",
}


def _describe(err: Mapping[str, Any]) -> tuple[str, str | None]:
    t, ctx = err["type"], err.get("ctx") or {}
    if t == "missing":
        return "required field is missing", None
    if t in ("literal_error", "enum"):
        return f"invalid value {err.get('input')!r}", f"allowed values: {ctx.get('expected', '')}"
    if t == "string_pattern_mismatch":
        return "invalid format", f"must match {ctx.get('pattern')}"
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
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else (f"known fields: {', '.join(allowed)}" if allowed else None)
            out.append(ManifestIssue(location, field, "unknown field", hint))
        elif len(errs) > 1:  # a union: say what any branch would accept
            wants: list[str] = []
            for x in errs:
                msg, hint = _describe(x)
                text = hint.replace("allowed values: ", "") if hint else msg.replace("expected ", "")
                if text not in wants:
                    wants.append(text)
            out.append(ManifestIssue(location, field, "invalid value", "expected " + " or ".join(wants)))
        else:
            msg, hint = _describe(first)
            out.append(ManifestIssue(location, field, msg, hint))
    return out
