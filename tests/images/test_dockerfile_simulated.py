"""``environment.dockerfile`` through apply: the manifest field, the one shared choice
(:func:`orchestrator.images.choose.image_for`), ACR Tasks in the simulator really building the
Dockerfile's image, deployctl layering its runtime, model and code on it, and the simulated ACI
running the result.  Nothing of deployctl is mocked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.errors import ManifestError
from orchestrator.manifest import load_manifest
from orchestrator.target import InvokeRequest
from tests.aci import scenarios
from tests.aci import test_aci_simulated as aci_test

pytest.importorskip("azure.mgmt.containerinstance", reason="the Azure SDKs are not installed (pip install 'deployctl[azure]')")
pytest.importorskip("azure.mgmt.containerregistrytasks", reason="azure-mgmt-containerregistrytasks is not installed")

SUB = "00000000-0000-0000-0000-0000000000b1"

# the aci tests' manifest, with the environment's base given by a Dockerfile instead
MANIFEST = aci_test.MANIFEST.replace("  image: {base}\n", "{environment}")


def _manifest_text(environment: str, *, registry: str = "devacr", sub: str = SUB, extra: str = "") -> str:
    return MANIFEST.format(environment=environment, registry=registry, sub=sub, memory="auto", gpu=0, extra=extra)


# the greeting comes from the Dockerfile's ENV: the container really runs on the Dockerfile's image
SCORE = ("import json, os\n\ndef init():\n    pass\n\ndef run(raw):\n"
         "    return {{'greeting': os.environ.get('GREETING'), 'n': len(json.loads(raw)['data']), 'version': {version}}}\n")
DOCKERFILE = "FROM python:3.11-slim\nENV GREETING={greeting}\nCOPY extra.txt /opt/extra/\nRUN pip install --no-cache-dir numpy\n"


@pytest.fixture
def project(azure_simulator, tmp_path):
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.containerregistry.models import Registry, Sku

    sim = azure_simulator
    sim.add_resource_group(SUB, "rg", "westeurope")
    ContainerRegistryManagementClient(sim.credential, SUB, transport=sim.transport, polling_interval=0).registries.begin_create(
        "rg", "devacr", Registry(location="westeurope", sku=Sku(name="Standard"))).result()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.txt").write_text("w1\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text(SCORE.format(version=1))
    (tmp_path / "sample.json").write_text('{"data": [[1, 2, 3, 4]]}')
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "Dockerfile").write_text(DOCKERFILE.format(greeting="hello"))
    (tmp_path / "env" / "extra.txt").write_text("extra\n")
    path = tmp_path / "deployctl.yaml"
    path.write_text(_manifest_text("  dockerfile: ./env/Dockerfile\n"))
    return sim, path


def _apply(path: Path, sim):
    return scenarios.apply(path, sim.session(), sim.clock.sleep)


def _runs(sim) -> int:
    return sum(1 for r in sim.requests if r.operation == "Registries_ScheduleRun")


def _repos(sim) -> dict:
    return sim.state.get("acr", {}).get("devacr.azurecr.io", {}).get("repos", {})


def _issues(tmp_path: Path, environment: str) -> tuple[Path, ManifestError]:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text("def init(): pass\ndef run(raw): return raw\n")
    (tmp_path / "model").mkdir()
    (tmp_path / "sample.json").write_text("{}")
    path = tmp_path / "deployctl.yaml"
    path.write_text(_manifest_text(environment))
    with pytest.raises(ManifestError) as exc:
        load_manifest(path, use_environ=False)
    return path, exc.value


def test_a_missing_dockerfile_is_an_error_at_its_line_naming_the_field(tmp_path):
    path, error = _issues(tmp_path, "  dockerfile: ./env/Dockerfile\n")
    [issue] = error.issues
    assert issue.field == "environment.dockerfile" and (issue.location.file, issue.location.line) == (str(path), 7)
    assert "does not exist" in issue.message and "env/Dockerfile" in issue.message
    assert f"{path}:7:15: environment.dockerfile: path does not exist" in str(error)


def test_a_dockerfile_and_a_base_image_together_are_refused(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\n")
    _, error = _issues(tmp_path, "  dockerfile: ./Dockerfile\n  base_image: python:3.11-slim\n")
    [issue] = error.issues
    assert issue.field == "environment" and "'dockerfile'" in issue.message and "base_image" in issue.message


def test_apply_builds_the_dockerfile_with_acr_tasks_once_per_context_and_aci_runs_it(project):
    sim, path = project
    plan = scenarios.engine(path, sim.session(), sim.clock.sleep).plan()
    findings = " ".join(f.message for f in plan.targets[0].findings)
    assert "built by ACR Tasks from Dockerfile" in findings and "env/Dockerfile" in findings
    _, result = _apply(path, sim)
    assert result.ok, result.model_dump_json(indent=2)
    assert _runs(sim) == 1
    env_tags = _repos(sim)["deployctl/iris-environment"]["tags"]
    assert [t[:4] for t in env_tags] == ["ctx-"]
    image = result.targets[0].outputs["image"]
    assert image.startswith("devacr.azurecr.io/deployctl/iris@sha256:")
    # deployctl's image sits on the Dockerfile's: its first layers are the Dockerfile image's layers
    env_manifest = _manifest(sim, "deployctl/iris-environment", next(iter(env_tags.values())))
    ours = _manifest(sim, "deployctl/iris", image.split("@")[1])
    assert ours["layers"][: len(env_manifest["layers"])] == env_manifest["layers"]
    answer = scenarios.engine(path, sim.session(), sim.clock.sleep).invoke("prod", InvokeRequest(body={"data": [[1], [2]]}))
    assert answer.ok and answer.body == {"greeting": "hello", "n": 2, "version": 1}, answer
    log = "".join(_log_blobs(sim))
    assert "RUN is not executed by the simulator" in log and "Successfully tagged" in log

    # a code change: the Dockerfile's context is unchanged, so no new ACR Tasks run
    (path.parent / "src" / "score.py").write_text(SCORE.format(version=2))
    _, result = _apply(path, sim)
    assert result.ok and _runs(sim) == 1
    answer = scenarios.engine(path, sim.session(), sim.clock.sleep).invoke("prod", InvokeRequest(body={"data": [[1]]}))
    assert answer.body == {"greeting": "hello", "n": 1, "version": 2}

    # a change in the Dockerfile's folder: built again, under a new content tag
    (path.parent / "env" / "Dockerfile").write_text(DOCKERFILE.format(greeting="bonjour"))
    _, result = _apply(path, sim)
    assert result.ok and _runs(sim) == 2 and len(_repos(sim)["deployctl/iris-environment"]["tags"]) == 2
    answer = scenarios.engine(path, sim.session(), sim.clock.sleep).invoke("prod", InvokeRequest(body={"data": [[1]]}))
    assert answer.body["greeting"] == "bonjour"


@pytest.mark.parametrize(("dockerfile", "words"), [
    ("FROM python:3.11-slim\nRUN false\n", "returned a non-zero code: 1"),
    ("FROM python:3.11-slim\nCOPY missing.txt /opt/\n", "stat missing.txt: file does not exist"),
    ("FROM example.invalid/nothing:1\n", "failed to resolve source metadata for example.invalid/nothing:1"),
])
def test_a_failing_dockerfile_is_one_error_with_the_log_tail_and_nothing_tagged(project, dockerfile, words):
    sim, path = project
    (path.parent / "env" / "Dockerfile").write_text(dockerfile)
    _, result = _apply(path, sim)
    assert not result.ok
    error = result.targets[0].error
    assert "ACR Tasks run" in error and "ended Failed" in error and words in error, error
    assert not (_repos(sim).get("deployctl/iris-environment") or {}).get("tags")
    assert not (_repos(sim).get("deployctl/iris") or {}).get("manifests")
    assert not [r for r in sim.state["resources"].values()
                if r.get("type", "").lower() == "microsoft.containerinstance/containergroups"]


def test_a_dockerfile_image_without_the_manifests_python_is_one_error_naming_the_dockerfile(project):
    sim, path = project
    (path.parent / "env" / "Dockerfile").write_text("FROM python:3.12-slim\n")
    _, result = _apply(path, sim)
    assert not result.ok
    error = result.targets[0].error
    assert "the image built from" in error and "env/Dockerfile" in error and "has Python 3.12" in error, error
    assert not (_repos(sim).get("deployctl/iris") or {}).get("manifests")  # deployctl's image: nothing pushed


def _manifest(sim, repo: str, digest: str) -> dict:
    import base64

    return dict(json.loads(base64.b64decode(_repos(sim)[repo]["manifests"][digest]["data"])))


def _log_blobs(sim) -> list[str]:
    import base64

    out = []
    for containers in sim.state["blobs"].values():
        for name, entry in (containers.get("logs") or {}).items():
            if name.endswith(".log"):
                out.append(base64.b64decode(entry["data"]).decode())
    return out


def test_app_service_run_image_takes_the_same_acr_tasks_path(project):
    pytest.importorskip("azure.mgmt.web", reason="the Azure SDKs are not installed (pip install 'deployctl[azure]')")
    from tests.appservice import test_appservice_simulated as app_test

    sim, path = project
    # no registry or identity named: app-service makes its own registry, and the Dockerfile is built there
    path.write_text(app_test.MANIFEST.format(sub=SUB, image="  dockerfile: ./env/Dockerfile\n", extra=""))
    plan, result = _apply(path, sim)
    assert "built by ACR Tasks from Dockerfile" in " ".join(f.message for f in plan.targets[0].findings)
    assert result.ok, result.model_dump_json(indent=2)
    fx = app_test.sites(sim)["iris-prod"]["properties"]["siteConfig"]["linuxFxVersion"]
    login = fx.removeprefix("DOCKER|").split("/")[0]
    assert fx.startswith(f"DOCKER|{login}/deployctl/iris@sha256:") and login.endswith(".azurecr.io"), fx
    tags = sim.state["acr"][login]["repos"]["deployctl/iris-environment"]["tags"]
    assert _runs(sim) == 1 and [t[:4] for t in tags] == ["ctx-"]
    answer = scenarios.engine(path, sim.session(), sim.clock.sleep).invoke("prod", InvokeRequest(body={"data": [[1]]}))
    assert answer.ok and answer.body == {"greeting": "hello", "n": 1, "version": 1}, answer


def test_promote_from_builds_the_dockerfile_in_dev_and_imports_the_whole_image_into_prod(project):
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.containerregistry.models import Registry, Sku

    sim, path = project
    prod = "00000000-0000-0000-0000-0000000000b2"
    sim.add_resource_group(prod, "rg", "westeurope")
    ContainerRegistryManagementClient(sim.credential, prod, transport=sim.transport, polling_interval=0).registries.begin_create(
        "rg", "prodacr", Registry(location="westeurope", sku=Sku(name="Standard"))).result()
    path.write_text(_manifest_text("  dockerfile: ./env/Dockerfile\n", sub=prod,
                                   registry=f"{{name: prodacr, subscription: {prod}, resource_group: rg}}",
                                   extra=f"    promote_from: {{name: devacr, subscription: {SUB}, resource_group: rg}}\n"))
    _, result = _apply(path, sim)
    assert result.ok, result.model_dump_json(indent=2)
    assert result.targets[0].outputs["image"].startswith("prodacr.azurecr.io/deployctl/iris@sha256:")
    assert _runs(sim) == 1 and "deployctl/iris-environment" in _repos(sim)  # built in dev, by ACR Tasks
    assert not [r for r in sim.requests if r.host == "prodacr.azurecr.io" and "/blobs/uploads" in r.path]
    answer = scenarios.engine(path, sim.session(), sim.clock.sleep).invoke("prod", InvokeRequest(body={"data": [[1]]}))
    assert answer.ok and answer.body["greeting"] == "hello", answer  # prod runs the Dockerfile's layers too
