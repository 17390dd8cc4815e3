"""Requests checked against Azure's REST specs (``../shared/azure-rest-api-specs``).

For an ARM request whose path matches an operation of the specs: the api-version is recorded
(several versions the SDKs send are not among the spec files: the nearest version that defines
the operation is used), required query parameters must be present, and a JSON body must validate
against the operation's body schema (swagger definitions, ``$ref`` resolved across files with
``../../../../../common-types/`` mapped to ``<specs>/common-types/``).  Problems are returned for
the simulator to refuse (strict mode: an exception in the test; else 400 like ARM).

Without the specs folder (a user's machine, ``--simulate``), or without ``jsonschema``, checking is
off and :attr:`Checker.enabled` is False; routing still works from the committed ``routes.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from orchestrator.azure.simulator import routes
from orchestrator.azure.simulator.messages import Request

REPO_ROOT = Path(__file__).resolve().parents[3]


def default_specs_dir() -> Path:
    return REPO_ROOT.parent / "shared" / "azure-rest-api-specs"


def _spec_files(root: Path) -> Iterator[Path]:
    """The spec files below ``root``: examples (most of the files) and common types are never
    walked into (every ``--simulate`` run lists these)."""
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in ("examples", "common-types")]
        for name in names:
            if name.endswith(".json") and name not in ("MANIFEST.json", "PROVENANCE.json"):
                yield Path(folder) / name


class Checker:
    def __init__(self, specs: Path | None) -> None:
        self.specs = specs
        self.enabled = specs is not None
        self.checked: list[tuple[str, str, str]] = []  # (operation, requested api-version, spec version used)
        self._index: dict[tuple[str, str], list[tuple[str, Path]]] | None = None
        self.response_problems: list[str] = []
        self._validators: dict[tuple[str, int], tuple[dict[str, Any], Any]] = {}
        self._validators_lock = threading.Lock()
        # An operation's parameters with their $refs followed, by (spec file, template, method):
        # resolving a ref into another file stats every folder up the tree (a fleet's apply spent
        # a tenth of its CPU there, on the same few operations).  Spec files do not change.
        self._params: dict[tuple[str, str, str], list[dict[str, Any]]] = {}

    @classmethod
    def load(cls, specs_dir: Path | None) -> Checker:
        specs = Path(specs_dir) if specs_dir else default_specs_dir()
        import importlib.util

        if importlib.util.find_spec("jsonschema") is None:  # found, not imported: a run that checks nothing pays nothing
            return cls(None)
        return cls(specs if (specs / "README.md").exists() or any(specs.glob("Microsoft.*")) else None)

    def _files(self) -> dict[tuple[str, str], list[tuple[str, Path]]]:
        """(METHOD, template) -> [(version, spec file)], built once per set of spec files: cached
        on disk by their names, sizes and times (every ``--simulate`` run would otherwise parse
        all of them, half a second, before its first answer)."""
        if self._index is None:
            assert self.specs is not None
            files = sorted(_spec_files(self.specs))
            key = hashlib.sha256(json.dumps([(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files])
                                 .encode()).hexdigest()[:24]
            from targets.local.envs import cache_root

            # v2: files listed once, rows point at them (the flat v1 index was 0.5 MB to parse)
            cached = cache_root() / "simulator" / f"spec-index-v2-{key}.json"
            try:
                index = json.loads(cached.read_text())
                if not (isinstance(index, dict) and isinstance(index.get("files"), list)
                        and isinstance(index.get("ops"), dict)):
                    raise ValueError("not a spec index")
            except (OSError, ValueError):
                ops: dict[str, list[list[Any]]] = {}
                for i, f in enumerate(files):
                    doc = _load(str(f))
                    version = (doc.get("info") or {}).get("version", "")
                    for template, item in (doc.get("paths") or {}).items():
                        ops.setdefault(template, []).extend([m.upper(), version, i] for m in routes.METHODS if m in item)
                index = {"files": [str(f) for f in files], "ops": ops}
                with contextlib.suppress(OSError):
                    from orchestrator.state import write_atomic

                    write_atomic(cached, json.dumps(index, separators=(",", ":")))
            paths = [Path(f) for f in index["files"]]
            self._index = {}
            for template, rows in index["ops"].items():
                for method, version, i in rows:
                    self._index.setdefault((method, template), []).append((version, paths[i]))
        return self._index

    def _spec_for(self, req: Request) -> tuple[Any, str, Path, dict[str, Any]] | None:
        """(route, spec version, spec file, parsed spec) of the operation ``req`` calls, in the
        carried spec nearest its api-version; None when the specs do not describe it."""
        found = routes.match(req.method, req.path)
        if not found:
            return None
        route, _ = found
        candidates = self._files().get((req.method, route.template), [])
        if not candidates:
            return None
        version, spec_file = _nearest(candidates, req.query.get("api-version", ""))
        return route, version, spec_file, _load(str(spec_file))

    def check(self, req: Request, operation: str | None) -> list[str]:
        if not self.enabled or operation is None:
            return []
        spec = self._spec_for(req)
        if spec is None:
            return []
        route, version, spec_file, doc = spec
        self.checked.append((route.operation, req.query.get("api-version", ""), version))
        params = self._operation_params(doc, spec_file, route.template, req.method.lower())
        problems = []
        for p in params:
            if p.get("in") == "query" and p.get("required") and p["name"].lower() not in req.query:
                problems.append(f"missing required query parameter {p['name']!r}")
        body_param = next((p for p in params if p.get("in") == "body"), None)
        if body_param and req.body and "json" in (req.header("content-type") or "application/json"):
            problems += self._validate(req.json(), body_param.get("schema") or {}, doc, spec_file)
        elif body_param and body_param.get("required") and not req.body:
            problems.append("missing required request body")
        return [f"{route.operation} ({version}): {p}" for p in problems]

    def _operation_params(self, doc: dict[str, Any], spec_file: Path, template: str, method: str) -> list[dict[str, Any]]:
        key = (str(spec_file), template, method)
        found = self._params.get(key)
        if found is None:  # two threads may both resolve it: the same answer, no lock needed
            path_item = doc["paths"][template]
            found = self._params[key] = [_resolve_param(p, doc, spec_file) for p in
                                         [*(path_item.get("parameters") or []), *(path_item[method].get("parameters") or [])]]
        return found

    def check_response(self, req: Request, status: int, body: Any) -> list[str]:
        """The simulator's own answer against the operation's response schema for ``status``
        (recorded in :attr:`response_problems`; tests assert it stays empty)."""
        if not self.enabled or body is None:
            return []
        spec = self._spec_for(req)
        if spec is None:
            return []
        route, version, spec_file, doc = spec
        responses = doc["paths"][route.template][req.method.lower()].get("responses") or {}
        schema = (responses.get(str(status)) or {}).get("schema")
        if schema is None:
            return [] if str(status) in responses or status >= 400 else [f"{route.operation} ({version}): status {status} "
                                                                         f"is not among the spec's responses {sorted(responses)}"]
        problems = [f"{route.operation} ({version}) response {status}: {p}"
                    for p in self._validate(body, schema, doc, spec_file)]
        self.response_problems += problems
        return problems

    def _validate(self, body: Any, schema: dict[str, Any], doc: dict[str, Any], spec_file: Path) -> list[str]:
        # One validator per schema, kept: its resolver caches the $refs it resolved (building
        # both per request was most of the checker's time).  A resolver keeps a scope stack while
        # validating, so validations take turns.
        with self._validators_lock:
            key = (str(spec_file), id(schema))
            found = self._validators.get(key)
            if found is None or found[0] is not schema:
                import jsonschema

                resolver = jsonschema.RefResolver(base_uri=spec_file.as_uri(), referrer=doc,
                                                  handlers={"file": lambda uri: _load_uri(uri, self.specs)})
                found = self._validators[key] = (schema, jsonschema.Draft4Validator(schema, resolver=resolver))
            errors = sorted(found[1].iter_errors(body), key=lambda e: list(e.absolute_path))
        return [f"body{''.join(f'[{p!r}]' for p in e.absolute_path)}: {e.message[:300]}" for e in errors[:5]]


def _nearest(candidates: list[tuple[str, Path]], want: str) -> tuple[str, Path]:
    exact = [c for c in candidates if c[0] == want]
    if exact:
        return exact[0]
    older = sorted((c for c in candidates if c[0] <= want), key=lambda c: c[0])
    return older[-1] if older else sorted(candidates, key=lambda c: c[0])[0]


@lru_cache(maxsize=64)
def _load(path: str) -> dict[str, Any]:
    return _swagger_to_jsonschema(json.loads(Path(path).read_text(encoding="utf-8")))


def _swagger_to_jsonschema(node: Any) -> Any:
    """Drop ``additionalProperties: false``: swagger composes models with ``allOf`` (a derived
    model adds properties to its base), which JSON Schema would reject part by part."""
    if isinstance(node, dict):
        if node.get("additionalProperties") is False:
            del node["additionalProperties"]
        enum = node.get("enum")
        if isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
            # ARM compares enum values case-insensitively (azure-ai-ml sends "aadToken" for "AADToken")
            del node["enum"]
            node["pattern"] = "^(?i:" + "|".join(re.escape(v) for v in enum) + ")$"
        for v in node.values():
            _swagger_to_jsonschema(v)
    elif isinstance(node, list):
        for v in node:
            _swagger_to_jsonschema(v)
    return node


def _load_uri(uri: str, specs: Path | None) -> dict[str, Any]:
    from urllib.parse import unquote, urlsplit

    path = unquote(urlsplit(uri).path)
    if "/common-types/" in path and specs is not None:
        path = str(specs / "common-types" / path.split("/common-types/", 1)[1])
    return _load(path)


def _resolve_param(p: dict[str, Any], doc: dict[str, Any], spec_file: Path) -> dict[str, Any]:
    ref = p.get("$ref")
    if not ref:
        return p
    file_part, _, pointer = ref.partition("#")
    target = doc if not file_part else _load_uri((spec_file.parent / file_part).resolve().as_uri(),
                                                 _specs_root(spec_file))
    node: Any = target
    for part in pointer.strip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _specs_root(spec_file: Path) -> Path | None:
    for parent in spec_file.parents:
        if (parent / "common-types").is_dir():
            return parent
    return None
