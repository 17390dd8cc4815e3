"""The Azure ML targets end to end: the real MLClient and blob clients against the project's
Azure simulator (orchestrator.azure.simulator), driven through the Engine and load_manifest.

Nothing of deployctl is mocked.  A recording transport wraps the simulator's transport so tests
can assert which HTTP calls were made (which blobs were uploaded, how many jobs submitted).
The module skips until the simulator package is importable.
"""

from __future__ import annotations

from pathlib import Path

import pytest

try:
    from orchestrator.azure.simulator import AzureSimulator
except ImportError as e:  # pragma: no cover - the simulator lands separately
    pytest.skip(f"the Azure simulator is not importable: {e}", allow_module_level=True)

from azure.core.pipeline.transport import HttpTransport  # noqa: E402

from orchestrator.azure.session import OPTIONS_KEY, AzureSession  # noqa: E402
from orchestrator.engine import Engine  # noqa: E402
from orchestrator.manifest import load_manifest  # noqa: E402
from orchestrator.plan import Action  # noqa: E402
from orchestrator.retry import RetrySettings  # noqa: E402
from orchestrator.target import InvokeRequest, RunOptions  # noqa: E402
from tests.azureml.conftest import OTHER_SUB, SUB, online_target  # noqa: E402


class Recording(HttpTransport):
    """Delegates to the simulator's transport and remembers (method, url) of every request."""

    def __init__(self, inner: HttpTransport) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []
        self.statuses: list[tuple[str, str, int]] = []

    def __enter__(self):
        self.inner.__enter__()
        return self

    def __exit__(self, *a):
        return self.inner.__exit__(*a)

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def send(self, request, **kw):
        self.calls.append((request.method, request.url))
        response = self.inner.send(request, **kw)
        self.statuses.append((request.method, request.url, response.status_code))
        return response

    def sleep(self, duration):
        return self.inner.sleep(duration)

    def blob_puts(self) -> list[str]:
        return [u.split("?")[0] for m, u in self.calls if m == "PUT" and ".blob." in u]


@pytest.fixture
def cloud():
    sim = AzureSimulator(seed=0)
    base = sim.session()
    rec = Recording(base.transport)
    session = AzureSession(credential=base.credential, transport=rec, simulator=sim,
                           polling_interval=base.polling_interval,
                           credentials_by_subscription=dict(base.credentials_by_subscription))
    sim.add_workspace(SUB, "rg", "ws")
    return sim, session, rec


def engine(path: Path, session: AzureSession, **opts) -> Engine:
    sim = session.simulator
    return Engine(load_manifest(path), state_dir=path.parent / ".state",
                  options=RunOptions(extra={OPTIONS_KEY: session}, **opts),
                  retry=RetrySettings(initial_wait=0.01, max_wait=0.05), sleep=sim.clock.sleep)


def apply(path: Path, session: AzureSession, destroy: bool = False, **opts):
    e = engine(path, session, **opts)
    plan = e.plan(destroy=destroy)
    return plan, e.apply(plan, check_fresh=False)


def test_online_create_noop_code_only_update_destroy(project, cloud):
    sim, session, rec = cloud
    path = project(online_target())
    plan, result = apply(path, session)
    assert not plan.blocked, plan.to_json()
    assert result.ok, result.model_dump_json(indent=2)
    out = result.targets[0].outputs
    assert out["traffic"] == {out["deployment"]: 100} and out["scoring_uri"]
    findings = " ".join(f.message for f in plan.targets[0].findings)
    assert "cheapest" in findings and "quota:" in findings

    again, _ = apply(path, session)
    assert not again.has_changes, again.to_json()

    n = len(rec.calls)
    (project.dir / "src" / "score.py").write_text(
        "import json\n\ndef init():\n    pass\n\ndef run(raw):\n    return {'v': 2}\n")
    plan, result = apply(path, session)
    assert result.ok, result.model_dump_json(indent=2)
    actions = {(c.action, c.type) for c in plan.targets[0].pending}
    assert (Action.create, "azureml.deployment") in actions and (Action.delete, "azureml.deployment") in actions
    assert not any(c.type in ("azureml.model", "azureml.environment") for c in plan.targets[0].pending)
    uploaded = [u for m, u in rec.calls[n:] if m == "PUT" and ".blob." in u]
    assert uploaded and all("/deployctl/code/" in u for u in uploaded), uploaded

    plan, result = apply(path, session, destroy=True)
    assert result.ok
    after, _ = apply(path, session, destroy=True)
    assert not after.has_changes


