"""Config models validate through the real manifest loader; desired() is pure and content-addressed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from orchestrator.errors import ManifestError
from orchestrator.manifest import load_manifest
from orchestrator.registry import default_registry
from orchestrator.target import RunOptions, TargetContext
from tests.azureml.conftest import OTHER_SUB, SUB, online_target


def _target(path: Path, name: str = "prod"):
    loaded = load_manifest(path)
    cfg = loaded.manifest.target(name)
    cls = default_registry().get(cfg.kind)
    ctx = TargetContext(manifest=loaded.manifest, config=cfg, manifest_path=loaded.path,
                        state_dir=path.parent / ".state", options=RunOptions())
    return cls(ctx)


def test_targets_lock_on_their_own_workspace_not_on_a_shared_address(project):
    """Every resource names its workspace in its key: targets in other workspaces never wait for
    each other's asset creates (a fleet of ten in ten workspaces took turns on one model
    address); targets sharing a workspace still take turns on its shared versions."""
    targets = "\n".join([online_target().replace("name: prod", "name: a"),
                         online_target().replace("name: prod", "name: b"),
                         online_target().replace("name: prod", "name: c").replace("workspace: ws", "workspace: ws2")])
    path = project(targets)
    a, b, c = (_target(path, n) for n in ("a", "b", "c"))
    keys = {n: {r.type: r.lock_key for r in t.desired()} for n, t in (("a", a), ("b", b), ("c", c))}
    assert all(k for ks in keys.values() for k in ks.values())  # no resource falls back to its address
    assert keys["a"]["azureml.model"] == keys["b"]["azureml.model"]  # one workspace: one model version
    assert keys["a"]["azureml.model"] != keys["c"]["azureml.model"]  # another workspace: its own
    assert keys["a"]["azureml.environment"] != keys["c"]["azureml.environment"]
    assert keys["a"]["azureml.endpoint"] != keys["b"]["azureml.endpoint"]
    assert keys["a"]["azureml.model"].startswith(f"{SUB}/rg/ws/")


def test_online_desired_is_pure_and_content_addressed(project):
    t = _target(project(online_target()))
    before = set(sys.modules)
    res = t.desired()
    assert not [m for m in set(sys.modules) - before if m.startswith("azure")], "desired() imported an Azure SDK"
    types = [r.type for r in res]
    assert types == ["azureml.environment", "azureml.model", "azureml.endpoint",
                     "azureml.deployment", "azureml.traffic"]
    dep = res[3]
    assert dep.name.startswith("credit-risk-prod/d")
    assert dep.spec["instance_type"] == "Standard_F2s_v2"  # auto-sized: small model, managed online minimum
    assert dep.spec["model"].startswith("azureml:credit-risk:")
    assert res[4].spec == {"traffic": {dep.name.split("/")[1]: 100}, "mirror_traffic": {}}
    assert [r.spec for r in t.desired()] == [r.spec for r in res]


def test_code_change_changes_only_code_and_deployment(project):
    path = project(online_target())
    a = {r.type: r for r in _target(path).desired()}
    (project.dir / "src" / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return raw\n")
    b = {r.type: r for r in _target(path).desired()}
    assert a["azureml.deployment"].spec["code"] != b["azureml.deployment"].spec["code"]
    assert a["azureml.model"] == b["azureml.model"] and a["azureml.environment"] == b["azureml.environment"]
    assert a["azureml.deployment"].name != b["azureml.deployment"].name  # blue/green: a new deployment


def test_instance_count_updates_in_place(project):
    a = {r.type: r for r in _target(project(online_target())).desired()}
    b = {r.type: r for r in _target(project(online_target(instance_count="3"))).desired()}
    assert a["azureml.deployment"].name == b["azureml.deployment"].name
    assert b["azureml.deployment"].spec["instance_count"] == 3


def test_bad_instance_type_and_rollout_are_located(project):
    path = project(online_target(rollout="{steps: [50, 10]}"))
    with pytest.raises(ManifestError, match="steps must increase"):
        load_manifest(path)
    t = _target(project(online_target(instance_type="Standard_DS3v2")))
    with pytest.raises(Exception, match="did you mean 'Standard_DS3_v2'"):
        t.desired()


def test_legacy_aks_compute_type_is_rejected_clearly(project):
    targets = "\n".join(["  - name: k8s", "    kind: aks", f"    subscription: {SUB}", "    resource_group: rg",
                         "    workspace: ws", "    compute: my-aks", "    compute_type: aks"])
    with pytest.raises(ManifestError) as e:
        load_manifest(project(targets))
    assert "legacy 'AKS compute'" in str(e.value) and "Kubernetes compute" in str(e.value)


def test_cross_subscription_model_gets_a_copy_step(project):
    uri = f"azureml://subscriptions/{OTHER_SUB}/resourceGroups/rg2/workspaces/ws2/models/fraud/versions/7"
    t = _target(project(online_target(), model=f"  uri: {uri}"))
    model = next(r for r in t.desired() if r.type == "azureml.model")
    assert model.name == "fraud:7" and model.spec == {"source": uri, "copy": "copy"}
    shared = _target(project(online_target(registry="shared-reg"), model=f"  uri: {uri}"))
    res = {r.type: r for r in shared.desired()}
    assert res["azureml.model"].spec["copy"] == "share"
    assert res["azureml.deployment"].spec["model"] == "azureml://registries/shared-reg/models/fraud/versions/7"


def test_batch_desired_has_cluster_and_default(project):
    targets = "\n".join(["  - name: nightly", "    kind: batch-endpoint", f"    subscription: {SUB}",
                         "    resource_group: rg", "    workspace: ws", "    compute: {name: cpu-cluster, max_nodes: 4}"])
    t = _target(project(targets, scoring="batch"), "nightly")
    res = {r.type: r for r in t.desired()}
    assert res["azureml.compute"].spec["max_instances"] == 4
    assert res["azureml.default"].spec == {"deployment": res["azureml.deployment"].name.split("/")[1]}
    assert res["azureml.deployment"].spec["mini_batch_size"] == 10


def test_config_models_import_without_azure():
    import subprocess

    code = ("import sys; sys.modules['azure'] = None\n"
            "from targets.azureml.config import OnlineEndpointConfig, AksConfig, BatchEndpointConfig\n"
            "import targets.azureml.online, targets.azureml.batch, targets.azureml.aks\n"
            "print(sorted(OnlineEndpointConfig.model_json_schema()['properties']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "rollout" in out.stdout and "instance_type" in out.stdout


def test_resizing_makes_a_new_deployment(project):
    a = {r.type: r for r in _target(project(online_target())).desired()}
    b = {r.type: r for r in _target(project(online_target(instance_type="Standard_DS3_v2"))).desired()}
    assert a["azureml.deployment"].name != b["azureml.deployment"].name  # instance type cannot change in place


def test_requirements_reach_the_azure_environment_as_pip_reads_them(tmp_path):
    from orchestrator.errors import UserError
    from orchestrator.requirements import parse_requirements
    from targets.azureml.spec import conda_spec

    (tmp_path / "base.txt").write_text("numpy>=1.26  # shared with training\n")
    req = tmp_path / "requirements.txt"
    req.write_text("# serving\n-r base.txt\nscikit-learn==1.9.1\n--extra-index-url https://pkgs.example/simple\n")
    pip = conda_spec("3.11", parse_requirements(req, None)[0])["dependencies"][2]["pip"]
    assert pip == ["numpy>=1.26", "scikit-learn==1.9.1", "--extra-index-url https://pkgs.example/simple",
                   "azureml-inference-server-http"]
    (tmp_path / "wheels").mkdir()
    req.write_text("./wheels/featurizer-1.0-py3-none-any.whl\n")
    with pytest.raises(UserError, match="featurizer-1.0-py3-none-any.whl' names a file on this machine"):
        conda_spec("3.11", parse_requirements(req, None)[0])
