"""The ``functions`` target end to end against the Azure simulator: the real azure-mgmt-web,
azure-mgmt-storage and storage clients, OneDeploy to the simulated SCM host, and the deployed
package really running (tests/functions/test_app.py covers the app itself)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from azure.mgmt.web import WebSiteManagementClient

import orchestrator as deployctl
from orchestrator.errors import ManifestError
from orchestrator.plan import Action

SUB = "00000000-0000-0000-0000-0000000000f1"
RG = "ml-functions"


def manifest(project: Path, **target: object) -> dict:
    return {"apiVersion": "deployctl/v1", "name": "iris-fn", "model": {"path": "./model"},
            "code": {"path": "./src", "entry": "score.py"},
            "scoring": {"type": "real-time", "sample_request": "./sample-request.json"},
            "targets": [{"name": "prod", "kind": "functions", "subscription": SUB, "resource_group": RG,
                         "region": "eastus", **target}]}


@pytest.fixture
def sim(azure_simulator):
    azure_simulator.add_resource_group(SUB, RG)
    return azure_simulator


def load(project: Path, sim, state: Path, **target: object):
    return deployctl.load(manifest(project, **target), base_dir=project, state_dir=state, azure=sim.session())


def actions(plan) -> dict[str, str]:
    return {f"{c.type}/{c.name}": c.action.value for t in plan.targets for c in t.changes}


def package_uploads(sim) -> list[str]:
    return [r.path for r in sim.requests if r.method == "PUT" and "/deployments/packages/" in r.path]


def test_apply_invoke_replan_and_destroy(project, sim, tmp_path):
    d = load(project, sim, tmp_path / "state")
    result = d.apply(d.plan())
    assert result.ok, result
    outputs = result.targets[0].outputs
    assert outputs["hosting"] == "flex" and outputs["plan_sku"] == "FC1"
    assert outputs["scoring_uri"] == "https://iris-fn-prod.azurewebsites.net/api/score"
    assert outputs["first_answer_ms"] > 0  # the smoke test's answer, cold start included
    assert "function_key" not in json.dumps(outputs)
    r = d.invoke(body={"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]})
    assert r.ok and r.body == ["setosa", "virginica"]
    site = next(v for v in sim.state["resources"].values() if v["type"] == "Microsoft.Web/sites")
    storage = site["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert storage["value"].endswith(".blob.core.windows.net/deployments")
    assert set(actions(d.plan()).values()) == {"no-op"}  # an unchanged manifest is a no-op
    assert d.destroy().ok
    assert not [v for v in sim.state["resources"].values() if v["type"].startswith(("Microsoft.Web", "Microsoft.Storage"))]


def test_code_change_publishes_only_the_package_and_an_old_package_is_not_uploaded_again(project, sim, tmp_path):
    d = load(project, sim, tmp_path / "state")
    assert d.apply(d.plan()).ok
    original = (project / "src" / "score.py").read_text()
    (project / "src" / "score.py").write_text(original.replace("out.append(weights[\"classes\"]",
                                                               "out.append(\"v2-\" + weights[\"classes\"]"))
    d = load(project, sim, tmp_path / "state")
    plan = d.plan()
    assert [k for k, v in actions(plan).items() if v != "no-op"] == ["function-package/iris-fn-prod"]
    before = len(package_uploads(sim))
    assert d.apply(plan).ok
    assert len(package_uploads(sim)) == before + 1
    assert d.invoke(body={"data": [[5.1, 3.5, 1.4, 0.2]]}).body == ["v2-setosa"]
    (project / "src" / "score.py").write_text(original)  # back to the first version: its zip is in the container
    d = load(project, sim, tmp_path / "state")
    assert d.apply(d.plan()).ok
    assert len(package_uploads(sim)) == before + 1  # published from the blob already there
    assert d.invoke(body={"data": [[5.1, 3.5, 1.4, 0.2]]}).body == ["setosa"]


def test_a_package_failing_its_smoke_test_is_rolled_back(project, sim, tmp_path):
    d = load(project, sim, tmp_path / "state")
    assert d.apply(d.plan()).ok
    (project / "src" / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    raise RuntimeError('broken')\n")
    d = load(project, sim, tmp_path / "state")
    result = d.apply(d.plan())
    assert not result.ok
    assert "failed its smoke test" in str(result) and "RuntimeError: broken" in str(result)
    assert "previous package is live again" in str(result)
    r = d.invoke(body={"data": [[5.1, 3.5, 1.4, 0.2]]})
    assert r.ok and r.body == ["setosa"]  # the previous package answers


def test_a_model_over_the_flex_memory_is_a_clear_error(project, sim, tmp_path):
    d = deployctl.load({**manifest(project, hosting="flex"), "resources": {"memory_gb": 8}}, base_dir=project,
                       state_dir=tmp_path / "state", azure=sim.session())
    plan = d.plan()
    text = str(plan.to_json())
    assert "over the largest Flex Consumption instance (4096 MB)" in text and "hosting: premium" in text
    d = deployctl.load({**manifest(project), "resources": {"memory_gb": 6}}, base_dir=project,
                       state_dir=tmp_path / "state2", azure=sim.session())
    assert any(c.spec.get("sku") == "EP2" for t in d.plan().targets for c in t.changes if c.action == Action.create)


def test_linux_consumption_is_refused_with_the_reason(project):
    with pytest.raises(ManifestError, match="retiring on 2028-09-30"):
        deployctl.load(manifest(project, hosting="consumption"), base_dir=project)


FLAKY_SCORE = """
import json
def init():
    print("durable example ready")
