"""Azure ML's regional data-plane host (``https://<region>.api.azureml.ms``) as the SDK uses it
for registries: registry discovery, then the management front end
(``/mferp/managementfrontend/<ARM path>``), which is the ARM API under another host: requests are
re-dispatched to :class:`~.resources.ResourceManager` (same routes, conformance and state), and
long-running operations started there are polled there too.  The registry import that
``models.share()`` sends lives here as well (:mod:`.ml_registry`)."""

from __future__ import annotations

import json
import re
from typing import Any

from orchestrator.azure.simulator.messages import Request, Response, json_response

HOST = re.compile(r"^([a-z0-9]+)\.api\.azureml\.ms$")
DISCOVERY = re.compile(r"^/registrymanagement/v1\.0/registries/([^/]+)/discovery$", re.IGNORECASE)
MFE = "/mferp/managementfrontend"
ARM = "https://management.azure.com"


class AzureMLRegional:
    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def _arm(self) -> Any:
        return next(p for p in self.sim.providers if hasattr(p, "ml"))

    def _as_arm(self, req: Request) -> Request:
        path = req.url.split(MFE, 1)[1]
        return Request(req.method, f"https://management.azure.com{path}", req.headers, req.body)

    def owns(self, req: Request) -> bool:
        return bool(HOST.match(req.host))

    def operation(self, req: Request) -> str:
        if DISCOVERY.match(req.path):
            return "Registry_Discovery"
        if req.path.startswith(MFE):
            return self._arm().operation(self._as_arm(req))
        return "AzureML_DataPlane"

    def handle(self, req: Request) -> Response | None:
        if m := DISCOVERY.match(req.path):
            name = m.group(1).lower()
            reg = next((r for r in self.sim.state["resources"].values()
                        if r.get("type", "").lower() == "microsoft.machinelearningservices/registries"
                        and r["name"].lower() == name), None)
            if reg is None:
                return json_response(404, {"error": {"code": "NotFound", "message": f"Registry {m.group(1)} not found."}})
            parts = reg["id"].split("/")
            return json_response(200, {"registryName": reg["name"], "tenantId": self.sim.new_id(),
                                       "primaryRegion": reg["location"], "regions": [reg["location"]],
                                       "subscriptionId": parts[2], "resourceGroup": parts[4],
                                       "primaryRegionResourceProviderUri": f"https://{reg['location']}.api.azureml.ms/"})
        if req.path.startswith(MFE):
            resp = self._arm().handle(self._as_arm(req))
            if resp is not None:  # long-running operations are polled on the same regional front end
                for h in ("Location", "Azure-AsyncOperation"):
                    if resp.headers.get(h, "").startswith(ARM):
                        resp.headers[h] = f"https://{req.host}{MFE}" + resp.headers[h][len(ARM):]
            if resp is not None and resp.body and "json" in resp.headers.get("Content-Type", ""):
                body = resp.json()
                for item in (body.get("value") or []) if isinstance(body, dict) and "value" in body else [body]:
                    if isinstance(item, dict) and isinstance(item.get("id"), str):
                        item["id"] = registry_asset_id(item["id"])
                resp = Response(resp.status, json.dumps(body).encode(), resp.headers)
            return resp
        return None


def registry_asset_id(arm_id: str) -> str:
    """Registry assets are named ``azureml://registries/<r>/models/<n>/versions/<v>`` on the data plane."""
    m = re.match(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.MachineLearningServices/"
                 r"registries/([^/]+)/(.+)$", arm_id, re.IGNORECASE)
    return f"azureml://registries/{m.group(1)}/{m.group(2)}" if m else arm_id
