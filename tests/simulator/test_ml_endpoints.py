"""azure-ai-ml's MLClient against the simulator: online endpoints, LROs, conflicts, faults, quota."""

from __future__ import annotations

import time

import pytest
from azure.ai.ml.entities import ManagedOnlineDeployment, ManagedOnlineEndpoint
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from tests.simulator.conftest import OTHER_SUB, SUB, mlclient


def test_endpoint_create_get_update_delete_on_the_virtual_clock(sim):
    ml = mlclient(sim)
    t0, real0 = sim.clock.now(), time.monotonic()
    ep = ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="ep1", auth_mode="key")).result()
    assert ep.provisioning_state.lower() == "succeeded"
    assert ep.scoring_uri == "https://ep1.eastus.inference.ml.azure.com/score"
    assert sim.clock.now() - t0 >= sim.latency.lro_seconds("endpoint")  # polled through simulated time
    polls = [r for r in sim.requests if r.operation == "OperationStatus_Get"]
    assert polls and all("mfeOperationsStatus" in r.path for r in polls)
    ep.tags = {"team": "risk"}
    ml.online_endpoints.begin_create_or_update(ep).result()
    assert ml.online_endpoints.get("ep1").tags == {"team": "risk"}
    ml.online_endpoints.begin_delete(name="ep1").result()
    with pytest.raises(ResourceNotFoundError):
        ml.online_endpoints.get("ep1")
    assert time.monotonic() - real0 < 30  # nothing slept for real


def test_second_operation_while_updating_gets_409(sim):
    ml = mlclient(sim)
    with sim.clock.hold():  # the first poller (azure-core polls in a thread) cannot finish meanwhile
        first = ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="busy-ep"))
        with pytest.raises(HttpResponseError) as e:
            ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="busy-ep", tags={"a": "b"}))
    assert e.value.status_code == 409
    assert "Creating provisioning state" in str(e.value)
    assert first.result().provisioning_state.lower() == "succeeded"


def test_endpoint_names_are_unique_per_region_and_validated(sim):
    sim.add_workspace(SUB, "rg2", "ws2")
    mlclient(sim).online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="dup-ep")).result()
    with pytest.raises(HttpResponseError) as e:
        mlclient(sim, rg="rg2", ws="ws2").online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="dup-ep"))
    assert e.value.status_code == 400 and "unique per region" in str(e.value)


def test_429_with_retry_after_is_retried_by_azure_core_on_the_virtual_clock(sim):
    ml = mlclient(sim)
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="ep2")).result()
    sim.faults.retry_after = 7
    sim.faults.on("OnlineEndpoints_Get", "429", times=2)
    slept = sim.clock.slept
    assert ml.online_endpoints.get("ep2").name == "ep2"
    assert sim.clock.slept - slept >= 14
    assert [k for _, k in sim.faults.injected] == ["429", "429"]
    gets = [r.status for r in sim.requests if r.operation == "OnlineEndpoints_Get"]
    assert gets[-3:-1] == [429, 429]


@pytest.mark.parametrize("kind,code", [("lro-failed", "InternalServerError"), ("lro-canceled", "OperationCanceled")])
def test_lro_ending_failed_or_canceled_raises(sim, kind, code):
    ml = mlclient(sim)
    sim.faults.on("OnlineEndpoints_CreateOrUpdate", kind)
    with pytest.raises(HttpResponseError) as e:
        ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="ep3")).result()
    assert code in str(e.value)
    state = "Failed" if kind == "lro-failed" else "Canceled"
    assert sim.get(f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/"
                   "onlineEndpoints/ep3")["properties"]["provisioningState"] == state


def test_denied_subscription_gives_403(sim):
    sim.add_workspace(OTHER_SUB, "rg", "ws")
    sim.deny(subscription=OTHER_SUB)
    with pytest.raises(HttpResponseError) as e:
        mlclient(sim, sub=OTHER_SUB).online_endpoints.get("x")
    assert e.value.status_code == 403
    assert mlclient(sim).online_endpoints.list() is not None  # the other subscription is untouched


def test_denied_workspace_for_one_principal_only(sim):
    from orchestrator.azure.simulator.credential import SimulatedCredential

    sim.deny(subscription=SUB, resource_group="rg", workspace="ws", principal="intruder")
    with pytest.raises(HttpResponseError) as e:
        mlclient(sim, credential=SimulatedCredential("intruder")).online_endpoints.get("x")
    assert e.value.status_code == 403
    with pytest.raises(ResourceNotFoundError):
        mlclient(sim).online_endpoints.get("x")


