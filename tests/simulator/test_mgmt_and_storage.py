"""azure-mgmt-containerinstance, azure-mgmt-web, azure-storage-blob and azure-storage-queue
against the simulator: create, get, update, delete, long-running and fault paths."""

from __future__ import annotations

import io
import zipfile

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from tests.simulator.conftest import SUB

pytest.importorskip("azure.mgmt.containerinstance")
pytest.importorskip("azure.mgmt.web")


@pytest.fixture
def cloud(azure_simulator):
    azure_simulator.add_resource_group(SUB, "rg")
    return azure_simulator


def _group(image: str = "nginx"):
    from azure.mgmt.containerinstance.models import (
        Container,
        ContainerGroup,
        ContainerPort,
        IpAddress,
        Port,
        ResourceRequests,
        ResourceRequirements,
    )

    return ContainerGroup(location="eastus", os_type="Linux", ip_address=IpAddress(type="Public", ports=[Port(port=80)]),
                          containers=[Container(name="c", image=image, ports=[ContainerPort(port=80)],
                                                resources=ResourceRequirements(requests=ResourceRequests(cpu=1, memory_in_gb=1.5)))])


def test_container_group_lifecycle_with_lro_and_connection_reset(cloud):
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient

    aci = ContainerInstanceManagementClient(cloud.credential, SUB, transport=cloud.transport)
    cloud.faults.on("ContainerGroups_CreateOrUpdate", "503", times=1)  # PUT retried by azure-core
    cloud.faults.on("ContainerGroups_Get", "reset", times=1)  # a dropped connection on a GET, retried
    created = aci.container_groups.begin_create_or_update("rg", "cg1", _group()).result()
    assert created.provisioning_state == "Succeeded"
    put = [r for r in cloud.requests if r.operation == "ContainerGroups_CreateOrUpdate"]
    assert [r.status for r in put] == [503, 201]
    assert put[-1].api_version == "2023-05-01"
    assert any(r.operation == "OperationStatus_Get" and "/operations/" in r.path for r in cloud.requests)
    assert aci.container_groups.get("rg", "cg1").containers[0].image == "nginx"
    aci.container_groups.begin_create_or_update("rg", "cg1", _group("nginx:2")).result()
    assert aci.container_groups.get("rg", "cg1").containers[0].image == "nginx:2"
    assert [g.name for g in aci.container_groups.list_by_resource_group("rg")] == ["cg1"]
    aci.container_groups.begin_delete("rg", "cg1").result()
    with pytest.raises(ResourceNotFoundError):
        aci.container_groups.get("rg", "cg1")


def test_missing_resource_group_is_404_in_strict_mode(cloud):
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient

    aci = ContainerInstanceManagementClient(cloud.credential, SUB, transport=cloud.transport)
    with pytest.raises(ResourceNotFoundError) as e:
        aci.container_groups.get("nope", "cg1")
    assert "ResourceGroupNotFound" in str(e.value)


def test_web_app_plan_site_settings_and_zip_deploy(cloud):
    from azure.core import PipelineClient
    from azure.core.rest import HttpRequest
    from azure.mgmt.web import WebSiteManagementClient
    from azure.mgmt.web.models import AppServicePlan, Site, SkuDescription, StringDictionary

    web = WebSiteManagementClient(cloud.credential, SUB, transport=cloud.transport)
    plan = web.app_service_plans.begin_create_or_update(
        "rg", "plan", AppServicePlan(location="eastus", sku=SkuDescription(name="B1"), reserved=True)).result()
    site = web.web_apps.begin_create_or_update(
        "rg", "fn1", Site(location="eastus", server_farm_id=plan.id, kind="functionapp,linux")).result()
    assert site.default_host_name == "fn1.azurewebsites.net"
    web.web_apps.update_application_settings("rg", "fn1", StringDictionary(properties={"FUNCTIONS_WORKER_RUNTIME": "python"}))
    assert web.web_apps.list_application_settings("rg", "fn1").properties == {"FUNCTIONS_WORKER_RUNTIME": "python"}

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("function_app.py", "print(1)")
    kudu = PipelineClient("https://fn1.scm.azurewebsites.net", transport=cloud.transport)
    first = kudu.send_request(HttpRequest("POST", "https://fn1.scm.azurewebsites.net/api/zipdeploy?isAsync=true",
                                          content=buf.getvalue()))
    assert first.status_code == 202
    again = kudu.send_request(HttpRequest("POST", "https://fn1.scm.azurewebsites.net/api/zipdeploy", content=buf.getvalue()))
    assert again.status_code == 409  # Kudu: a deployment is in progress
    cloud.clock.advance(cloud.latency.lro_seconds("default"))
    latest = kudu.send_request(HttpRequest("GET", "https://fn1.scm.azurewebsites.net/api/deployments/latest")).json()
    assert latest["complete"] and latest["files"] == ["function_app.py"]
    web.web_apps.delete("rg", "fn1")
    with pytest.raises(ResourceNotFoundError):
        web.web_apps.get("rg", "fn1")


def test_blob_upload_list_download_properties_and_block_upload(cloud):
    from azure.storage.blob import BlobServiceClient

    svc = BlobServiceClient("https://acct1.blob.core.windows.net", credential="a2V5", transport=cloud.transport,
                            max_single_put_size=4 * 1024, max_block_size=4 * 1024)
    container = svc.create_container("data")
    with pytest.raises(ResourceExistsError):
        svc.create_container("data")
    big = bytes(range(256)) * 64  # 16 KiB: staged as blocks, then committed
    container.upload_blob("dir/big.bin", big)
    container.upload_blob("dir/small.txt", b"hi")
    with pytest.raises(ResourceExistsError):
        container.upload_blob("dir/small.txt", b"again")
    assert sorted(b.name for b in container.list_blobs(name_starts_with="dir/")) == ["dir/big.bin", "dir/small.txt"]
    assert container.get_blob_client("dir/big.bin").get_blob_properties().size == len(big)
    assert container.download_blob("dir/big.bin").readall() == big
    assert any(r.operation == "Blob_PutBlockList" for r in cloud.requests)
    container.delete_blob("dir/small.txt")
    with pytest.raises(ResourceNotFoundError):
        container.download_blob("dir/small.txt").readall()


