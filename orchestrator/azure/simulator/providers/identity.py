"""Microsoft.ManagedIdentity user-assigned identities: a create gives the identity its directory
ids (``principalId`` for role assignments, ``clientId`` for what an app pulls with, ``tenantId``)
as Azure does; reads and deletes are plain CRUD (no REST spec carried: routed as SPECLESS)."""

from __future__ import annotations

import re
from typing import Any

from orchestrator.azure.simulator.messages import Request, Response, arm_error, json_response

IDENTITY = re.compile(r"/providers/Microsoft\.ManagedIdentity/userAssignedIdentities/[^/]+$", re.IGNORECASE)
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


class ManagedIdentities:
    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def operation(self, req: Request) -> str:
        return "UserAssignedIdentities_" + {"PUT": "CreateOrUpdate"}.get(req.method, req.method.title())

    def handle(self, req: Request, operation: str | None) -> Response | None:
        if req.method != "PUT" or not IDENTITY.search(req.path):
            return None
        body = req.json()
        if not isinstance(body, dict) or not body.get("location"):
            return arm_error(400, "LocationRequired", "The location property is required for this definition.")
        old = self.sim.get(req.path)
        ids = (old or {}).get("properties") or {"principalId": self.sim.new_id(), "clientId": self.sim.new_id(),
                                                "tenantId": TENANT}
        new = self.sim.put_resource(req.path, {"location": body["location"], "tags": body.get("tags") or {},
                                               "properties": {k: ids[k] for k in ("principalId", "clientId", "tenantId")}},
                                    location=body["location"])
        new["properties"].pop("provisioningState", None)
        return json_response(200 if old else 201, new)
