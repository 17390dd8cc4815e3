"""The simulator itself: fault specs, latency, persistence across runs, conformance, no network,
the optional 127.0.0.1 server."""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest

from orchestrator.azure.simulator import (
    AzureSimulator,
    FaultInjector,
    LatencyModel,
    UnsupportedRequest,
    simulated_session,
)
from tests.simulator.conftest import SHARED, SUB, mlclient


def test_fault_spec_strings():
    f = FaultInjector.parse("429:2,503,lro-failed@OnlineDeployments_CreateOrUpdate:1,retry_after=3,seed=5")
    assert f.scripted == ["429", "429", "503"] and f.retry_after == 3 and f.seed == 5
    assert f.by_operation == {"onlinedeployments_createorupdate": ["lro-failed"]}
    assert f.next_request("OnlineDeployments_CreateOrUpdate").kind == "429"  # scripted faults come first
    assert f.lro_outcome("OnlineDeployments_CreateOrUpdate") == "lro-failed"
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultInjector.parse("418:1")
    with pytest.raises(ValueError, match="unknown setting"):
        FaultInjector.parse("frequency=2")


def test_rate_faults_are_deterministic_per_seed():
    def draw(seed: int) -> list[str | None]:
        f = FaultInjector.parse(f"rate=0.3,kinds=429|503|reset,seed={seed}")
        return [getattr(f.next_request("X"), "kind", None) for _ in range(50)]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)
    assert 5 < sum(k is not None for k in draw(3)) < 30


def test_latency_spec():
    m = LatencyModel.parse("call=0.5,deployment=600,scale=0.5")
    assert (m.call_seconds(), m.lro_seconds("deployment"), m.lro_seconds("endpoint")) == (0.25, 300, 30)
    assert LatencyModel.parse("realtime=1").realtime and not m.realtime
    with pytest.raises(ValueError, match="unknown key"):
        LatencyModel.parse("bogus=1")


def test_call_latency_and_slow_responses_cost_simulated_time(azure_simulator):
    azure_simulator.add_workspace(SUB, "rg", "ws")
    azure_simulator.latency.call = 2.0
    azure_simulator.faults.slow_s = 40
    azure_simulator.faults.script("slow")
    t0 = azure_simulator.clock.now()
    assert mlclient(azure_simulator).datastores.get("workspaceblobstore").name == "workspaceblobstore"
    assert azure_simulator.clock.now() - t0 == pytest.approx(42)


def test_simulated_session_persists_one_cloud_across_runs(tmp_path, monkeypatch):
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    state = tmp_path / "sim.json"
    monkeypatch.setenv("DEPLOYCTL_SIMULATE_LATENCY", "endpoint=10")
    with simulated_session(state) as session:  # run 1: apply (any workspace works: pre-seeded)
        assert session.simulator.strict is False
        ml = mlclient(session.simulator, rg="my-rg", ws="my-ws", credential=session.credential)
        ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="persisted")).result()
        uri = ml.online_endpoints.get("persisted").scoring_uri
        key = ml.online_endpoints.get_keys("persisted").primary_key
        clock = session.simulator.clock.now()
    assert json.loads(state.read_text())["version"] == 1
    with simulated_session(state, faults="429:1") as session:  # run 2: status, with a fault on the way
        sim = session.simulator
        assert sim.clock.now() == clock
        ml = mlclient(sim, rg="my-rg", ws="my-ws", credential=session.credential)
        ep = ml.online_endpoints.get("persisted")
        assert (ep.scoring_uri, ml.online_endpoints.get_keys("persisted").primary_key) == (uri, key)
        assert sim.faults.injected == [("OnlineEndpoints_Get", "429")]
        ml.online_endpoints.begin_delete(name="persisted").result()
    with simulated_session(state) as session:  # run 3: it stayed deleted; new ids do not collide
        sim = session.simulator
        assert mlclient(sim, rg="my-rg", ws="my-ws").online_endpoints.list() is not None
        assert not [r for r in sim.state["resources"].values() if r["name"] == "persisted"]
        ids = {sim.new_id() for _ in range(3)}
    assert len(ids) == 3


