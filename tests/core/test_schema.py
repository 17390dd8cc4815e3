"""The committed JSON Schema is fresh, and every committed manifest is valid."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli import app
from orchestrator.manifest import load_manifest
from orchestrator.manifest.schema import builtin_registry, committed_schema_path, manifest_schema, schema_text

REPO = Path(__file__).resolve().parents[2]
# Defaults for the variables the reference manifests use, so they validate anywhere.
VARS = {"PROD_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000"}


def committed_manifests() -> list[Path]:
    found = sorted((REPO / "manifests").glob("*.yaml")) + sorted((REPO / "examples").glob("**/deployctl*.yaml"))
    return [p for p in found if "azure-pipelines" not in p.parts]


def test_committed_schema_is_fresh():
    path = committed_schema_path()
    assert path.exists(), "run: python -m orchestrator.manifest.schema"
    assert path.read_text() == schema_text(builtin_registry()), (
        "manifests/deployctl.schema.json is stale; run: python -m orchestrator.manifest.schema")


def test_schema_includes_every_builtin_target_config():
    schema = manifest_schema(builtin_registry())
    text = json.dumps(schema)
    for kind in builtin_registry().kinds:
        assert f'"{kind}"' in text
    jsonschema.Draft202012Validator.check_schema(schema)


def test_reference_manifest_per_scoring_type():
    types = {yaml.safe_load(p.read_text())["scoring"]["type"] for p in (REPO / "manifests").glob("*.yaml")}
    assert types == {"real-time", "near-real-time", "batch"}


@pytest.mark.parametrize("path", committed_manifests(), ids=lambda p: str(p.relative_to(REPO)))
def test_committed_manifests_validate(path):
    loaded = load_manifest(path, variables=VARS)
    assert loaded.manifest.targets
    # The schema accepts the raw YAML too (editors use it through the yaml-language-server line).
    raw = yaml.safe_load(path.read_text())
    jsonschema.validate(raw, manifest_schema(builtin_registry()))
    r = CliRunner().invoke(app, ["validate", str(path), *[f"--var={k}={v}" for k, v in VARS.items()]])
    assert r.exit_code == 0, r.stderr


def test_schema_command_prints_installed_kinds():
    r = CliRunner().invoke(app, ["schema"])
    assert r.exit_code == 0
    assert "memory" in r.stdout  # the test plugin is installed, so it is in the printed schema