def _deployment(name: str, instance_type: str, count: int) -> ManagedOnlineDeployment:
    return ManagedOnlineDeployment(name=name, endpoint_name="qep", instance_type=instance_type, instance_count=count,
                                   model="azureml:m:1", environment="azureml:e:1")


def _seed_assets(sim, ml):
    from azure.ai.ml.entities import Environment

    sim.add_model(SUB, "rg", "ws", "m", "1", {"model.pkl": b"x"})
    ml.environments.create_or_update(Environment(name="e", version="1", image="mcr.microsoft.com/azureml/minimal-ubuntu22.04-py311-cpu-inference"))
    assert ml.models.get("m", "1").path.endswith("models/m/1/model/")
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="qep")).result()


def test_quota_reserves_20_percent_and_out_of_quota_fails(sim):
    ml = mlclient(sim)
    _seed_assets(sim, ml)
    sim.set_quota(SUB, "eastus", "standardDSv2Family", 16)
    # Standard_DS3_v2 = 4 cores: 3 instances reserve ceil(3.6)=4 x 4 = 16 cores: fits exactly
    d = ml.online_deployments.begin_create_or_update(_deployment("blue", "Standard_DS3_v2", 3)).result()
    assert d.provisioning_state.lower() == "succeeded"
    row = next(u for u in ml.compute.list_usage() if "standardDSv2Family" in str(u.name))
    # Usage._from_rest_object keeps the wire's camelCase keys (an SDK quirk the targets handle too)
    assert (row.__dict__["currentValue"], row.limit) == (16, 16)
    with pytest.raises(HttpResponseError) as e:
        ml.online_deployments.begin_create_or_update(_deployment("green", "Standard_DS2_v2", 1)).result()
    assert "OutOfQuota" in str(e.value)


def test_invalid_instance_type_is_400(sim):
    ml = mlclient(sim)
    _seed_assets(sim, ml)
    with pytest.raises(HttpResponseError) as e:
        ml.online_deployments.begin_create_or_update(_deployment("blue", "Standard_Bogus_v9", 1))
    assert e.value.status_code == 400 and "not supported" in str(e.value)


def test_keys_token_and_regenerate(sim):
    ml = mlclient(sim)
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="kep")).result()
    before = ml.online_endpoints.get_keys("kep")
    ml.online_endpoints.begin_regenerate_keys("kep", key_type="primary").result()
    after = ml.online_endpoints.get_keys("kep")
    assert after.primary_key != before.primary_key and after.secondary_key == before.secondary_key
    assert after.primary_key not in str(ml.online_endpoints.get("kep")._to_dict())  # keys only via listKeys
    token = ml.online_endpoints.get_keys("kep") and sim.requests[-1]
    assert token.operation == "OnlineEndpoints_ListKeys"


def test_kubernetes_endpoint_uses_the_attached_compute_instance_types(sim):
    from azure.ai.ml.entities import KubernetesOnlineDeployment, KubernetesOnlineEndpoint

    ml = mlclient(sim)
    sim.add_kubernetes_compute(SUB, "rg", "ws", "k8s")
    assert ml.compute.get("k8s").type.lower() == "kubernetes"
    sim.add_model(SUB, "rg", "ws", "m", "1", {"model.pkl": b"x"})
    from azure.ai.ml.entities import Environment

    ml.environments.create_or_update(Environment(name="e", version="1", image="img:1"))
    ml.online_endpoints.begin_create_or_update(KubernetesOnlineEndpoint(name="kube-ep", compute="k8s")).result()
    from azure.ai.ml.entities import ResourceRequirementsSettings, ResourceSettings

    bad = KubernetesOnlineDeployment(name="blue", endpoint_name="kube-ep", instance_type="gpularge",
                                     model="azureml:m:1", environment="azureml:e:1", instance_count=1,
                                     resources=ResourceRequirementsSettings(requests=ResourceSettings(cpu="0.5", memory="1Gi")))
    with pytest.raises(HttpResponseError) as e:
        ml.online_deployments.begin_create_or_update(bad)
    assert "not defined on compute" in str(e.value)
    bad.instance_type = "defaultinstancetype"
    assert ml.online_deployments.begin_create_or_update(bad).result().provisioning_state.lower() == "succeeded"