def test_queue_send_receive_delete(cloud):
    from azure.storage.queue import QueueClient

    q = QueueClient("https://acct1.queue.core.windows.net", "jobs", credential="a2V5", transport=cloud.transport)
    q.create_queue()
    q.send_message("one")
    q.send_message("two")
    assert q.get_queue_properties().approximate_message_count == 2
    got = list(q.receive_messages(max_messages=1, visibility_timeout=30))
    assert [m.content for m in got] == ["one"]
    assert [m.content for m in q.receive_messages(max_messages=5)] == ["two"]  # "one" is invisible
    q.delete_message(got[0])
    cloud.clock.advance(60)
    assert [m.content for m in q.peek_messages(max_messages=5)] == ["two"]


def test_storage_account_and_registry_build_run(cloud):
    from azure.core import PipelineClient
    from azure.core.rest import HttpRequest

    arm = PipelineClient("https://management.azure.com", transport=cloud.transport)
    base = f"https://management.azure.com/subscriptions/{SUB}/resourceGroups/rg/providers"
    r = arm.send_request(HttpRequest("PUT", f"{base}/Microsoft.Storage/storageAccounts/Bad_Name?api-version=2023-01-01",
                                     json={"location": "eastus", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}))
    assert r.status_code == 400 and r.json()["error"]["code"] == "AccountNameInvalid"
    r = arm.send_request(HttpRequest("PUT", f"{base}/Microsoft.Storage/storageAccounts/acct2?api-version=2023-01-01",
                                     json={"location": "eastus", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}))
    assert r.json()["properties"]["primaryEndpoints"]["queue"] == "https://acct2.queue.core.windows.net/"
    keys = arm.send_request(HttpRequest("POST", f"{base}/Microsoft.Storage/storageAccounts/acct2/listKeys?api-version=2023-01-01"))
    assert keys.json()["keys"][0]["value"]
    reg = f"{base}/Microsoft.ContainerRegistry/registries/cr1"
    assert arm.send_request(HttpRequest("PUT", f"{reg}?api-version=2023-07-01", json={"location": "eastus",
                                        "sku": {"name": "Basic"}})).json()["properties"]["loginServer"] == "cr1.azurecr.io"
    run = arm.send_request(HttpRequest("POST", f"{reg}/scheduleRun?api-version=2019-06-01-preview",
                                       json={"type": "DockerBuildRequest", "dockerFilePath": "Dockerfile"}))
    assert run.status_code == 200 and run.json()["properties"]["status"] == "Running"
    cloud.clock.advance(cloud.latency.lro_seconds("default"))
    run_id = run.json()["properties"]["runId"]
    done = arm.send_request(HttpRequest("GET", f"{reg}/runs/{run_id}?api-version=2019-06-01-preview"))
    assert done.json()["properties"]["status"] == "Succeeded"


def test_unknown_operation_fails_loudly(cloud):
    from azure.core import PipelineClient
    from azure.core.rest import HttpRequest

    from orchestrator.azure.simulator import UnsupportedRequest

    arm = PipelineClient("https://management.azure.com", transport=cloud.transport)
    with pytest.raises(UnsupportedRequest):
        arm.send_request(HttpRequest("GET", f"https://management.azure.com/subscriptions/{SUB}/resourceGroups/rg/"
                                     "providers/Microsoft.Compute/virtualMachines/vm1?api-version=2024-03-01"))
    with pytest.raises(UnsupportedRequest):
        arm.send_request(HttpRequest("GET", "https://example.com/anything"))
    assert len(cloud.unsupported) == 2


def test_http_error_surfaces_through_the_mgmt_client(cloud):
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient

    aci = ContainerInstanceManagementClient(cloud.credential, SUB, transport=cloud.transport, retry_total=0)
    cloud.faults.script("500")
    with pytest.raises(HttpResponseError) as e:
        aci.container_groups.get("rg", "x")
    assert e.value.status_code == 500


def test_etag_preconditions_and_arm_budget_headers(cloud):
    from azure.core import PipelineClient
    from azure.core.rest import HttpRequest

    arm = PipelineClient("https://management.azure.com", transport=cloud.transport)
    url = (f"https://management.azure.com/subscriptions/{SUB}/resourceGroups/rg/providers/"
           "Microsoft.ContainerRegistry/registries/cr2?api-version=2023-07-01")
    body = {"location": "eastus", "sku": {"name": "Basic"}}
    created = arm.send_request(HttpRequest("PUT", url, json=body, headers={"If-None-Match": "*"}))
    assert created.status_code == 200 and created.headers["x-ms-ratelimit-remaining-subscription-writes"]
    again = arm.send_request(HttpRequest("PUT", url, json=body, headers={"If-None-Match": "*"}))
    assert again.status_code == 412
    etag = created.json()["etag"]
    stale = arm.send_request(HttpRequest("PUT", url, json=body, headers={"If-Match": '"stale"'}))
    assert stale.status_code == 412 and stale.json()["error"]["code"] == "PreconditionFailed"
    assert arm.send_request(HttpRequest("PUT", url, json=body, headers={"If-Match": etag})).status_code == 200
