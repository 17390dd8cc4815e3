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
from functools import lru_cache
from pathlib import Path
from typing import Any

ROUTES_FILE = Path(__file__).with_name("routes.json")
METHODS = ("get", "put", "post", "patch", "delete", "head")


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    operation: str
    api_versions: tuple[str, ...]
    long_running: bool
    regex: re.Pattern[str]
    params: tuple[str, ...]


def _compile(template: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    params: list[str] = []
    out = ""
    for part in re.split(r"(\{[^}]+\})", template):
        if part.startswith("{") and part.endswith("}"):
            params.append(part[1:-1])
            out += "([^/]+)"
        else:
            out += re.escape(part)
    return re.compile("^" + out + "$", re.IGNORECASE), tuple(params)


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
    out = []
    for r in rows:
        regex, params = _compile(r["template"])
        out.append(Route(r["method"], r["template"], r["operation"], tuple(r["api_versions"]), r["long_running"],
                         regex, params))
    # Most specific first: fewer parameters, longer literal text.
    out.sort(key=lambda r: (len(r.params), -len(r.template)))
    return tuple(out)


def match(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    for route in load_routes():
        if route.method != method:
            continue
        m = route.regex.match(path)
        if m:
            return route, dict(zip(route.params, m.groups(), strict=True))
    return None


if __name__ == "__main__":
    src = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[4] / "shared" / "azure-rest-api-specs")
    rows = generate(src)
    ROUTES_FILE.write_text("[\n" + ",\n".join(json.dumps(r, sort_keys=True) for r in rows) + "\n]\n")
    print(f"wrote {len(rows)} operations to {ROUTES_FILE}")
