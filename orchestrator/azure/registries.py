"""Azure Container Registries the image targets (``aci``, ``app-service``) push to and pull from:
a registry setting resolved to (name, subscription, resource group), the pre-write check that a
named registry exists, and the registry deployctl makes (and owns) when a target names none.

The Azure SDK is imported inside the functions.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from typing import Any

from orchestrator.azure.errors import AzureNotFound
from orchestrator.images.promote import registry_id
from orchestrator.target import Finding, Severity

__all__ = ["registry_id", "resolve", "default_name", "client", "missing_findings", "observe", "create", "delete"]

DEFAULT_SKU = "Basic"  # the cheapest; enough for one target's images


def resolve(ref: Any, subscription: str, resource_group: str) -> tuple[str, str, str]:
    """(name, subscription, resource group) of a registry setting: a name (in the target's
    subscription and group) or a ``RegistryRef`` (``name``, optional ``subscription``/``resource_group``)."""
    if isinstance(ref, str):
        return ref.lower(), subscription, resource_group
    return ref.name.lower(), ref.subscription or subscription, ref.resource_group or resource_group


def default_name(subscription: str, resource_group: str, owner: str) -> str:
    """The registry deployctl makes for ``owner`` (``<manifest>-<target>``): registry names are
    global, 5-50 letters and digits, so the owner's letters plus a hash of where it lives."""
    stem = re.sub(r"[^a-z0-9]", "", owner.lower())[:40] or "deployctl"
    return stem + hashlib.sha256(f"{subscription}/{resource_group}/{owner}".lower().encode()).hexdigest()[:8]


def client(session: Any, subscription: str) -> Any:
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

    return ContainerRegistryManagementClient(session.get_credential(subscription), subscription, **session.client_kwargs())


def missing_findings(session: Any, op: Callable[..., Any], registries: Iterable[tuple[str, str, str]]) -> list[Finding]:
    """An error finding for each named registry (name, subscription, resource group) that does not
    exist: deployctl builds into a registry it was given, it does not create it (that one is
    shared, billed and secured by its owners).  ``op`` is the target's operation runner."""
    out = []
    for name, sub, rg in registries:
        c = client(session, sub)
        try:
            op(f"read registry {name}", lambda c=c, n=name, g=rg: c.registries.get(g, n))
        except AzureNotFound:
            out.append(Finding(severity=Severity.error, message=f"registry {name} does not exist in resource group "
                               f"{rg} of subscription {sub}",
                               hint=f"create it (az acr create -n {name} -g {rg} --sku Standard) or fix `registry`"))
    return out


def observe(session: Any, subscription: str, resource_group: str, name: str) -> dict[str, Any] | None:
    """The registry as it is ({"location", "sku", "tags"}), or None."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        reg = client(session, subscription).registries.get(resource_group, name)
    except ResourceNotFoundError:
        return None
    return {"location": str(reg.location or "").replace(" ", "").lower(), "sku": reg.sku.name if reg.sku else None,
            "tags": dict(reg.tags or {})}


def create(session: Any, subscription: str, resource_group: str, name: str, *, location: str,
           tags: dict[str, str], sku: str = DEFAULT_SKU) -> None:
    """Create (or bring to spec) a registry deployctl owns: no admin user (pulls use identities)."""
    from azure.mgmt.containerregistry.models import Registry, RegistryProperties, Sku

    body = Registry(location=location, sku=Sku(name=sku), tags=tags, properties=RegistryProperties(admin_user_enabled=False))
    client(session, subscription).registries.begin_create(resource_group, name, body).result()


def delete(session: Any, subscription: str, resource_group: str, name: str) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        client(session, subscription).registries.begin_delete(resource_group, name).result()
    except ResourceNotFoundError:
        pass
