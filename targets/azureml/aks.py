"""``aks``: a Kubernetes online endpoint on a Kubernetes compute attached to the workspace.

Same resources and rollout as :mod:`.online`; the endpoint names the compute and deployments
name one of the compute's instance types (``defaultinstancetype`` unless the manifest names
another).  The compute is read and checked in ``check()``: missing, not Kubernetes (the legacy
"AKS compute" type, which Azure no longer accepts new endpoints on), or without the instance
type all give a precise error before anything is written.  The compute's instance types are
aks's catalog: one whose limits fall short of the requirement (CPU or memory) is an error that
names the smallest type that fits (the choice stays in the manifest: desired() is pure).

There is no regional core quota for Kubernetes computes: capacity is the cluster's.  The
capacity preflight (``check()``, like online's quota preflight: an error finding with the
numbers blocks apply unless ``--skip-quota-check``) adds up the pod requests the rollout needs at
its peak -- the new deployment's ``instance_count`` x its requests (the deployment's own, else the
instance type's), beside every deployment already running on the compute in this workspace,
the live one of this endpoint included, since blue/green keeps it serving until the new one has
taken all traffic; an in-place update replaces its deployment's pods instead -- and compares them
with the allocatable CPU and memory of the cluster's node pools.  The cluster is the compute's
``resourceId`` (an AKS ``managedClusters`` resource), read with one plain ARM GET through the
session's pipeline; node sizes come from the committed VM-size table (:mod:`.capacity`).  A
cluster that cannot be read (no Reader role on it, another subscription without a credential)
is a warning, not an error: the check is skipped and the plan says why.  Deployments of other
workspaces attached to the same cluster cannot be seen from here and are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar

from orchestrator.azure.arm import arm_get
from orchestrator.azure.errors import describe, is_not_found
from orchestrator.errors import TargetError
from orchestrator.plan import Action, Change
from orchestrator.target import Finding, Severity
from targets.azureml import capacity
from targets.azureml.config import AksConfig
from targets.azureml.online import OnlineEndpointTarget
from targets.azureml.spec import T_DEPLOYMENT

DEFAULT_INSTANCE_TYPE = "defaultinstancetype"
LEGACY = ("aks", "akscompute")
AKS_API_VERSION = "2024-02-01"  # Microsoft.ContainerService managedClusters (stable)


def _gib(value: Any) -> float | None:
    """Kubernetes memory quantity ('4Gi', '512Mi', '2G') to GiB."""
    if value is None:
        return None
    s = str(value).strip()
    units = {"Ki": 2**-20, "Mi": 2**-10, "Gi": 1, "Ti": 2**10, "K": 1e3 / 2**30, "M": 1e6 / 2**30, "G": 1e9 / 2**30}
    for u, f in units.items():
        if s.endswith(u):
            return float(s[: -len(u)]) * f
    return float(s) / 2**30


def _cpu(value: Any) -> float | None:
    if value is None:
        return None
    s = str(value).strip()
    return float(s[:-1]) / 1000 if s.endswith("m") else float(s)


def _field(obj: Any, name: str) -> Any:
    """A field of a dict (the REST shape) or of an SDK entity."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def instance_types(compute: Any) -> dict[str, Any]:
    """A Kubernetes compute's instance types by name; the extension provides
    ``defaultinstancetype`` when none is configured."""
    props = getattr(compute, "properties", None) or {}
    return props.get("instance_types") or props.get("instanceTypes") or {DEFAULT_INSTANCE_TYPE: {}}


def _limits(instance_type: Any) -> tuple[float | None, float | None]:
    """(CPU, GiB) an instance type allows its pods (its resource limits), None where unset."""
    limits = _field(_field(instance_type, "resources") or {}, "limits") or {}
    return _cpu(_field(limits, "cpu")), _gib(_field(limits, "memory"))


