"""Reading Azure ML resources as plain ARM JSON, without azure-ai-ml.

``plan``, ``status`` and a no-op ``apply`` only read; importing azure-ai-ml (about 1,600
modules) costs ~2 s of CPU before the first request, more than reading a fleet of targets
takes.  So reads go through one azure-core pipeline (:func:`orchestrator.azure.arm.arm_request`:
the session's transport, retry and ARM throttle) and their answers are wrapped in small views
that carry the attributes the targets read from azure-ai-ml's entities, converted the way
azure-ai-ml converts them (``tests/azureml/test_arm_read.py`` compares both on the same
resources).  Writes still go through azure-ai-ml: it is imported when something changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from orchestrator.azure.arm import arm_get, arm_request
from orchestrator.azure.session import AzureSession
from orchestrator.errors import TargetError

API_VERSION = "2023-10-01"  # the stable Azure ML API azure-ai-ml also speaks

# REST auth modes -> azure-ai-ml's names (``OnlineEndpoint._rest_auth_mode_to_yaml_auth_mode``)
_AUTH_MODES = {"Key": "key", "AMLToken": "aml_token", "AADToken": "aad_token"}
_DURATION = re.compile(r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
                       r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")


def duration_ms(value: str | None) -> int | None:
    """An ISO 8601 duration (``PT5S``, ``PT1M30S``) in milliseconds exactly as azure-ai-ml's
    ``from_iso_duration_format_ms`` gives it (whole seconds x 1000); None stays None."""
    seconds = duration_s(value)
    return None if seconds is None else int(seconds) * 1000


def duration_s(value: str | None) -> float | None:
    """An ISO 8601 duration in seconds (a float, as ``timedelta.total_seconds()``); None stays None."""
    if not value:
        return None
    m = _DURATION.match(value.strip())
    if not m:
        raise ValueError(f"not an ISO 8601 duration: {value!r}")
    return sum(float(m.group(k) or 0) * f for k, f in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)))


@dataclass(frozen=True)
class CodeConfigurationView:
    code: str | None
    scoring_script: str | None


@dataclass(frozen=True)
class RequestSettingsView:
    max_concurrent_requests_per_instance: int | None
    request_timeout_ms: int | None


@dataclass(frozen=True)
class ResourceSettingsView:
    cpu: str | None
    memory: str | None


@dataclass(frozen=True)
class ResourcesView:
    requests: ResourceSettingsView | None


@dataclass(frozen=True)
class EndpointView:
    """An online endpoint, as ``OnlineEndpoint._from_rest_object`` would give it (the fields read)."""

    name: str
    tags: dict[str, str]
    auth_mode: str | None
    traffic: dict[str, int]
    mirror_traffic: dict[str, int]
    provisioning_state: str | None
    scoring_uri: str | None
    compute: str | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> EndpointView:
        p = body.get("properties") or {}
        auth = p.get("authMode")
        return cls(name=body.get("name", ""), tags=dict(body.get("tags") or {}),
                   auth_mode=_AUTH_MODES.get(auth, auth) if auth else None,
                   traffic=dict(p.get("traffic") or {}), mirror_traffic=dict(p.get("mirrorTraffic") or {}),
                   provisioning_state=p.get("provisioningState"), scoring_uri=p.get("scoringUri"),
                   compute=p.get("compute"))


@dataclass(frozen=True)
class DeploymentView:
    """An online deployment (managed or Kubernetes), as azure-ai-ml's entity would give it."""

    name: str
    tags: dict[str, str]
    model: str | None
    environment: str | None
    code_configuration: CodeConfigurationView | None
    instance_type: str | None
    instance_count: int | None
    environment_variables: dict[str, str]
    request_settings: RequestSettingsView | None
    resources: ResourcesView | None
    provisioning_state: str | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> DeploymentView:
        p = body.get("properties") or {}
        cc = p.get("codeConfiguration")
        rs = p.get("requestSettings")
        sku = body.get("sku")
        requests = ((p.get("containerResourceRequirements") or {}).get("containerResourceRequests"))
        return cls(
            name=body.get("name", ""), tags=dict(body.get("tags") or {}), model=p.get("model"),
            environment=p.get("environmentId"),
            code_configuration=CodeConfigurationView(cc.get("codeId"), cc.get("scoringScript")) if cc else None,
            instance_type=p.get("instanceType"),
            instance_count=sku.get("capacity") if sku else None,
            environment_variables=dict(p.get("environmentVariables") or {}),
            request_settings=RequestSettingsView(rs.get("maxConcurrentRequestsPerInstance"),
                                                 duration_ms(rs.get("requestTimeout"))) if rs else None,
            resources=ResourcesView(ResourceSettingsView(requests.get("cpu"), requests.get("memory"))
                                    if requests else None) if p.get("endpointComputeType") == "Kubernetes" else None,
            provisioning_state=p.get("provisioningState"))


