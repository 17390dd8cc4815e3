"""Sharing a model from another workspace through an Azure ML registry (target config ``registry:``),
end to end against the simulator: the real MLClient discovers the registry's regional host, asks
it to import the workspace asset (what ``models.share()`` does), and the deployment serves the
registry version."""

from __future__ import annotations

import pytest

from orchestrator.target import InvokeRequest
from tests.azureml.conftest import OTHER_SUB, SUB, online_target
from tests.azureml.test_simulated import _source_model, apply, cloud, engine  # noqa: F401 - fixture

REG_ID = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/registries/sharedreg"
# the deployment proves what it serves: the model file's bytes, read from AZUREML_MODEL_DIR/<folder>/
SCORE_MODEL = ("import os\n\ndef init():\n    global BYTES\n"
               "    BYTES = open(os.path.join(os.environ['AZUREML_MODEL_DIR'], 'model', 'model.pkl'), 'rb').read()\n\n"
               "def run(raw):\n    return {'model': BYTES.decode()}\n")


def _writes(rec, since: int = 0) -> list[tuple[str, str]]:
    return [(m, u) for m, u in rec.calls[since:] if m in ("PUT", "POST", "DELETE", "PATCH")
            and not u.split("?")[0].endswith(("/listKeys", "/token", "/getLogs", "/listSecrets", "/score"))]


def _imports(rec) -> list[str]:
    return [u for m, u in rec.calls if m == "POST" and u.split("?")[0].endswith("/registries/sharedreg/import")]


@pytest.fixture
def shared(project, cloud):  # noqa: F811 - the fixture imported above
    sim, session, rec = cloud
    uri = _source_model(sim, session)
    sim.add_registry(SUB, "rg", "sharedreg")
    (project.dir / "src" / "score.py").write_text(SCORE_MODEL)
    return sim, session, rec, uri


def test_first_apply_shares_through_the_registry_and_serves_its_content(project, shared):
    sim, session, rec, uri = shared
    path = project(online_target(registry="sharedreg"), model=f"  uri: {uri}")
    plan, result = apply(path, session)
    model_changes = [c for c in plan.targets[0].pending if c.type == "azureml.model"]
    assert [c.spec.get("copy") for c in model_changes] == ["share"], plan.to_json()
    assert result.ok, result.model_dump_json(indent=2)
    assert len(_imports(rec)) == 1
    # the registry holds the version, its files copied into the registry's own storage
    version = sim.get(f"{REG_ID}/models/fraud/versions/7")
    assert version is not None
    model_uri = version["properties"]["modelUri"]
    assert model_uri.startswith("https://") and "/registry-assets/" in model_uri and model_uri.endswith("/model/")
    from orchestrator.azure.simulator.providers import storage

    account, container = model_uri.split("//")[1].split(".")[0], "registry-assets"
    blobs = storage.list_blob_names(sim, account, container, "models/fraud/7/")
    assert [storage.get_blob(sim, account, container, b) for b in blobs] == [b"weights"], blobs
    # nothing was registered in the target workspace: the deployment names the registry version
    assert sim.get(f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices"
                   "/workspaces/ws/models/fraud/versions/7") is None
    out = result.targets[0].outputs
    assert out["model"] == "azureml://registries/sharedreg/models/fraud/versions/7"
    scored = engine(path, session).invoke("prod", InvokeRequest(body={"data": [[1, 2, 3]]}))
    assert scored.ok and scored.body == {"model": "weights"}, scored

    n = len(rec.calls)
    again, result2 = apply(path, session)
    assert not again.has_changes, again.to_json()
    assert result2.ok and not _writes(rec, n), _writes(rec, n)


def test_a_second_workspace_reuses_the_registry_version(project, shared):
    sim, session, rec, uri = shared
    sim.add_workspace(SUB, "rg3", "ws3")
    first = project(online_target(registry="sharedreg"), model=f"  uri: {uri}")
    assert apply(first, session)[1].ok
    second = project("\n".join(["  - name: other", "    kind: online-endpoint", f"    subscription: {SUB}",
                                "    resource_group: rg3", "    workspace: ws3", "    registry: sharedreg",
                                "    registry_resource_group: rg"]),
                     model=f"  uri: {uri}", name="second.yaml")
    plan, result = apply(second, session)
    assert result.ok, result.model_dump_json(indent=2)
    assert not [c for c in plan.targets[0].pending if c.type == "azureml.model"], plan.to_json()
    assert len(_imports(rec)) == 1  # imported once, used by both workspaces
    assert result.targets[0].outputs["model"] == "azureml://registries/sharedreg/models/fraud/versions/7"
    # destroying one workspace's deployment leaves the shared version for the other
    assert apply(second, session, destroy=True)[1].ok
    assert sim.get(f"{REG_ID}/models/fraud/versions/7") is not None


def test_a_missing_registry_is_reported_before_any_write(project, shared):
    sim, session, rec, uri = shared
    n = len(rec.calls)
    plan, result = apply(project(online_target(registry="nosuchreg"), model=f"  uri: {uri}"), session)
    err = plan.targets[0].error or ""
    assert "registry 'nosuchreg' not found or not readable" in err and "ResourceNotFound" in err, err
    assert not result.ok and not _writes(rec, n)


def test_a_registry_in_another_region_is_reported_before_any_write(project, shared):
    sim, session, rec, uri = shared
    sim.add_registry(SUB, "rg", "eureg", location="northeurope")
    n = len(rec.calls)
    plan, result = apply(project(online_target(registry="eureg"), model=f"  uri: {uri}"), session)
    err = plan.targets[0].error or ""
    assert "registry eureg is not replicated to eastus (it is in northeurope)" in err, err
    assert not result.ok and not _writes(rec, n)


def test_share_from_another_subscription_with_a_denied_source_fails_before_any_write(project, shared):
    sim, session, rec, uri = shared
    sim.deny(subscription=OTHER_SUB)
    n = len(rec.calls)
    plan, result = apply(project(online_target(registry="sharedreg"), model=f"  uri: {uri}"), session)
    assert "no permission to read model" in (plan.targets[0].error or "")
    assert not result.ok and not _writes(rec, n)


def test_a_failed_import_is_reported_and_a_retry_shares_once(project, shared):
    sim, session, rec, uri = shared
    sim.faults.on("RegistryAssetReference_Import", "lro-failed", times=1)
    path = project(online_target(registry="sharedreg"), model=f"  uri: {uri}")
    _, result = apply(path, session)
    err = result.targets[0].error or ""
    assert not result.ok and "share azureml.model/fraud:7" in err and "injected fault" in err, err
    assert sim.get(f"{REG_ID}/models/fraud/versions/7") is None
    _, result = apply(path, session)
    assert result.ok, result.model_dump_json(indent=2)
    assert len(_imports(rec)) == 2 and sim.get(f"{REG_ID}/models/fraud/versions/7") is not None