def run(raw):
    doc = json.loads(raw)
    if doc.get("fail"):
        raise ValueError("asked to fail")
    return {"rows": len(doc["data"])}
"""


def test_durable_mode_serves_the_async_http_pattern_under_the_simulator(project, sim, tmp_path):
    """mode: durable runs for real under the simulator: the starter answers 202 with the status URL
    and Retry-After, the status URL answers Running/Pending (202) then Completed with the output, a
    failing run() ends Failed with its error after max_attempts, and invoke waits, submits or fetches."""
    from targets.web import webapps

    (project / "src" / "score.py").write_text(FLAKY_SCORE)
    doc = manifest(project)
    doc["scoring"] = {"type": "near-real-time", "sample_request": "./sample-request.json",
                      "queue": {"mode": "durable", "max_attempts": 2}}
    d = deployctl.load(doc, base_dir=project, state_dir=tmp_path / "state", azure=sim.session())
    result = d.apply(d.plan())
    assert result.ok, result
    assert result.targets[0].outputs["submit_uri"] == "https://iris-fn-prod.azurewebsites.net/api/requests"
    # the async HTTP pattern on the wire
    web = WebSiteManagementClient(sim.credential, SUB, transport=sim.transport)
    key = webapps.function_key(web, RG, "iris-fn-prod", "submit")
    status, body, headers = webapps.call_app(sim.session(), "https://iris-fn-prod.azurewebsites.net/api/requests",
                                             key=key, body={"data": [[1, 2, 3, 4]]})
    assert status == 202 and headers["Retry-After"] == "10"
    assert headers["Location"] == body["statusQueryGetUri"]
    assert body["statusQueryGetUri"].startswith("https://iris-fn-prod.azurewebsites.net/runtime/webhooks/"
                                                f"durabletask/instances/{body['id']}?")
    seen = []
    for _ in range(200):
        status, doc_, _ = webapps.call_app(sim.session(), body["statusQueryGetUri"], key=None, method="GET")
        seen.append((status, doc_["runtimeStatus"]))
        if status == 200:
            break
        time.sleep(0.05)
    assert seen[-1] == (200, "Completed") and doc_["output"] == {"rows": 1}
    assert all(s == (202, "Pending") or s == (202, "Running") for s in seen[:-1])
    unkeyed = body["statusQueryGetUri"].split("code=")[0]
    assert webapps.call_app(sim.session(), unkeyed, key=None, method="GET")[0] == 401
    # invoke: sync, --async then --request-id, and a failing run()
    r = d.invoke(body={"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]})
    assert r.ok and r.state == "done" and r.body == {"rows": 2}
    queued = d.invoke(body={"data": [[5.1, 3.5, 1.4, 0.2]]}, run_async=True)
    assert queued.state == "queued" and queued.request_id
    fetched = d.invoke(request_id=queued.request_id)
    assert fetched.state == "done" and fetched.body == {"rows": 1}
    failed = d.invoke(body={"fail": True})
    assert not failed.ok and failed.state == "dead" and "ValueError: asked to fail" in failed.details["error"]
    assert d.invoke(request_id="no-such-request").state == "unknown"
    logs = d.logs(tail=1000)
    assert "durable example ready" in logs and "Executing 'Functions.score_activity'" in logs
    assert "orchestration 'score_orchestration' failed" in logs


def swaps(sim) -> int:
    return sum(1 for r in sim.requests if r.method == "POST" and r.path.endswith("/slotsswap"))


def test_premium_blue_green_through_the_staging_slot(project, sim, tmp_path):
    d = load(project, sim, tmp_path / "state", hosting="premium")
    result = d.apply(d.plan())
    assert result.ok, result
    assert result.targets[0].outputs["plan_sku"] == "EP1" and swaps(sim) == 1
    assert d.invoke(body={"data": [[5.1, 3.5, 1.4, 0.2]]}).body == ["setosa"]
    # a broken package is smoke-tested on the slot and never swapped in
    (project / "src" / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    raise RuntimeError('broken')\n")
    d = load(project, sim, tmp_path / "state", hosting="premium")
    result = d.apply(d.plan())
    assert not result.ok and "failed its smoke test on the staging slot" in str(result)
    assert swaps(sim) == 1
    r = d.invoke(body={"data": [[5.1, 3.5, 1.4, 0.2]]})
    assert r.ok and r.body == ["setosa"]  # production never saw the broken package


def test_flex_apps_have_no_slots(sim):
    """The simulator answers as App Service does: no slot on a Flex Consumption plan."""
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.web import WebSiteManagementClient

    web = WebSiteManagementClient(sim.credential, SUB, transport=sim.transport)
    plan = web.app_service_plans.begin_create_or_update(RG, "p", {"location": "eastus", "sku": {"name": "FC1",
                                                                                             "tier": "FlexConsumption"}}).result()
    storage = {"type": "blobContainer", "value": "https://a.blob.core.windows.net/deployments",
               "authentication": {"type": "StorageAccountConnectionString",
                                  "storageAccountConnectionStringName": "DEPLOYMENT_STORAGE_CONNECTION_STRING"}}
    web.web_apps.begin_create_or_update(RG, "app", {"location": "eastus", "properties": {
        "serverFarmId": plan.id, "functionAppConfig": {"deployment": {"storage": storage}}}}).result()
    with pytest.raises(HttpResponseError, match="do not support deployment slots"):
        web.web_apps.begin_create_or_update_slot(RG, "app", "staging", {"location": "eastus", "properties": {
            "serverFarmId": plan.id}}).result()


def test_premium_queue_app_blue_green_with_the_slot_trigger_disabled(project, sim, tmp_path):
    """A queued app on Premium also goes through the staging slot: the slot's queue trigger is off
    (AzureWebJobs.score_queue.Disabled, slot-sticky: it never reaches production in the swap), it is
    smoke-tested over HTTP, and a broken package is never swapped in."""
    doc = manifest(project, hosting="premium")
    doc["scoring"] = {"type": "near-real-time", "sample_request": "./sample-request.json", "queue": {"max_attempts": 2}}
    d = deployctl.load(doc, base_dir=project, state_dir=tmp_path / "state", azure=sim.session())
    result = d.apply(d.plan())
    assert result.ok, result
    assert swaps(sim) == 1
    web = WebSiteManagementClient(sim.credential, SUB, transport=sim.transport)
    names = web.web_apps.list_slot_configuration_names(RG, "iris-fn-prod")
    assert names.properties.app_setting_names == ["AzureWebJobs.score_queue.Disabled"]
    slot = web.web_apps.list_application_settings_slot(RG, "iris-fn-prod", "staging").properties
    prod = web.web_apps.list_application_settings(RG, "iris-fn-prod").properties
    assert slot["AzureWebJobs.score_queue.Disabled"] == "1" and "AzureWebJobs.score_queue.Disabled" not in prod
    r = d.invoke(body={"data": [[5.1, 3.5, 1.4, 0.2]]})
    assert r.ok and r.state == "done" and r.body == ["setosa"]
    assert "Executing 'Functions.score_queue'" in d.logs(tail=1000)
    staging_log = d.logs(tail=1000, deployment="staging")
    assert "Function 'Functions.score_queue' is disabled" in staging_log
    assert "Executing 'Functions.score_queue'" not in staging_log  # the slot took no message
    # a broken package fails on the slot; production keeps scoring queued requests
    (project / "src" / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    raise RuntimeError('broken')\n")
    d = deployctl.load(doc, base_dir=project, state_dir=tmp_path / "state", azure=sim.session())
    result = d.apply(d.plan())
    assert not result.ok and "failed its smoke test on the staging slot" in str(result)
    assert swaps(sim) == 1
    r = d.invoke(body={"data": [[6.7, 3.0, 5.2, 2.3]]})
    assert r.ok and r.body == ["virginica"]