@dataclass(frozen=True)
class AssetVersionView:
    """A model or environment version: its tags, and whether it was archived (deleted)."""

    name: str
    version: str
    tags: dict[str, str]
    archived: bool

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> AssetVersionView:
        p = body.get("properties") or {}
        parts = str(body.get("id", "")).rstrip("/").split("/")
        return cls(name=parts[-3] if len(parts) >= 3 else "", version=str(body.get("name", "")),
                   tags=dict(p.get("tags") or {}), archived=bool(p.get("isArchived")))


@dataclass(frozen=True)
class WorkspaceView:
    """The workspace: its region, and the registry Azure ML builds and pulls its images with."""

    name: str
    location: str
    container_registry: str | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> WorkspaceView:
        p = body.get("properties") or {}
        return cls(name=body.get("name", ""), location=str(body.get("location", "")),
                   container_registry=p.get("containerRegistry"))


@dataclass(frozen=True)
class ComputeView:
    """A compute (an AmlCompute cluster's size and scale settings; its type for any other)."""

    name: str
    type: str  # computeType, lower case: amlcompute, kubernetes, aks (the legacy v1 attach)...
    tags: dict[str, str]
    size: str | None
    min_instances: int | None
    max_instances: int | None
    idle_time_before_scale_down: float | None
    resource_id: str | None  # what an attached compute stands for (the AKS cluster)
    properties: dict[str, Any]  # the compute type's own properties (REST names: instanceTypes...)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ComputeView:
        p = body.get("properties") or {}
        inner = p.get("properties") or {}
        scale = inner.get("scaleSettings") or {}
        return cls(name=body.get("name", ""), type=str(p.get("computeType", "")).lower(),
                   tags=dict(body.get("tags") or {}), size=inner.get("vmSize"),
                   min_instances=scale.get("minNodeCount"), max_instances=scale.get("maxNodeCount"),
                   idle_time_before_scale_down=duration_s(scale.get("nodeIdleTimeBeforeScaleDown")),
                   resource_id=p.get("resourceId"), properties=dict(inner))


@dataclass(frozen=True)
class BatchDefaultsView:
    deployment_name: str | None


@dataclass(frozen=True)
class BatchEndpointView:
    name: str
    tags: dict[str, str]
    defaults: BatchDefaultsView

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> BatchEndpointView:
        p = body.get("properties") or {}
        return cls(name=body.get("name", ""), tags=dict(body.get("tags") or {}),
                   defaults=BatchDefaultsView((p.get("defaults") or {}).get("deploymentName")))


@dataclass(frozen=True)
class RetrySettingsView:
    max_retries: int | None
    timeout: int | None


@dataclass(frozen=True)
class InstanceCountView:
    instance_count: int | None


@dataclass(frozen=True)
class BatchDeploymentView:
    """A batch deployment, as ``BatchDeployment._from_rest_object`` gives it (the fields read)."""

    name: str
    tags: dict[str, str]
    model: str | None
    environment: str | None
    code_configuration: CodeConfigurationView | None
    compute: str | None
    resources: InstanceCountView | None
    mini_batch_size: int | None
    max_concurrency_per_instance: int | None
    error_threshold: int | None
    retry_settings: RetrySettingsView | None
    output_file_name: str | None
    environment_variables: dict[str, str]
    provisioning_state: str | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> BatchDeploymentView:
        p = body.get("properties") or {}
        cc = p.get("codeConfiguration")
        rs = p.get("retrySettings")
        res = p.get("resources")
        timeout = duration_s(rs.get("timeout")) if rs else None
        return cls(
            name=body.get("name", ""), tags=dict(body.get("tags") or {}),
            model=(p.get("model") or {}).get("assetId"), environment=p.get("environmentId"),
            code_configuration=CodeConfigurationView(cc.get("codeId"), cc.get("scoringScript")) if cc else None,
            compute=p.get("compute"), resources=InstanceCountView(res.get("instanceCount")) if res else None,
            mini_batch_size=p.get("miniBatchSize"), max_concurrency_per_instance=p.get("maxConcurrencyPerInstance"),
            error_threshold=p.get("errorThreshold"),
            retry_settings=RetrySettingsView(rs.get("maxRetries"), None if timeout is None else int(timeout))
            if rs else None,
            # azure-ai-ml keeps the file name only for the append_row output action
            output_file_name=p.get("outputFileName") if p.get("outputAction") == "AppendRow" else None,
            environment_variables=dict(p.get("environmentVariables") or {}),
            provisioning_state=p.get("provisioningState"))


