"""Property: whatever a manifest holds, `deployctl validate` ends, quickly, with exit 0, 1 or 2
and never a traceback.  Mutations of a valid manifest (values swapped for hostile ones, keys
dropped or added, YAML text spliced) run through the real CLI in-process; the subprocess runs in
test_manifest_bounds.py show the same on a real stderr.

Deterministic for CI: derandomized, no example database, a fixed number of examples.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.cli import app

from .conftest import BASE, MEMORY_TARGETS

runner = CliRunner()
VALID = yaml.safe_load(BASE.format(targets=MEMORY_TARGETS.rstrip()))

HOSTILE_SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(alphabet="[]{}&*!|>%@`'\":#-$ \t\\", max_size=20),
    st.sampled_from([
        "Dev", "prod_eu", "dev ", "{{ENDPOINT_NAME}}", "${UNSET_VARIABLE}", "$${ESCAPED}", "${X:-default}",
        "/dev/zero", "/proc/self/fd", "/proc/self/mem", "./pipe", "./zero-link", "./model.pkl", "./src", "..",
        "/", "", "local", "memory", "real-time", "batch", "auto", "3.99", "3.11", "x" * 5000, "\x00", "é" * 300,
    ]),
)
VALUES = st.recursive(HOSTILE_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)

# Spliced into the YAML text at a line boundary.
SNIPPETS = [
    "a: &a [*a]\n", "x: " + "[" * 400 + "]" * 400 + "\n", "- *undefined\n", "\t\n", "name: a: b\n",
    "!!python/object:os.system x\n", "%YAML 1.1\n---\n", "---\n---\n", "model: {{M}}\n", "'unclosed\n",
    "k: !!binary AAAA\n", "k: 2001-02-30\n", "2001-02-30: k\n", "1.5: k\n", "null: k\n", "[a]: k\n", "k: " + "9" * 5000 + "\n", "? [complex, key]\n: v\n",
    "&anchor\n", "\ufeff\n", "targets: []\n", "targets:\n  - {name: Dev, kind: memory}\n",
]


def _paths(node: Any, prefix: tuple = (), inside: frozenset[int] = frozenset()) -> list[tuple]:
    """Every path into the document (a cycle made by an "alias" mutation is not followed)."""
    out = [prefix]
    if id(node) in inside or len(prefix) > 8:
        return out
    inside = inside | {id(node)}
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,), inside)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,), inside)
    return out


def _set(doc: Any, path: tuple, value: Any, delete: bool) -> Any:
    if not path:
        return value
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


@st.composite
def manifests(draw: st.DrawFn) -> bytes:
    doc = yaml.safe_load(yaml.safe_dump(VALID))  # a fresh deep copy
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "add", "alias"]))
        if action == "alias" and path:  # one object in two places: YAML anchors, recursive when inside itself
            source = draw(st.sampled_from(paths))
            node = doc
            for p in source:
                node = node[p]
            doc = _set(doc, path, node, delete=False)
            continue
        if action == "add" and isinstance(doc, dict):
            holder = doc
            for p in path:
                if isinstance(holder, (dict, list)):
                    holder = holder[p]
            if isinstance(holder, dict):
                key = draw(st.one_of(st.sampled_from(["sise", "kind", "name", "python", "max_body_mb", "targets"]),
                                     st.text(max_size=10)))
                holder[key] = draw(VALUES)
            continue
        doc = _set(doc, path, draw(VALUES), delete=action == "delete" and bool(path))
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=draw(st.booleans()))
    if draw(st.booleans()):
        lines = text.splitlines(keepends=True)
        at = draw(st.integers(0, len(lines)))
        lines.insert(at, draw(st.sampled_from(SNIPPETS)))
        text = "".join(lines)
    data = text.encode()
    if draw(st.integers(0, 9)) == 0:  # now and then, bytes that are not UTF-8
        at = draw(st.integers(0, len(data)))
        data = data[:at] + b"\xff\xfe" + data[at:]
    return data


def _project(root: Path) -> None:
    (root / "model.pkl").write_bytes(b"model-bytes")
    (root / "src").mkdir(exist_ok=True)
    (root / "src" / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return raw\n")
    (root / "sample.json").write_text('{"data": [[1, 2, 3]]}')
    if not (root / "pipe").exists():
        os.mkfifo(root / "pipe")
        (root / "zero-link").symlink_to("/dev/zero")


def test_validate_never_crashes_or_hangs_on_a_mutated_manifest(tmp_path):
    _project(tmp_path)
    manifest = tmp_path / "deployctl.yaml"
    codes: list[int] = []

    @settings(max_examples=100, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(manifests())
    def check(data: bytes) -> None:
        manifest.write_bytes(data)
        started = time.monotonic()
        r = runner.invoke(app, ["validate", str(manifest)])
        elapsed = time.monotonic() - started
        assert r.exit_code in (0, 1, 2), (r.exit_code, r.output, data[:500])
        assert r.exception is None or isinstance(r.exception, SystemExit), (repr(r.exception), data[:500])
        assert "Traceback" not in r.output, (r.output, data[:500])
        assert elapsed < 5, f"validate took {elapsed:.1f} s on {data[:200]!r}"
        if r.exit_code == 2:
            assert "deployctl.yaml" in r.stderr, r.stderr  # every problem names the file
        codes.append(r.exit_code)

    started = time.monotonic()
    check()
    assert 2 in codes  # the mutations do break manifests...
    assert time.monotonic() - started < 120  # ~5 s of CPU; the rest is a loaded machine