def test_quota_shortfall_blocks_apply_with_numbers(project, cloud):
    _, session, rec = cloud
    path = project(online_target(instance_type="Standard_NC24s_v3", instance_count="100"))
    plan, result = apply(path, session)
    errors = [f.message for f in plan.targets[0].findings if f.severity.value == "error"]
    assert errors and "needs 2880" in errors[0] and "ceil(1.2" in errors[0]
    assert not result.ok and "blocked before any write" in result.targets[0].error
    assert not [c for c in rec.calls if c[0] in ("PUT", "DELETE")]
    unblocked = engine(path, session, skip_quota_check=True).plan()
    assert not [f for f in unblocked.targets[0].findings if f.severity.value == "error"]


def test_transient_faults_are_retried_without_duplicates(project, cloud):
    sim, session, rec = cloud
    sim.faults.on("OnlineDeployments_CreateOrUpdate", "lro-canceled", times=1)
    sim.faults.on("OnlineEndpoints_CreateOrUpdate", "503", times=2)
    sim.faults.on("OnlineEndpoints_Get", "429", times=1)
    plan, result = apply(project(online_target()), session)
    assert result.ok, result.model_dump_json(indent=2)
    kinds = [k for _, k in sim.faults.injected]
    assert kinds.count("lro-canceled") == 1 and kinds.count("503") == 2 and "429" in kinds
    puts = [u for m, u in rec.calls if m == "PUT" and "/deployments/" in u]
    assert len({u.split("?")[0] for u in puts}) == 1  # one deployment, however often its PUT was retried


