"""Microsoft.ContainerService ``managedClusters``: the AKS cluster behind a Kubernetes compute,
as far as deployctl reads it (its node pools, for the ``aks`` capacity preflight).

Minimal on purpose: no ContainerService spec is carried in ``../shared/azure-rest-api-specs``, so
there are no generated routes; the shape follows the 2024-02-01 example ``ManagedClustersGet.json``
of Azure/azure-rest-api-specs (``properties.kubernetesVersion`` / ``currentKubernetesVersion``,
``agentPoolProfiles[]`` with ``name``, ``count``, ``vmSize``, ``maxPods``, ``osType``, ``mode``,
``enableAutoScaling``, ``minCount``/``maxCount``).  Served: GET of a cluster (404
``ResourceNotFound`` when absent; 403 through :meth:`AzureSimulator.deny` like any ARM scope) and
GET of a resource group's clusters.  Clusters are seeded with :meth:`AzureSimulator.add_aks_cluster`
(a Kubernetes compute seeded with ``add_kubernetes_compute`` gets one by default); writes are not
simulated (answered loudly), nor is pod scheduling: a deployment that does not fit still succeeds.
"""

from __future__ import annotations

import re
from typing import Any

from orchestrator.azure.simulator import arm
from orchestrator.azure.simulator.messages import Request, Response, json_response

NS = "Microsoft.ContainerService"
CLUSTER = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.ContainerService/"
                     r"managedClusters(?:/([^/]+))?$", re.IGNORECASE)
DEFAULT_POOLS = ({"name": "nodepool1", "count": 3, "vmSize": "Standard_D4s_v3", "mode": "System"},)


class ContainerService:
    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def operation(self, req: Request) -> str | None:
        m = CLUSTER.match(req.path)
        if not m or req.method != "GET":
            return None
        return "ManagedClusters_Get" if m.group(1) else "ManagedClusters_ListByResourceGroup"

    def handle(self, req: Request, operation: str | None) -> Response | None:
        m = CLUSTER.match(req.path)
        if not m or req.method != "GET":
            return None
        if m.group(1) is None:
            return arm.list_response(arm.children(self.sim, req.path))
        res = self.sim.get(req.path)
        return json_response(200, res) if res is not None else arm.not_found(req.path)

    def add_cluster(self, sub: str, rg: str, name: str, *, pools: list[dict[str, Any]] | None = None,
                    kubernetes_version: str = "1.29.2", location: str | None = None) -> dict[str, Any]:
        group = self.sim.add_resource_group(sub, rg, location or self.sim.default_location)
        location = location or group.get("location") or self.sim.default_location
        profiles = []
        for p in pools or [dict(x) for x in DEFAULT_POOLS]:
            profile = {"count": 1, "maxPods": 30, "osType": "Linux", "mode": "User", "type": "VirtualMachineScaleSets",
                       "provisioningState": "Succeeded", "orchestratorVersion": kubernetes_version,
                       "currentOrchestratorVersion": kubernetes_version, "enableAutoScaling": False, **p}
            profiles.append(profile)
        return self.sim.put_resource(f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{NS}/managedClusters/{name}", {
            "tags": {}, "properties": {
                "kubernetesVersion": kubernetes_version, "currentKubernetesVersion": kubernetes_version,
                "dnsPrefix": name, "fqdn": f"{name}-{self.sim.new_id()[:8]}.hcp.{location}.azmk8s.io",
                "agentPoolProfiles": profiles, "nodeResourceGroup": f"MC_{rg}_{name}_{location}",
                "enableRBAC": True, "networkProfile": {"networkPlugin": "azure"}}}, location=location)
