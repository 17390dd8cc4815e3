"""Microsoft.Authorization role assignments at any scope (a subscription, a resource group, a
resource such as a registry): ``PUT``, ``GET``, ``DELETE`` of
``{scope}/providers/Microsoft.Authorization/roleAssignments/{name}`` and the list at a scope,
shaped as the 2022-04-01 spec (Azure/azure-rest-api-specs,
``specification/authorization/.../stable/2022-04-01/authorization-RoleAssignmentsCalls.json``:
``RoleAssignmentCreateParameters`` requires ``properties.roleDefinitionId`` and
``properties.principalId``; ``principalType`` is one of User, Group, ServicePrincipal,
ForeignGroup, Device; a create answers 201, a delete 200 with the assignment or 204).

Azure's behaviour that callers must handle: the name must be a GUID; the principal must exist
(a user-assigned identity's or a site's system-assigned ``principalId``) — and a new one is not
visible at once: ``settings(sim)["replication_puts"]`` (default 0) PUTs naming a principal answer
400 ``PrincipalNotFound`` before it has "replicated"; the same (scope, principal, role) under
another name answers 409 ``RoleAssignmentExists``; changing an assignment's role or principal
answers 400 ``RoleAssignmentUpdateNotPermitted``.  Assignments are stored under their scope, so
deleting the scope's resource deletes them, as in Azure.  :func:`has_role` is what the simulated
services check (an App Service image pull needs AcrPull on the registry or above).
"""

from __future__ import annotations

import re
from typing import Any

from orchestrator.azure import roles
from orchestrator.azure.simulator import arm
from orchestrator.azure.simulator.messages import Request, Response, arm_error, json_response

ASSIGNMENT = re.compile(r"^(.*)/providers/Microsoft\.Authorization/roleAssignments/([^/]+)$", re.IGNORECASE)
LIST = re.compile(r"^(.*)/providers/Microsoft\.Authorization/roleAssignments$", re.IGNORECASE)
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
PRINCIPAL_TYPES = ("User", "Group", "ServicePrincipal", "ForeignGroup", "Device")
TYPE = "Microsoft.Authorization/roleAssignments"
# roles that include the pull action (Microsoft.ContainerRegistry/registries/pull/read)
PULL_ROLES = tuple(roles.PULL_ROLES)


def settings(sim: Any) -> dict[str, Any]:
    """Knobs: ``replication_puts`` (PUTs per new principal answered PrincipalNotFound)."""
    return sim.state.setdefault("authorization", {"replication_puts": 0, "seen": {}})


def owns(req: Request) -> bool:
    return bool(ASSIGNMENT.match(req.path) or LIST.match(req.path))


def operation(req: Request) -> str:
    if LIST.match(req.path):
        return "RoleAssignments_ListForScope"
    return {"PUT": "RoleAssignments_Create", "GET": "RoleAssignments_Get",
            "DELETE": "RoleAssignments_Delete"}.get(req.method, "RoleAssignments_" + req.method.title())


def assignments(sim: Any) -> list[dict[str, Any]]:
    return [r for r in sim.state["resources"].values() if str(r.get("type", "")).lower() == TYPE.lower()]


def principals(sim: Any) -> set[str]:
    """Every principal id the directory knows: managed identities, user-assigned and system-assigned."""
    out = set()
    for r in sim.state["resources"].values():
        pid = (r.get("properties") or {}).get("principalId") if str(r.get("type", "")).lower() == \
            "microsoft.managedidentity/userassignedidentities" else (r.get("identity") or {}).get("principalId")
        if pid:
            out.add(str(pid).lower())
    return out


def has_role(sim: Any, principal_id: str, scope: str, roles: tuple[str, ...] = PULL_ROLES) -> bool:
    """Does ``principal_id`` hold one of ``roles`` on ``scope`` or on a scope above it?"""
    target = arm.key_of(scope)
    for a in assignments(sim):
        p = a.get("properties") or {}
        at = arm.key_of(str(p.get("scope") or ""))
        if str(p.get("principalId") or "").lower() == principal_id.lower() \
                and (target == at or target.startswith(at + "/")) \
                and str(p.get("roleDefinitionId") or "").rsplit("/", 1)[-1].lower() in roles:
            return True
    return False


