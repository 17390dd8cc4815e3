"""Manifest settings of the Azure ML targets (``online-endpoint``, ``aks``, ``batch-endpoint``).

Plain pydantic models: they import without any Azure SDK, so ``deployctl validate`` stays
instant.  Every field's description goes into the manifest JSON Schema.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from orchestrator.manifest.model import Strict, TargetConfig

_GUID_OR_VAR = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"


class CredentialSource(Strict):
    """How to authenticate to another subscription (a model's source workspace)."""

    type: Literal["default", "azure-cli", "managed-identity", "environment"] = Field(
        "default", description="default: DefaultAzureCredential; azure-cli: `az login`; managed-identity: the "
        "host's (or client_id's) identity; environment: AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET.")
    tenant_id: str | None = Field(None, description="Tenant of the other subscription, when it differs.")
    client_id: str | None = Field(None, description="User-assigned managed identity client id.")


class ModelSourceSettings(Strict):
    """Where a model given by ``model.uri`` in another subscription or workspace is read from."""

    credential: CredentialSource = Field(CredentialSource(), description="Credential for the source subscription.")


class RolloutSettings(Strict):
    """Blue/green: the new deployment takes traffic in steps, with a health check between them."""

    steps: list[int] = Field([10, 50, 100], description="Percent of traffic on the new deployment at each step; "
                             "increasing, ending at 100.", min_length=1)
    health_checks: int = Field(3, ge=1, le=50, description="Scoring requests (sample_request) after each step; "
                               "all must succeed.")
    mirror_percent: int = Field(0, ge=0, le=50, description="Before shifting, copy this percent of live traffic "
                                "to the new deployment (responses discarded).")
    keep_previous: bool = Field(False, description="Keep the previous deployment (at 0%) after a successful rollout.")

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[int]) -> list[int]:
        if any(not 0 < s <= 100 for s in v):
            raise ValueError("each step is a percent between 1 and 100")
        if any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError("steps must increase")
        if v[-1] != 100:
            raise ValueError("the last step must be 100")
        return v


class AzureMLConfig(TargetConfig):
    """Settings shared by the Azure ML targets."""

    subscription: str = Field(description="Azure subscription id of the workspace.", pattern=_GUID_OR_VAR)
    resource_group: str = Field(description="Resource group of the workspace.", min_length=1, max_length=90)
    workspace: str = Field(description="Azure ML workspace name.", min_length=2, max_length=33)
    endpoint_name: str | None = Field(
        None, pattern=r"^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$",
        description="Endpoint name (unique in the region); default: <manifest name>-<target name>.")
    instance_type: str | None = Field(
        None, description="VM size (managed online, batch) or the Kubernetes compute's instance type (aks); "
        "default: the cheapest that fits `resources`.")
    instance_count: int = Field(1, ge=1, le=100, description="Instances (nodes for batch) per deployment.")
    registry: str | None = Field(
        None, description="Azure ML registry to share a model from another workspace through, instead of copying.")
    registry_resource_group: str | None = Field(
        None, description="Resource group of `registry` (for its region check); default: resource_group.")
    model_source: ModelSourceSettings | None = Field(
        None, description="How to read a model.uri that lives in another subscription/workspace.")
    environment_image: Literal["azureml", "deployctl"] = Field(
        "azureml", description="Who makes the deployment's environment image. azureml: Azure ML builds it from the "
        "conda file, on its side (minutes). deployctl: deployctl's own image (the one aci runs: environment, runtime, "
        "model and code layers, or environment.dockerfile built by ACR Tasks) is pushed to image_registry and "
        "registered as the environment by digest, so Azure ML skips its environment build; online and aks "
        "deployments route to deployctl's runtime (GET /ready for liveness and readiness, POST /score, port 5001).")
    image_registry: str | None = Field(
        None, pattern=r"^[a-zA-Z0-9]{5,50}$",
        description="Azure Container Registry (in the workspace's subscription and resource group) that "
        "environment_image: deployctl pushes to; default: the workspace's own registry, which Azure ML pulls from. "
        "Another registry needs AcrPull for the workspace's identity.")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags on every resource.")


class OnlineEndpointConfig(AzureMLConfig):
    """``online-endpoint``: a managed online endpoint and blue/green deployments."""

    kind: Literal["online-endpoint"] = "online-endpoint"
    auth_mode: Literal["key", "aml_token"] = Field("key", description="Endpoint authentication.")
    rollout: RolloutSettings = Field(RolloutSettings(), description="Safe rollout of a new version.")
    max_concurrent_requests_per_instance: int = Field(1, ge=1, le=1000, description="Requests one instance serves at once.")
    request_timeout_ms: int = Field(5000, ge=1000, le=180000, description="Scoring timeout.")


class AksConfig(OnlineEndpointConfig):
    """``aks``: a Kubernetes online endpoint on a Kubernetes compute attached to the workspace."""

    kind: Literal["aks"] = "aks"  # type: ignore[assignment]
    compute: str = Field(description="Name of the Kubernetes compute attached to the workspace (Azure ML extension).")
    compute_type: Literal["kubernetes", "aks"] = Field(
        "kubernetes", description="kubernetes (attached through the Azure ML extension). The legacy 'aks' compute "
        "type is rejected: Azure ML no longer accepts new endpoints there.")

    @model_validator(mode="after")
    def _not_legacy(self) -> AksConfig:
        if self.compute_type == "aks":
            raise ValueError(
                "Azure ML no longer accepts new endpoints on the legacy 'AKS compute' type (v1 AksCompute); attach "
                "the cluster as a Kubernetes compute (install the Azure ML extension, then `az ml compute attach "
                "--type Kubernetes`) and set compute_type: kubernetes")
        return self


class ClusterSettings(Strict):
    """The AmlCompute cluster batch jobs run on (created and sized when missing)."""

    name: str = Field(pattern=r"^[a-zA-Z][a-zA-Z0-9-]{1,15}$", description="Cluster name (2-16 characters).")
    min_nodes: int = Field(0, ge=0, description="Nodes kept running (0: scale to zero when idle).")
    max_nodes: int = Field(2, ge=1, le=100, description="Upper bound of nodes.")
    idle_seconds_before_scaledown: int = Field(120, ge=0, description="Idle time before nodes are released.")

    @model_validator(mode="after")
    def _order(self) -> ClusterSettings:
        if self.min_nodes > self.max_nodes:
            raise ValueError("min_nodes must not exceed max_nodes")
        return self


class BatchEndpointConfig(AzureMLConfig):
    """``batch-endpoint``: a batch endpoint and a model batch deployment on an AmlCompute cluster."""

    kind: Literal["batch-endpoint"] = "batch-endpoint"
    compute: ClusterSettings = Field(description="The AmlCompute cluster.")
    job_timeout_s: int = Field(3600, ge=10, description="How long invoke follows a job before giving up.")
