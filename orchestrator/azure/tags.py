"""A resource's managed fields as Azure tags, so ``read()`` can tell its spec from the resource
itself (no local state needed): one ``deployctl-f-<field>`` tag per field, JSON-encoded.
Azure tag values hold 256 characters: keep such fields short (digests, names, numbers)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

FIELD_TAG = "deployctl-f-"


def spec_tags(spec: Mapping[str, Any]) -> dict[str, str]:
    return {f"{FIELD_TAG}{k}": json.dumps(v, sort_keys=True) for k, v in spec.items()}


def spec_from_tags(tags: Mapping[str, str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (tags or {}).items():
        if k.startswith(FIELD_TAG):
            try:
                out[k[len(FIELD_TAG):]] = json.loads(v)
            except ValueError:
                out[k[len(FIELD_TAG):]] = v
    return out
