"""Reads as plain ARM JSON (``targets/azureml/arm_read.py``) give what azure-ai-ml's entities give,
on the same simulated resources; and a no-op plan never imports azure-ai-ml."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from targets.azureml.arm_read import WorkspaceReader, duration_ms
from tests.azureml.conftest import SUB, online_target
from tests.azureml.test_aks_capacity import aks_target, k8s  # noqa: F401 - fixture
from tests.azureml.test_simulated import apply, cloud, engine  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[2]


def test_iso_durations_convert_like_azure_ai_ml():
    from azure.ai.ml._utils.utils import from_iso_duration_format_ms

    for value in ("PT5S", "PT0.5S", "PT1M30S", "PT2H", "P1DT1S", "PT90S", None):
        assert duration_ms(value) == from_iso_duration_format_ms(value), value
    with pytest.raises(ValueError):
        duration_ms("5 seconds")


def _same_reads(target, ml, reader) -> None:
    """Every attribute the targets read, both ways."""
    endpoint = target.d.endpoint
    ws_sdk, ws_rest = ml.workspaces.get(target.cfg.workspace), reader.workspace()
    assert ws_rest.location == ws_sdk.location and ws_rest.container_registry == ws_sdk.container_registry
    ep_sdk, ep_rest = ml.online_endpoints.get(endpoint), reader.online_endpoint(endpoint)
    assert target.endpoint_spec(ep_rest) == target.endpoint_spec(ep_sdk)
    for attr in ("tags", "traffic", "provisioning_state", "scoring_uri"):
        assert getattr(ep_rest, attr) == getattr(ep_sdk, attr), attr
    assert ep_rest.mirror_traffic == dict(getattr(ep_sdk, "mirror_traffic", None) or {})
    deps_sdk = {d.name: d for d in ml.online_deployments.list(endpoint)}
    deps_rest = {d.name: d for d in reader.online_deployments(endpoint)}
    assert deps_sdk.keys() == deps_rest.keys() and deps_rest
    for name, dep in deps_rest.items():
        assert target.deployment_spec(dep) == target.deployment_spec(deps_sdk[name]), name
        assert dep.tags == deps_sdk[name].tags and dep.provisioning_state == deps_sdk[name].provisioning_state
    for r in target.desired():
        if r.type in ("azureml.environment", "azureml.model"):
            name, version = r.name.split(":", 1)
            ops = ml.environments if r.type == "azureml.environment" else ml.models
            sdk = ops.get(name=name, version=version)
            rest = reader.asset_version("environments" if r.type == "azureml.environment" else "models", name, version)
            assert (rest.name, rest.version, rest.tags, rest.archived) == (sdk.name, sdk.version, sdk.tags, False)
    key_sdk = ml.online_endpoints.get_keys(endpoint)
    assert reader.endpoint_secret(endpoint) == getattr(key_sdk, "primary_key", None) or \
        getattr(key_sdk, "access_token", None)


def _target_and_clients(path, session):
    from targets.azureml.client import ml_client

    e = engine(path, session)
    return e.target(e.manifest.targets[0]), ml_client(session, SUB, "rg", "ws"), WorkspaceReader(session, SUB, "rg", "ws")


@pytest.mark.parametrize("auth", ["key", "aml_token"])
def test_managed_online_reads_match_azure_ai_ml(project, cloud, auth):  # noqa: F811
    sim, session, rec = cloud
    path = project(online_target(auth_mode=auth))
    _, result = apply(path, session)
    assert result.ok, result.model_dump_json(indent=2)
    _same_reads(*_target_and_clients(path, session))
    # archived (destroyed) versions read as gone both ways
    t, ml, reader = _target_and_clients(path, session)
    env = next(r for r in t.desired() if r.type == "azureml.environment")
    name, version = env.name.split(":", 1)
    ml.environments.archive(name=name, version=version)
    assert reader.asset_version("environments", name, version).archived
    assert t.store._get(env) is None


def test_kubernetes_online_reads_match_azure_ai_ml(project, k8s):  # noqa: F811
    sim, session, rec, attach = k8s
    attach()
    path = project(aks_target())
    _, result = apply(path, session)
    assert result.ok, result.model_dump_json(indent=2)
    t, ml, reader = _target_and_clients(path, session)
    _same_reads(t, ml, reader)
    dep = reader.online_deployments(t.d.endpoint)[0]
    assert t.deployment_spec(dep)["requests"]["cpu"]  # the pod's requests come through


def test_batch_reads_match_azure_ai_ml(project, cloud):  # noqa: F811
    sim, session, rec = cloud
    targets = "\n".join(["  - name: nightly", "    kind: batch-endpoint", f"    subscription: {SUB}",
                         "    resource_group: rg", "    workspace: ws",
                         "    compute: {name: cpu-cluster, max_nodes: 3, idle_seconds_before_scaledown: 300}"])
    path = project(targets, scoring="batch")
    _, result = apply(path, session)
    assert result.ok, result.model_dump_json(indent=2)
    t, ml, reader = _target_and_clients(path, session)
    c_sdk, c_rest = ml.compute.get("cpu-cluster"), reader.compute("cpu-cluster")
    for attr in ("size", "min_instances", "max_instances", "idle_time_before_scale_down"):
        assert getattr(c_rest, attr) == getattr(c_sdk, attr), attr
    assert c_rest.tags == (c_sdk.tags or {}) and c_rest.max_instances == 3
    ep_sdk, ep_rest = ml.batch_endpoints.get(t.d.endpoint), reader.batch_endpoint(t.d.endpoint)
    assert ep_rest.tags == ep_sdk.tags and ep_rest.defaults.deployment_name == ep_sdk.defaults.deployment_name
    deps_sdk = {d.name: d for d in ml.batch_deployments.list(t.d.endpoint)}
    deps_rest = {d.name: d for d in reader.batch_deployments(t.d.endpoint)}
    assert deps_sdk.keys() == deps_rest.keys() and deps_rest
    for name, dep in deps_rest.items():
        assert t._deployment_spec(dep) == t._deployment_spec(deps_sdk[name]), name
        assert dep.tags == deps_sdk[name].tags
    # and the target reads itself as applied: nothing to change
    again, _ = apply(path, session)
    assert not again.has_changes, again.to_json()


@pytest.mark.parametrize("kind", ["online-endpoint", "batch-endpoint"])
def test_a_noop_plan_never_imports_azure_ai_ml(tmp_path, kind):
    """plan, status and a no-op apply read through plain ARM JSON: azure-ai-ml (~2 s of CPU to
    import) is loaded only when something is written."""
    state = tmp_path / "state"
    quick = REPO / "examples" / "quickstart"
    manifest = tmp_path / "m.yaml"
    scoring = "real-time" if kind == "online-endpoint" else "batch"
    extra = "" if kind == "online-endpoint" else ", compute: { name: cpu-cluster }"
    manifest.write_text(f"""apiVersion: deployctl/v1
