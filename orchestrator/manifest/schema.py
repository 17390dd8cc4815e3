"""The manifest's JSON Schema, generated from the pydantic models.

Each installed target contributes its own config model; ``targets`` items are a union
discriminated by ``kind``.  The committed copy in ``manifests/deployctl.schema.json`` is built
from the built-in targets only, so installing a third-party plugin does not make it look stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field, create_model

from orchestrator.manifest.model import Manifest
from orchestrator.registry import TargetRegistry, default_registry

SCHEMA_ID = "https://deployctl.dev/schemas/deployctl.schema.json"


def builtin_registry() -> TargetRegistry:
    reg = default_registry()
    return TargetRegistry(loaded={k: v for k, v in reg.plugins.items() if v.__module__.startswith("targets.")})


def manifest_schema(registry: TargetRegistry | None = None) -> dict[str, Any]:
    registry = registry or default_registry()
    plugins = registry.plugins
    models = [plugins[k].config_model for k in sorted(plugins)]
    if not models:
        item: Any = dict[str, Any]
    elif len(models) == 1:
        item = models[0]
    else:
        item = Annotated[Union[tuple(models)], Field(discriminator="kind")]  # noqa: UP007
    full = create_model("Manifest", __base__=Manifest, targets=(list[item], Field(min_length=1)))
    schema = _allow_variables(full.model_json_schema(mode="validation"))
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            **schema, "title": "deployctl manifest (apiVersion deployctl/v1)"}


VARIABLE = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}",
            "description": "a ${VAR} or ${VAR:-default} reference, substituted when the manifest is loaded"}
_CONSTRAINED = ("pattern", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _allow_variables(node: Any) -> Any:
    """Let an editor accept ``${VAR}`` wherever a constrained string or a number is expected
    (the raw YAML it checks has not been substituted yet)."""
    if isinstance(node, list):
        return [_allow_variables(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _allow_variables(v) for k, v in node.items()}
    kind = node.get("type")
    if kind in ("integer", "number", "boolean") or (kind == "string" and any(c in node for c in _CONSTRAINED)):
        outer = {k: node.pop(k) for k in ("description", "default", "title") if k in node}
        return {**outer, "anyOf": [node, VARIABLE]}
    return node


def schema_text(registry: TargetRegistry | None = None) -> str:
    return json.dumps(manifest_schema(registry), indent=2, sort_keys=False) + "\n"


def committed_schema_path() -> Path:

    return Path(__file__).resolve().parents[2] / "manifests" / "deployctl.schema.json"


if __name__ == "__main__":  # python -m orchestrator.manifest.schema: refresh the committed copy
    from orchestrator.state import write_atomic

    write_atomic(committed_schema_path(), schema_text(builtin_registry()))
    print(f"wrote {committed_schema_path()}")
