"""The ``aci`` target end to end: the real ContainerInstance and ContainerRegistry clients and
deployctl's image builder against the Azure simulator, whose container groups run the pushed
image's own runtime, site-packages, model and code.  Nothing of deployctl is mocked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.engine import Engine
from orchestrator.target import InvokeRequest
from tests.aci import scenarios
from tests.images.conftest import push_base

pytest.importorskip("azure.mgmt.containerinstance", reason="the Azure SDKs are not installed (pip install 'deployctl[azure]')")
pytest.importorskip("azure.mgmt.containerregistry", reason="the Azure SDKs are not installed (pip install 'deployctl[azure]')")

SUB = "00000000-0000-0000-0000-0000000000a1"
PROD = "00000000-0000-0000-0000-0000000000a2"

MANIFEST = """\
apiVersion: deployctl/v1
name: iris
model:
  path: ./model
environment:
  python: "3.11"
  image: {base}
code:
  path: ./src
  entry: score.py
scoring:
  type: real-time
  sample_request: ./sample.json
resources:
  memory_gb: {memory}
  gpu: {gpu}
targets:
  - name: prod
    kind: aci
    subscription: {sub}
    resource_group: rg
    region: westeurope
    registry: {registry}
{extra}"""

SCORE = scenarios.SCORE


def _registry(sim, sub: str, name: str) -> None:
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.containerregistry.models import Registry, Sku

    sim.add_resource_group(sub, "rg", "westeurope")
    client = ContainerRegistryManagementClient(sim.credential, sub, transport=sim.transport, polling_interval=0)
    client.registries.begin_create("rg", name, Registry(location="westeurope", sku=Sku(name="Standard"))).result()


@pytest.fixture
def cloud(azure_simulator, tmp_path):
    from orchestrator.images.registry import RegistryAuth

    sim = azure_simulator
    _registry(sim, SUB, "devacr")
    root = tmp_path / "base-root" / "usr" / "local" / "bin"
    root.mkdir(parents=True)
    (root / "python3.11").write_text("")
    base = push_base("devacr.azurecr.io", "base/python", tmp_path / "base-root", tmp_path / "base-cache",
                     env=["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHON_VERSION=3.11.9"],
                     auth=RegistryAuth(credential=sim.credential), transport=sim.transport)
    return sim, base


@pytest.fixture
def project(tmp_path, cloud):
    _, base = cloud
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.txt").write_text("w1\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text(SCORE.format(version=1))
    (tmp_path / "sample.json").write_text('{"data": [[1, 2, 3, 4]]}')

    def write(*, registry: str = "devacr", sub: str = SUB, memory: str = "auto", gpu: int = 0, **extra: str) -> Path:
        lines = "".join(f"    {k}: {v}\n" for k, v in extra.items())
        path = tmp_path / "deployctl.yaml"
        path.write_text(MANIFEST.format(base=base, registry=registry, sub=sub, memory=memory, gpu=gpu, extra=lines))
        return path

    write.dir = tmp_path  # type: ignore[attr-defined]
    return write


def engine(path: Path, sim, **opts) -> Engine:
    return scenarios.engine(path, sim.session(), sim.clock.sleep, **opts)


def apply(path: Path, sim, destroy: bool = False, **opts):
    return scenarios.apply(path, sim.session(), sim.clock.sleep, destroy=destroy, **opts)


def groups(sim) -> list[dict]:
    return [r for r in sim.state["resources"].values() if r.get("type", "").lower() == "microsoft.containerinstance/containergroups"]


def test_create_score_noop_code_update_blue_green_and_destroy(project, cloud):
    sim, _ = cloud
    path = project()
    plan = engine(path, sim).plan()
    findings = " ".join(f.message for f in plan.targets[0].findings)
    assert "1 vCPU" in findings and "scoring URI changes" in findings and "quota in westeurope" in findings
    assert apply(path, sim)[1].ok
    [g] = groups(sim)
    out = engine(path, sim).status()[0].outputs
    assert out["scoring_uri"].startswith("http://iris-prod-") and out["scoring_uri"].endswith(".westeurope.azurecontainer.io:5001/score")
    assert out["image"].startswith("devacr.azurecr.io/deployctl/iris@sha256:")
    # pulled with a scoped token, never admin credentials; the key is a secure value, never shown
    assert g["properties"]["imageRegistryCredentials"][0]["username"] == "deployctl-iris-prod"
    key = next((path.parent / ".state").rglob("scoring-key")).read_text()
    shown = json.dumps([s.model_dump(mode="json") for s in engine(path, sim).status()])
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient

    aci = ContainerInstanceManagementClient(sim.credential, SUB, transport=sim.transport)
    shown += json.dumps(aci.container_groups.get("rg", g["name"]).as_dict())
    assert key not in shown and "secureValue" not in shown
    from orchestrator.azure.scoring import score

    assert score(sim.session(), out["scoring_uri"], "wrong-key", {"data": [[1]]})[0] == 401
    assert "ready" in engine(path, sim).logs("prod", tail=50).lower()
    assert apply(path, sim, destroy=True)[1].ok

    scenarios.blue_green(path, sim.session(), sim.clock.sleep)
    assert groups(sim) == [] and not [r for r in sim.state["resources"] if "/tokens/" in r]


def test_a_failing_new_version_never_takes_over(project, cloud):
    sim, _ = cloud
    path = project()
    assert apply(path, sim)[1].ok
    [live] = groups(sim)
    (project.dir / "src" / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    raise ValueError('broken')\n")
    plan, result = apply(path, sim)
    assert not result.ok and "smoke test" in result.targets[0].error
    [still] = groups(sim)
    assert still["name"] == live["name"]  # the failed group was deleted; the live one kept serving
    (project.dir / "src" / "score.py").write_text(SCORE.format(version=1))
    assert engine(path, sim).invoke("prod", InvokeRequest(body={"data": [[1]]})).ok


def test_capacity_errors_move_to_the_next_region_without_leaving_a_group(project, cloud):
    sim, _ = cloud
    from orchestrator.azure.simulator.providers.aci import settings

    settings(sim)["capacity_errors"]["westeurope"] = 5
    plan, result = apply(project(region_fallbacks="[northeurope]"), sim)
    assert result.ok, result.model_dump_json(indent=2)
    [g] = groups(sim)
    assert g["location"] == "northeurope"


def test_limits_gpu_and_quota_are_plan_errors_before_any_write(project, cloud):
    sim, _ = cloud
    for memory, gpu, words in (("32", 0, "beyond ACI's limit of 4 vCPU and 16 GB"), ("auto", 1, "no longer offers GPU")):
        plan, result = apply(project(memory=memory, gpu=gpu), sim)
        assert not result.ok
        assert words in result.targets[0].error and "aks" in result.targets[0].error
    from orchestrator.azure.simulator.providers.aci import settings

    settings(sim)["core_limit"] = 0
    plan, result = apply(project(), sim)
    errors = [f.message for f in plan.targets[0].findings if f.severity.value == "error"]
    assert errors and "needs 1" in errors[0]
    assert not result.ok and groups(sim) == []


def test_a_taken_dns_label_and_an_unpullable_image_are_clear_errors(project, cloud):
    import copy

    sim, _ = cloud
    path = project()
    assert apply(path, sim)[1].ok
    [g] = groups(sim)
    # someone else's group (another resource group, no deployctl tags) now holds the label
    foreign = copy.deepcopy(g)
    foreign["id"] = g["id"].replace("/resourceGroups/rg/", "/resourceGroups/other/")
    foreign["tags"] = {}
    del sim.state["resources"][g["id"].lower()]
    sim.state["resources"][foreign["id"].lower()] = foreign
    _, result = apply(path, sim)
    assert not result.ok and "DNS name label" in result.targets[0].error and "dns_label" in result.targets[0].error
    assert groups(sim) == [foreign]  # nothing half-made left behind

    identity = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/puller"
    sim.state["denied_pulls"] = [identity]
    _, result = apply(project(identity=identity, dns_label="iris-other"), sim)
    assert not result.ok and "not accessible" in result.targets[0].error and "AcrPull" in result.targets[0].error
    assert groups(sim) == [foreign]


def test_promote_from_dev_registry_imports_by_digest_into_prod(project, cloud):
    sim, _ = cloud
    _registry(sim, PROD, "prodacr")
    dev = f"{{name: devacr, subscription: {SUB}, resource_group: rg}}"
    path = project(registry=f"{{name: prodacr, subscription: {PROD}, resource_group: rg}}", sub=PROD, promote_from=dev)
    plan, result = apply(path, sim)
    assert result.ok, result.model_dump_json(indent=2)
    image = result.targets[0].outputs["image"]
    assert image.startswith("prodacr.azurecr.io/deployctl/iris@sha256:")
    assert any(r.operation == "Registries_ImportImage" for r in sim.requests)
    assert not [r for r in sim.requests if r.host == "prodacr.azurecr.io" and "/blobs/uploads" in r.path]
    assert engine(path, sim).invoke("prod", InvokeRequest(body={"data": [[1]]})).ok


def test_an_interrupted_rollout_converges_on_the_next_apply(project, cloud):
    """The states a kill leaves between the steps of a rollout (faults stop it there, for good):
    a new group that was never promoted, and a promoted one whose predecessor was not deleted.
    The next apply ends with one group, the current version, answering."""
    sim, _ = cloud
    path = project()
    assert apply(path, sim)[1].ok
    (project.dir / "src" / "score.py").write_text(SCORE.format(version=2))
    sim.faults.on("ContainerGroups_Update", "503", times=100)  # promotion never happens
    _, result = apply(path, sim)
    assert not result.ok
    assert len(groups(sim)) == 2  # the old live one and the unpromoted new one
    sim.faults.by_operation.clear()
    plan, result = apply(path, sim)
    assert result.ok, result.model_dump_json(indent=2)
    [g] = groups(sim)
    assert engine(path, sim).invoke("prod", InvokeRequest(body={"data": [[1]]})).body["version"] == 2

    (project.dir / "src" / "score.py").write_text(SCORE.format(version=3))
    sim.faults.on("ContainerGroups_Delete", "503", times=100)  # the previous group is never deleted
    _, result = apply(path, sim)
    assert not result.ok and len(groups(sim)) == 2
    assert engine(path, sim).invoke("prod", InvokeRequest(body={"data": [[1]]})).body["version"] == 3
    sim.faults.by_operation.clear()
    plan = engine(path, sim).plan()
    assert [(c.action.value, c.name) for c in plan.targets[0].pending] == [("delete", g["name"])]
    assert apply(path, sim)[1].ok
    assert len(groups(sim)) == 1 and not apply(path, sim)[0].has_changes


def test_a_region_without_aci_falls_back_or_says_so(project, cloud):
    sim, _ = cloud
    from orchestrator.azure.simulator.providers.aci import settings

    settings(sim)["unavailable_regions"] = ["westeurope"]
    _, result = apply(project(), sim)
    assert not result.ok and "not available for resource type" in result.targets[0].error
    assert "region_fallbacks" in result.targets[0].error and groups(sim) == []
    _, result = apply(project(region_fallbacks="[swedencentral]"), sim)
    assert result.ok and groups(sim)[0]["location"] == "swedencentral"


def test_an_image_without_deployctls_runtime_starts_and_exits_with_a_reason(cloud):
    """The simulator's side of 'an image without the runtime': the group runs, its container exits."""
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient
    from azure.mgmt.containerinstance import models as m
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

    sim, base = cloud
    acr = ContainerRegistryManagementClient(sim.credential, SUB, transport=sim.transport)
    registry = next(r for k, r in sim.state["resources"].items() if k.endswith("/registries/devacr"))
    registry["properties"]["adminUserEnabled"] = True  # admin credentials: any pull credential will do here
    creds = acr.registries.list_credentials("rg", "devacr")
    aci = ContainerInstanceManagementClient(sim.credential, SUB, transport=sim.transport, polling_interval=0)
    group = m.ContainerGroup(location="westeurope", os_type="Linux", containers=[m.Container(
        name="c", image=base, resources=m.ResourceRequirements(requests=m.ResourceRequests(cpu=1, memory_in_gb=1)))],
        image_registry_credentials=[m.ImageRegistryCredential(server="devacr.azurecr.io", username=creds.username,
                                                              password=creds.passwords[0].value)])
    aci.container_groups.begin_create_or_update("rg", "bare", group).result()
    got = aci.container_groups.get("rg", "bare")
    assert got.instance_view.state == "Failed"
    assert got.containers[0].instance_view.current_state.state == "Terminated"
    assert "runtime is not in this image" in aci.containers.list_logs("rg", "bare", "c").content


def test_a_user_assigned_identity_pulls_without_any_token(project, cloud):
    sim, _ = cloud
    identity = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/puller"
    path = project(identity=identity)
    plan, result = apply(path, sim)
    assert result.ok, result.model_dump_json(indent=2)
    [g] = groups(sim)
    assert g["properties"]["imageRegistryCredentials"] == [{"server": "devacr.azurecr.io", "identity": identity}]
    assert identity in g["identity"]["userAssignedIdentities"]
    assert not [r for r in sim.state["resources"] if "/tokens/" in r]  # no token made
    assert engine(path, sim).invoke("prod", InvokeRequest(body={"data": [[1]]})).ok
