"""``aks``: a Kubernetes online endpoint on a Kubernetes compute attached to the workspace.

Same resources and rollout as :mod:`.online`; the endpoint names the compute and deployments
name one of the compute's instance types (``defaultinstancetype`` unless the manifest names
another).  The compute is read and checked in ``check()``: missing, not Kubernetes (the legacy
"AKS compute" type, which Azure no longer accepts new endpoints on), or without the instance
type all give a precise error before anything is written.  There is no regional core quota to
check: capacity is the cluster's own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

from orchestrator.plan import Change
from orchestrator.target import Finding, Severity
from targets.azureml.client import describe, is_not_found
from targets.azureml.config import AksConfig
from targets.azureml.online import OnlineEndpointTarget
from targets.azureml.spec import T_DEPLOYMENT

DEFAULT_INSTANCE_TYPE = "defaultinstancetype"
LEGACY = ("aks", "akscompute")


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
            CodeConfiguration,
            KubernetesOnlineDeployment,
            OnlineRequestSettings,
            ResourceRequirementsSettings,
            ResourceSettings,
        )

        return KubernetesOnlineDeployment(
            name=name, endpoint_name=self.d.endpoint, model=spec["model"], environment=spec["environment"],
            code_configuration=CodeConfiguration(code=spec["code"], scoring_script=spec["scoring_script"]),
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
            c = self.ml.compute.get(name)
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
        props = getattr(c, "properties", None) or {}
        types = props.get("instance_types") or props.get("instanceTypes") or {}
        if not types:  # the extension provides defaultinstancetype when none is configured
            types = {DEFAULT_INSTANCE_TYPE: {}}
        it = types.get(self.instance_type)
        if it is None:
            return [Finding(severity=Severity.error, message=f"instance type {self.instance_type!r} is not defined on "
                            f"compute {name!r}; it has {', '.join(sorted(types))}")]
        req = self.requirement
        res = (it.get("resources") if isinstance(it, dict) else getattr(it, "resources", None)) or {}
        limits = (res.get("limits") if isinstance(res, dict) else getattr(res, "limits", None)) or {}
        mem, cpu = _gib(limits.get("memory")), _cpu(limits.get("cpu"))
        out = [Finding(severity=Severity.info, message=f"instance type {self.instance_type} on {name}: "
                       f"{cpu if cpu is not None else '?'} CPU, {f'{mem:.1f}' if mem is not None else '?'} GiB "
                       f"for a requirement of {req.describe()}; " + "; ".join(req.reasons))]
        if mem is not None and mem < req.memory_gib:
            out.append(Finding(severity=Severity.error, message=f"instance type {self.instance_type} allows "
                               f"{mem:.1f} GiB but the model needs {req.memory_gib:.1f} GiB",
                               hint="name a larger instance type of the compute (instance_type)"))
        return out

    def check(self, changes: list[Change]) -> list[Finding]:
        return self.compute_findings()
