"""The Azure ML examples run end to end with `deployctl apply --simulate` (the real CLI, the real
SDK clients, the simulator; deployments really score the quickstart model)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, subprocess_env

pytest.importorskip("orchestrator.azure.simulator", reason="the Azure simulator is not importable")
DEPLOYCTL = [sys.executable, "-m", "orchestrator.cli"] if not (Path(sys.executable).parent / "deployctl").exists() \
    else [str(Path(sys.executable).parent / "deployctl")]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEPLOYCTL, *args], capture_output=True, text=True, env=subprocess_env(), timeout=900,
                          cwd=REPO)


@pytest.mark.slow
@pytest.mark.parametrize("example", ["azureml-online", "azureml-batch", "azureml-cross-subscription",
                                     "azureml-cross-subscription/registry.yaml"])
def test_example_applies_with_simulate_and_replans_clean(example, tmp_path):
    manifest = REPO / "examples" / example
    manifest = manifest if manifest.suffix == ".yaml" else manifest / "deployctl.yaml"
    state = tmp_path / "state"
    if example.startswith("azureml-cross-subscription"):
        seeded = subprocess.run([sys.executable, str(manifest.parent / "seed_simulator.py"),
                                 str(state / "simulated-azure.json")], capture_output=True, text=True,
                                env=subprocess_env(), timeout=300, cwd=REPO)
        assert seeded.returncode == 0, seeded.stderr
    applied = run("apply", str(manifest), "--simulate", "--yes", "--state-dir", str(state))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    plan = run("plan", str(manifest), "--simulate", "--state-dir", str(state))
    assert plan.returncode == 0 and "0 to create, 0 to update, 0 to replace, 0 to delete" in plan.stdout, plan.stdout
    if example == "azureml-batch":
        out = tmp_path / "out"
        inv = run("invoke", str(manifest), "--simulate", "--state-dir", str(state), "--input",
                  str(REPO / "examples" / "batch" / "data"), "--output-path", str(out))
        assert inv.returncode == 0, inv.stdout + inv.stderr
        assert (out / "predictions.csv").read_text().count("\n") >= 5
    elif example.endswith("registry.yaml"):  # shared, not copied: the deployment serves the registry version
        status = run("status", str(manifest), "--simulate", "--state-dir", str(state), "-o", "json")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "azureml://registries/models-registry/models/iris/versions/1" in status.stdout, status.stdout
        inv = run("invoke", str(manifest), "--simulate", "--state-dir", str(state), "--file",
                  str(REPO / "examples" / "quickstart" / "sample-request.json"), "-o", "json")
        assert inv.returncode == 0 and json.loads(inv.stdout[inv.stdout.index("{"):])["body"] == [0, 2], inv.stdout
    elif example == "azureml-online":
        inv = run("invoke", str(manifest), "--simulate", "--state-dir", str(state), "--file",
                  str(REPO / "examples" / "quickstart" / "sample-request.json"), "-o", "json")
        assert inv.returncode == 0, inv.stdout + inv.stderr
        result = json.loads(inv.stdout[inv.stdout.index("{"):])
        assert result["ok"] and result["body"] == [0, 2]  # the quickstart's two iris samples, really scored
    destroyed = run("destroy", str(manifest), "--simulate", "--yes", "--state-dir", str(state))
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
