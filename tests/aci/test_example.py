"""examples/aci end to end with the real CLI and `--simulate`: the image is built (uv installs the
quickstart's scikit-learn for the Linux platform), pushed to the simulated registry, and the
container group scores the quickstart model from the image's own layers."""

from __future__ import annotations

import json

import pytest

from tests.azureml.test_examples_simulated import run
from tests.conftest import REPO

pytest.importorskip("azure.mgmt.containerregistry", reason="the Azure SDKs are not installed (pip install 'deployctl[azure]')")


def round_trip(manifest: str, tmp_path) -> str:
    """apply, a clean replan, invoke (the quickstart's answer), destroy with no scorer left; the
    apply's stdout."""
    state = ["--simulate", "--state-dir", str(tmp_path / "state")]
    applied = run("apply", manifest, "--yes", *state)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    plan = run("plan", manifest, *state)
    assert plan.returncode == 0 and "0 to create, 0 to update, 0 to replace, 0 to delete" in plan.stdout, plan.stdout
    inv = run("invoke", manifest, *state, "--file", str(REPO / "examples" / "quickstart" / "sample-request.json"), "-o", "json")
    assert inv.returncode == 0, inv.stdout + inv.stderr
    assert json.loads(inv.stdout[inv.stdout.index("{"):])["body"] == [0, 2]
    destroyed = run("destroy", manifest, "--yes", *state)
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert not list((tmp_path / "state").glob("simulated-azure-scorers/*.json"))  # nothing left running
    return str(applied.stdout)


@pytest.mark.slow
def test_aci_example_applies_scores_replans_clean_and_destroys(tmp_path):
    round_trip(str(REPO / "examples" / "aci" / "deployctl.yaml"), tmp_path)
