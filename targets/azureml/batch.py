"""``batch-endpoint``: a batch endpoint and a model batch deployment on an AmlCompute cluster.

Resources (see :mod:`.spec`): code, environment and model versions, the cluster (created and
sized when missing), the endpoint, one deployment per content version, and the endpoint's
default deployment.

``invoke`` uploads the input files content-addressed, then submits a job under a deterministic
name (``<endpoint>-<hash of deployment + inputs>``, or of ``idempotency_key``): when a job of
that name exists, it is followed instead of submitted again, so a retried or repeated submit
never starts a second job.  Outputs go to ``deployctl/batch-outputs/<job>/`` on the default
datastore and are downloaded to ``request.output`` when the job completes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from orchestrator.azure.budgets import ONCE, PROVISION
from orchestrator.azure.errors import AzureNotFound, describe, is_not_found
from orchestrator.errors import TargetError
from orchestrator.manifest.model import ScoringType
from orchestrator.packaging import tree_digest
from orchestrator.plan import Action, Change, digest
from orchestrator.target import (
    TAG_MANIFEST,
    TAG_SPEC,
    TAG_TARGET,
    Finding,
    InvokeRequest,
    InvokeResult,
    Observed,
    Resource,
)
from targets.azureml import assets
from targets.azureml.base import AzureMLTarget
from targets.azureml.config import BatchEndpointConfig
from targets.azureml.online import asset_ref
from targets.azureml.spec import T_COMPUTE, T_DEFAULT, T_DEPLOYMENT, T_ENDPOINT, T_ENV, T_MODEL

TAG_DEFAULT_SPEC = "deployctl-default-spec"
TERMINAL = ("Completed", "Failed", "Canceled", "NotResponding")


def job_name(endpoint: str, deployment: str, inputs_sha: str, idempotency_key: str | None = None) -> str:
    """Deterministic: same endpoint, deployment and input content (or key) -> same job."""
    return f"{endpoint}-{digest({'d': deployment, 'i': inputs_sha, 'k': idempotency_key}, 12)}"


class BatchEndpointTarget(AzureMLTarget):
    kind = "batch-endpoint"
    scoring_types = frozenset({ScoringType.batch})
    config_model = BatchEndpointConfig
    description = "Azure ML batch endpoint on an AmlCompute cluster"
    compute_kind: ClassVar[str] = "amlcompute"

    @property
    def bcfg(self) -> BatchEndpointConfig:
        assert isinstance(self.config, BatchEndpointConfig)
        return self.config

    def desired(self) -> list[Resource]:
        return self.d.batch(self.sizing_choice[0].name)

    # -- reading --------------------------------------------------------------------------------
    def _maybe(self, what: str, fn: Any) -> Any:
        try:
            return self.op(what, fn)
        except AzureNotFound:
            return None

    def read(self) -> list[Observed]:
        desired = self.desired()
        out = self.read_assets(desired)
        cl = self.bcfg.compute
        c = self._maybe("get compute", lambda: self.reader.compute(cl.name))
        if c is not None:
            out.append(Observed(T_COMPUTE, cl.name, {
                "size": getattr(c, "size", None), "min_instances": getattr(c, "min_instances", None),
                "max_instances": getattr(c, "max_instances", None),
                "idle_time_before_scale_down": getattr(c, "idle_time_before_scale_down", None)},
                dict(getattr(c, "tags", None) or {}), key=f"{self.d.ws_key}/compute/{cl.name}".lower()))
        ep = self._maybe("get endpoint", lambda: self.reader.batch_endpoint(self.d.endpoint))
        if ep is None:
            return out
        ep_tags = dict(ep.tags or {})
        ep_key = self.d.endpoint_key
        out.append(Observed(T_ENDPOINT, self.d.endpoint, {},
                            {k: v for k, v in ep_tags.items() if k != TAG_DEFAULT_SPEC}, key=ep_key))
        wanted = {r.name for r in desired if r.type == T_DEPLOYMENT}
        for x in self.op("list deployments", lambda: self.reader.batch_deployments(self.d.endpoint)):
            tags = dict(x.tags or {})
            name = f"{self.d.endpoint}/{x.name}"
            ours = tags.get(TAG_MANIFEST) == self.manifest.name and tags.get(TAG_TARGET) == self.config.name
            if ours or name in wanted:
                out.append(Observed(T_DEPLOYMENT, name, self._deployment_spec(x), tags, key=f"{ep_key}/{x.name}"))
        d_tags = {k: v for k, v in ep_tags.items() if k in (TAG_MANIFEST, TAG_TARGET)}
        if TAG_DEFAULT_SPEC in ep_tags:
            d_tags[TAG_SPEC] = ep_tags[TAG_DEFAULT_SPEC]
        default = (getattr(ep, "defaults", None) or {})
        default_name = default.get("deployment_name") if isinstance(default, dict) else getattr(default, "deployment_name", None)
        out.append(Observed(T_DEFAULT, self.d.endpoint, {"deployment": default_name}, d_tags, key=f"{ep_key}/default"))
        return out

    def _deployment_spec(self, x: Any) -> dict[str, Any]:
        s = getattr(x, "settings", None) or x
        rs = getattr(s, "retry_settings", None)
        res = getattr(x, "resources", None)
        cc = getattr(x, "code_configuration", None)
        compute = getattr(x, "compute", None)
        return {
            "model": asset_ref(x.model), "environment": asset_ref(x.environment),
            "code": asset_ref(getattr(cc, "code", None)), "scoring_script": getattr(cc, "scoring_script", None),
            "compute": str(compute).rstrip("/").split("/")[-1] if compute else None,
            "instance_count": getattr(res, "instance_count", None),
            "mini_batch_size": getattr(s, "mini_batch_size", None),
            "max_concurrency_per_instance": getattr(s, "max_concurrency_per_instance", None),
            "error_threshold": getattr(s, "error_threshold", None),
            "max_retries": getattr(rs, "max_retries", None), "timeout": getattr(rs, "timeout", None),
            "output_file_name": getattr(s, "output_file_name", None),
            "environment_variables": dict(getattr(s, "environment_variables", None) or {}),
        }

    def check(self, changes: list[Change]) -> list[Finding]:
        findings = super().check(changes)
        if any(c.type == T_COMPUTE and c.action is not Action.noop for c in changes):
            findings += self.quota_findings(self.bcfg.compute.max_nodes, self.sizing_choice[0])
        return findings

    # -- writing --------------------------------------------------------------------------------
    def create(self, resource: Resource, tags: Mapping[str, str]) -> None:
        r, t = resource, {**self.cfg.tags, **tags}
        if r.type in (T_ENV, T_MODEL):
            self.create_asset(r, tags)
        elif r.type == T_COMPUTE:
            from azure.ai.ml.entities import AmlCompute

            c = AmlCompute(name=r.name, size=r.spec["size"], min_instances=r.spec["min_instances"],
                           max_instances=r.spec["max_instances"],
                           idle_time_before_scale_down=r.spec["idle_time_before_scale_down"], tags=t)
            self.ctx.progress(f"cluster {r.name}: create or update ({r.spec['size']}, "
                              f"{r.spec['min_instances']}-{r.spec['max_instances']} nodes)")
            self.op(f"put compute {r.name}", lambda: self.ml.compute.begin_create_or_update(c).result(), r.address,
                    budget=PROVISION)
        elif r.type == T_ENDPOINT:
            self._put_endpoint(t)
        elif r.type == T_DEPLOYMENT:
            self._put_deployment(r, t)
        elif r.type == T_DEFAULT:
            self._set_default(r.spec["deployment"], tags[TAG_SPEC])
        else:
            raise self.fail(f"unknown resource type {r.type}")

    def _put_endpoint(self, tags: dict[str, str], default: str | None = None, default_spec: str | None = None) -> None:
        from azure.ai.ml.entities import BatchEndpoint

        def put() -> Any:
            existing = None
            try:
                existing = self.ml.batch_endpoints.get(self.d.endpoint)
            except Exception as e:
                if not is_not_found(e):
                    raise
            keep = dict(existing.tags or {}) if existing is not None else {}
            all_tags = {**keep, **tags}
            if default_spec:
                all_tags[TAG_DEFAULT_SPEC] = default_spec
            defaults = getattr(existing, "defaults", None) if existing is not None else None
            if default:
                defaults = {"deployment_name": default}
            ep = BatchEndpoint(name=self.d.endpoint, tags=all_tags, defaults=defaults)
            return self.ml.batch_endpoints.begin_create_or_update(ep).result()

        self.op(f"put endpoint {self.d.endpoint}", put, f"{T_ENDPOINT}/{self.d.endpoint}", budget=PROVISION)

    def _set_default(self, deployment: str, spec: str) -> None:
        self._put_endpoint({}, default=deployment, default_spec=spec)

    def _put_deployment(self, r: Resource, tags: dict[str, str]) -> None:
        from azure.ai.ml.entities import (
            BatchRetrySettings,
            CodeConfiguration,
            ModelBatchDeployment,
            ModelBatchDeploymentSettings,
            ResourceConfiguration,
        )

        self.ensure_code()  # content-addressed: only a changed code folder is uploaded
        s = r.spec
        name = r.name.split("/", 1)[1]
        dep = ModelBatchDeployment(
            name=name, endpoint_name=self.d.endpoint, model=s["model"], environment=s["environment"],
            code_configuration=CodeConfiguration(code=s["code"], scoring_script=s["scoring_script"]),
            compute=s["compute"], resources=ResourceConfiguration(instance_count=s["instance_count"]), tags=tags,
            settings=ModelBatchDeploymentSettings(
                mini_batch_size=s["mini_batch_size"],
                max_concurrency_per_instance=s["max_concurrency_per_instance"], output_action="append_row",
                output_file_name=s["output_file_name"], error_threshold=s["error_threshold"],
                retry_settings=BatchRetrySettings(max_retries=s["max_retries"], timeout=s["timeout"]),
                environment_variables=dict(s["environment_variables"])),
        )
        self.ctx.progress(f"batch deployment {name}: create or update")
        try:
            self.op(f"put deployment {name}",
                    lambda: self.ml.batch_deployments.begin_create_or_update(dep).result(), r.address,
                    budget=PROVISION)
        except TargetError as e:
            try:  # nothing half-made: a failed deployment is not the default, remove it
                self.ml.batch_deployments.begin_delete(name, self.d.endpoint).result()
            except Exception as de:
                if not is_not_found(de):
                    self.ctx.warn(f"could not remove failed deployment {name}: {describe(de)}")
            raise TargetError(f"batch deployment {name} failed to provision: {describe(e)}",
                              target=self.config.name, resource=r.address, operation="create") from e

    def delete(self, observed: Observed) -> None:
        o = observed
        if o.type in (T_ENV, T_MODEL):
            self.delete_asset(o)
            return
        if o.type == T_DEFAULT:
            return  # goes with the endpoint
        if o.type == T_DEPLOYMENT:
            ep = self._maybe("get endpoint", lambda: self.ml.batch_endpoints.get(self.d.endpoint))
            default = getattr(getattr(ep, "defaults", None), "deployment_name", None) if ep is not None else None
            if isinstance(getattr(ep, "defaults", None), dict):
                default = ep.defaults.get("deployment_name")
            if default == o.name.split("/", 1)[1]:
                return  # the service keeps an endpoint's default deployment: it goes with the endpoint
        ops = {
            T_DEPLOYMENT: lambda: self.ml.batch_deployments.begin_delete(o.name.split("/", 1)[1], self.d.endpoint).result(),
            T_ENDPOINT: lambda: self.ml.batch_endpoints.begin_delete(self.d.endpoint).result(),
            T_COMPUTE: lambda: self.ml.compute.begin_delete(o.name).result(),
        }
        try:
            self.op(f"delete {o.address}", ops[o.type], o.address, budget=PROVISION)
        except AzureNotFound:
            pass  # already gone

    # -- using ----------------------------------------------------------------------------------
    def outputs(self, observed: list[Observed]) -> dict[str, Any]:
        default = next((o.spec.get("deployment") for o in observed if o.type == T_DEFAULT), None)
        dep = next((o for o in observed if o.type == T_DEPLOYMENT and o.name.endswith(f"/{default}")), None)
        if not any(o.type == T_ENDPOINT for o in observed):
            return {}
        return {"endpoint": self.d.endpoint, "deployment": default, "model": dep.spec.get("model") if dep else None,
                "compute": self.bcfg.compute.name}

    def invoke(self, request: InvokeRequest) -> InvokeResult:
        from azure.ai.ml import Input, Output

        if not request.inputs and not request.request_id:
            raise self.fail("batch invoke needs input files or folders (inputs), or a job id (request_id)")
        deployment = request.deployment or self.d.deployment_for("")
        self.ctx.state_dir.mkdir(parents=True, exist_ok=True)
        if request.request_id:
            name = request.request_id
        else:
            with tempfile.TemporaryDirectory(dir=self.ctx.state_dir) as tmp:
                staged = Path(tmp)
                for p in request.inputs:  # hard links, not copies, where the file system allows
                    src = Path(p)
                    if not src.exists():
                        raise self.fail(f"input {src} does not exist")
                    for rel, f in ([(src.name, src)] if src.is_file() else
                                   [(f"{src.name}/{q.relative_to(src)}", q) for q in src.rglob("*") if q.is_file()]):
                        dest = staged / rel
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        try:
                            dest.hardlink_to(f)
                        except OSError:
                            dest.write_bytes(f.read_bytes())
                sha = tree_digest(staged)
                prefix = f"deployctl/batch-inputs/{sha}"
                self.op("upload inputs", lambda: assets.upload_tree(self.store.container, staged, prefix, sha, self.ctx.progress))
            name = job_name(self.d.endpoint, deployment, sha, request.idempotency_key)
            existing = self._maybe("get job", lambda: self.ml.jobs.get(name))
            if existing is None:
                ds = self.store.datastore.name
                inputs = {"input_data": Input(type="uri_folder", path=assets.datastore_uri(ds, prefix))}
                outputs = {"score": Output(type="uri_folder",
                                           path=assets.datastore_uri(ds, f"deployctl/batch-outputs/{name}"))}
                self.ctx.progress(f"submitting batch job {name}")
                self.op("submit job", lambda: self.ml.batch_endpoints.invoke(
                    endpoint_name=self.d.endpoint, deployment_name=deployment, inputs=inputs, outputs=outputs,
                    job_name=name), budget=ONCE)
            else:
                self.ctx.progress(f"batch job {name} already submitted: following it")
        if request.run_async:
            return InvokeResult(ok=True, request_id=name, state="Submitted")
        return self._follow(name, request)

    def _follow(self, name: str, request: InvokeRequest) -> InvokeResult:
        from orchestrator.retry import RetrySettings

        sleep, waited, delay = self.sleep, 0.0, 5.0
        limit = max(request.timeout_s, float(self.bcfg.job_timeout_s))
        while True:
            job = self.op("get job", lambda: self.ml.jobs.get(name))
            raw = getattr(job, "status", "") or ""
            status = str(getattr(raw, "value", raw))  # a JobStatus enum on azure-ai-ml 1.35
            if status in TERMINAL or waited >= limit or self.ctx.cancel.is_set():
                break
            sleep(delay)
            waited += delay
            delay = min(delay * 1.5, RetrySettings().max_wait)
        if status not in TERMINAL:
            return InvokeResult(ok=False, request_id=name, state=status or "Unknown",
                                details={"error": f"job still {status} after {waited:.0f}s"})
        out = None
        if status == "Completed" and request.output is not None:
            dest = Path(request.output)
            dest.mkdir(parents=True, exist_ok=True)
            n = self.op("download outputs", lambda: assets.download_tree(
                self.store.container, f"deployctl/batch-outputs/{name}", dest))
            out = str(dest)
            self.ctx.progress(f"downloaded {n} output file(s) to {dest}")
        err = getattr(getattr(job, "error", None), "message", None)
        return InvokeResult(ok=status == "Completed", request_id=name, state=status, output=out,
                            details={"error": err} if err else {})