def test_save_load_round_trip_keeps_blobs_quotas_and_denials(tmp_path):
    sim = AzureSimulator(seed=2)
    sim.add_model(SUB, "rg", "ws", "m", "1", {"model.pkl": b"\x00\x01binary"})
    sim.set_quota(SUB, "eastus", "standardDSv2Family", 8)
    sim.deny(subscription="other-sub")
    sim.save(tmp_path / "s.json")
    again = AzureSimulator.load(tmp_path / "s.json")
    assert again.state == json.loads((tmp_path / "s.json").read_text())
    assert again.quota_limit(SUB, "eastus", "standardDSv2Family") == 8
    from orchestrator.azure.simulator.providers import storage

    ds = again.get(f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/"
                   "datastores/workspaceblobstore")["properties"]
    assert storage.get_blob(again, ds["accountName"], ds["containerName"], "models/m/1/model/model.pkl") == b"\x00\x01binary"
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a simulated-cloud state file"):
        AzureSimulator.load(tmp_path / "bad.json")


def test_fixture_blocks_real_network(azure_simulator):
    from orchestrator.azure.simulator.pytest_plugin import NetworkBlocked

    with pytest.raises(NetworkBlocked):
        socket.getaddrinfo("management.azure.com", 443)
    with socket.socket() as s, pytest.raises(NetworkBlocked):
        s.connect(("10.255.255.1", 443))


def test_http_server_mode_on_loopback(azure_simulator):
    azure_simulator.add_workspace(SUB, "rg", "ws")
    base = azure_simulator.serve()
    assert base.startswith("http://127.0.0.1:")
    path = (f"/management.azure.com/subscriptions/{SUB}/resourceGroups/rg/providers/"
            "Microsoft.MachineLearningServices/workspaces/ws?api-version=2024-10-01-preview")
    with urllib.request.urlopen(base + path, timeout=10) as r:
        assert json.loads(r.read())["name"] == "ws"


needs_specs = pytest.mark.skipif(not (SHARED / "azure-rest-api-specs").is_dir(),
                                 reason=f"REST specs not found at {SHARED / 'azure-rest-api-specs'} (../shared is absent)")


@needs_specs
def test_requests_are_checked_against_the_rest_specs(azure_simulator):
    from azure.ai.ml.entities import ManagedOnlineEndpoint
    from azure.core import PipelineClient
    from azure.core.rest import HttpRequest

    sim = azure_simulator
    assert sim.conformance.enabled
    sim.add_workspace(SUB, "rg", "ws")
    mlclient(sim).online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="conf-ep")).result()
    used = {(op, want): have for op, want, have in sim.conformance.checked}
    # the SDK's preview api-version is validated against the spec folder it has (exact here)
    assert used[("OnlineEndpoints_CreateOrUpdate", "2022-02-01-preview")] == "2022-02-01-preview"
    arm = PipelineClient("https://management.azure.com", transport=sim.transport)
    url = (f"https://management.azure.com/subscriptions/{SUB}/resourceGroups/rg/providers/"
           "Microsoft.MachineLearningServices/workspaces/ws/onlineEndpoints/bad-ep?api-version=2023-10-01")
    with pytest.raises(UnsupportedRequest, match="'location' is a required property"):
        arm.send_request(HttpRequest("PUT", url, json={"properties": {"authMode": "Key"}}))
    with pytest.raises(UnsupportedRequest, match="'authMode' is a required property"):
        arm.send_request(HttpRequest("PUT", url, json={"location": "eastus", "properties": {}}))
    assert sim.get(url.split("?")[0].replace("https://management.azure.com", "")) is None


@needs_specs
def test_routes_json_is_generated_from_the_specs():
    from orchestrator.azure.simulator import routes

    generated = routes.generate(SHARED / "azure-rest-api-specs")
    committed = json.loads(routes.ROUTES_FILE.read_text())
    assert generated == committed


def test_simulator_works_without_specs(tmp_path):
    sim = AzureSimulator(specs_dir=tmp_path / "absent")
    assert not sim.conformance.enabled
    sim.add_workspace(SUB, "rg", "ws")
    assert mlclient(sim).datastores.get("workspaceblobstore").account_name


