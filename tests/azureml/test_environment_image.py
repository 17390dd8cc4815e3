"""``environment_image: deployctl``: an Azure ML online endpoint deploys deployctl's own image as
its environment (by digest, with the inference config routing to deployctl's runtime), so Azure
ML skips its environment build.  The real MLClient and registry clients against the simulator,
whose scoring host runs that image."""

from __future__ import annotations

import pytest

from orchestrator.target import InvokeRequest
from tests.azureml.conftest import SUB, online_target
from tests.azureml.test_simulated import apply, cloud, engine  # noqa: F401 - the cloud fixture

pytest.importorskip("azure.mgmt.containerregistry", reason="the Azure SDKs are not installed (pip install 'deployctl[azure]')")

# what the scorer sees: where its code runs from (inside the image) and the mounted model
SCORE = ("import json, os\n\ndef init():\n    pass\n\ndef run(raw):\n"
         "    return {'code': os.environ.get('DEPLOYCTL_CODE_DIR'), 'model': sorted(os.listdir(os.environ['AZUREML_MODEL_DIR'])),"
         " 'version': VERSION}\n")


def _environments(sim) -> list[dict]:
    return [r for r in sim.state["resources"].values() if "/environments/" in r["id"] and "/versions/" in r["id"]]


def _deployments(sim, kind: str = "onlineEndpoints") -> list[dict]:
    return [r for r in sim.state["resources"].values() if f"/{kind}/" in r["id"] and "/deployments/" in r["id"]]


def _aks_target() -> str:
    return "\n".join(["  - name: prod", "    kind: aks", f"    subscription: {SUB}", "    resource_group: rg",
                      "    workspace: ws", "    compute: k8s", "    environment_image: deployctl"])


@pytest.mark.parametrize("kind", ["online-endpoint", "aks"])
def test_online_kinds_deploy_deployctls_image_as_their_environment(project, cloud, kind):  # noqa: F811
    sim, session, rec = cloud
    (project.dir / "requirements.txt").write_text("")  # nothing to install: the test stays offline
    (project.dir / "src" / "score.py").write_text(SCORE.replace("VERSION", "1"))
    if kind == "aks":
        sim.add_kubernetes_compute(SUB, "rg", "ws", "k8s")
    path = project(online_target(environment_image="deployctl") if kind == "online-endpoint" else _aks_target())
    plan, result = apply(path, session)
    findings = " ".join(f.message for f in plan.targets[0].findings)
    assert "environment: deployctl's image (without the model, which Azure ML mounts), pushed to the workspace's " \
           "registry and registered by digest" in findings
    assert "assembled by deployctl on python:3.11-slim" in findings
    assert result.ok, result.model_dump_json(indent=2)

    [env] = _environments(sim)
    props = env["properties"]
    assert props["image"].startswith("cr") and ".azurecr.io/deployctl/credit-risk@sha256:" in props["image"]
    assert not props.get("condaFile")  # nothing for Azure ML to build
    routes = props["inferenceConfig"]
    assert routes["scoringRoute"] == {"path": "/score", "port": 5001}
    assert routes["livenessRoute"] == routes["readinessRoute"] == {"path": "/ready", "port": 5001}
    [dep] = _deployments(sim)
    assert not dep["properties"].get("codeConfiguration")  # the code is in the image
    assert not [u for u in rec.blob_puts() if "/deployctl/code/" in u]  # and was never uploaded as a code asset

    answer = engine(path, session).invoke("prod", InvokeRequest(body={"data": [[1, 2, 3]]}))
    assert answer.ok, answer
    assert answer.body["code"].endswith("/opt/deployctl/code")  # served from the image's own layers
    assert answer.body["model"] == ["model"] and answer.body["version"] == 1  # the registered model, mounted

    again, _ = apply(path, session)
    assert not again.has_changes, again.to_json()

    # a code change is a new image and environment version (a registration: no Azure ML build)
    (project.dir / "src" / "score.py").write_text(SCORE.replace("VERSION", "2"))
    plan, result = apply(path, session)
    assert result.ok, result.model_dump_json(indent=2)
    assert {c.type for c in plan.targets[0].pending if c.action.value == "create"} >= {"azureml.environment",
                                                                                      "azureml.deployment"}
    assert engine(path, session).invoke("prod", InvokeRequest(body={"data": [[1]]})).body["version"] == 2

    # a model change is a new deployment on the same environment: the model is not in the image
    (project.dir / "model" / "extra.bin").write_bytes(b"more")
    plan, result = apply(path, session)
    assert result.ok, result.model_dump_json(indent=2)
    created = {c.type for c in plan.targets[0].pending if c.action.value == "create"}
    assert "azureml.model" in created and "azureml.environment" not in created


def test_batch_endpoint_uses_the_image_as_its_environment_and_keeps_its_code(project, cloud, tmp_path):  # noqa: F811
    sim, session, _ = cloud
    (project.dir / "requirements.txt").write_text("")
    targets = "\n".join(["  - name: nightly", "    kind: batch-endpoint", f"    subscription: {SUB}",
                         "    resource_group: rg", "    workspace: ws", "    compute: {name: cpu-cluster}",
                         "    environment_image: deployctl"])
    plan, result = apply(project(targets, scoring="batch"), session)
    assert result.ok, result.model_dump_json(indent=2)
    [env] = _environments(sim)
    assert ".azurecr.io/deployctl/credit-risk@sha256:" in env["properties"]["image"]
    assert not env["properties"].get("inferenceConfig")  # Azure ML's batch driver runs the script
    [dep] = _deployments(sim, "batchEndpoints")
    assert dep["properties"]["codeConfiguration"]["scoringScript"] == "score.py"


def test_an_environment_image_gone_from_the_registry_fails_the_deployment(project, cloud):  # noqa: F811
    sim, session, _ = cloud
    (project.dir / "requirements.txt").write_text("")
    path = project(online_target(environment_image="deployctl"))
    assert apply(path, session)[1].ok
    [env] = _environments(sim)
    host, _, rest = env["properties"]["image"].partition("/")
    repo, _, digest = rest.partition("@")
    del sim.state["acr"][host]["repos"][repo]["manifests"][digest]  # someone cleaned the registry up
    path.write_text(path.read_text().replace("environment_image: deployctl",
                                             "environment_image: deployctl\n    instance_count: 2"))
    _, result = apply(path, session)
    assert not result.ok and "The environment's image cannot be pulled" in result.targets[0].error, result.targets[0].error


def test_the_default_path_says_azure_ml_builds_the_environment(project, cloud):  # noqa: F811
    _, session, _ = cloud
    plan = engine(project(online_target()), session).plan()
    findings = " ".join(f.message for f in plan.targets[0].findings)
    assert "environment: built by Azure ML from the conda file" in findings


def test_environment_image_is_a_closed_choice(project):
    from orchestrator.errors import ManifestError
    from orchestrator.manifest import load_manifest

    path = project(online_target(environment_image="docker"))
    with pytest.raises(ManifestError) as exc:
        load_manifest(path, use_environ=False)
    assert [i.field for i in exc.value.issues] == ["targets[0].environment_image"]
