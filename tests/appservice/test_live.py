"""Opt-in: the App Service scenario against real Azure, the same function the simulated test runs.

Runs only when AZURE_SUBSCRIPTION_ID and AZURE_RESOURCE_GROUP are set, with a credential
DefaultAzureCredential can find; APP_SERVICE_REGION defaults to westeurope.  It creates a real,
billed P0v3 plan and a web app (run: package), and destroys them at the end.
"""

from __future__ import annotations

import os
import uuid

import pytest

from orchestrator.azure.session import AzureSession
from tests.aci.scenarios import apply
from tests.appservice import scenarios

REQUIRED = ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP")
pytestmark = [
    pytest.mark.live,
    pytest.mark.slow,
    pytest.mark.skipif(any(not os.environ.get(v) for v in REQUIRED),
                       reason=f"live App Service tests need {', '.join(REQUIRED)} (and an Azure login)"),
]

MANIFEST = """\
apiVersion: deployctl/v1
name: dctl{suffix}
model: {{path: ./model}}
environment: {{python: "3.11"}}
code: {{path: ./src, entry: score.py}}
scoring: {{type: real-time, sample_request: ./sample.json}}
targets:
  - {{name: prod, kind: app-service, subscription: "{sub}", resource_group: "{rg}", region: "{region}", run: package}}
"""


def test_blue_green_through_the_staging_slot(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.txt").write_text("w1\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "sample.json").write_text('{"data": [[1, 2, 3, 4]]}')
    path = tmp_path / "deployctl.yaml"
    path.write_text(MANIFEST.format(suffix=uuid.uuid4().hex[:8], sub=os.environ["AZURE_SUBSCRIPTION_ID"],
                                    rg=os.environ["AZURE_RESOURCE_GROUP"],
                                    region=os.environ.get("APP_SERVICE_REGION", "westeurope")))
    session = AzureSession()
    try:
        scenarios.blue_green(path, session)
    finally:
        assert apply(path, session, destroy=True)[1].ok
