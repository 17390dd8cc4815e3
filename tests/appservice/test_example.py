"""examples/app-service end to end with the real CLI and `--simulate`: uv installs the quickstart's
scikit-learn for the Linux platform into the package, Kudu receives the zip, and the simulated web
app runs it with the zip's own site-packages."""

from __future__ import annotations

import json

import pytest

from tests.azureml.test_examples_simulated import run
from tests.conftest import REPO

pytest.importorskip("azure.mgmt.web", reason="the Azure SDKs are not installed (pip install 'deployctl[azure]')")


@pytest.mark.slow
def test_app_service_example_applies_scores_replans_clean_and_destroys(tmp_path):
    manifest = str(REPO / "examples" / "app-service" / "deployctl.yaml")
    state = ["--simulate", "--state-dir", str(tmp_path / "state")]
    applied = run("apply", manifest, "--yes", *state)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "https://iris-app-prod.azurewebsites.net/score" in applied.stdout
    plan = run("plan", manifest, *state)
    assert plan.returncode == 0 and "0 to create, 0 to update, 0 to replace, 0 to delete" in plan.stdout, plan.stdout
    inv = run("invoke", manifest, *state, "--file", str(REPO / "examples" / "quickstart" / "sample-request.json"), "-o", "json")
    assert inv.returncode == 0, inv.stdout + inv.stderr
    assert json.loads(inv.stdout[inv.stdout.index("{"):])["body"] == [0, 2]
    destroyed = run("destroy", manifest, "--yes", *state)
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert not list((tmp_path / "state").glob("simulated-azure-scorers/*.json"))  # no app left running
