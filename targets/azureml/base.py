"""What the three Azure ML targets share: the client, assets, model copies, sizing and quota.

Subclasses (:mod:`.online`, :mod:`.aks`, :mod:`.batch`) add their endpoint and deployment
entities.  Every Azure call goes through :func:`targets.azureml.client.run_op` (operation-level
retries, azure-core keeps HTTP-level ones).  ``read()`` and ``check()`` never write; a model copy
that cannot work (missing model, no permission, wrong region) is reported there, before any write.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from orchestrator import sizing
from orchestrator.errors import TargetError
from orchestrator.plan import Change, spec_hash
from orchestrator.target import (
    TAG_MANIFEST,
    TAG_SPEC,
    TAG_TARGET,
    Finding,
    Observed,
    Resource,
    Severity,
    Target,
)
from targets.azureml import assets
from targets.azureml.client import (
    container_client,
    credential_for,
    describe,
    is_not_found,
    ml_client,
    run_op,
    session_of,
    status_of,
)
from targets.azureml.config import AzureMLConfig
from targets.azureml.spec import T_ENV, T_MODEL, Desired

TAG_SOURCE = "deployctl-source"
TAG_SHA = "deployctl-sha256"


class AzureMLTarget(Target):
    compute_kind: ClassVar[str] = "managed-online"  # sizing candidates
    reserve_fraction: ClassVar[float] = 0.0

    @property
    def cfg(self) -> AzureMLConfig:
        assert isinstance(self.config, AzureMLConfig)
        return self.config

    @cached_property
    def d(self) -> Desired:
        return Desired(self.manifest, self.cfg)

    # -- clients ---------------------------------------------------------------------------------
    @cached_property
    def session(self) -> Any:
        return session_of(self.ctx)

    @cached_property
    def ml(self) -> Any:
        return ml_client(self.session, self.cfg.subscription, self.cfg.resource_group, self.cfg.workspace)

    def op(self, what: str, fn: Any, resource: str | None = None) -> Any:
        return run_op(self.ctx, what, fn, resource=resource)

    def tags(self, spec: Mapping[str, Any], tags: Mapping[str, str]) -> dict[str, str]:
        return {**self.cfg.tags, **tags, **assets.spec_tags(spec)}

    # -- sizing ----------------------------------------------------------------------------------
    @cached_property
    def requirement(self) -> sizing.Requirement:
        r = self.manifest.resources
        workers = self.manifest.scoring.batch.max_concurrency if self.compute_kind == "amlcompute" else 1
        return sizing.requirement(model_bytes=self.d.model_bytes, cpu=r.cpu, memory_gib=r.memory_gb, gpu=r.gpu,
                                  requirement_lines=self.d.requirement_lines, workers=workers)

    @cached_property
    def sizing_choice(self) -> tuple[sizing.Sku, str, list[str]]:
        """(sku, why, warnings) — the named instance type checked, or the cheapest fitting one."""
        cat = sizing.load_catalog()
        try:
            if self.cfg.instance_type:
                sku, warnings = sizing.check_named(self.cfg.instance_type, self.requirement, cat, self.compute_kind)
                why = (f"{sku.name} named in the manifest ({sku.vcpus} vCPU, {sku.memory_gib:g} GiB, {sku.gpus} GPU) "
                       f"for a requirement of {self.requirement.describe()}")
                return sku, why, warnings
            mins = (cat.min_vcpus, cat.min_memory_gib) if self.compute_kind == "managed-online" else (0, 0.0)
            choice = sizing.choose(self.requirement, cat.candidates(self.compute_kind),
                                   min_vcpus=mins[0], min_memory_gib=mins[1])
            return choice.sku, choice.why, []
        except sizing.SizingError as e:
            raise self.fail(str(e), hint="set resources (memory_gb, cpu, gpu) or instance_type in the manifest") from e

    def sizing_findings(self) -> list[Finding]:
        sku, why, warnings = self.sizing_choice
        out = [Finding(severity=Severity.info, message=f"instance type {why}; "
                       + "; ".join(self.requirement.reasons))]
        out += [Finding(severity=Severity.warning, message=w) for w in warnings]
        return out

    def quota_findings(self, count: int, sku: sizing.Sku, already: int = 0) -> list[Finding]:
        """Cores this apply needs vs the quota left in the workspace's region (usages API)."""
        required = sizing.cores_required(count, sku.vcpus, reserve_fraction=self.reserve_fraction)
        if self.ctx.options.skip_quota_check:
            return [Finding(severity=Severity.warning, message=f"quota check skipped ({required} {sku.family} cores needed)")]
        usages = self.op("list quota usage", lambda: list(self.ml.compute.list_usage(location=self.location)))
        row = None
        for u in usages:
            name: Any = getattr(u, "name", None)  # Usage._from_rest_object leaves a dict here
            name = name.get("value") if isinstance(name, dict) else getattr(name, "value", name)
            if isinstance(name, str) and name.lower() == sku.family.lower():
                current = getattr(u, "current_value", None)
                if current is None and isinstance(getattr(u, "__dict__", None), dict):
                    current = u.__dict__.get("currentValue")
                row = sizing.Usage(sku.family, int(current or 0), int(u.limit or 0))
        if row is None:
            return [Finding(severity=Severity.warning, message=f"no quota row for {sku.family} in {self.location}")]
        short = sizing.quota_shortfall(required, row, already_held=already)
        if short:
            reserve = " (managed online reserves 20%: ceil(1.2 x instance_count) x vCPUs)" if self.reserve_fraction else ""
            return [Finding(severity=Severity.error,
                            message=f"quota: {sku.name} x {count} {short}{reserve}",
                            hint="request more quota for this VM family, pick a smaller instance_type or count, "
                                 "or pass --skip-quota-check")]
        return [Finding(severity=Severity.info, message=f"quota: {required} {sku.family} cores needed, "
                                                         f"{row.free} free of {row.limit}")]

    @cached_property
    def location(self) -> str:
        """The workspace's region; also the first read of every plan, so a wrong name or a
        denied subscription is reported plainly before anything else."""
        c = self.cfg
        try:
            ws = self.op("get workspace", lambda: self.ml.workspaces.get(c.workspace))
        except TargetError as e:
            cause = e.__cause__ if isinstance(e.__cause__, BaseException) else None
            if cause is not None and is_not_found(cause):
                raise self.fail(f"workspace {c.workspace!r} not found in resource group {c.resource_group!r} of "
                                f"subscription {c.subscription}", hint="check subscription, resource_group and "
                                "workspace in the manifest") from e
            if cause is not None and status_of(cause) in (401, 403):
                raise self.fail(f"no access to workspace {c.workspace!r} in subscription {c.subscription} "
                                f"({describe(cause)})", hint="grant this identity a role on the workspace (e.g. "
                                "AzureML Data Scientist), or log in with another account") from e
            raise
        return str(ws.location)

    # -- assets: read ----------------------------------------------------------------------------
    def _observed_asset(self, r: Resource, obj: Any) -> Observed | None:
        if obj is None:
            return None
        tags = dict(getattr(obj, "tags", None) or {})
        spec = assets.spec_from_tags(tags)
        source = r.spec.get("source")
        same_copy = bool(source) and (tags.get(TAG_SOURCE) == source or r.spec.get("copy") == "share")
        if same_copy:
            spec = dict(r.spec)  # a copy (or registry share) of the same source: reuse it
        shared = r.spec.get("copy") == "share"  # registry assets carry their first owner's tags
        if (spec.get("sha256") or same_copy) and spec == dict(r.spec) and (TAG_MANIFEST not in tags or shared):
            # identical content registered by someone else: immutable, so ours to use as is
            tags.update({TAG_MANIFEST: self.manifest.name, TAG_TARGET: self.config.name, TAG_SPEC: spec_hash(r.spec)})
        on_delete = (f"kept in registry {self.cfg.registry} (shared with other workspaces)" if shared
                     else "archived, not deleted (registered versions are history)")
        return Observed(r.type, r.name, spec, tags, key=self.asset_key(r), version=getattr(obj, "version", None),
                        on_delete=on_delete)

    def asset_key(self, r: Resource) -> str:
        return f"{self.cfg.subscription}/{self.cfg.resource_group}/{self.cfg.workspace}/{r.address}".lower()

    @cached_property
    def code_ops(self) -> Any:
        """CodeOperations: MLClient 1.35 has no public ``code`` property; this is the instance its
        own deployment code path uses (read, never patched)."""
        return getattr(self.ml, "code", None) or self.ml._code

    @cached_property
    def registry_ml(self) -> Any:
        """An MLClient on ``registry`` (constructing it discovers the registry's regional host:
        that is a request, through the session's transport like every other)."""
        return self.op(f"discover registry {self.cfg.registry}",
                       lambda: ml_client(self.session, self.cfg.subscription, registry=self.cfg.registry))

    def _get_asset(self, r: Resource) -> Any:
        name, version = r.name.split(":", 1)
        ops = {T_ENV: self.ml.environments, T_MODEL: self.ml.models}[r.type]
        if r.type == T_MODEL and r.spec.get("copy") == "share":
            ops = self.registry_ml.models
        try:
            obj = self.op(f"get {r.address}", lambda: ops.get(name=name, version=version), r.address)
        except TargetError as e:
            if isinstance(e.__cause__, BaseException) and is_not_found(e.__cause__):
                return None
            raise
        if not (r.type == T_MODEL and r.spec.get("copy") == "share"):
            # entities do not say whether a version is archived (destroyed); the active list does
            active = self.op(f"list {name}", lambda: [getattr(x, "version", None) for x in ops.list(name=name)])
            if version not in active:
                return None
        return obj

    def ensure_code(self) -> str:
        """Upload and register the code version when missing; its ``azureml:`` reference."""
        from azure.ai.ml.entities._assets._artifacts.code import Code  # not re-exported in 1.35

        name, version, sha = self.d.code_name, self.d.code_sha[:12], self.d.code_sha
        path = Desired.asset_path("code", sha)
        try:
            existing = self.op(f"get code {name}:{version}", lambda: self.code_ops.get(name=name, version=version))
        except TargetError as e:
            if not (isinstance(e.__cause__, BaseException) and is_not_found(e.__cause__)):
                raise
            existing = None
        if existing is not None and path in str(getattr(existing, "path", "")):
            self.ctx.progress(f"code {name}:{version}: already registered")
            return f"azureml:{name}:{version}"
        root = self.manifest.code.path
        self.op(f"upload code {version}", lambda: assets.upload_tree(self.container, root, path, sha,
                                                                   self.ctx.progress))
        entity = Code(name=name, version=version, path=assets.datastore_uri(self.datastore.name, path))
        self.op(f"register code {name}:{version}", lambda: self.code_ops.create_or_update(entity))
        return f"azureml:{name}:{version}"

    def read_assets(self, desired: list[Resource]) -> list[Observed]:
        self.location  # noqa: B018 - the workspace must exist and be readable: say so plainly
        ref = self.d.model_ref
        if ref is not None and ref.registry:
            self.check_registry_region(ref.registry)
        out = []
        for r in desired:
            if r.type in (T_ENV, T_MODEL):
                if r.type == T_MODEL and r.spec.get("copy"):
                    self.check_model_source()
                o = self._observed_asset(r, self._get_asset(r))
                if o:
                    out.append(o)
        return out

    # -- assets: write ---------------------------------------------------------------------------
    @cached_property
    def datastore(self) -> Any:
        return self.op("get default datastore", lambda: self.ml.datastores.get_default(include_secrets=True))

    @cached_property
    def container(self) -> Any:
        return container_client(self.session, self.datastore, self.session.get_credential(self.cfg.subscription))

    def create_asset(self, r: Resource, tags: Mapping[str, str]) -> None:
        from azure.ai.ml.entities import Environment, Model

        name, version = r.name.split(":", 1)
        all_tags = self.tags(r.spec, tags)
        if r.type == T_MODEL and r.spec.get("copy"):
            self.copy_model(r, all_tags)
            return
        if r.type == T_ENV:
            env = Environment(name=name, version=version, image=self.d.image, conda_file=self.d.conda, tags=all_tags)
            self.op(f"register {r.address}", lambda: self.ml.environments.create_or_update(env), r.address)
            return
        root = self.manifest.model.path
        assert root is not None
        folder = root.is_dir()
        # a folder's files go under <sha>/<folder>/; a single file is <sha>/<file> itself
        prefix = r.spec["path"] if folder else r.spec["path"].rsplit("/", 1)[0]
        self.op(f"upload {r.address}", lambda: assets.upload_tree(self.container, root, prefix,
                                                                   r.spec["sha256"], self.ctx.progress), r.address)
        uri = assets.datastore_uri(self.datastore.name, r.spec["path"], folder=folder)
        entity = Model(name=name, version=version, path=uri, type="custom_model", tags=all_tags,
                       description=f"deployctl: {self.manifest.name}")
        self.op(f"register {r.address}", lambda: self.ml.models.create_or_update(entity), r.address)

    def delete_asset(self, o: Observed) -> None:
        """Archive (registered versions are immutable history other deployments may use)."""
        name, version = o.name.split(":", 1)
        if o.type == T_MODEL and o.spec.get("copy") == "share":
            return  # registry assets are shared with other workspaces by design: never archived by one
        if o.type == T_MODEL:
            self.op(f"archive {o.address}", lambda: self.ml.models.archive(name=name, version=version), o.address)
        elif o.type == T_ENV:
            self.op(f"archive {o.address}", lambda: self.ml.environments.archive(name=name, version=version), o.address)
        # code versions cannot be archived; they are content-addressed and cost nothing to keep

    # -- model copies across workspaces / subscriptions ------------------------------------------
    @cached_property
    def source_ml(self) -> Any:
        ref = self.d.model_ref
        assert ref and ref.subscription
        src = self.cfg.model_source.credential if self.cfg.model_source else None
        cred = credential_for(self.session, ref.subscription, src)
        return ml_client(self.session, ref.subscription, ref.resource_group, ref.workspace, credential=cred)

    @cached_property
    def source_model(self) -> Any:
        """The source model, checked: exists, readable, usable from this workspace's region."""
        ref = self.d.model_ref
        assert ref
        try:
            return self.source_ml.models.get(name=ref.name, version=ref.version)
        except Exception as e:
            status = status_of(e)
            if status in (401, 403):
                raise self.fail(f"no permission to read model {ref.uri} ({describe(e)})",
                                hint=f"grant this identity AzureML Data Scientist (or Reader) on workspace "
                                     f"{ref.workspace} in subscription {ref.subscription}, or set "
                                     f"model_source.credential") from e
            if is_not_found(e):
                raise self.fail(f"model {ref.name} version {ref.version} not found in workspace {ref.workspace} "
                                f"(subscription {ref.subscription})", hint="check model.uri") from e
            raise self.fail(f"cannot read model {ref.uri}: {describe(e)}") from e

    def check_model_source(self) -> None:
        self.source_model  # noqa: B018 - raises a precise error when missing or forbidden
        if self.d.model_copy == "share":
            assert self.cfg.registry
            self.check_registry_region(self.cfg.registry)

    def check_registry_region(self, registry: str) -> None:
        """A registry serves only the regions it is replicated to."""
        try:
            rg = self.cfg.registry_resource_group or self.cfg.resource_group
            reg = self.op("get registry", lambda: ml_client(self.session, self.cfg.subscription, rg)
                          .registries.get(registry))
        except TargetError as e:
            cause = e.__cause__ if isinstance(e.__cause__, BaseException) else None
            if cause is not None and (is_not_found(cause) or status_of(cause) in (401, 403)):
                raise self.fail(f"registry {registry!r} not found or not readable ({describe(cause)})") from e
            raise
        regions = {str(getattr(r, "location", r)).lower().replace(" ", "")
                   for r in (getattr(reg, "replication_locations", None) or [])}
        here = self.location.lower().replace(" ", "")
        if regions and here not in regions:
            raise self.fail(f"registry {registry} is not replicated to {self.location} "
                            f"(it is in {', '.join(sorted(regions))})",
                            hint="add the region to the registry, or drop `registry` to copy the model instead")

    def copy_model(self, r: Resource, tags: dict[str, str]) -> None:
        from azure.ai.ml.entities import Model

        ref = self.d.model_ref
        assert ref
        src = self.source_model
        if r.spec.get("copy") == "share":
            self.share_model(r)
            return
        # copy: download from the source datastore, upload content-addressed, register here
        parsed = assets.parse_datastore_path(str(src.path))
        if parsed is None:
            raise self.fail(f"cannot copy model {ref.uri}: its path {src.path} is not on a datastore")
        ds_name, path = parsed
        src_ds = self.op("get source datastore", lambda: self.source_ml.datastores.get(ds_name, include_secrets=True))
        src_cred = credential_for(self.session, ref.subscription,
                                  self.cfg.model_source.credential if self.cfg.model_source else None)
        src_container = container_client(self.session, src_ds, src_cred)
        self.ctx.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="model-copy-", dir=self.ctx.state_dir))
        leaf = path.rstrip("/").rsplit("/", 1)[-1] or ref.name  # keeps AZUREML_MODEL_DIR/<name> as at the source
        try:
            n = self.op(f"download {ref.uri}", lambda: assets.download_tree(src_container, path, tmp / "files"))
            if not n:
                raise self.fail(f"model {ref.uri} has no files at {src.path}")
            from orchestrator.packaging import tree_digest

            files = list((tmp / "files").iterdir())
            single = len(files) == 1 and files[0].is_file() and files[0].name == leaf
            root = files[0] if single else tmp / "files"
            sha = tree_digest(root)
            dest = f"{Desired.asset_path('models', sha)}/{leaf}"
            prefix = dest.rsplit("/", 1)[0] if single else dest
            self.op(f"upload {r.address}", lambda: assets.upload_tree(self.container, root, prefix, sha,
                                                                       self.ctx.progress), r.address)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        model = Model(name=ref.name, version=ref.version,
                      path=assets.datastore_uri(self.datastore.name, dest, folder=not single),
                      type=getattr(src, "type", None) or "custom_model",
                      tags={**tags, TAG_SOURCE: ref.uri, TAG_SHA: sha},
                      description=f"copy of {ref.uri} (deployctl)")
        self.op(f"register {r.address}", lambda: self.ml.models.create_or_update(model), r.address)

    def share_model(self, r: Resource) -> None:
        """What azure-ai-ml's ``ModelOperations.share()`` does, through clients on the session's
        transport (``share()`` builds its registry client without it): read the source workspace's
        id and region, then ask the registry to import the workspace asset
        (``WorkspaceAssetReference``: POST ``.../registries/<r>/import`` on the registry's regional
        host, a long-running operation), under the same name and version.  The registry copies the
        files; the source credential is used, as ``share()`` uses the source workspace's client.
        Safe to retry: a version that an earlier attempt already imported is taken as done."""
        from azure.ai.ml.entities._assets.workspace_asset_reference import WorkspaceAssetReference

        ref = self.d.model_ref
        assert ref and ref.workspace and self.cfg.registry
        registry = self.cfg.registry
        self.ctx.progress(f"sharing {ref.uri} through registry {registry}")
        ws = self.op("get source workspace", lambda: self.source_ml.workspaces.get(ref.workspace))
        guid = getattr(ws, "_workspace_id", None)
        if not guid:
            raise self.fail(f"cannot share {ref.uri}: workspace {ref.workspace} did not report its id")
        # azure.ai.ml.constants._common.ASSET_ID_FORMAT, the id share() builds
        asset_id = f"azureml://locations/{ws.location}/workspaces/{guid}/models/{ref.name}/versions/{ref.version}"
        cred = credential_for(self.session, ref.subscription,
                              self.cfg.model_source.credential if self.cfg.model_source else None)
        reg = self.op(f"discover registry {registry}", lambda: ml_client(self.session, self.cfg.subscription,
                                                                        registry=registry, credential=cred))

        def share() -> Any:
            try:
                return reg.models.create_or_update(WorkspaceAssetReference(name=ref.name, version=ref.version,
                                                                           asset_id=asset_id))
            except Exception as e:
                if "already exists in registry" not in str(e):
                    raise
                return reg.models.get(name=ref.name, version=ref.version)  # an earlier attempt got through

        self.op(f"share {r.address}", share, r.address)

    # -- shared check ----------------------------------------------------------------------------
    def check(self, changes: list[Change]) -> list[Finding]:
        return self.sizing_findings()
