"""ARM (``management.azure.com``): resource groups, operation status, per-namespace providers
and spec-driven CRUD for everything else the REST specs define.

Routing is by the REST specs' path templates (:mod:`..routes`, generated from
``../shared/azure-rest-api-specs``): a request that matches no operation of a namespace the
simulator knows is refused loudly, never answered with a silent 200.
"""

from __future__ import annotations

import re
from typing import Any

from orchestrator.azure.simulator import arm, routes
from orchestrator.azure.simulator.messages import Request, Response, arm_error, json_response
from orchestrator.azure.simulator.providers import authorization

RG = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)$", re.IGNORECASE)
RG_LIST = re.compile(r"^/subscriptions/([^/]+)/resourceGroups$", re.IGNORECASE)
SUB = re.compile(r"^/subscriptions/([^/]+)$", re.IGNORECASE)
SPECLESS = ("microsoft.storage", "microsoft.containerregistry", "microsoft.managedidentity")
NAMESPACE = re.compile(r"/providers/([^/]+)", re.IGNORECASE)


class ResourceManager:
    def __init__(self, sim: Any) -> None:
        from orchestrator.azure.simulator.providers.aci import ContainerInstances
        from orchestrator.azure.simulator.providers.acr import AcrManagement
        from orchestrator.azure.simulator.providers.containerservice import ContainerService
        from orchestrator.azure.simulator.providers.identity import ManagedIdentities
        from orchestrator.azure.simulator.providers.ml import MachineLearning
        from orchestrator.azure.simulator.providers.storage import StorageAccounts
        from orchestrator.azure.simulator.providers.web import WebApps

        self.sim = sim
        self.ml = MachineLearning(sim)
        self.namespaces: dict[str, Any] = {
            "microsoft.machinelearningservices": self.ml,
            "microsoft.web": WebApps(sim),
            "microsoft.storage": StorageAccounts(sim),
            "microsoft.containerregistry": AcrManagement(sim),
            "microsoft.containerservice": ContainerService(sim),
            "microsoft.containerinstance": ContainerInstances(sim),
            "microsoft.managedidentity": ManagedIdentities(sim),
        }

    def owns(self, req: Request) -> bool:
        return req.host == arm.ARM_HOST

    def operation(self, req: Request) -> str:
        if authorization.owns(req):  # role assignments live under any scope: before the scope's namespace
            return authorization.operation(req)
        m = routes.match(req.method, req.path)
        if m:
            return m[0].operation
        if arm.OP_STATUS.match(req.path):
            return "OperationStatus_Get"
        if RG.match(req.path):
            return f"ResourceGroups_{ {'PUT': 'CreateOrUpdate', 'GET': 'Get', 'DELETE': 'Delete', 'HEAD': 'CheckExistence', 'PATCH': 'Update'}.get(req.method, req.method)}"
        ns = NAMESPACE.search(req.path)
        handler = self.namespaces.get(ns.group(1).lower()) if ns else None
        if handler is not None and hasattr(handler, "operation"):
            return handler.operation(req) or "Unknown"
        return "Unknown"

    def handle(self, req: Request) -> Response | None:
        sim = self.sim
        if "api-version" not in req.query:
            return arm_error(400, "MissingApiVersionParameter",
                             "The api-version query parameter (?api-version=) is required for all requests.")
        if arm.OP_STATUS.match(req.path):
            return arm.operation_status(sim, req)
        if authorization.owns(req):
            return authorization.handle(sim, req)
        if m := SUB.match(req.path):
            return json_response(200, {"id": req.path, "subscriptionId": m.group(1), "displayName": m.group(1),
                                       "state": "Enabled"})
        if RG_LIST.match(req.path):
            return arm.list_response(arm.children(sim, req.path))
        if m := RG.match(req.path):
            return self.resource_group(req, m.group(1), m.group(2))
        ns_m = NAMESPACE.search(req.path)
        if not ns_m:
            return None
        namespace = ns_m.group(1)
        rg = arm.resource_group_of(req.path)
        if rg and not self.ensure_group(arm.subscription_of(req.path) or "", rg):
            return arm_error(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
        route = routes.match(req.method, req.path)
        operation = route[0].operation if route else None
        bad = sim.check_request(req, operation)
        if bad is not None:
            return bad
        if (pre := self.precondition(req)) is not None:
            return pre
        handler = self.namespaces.get(namespace.lower())
        if handler is not None:
            resp = handler.handle(req, operation)
            if resp is not None:
                if sim.strict and resp.body and resp.status < 400:
                    sim.conformance.check_response(req, resp.status, resp.json())
                return resp
        if route is None:
            if namespace.lower() in SPECLESS:  # no REST spec carried for these: plain CRUD
                return arm.generic(sim, req, f"{namespace}_{req.method.title()}", False, namespace)
            return None
        return arm.generic(sim, req, route[0].operation, route[0].long_running, namespace)

    def precondition(self, req: Request) -> Response | None:
        """ETags: If-Match / If-None-Match on writes answer 412 like ARM when they do not hold."""
        if req.method not in ("PUT", "PATCH", "DELETE"):
            return None
        res = self.sim.get(req.path)
        match, none_match = req.header("if-match"), req.header("if-none-match")
        if match and match != "*" and (res is None or res.get("etag") != match):
            return arm_error(412, "PreconditionFailed", f"The ETag {match} does not match the resource's current ETag.")
        if match == "*" and res is None:
            return arm_error(412, "PreconditionFailed", "If-Match: * but the resource does not exist.")
        if none_match == "*" and res is not None:
            return arm_error(412, "PreconditionFailed", "If-None-Match: * but the resource already exists.")
        return None

    def ensure_group(self, sub: str, rg: str) -> bool:
        path = f"/subscriptions/{sub}/resourceGroups/{rg}"
        if self.sim.get(path) is not None:
            return True
        if self.sim.strict:
            return False
        self.sim.add_resource_group(sub, rg)
        return True

    def resource_group(self, req: Request, sub: str, name: str) -> Response:
        path = f"/subscriptions/{sub}/resourceGroups/{name}"
        res = self.sim.get(path)
        if req.method == "GET":
            if res is None and not self.sim.strict:
                res = self.sim.add_resource_group(sub, name)
            return json_response(200, res) if res else arm_error(
                404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")
        if req.method == "HEAD":
            return Response(204 if res else 404)
        if req.method == "PUT":
            body = req.json() or {}
            if not body.get("location"):
                return arm_error(400, "LocationRequired", "The location property is required for this definition.")
            created = res is None
            new = self.sim.put_resource(path, {"properties": {}, "tags": body.get("tags") or {}},
                                        location=body["location"])
            self.sim.add_subscription(sub)
            return json_response(201 if created else 200, new)
        if req.method == "DELETE":
            if res is None:
                return Response(204)
            self.sim.remove_tree(path)
            return Response(200)
        return arm_error(405, "MethodNotAllowed", f"{req.method} is not allowed on resource groups.")
