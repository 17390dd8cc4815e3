"""The REST operations the simulator knows, generated from Azure's OpenAPI specs.

``routes.json`` (committed) lists, for every operation of the spec files we carry (Azure ML
Services, Container Instances, App Service): method, path template, operationId, api-version and
whether it is a long-running operation.  It is generated from ``../shared/azure-rest-api-specs``::

    python -m orchestrator.azure.simulator.routes ../shared/azure-rest-api-specs

so the simulator routes requests exactly as the real API is shaped, even where the specs are not
on the machine (``--simulate`` is a user feature).  A request that matches no operation is
refused loudly.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

ROUTES_FILE = Path(__file__).with_name("routes.json")
METHODS = ("get", "put", "post", "patch", "delete", "head")
_PARAM = re.compile(r"\{([^}]+)\}")
# Parameters that are whole resource ids (``{scope}/providers/Microsoft.Authorization/...``):
# the only ones that may span ``/``.
SPANNING = frozenset({"scope", "resourceUri", "resourceId"})


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    operation: str
    api_versions: tuple[str, ...]
    long_running: bool
    params: tuple[str, ...]

    @property
    def segments(self) -> int | None:
        """Path segments of every match; None when a parameter is a resource id (any number)."""
        return None if SPANNING.intersection(self.params) else self.template.strip("/").count("/") + 1

    @cached_property
    def regex(self) -> re.Pattern[str]:
        """Compiled on first use: a process answers a handful of the ~900 operations, and
        compiling them all cost more than everything else a read-only CLI run does."""
        out = ""
        for part in re.split(r"(\{[^}]+\})", self.template):
            if part.startswith("{") and part.endswith("}"):
                out += "(.+)" if part[1:-1] in SPANNING else "([^/]+)"
            else:
                out += re.escape(part)
        return re.compile("^" + out + "$", re.IGNORECASE)


def generate(specs: Path) -> list[dict[str, Any]]:
    """Operations of every spec file below ``specs`` (examples and common types skipped)."""
    ops: dict[tuple[str, str, str], dict[str, Any]] = {}
    for f in sorted(specs.rglob("*.json")):
        if "examples" in f.parts or "common-types" in f.parts or f.name in ("MANIFEST.json", "PROVENANCE.json"):
            continue
        doc = json.loads(f.read_text())
        version = (doc.get("info") or {}).get("version", "")
        for template, item in (doc.get("paths") or {}).items():
            for method in METHODS:
                op = item.get(method)
                if not op:
                    continue
                key = (method.upper(), template, op.get("operationId", ""))
                entry = ops.setdefault(key, {"method": method.upper(), "template": template,
                                             "operation": op.get("operationId", ""), "api_versions": [],
                                             "long_running": bool(op.get("x-ms-long-running-operation"))})
                if version and version not in entry["api_versions"]:
                    entry["api_versions"].append(version)
                entry["long_running"] = entry["long_running"] or bool(op.get("x-ms-long-running-operation"))
    return sorted(ops.values(), key=lambda e: (str(e["template"]), str(e["method"])))


@lru_cache(maxsize=1)
def load_routes() -> tuple[Route, ...]:
    rows = json.loads(ROUTES_FILE.read_text())
    out = [Route(r["method"], r["template"], r["operation"], tuple(r["api_versions"]), r["long_running"],
                 tuple(_PARAM.findall(r["template"]))) for r in rows]
    # Most specific first: fewer parameters, longer literal text.
    out.sort(key=lambda r: (len(r.params), -len(r.template)))
    return tuple(out)


@lru_cache(maxsize=1)
def _by_shape() -> dict[tuple[str, int | None], tuple[Route, ...]]:
    """Routes by (method, number of path segments): a parameter spans no ``/`` (but resource
    ids, shape None), so only routes of the request's shape can match; most specific first,
    as in :func:`load_routes`."""
    index: dict[tuple[str, int | None], list[Route]] = {}
    for route in load_routes():
        index.setdefault((route.method, route.segments), []).append(route)
    return {k: tuple(v) for k, v in index.items()}


def match(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    shape = _by_shape()
    for route in (*shape.get((method, path.strip("/").count("/") + 1), ()), *shape.get((method, None), ())):
        m = route.regex.match(path)
        if m:
            return route, dict(zip(route.params, m.groups(), strict=True))
    return None


if __name__ == "__main__":
    src = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[4] / "shared" / "azure-rest-api-specs")
    rows = generate(src)
    ROUTES_FILE.write_text("[\n" + ",\n".join(json.dumps(r, sort_keys=True) for r in rows) + "\n]\n")
    print(f"wrote {len(rows)} operations to {ROUTES_FILE}")