def test_busy_endpoint_409_waits_and_retries(project, cloud):
    """An endpoint update started elsewhere (a raw ARM PUT nobody polls) holds the endpoint
    'Updating': the deployment PUT meets 409 and is retried once simulated time has passed."""
    from azure.core import PipelineClient
    from azure.core.rest import HttpRequest

    sim, session, rec = cloud
    path = project(online_target())
    assert apply(path, session)[1].ok
    url = (f"https://management.azure.com/subscriptions/{SUB}/resourceGroups/rg/providers/"
           "Microsoft.MachineLearningServices/workspaces/ws/onlineEndpoints/credit-risk-prod?api-version=2023-04-01")
    token = session.credential.get_token("https://management.azure.com/.default").token
    with PipelineClient(base_url=url, transport=sim.transport) as client:
        current = client.send_request(HttpRequest("GET", url, headers={"Authorization": f"Bearer {token}"})).json()
        body = {"location": current["location"], "tags": current.get("tags", {}),
                "properties": {"authMode": current["properties"]["authMode"],
                               "traffic": current["properties"].get("traffic") or {}, "properties": {}}}
        started = client.send_request(HttpRequest("PUT", url, json=body, headers={"Authorization": f"Bearer {token}"}))
    assert started.status_code in (200, 201)
    (project.dir / "src" / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return 2\n")
    n = len(rec.statuses)
    plan, result = apply(path, session)
    assert result.ok, result.model_dump_json(indent=2)
    puts = [status for m, u, status in rec.statuses[n:] if m == "PUT" and "/deployments/" in u]
    assert 409 in puts and puts[-1] in (200, 201), puts


def test_provisioning_failure_reports_logs_and_is_not_retried(project, cloud):
    sim, session, _ = cloud
    sim.faults.on("OnlineDeployments_CreateOrUpdate", "lro-failed", times=5)
    _, result = apply(project(online_target()), session)
    assert not result.ok
    err = result.targets[0].error
    assert "failed to provision" in err and "last log lines" in err
    assert [k for _, k in sim.faults.injected].count("lro-failed") == 1  # not retried blindly


def test_failed_smoke_test_rolls_traffic_back(project, cloud):
    _, session, _ = cloud
    path = project(online_target())
    assert apply(path, session)[1].ok
    live = engine(path, session).status()[0].outputs["deployment"]
    (project.dir / "src" / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    raise RuntimeError('boom')\n")
    _, result = apply(path, session)
    assert not result.ok and "rollout" in result.targets[0].error
    out = engine(path, session).status()[0].outputs
    assert out["traffic"] == {live: 100}


def _source_model(sim, session: AzureSession) -> str:
    """Model fraud:7 (a folder 'fraud' with model.pkl) in another subscription's workspace."""
    sim.add_workspace(OTHER_SUB, "rg2", "ws2")
    sim.add_model(OTHER_SUB, "rg2", "ws2", "fraud", "7", files={"model.pkl": b"weights"})
    return f"azureml://subscriptions/{OTHER_SUB}/resourceGroups/rg2/workspaces/ws2/models/fraud/versions/7"


def test_cross_subscription_copy_and_reuse(project, cloud):
    sim, session, rec = cloud
    uri = _source_model(sim, session)
    path = project(online_target(), model=f"  uri: {uri}")
    plan, result = apply(path, session)
    assert any(c.type == "azureml.model" and c.spec.get("copy") == "copy" for c in plan.targets[0].pending)
    assert result.ok, result.model_dump_json(indent=2)
    copied = sim.get(f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices"
                     "/workspaces/ws/models/fraud/versions/7")
    assert copied and copied["properties"]["tags"]["deployctl-source"] == uri
    assert copied["properties"]["tags"]["deployctl-sha256"]
    again, _ = apply(path, session)
    assert not any(c.type == "azureml.model" for c in again.targets[0].pending)  # the copy is reused


def test_missing_or_denied_source_model_is_reported_before_any_write(project, cloud):
    sim, session, rec = cloud
    uri = _source_model(sim, session).replace("versions/7", "versions/8")
    plan, _ = apply(project(online_target(), model=f"  uri: {uri}"), session)
    assert "model fraud version 8 not found in workspace ws2" in (plan.targets[0].error or "")
    sim.deny(subscription=OTHER_SUB)
    n = len(rec.calls)
    plan, result = apply(project(online_target(), model=f"  uri: {uri.replace('versions/8', 'versions/7')}"), session)
    assert "no permission to read model" in (plan.targets[0].error or "")
    assert not [c for c in rec.calls[n:] if c[0] in ("PUT", "DELETE")]


def test_batch_create_invoke_is_deterministic_and_destroy(project, cloud, tmp_path):
    sim, session, rec = cloud
    targets = "\n".join(["  - name: nightly", "    kind: batch-endpoint", f"    subscription: {SUB}",
                         "    resource_group: rg", "    workspace: ws", "    compute: {name: cpu-cluster}"])
    path = project(targets, scoring="batch")
    plan, result = apply(path, session)
    assert result.ok, result.model_dump_json(indent=2)
    data = tmp_path / "in"
    data.mkdir()
    (data / "a.csv").write_text("1,2,3\n")
    e = engine(path, session)
    first = e.invoke("nightly", InvokeRequest(inputs=[data], output=tmp_path / "out"))
    second = e.invoke("nightly", InvokeRequest(inputs=[data], output=tmp_path / "out2"))
    assert first.request_id == second.request_id
    submits = [u for m, u in rec.calls if m == "POST" and u.split("?")[0].endswith("/jobs")]
    assert len(submits) == 1
    assert first.ok, first
    assert apply(path, session, destroy=True)[1].ok


def test_aks_needs_a_kubernetes_compute(project, cloud):
    _, session, rec = cloud
    targets = "\n".join(["  - name: k8s", "    kind: aks", f"    subscription: {SUB}", "    resource_group: rg",
                         "    workspace: ws", "    compute: missing-k8s"])
    plan, result = apply(project(targets), session)
    assert any("not attached" in f.message for f in plan.targets[0].findings)
    assert not result.ok and not [c for c in rec.calls if c[0] in ("PUT", "DELETE")]


def test_registry_in_another_region_is_reported_before_any_write(project, cloud):
    sim, session, rec = cloud
    uri = _source_model(sim, session)
    sim.add_registry(SUB, "rg", "sharedreg", location="northeurope")
    n = len(rec.calls)
    plan, result = apply(project(online_target(registry="sharedreg"), model=f"  uri: {uri}"), session)
    assert "registry sharedreg is not replicated to" in (plan.targets[0].error or "")
    assert not result.ok and not [c for c in rec.calls[n:] if c[0] in ("PUT", "DELETE")]


def test_aml_token_auth_and_mirrored_rollout(project, cloud):
    sim, session, _ = cloud
    path = project(online_target(auth_mode="aml_token", rollout="{steps: [50, 100], mirror_percent: 10}"))
    plan, result = apply(path, session)
    assert result.ok, result.model_dump_json(indent=2)
    first = result.targets[0].outputs["deployment"]
    e = engine(path, session)
    scored = e.invoke("prod", InvokeRequest(body={"data": [[1, 2, 3]]}))
    assert scored.ok and scored.body == {"n": 1}  # through a token, not a key

    (project.dir / "src" / "score.py").write_text(
        "import json\n\ndef init():\n    pass\n\ndef run(raw):\n    return {'n': len(json.loads(raw)['data']), 'v': 2}\n")
    _, result = apply(path, session)
    assert result.ok, result.model_dump_json(indent=2)
    second = result.targets[0].outputs["deployment"]
    assert second != first and result.targets[0].outputs["traffic"] == {second: 100}
    # the endpoint's traffic went through the configured steps, with the new deployment mirrored first
    puts = [r.json()["properties"] for r in sim.requests
            if r.operation == "OnlineEndpoints_CreateOrUpdate" and r.method == "PUT"]
    assert any((p.get("mirrorTraffic") or {}).get(second) == 10 for p in puts), puts
    assert any((p.get("traffic") or {}).get(second) == 50 for p in puts), puts
    assert puts[-1]["authMode"].lower() == "amltoken"


def test_a_second_invoke_is_one_scoring_request(project, cloud):
    """The scoring URI and key are remembered from the first invoke (key auth): later invokes send
    only the scoring request, no Azure ML client round trips; a stale entry is looked up again."""
    sim, session, rec = cloud
    path = project(online_target())
    assert apply(path, session)[1].ok
    assert engine(path, session).invoke("prod", InvokeRequest(body={"data": [[1, 2, 3]]})).ok
    n = len(rec.calls)
    answer = engine(path, session).invoke("prod", InvokeRequest(body={"data": [[1, 2, 3]]}))
    assert answer.ok and answer.body == {"n": 1}
    assert [(m, u.split("?")[0].split("/")[-1]) for m, u in rec.calls[n:]] == [("POST", "score")]
    cache = next((path.parent / ".state").rglob("scoring.json"))
    assert oct(cache.stat().st_mode & 0o777) == "0o600"
    cache.write_text(cache.read_text().replace('"key": "', '"key": "stale'))  # as after a key rotation
    assert engine(path, session).invoke("prod", InvokeRequest(body={"data": [[1, 2, 3]]})).ok
    assert "stale" not in cache.read_text()
    assert apply(path, session, destroy=True)[1].ok
    assert not cache.exists()
