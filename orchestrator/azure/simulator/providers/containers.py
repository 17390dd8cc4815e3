"""Microsoft.ContainerRegistry registries and build runs (``scheduleRun`` -> a run that
succeeds after its simulated duration).  Container Instances need no special behaviour: they are
spec-driven CRUD with 201 + Azure-AsyncOperation (see :func:`..arm.generic`)."""

from __future__ import annotations

import re
from typing import Any

from orchestrator.azure.simulator import arm
from orchestrator.azure.simulator.messages import Request, Response, json_response

REGISTRY = re.compile(r"/providers/Microsoft\.ContainerRegistry/registries/([^/]+)", re.IGNORECASE)


class ContainerRegistry:
    def __init__(self, sim: Any) -> None:
        self.sim = sim
        sim.hooks["acr.run"] = _run_done

    def operation(self, req: Request) -> str | None:
        return "Registries_ScheduleRun" if req.path.lower().endswith("/schedulerun") else None

    def handle(self, req: Request, operation: str | None) -> Response | None:
        m = REGISTRY.search(req.path)
        if not m:
            return None
        reg_path = req.path[: m.end()]
        tail = req.path[m.end():].lower()
        reg = self.sim.get(reg_path)
        if reg is None and tail == "" and req.method == "GET" and not self.sim.strict:
            # --simulate: a registry a manifest names appears on first reference, as workspaces do
            new = self.sim.put_resource(reg_path, {"sku": {"name": "Standard", "tier": "Standard"}, "properties": {
                "loginServer": f"{m.group(1).lower()}.azurecr.io", "adminUserEnabled": False,
                "provisioningState": "Succeeded"}}, location=self.sim.default_location)
            return json_response(200, new)
        if tail == "" and req.method == "PUT":
            body = req.json() or {}
            props = {**(body.get("properties") or {}), "loginServer": f"{m.group(1).lower()}.azurecr.io"}
            new = self.sim.put_resource(reg_path, {**body, "properties": props}, location=body.get("location"))
            return json_response(200, new)
        if tail == "/schedulerun" and req.method == "POST":
            if reg is None:
                return arm.not_found(reg_path)
            run_id = f"cb{self.sim.state['counter'] + 1:x}"
            run_path = f"{reg_path}/runs/{run_id}"
            self.sim.put_resource(run_path, {"properties": {"runId": run_id, "status": "Running", "runType": "QuickRun",
                                                            "request": req.json() or {}}})
            op = arm.start_operation(self.sim, run_path, "create", kind="default", operation="Registries_ScheduleRun",
                                     location=reg.get("location") or self.sim.default_location,
                                     namespace="Microsoft.ContainerRegistry", hook="acr.run")
            return arm.lro_response(self.sim, op, 200, self.sim.get(run_path))
        return None


def _run_done(sim: Any, op: dict[str, Any], res: dict[str, Any] | None) -> None:
    if res is not None:
        res["properties"]["status"] = "Succeeded" if op["outcome"] == "Succeeded" else "Failed"
