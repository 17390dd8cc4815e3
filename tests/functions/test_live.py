"""The functions target against real Azure (opt-in): the real-time example on Flex Consumption —
apply (storage, plan, app, package, smoke test), invoke, replan clean, destroy.

Runs when AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP (an existing group) and
DEPLOYCTL_LIVE_FUNCTIONS=1 are set (credentials: DefaultAzureCredential); AZURE_REGION defaults to
eastus.  Skips otherwise.
"""

from __future__ import annotations

import os
import uuid

import pytest

import orchestrator as deployctl
from tests.functions.test_target_simulated import manifest

pytestmark = pytest.mark.live
SUB, RG = os.environ.get("AZURE_SUBSCRIPTION_ID"), os.environ.get("AZURE_RESOURCE_GROUP")
if not (SUB and RG and os.environ.get("DEPLOYCTL_LIVE_FUNCTIONS") == "1"):
    pytest.skip("live Azure Functions tests need AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and "
                "DEPLOYCTL_LIVE_FUNCTIONS=1", allow_module_level=True)


def test_real_time_example_on_azure(project, tmp_path):
    doc = manifest(project, app_name=f"deployctl-live-{uuid.uuid4().hex[:8]}",
                   region=os.environ.get("AZURE_REGION", "eastus"))
    doc["targets"][0].update({"subscription": SUB, "resource_group": RG})
    d = deployctl.load(doc, base_dir=project, state_dir=tmp_path / "state")
    try:
        result = d.apply(d.plan())
        assert result.ok, result
        assert d.invoke(body={"data": [[5.1, 3.5, 1.4, 0.2]]}).body == ["setosa"]
        assert {c.action.value for t in d.plan().targets for c in t.changes} == {"no-op"}
    finally:
        assert d.destroy().ok
