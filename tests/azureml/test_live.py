"""Opt-in: the Azure ML scenarios against real Azure -- the same scenario functions
(:mod:`tests.azureml.scenarios`) test_scenarios_simulated.py runs against the simulator.

Runs only when AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and AZUREML_WORKSPACE are set (and a
credential DefaultAzureCredential can find); skips otherwise.  Some scenarios need more, and each
skips naming what it needs:

- AZUREML_SOURCE_MODEL_URI: an ``azureml://subscriptions/.../workspaces/.../models/<n>/versions/<v>``
  model in another workspace (cross-workspace copy), whose folder holds ``model/model.pkl``
  loadable by the quickstart's score.py (e.g. the quickstart model registered there);
- AZUREML_REGISTRY (+ AZUREML_REGISTRY_RESOURCE_GROUP when it is not in AZURE_RESOURCE_GROUP): a
  registry replicated to the workspace's region, to share that model through (registry versions
  are never deleted: the version stays in the registry afterwards);
- AZUREML_KUBERNETES_COMPUTE (+ AZUREML_KUBERNETES_INSTANCE_TYPE): a Kubernetes compute attached
  to the workspace;
- AZUREML_BATCH_COMPUTE (optional, default ``dctl-live``): the AmlCompute cluster batch uses
  (created at 0-1 nodes when missing, left in place).

They create real, billed resources (managed online endpoints on the cheapest fitting SKU) and
destroy them at the end, whatever happened.  DEPLOYCTL_LIVE_PREFIX changes the manifest names so
parallel runs do not collide.
"""

from __future__ import annotations

import os

import pytest

from orchestrator.azure.session import AzureSession
from tests.azureml import scenarios

REQUIRED = ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE")
pytestmark = [
    pytest.mark.live,
    pytest.mark.slow,
    pytest.mark.skipif(any(not os.environ.get(v) for v in REQUIRED),
                       reason=f"live Azure tests need {', '.join(REQUIRED)} (and an Azure login)"),
]


def needs(*names: str) -> pytest.MarkDecorator:
    missing = [n for n in (*REQUIRED, *names) if not os.environ.get(n)]
    return pytest.mark.skipif(bool(missing), reason=f"this live Azure test needs {', '.join(missing)} "
                                                    f"(see the module docstring)")


@pytest.fixture
def world(tmp_path):
    from azure.core.pipeline.transport import RequestsTransport

    rec = scenarios.RecordingTransport(RequestsTransport())
    w = scenarios.World(os.environ["AZURE_SUBSCRIPTION_ID"], os.environ["AZURE_RESOURCE_GROUP"],
                        os.environ["AZUREML_WORKSPACE"], AzureSession(transport=rec), tmp_path,
                        prefix=os.environ.get("DEPLOYCTL_LIVE_PREFIX", "dctl"))
    yield w
    rec.shutdown()


def test_blue_green_update(world):
    scenarios.blue_green_update(world)


def test_failed_smoke_test_rolls_back(world):
    scenarios.failed_smoke_test_rolls_back(world)


def test_batch_invoke_is_deterministic(world):
    scenarios.batch_invoke_is_deterministic(world, os.environ.get("AZUREML_BATCH_COMPUTE", "dctl-live"))


@needs("AZUREML_SOURCE_MODEL_URI")
def test_cross_workspace_copy(world):
    scenarios.cross_workspace_copy(world, os.environ["AZUREML_SOURCE_MODEL_URI"])


@needs("AZUREML_SOURCE_MODEL_URI", "AZUREML_REGISTRY")
def test_registry_share(world):
    rg = os.environ.get("AZUREML_REGISTRY_RESOURCE_GROUP")
    scenarios.registry_share(world, os.environ["AZUREML_SOURCE_MODEL_URI"], os.environ["AZUREML_REGISTRY"],
                             extra=f"    registry_resource_group: {rg}\n" if rg else "")


@needs("AZUREML_KUBERNETES_COMPUTE")
def test_aks_rollout(world):
    scenarios.aks_rollout(world, os.environ["AZUREML_KUBERNETES_COMPUTE"],
                          instance_type=os.environ.get("AZUREML_KUBERNETES_INSTANCE_TYPE"))