name: noimport
model: {{ path: {quick / 'model'} }}
environment: {{ python: "3.11", requirements: {quick / 'requirements.txt'} }}
code: {{ path: {quick / 'src'}, entry: score.py }}
scoring: {{ type: {scoring}, sample_request: {quick / 'sample-request.json'} }}
targets:
  - {{ name: t1, kind: {kind}, subscription: {SUB}, resource_group: rg, workspace: ws1{extra} }}
  - {{ name: t2, kind: {kind}, subscription: {SUB}, resource_group: rg, workspace: ws2{extra} }}
""")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cli = [sys.executable, "-m", "orchestrator.cli"]
    done = subprocess.run([*cli, "apply", str(manifest), "--yes", "--simulate", "--state-dir", str(state)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    probe = ("import sys\n"  # main(), not the command's console(): it exits without returning here
             "sys.argv = ['deployctl'] + sys.argv[1:]\n"
             "from orchestrator.cli import main\n"
             "try:\n    main()\n"
             "except SystemExit as e:\n    code = e.code\n"
             "print('AZURE_AI_ML_LOADED' if 'azure.ai.ml' in sys.modules else 'AZURE_AI_ML_NOT_LOADED', code)\n")
    for command in (["plan", str(manifest)], ["status", str(manifest)], ["apply", str(manifest), "--yes"]):
        out = subprocess.run([sys.executable, "-c", probe, *command, "--simulate", "--state-dir", str(state)],
                             capture_output=True, text=True, env=env, timeout=300)
        assert "AZURE_AI_ML_NOT_LOADED 0" in out.stdout, (command, out.stdout[-2000:], out.stderr[-2000:])
        if command[0] != "status":
            assert "0 to create, 0 to update, 0 to replace, 0 to delete" in out.stdout, out.stdout[-2000:]
    subprocess.run([*cli, "destroy", str(manifest), "--yes", "--simulate", "--state-dir", str(state)],
                   capture_output=True, text=True, env=env, timeout=600)


class _Pages:
    """An azure-core transport answering a paged list: page 2 only with page 1's skip token and
    page size, page 3 links back to page 2 when ``loop``."""

    def __init__(self, loop: bool = False) -> None:
        self.loop = loop
        self.queries: list[dict[str, list[str]]] = []

    def send(self, request, **kw):
        import json as _json
        from urllib.parse import parse_qs, urlsplit

        q = parse_qs(urlsplit(request.url).query)
        self.queries.append(q)
        base = "https://management.azure.com/sub/x/deployments"
        if "$skipToken" not in q:
            body = {"value": [{"name": "a"}], "nextLink": f"{base}?api-version=2020-01-01&$skipToken=t2&$top=1"}
        elif q["$skipToken"] == ["t2"] and q.get("$top") == ["1"]:
            body = {"value": [{"name": "b"}], "nextLink": f"{base}?$skipToken=t3&$top=1"}
        else:
            body = {"value": [{"name": "c"}]}
            if self.loop:
                body["nextLink"] = f"{base}?$skipToken=t3&$top=1"
        from orchestrator.azure.simulator.messages import Response
        from orchestrator.azure.simulator.transport import RestResponse

        return RestResponse(request, Response(200, _json.dumps(body).encode(), {"Content-Type": "application/json"}))

    def sleep(self, seconds):
        pass

    def open(self):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        pass


class _Token:
    def get_token(self, *scopes, **kw):
        from azure.core.credentials import AccessToken

        return AccessToken("t", 2**40)


def test_paged_lists_follow_next_links_with_their_whole_query():
    from orchestrator.azure.session import AzureSession
    from orchestrator.errors import TargetError

    pages = _Pages()
    reader = WorkspaceReader(AzureSession(credential=_Token(), transport=pages), SUB, "rg", "ws")
    assert [x["name"] for x in reader.list_all("/onlineEndpoints/e/deployments")] == ["a", "b", "c"]
    # every page asked with our api-version only, and the link's own skip token and page size
    assert [q["api-version"] for q in pages.queries] == [["2023-10-01"]] * 3
    assert pages.queries[2]["$top"] == ["1"] and pages.queries[2]["$skipToken"] == ["t3"]
    looping = WorkspaceReader(AzureSession(credential=_Token(), transport=_Pages(loop=True)), SUB, "rg", "ws")
    with pytest.raises(TargetError, match="same next page twice"):
        list(looping.list_all("/onlineEndpoints/e/deployments"))
