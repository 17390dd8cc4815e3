"""Opt-in: the ACI scenario against real Azure, the same function the simulated test runs.

Runs only when AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and ACR_NAME (an existing Azure
Container Registry in that resource group) are set, with a credential DefaultAzureCredential can
find; ACI_REGION defaults to westeurope.  It creates real, billed container groups (1 vCPU) and a
pull token in the registry, and destroys them at the end.
"""

from __future__ import annotations

import os

import pytest

from orchestrator.azure.session import AzureSession
from tests.aci import scenarios

REQUIRED = ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "ACR_NAME")
pytestmark = [
    pytest.mark.live,
    pytest.mark.slow,
    pytest.mark.skipif(any(not os.environ.get(v) for v in REQUIRED),
                       reason=f"live ACI tests need {', '.join(REQUIRED)} (and an Azure login)"),
]

MANIFEST = """\
apiVersion: deployctl/v1
name: {prefix}-aci
model: {{path: ./model}}
environment: {{python: "3.11"}}
code: {{path: ./src, entry: score.py}}
scoring: {{type: real-time, sample_request: ./sample.json}}
targets:
  - {{name: prod, kind: aci, subscription: "{sub}", resource_group: "{rg}", region: "{region}", registry: "{acr}"}}
"""


def test_blue_green(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.txt").write_text("w1\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "sample.json").write_text('{"data": [[1, 2, 3, 4]]}')
    path = tmp_path / "deployctl.yaml"
    path.write_text(MANIFEST.format(prefix=os.environ.get("DEPLOYCTL_LIVE_PREFIX", "dctl"), sub=os.environ["AZURE_SUBSCRIPTION_ID"],
                                    rg=os.environ["AZURE_RESOURCE_GROUP"], region=os.environ.get("ACI_REGION", "westeurope"),
                                    acr=os.environ["ACR_NAME"]))
    session = AzureSession()
    try:
        scenarios.blue_green(path, session)
    finally:
        scenarios.apply(path, session, destroy=True)
