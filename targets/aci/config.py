"""Manifest settings of the ``aci`` target.  Plain pydantic: imports no Azure SDK."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from orchestrator.manifest.model import Strict, TargetConfig

_GUID = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
_REGION = r"^[a-z][a-z0-9]{1,39}$"


class RegistryRef(Strict):
    """An Azure Container Registry, possibly in another subscription."""

    name: str = Field(pattern=r"^[a-zA-Z0-9]{5,50}$", description="Registry name (its login server is <name>.azurecr.io).")
    subscription: str | None = Field(None, pattern=_GUID, description="Its subscription; default: the target's.")
    resource_group: str | None = Field(None, min_length=1, max_length=90,
                                       description="Its resource group; default: the target's.")


class AciConfig(TargetConfig):
    """``aci``: a container group running the manifest's image, blue/green by group."""

    kind: Literal["aci"] = "aci"
    subscription: str = Field(description="Azure subscription of the container group.", pattern=_GUID)
    resource_group: str = Field(description="Resource group of the container group.", min_length=1, max_length=90)
    region: str = Field(description="Azure region, e.g. westeurope.", pattern=_REGION)
    region_fallbacks: list[str] = Field(
        default_factory=list, description="Regions tried in order when `region` has no capacity "
        "(InsufficientCapacity, ServiceUnavailable).")
    registry: str | RegistryRef = Field(
        description="The Azure Container Registry the group pulls from (a name, or name/subscription/resource_group).")
    promote_from: RegistryRef | None = Field(
        None, description="Build in this registry (e.g. dev's) and import the image by digest into `registry` "
        "(no pull or push through this machine): prod runs the bytes dev tested.")
    identity: str | None = Field(
        None, pattern=r"^/subscriptions/.+/providers/Microsoft\.ManagedIdentity/userAssignedIdentities/[^/]+$",
        description="User-assigned managed identity (ARM id) with AcrPull on `registry`; default: a repository-scoped "
        "ACR token made by deployctl. Admin credentials are never used.")
    dns_label: str | None = Field(
        None, pattern=r"^[a-z][a-z0-9-]{1,50}[a-z0-9]$",
        description="DNS label prefix; each version's group gets <label>-<version> (default label: <name>-<target>).")
    port: int = Field(5001, ge=1, le=65535, description="Port the scoring server listens on and the group exposes.")
    restart_policy: Literal["Always", "OnFailure", "Never"] = Field("Always", description="Container restart policy.")
    keep_previous: bool = Field(False, description="Keep the previous version's group running after a successful rollout.")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags on every resource.")