def test_registry_model_versions_through_the_registry_data_plane(sim):
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Model

    sim.add_registry(SUB, "rg", "shared-reg")
    sim.add_model(SUB, "rg", "ws", "m", "1", {"model.pkl": b"x"})
    reg = MLClient(sim.credential, registry_name="shared-reg", transport=sim.transport, show_progress=False)
    with pytest.raises(ResourceNotFoundError):
        reg.models.get("m", "1")
    created = reg.models.create_or_update(Model(
        name="m", version="1",
        path=f"azureml://subscriptions/{SUB}/resourceGroups/rg/workspaces/ws/datastores/workspaceblobstore/paths/models/m/1/model/"))
    assert created.id == "azureml://registries/shared-reg/models/m/versions/1"
    assert reg.models.get("m", "1").version == "1"
    hosts = {r.host for r in sim.requests}
    assert "eastus.api.azureml.ms" in hosts  # discovery, then the management front end
    # a deployment in the workspace can name the registry model
    ml = mlclient(sim)
    from azure.ai.ml.entities import Environment

    ml.environments.create_or_update(Environment(name="e", version="1", image="img:1"))
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="reg-ep")).result()
    dep = ManagedOnlineDeployment(name="blue", endpoint_name="reg-ep", model=created.id, environment="azureml:e:1",
                                  instance_type="Standard_DS2_v2", instance_count=1)
    assert ml.online_deployments.begin_create_or_update(dep).result().provisioning_state.lower() == "succeeded"
    missing = ManagedOnlineDeployment(name="green", endpoint_name="reg-ep", environment="azureml:e:1",
                                      model="azureml://registries/shared-reg/models/nope/versions/9",
                                      instance_type="Standard_DS2_v2", instance_count=1)
    with pytest.raises(HttpResponseError) as e:
        ml.online_deployments.begin_create_or_update(missing)
    assert e.value.status_code == 400


def test_registry_import_of_a_workspace_model_is_a_polled_copy(sim):
    """What ``models.share()`` sends, through a registry client on the transport: the import is a
    long-running operation polled on the regional host; the registry version gets its own copy."""
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities._assets.workspace_asset_reference import WorkspaceAssetReference
    from azure.ai.ml.exceptions import ValidationException

    from orchestrator.azure.simulator.providers import storage

    sim.add_registry(SUB, "rg", "shared-reg")
    sim.add_model(SUB, "rg", "ws", "m", "1", {"model.pkl": b"weights"})
    ws = mlclient(sim).workspaces.get("ws")
    reg = MLClient(sim.credential, registry_name="shared-reg", transport=sim.transport, show_progress=False)
    source = f"azureml://locations/{ws.location}/workspaces/{ws._workspace_id}/models/m/versions/1"
    shared = reg.models.create_or_update(WorkspaceAssetReference(name="m", version="1", asset_id=source))
    assert shared.id == "azureml://registries/shared-reg/models/m/versions/1"
    imports = [r for r in sim.requests if r.operation == "RegistryAssetReference_Import"]
    assert [(r.method, r.status, r.host) for r in imports] == [("POST", 202, "eastus.api.azureml.ms")]
    polls = [r for r in sim.requests if r.operation == "OperationStatus_Get"]
    assert polls and all(r.host == "eastus.api.azureml.ms" for r in polls)
    account, container, path = shared.path.split("//")[1].split(".")[0], "registry-assets", "models/m/1/model/model.pkl"
    assert storage.get_blob(sim, account, container, path) == b"weights"
    # the SDK refuses an existing version itself; the service answers 409 to a raw second import
    with pytest.raises(ValidationException):
        reg.models.create_or_update(WorkspaceAssetReference(name="m", version="1", asset_id=source))
    for bad_source, status in ((source.replace("/versions/1", "/versions/2"), 404),
                               (source.replace(ws._workspace_id, "0" * 8 + ws._workspace_id[8:]), 404),
                               ("not-an-asset-id", 400)):
        with pytest.raises(HttpResponseError) as e:
            reg.models.create_or_update(WorkspaceAssetReference(name="m2", version="1", asset_id=bad_source))
        assert e.value.status_code == status, (bad_source, e.value)
