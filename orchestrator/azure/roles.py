"""Azure role assignments deployctl makes (AcrPull for the identity an app pulls its image with),
through azure-mgmt-authorization's client.

A role assignment's name is a GUID chosen by the caller: deployctl derives it from scope,
principal and role (:func:`assignment_name`), so a create retried after a lost answer PUTs the
same name again and can never leave a duplicate.  Role assignments carry no tags: deployctl's
ownership tags travel in the assignment's ``description`` (:func:`describe_owner`,
:func:`owner_tags`).  Azure's own behaviour handled here: a principal created moments ago may not
have replicated yet (400 ``PrincipalNotFound``: retried within the caller's budget), and an
identical assignment under another name answers 409 ``RoleAssignmentExists`` (it is there: done).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from orchestrator.errors import TransientError

ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"  # the built-in AcrPull role's definition id
# built-in roles that include registry pull: AcrPull, AcrPush, Owner, Contributor
PULL_ROLES = frozenset({ACR_PULL, "8311e382-0749-4cb8-b61a-304f252e45ec", "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
                        "b24988ac-6180-42a0-ab88-20f7382dd24c"})
OWNER_PREFIX = "deployctl:"
_NAMESPACE = uuid.UUID("5b0c6f1e-3a4f-4c55-9d7e-6d1c2a0f7e11")  # deployctl's uuid5 namespace for assignment names


def assignment_name(scope: str, principal_id: str, role: str) -> str:
    """The assignment's GUID name, the same for the same (scope, principal, role) every time."""
    return str(uuid.uuid5(_NAMESPACE, f"{scope.lower()}|{principal_id.lower()}|{role.lower()}"))


def role_definition_id(subscription: str, role: str) -> str:
    return f"/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{role}"


def assignment_id(scope: str, name: str) -> str:
    return f"{scope.rstrip('/')}/providers/Microsoft.Authorization/roleAssignments/{name}"


def describe_owner(tags: Mapping[str, str]) -> str:
    return OWNER_PREFIX + json.dumps(dict(tags), sort_keys=True, separators=(",", ":"))


def owner_tags(description: str | None) -> dict[str, str]:
    """The ownership tags :func:`describe_owner` wrote ({} for an assignment deployctl did not make)."""
    if not description or not description.startswith(OWNER_PREFIX):
        return {}
    try:
        tags = json.loads(description[len(OWNER_PREFIX):])
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {}


def client(session: Any, subscription: str) -> Any:
    from azure.mgmt.authorization import AuthorizationManagementClient

    return AuthorizationManagementClient(session.get_credential(subscription), subscription, **session.client_kwargs())


def get(session: Any, subscription: str, scope: str, name: str) -> dict[str, Any] | None:
    """The assignment's properties ({"roleDefinitionId", "principalId", "scope", "description"}), or None."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        ra = client(session, subscription).role_assignments.get(scope, name)
    except ResourceNotFoundError:
        return None
    return {"roleDefinitionId": ra.role_definition_id, "principalId": ra.principal_id, "scope": ra.scope,
            "description": ra.description}


def roles_of(session: Any, subscription: str, scope: str, principal_id: str) -> set[str]:
    """The role definition GUIDs ``principal_id`` holds on ``scope`` (assigned there or above)."""
    found = client(session, subscription).role_assignments.list_for_scope(
        scope, filter=f"principalId eq '{principal_id}'")
    return {str(a.role_definition_id or "").rsplit("/", 1)[-1].lower() for a in found}


def assign(session: Any, subscription: str, scope: str, principal_id: str, role: str, *, description: str) -> str:
    """Give ``principal_id`` (a service principal: a managed identity) ``role`` on ``scope``; the
    assignment's name.  Raise :class:`TransientError` while the principal has not replicated, so
    the caller's retry budget waits for it."""
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters

    name = assignment_name(scope, principal_id, role)
    # principalType set: ARM then skips the directory lookup that a fresh principal can fail
    params = RoleAssignmentCreateParameters(role_definition_id=role_definition_id(subscription, role),
                                            principal_id=principal_id, principal_type="ServicePrincipal",
                                            description=description)
    try:
        client(session, subscription).role_assignments.create(scope, name, params)
    except HttpResponseError as e:
        code = getattr(getattr(e, "error", None), "code", None)
        if code == "RoleAssignmentExists":  # the same grant under another name: the principal has the role
            return name
        if code == "PrincipalNotFound":
            raise TransientError(f"principal {principal_id} not replicated yet",
                                 reason="PrincipalNotFound: a new identity takes a while to replicate") from e
        raise
    return name


def delete(session: Any, subscription: str, scope: str, name: str) -> None:
    client(session, subscription).role_assignments.delete(scope, name)  # 204 when already gone