@needs_specs
def test_simulator_answers_conform_to_the_spec_response_schemas(azure_simulator):
    from azure.ai.ml.entities import Environment, ManagedOnlineDeployment, ManagedOnlineEndpoint

    sim = azure_simulator
    sim.add_workspace(SUB, "rg", "ws")
    sim.add_model(SUB, "rg", "ws", "m", "1", {"model.pkl": b"x"})
    ml = mlclient(sim)
    ml.environments.create_or_update(Environment(name="e", version="1", image="img:1"))
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="resp-ep")).result()
    ml.online_deployments.begin_create_or_update(ManagedOnlineDeployment(
        name="blue", endpoint_name="resp-ep", model="azureml:m:1", environment="azureml:e:1",
        instance_type="Standard_DS2_v2", instance_count=1)).result()
    ml.online_endpoints.get_keys("resp-ep")
    list(ml.compute.list_usage())
    ml.online_deployments.get_logs("blue", "resp-ep", lines=5)
    checked = {op for op, _, _ in sim.conformance.checked}
    assert {"OnlineEndpoints_CreateOrUpdate", "OnlineDeployments_CreateOrUpdate", "Usages_List"} <= checked
    assert sim.conformance.response_problems == []


def test_command_line_seeds_and_shows_a_persisted_cloud(tmp_path, capsys):
    from orchestrator.azure.simulator.__main__ import main

    state = tmp_path / "cloud.json"
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.pkl").write_bytes(b"weights")
    assert main(["add-model", str(state), SUB, "models-rg", "models-ws", "iris", "1", str(tmp_path / "model")]) == 0
    assert main(["quota", str(state), SUB, "eastus", "standardDSv2Family", "4"]) == 0
    assert main(["deny", str(state), "other-sub", "--principal", "ci"]) == 0
    assert main(["show", str(state)]) == 0
    out = capsys.readouterr().out
    assert "/models/iris/versions/1" in out
    sim = AzureSimulator.load(state)
    model = sim.get(f"/subscriptions/{SUB}/resourceGroups/models-rg/providers/Microsoft.MachineLearningServices/"
                    "workspaces/models-ws/models/iris/versions/1")
    assert model["properties"]["modelUri"].endswith("/models/iris/1/model/")
    assert sim.quota_limit(SUB, "eastus", "standardDSv2Family") == 4
    assert sim.state["denied"] == [{"scope": "/subscriptions/other-sub", "principal": "ci"}]
    assert main(["add-model", str(state), SUB, "rg", "ws", "m", "1", str(tmp_path / "missing")]) == 2


def test_read_timeout_and_storage_retries_wait_on_the_virtual_clock(azure_simulator):
    import time

    from azure.storage.blob import BlobClient, BlobServiceClient

    sim = azure_simulator
    sim.add_workspace(SUB, "rg", "ws")
    sim.faults.on("Datastores_Get", "timeout", times=1)  # azure-core retries reads
    assert mlclient(sim).datastores.get("workspaceblobstore").name == "workspaceblobstore"
    svc = BlobServiceClient("https://acct9.blob.core.windows.net", credential="a2V5", transport=sim.transport)
    svc.create_container("c")
    sim.faults.script("503")  # untargeted faults skip the storage data plane (its sub-clients sleep for real)
    svc.get_blob_client("c", "y.txt").upload_blob(b"y")
    assert sim.faults.scripted == ["503"]
    sim.faults.clear()
    # a BlobClient built with transport= retries on the virtual clock (storage back-off: 15 s and more)
    client = BlobClient("https://acct9.blob.core.windows.net", "c", "x.txt", credential="a2V5", transport=sim.transport)
    sim.faults.on("Blob_Put", "503", times=2)
    real0, slept0 = time.monotonic(), sim.clock.slept
    client.upload_blob(b"data")
    assert sim.clock.slept - slept0 >= 15 and time.monotonic() - real0 < 5
    assert [k for _, k in sim.faults.injected] == ["timeout", "503", "503"]
    assert client.download_blob().readall() == b"data"