class WorkspaceReader:
    """GETs below one workspace (``/subscriptions/.../workspaces/<name>``).  Errors are azure-core's
    ``HttpResponseError``, typed by :func:`orchestrator.azure.ops.run_op` like an SDK's."""

    def __init__(self, session: AzureSession, subscription: str, resource_group: str, workspace: str) -> None:
        self.session = session
        self.credential = session.get_credential(subscription)
        self.root = (f"/subscriptions/{subscription}/resourceGroups/{resource_group}"
                     f"/providers/Microsoft.MachineLearningServices/workspaces/{workspace}")

    def get(self, path: str = "") -> dict[str, Any]:
        return dict(arm_get(self.session, self.credential, f"{self.root}{path}", API_VERSION) or {})

    def list_all(self, path: str) -> Iterator[dict[str, Any]]:
        """Every item of a paged list (``value`` + ``nextLink``).  A next link is followed with
        all of its query (skip token, page size, filters) but our api-version; a service that
        hands back a link it already gave is an error, not an endless loop."""
        from urllib.parse import parse_qsl, urlsplit

        page = self.get(path)
        seen: set[str] = set()
        while True:
            yield from page.get("value") or []
            link = page.get("nextLink")
            if not link:
                return
            if link in seen:
                raise TargetError(f"listing {path}: the service returned the same next page twice ({urlsplit(link).path})")
            seen.add(link)
            parts = urlsplit(link)
            params = {k: v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "api-version"}
            page = dict(arm_request(self.session, self.credential, "GET", parts.path, API_VERSION, params=params) or {})

    # -- the resources the Azure ML targets read ------------------------------------------------
    def workspace(self) -> WorkspaceView:
        return WorkspaceView.from_json(self.get())

    def asset_version(self, kind: str, name: str, version: str) -> AssetVersionView:
        """``kind``: ``models`` or ``environments``."""
        return AssetVersionView.from_json(self.get(f"/{kind}/{name}/versions/{version}"))

    def online_endpoint(self, name: str) -> EndpointView:
        return EndpointView.from_json(self.get(f"/onlineEndpoints/{name}"))

    def online_endpoints(self) -> list[EndpointView]:
        return [EndpointView.from_json(x) for x in self.list_all("/onlineEndpoints")]

    def online_deployments(self, endpoint: str) -> list[DeploymentView]:
        return [DeploymentView.from_json(x) for x in self.list_all(f"/onlineEndpoints/{endpoint}/deployments")]

    def endpoint_secret(self, name: str) -> str | None:
        """What a scoring request authenticates with, by the endpoint's own auth mode, as
        azure-ai-ml's ``get_keys`` does: key auth, the primary key (``listKeys``); Azure ML tokens,
        one from ``token``; Entra ID (aad_token), a token of the session's credential for Azure ML."""
        mode = self.online_endpoint(name).auth_mode
        if mode == "key":
            keys = arm_request(self.session, self.credential, "POST", f"{self.root}/onlineEndpoints/{name}/listKeys",
                               API_VERSION) or {}
            return keys.get("primaryKey")
        if mode == "aad_token":
            return str(self.credential.get_token("https://ml.azure.com/.default").token)
        token = arm_request(self.session, self.credential, "POST", f"{self.root}/onlineEndpoints/{name}/token",
                            API_VERSION) or {}
        return token.get("accessToken")

    def compute(self, name: str) -> ComputeView:
        return ComputeView.from_json(self.get(f"/computes/{name}"))

    def batch_endpoint(self, name: str) -> BatchEndpointView:
        return BatchEndpointView.from_json(self.get(f"/batchEndpoints/{name}"))

    def batch_deployments(self, endpoint: str) -> list[BatchDeploymentView]:
        return [BatchDeploymentView.from_json(x) for x in self.list_all(f"/batchEndpoints/{endpoint}/deployments")]
