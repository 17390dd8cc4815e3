"""The shared Azure ML scenarios (:mod:`tests.azureml.scenarios`) against the simulator: the same
steps test_live.py runs against real Azure.  What only a simulator can do -- seeding a source
model in another subscription, a registry, an AKS cluster -- happens here, before the scenario."""

from __future__ import annotations

import pytest

from orchestrator.azure.session import AzureSession
from tests.azureml import scenarios
from tests.azureml.conftest import OTHER_SUB, SUB

pytestmark = pytest.mark.slow


@pytest.fixture
def world(tmp_path):
    from orchestrator.azure.simulator import AzureSimulator

    sim = AzureSimulator(seed=0)
    sim.add_workspace(SUB, "rg", "ws")
    rec = scenarios.RecordingTransport(sim.transport)
    session = AzureSession(credential=sim.credential, transport=rec, simulator=sim)
    w = scenarios.World(SUB, "rg", "ws", session, tmp_path, sleep=sim.clock.sleep)
    w.simulator = sim  # type: ignore[attr-defined] - for seeding in this module only
    yield w
    sim.close()


def _source_model(w) -> str:
    from orchestrator.packaging import iter_files

    sim = w.simulator
    sim.add_workspace(OTHER_SUB, "models-rg", "models-ws")
    files = {rel: p.read_bytes() for rel, p in iter_files(scenarios.QUICKSTART / "model")}
    sim.add_model(OTHER_SUB, "models-rg", "models-ws", "iris", "1", files=files)
    return f"azureml://subscriptions/{OTHER_SUB}/resourceGroups/models-rg/workspaces/models-ws/models/iris/versions/1"


def test_blue_green_update(world):
    scenarios.blue_green_update(world)


def test_failed_smoke_test_rolls_back(world):
    scenarios.failed_smoke_test_rolls_back(world)


def test_batch_invoke_is_deterministic(world):
    scenarios.batch_invoke_is_deterministic(world)


def test_cross_workspace_copy(world):
    scenarios.cross_workspace_copy(world, _source_model(world))


def test_registry_share(world):
    world.simulator.add_registry(SUB, "reg-rg", "models-registry")
    scenarios.registry_share(world, _source_model(world), "models-registry",
                             extra="    registry_resource_group: reg-rg\n")


def test_aks_rollout(world):
    world.simulator.add_kubernetes_compute(SUB, "rg", "ws", "k8s")
    scenarios.aks_rollout(world, "k8s")