def smallest_fitting(types: Mapping[str, Any], cpu: float, memory_gib: float) -> tuple[str, float, float] | None:
    """The instance type with the least CPU (then memory) whose limits cover the requirement;
    types without limits are not candidates (they promise nothing).  Pure."""
    fits = []
    for name, it in types.items():
        c, m = _limits(it)
        if c is not None and m is not None and c >= cpu and m >= memory_gib:
            fits.append((c, m, name))
    if not fits:
        return None
    c, m, name = min(fits)
    return name, c, m


class AksTarget(OnlineEndpointTarget):
    kind = "aks"
    config_model = AksConfig
    description = "Azure ML Kubernetes online endpoint (AKS via the Azure ML extension) with blue/green rollout"
    compute_kind: ClassVar[str] = "kubernetes"
    reserve_fraction: ClassVar[float] = 0.0

    @property
    def acfg(self) -> AksConfig:
        assert isinstance(self.config, AksConfig)
        return self.config

    @property
    def instance_type(self) -> str:
        return self.acfg.instance_type or DEFAULT_INSTANCE_TYPE

    def endpoint_entity(self, spec: Mapping[str, Any], tags: dict[str, str]) -> Any:
        from azure.ai.ml.entities import KubernetesOnlineEndpoint

        return KubernetesOnlineEndpoint(name=self.d.endpoint, auth_mode=spec["auth_mode"], compute=spec["compute"],
                                        tags=tags)

    def endpoint_spec(self, ep: Any) -> dict[str, Any]:
        compute = getattr(ep, "compute", None)
        return {"auth_mode": ep.auth_mode, "compute": str(compute).rstrip("/").split("/")[-1] if compute else None}

    def desired(self) -> list:
        """As online, plus the pod's resource requests (the sizing requirement) on the deployment."""
        out = super().desired()
        req = self.requirement
        requests = {"cpu": f"{req.cpu:g}", "memory": f"{math.ceil(req.memory_gib * 1024)}Mi"}
        return [replace(r, spec={**r.spec, "requests": requests}) if r.type == T_DEPLOYMENT else r for r in out]

    def deployment_spec(self, dep: Any) -> dict[str, Any]:
        spec = super().deployment_spec(dep)
        requests = getattr(getattr(dep, "resources", None), "requests", None)
        spec["requests"] = {"cpu": getattr(requests, "cpu", None), "memory": getattr(requests, "memory", None)}
        return spec

    def deployment_entity(self, name: str, spec: Mapping[str, Any], tags: dict[str, str]) -> Any:
        from azure.ai.ml.entities import (
            KubernetesOnlineDeployment,
            OnlineRequestSettings,
            ResourceRequirementsSettings,
            ResourceSettings,
        )

        return KubernetesOnlineDeployment(
            name=name, endpoint_name=self.d.endpoint, model=spec["model"], environment=spec["environment"],
            code_configuration=self.code_configuration(spec),
            instance_type=spec["instance_type"], instance_count=spec["instance_count"],
            environment_variables=dict(spec["environment_variables"]), tags=tags,
            resources=ResourceRequirementsSettings(requests=ResourceSettings(**spec["requests"])),
            request_settings=OnlineRequestSettings(
                max_concurrent_requests_per_instance=spec["max_concurrent_requests_per_instance"],
                request_timeout_ms=spec["request_timeout_ms"]),
        )

    def compute_findings(self) -> list[Finding]:
        name = self.acfg.compute
        try:
            c = self.reader.compute(name)
            self._compute = c
        except Exception as e:
            if is_not_found(e):
                return [Finding(severity=Severity.error, message=f"compute {name!r} is not attached to workspace "
                                f"{self.cfg.workspace}", hint="attach the cluster: az ml compute attach --type Kubernetes")]
            return [Finding(severity=Severity.error, message=f"cannot read compute {name!r}: {describe(e)}")]
        ctype = str(getattr(c, "type", "")).lower()
        if ctype in LEGACY or "unsupported" in ctype:  # azure-ai-ml has no entity for v1 AksCompute
            return [Finding(severity=Severity.error,
                            message=f"compute {name!r} is a legacy 'AKS compute' (v1): Azure ML rejects new online "
                                    f"endpoints on it", hint="attach the cluster as a Kubernetes compute (Azure ML "
                                    "extension) and name that compute")]
        if ctype != "kubernetes":
            return [Finding(severity=Severity.error, message=f"compute {name!r} is {ctype!r}, not a Kubernetes compute")]
        types = instance_types(c)
        it = types.get(self.instance_type)
        if it is None:
            return [Finding(severity=Severity.error, message=f"instance type {self.instance_type!r} is not defined on "
                            f"compute {name!r}; it has {', '.join(sorted(types))}")]
        req = self.requirement
        cpu, mem = _limits(it)
        out = [Finding(severity=Severity.info, message=f"instance type {self.instance_type} on {name}: "
                       f"{cpu if cpu is not None else '?'} CPU, {f'{mem:.1f}' if mem is not None else '?'} GiB "
                       f"for a requirement of {req.describe()}; " + "; ".join(req.reasons))]
        short = []
        if mem is not None and mem < req.memory_gib:
            short.append(f"{mem:.1f} GiB of the {req.memory_gib:.1f} GiB")
        if cpu is not None and cpu < req.cpu:
            short.append(f"{cpu:g} of the {req.cpu:g} CPU")
        if short:
            # The compute's instance types are the catalog here: name the smallest that fits (the
            # choice stays in the manifest: desired() is pure, and the types live on the compute).
            fitting = smallest_fitting(types, req.cpu, req.memory_gib)
            hint = (f"set instance_type: {fitting[0]} ({fitting[1]:g} CPU, {fitting[2]:.1f} GiB), the smallest of "
                    f"compute {name}'s instance types that fits" if fitting else
                    f"none of compute {name}'s instance types ({', '.join(sorted(types))}) fits: add one with larger "
                    "limits to the compute, or lower resources in the manifest")
            out.append(Finding(severity=Severity.error, message=f"instance type {self.instance_type} allows only "
                               + " and ".join(short) + " the model needs", hint=hint))
        return out

    # -- cluster capacity ---------------------------------------------------------------------------
    _compute: Any = None


    def _pod(self, label: str, count: int, requests: Any, instance_type: Any) -> capacity.Pods:
        """A deployment's pods: its own requests, else its instance type's."""
        it_req = _field(_field(instance_type, "resources") or {}, "requests") or {}
        cpu = _cpu(_field(requests, "cpu") if requests else None) or _cpu(_field(it_req, "cpu")) or 0.0
        mem = _gib(_field(requests, "memory") if requests else None) or _gib(_field(it_req, "memory")) or 0.0
        return capacity.Pods(label, count, cpu, mem)

    def _deployments_of(self, endpoint: str) -> list[Any]:
        return self.reader.online_deployments(endpoint)

    def _running_pods(self, types: Mapping[str, Any], exclude: str) -> tuple[list[capacity.Pods], list[str]]:
        """Pods of the deployments already on this compute (this workspace), but ``exclude``."""
        name = self.acfg.compute.lower()
        try:
            endpoints = self.op("list online endpoints", lambda: self.reader.online_endpoints())
            out = []
            for ep in endpoints:
                compute = str(getattr(ep, "compute", None) or "").rstrip("/").rsplit("/", 1)[-1].lower()
                if compute != name:
                    continue
                deps = self.op(f"list deployments of {ep.name}", partial(self._deployments_of, ep.name))
                for d in deps:
                    if (ep.name == self.d.endpoint and d.name == exclude) or \
                            str(getattr(d, "provisioning_state", "")).lower() == "failed":
                        continue
                    it = types.get(getattr(d, "instance_type", None) or DEFAULT_INSTANCE_TYPE, {})
                    label = f"{ep.name}/{d.name}" + (" (live, beside the new one)" if ep.name == self.d.endpoint else "")
                    out.append(self._pod(label, int(getattr(d, "instance_count", None) or 1),
                                         getattr(getattr(d, "resources", None), "requests", None), it))
            return out, []
        except TargetError as e:
            return [], [f"deployments already on compute {self.acfg.compute} could not be listed ({e}): not counted"]

    def capacity_findings(self, changes: list[Change]) -> list[Finding]:
        dep = next((c for c in changes if c.type == T_DEPLOYMENT and c.action in (Action.create, Action.update)), None)
        if dep is None or self._compute is None:
            return []
        types = instance_types(self._compute)
        it = types.get(self.instance_type, {})
        dep_name = dep.name.split("/", 1)[1]
        verb = "new deployment" if dep.action is Action.create else "deployment"
        new = self._pod(f"{verb} {dep_name}", int(dep.spec.get("instance_count", self.cfg.instance_count)),
                        dep.spec.get("requests"), it)
        asked = f"{new.count} pod(s) x ({new.cpu:g} CPU, {new.memory_gib:.1f} GiB)"
        if self.ctx.options.skip_quota_check:
            return [Finding(severity=Severity.warning, message=f"cluster capacity check skipped ({asked})")]
        cluster_id = str(getattr(self._compute, "resource_id", None) or "")
        if "/managedclusters/" not in cluster_id.lower():
            return [Finding(severity=Severity.warning, message=f"compute {self.acfg.compute} is not backed by an AKS "
                            f"cluster deployctl can read (resourceId {cluster_id or 'missing'}): cluster capacity "
                            f"not checked ({asked})")]
        cluster_name = cluster_id.rstrip("/").rsplit("/", 1)[-1]
        sub = cluster_id.strip("/").split("/")[1]
        try:
            cluster = self.op(f"read AKS cluster {cluster_name}", lambda: arm_get(
                self.session, self.session.get_credential(sub), cluster_id, AKS_API_VERSION))
        except TargetError as e:
            return [Finding(severity=Severity.warning,
                            message=f"cannot read AKS cluster {cluster_name} behind compute {self.acfg.compute} "
                                    f"({describe(e)}): cluster capacity not checked ({asked})",
                            hint="grant this identity Reader on the cluster to have its capacity checked")]
        others, notes = self._running_pods(types, exclude=dep_name)
        pool = capacity.pinned_pool(_field(it, "node_selector") or _field(it, "nodeSelector"))
        pools, pool_notes = capacity.node_pools(cluster, pool)
        warn = [Finding(severity=Severity.warning, message=n) for n in notes + pool_notes]
        if not pools:
            where = f"node pool {pool!r}" if pool else "Linux node pool"
            return [*warn, Finding(severity=Severity.warning, message=f"no {where} of cluster {cluster_name} could "
                                   f"be sized: cluster capacity not checked ({asked})")]
        a = capacity.assess([new, *others], pools)
        need = (f"the rollout needs {a.need_cpu:g} CPU, {a.need_memory_gib:.1f} GiB of pod requests "
                f"({'; '.join(p.describe() for p in a.pods)})")
        offer = (f"cluster {cluster_name} offers {a.have_cpu:.2f} CPU, {a.have_memory_gib:.1f} GiB allocatable "
                 f"({'; '.join(p.describe() for p in a.pools)})")
        if a.fits:
            return [*warn, Finding(severity=Severity.info, message=f"cluster capacity: {need}; {offer}")]
        return [*warn, Finding(severity=Severity.error, message=f"cluster capacity: {need}; {offer}: {a.shortfall}",
                               hint="add nodes to the cluster (count, or maxCount with autoscaling), lower "
                                    "instance_count or resources, or pass --skip-quota-check")]

    def check(self, changes: list[Change]) -> list[Finding]:
        findings = self.compute_findings()
        if any(f.severity is Severity.error for f in findings):
            return findings
        return findings + self.capacity_findings(changes) + self.environment_findings(changes)
