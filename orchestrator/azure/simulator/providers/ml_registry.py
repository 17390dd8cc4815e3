"""Azure ML registries: importing a workspace model into a registry (what ``models.share()`` does).

azure-ai-ml 1.35 shares a workspace model by POSTing a ``WorkspaceAssetReference`` to the registry
data plane (``POST .../registries/{registry}/import?api-version=2021-10-01-dataplanepreview`` on the
registry's regional host, body ``{"properties": {"referenceType": "Id", "sourceAssetId":
"azureml://locations/<region>/workspaces/<workspace guid>/models/<name>/versions/<v>",
"destinationName", "destinationVersion"}}``), a long-running operation it polls with ARMPolling and
whose final body is empty; it then GETs the registry model version.  That data-plane api-version is
not among the carried REST specs (only the ARM registry operations are), so this operation is
modelled on the SDK's wire contract: 202 + Location (+ Retry-After), Location answers 202 while
running and 200 with no body when done.  The registry model version it creates conforms to the
specs' ``ModelVersion`` (``RegistryModelVersions_Get`` responses are checked like any other).

Like the service, the import copies the files: the source version's blobs go to the registry's own
storage account and the registry version's ``modelUri`` points there, so deployments that name
``azureml://registries/<r>/models/<n>/versions/<v>`` really serve the shared content, whatever
happens to the source workspace afterwards.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from orchestrator.azure.simulator import arm
from orchestrator.azure.simulator.messages import Request, Response, arm_error

NS = "Microsoft.MachineLearningServices"
SOURCE_ASSET = re.compile(r"^azureml://locations/(?P<loc>[^/]+)/workspaces/(?P<guid>[^/]+)/(?P<kind>[a-z]+)/"
                          r"(?P<name>[^/]+)/versions/(?P<version>[^/]+)$", re.IGNORECASE)
DATASTORE_PATH = re.compile(r"datastores/(?P<ds>[^/]+)/paths/(?P<path>.*)$")
BLOB_URI = re.compile(r"^https://(?P<account>[a-z0-9]+)\.blob\.core\.windows\.net/(?P<container>[^/?]+)/?(?P<path>[^?]*)")
REGISTRY_CONTAINER = "registry-assets"
HOOK = "ml.registry-import"


def install(sim: Any) -> None:
    sim.hooks[HOOK] = _import_done


def registry_regions(reg: dict[str, Any]) -> list[str]:
    details = (reg.get("properties") or {}).get("regionDetails") or []
    return [str(d.get("location", "")).lower().replace(" ", "") for d in details if d.get("location")] \
        or [str(reg.get("location", "")).lower()]


def import_asset(sim: Any, req: Request, reg: dict[str, Any], operation: str) -> Response | None:
    """POST .../registries/{r}/import: validate the reference, start the copy."""
    body = req.json()
    props = body.get("properties") if isinstance(body, dict) else None
    if not isinstance(props, dict) or str(props.get("referenceType", "")).lower() != "id" \
            or not isinstance(props.get("sourceAssetId"), str):
        return arm_error(400, "UserError", "The request must carry properties.referenceType 'Id' and "
                         "properties.sourceAssetId.")
    m = SOURCE_ASSET.match(props["sourceAssetId"])
    if not m:
        return arm_error(400, "UserError", f"Invalid source asset id '{props['sourceAssetId']}': expected "
                         "azureml://locations/<region>/workspaces/<workspace id>/<assets>/<name>/versions/<version>.")
    if m["kind"].lower() != "models":
        return None  # environments, components, data: not simulated (the simulator says so loudly)
    ws = next((r for r in sim.state["resources"].values()
               if r.get("type", "").lower() == f"{NS}/workspaces".lower()
               and str((r.get("properties") or {}).get("workspaceId", "")).lower() == m["guid"].lower()), None)
    if ws is None or str(ws.get("location", "")).lower() != m["loc"].lower():
        return arm_error(404, "NotFound", f"Workspace {m['guid']} was not found in region {m['loc']}.")
    src = sim.get(f"{ws['id']}/models/{m['name']}/versions/{m['version']}")
    if src is None:
        return arm_error(404, "NotFound", f"Model {m['name']}:{m['version']} was not found in workspace "
                         f"{ws['name']}.")
    name = props.get("destinationName") or m["name"]
    version = props.get("destinationVersion") or m["version"]
    dest = f"{reg['id']}/models/{name}/versions/{version}"
    if sim.get(dest) is not None:
        return arm_error(409, "Conflict", f"Model {name}:{version} already exists in registry {reg['name']}.")
    op = arm.start_operation(sim, dest, "import", kind="default", operation=operation, location=reg["location"],
                             namespace=NS, hook=HOOK)
    op["import"] = {"source": src["id"], "workspace": ws["id"], "registry": reg["id"]}
    return arm.lro_response(sim, op, 202, None, style="location")


def _import_done(sim: Any, op: dict[str, Any], _res: dict[str, Any] | None) -> None:
    if op["outcome"] != "Succeeded" or sim.get(op["path"]) is not None:
        return
    info = op["import"]
    src, reg = sim.get(info["source"]), sim.get(info["registry"])
    if src is None or reg is None:  # removed while the import ran: the service fails it the same way
        op["outcome"], op["error"] = "Failed", {"code": "NotFound", "message": "The source asset no longer exists."}
        return
    from orchestrator.azure.simulator.providers.ml import ASSET_DEFAULTS, storage_account_name

    account = storage_account_name(info["registry"])
    name, version = op["path"].rstrip("/").split("/")[-3], op["path"].rstrip("/").split("/")[-1]
    src_props = src.get("properties") or {}
    uri = _copy_files(sim, info["workspace"], str(src_props.get("modelUri") or ""), account,
                      f"models/{name}/{version}")
    props = {**ASSET_DEFAULTS["models"],
             **{k: copy.deepcopy(v) for k, v in src_props.items() if k not in ("provisioningState", "modelUri")},
             "modelUri": uri, "isArchived": False}
    container = op["path"].rsplit("/versions/", 1)[0]
    if sim.get(container) is None:
        sim.put_resource(container, {"properties": {"isArchived": False, "latestVersion": version}})
    else:
        sim.get(container)["properties"]["latestVersion"] = version
    sim.put_resource(op["path"], {"properties": props})


def _copy_files(sim: Any, ws_id: str, uri: str, account: str, prefix: str) -> str:
    """Copy the blobs under a workspace asset URI into the registry's storage; the new https URI
    keeps the asset's own folder (or file) name last, as deployments see it in AZUREML_MODEL_DIR."""
    from orchestrator.azure.simulator.providers import storage

    if m := DATASTORE_PATH.search(uri):
        ds = sim.get(f"{ws_id}/datastores/{m['ds']}")
        if ds is None:
            raise LookupError(f"datastore {m['ds']} of {ws_id} not found")
        src_account, src_container = ds["properties"]["accountName"], ds["properties"]["containerName"]
        path = m["path"]
    elif m := BLOB_URI.match(uri):
        src_account, src_container, path = m["account"], m["container"], m["path"]
    else:
        raise LookupError(f"cannot read asset URI {uri!r}")
    folder = uri.endswith("/")
    path = path.strip("/")
    leaf = path.rsplit("/", 1)[-1]
    dest = f"{prefix}/{leaf}"
    names = [n for n in storage.list_blob_names(sim, src_account, src_container, path + "/" if folder else path)
             if folder or n == path]
    for n in names:
        rel = n[len(path):].lstrip("/")
        if rel.endswith(".deployctl-complete"):
            continue
        storage.put_blob(sim, account, REGISTRY_CONTAINER, f"{dest}/{rel}" if rel else dest,
                         storage.get_blob(sim, src_account, src_container, n) or b"")
    return f"https://{account}.blob.core.windows.net/{REGISTRY_CONTAINER}/{dest}" + ("/" if folder else "")