def handle(sim: Any, req: Request) -> Response:
    if m := LIST.match(req.path):
        if req.method != "GET":
            return arm_error(405, "MethodNotAllowed", f"{req.method} is not allowed on role assignment lists.")
        scope = arm.key_of(m.group(1))
        flt = req.query.get("$filter", "")
        pid = re.search(r"principalId\s+eq\s+'([^']+)'", flt)
        rows = [a for a in assignments(sim)
                if (scope == arm.key_of(a["properties"]["scope"]) or arm.key_of(a["properties"]["scope"]).startswith(scope + "/")
                    or scope.startswith(arm.key_of(a["properties"]["scope"]) + "/"))
                and (pid is None or a["properties"]["principalId"].lower() == pid.group(1).lower())]
        return json_response(200, {"value": rows})
    m = ASSIGNMENT.match(req.path)
    assert m is not None
    scope, name = m.group(1), m.group(2)
    res = sim.get(req.path)
    if req.method == "GET":
        return json_response(200, res) if res else arm_error(
            404, "RoleAssignmentNotFound", f"The role assignment '{name}' is not found.")
    if req.method == "DELETE":
        if res is None:
            return Response(204)
        sim.remove_tree(req.path)
        return json_response(200, res)
    if req.method != "PUT":
        return arm_error(405, "MethodNotAllowed", f"{req.method} is not allowed on role assignments.")
    if not GUID.match(name):
        return arm_error(400, "InvalidRoleAssignmentId", f"The role assignment ID '{name}' is not valid. The role "
                         "assignment ID must be a GUID.")
    if scope.count("/") > 2 and "/providers/" in scope and sim.get(scope) is None:
        return arm_error(404, "ResourceNotFound", f"The Resource '{scope}' was not found.")
    body = req.json()
    props = (body or {}).get("properties") if isinstance(body, dict) else None
    if not isinstance(props, dict) or not isinstance(props.get("roleDefinitionId"), str) \
            or not isinstance(props.get("principalId"), str):
        return arm_error(400, "InvalidRequestContent", "properties.roleDefinitionId and properties.principalId "
                         "are required.")
    ptype = props.get("principalType")
    if ptype is not None and ptype not in PRINCIPAL_TYPES:
        return arm_error(400, "InvalidRequestContent", f"principalType '{ptype}' is not one of {', '.join(PRINCIPAL_TYPES)}.")
    principal, role = props["principalId"].lower(), props["roleDefinitionId"].rsplit("/", 1)[-1].lower()
    seen = settings(sim).setdefault("seen", {})
    if principal not in principals(sim) or seen.get(principal, 0) < int(settings(sim).get("replication_puts") or 0):
        seen[principal] = seen.get(principal, 0) + 1
        return arm_error(400, "PrincipalNotFound", f"Principal {props['principalId']} does not exist in the directory. "
                         "Check that you have the correct principal ID. If you are creating this principal and then "
                         "immediately assigning a role, this error might be related to a replication delay.")
    if res is not None:
        p = res["properties"]
        if p["principalId"].lower() != principal or p["roleDefinitionId"].rsplit("/", 1)[-1].lower() != role:
            return arm_error(400, "RoleAssignmentUpdateNotPermitted", "Tenant ID, application ID, principal ID, and "
                             "scope are not allowed to be updated.")
    for a in assignments(sim):
        p = a["properties"]
        if a["name"].lower() != name.lower() and arm.key_of(p["scope"]) == arm.key_of(scope) \
                and p["principalId"].lower() == principal and p["roleDefinitionId"].rsplit("/", 1)[-1].lower() == role:
            return arm_error(409, "RoleAssignmentExists", "The role assignment already exists.")
    now = sim.iso()
    doc = {"id": req.path, "name": name, "type": TYPE,
           "properties": {"roleDefinitionId": props["roleDefinitionId"], "principalId": props["principalId"],
                          "principalType": ptype or "User", "scope": scope, "description": props.get("description"),
                          "condition": props.get("condition"), "conditionVersion": props.get("conditionVersion"),
                          "createdOn": (res or {}).get("properties", {}).get("createdOn", now), "updatedOn": now,
                          "createdBy": "deployctl-user", "updatedBy": "deployctl-user"}}
    sim.state["resources"][arm.key_of(req.path)] = doc
    return json_response(201, doc)
