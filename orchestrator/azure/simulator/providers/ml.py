"""Microsoft.MachineLearningServices: workspaces, datastores, assets, online and batch endpoints
and deployments, computes, jobs, registries, usages.

Behaviour that matters to deployctl, modelled on the service:
- endpoint and deployment writes are long-running (201 + Azure-AsyncOperation to
  ``mfeOperationsStatus``; deletes and PATCH 202 + Location to ``mfeOperationResults``), with
  Retry-After on every poll response, provisioningState moving Creating/Updating -> Succeeded
  over the latency model's durations;
- a write on an endpoint (or one of its deployments) while an operation on it is still running
  is refused with 409, as the service does;
- endpoint names are unique per region; names, instance types, instance counts and traffic are
  validated (400 BadArgument like ARM's);
- managed online deployments take ``ceil(1.2 x instances) x vCPUs`` cores of the family's
  per-subscription, per-region quota; over quota the operation fails with OutOfQuota;
- responses carry the server-side defaults the SDK reads (``flavors``, ``scaleSettings``...);
- each workspace has its container registry (``cr<...>.azurecr.io``, a simulated ACR); a
  deployment whose environment image lives in a simulated registry fails (DeploymentFailed) when
  that image is not there to pull.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from orchestrator.azure.simulator import arm
from orchestrator.azure.simulator.messages import Request, Response, arm_error, json_response
from orchestrator.azure.simulator.providers import ml_registry

NS = "Microsoft.MachineLearningServices"
WS = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.MachineLearningServices/"
                r"workspaces/(?P<ws>[^/]+)", re.IGNORECASE)
REG = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.MachineLearningServices/"
                 r"registries/(?P<reg>[^/]+)", re.IGNORECASE)
USAGES = re.compile(r"^/subscriptions/([^/]+)/providers/Microsoft\.MachineLearningServices/locations/([^/]+)/usages$",
                    re.IGNORECASE)
ENDPOINT_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$")
DEPLOYMENT_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,31}$")
ASSET_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,254}$")
ENDPOINT_TAIL = re.compile(r"^/(onlineEndpoints|batchEndpoints)/([^/]+)(?:/(.*))?$", re.IGNORECASE)
ASSET_TAIL = re.compile(r"^/(codes|models|environments|data|components)(?:/([^/]+)(?:/versions(?:/([^/]+)(?:/(.*))?)?)?)?$",
                        re.IGNORECASE)
BUSY_STATES = ("Creating", "Updating", "Deleting", "Scaling")
ASSET_DEFAULTS: dict[str, dict[str, Any]] = {
    "models": {"flavors": {}, "modelType": "custom_model", "isArchived": False, "isAnonymous": False, "properties": {},
               "tags": {}, "jobName": None, "stage": "Development"},
    "environments": {"environmentType": "UserCreated", "osType": "Linux", "autoRebuild": "Disabled",
                     "isArchived": False, "isAnonymous": False, "properties": {}, "tags": {}},
    "codes": {"isArchived": False, "isAnonymous": False, "properties": {}, "tags": {}},
    "data": {"isArchived": False, "isAnonymous": False, "properties": {}, "tags": {}},
    "components": {"isArchived": False, "isAnonymous": False, "properties": {}, "tags": {}},
}
DEPLOYMENT_DEFAULTS: dict[str, Any] = {
    "scaleSettings": {"scaleType": "Default"},
    "requestSettings": {"requestTimeout": "PT5S", "maxConcurrentRequestsPerInstance": 1, "maxQueueWait": "PT0.5S"},
    "livenessProbe": {"failureThreshold": 30, "successThreshold": 1, "timeout": "PT2S", "period": "PT10S",
                      "initialDelay": "PT10S"},
    "readinessProbe": {"failureThreshold": 30, "successThreshold": 1, "timeout": "PT2S", "period": "PT10S",
                       "initialDelay": "PT10S"},
    "appInsightsEnabled": False, "egressPublicNetworkAccess": "Enabled", "environmentVariables": {},
    "properties": {},
}


def bad(message: str, code: str = "BadArgument") -> Response:
    return arm_error(400, code, message)


def storage_account_name(ws_path: str) -> str:
    return "st" + hashlib.sha256(ws_path.lower().encode()).hexdigest()[:16]


class MachineLearning:
    def __init__(self, sim: Any) -> None:
        self.sim = sim
        sim.hooks["ml.deployment"] = self._deployment_done
        sim.hooks["ml.job"] = self._job_done
        ml_registry.install(sim)

    def operation(self, req: Request) -> str | None:
        if USAGES.match(req.path):
            return "Usages_List"
        if REG.match(req.path) and req.path.lower().endswith("/import") and req.method == "POST":
            return "RegistryAssetReference_Import"  # registry data plane (2021-10-01-dataplanepreview)
        if req.path.lower().endswith("/startpendingupload"):
            return "CodeVersions_CreateOrGetStartPendingUpload"
        m = WS.match(req.path)
        if m and req.path == m.group(0):
            return f"Workspaces_{ {'GET': 'Get', 'PUT': 'CreateOrUpdate', 'DELETE': 'Delete', 'PATCH': 'Update'}.get(req.method, req.method)}"
        return None

    # ---- seeding ------------------------------------------------------------------------------
    def add_workspace(self, sub: str, rg: str, name: str, location: str) -> dict[str, Any]:
        sim = self.sim
        group = sim.add_resource_group(sub, rg, location)
        location = location or group.get("location") or sim.default_location
        path = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{NS}/workspaces/{name}"
        if (ws := sim.get(path)) is not None:
            return ws
        account = storage_account_name(path)
        ws_id = sim.new_id()
        rgp = f"/subscriptions/{sub}/resourceGroups/{rg}/providers"
        ws = sim.put_resource(path, {
            "kind": "Default", "sku": {"name": "Basic", "tier": "Basic"}, "tags": {},
            "identity": {"type": "SystemAssigned", "principalId": sim.new_id(), "tenantId": sim.new_id()},
            "properties": {"friendlyName": name, "workspaceId": ws_id, "hbiWorkspace": False, "v1LegacyMode": False,
                           "storageAccount": f"{rgp}/Microsoft.Storage/storageAccounts/{account}",
                           "keyVault": f"{rgp}/Microsoft.KeyVault/vaults/kv{account[2:14]}",
                           "applicationInsights": f"{rgp}/Microsoft.insights/components/ai{account[2:14]}",
                           "containerRegistry": f"{rgp}/Microsoft.ContainerRegistry/registries/cr{account[2:14]}",
                           "discoveryUrl": f"https://{location}.api.azureml.ms/discovery",
                           "mlFlowTrackingUri": f"azureml://{location}.api.azureml.ms/mlflow/v1.0{path}",
                           "publicNetworkAccess": "Enabled", "storageHnsEnabled": False}}, location=location)
        # the workspace's own registry, as Azure ML creates it: images deployctl builds go there
        sim.put_resource(f"{rgp}/Microsoft.ContainerRegistry/registries/cr{account[2:14]}",
                         {"sku": {"name": "Basic", "tier": "Basic"},
                          "properties": {"loginServer": f"cr{account[2:14]}.azurecr.io", "adminUserEnabled": False,
                                         "provisioningState": "Succeeded"}}, location=location)
        sim.put_resource(f"{rgp}/Microsoft.Storage/storageAccounts/{account}",
                         {"kind": "StorageV2", "sku": {"name": "Standard_LRS"},
                          "properties": {"primaryEndpoints": {"blob": f"https://{account}.blob.core.windows.net/",
                                                              "queue": f"https://{account}.queue.core.windows.net/"}}},
                         location=location)
        container = f"azureml-blobstore-{ws_id}"
        sim.put_resource(f"{path}/datastores/workspaceblobstore", {"properties": {
            "datastoreType": "AzureBlob", "accountName": account, "containerName": container,
            "endpoint": "core.windows.net", "protocol": "https", "isDefault": True,
            "serviceDataAccessAuthIdentity": "None", "description": None, "tags": {}, "properties": {},
            "credentials": {"credentialsType": "AccountKey", "secrets": {"secretsType": "AccountKey"}}}})
        sim.state["blobs"].setdefault(account, {}).setdefault(container, {})
        sim.state.setdefault("storage_keys", {})[account] = sim.secret(64)
        return ws

    def add_kubernetes_compute(self, sub: str, rg: str, ws: str, name: str,
                               instance_types: dict[str, Any] | None = None,
                               cluster_id: str | None = None) -> dict[str, Any]:
        """A Kubernetes compute attached to ``ws``; its AKS cluster is ``cluster_id`` (default: a
        cluster named like the compute in ``rg``, seeded with the default node pool when absent)."""
        w = self.add_workspace(sub, rg, ws, self.sim.default_location)
        types = instance_types or {"defaultinstancetype": {"resources": {
            "requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}}}}
        if cluster_id is None:
            cluster_id = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{name}"
            if self.sim.get(cluster_id) is None:
                self.sim.add_aks_cluster(sub, rg, name, location=w["location"])
        return self.sim.put_resource(f"{w['id']}/computes/{name}", {"properties": {
            "computeType": "Kubernetes", "computeLocation": w["location"], "isAttachedCompute": True,
            "resourceId": cluster_id,
            "properties": {"namespace": "default", "defaultInstanceType": next(iter(types)), "instanceTypes": types}}},
            location=w["location"])

    def add_registry(self, sub: str, rg: str, name: str, location: str) -> dict[str, Any]:
        self.sim.add_resource_group(sub, rg, location)
        path = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{NS}/registries/{name}"
        return self.sim.get(path) or self.sim.put_resource(path, {"properties": {
            "discoveryUrl": f"https://{location}.api.azureml.ms/registrymanagement/v1.0/registries/{name}/discovery",
            "regionDetails": [{"location": location}], "mlFlowRegistryUri": f"azureml://{location}.api.azureml.ms/mlflow"}},
            location=location)

    def add_model(self, sub: str, rg: str, ws: str, name: str, version: str, files: dict[str, bytes],
                  properties: dict[str, Any], folder: str = "model") -> dict[str, Any]:
        from orchestrator.azure.simulator.providers import storage

        w = self.add_workspace(sub, rg, ws, self.sim.default_location)
        store = self.sim.get(f"{w['id']}/datastores/workspaceblobstore")["properties"]
        prefix = f"models/{name}/{version}/{folder}"  # deployments see AZUREML_MODEL_DIR/<folder>/...
        for rel, data in files.items():
            storage.put_blob(self.sim, store["accountName"], store["containerName"], f"{prefix}/{rel}", data)
        self.sim.put_resource(f"{w['id']}/models/{name}", {"properties": {"isArchived": False, "latestVersion": version}})
        props = {**ASSET_DEFAULTS["models"], "modelUri": f"azureml://datastores/workspaceblobstore/paths/{prefix}/",
                 **properties}
        return self.sim.put_resource(f"{w['id']}/models/{name}/versions/{version}", {"properties": props})

    # ---- ARM entry ------------------------------------------------------------------------------
    def handle(self, req: Request, operation: str | None) -> Response | None:
        if m := USAGES.match(req.path):
            return self.usages(m.group(1), m.group(2))
        if m := REG.match(req.path):
            return self.registry(req, m, operation)
        m = WS.match(req.path)
        if not m:
            return None
        ws_path = m.group(0)
        ws = self.sim.get(ws_path)
        if req.method == "PUT" and req.path == ws_path:
            body = req.json() or {}
            ws = self.add_workspace(m["sub"], m["rg"], m["ws"], body.get("location") or self.sim.default_location)
            return json_response(200, ws)
        if ws is None:
            if self.sim.strict:
                return arm_error(404, "ResourceNotFound", f"The Resource '{NS}/workspaces/{m['ws']}' under resource "
                                 f"group '{m['rg']}' was not found.")
            ws = self.add_workspace(m["sub"], m["rg"], m["ws"], self.sim.default_location)
        tail = req.path[len(ws_path):]
        if tail == "":
            return json_response(200, ws) if req.method == "GET" else None
        if tail.lower().startswith("/datastores"):
            return self.datastores(req, ws, tail)
        if tail.lower() in ("/onlineendpoints", "/batchendpoints") and req.method == "GET":
            return arm.list_response([e for e in map(self.public, arm.children(self.sim, req.path)) if e])
        if em := ENDPOINT_TAIL.match(tail):
            return self.endpoints(req, ws, em, operation)
        if am := ASSET_TAIL.match(tail):
            return self.assets(req, ws, am, operation)
        if tail.lower().startswith("/computes/"):
            return self.computes(req, ws, operation)
        if tail.lower() == "/computes":
            return arm.list_response(arm.children(self.sim, req.path))
        if tail.lower().startswith("/jobs"):
            return self.jobs(req, ws)
        return None

    # ---- datastores -------------------------------------------------------------------------------
    def datastores(self, req: Request, ws: dict[str, Any], tail: str) -> Response | None:
        parts = tail.strip("/").split("/")
        if len(parts) == 1 and req.method == "GET":
            items = arm.children(self.sim, req.path)
            if req.query.get("isdefault", "").lower() == "true":
                items = [d for d in items if d["properties"].get("isDefault")]
            return arm.list_response(items)
        res = self.sim.get("/".join(req.path.split("/")[: len(req.path.split("/")) - len(parts) + 2]))
        if len(parts) == 3 and parts[2].lower() == "listsecrets" and req.method == "POST":
            if res is None:
                return arm.not_found(req.path)
            account = res["properties"].get("accountName")
            return json_response(200, {"secretsType": "AccountKey",
                                       "key": self.sim.state.get("storage_keys", {}).get(account) or self.sim.secret(64)})
        if len(parts) == 2:
            if req.method == "GET":
                return json_response(200, res) if res else arm.not_found(req.path)
            if req.method == "PUT":
                body = req.json() or {}
                return json_response(200 if res else 201, self.sim.put_resource(req.path, body))
            if req.method == "DELETE":
                self.sim.remove_tree(req.path)
                return Response(200 if res else 204)
        return None

    # ---- assets (codes, models, environments) ---------------------------------------------------------
    def assets(self, req: Request, ws: dict[str, Any], m: re.Match[str], operation: str | None) -> Response | None:
        kind, name, version, action = m.group(1).lower(), m.group(2), m.group(3), m.group(4)
        sim, path = self.sim, req.path
        if action:
            if action.lower() == "startpendingupload" and req.method == "POST":
                return self.pending_upload(ws)
            return None
        if name and not ASSET_NAME.match(name):
            return bad(f"Invalid asset name '{name}'.", "UserError")
        if version is None and name is None:  # list containers
            return arm.list_response(self.active(arm.children(sim, path), req))
        if version is None and path.lower().endswith("/versions"):
            items = self.active(arm.children(sim, path), req)
            if "hash" in req.query:
                items = [i for i in items if req.query["hash"] in (i["properties"].get("properties") or {}).values()]
            items.sort(key=lambda r: r["systemData"]["createdAt"], reverse="desc" in req.query.get("$orderby", "desc"))
            if "$top" in req.query:
                items = items[: int(req.query["$top"])]
            return arm.list_response(items)
        res = sim.get(path)
        if req.method == "GET":
            return json_response(200, res) if res else arm.not_found(path)
        if req.method == "DELETE":
            sim.remove_tree(path)
            return Response(200 if res else 204)
        if req.method == "PUT":
            body = req.json() or {}
            props = {**ASSET_DEFAULTS.get(kind, {}), **(body.get("properties") or {})}
            if version is not None:
                container = path.rsplit("/versions/", 1)[0]
                if sim.get(container) is None:
                    sim.put_resource(container, {"properties": {"isArchived": False, "latestVersion": version}})
                else:
                    sim.get(container)["properties"]["latestVersion"] = version
            new = sim.put_resource(path, {**body, "properties": props})
            return json_response(200 if res else 201, new)
        return None

    @staticmethod
    def active(items: list[dict[str, Any]], req: Request) -> list[dict[str, Any]]:
        view = req.query.get("listviewtype", "ActiveOnly").lower()
        if view == "all":
            return items
        archived = view == "archivedonly"
        return [i for i in items if bool(i["properties"].get("isArchived")) == archived]

    def temp_data_reference(self, reg_path: str) -> Response:
        """Where a registry asset's files go (a SAS URI into the registry's own storage)."""
        account = storage_account_name(reg_path)
        container = f"registry-{self.sim.new_id()[:8]}"
        self.sim.state["blobs"].setdefault(account, {}).setdefault(container, {})
        blob = f"https://{account}.blob.core.windows.net/{container}"
        return json_response(200, {"blobReferenceForConsumption": {
            "blobUri": blob, "storageAccountArmId": f"{reg_path}/storage/{account}",
            "credential": {"credentialType": "SAS", "sasUri": blob + "?sv=2021-08-06&sig=simulated"}},
            "temporaryDataReferenceId": self.sim.new_id(), "temporaryDataReferenceType": "TemporaryBlobReference"})

    def pending_upload(self, ws: dict[str, Any]) -> Response:
        store = self.sim.get(f"{ws['id']}/datastores/workspaceblobstore")["properties"]
        blob = f"https://{store['accountName']}.blob.core.windows.net/{store['containerName']}/LocalUpload/{self.sim.new_id()}"
        return json_response(200, {"blobReferenceForConsumption": {
            "blobUri": blob, "storageAccountArmId": ws["properties"]["storageAccount"],
            "credential": {"credentialType": "SAS", "sasUri": blob + "?sv=2021-08-06&sig=simulated"}},
            "pendingUploadId": self.sim.new_id(), "pendingUploadType": "TemporaryBlobReference"})

    # ---- endpoints and deployments ----------------------------------------------------------------
    def endpoints(self, req: Request, ws: dict[str, Any], m: re.Match[str], operation: str | None) -> Response | None:
        collection, ep_name, rest = m.group(1), m.group(2), m.group(3) or ""
        batch = collection.lower() == "batchendpoints"
        ep_path = f"{ws['id']}/{collection}/{ep_name}"
        ep = self.sim.get(ep_path)
        if rest == "":
            return self.endpoint(req, ws, ep_path, ep, batch, operation or "Endpoints")
        if ep is None:
            return arm.not_found(ep_path)
        low = rest.lower()
        if low == "listkeys" and req.method == "POST":
            return json_response(200, ep.get("_keys") or {})
        if low == "regeneratekeys" and req.method == "POST":
            return self.regenerate(req, ep_path, ep, operation or "RegenerateKeys")
        if low == "token" and req.method == "POST":
            now = int(self.sim.clock.now())
            return json_response(200, {"accessToken": f"sim-token.{self.sim.new_id()}", "tokenType": "Bearer",
                                       "expiryTimeUtc": now + 3600, "refreshAfterTimeUtc": now + 1800})
        if low == "deployments" and req.method == "GET":
            return arm.list_response(arm.children(self.sim, req.path))
        dm = re.match(r"^deployments/([^/]+)(?:/(.*))?$", rest, re.IGNORECASE)
        if dm:
            return self.deployment(req, ws, ep_path, ep, dm.group(1), (dm.group(2) or "").lower(), batch,
                                   operation or "Deployments")
        return None

    def _same_name_elsewhere(self, name: str, location: str, path: str) -> bool:
        k = arm.key_of(path)
        for key, r in self.sim.state["resources"].items():
            if key != k and r.get("type", "").lower() in (f"{NS}/workspaces/onlineendpoints".lower(),
                                                          f"{NS}/workspaces/batchendpoints".lower()) \
                    and r["name"].lower() == name.lower() and r.get("location", "").lower() == location.lower():
                return True
        return False

    def _conflict(self, ep_path: str, ep: dict[str, Any], what: str) -> Response | None:
        op = arm.busy(self.sim, ep_path)
        if op is None:
            return None
        state = ep.get("properties", {}).get("provisioningState", "Updating")
        state = state if state in BUSY_STATES else "Updating"
        return arm_error(409, "Conflict", f"Cannot {what} in endpoint {ep['name']} because it is in {state} "
                         "provisioning state.")

    def endpoint(self, req: Request, ws: dict[str, Any], path: str, ep: dict[str, Any] | None, batch: bool,
                 operation: str) -> Response | None:
        sim = self.sim
        if req.method == "GET":
            return json_response(200, self.public(ep)) if ep else arm.not_found(path)
        if req.method == "DELETE":
            if ep is None:
                return Response(204)
            if c := self._conflict(path, ep, "delete the endpoint"):
                return c
            ep["properties"]["provisioningState"] = "Deleting"
            op = arm.start_operation(sim, path, "delete", kind="delete", operation=operation,
                                     location=ep["location"], namespace=NS)
            return arm.lro_response(sim, op, 202, None, style="location")
        if req.method not in ("PUT", "PATCH"):
            return None
        body = req.json()
        if not isinstance(body, dict):
            return bad("The request body is not valid JSON.", "InvalidRequestContent")
        name = path.rsplit("/", 1)[-1]
        if ep is not None and (c := self._conflict(path, ep, "update the endpoint")):
            return c
        if req.method == "PATCH":
            if ep is None:
                return arm.not_found(path)
            merged = sim.merge(ep, body)
        else:
            if not ENDPOINT_NAME.match(name):
                return bad(f"Endpoint name '{name}' is invalid: 3-32 characters, start with a letter, letters, digits "
                           "and '-' only, not ending with '-'.")
            location = body.get("location") or ws["location"]
            if ep is None and self._same_name_elsewhere(name, location, path):
                return bad(f"An endpoint with name '{name}' already exists in region {location}: endpoint names "
                           "must be unique per region.", "EndpointAlreadyExists")
            merged = {**body, "properties": dict(body.get("properties") or {})}
            if ep is not None:
                for hidden in ("_keys",):
                    merged[hidden] = ep[hidden]
        props = merged.setdefault("properties", {})
        modes = {"key": "Key", "amltoken": "AMLToken", "aadtoken": "AADToken"}
        if str(props.get("authMode", "Key")).lower() not in modes:
            return bad(f"Invalid authMode '{props.get('authMode')}'.")
        props["authMode"] = modes[str(props.get("authMode", "Key")).lower()]
        if not batch:
            problem = self._traffic_problem(path, props.get("traffic") or {})
            if problem:
                return bad(problem)
            props.setdefault("traffic", (ep or {}).get("properties", {}).get("traffic", {}))
            props.setdefault("mirrorTraffic", {})
            props.setdefault("publicNetworkAccess", "Enabled")
        if batch:
            props.setdefault("defaults", (ep or {}).get("properties", {}).get("defaults") or {"deploymentName": None})
        location = merged.get("location") or ws["location"]
        host = f"https://{name}.{location}.inference.ml.azure.com"
        props["scoringUri"] = f"{host}/jobs" if batch else f"{host}/score"
        if not batch:
            props["swaggerUri"] = f"{host}/swagger.json"
        created = ep is None
        props["provisioningState"] = "Creating" if created else "Updating"
        merged.setdefault("_keys", {"primaryKey": sim.secret(24), "secondaryKey": sim.secret(24)})
        merged.setdefault("identity", {"type": "SystemAssigned", "principalId": sim.new_id(), "tenantId": sim.new_id()})
        merged.setdefault("kind", "Managed" if not props.get("compute") else "K8S")
        new = sim.put_resource(path, merged, location=location)
        op = arm.start_operation(sim, path, "create" if created else "update",
                                 kind="endpoint" if created else "default", operation=operation,
                                 location=location, namespace=NS)
        if req.method == "PATCH":
            return arm.lro_response(sim, op, 202, None, style="location")
        return arm.lro_response(sim, op, 201 if created else 200, self.public(new))

    def _traffic_problem(self, ep_path: str, traffic: dict[str, Any]) -> str | None:
        if not traffic:
            return None
        total = sum(int(v) for v in traffic.values())
        if total not in (0, 100):
            return f"Traffic values must add up to 100 (or 0); they add up to {total}."
        for dep, pct in traffic.items():
            d = self.sim.get(f"{ep_path}/deployments/{dep}")
            if d is None and int(pct) > 0:
                return f"Deployment '{dep}' in traffic does not exist in the endpoint."
            if d is not None and int(pct) > 0 and d["properties"].get("provisioningState") != "Succeeded":
                return f"Deployment '{dep}' is not in Succeeded state; traffic cannot be routed to it."
        return None

    @staticmethod
    def public(res: dict[str, Any] | None) -> dict[str, Any] | None:
        if res is None:
            return None
        return {k: v for k, v in res.items() if not k.startswith("_")}

    def regenerate(self, req: Request, path: str, ep: dict[str, Any], operation: str) -> Response:
        body = req.json() or {}
        which = (body.get("keyType") or "Primary").lower()
        if which not in ("primary", "secondary"):
            return bad(f"Invalid keyType '{body.get('keyType')}'.")
        current = ep["_keys"].get(f"{which}Key")
        # azure-ai-ml sends the current key as keyValue and expects a new one: only another value is adopted
        wanted = body.get("keyValue")
        ep["_keys"][f"{which}Key"] = wanted if wanted and wanted != current else self.sim.secret(24)
        op = arm.start_operation(self.sim, path, "noop", kind="default", operation=operation, seconds=5,
                                 location=ep["location"], namespace=NS)
        return arm.lro_response(self.sim, op, 202, None, style="location")

    def deployment(self, req: Request, ws: dict[str, Any], ep_path: str, ep: dict[str, Any], name: str, action: str,
                   batch: bool, operation: str) -> Response | None:
        sim = self.sim
        path = f"{ep_path}/deployments/{name}"
        dep = sim.get(path)
        if action == "getlogs" and req.method == "POST":
            if dep is None:
                return arm.not_found(path)
            tail = int((req.json() or {}).get("tail") or 0)
            lines = sim.state["logs"].get(arm.key_of(path), [])
            return json_response(200, {"content": "\n".join(lines[-tail:] if tail else lines)})
        if action == "skus" and req.method == "GET":
            return arm.list_response([])
        if action:
            return None
        if req.method == "GET":
            return json_response(200, dep) if dep else arm.not_found(path)
        if req.method == "DELETE":
            if dep is None:
                return Response(204)
            if c := self._conflict(ep_path, ep, "delete a deployment"):
                return c
            if not batch and int((ep["properties"].get("traffic") or {}).get(name, 0)) > 0:
                return bad(f"Deployment '{name}' has {ep['properties']['traffic'][name]}% traffic; set it to 0 first.")
            dep["properties"]["provisioningState"] = "Deleting"
            op = arm.start_operation(sim, path, "delete", kind="delete", operation=operation,
                                     location=ep["location"], namespace=NS)
            return arm.lro_response(sim, op, 202, None, style="location")
        if req.method not in ("PUT", "PATCH"):
            return None
        if c := self._conflict(ep_path, ep, "create a deployment" if dep is None else "update a deployment"):
            return c
        body = req.json()
        if not isinstance(body, dict):
            return bad("The request body is not valid JSON.", "InvalidRequestContent")
        if req.method == "PATCH":
            if dep is None:
                return arm.not_found(path)
            merged = sim.merge(dep, body)
        else:
            if not DEPLOYMENT_NAME.match(name):
                return bad(f"Deployment name '{name}' is invalid: 1-32 characters, letters, digits and '-'.")
            merged = {**body, "properties": {**DEPLOYMENT_DEFAULTS, **(body.get("properties") or {})}}
            if batch:
                for k in ("scaleSettings", "requestSettings", "livenessProbe", "readinessProbe", "appInsightsEnabled",
                          "egressPublicNetworkAccess"):
                    merged["properties"].pop(k, None)
        problem, error = self._check_deployment(ws, ep, path, merged, batch)
        if problem:
            return bad(problem)
        created = dep is None
        merged["properties"]["provisioningState"] = "Creating" if created else "Updating"
        defaults = ep["properties"].get("defaults") if batch else None
        if defaults is not None and not defaults.get("deploymentName"):
            defaults["deploymentName"] = name  # a batch endpoint's first deployment becomes its default
        new = sim.put_resource(path, merged, location=ep["location"])
        sim.state["logs"][arm.key_of(path)] = [
            f"{sim.iso()} Deployment {name}: {'creating' if created else 'updating'} "
            f"({merged['properties'].get('instanceType') or 'default'} x {(merged.get('sku') or {}).get('capacity', 1)})"]
        op = arm.start_operation(sim, path, "create" if created else "update", kind="deployment", operation=operation,
                                 location=ep["location"], namespace=NS, error=error, hook="ml.deployment")
        if req.method == "PATCH":
            return arm.lro_response(sim, op, 202, None, style="location")
        return arm.lro_response(sim, op, 201 if created else 200, new)

    def _check_deployment(self, ws: dict[str, Any], ep: dict[str, Any], path: str, dep: dict[str, Any],
                          batch: bool) -> tuple[str | None, dict[str, str] | None]:
        """(400 message, or the error the operation will end with, e.g. OutOfQuota)."""
        from orchestrator.azure.quota import cores_required
        from targets.azureml.catalog import load_catalog

        props = dep["properties"]
        from orchestrator.azure.simulator.providers.scoring import model_ref

        for ref_key in ("model", "environmentId"):
            ref = model_ref(props.get(ref_key), self.sim)
            if isinstance(ref, str) and ref.lower().startswith("/subscriptions/") and self.sim.get(ref) is None:
                return f"{ref_key} '{ref}' was not found.", None
        code_id = (props.get("codeConfiguration") or {}).get("codeId")
        if isinstance(code_id, str) and code_id.lower().startswith("/subscriptions/") and self.sim.get(code_id) is None:
            return f"Code '{code_id}' was not found.", None
        env = self.sim.get(str(model_ref(props.get("environmentId"), self.sim) or ""))
        image = str(((env or {}).get("properties") or {}).get("image") or "")
        if image:  # an image of a simulated registry must be there to be pulled (others are assumed pullable)
            from orchestrator.azure.simulator.providers.aci import image_problem

            why = image_problem(self.sim, image)
            if why:
                return None, {"code": "DeploymentFailed", "message": f"The environment's image cannot be pulled: {why}."}
        if batch:
            return None, None
        capacity = int((dep.get("sku") or {}).get("capacity", 1))
        if capacity < 1:
            return f"Instance count must be at least 1 (got {capacity}).", None
        catalog = load_catalog()
        itype = props.get("instanceType")
        compute_type = props.get("endpointComputeType", "Managed")
        if compute_type == "Kubernetes":
            compute = (ep["properties"].get("compute") or "").rstrip("/").rsplit("/", 1)[-1]
            c = self.sim.get(f"{ws['id']}/computes/{compute}") if compute else None
            if c is None:
                return f"Compute '{compute}' is not attached to the workspace.", None
            types = (c["properties"].get("properties") or {}).get("instanceTypes") or {}
            itype = itype or (c["properties"].get("properties") or {}).get("defaultInstanceType")
            if types and itype not in types:
                return f"Instance type '{itype}' is not defined on compute '{compute}' (has: {', '.join(types)}).", None
            return None, None
        sku = catalog.get(itype or "")
        if sku is None or not sku.managed_online:
            return (f"Instance type '{itype}' is not supported for managed online deployments. "
                    "See https://learn.microsoft.com/azure/machine-learning/reference-managed-online-endpoints-vm-sku-list"), None
        need = cores_required(capacity, sku.vcpus, reserve_fraction=catalog.reserve_fraction)
        sub = arm.subscription_of(path) or ""
        used = self.used_cores(sub, ep["location"], sku.family, exclude=path)
        limit = self.sim.quota_limit(sub, ep["location"], sku.family)
        if used + need > limit:
            return None, {"code": "OutOfQuota", "message":
                          f"Not enough quota available for {itype} in SubscriptionId {sub}. Current usage/limit: "
                          f"{used}/{limit}. Additional needed: {need}. Please see troubleshooting guide, available "
                          "here: https://aka.ms/oe-tsg#error-outofquota"}
        return None, None

    def used_cores(self, sub: str, location: str, family: str, *, exclude: str | None = None) -> int:
        from orchestrator.azure.quota import cores_required
        from targets.azureml.catalog import load_catalog

        catalog = load_catalog()
        total = 0
        prefix = f"/subscriptions/{sub}/".lower()
        for k, r in self.sim.state["resources"].items():
            if not (k.startswith(prefix) and r.get("type", "").lower() == f"{NS}/workspaces/onlineendpoints/deployments".lower()):
                continue
            if exclude and k == arm.key_of(exclude):
                continue
            p = r["properties"]
            if p.get("provisioningState") in ("Failed", "Canceled") or r.get("location", "").lower() != location.lower():
                continue
            sku = catalog.get(p.get("instanceType") or "")
            if sku is None or sku.family != family or p.get("endpointComputeType", "Managed") != "Managed":
                continue
            total += cores_required(int((r.get("sku") or {}).get("capacity", 1)), sku.vcpus,
                                    reserve_fraction=catalog.reserve_fraction)
        return total

    def usages(self, sub: str, location: str) -> Response:
        from targets.azureml.catalog import load_catalog

        families = sorted({s.family for s in load_catalog().skus if s.family})
        rows = []
        total = 0
        for fam in families:
            used = self.used_cores(sub, location, fam)
            total += used
            rows.append({"id": f"/subscriptions/{sub}/providers/{NS}/locations/{location}/usages/{fam}",
                         "amlWorkspaceLocation": location, "type": f"{NS}/usages", "unit": "Count",
                         "currentValue": used, "limit": self.sim.quota_limit(sub, location, fam),
                         "name": {"value": fam, "localizedValue": f"Standard {fam} Cores"}})
        rows.append({"id": f"/subscriptions/{sub}/providers/{NS}/locations/{location}/usages/TotalCores",
                     "amlWorkspaceLocation": location, "type": f"{NS}/usages", "unit": "Count",
                     "currentValue": total, "limit": self.sim.quota_limit(sub, location, "Total Cluster Dedicated Regional vCPUs"),
                     "name": {"value": "Total Cluster Dedicated Regional vCPUs",
                              "localizedValue": "Total Cluster Dedicated Regional vCPUs"}})
        return arm.list_response(rows)

    def _deployment_done(self, sim: Any, op: dict[str, Any], res: dict[str, Any] | None) -> None:
        lines = sim.state["logs"].setdefault(op["resource"], [])
        when = sim.iso(op["end"])
        if op["outcome"] == "Succeeded" and op["action"] != "delete":
            lines += [f"{when} Booting worker with pid: 1", f"{when} Users's init has completed successfully",
                      f"{when} Scoring timeout is set to 5000 ms", f"{when} Listening at: http://0.0.0.0:31311"]
        elif op["error"]:
            lines.append(f"{when} {op['error']['code']}: {op['error']['message']}")

    # ---- computes, jobs, registries -------------------------------------------------------------------
    def computes(self, req: Request, ws: dict[str, Any], operation: str | None) -> Response | None:
        from targets.azureml.catalog import load_catalog

        sim, path = self.sim, req.path
        parts = req.path.rsplit("/computes/", 1)[1].split("/")
        if len(parts) > 1:
            return None  # actions (start/stop/listNodes...) are not simulated
        res = sim.get(path)
        if req.method == "GET":
            return json_response(200, res) if res else arm.not_found(path)
        if req.method == "DELETE":
            if res is None:
                return Response(204)
            op = arm.start_operation(sim, path, "delete", kind="delete", operation=operation or "Compute_Delete",
                                     location=res.get("location") or ws["location"], namespace=NS)
            return arm.lro_response(sim, op, 202, None, style="location")
        if req.method != "PUT":
            return None
        body = req.json() or {}
        props = body.get("properties") or {}
        if props.get("computeType") == "AmlCompute":
            vm = ((props.get("properties") or {}).get("vmSize") or "")
            sku = load_catalog().get(vm)
            if vm and (sku is None or not sku.amlcompute):
                return bad(f"VM size '{vm}' is not supported for AmlCompute.")
        props.setdefault("computeLocation", body.get("location") or ws["location"])
        props["provisioningState"] = "Creating"
        new = sim.put_resource(path, {**body, "properties": props}, location=body.get("location") or ws["location"])
        op = arm.start_operation(sim, path, "create", kind="compute", operation=operation or "Compute_CreateOrUpdate",
                                 location=new["location"], namespace=NS)
        return arm.lro_response(sim, op, 201 if res is None else 200, new)

    def jobs(self, req: Request, ws: dict[str, Any]) -> Response | None:
        if req.method == "GET":
            if req.path.lower().endswith("/jobs"):
                return arm.list_response(arm.children(self.sim, req.path))
            res = self.sim.get(req.path)
            return json_response(200, res) if res else arm.not_found(req.path)
        return None

    def _job_done(self, sim: Any, op: dict[str, Any], res: dict[str, Any] | None) -> None:
        from orchestrator.azure.simulator.providers.scoring import run_batch_job

        if res is not None:
            run_batch_job(sim, res)

    def registry(self, req: Request, m: re.Match[str], operation: str | None) -> Response | None:
        sim = self.sim
        reg_path = m.group(0)
        if sim.get(reg_path) is None and req.path != reg_path:
            if sim.strict:
                return arm.not_found(reg_path)
            self.add_registry(m["sub"], m["rg"], m["reg"], sim.default_location)
        if req.path == reg_path and req.method == "PUT":
            body = req.json() or {}
            return json_response(200, self.add_registry(m["sub"], m["rg"], m["reg"], body.get("location")
                                                        or sim.default_location))
        tail = req.path[len(reg_path):]
        if tail.lower() == "/import" and req.method == "POST":
            return ml_registry.import_asset(sim, req, sim.get(reg_path), operation or "RegistryAssetReference_Import")
        if re.match(r"^/tempdatarefs/[^/]+/versions/[^/]+$", tail, re.IGNORECASE) and req.method == "PUT":
            return self.temp_data_reference(reg_path)
        if am := ASSET_TAIL.match(tail):
            return self.assets(req, {"id": reg_path}, am, operation)
        return None


def ceil_div(a: int, b: int) -> int:
    return math.ceil(a / b)
