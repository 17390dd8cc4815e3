"""Opt-in: the Azure ML scenarios against real Azure.

Runs only when AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and AZUREML_WORKSPACE are set (and a
credential DefaultAzureCredential can find); skips otherwise.  It creates real, billed resources
(a managed online endpoint on the cheapest fitting SKU, a small AmlCompute cluster at 0 nodes) and
destroys them at the end, whatever happened.  DEPLOYCTL_LIVE_PREFIX changes the manifest name so
parallel runs do not collide.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from orchestrator.engine import Engine
from orchestrator.manifest import load_manifest
from orchestrator.plan import Action

REQUIRED = ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE")
pytestmark = [
    pytest.mark.live,
    pytest.mark.slow,
    pytest.mark.skipif(any(not os.environ.get(v) for v in REQUIRED),
                       reason=f"live Azure tests need {', '.join(REQUIRED)} (and an Azure login)"),
]

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart"


def _manifest(tmp_path: Path, kind_block: str, scoring: str = "real-time") -> Path:
    name = os.environ.get("DEPLOYCTL_LIVE_PREFIX", "dctl") + "-" + uuid.uuid4().hex[:6]
    text = f"""\
apiVersion: deployctl/v1
name: {name}
model:
  path: {QUICKSTART / 'model'}
environment:
  python: "3.11"
  requirements: {QUICKSTART / 'requirements.txt'}
code:
  path: {QUICKSTART / 'src'}
scoring:
  type: {scoring}
  sample_request: {QUICKSTART / 'sample-request.json'}
targets:
{kind_block}
"""
    path = tmp_path / "deployctl.yaml"
    path.write_text(text)
    return path


def _target_block(kind: str, extra: str = "") -> str:
    return (f"  - name: live\n    kind: {kind}\n    subscription: {os.environ['AZURE_SUBSCRIPTION_ID']}\n"
            f"    resource_group: {os.environ['AZURE_RESOURCE_GROUP']}\n"
            f"    workspace: {os.environ['AZUREML_WORKSPACE']}\n{extra}")


def test_online_endpoint_create_noop_update_destroy(tmp_path):
    path = _manifest(tmp_path, _target_block("online-endpoint", "    rollout: {steps: [50, 100]}\n"))
    engine = Engine(load_manifest(path), state_dir=tmp_path / ".state")
    try:
        plan = engine.plan()
        assert not plan.blocked, plan.to_json()
        result = engine.apply(plan, check_fresh=False)
        assert result.ok, result.model_dump_json(indent=2)
        assert result.targets[0].outputs["scoring_uri"].startswith("https://")
        again = Engine(load_manifest(path), state_dir=tmp_path / ".state").plan()
        assert not again.has_changes, again.to_json()
    finally:
        engine2 = Engine(load_manifest(path), state_dir=tmp_path / ".state")
        engine2.apply(engine2.plan(destroy=True), check_fresh=False)


def test_batch_endpoint_create_invoke_destroy(tmp_path):
    path = _manifest(tmp_path, _target_block("batch-endpoint", "    compute: {name: dctl-live, max_nodes: 1}\n"),
                     scoring="batch")
    engine = Engine(load_manifest(path), state_dir=tmp_path / ".state")
    try:
        plan = engine.plan()
        assert not plan.blocked, plan.to_json()
        assert engine.apply(plan, check_fresh=False).ok
        assert any(c.action is Action.create for t in plan.targets for c in t.changes)
    finally:
        engine2 = Engine(load_manifest(path), state_dir=tmp_path / ".state")
        engine2.apply(engine2.plan(destroy=True), check_fresh=False)
