"""Microsoft.Web plumbing shared by the Functions and App Service targets: clients, plans, sites,
app settings, keys, package deploys (Kudu / OneDeploy) and calls to the deployed app.

Everything goes through the run's :class:`AzureSession` (the simulator's transport under
``--simulate``); the SCM host and the app itself are reached with azure-core pipelines on the same
transport and retry policy.  Kudu takes the ARM bearer token.  Azure SDKs are imported inside the
functions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.errors import TargetError

ARM_SCOPE = "https://management.azure.com/.default"
# Kudu deployment status codes: -1 cancelled, 0 pending, 1 building, 2 deploying, 3 failed, 4 success,
# 5 conflict, 6 partial success
KUDU_SUCCESS, KUDU_FAILED = 4, (-1, 3, 5, 6)


def web_client(session: Any, subscription: str) -> Any:
    from azure.mgmt.web import WebSiteManagementClient

    return WebSiteManagementClient(session.get_credential(subscription), subscription, **session.client_kwargs())


def storage_client(session: Any, subscription: str) -> Any:
    from azure.mgmt.storage import StorageManagementClient

    return StorageManagementClient(session.get_credential(subscription), subscription, **session.client_kwargs())


def as_dict(model: Any) -> dict[str, Any]:
    """An SDK model as its REST JSON (the typespec models are mappings of the wire shape)."""
    if model is None:
        return {}
    if hasattr(model, "as_dict"):
        try:
            return dict(model.as_dict(exclude_readonly=False))
        except TypeError:
            return dict(model.as_dict())
    return dict(model)


def get_or_none(fn: Callable[[], Any]) -> Any:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return fn()
    except ResourceNotFoundError:
        return None


def norm_location(loc: str | None) -> str:
    """ARM answers "East US" for web resources asked to be in "eastus"."""
    return (loc or "").replace(" ", "").lower()


def plan_body(location: str, sku: str, tags: Mapping[str, str], *, max_burst: int) -> dict[str, Any]:
    tier = "FlexConsumption" if sku == "FC1" else "ElasticPremium"
    props: dict[str, Any] = {"reserved": True}  # Linux
    if tier == "ElasticPremium":
        props["maximumElasticWorkerCount"] = max_burst
    return {"location": location, "kind": "functionapp" if tier == "FlexConsumption" else "elastic",
            "sku": {"name": sku, "tier": tier}, "tags": dict(tags), "properties": props}


def app_settings(web: Any, rg: str, name: str) -> dict[str, str]:
    return dict(as_dict(web.web_apps.list_application_settings(rg, name)).get("properties") or {})


def put_app_settings(web: Any, rg: str, name: str, settings: Mapping[str, str], slot: str | None = None) -> None:
    if slot:
        web.web_apps.update_application_settings_slot(rg, name, slot, {"properties": dict(settings)})
    else:
        web.web_apps.update_application_settings(rg, name, {"properties": dict(settings)})


def swap_into_production(web: Any, rg: str, name: str, slot: str) -> None:
    """Swap ``slot`` with production (its package and settings become production's)."""
    web.web_apps.begin_swap_slot_with_production(rg, name, {"targetSlot": slot, "preserveVnet": True}).result()


def function_key(web: Any, rg: str, name: str, function: str, slot: str | None = None) -> str:
    doc = as_dict(web.web_apps.list_function_keys_slot(rg, name, function, slot) if slot
                  else web.web_apps.list_function_keys(rg, name, function))
    keys = doc.get("properties") or doc  # a StringDictionary; some api-versions answer the bare mapping
    if "default" not in keys:
        raise TargetError(f"function {function} of {name} has no default key")
    return str(keys["default"])


def _pipeline(session: Any, base_url: str, credential: Any = None) -> Any:
    from azure.core import PipelineClient
    from azure.core.pipeline import policies

    kw = session.client_kwargs()
    pols = [policies.RequestIdPolicy(), policies.HeadersPolicy(), policies.UserAgentPolicy("deployctl"),
            kw["retry_policy"]]
    if credential is not None:
        pols.append(policies.BearerTokenCredentialPolicy(credential, ARM_SCOPE))
    pols.append(policies.NetworkTraceLoggingPolicy())
    return PipelineClient(base_url, policies=pols, **({"transport": kw["transport"]} if "transport" in kw else {}))


def publish(session: Any, credential: Any, scm_host: str, package_uri: str, *,
            sleep: Callable[[float], None], timeout_s: float = 1800) -> str:
    """OneDeploy from a URL (``POST /api/publish`` ``{"packageUri"}``), then follow the deployment
    until it succeeds; its id.  Kudu's 409 (a deployment in progress) is retried by the caller."""
    from azure.core.rest import HttpRequest

    base = f"https://{scm_host}"
    with _pipeline(session, base, credential) as client:
        req = HttpRequest("POST", f"{base}/api/publish", params={"type": "zip", "RemoteBuild": "false"},
                          headers={"Content-Type": "application/json"}, content=json.dumps({"packageUri": package_uri}))
        resp = client.send_request(req)
        if resp.status_code not in (200, 202):
            raise TargetError(f"OneDeploy publish to {scm_host} answered HTTP {resp.status_code}: {resp.text()[:300]}",
                              retryable=resp.status_code == 409)
        dep_id = resp.text().strip().strip('"') or "latest"
        return _follow(client, base, scm_host, dep_id, sleep=sleep, timeout_s=timeout_s)


def zip_deploy(session: Any, credential: Any, scm_host: str, data: bytes, *,
               sleep: Callable[[float], None], timeout_s: float = 1800) -> str:
    """Kudu zip deploy of ``data`` (``POST /api/zipdeploy?isAsync=true``), followed until it
    succeeds; the deployment's id.  With ``WEBSITE_RUN_FROM_PACKAGE=1`` the site runs the zip as
    uploaded (no remote build).  409 (a deployment in progress) is retryable."""
    from azure.core.rest import HttpRequest

    base = f"https://{scm_host}"
    with _pipeline(session, base, credential) as client:
        req = HttpRequest("POST", f"{base}/api/zipdeploy", params={"isAsync": "true"},
                          headers={"Content-Type": "application/zip"}, content=data)
        resp = client.send_request(req)
        if resp.status_code not in (200, 202):
            raise TargetError(f"zip deploy to {scm_host} answered HTTP {resp.status_code}: {resp.text()[:300]}",
                              retryable=resp.status_code == 409)
        return _follow(client, base, scm_host, "latest", sleep=sleep, timeout_s=timeout_s)


def _follow(client: Any, base: str, scm_host: str, dep_id: str, *, sleep: Callable[[float], None],
            timeout_s: float) -> str:
    from azure.core.rest import HttpRequest

    deadline = time.monotonic() + timeout_s
    while True:
        st = client.send_request(HttpRequest("GET", f"{base}/api/deployments/{dep_id}"))
        doc = st.json() if st.status_code == 200 else {}
        status = int(doc.get("status", 0))
        if status == KUDU_SUCCESS and doc.get("complete", True):
            return str(doc.get("id") or dep_id)
        if status in KUDU_FAILED:
            raise TargetError(f"deployment {dep_id} to {scm_host} ended with Kudu status {status}: "
                              f"{doc.get('status_text') or doc.get('message') or ''}".rstrip(": "))
        if time.monotonic() > deadline:
            raise TargetError(f"deployment {dep_id} to {scm_host} did not finish in {timeout_s:.0f}s")
        sleep(2)


def docker_log(session: Any, credential: Any, scm_host: str) -> str:
    """The app's current container log through Kudu (``/api/logs/docker`` names the file)."""
    from azure.core.rest import HttpRequest

    base = f"https://{scm_host}"
    with _pipeline(session, base, credential) as client:
        listing = client.send_request(HttpRequest("GET", f"{base}/api/logs/docker"))
        if listing.status_code != 200 or not listing.json():
            return ""
        newest = sorted(listing.json(), key=lambda f: str(f.get("lastUpdated") or ""))[-1]
        resp = client.send_request(HttpRequest("GET", str(newest["href"])))
        return resp.text() if resp.status_code == 200 else ""


def call_app(session: Any, url: str, *, key: str | None, body: Any = None, method: str = "POST",
             timeout_s: float = 60) -> tuple[int, Any, dict[str, str]]:
    """A request to the deployed app (function key in ``x-functions-key``); (status, body, headers)."""
    from orchestrator.azure.http import request_json

    headers = {"x-functions-key": key} if key else {}
    return request_json(session, method, url, headers=headers, body=body, timeout_s=timeout_s)
