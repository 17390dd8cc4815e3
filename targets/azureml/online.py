"""``online-endpoint``: a managed online endpoint with blue/green deployments.

Resources (see :mod:`.spec`): code, environment and model versions, the endpoint, one
deployment per content version, and the traffic split.  Changing the model, code, environment
or instance type makes a new deployment beside the live one; the traffic change then runs the
safe rollout (:mod:`orchestrator.azure.rollout`): smoke test at 0% through the ``azureml-model-deployment``
header, optional mirroring, traffic steps with health checks, rollback on failure.  The old
deployment is deleted afterwards (a delete change in the same plan) unless
``rollout.keep_previous``.

A deployment whose provisioning fails is deleted again (it had no traffic) and reported with the
service's error and the last lines of its logs; it is not retried blindly.  409 "Updating" and
OperationCanceled are retried by :func:`orchestrator.azure.ops.run_op`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from orchestrator.azure import quota, rollout
from orchestrator.azure.budgets import PROVISION
from orchestrator.azure.errors import AzureNotFound, describe, error_code, is_not_found
from orchestrator.azure.ops import probe
from orchestrator.azure.scoring import score
from orchestrator.errors import TargetError
from orchestrator.lazy import cached_property
from orchestrator.manifest.model import ScoringType, TargetConfig
from orchestrator.plan import Action, Change
from orchestrator.target import (
    TAG_MANIFEST,
    TAG_SPEC,
    TAG_TARGET,
    Finding,
    InvokeRequest,
    InvokeResult,
    Observed,
    Resource,
    Severity,
)
from targets.azureml.base import AzureMLTarget
from targets.azureml.config import OnlineEndpointConfig
from targets.azureml.spec import T_DEPLOYMENT, T_ENDPOINT, T_ENV, T_MODEL, T_TRAFFIC

TAG_TRAFFIC_SPEC = "deployctl-traffic-spec"
TAG_PREVIOUS = "deployctl-previous"
LOG_LINES = 30


def asset_ref(value: Any) -> Any:
    """The service returns ARM ids; the spec uses ``azureml:<name>:<version>`` (or a registry URI)."""
    if not isinstance(value, str):
        return getattr(value, "id", value)
    v = value
    if v.startswith("/subscriptions/") and "/versions/" in v:
        parts = v.strip("/").split("/")
        return f"azureml:{parts[-3]}:{parts[-1]}"
    return v


class OnlineEndpointTarget(AzureMLTarget):
    kind = "online-endpoint"
    scoring_types = frozenset({ScoringType.real_time})
    config_model: ClassVar[type[TargetConfig]] = OnlineEndpointConfig
    description = "Azure ML managed online endpoint with blue/green rollout"
    compute_kind: ClassVar[str] = "managed-online"
    reserve_fraction: ClassVar[float] = 0.2

    @property
    def ocfg(self) -> OnlineEndpointConfig:
        assert isinstance(self.config, OnlineEndpointConfig)
        return self.config

    # -- entities (overridden by aks) ----------------------------------------------------------
    @property
    def instance_type(self) -> str:
        return self.sizing_choice[0].name

    def endpoint_entity(self, spec: Mapping[str, Any], tags: dict[str, str]) -> Any:
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        return ManagedOnlineEndpoint(name=self.d.endpoint, auth_mode=spec["auth_mode"], tags=tags)

    @staticmethod
    def code_configuration(spec: Mapping[str, Any]) -> Any:
        """The deployment's code, or None when it is in the environment's image (``environment_image:
        deployctl``: the image's own runtime serves it through the inference config's routes)."""
        from azure.ai.ml.entities import CodeConfiguration

        return CodeConfiguration(code=spec["code"], scoring_script=spec["scoring_script"]) if spec["code"] else None

    def deployment_entity(self, name: str, spec: Mapping[str, Any], tags: dict[str, str]) -> Any:
        from azure.ai.ml.entities import ManagedOnlineDeployment, OnlineRequestSettings

        return ManagedOnlineDeployment(
            name=name, endpoint_name=self.d.endpoint, model=spec["model"], environment=spec["environment"],
            code_configuration=self.code_configuration(spec),
            instance_type=spec["instance_type"], instance_count=spec["instance_count"],
            environment_variables=dict(spec["environment_variables"]), tags=tags,
            request_settings=OnlineRequestSettings(
                max_concurrent_requests_per_instance=spec["max_concurrent_requests_per_instance"],
                request_timeout_ms=spec["request_timeout_ms"]),
        )

    def endpoint_spec(self, ep: Any) -> dict[str, Any]:
        return {"auth_mode": ep.auth_mode}

    # -- planning -------------------------------------------------------------------------------
    def desired(self) -> list[Resource]:
        return self.d.online(self.instance_type)

    def _get_endpoint(self) -> Any:
        try:
            return self.op("get endpoint", lambda: self.ml.online_endpoints.get(self.d.endpoint),
                           f"{T_ENDPOINT}/{self.d.endpoint}")
        except AzureNotFound:
            return None

    def deployment_spec(self, dep: Any) -> dict[str, Any]:
        rs = getattr(dep, "request_settings", None)
        cc = getattr(dep, "code_configuration", None)
        scale = getattr(dep, "instance_count", None)
        return {
            "model": asset_ref(dep.model), "environment": asset_ref(dep.environment),
            "code": asset_ref(getattr(cc, "code", None)), "scoring_script": getattr(cc, "scoring_script", None),
            "instance_type": dep.instance_type, "instance_count": scale,
            "environment_variables": dict(dep.environment_variables or {}),
            "max_concurrent_requests_per_instance": getattr(rs, "max_concurrent_requests_per_instance", None),
            "request_timeout_ms": getattr(rs, "request_timeout_ms", None),
        }

    def _read_endpoint(self) -> Any:
        """The endpoint as plain ARM JSON (:mod:`.arm_read`: no azure-ai-ml import), or None."""
        try:
            return self.op("get endpoint", lambda: self.reader.online_endpoint(self.d.endpoint),
                           f"{T_ENDPOINT}/{self.d.endpoint}")
        except AzureNotFound:
            return None

    def read(self) -> list[Observed]:
        desired = self.desired()
        out = self.read_assets(desired)
        ep = self._read_endpoint()
        if ep is None:
            return out
        ep_tags = dict(ep.tags or {})
        ep_key = self.d.endpoint_key
        out.append(Observed(T_ENDPOINT, self.d.endpoint, self.endpoint_spec(ep),
                            {k: v for k, v in ep_tags.items() if k not in (TAG_TRAFFIC_SPEC, TAG_PREVIOUS)},
                            key=ep_key, version=getattr(ep, "provisioning_state", None)))
        traffic = {k: int(v) for k, v in (ep.traffic or {}).items() if int(v)}
        deps = self.op("list deployments", lambda: list(self._list_deployments()))
        wanted = {r.name for r in desired if r.type == T_DEPLOYMENT}
        ours = [x for x in deps if (x.tags or {}).get(TAG_MANIFEST) == self.manifest.name
                and (x.tags or {}).get(TAG_TARGET) == self.config.name]
        live_old = {x.name for x in ours if f"{self.d.endpoint}/{x.name}" not in wanted and traffic.get(x.name)}
        for x in deps:
            addr_name = f"{self.d.endpoint}/{x.name}"
            if x not in ours and addr_name not in wanted:
                continue
            if self.ocfg.rollout.keep_previous and addr_name not in wanted:
                # the live one becomes "previous" after this rollout; an older previous goes
                if x.name in live_old or (not live_old and x.name == ep_tags.get(TAG_PREVIOUS)):
                    continue
            out.append(Observed(T_DEPLOYMENT, addr_name, self.deployment_spec(x), dict(x.tags or {}),
                                key=f"{ep_key}/{x.name}", version=getattr(x, "provisioning_state", None)))
        t_tags = {k: v for k, v in ep_tags.items() if k in (TAG_MANIFEST, TAG_TARGET)}
        if TAG_TRAFFIC_SPEC in ep_tags:
            t_tags[TAG_SPEC] = ep_tags[TAG_TRAFFIC_SPEC]
        mirror = {k: int(v) for k, v in (getattr(ep, "mirror_traffic", None) or {}).items() if int(v)}
        out.append(Observed(T_TRAFFIC, self.d.endpoint, {"traffic": traffic, "mirror_traffic": mirror}, t_tags,
                            key=f"{ep_key}/traffic"))
        return out

    def _list_deployments(self) -> Any:
        return self.reader.online_deployments(self.d.endpoint)

    def check(self, changes: list[Change]) -> list[Finding]:
        findings = super().check(changes)
        dep = next((c for c in changes if c.type == T_DEPLOYMENT and c.action in (Action.create, Action.update)), None)
        if dep is not None:
            sku = self.sizing_choice[0]
            count = int(dep.spec.get("instance_count", self.cfg.instance_count))
            # an in-place update gives back what the deployment already holds; a new (blue/green)
            # deployment comes beside the live one, whose cores stay in use during the rollout
            before = next((d.before for d in dep.diff if d.path == "instance_count"), None)
            held = 0
            if dep.action is Action.update:
                held = quota.cores_required(int(before if before is not None else count), sku.vcpus,
                                      reserve_fraction=self.reserve_fraction)
            findings += self.quota_findings(count, sku, already=held)
        if self.manifest.scoring.sample_request is None:
            findings.append(Finding(severity=Severity.warning, message="no scoring.sample_request: a new deployment "
                                    "takes traffic without a smoke test or health checks"))
        return findings

    # -- writing --------------------------------------------------------------------------------
    def create(self, resource: Resource, tags: Mapping[str, str]) -> None:
        if resource.type in (T_ENV, T_MODEL):
            self.create_asset(resource, tags)
        elif resource.type == T_ENDPOINT:
            self._put_endpoint(resource, tags)
        elif resource.type == T_DEPLOYMENT:
            self._put_deployment(resource, tags)
        elif resource.type == T_TRAFFIC:
            self._rollout(resource, tags)
        else:
            raise self.fail(f"unknown resource type {resource.type}")

    def _put_endpoint(self, r: Resource, tags: Mapping[str, str]) -> None:
        existing = self._get_endpoint()
        keep = {k: v for k, v in (existing.tags or {}).items() if k in (TAG_TRAFFIC_SPEC, TAG_PREVIOUS)} if existing else {}
        ep = self.endpoint_entity(r.spec, {**self.cfg.tags, **keep, **tags})
        if existing is not None:  # an endpoint PUT must not reset the live split
            ep.traffic = existing.traffic
            ep.mirror_traffic = getattr(existing, "mirror_traffic", None)
        self.ctx.progress(f"endpoint {self.d.endpoint}: create or update")
        self.op(f"put endpoint {self.d.endpoint}",
                lambda: self.ml.online_endpoints.begin_create_or_update(ep).result(), r.address,
                budget=PROVISION)

    def _put_deployment(self, r: Resource, tags: Mapping[str, str]) -> None:
        if r.spec["code"]:
            self.ensure_code()  # content-addressed: only a changed code folder is uploaded
        name = r.name.split("/", 1)[1]
        dep = self.deployment_entity(name, r.spec, {**self.cfg.tags, **tags})
        self.ctx.progress(f"deployment {name}: create or update (this takes minutes on Azure)")
        try:
            self.op(f"put deployment {name}", lambda: self.ml.online_deployments.begin_create_or_update(
                dep, skip_script_validation=True).result(), r.address, budget=PROVISION)
        except TargetError as e:
            raise self._provisioning_failed(name, r, e) from e

    def _provisioning_failed(self, name: str, r: Resource, e: TargetError) -> TargetError:
        """The service's error plus the container's last log lines; the failed deployment (at 0%
        traffic) is removed so nothing half-made stays behind."""
        logs = ""
        try:
            logs = self.ml.online_deployments.get_logs(name, self.d.endpoint, LOG_LINES)
        except Exception as le:  # logs are best effort: the deployment may not have started
            logs = f"(no logs: {describe(le)})"
        try:
            self.ml.online_deployments.begin_delete(name, self.d.endpoint).result()
        except Exception as de:
            if not is_not_found(de):
                self.ctx.warn(f"could not remove failed deployment {name}: {describe(de)}")
        code = error_code(e) or ""
        hint = ("check init() and the model path in the logs below (AZUREML_MODEL_DIR)"
                if code in ("ResourceNotReady", "") else None)
        tail = "\n".join(str(logs).splitlines()[-LOG_LINES:])
        return TargetError(f"deployment {name} failed to provision: {describe(e)}\n--- last log lines ---\n{tail}",
                           target=self.config.name, resource=r.address, operation="create", hint=hint)

    def _set_traffic(self, split: dict[str, int], mirror: dict[str, int], extra_tags: dict[str, str] | None = None) -> None:
        def put() -> Any:
            ep = self.ml.online_endpoints.get(self.d.endpoint)
            ep.traffic = {**{k: 0 for k in (ep.traffic or {})}, **split}
            ep.mirror_traffic = {**{k: 0 for k in (getattr(ep, "mirror_traffic", None) or {})}, **mirror}
            if extra_tags:
                ep.tags = {**(ep.tags or {}), **extra_tags}
            return self.ml.online_endpoints.begin_create_or_update(ep).result()

        self.op(f"set traffic {split}", put, f"{T_TRAFFIC}/{self.d.endpoint}", budget=PROVISION)

    @cached_property
    def _key(self) -> str | None:
        value = self.op("get keys", lambda: self.reader.endpoint_secret(self.d.endpoint))
        if value:
            self.ctx.secret(value)
        return value

    def _scoring_uri(self) -> str:
        ep = self.op("get endpoint", lambda: self.reader.online_endpoint(self.d.endpoint))
        return str(ep.scoring_uri)

    def _sample(self) -> Any:
        p = self.manifest.scoring.sample_request
        return p.read_bytes() if p else None

    def _probe(self, deployment: str | None, smoke: bool = False) -> str | None:
        body = self._sample()
        if body is None:
            return None
        started, seen = time.monotonic(), []

        def request() -> tuple[int, Any]:
            status, resp, _ = score(self.session, self._scoring_uri(), self._key, body, deployment=deployment)
            seen.append(status)
            return status, resp

        why = probe(self.ctx, f"smoke test of {deployment}" if deployment else "health check", request)
        if smoke:  # the apply report shows it, as for every kind
            self.ctx.smoke_tested(why is None, status=seen[-1] if seen else None,
                                  latency_ms=1000 * (time.monotonic() - started), detail=why or "")
        return why

    def _smoke(self, name: str) -> str | None:
        dep = self.op("get deployment", lambda: self.ml.online_deployments.get(name, self.d.endpoint))
        state = getattr(dep, "provisioning_state", None)
        if state and state != "Succeeded":
            self.ctx.smoke_tested(False, status=state, detail=f"deployment {name} is {state}")
            return f"deployment {name} is {state}"
        return self._probe(name, smoke=True)

    def _rollout(self, r: Resource, tags: Mapping[str, str]) -> None:
        new = next(iter(r.spec["traffic"]))
        ep = self.op("get endpoint", lambda: self.ml.online_endpoints.get(self.d.endpoint))
        live = {k: int(v) for k, v in (ep.traffic or {}).items() if int(v)}
        ro = self.ocfg.rollout
        final_tags = {TAG_TRAFFIC_SPEC: tags[TAG_SPEC]}
        previous = max(((v, k) for k, v in live.items() if k != new), default=(0, ""))[1]
        if ro.keep_previous and previous:
            final_tags[TAG_PREVIOUS] = previous
        if live.get(new) == 100:  # already live: only the mirror/tags are out of date
            self._set_traffic(dict(r.spec["traffic"]), dict(r.spec["mirror_traffic"]), final_tags)
            return
        steps = ro.steps

        def set_traffic(split: dict[str, int], mirror: dict[str, int]) -> None:
            self._set_traffic(split, mirror, final_tags if split.get(new) == 100 else None)

        def health(_split: dict[str, int]) -> str | None:
            for _ in range(ro.health_checks):
                why = self._probe(None)
                if why:
                    return why
            return None

        try:
            rollout.run_rollout(live=live, new=new, steps=steps, set_traffic=set_traffic,
                                smoke_test=lambda: self._smoke(new), health_check=health,
                                mirror_percent=ro.mirror_percent, progress=self.ctx.progress)
        except rollout.RolloutFailed as e:
            raise TargetError(f"rollout of {new} failed at {e}; traffic is back on {live or 'nothing'}",
                              target=self.config.name, resource=r.address, operation="rollout",
                              hint="see `deployctl logs` for the new deployment; it stays at 0% for inspection") from e

    def delete(self, observed: Observed) -> None:
        if observed.type in (T_ENV, T_MODEL):
            self.delete_asset(observed)
            return
        if observed.type == T_TRAFFIC:
            # destroy: take all traffic off so the deployments can be deleted before the endpoint
            try:
                self._set_traffic({}, {})
            except AzureNotFound:
                pass  # already gone
            return
        try:
            if observed.type == T_DEPLOYMENT:
                name = observed.name.split("/", 1)[1]
                self.op(f"delete deployment {name}", lambda: self.ml.online_deployments.begin_delete(
                    name, self.d.endpoint).result(), observed.address, budget=PROVISION)
            elif observed.type == T_ENDPOINT:
                self._invoke_cache.unlink(missing_ok=True)  # its key and URI go with it
                self.op(f"delete endpoint {self.d.endpoint}",
                        lambda: self.ml.online_endpoints.begin_delete(self.d.endpoint).result(), observed.address,
                        budget=PROVISION)
        except AzureNotFound:
            pass  # already gone

    # -- using ----------------------------------------------------------------------------------
    def outputs(self, observed: list[Observed]) -> dict[str, Any]:
        ep = next((o for o in observed if o.type == T_ENDPOINT), None)
        if ep is None:
            return {}
        traffic: dict[str, int] = next((dict(o.spec.get("traffic") or {}) for o in observed if o.type == T_TRAFFIC), {})
        live = max(traffic, key=lambda k: traffic[k]) if traffic else None
        dep = next((o for o in observed if o.type == T_DEPLOYMENT and o.name.endswith(f"/{live}")), None)
        return {"endpoint": self.d.endpoint, "scoring_uri": self._scoring_uri(), "deployment": live,
                "model": dep.spec.get("model") if dep else None, "traffic": traffic}

    def secrets(self, observed: list[Observed]) -> dict[str, str]:
        if not any(o.type == T_ENDPOINT for o in observed):
            return {}
        key = self._key
        return {"key": key} if key else {}

    @property
    def _invoke_cache(self) -> Path:
        return self.ctx.state_dir / "scoring.json"

    def _cached_scoring(self) -> tuple[str, str] | None:
        """(scoring URI, key) remembered from an earlier invoke of this endpoint, so an invoke is one
        request (no Azure ML client, no ARM round trips).  Key auth only: tokens expire."""
        if self.ocfg.auth_mode != "key":
            return None
        from orchestrator.state import read_json

        c = read_json(self._invoke_cache) or {}
        if c.get("endpoint") != self._endpoint_id or not c.get("scoring_uri") or not c.get("key"):
            return None
        self.ctx.secret(c["key"])
        return str(c["scoring_uri"]), str(c["key"])

    @property
    def _endpoint_id(self) -> str:
        return f"{self.cfg.subscription}/{self.cfg.resource_group}/{self.cfg.workspace}/{self.d.endpoint}".lower()

    def invoke(self, request: InvokeRequest) -> InvokeResult:
        body = request.body if request.body is not None else self._sample()
        if body is None:
            raise self.fail("nothing to send: give a request body or scoring.sample_request")
        cached = self._cached_scoring()
        if cached is not None:
            status, resp, headers = score(self.session, cached[0], cached[1], body, deployment=request.deployment,
                                          timeout_s=request.timeout_s)
            if status not in (401, 403, 404):  # else: a rotated key or a re-created endpoint: look again
                return self._invoked(status, resp, headers, request)
        uri, key = self._scoring_uri(), self._key
        if key and self.ocfg.auth_mode == "key":
            import os

            from orchestrator.state import write_json

            write_json(self._invoke_cache, {"endpoint": self._endpoint_id, "scoring_uri": uri, "key": key})
            os.chmod(self._invoke_cache, 0o600)
        status, resp, headers = score(self.session, uri, key, body, deployment=request.deployment,
                                      timeout_s=request.timeout_s)
        return self._invoked(status, resp, headers, request)

    @staticmethod
    def _invoked(status: int, resp: Any, headers: dict[str, str], request: InvokeRequest) -> InvokeResult:
        return InvokeResult(ok=200 <= status < 300, status_code=status, body=resp,
                            request_id=headers.get("x-request-id") or headers.get("x-ms-request-id"),
                            details={"deployment": headers.get("azureml-model-deployment", request.deployment)})

    def logs(self, tail: int = 100, deployment: str | None = None) -> str:
        name = deployment or self.d.deployment_for(self.instance_type)
        return str(self.op("get logs", lambda: self.ml.online_deployments.get_logs(name, self.d.endpoint, tail)))
