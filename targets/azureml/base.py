"""What the three Azure ML targets share: the workspace client, sizing and quota; assets and
model copies through collaborators.

:class:`AzureMLTarget` is an :class:`~orchestrator.azure.base.AzureTarget` (session, operation
runner with typed errors) plus the workspace: its ``MLClient``, its region, the instance type
chosen from the Azure ML catalog (:mod:`.catalog`) and the quota preflight.  Assets are the
:class:`~targets.azureml.store.AssetStore`'s (``self.store``), models that live elsewhere the
:class:`~targets.azureml.models.ModelSource`'s (``self.model_source``).  Subclasses
(:mod:`.online`, :mod:`.aks`, :mod:`.batch`) add their endpoint and deployment entities.
``read()`` and ``check()`` never write; a model copy that cannot work (missing model, no
permission, wrong region) is reported there, before any write.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator import sizing
from orchestrator.azure import budgets, quota
from orchestrator.azure.arm import provider_usages
from orchestrator.azure.base import AzureTarget
from orchestrator.azure.errors import AzureForbidden, AzureNotFound, describe
from orchestrator.azure.tags import spec_tags
from orchestrator.lazy import cached_property
from orchestrator.plan import Action, Change
from orchestrator.target import Finding, Observed, Resource, Severity
from targets.azureml import catalog
from targets.azureml.client import ml_client
from targets.azureml.config import AzureMLConfig
from targets.azureml.models import ModelSource
from targets.azureml.spec import Desired
from targets.azureml.store import AssetStore

if TYPE_CHECKING:  # imported where used: an invoke or a write never reads through it
    from targets.azureml.arm_read import WorkspaceReader

USAGES_API_VERSION = "2024-04-01"  # Microsoft.MachineLearningServices Usages_List, stable


class AzureMLTarget(AzureTarget):
    compute_kind: ClassVar[str] = "managed-online"  # sizing candidates
    reserve_fraction: ClassVar[float] = 0.0

    @property
    def cfg(self) -> AzureMLConfig:
        assert isinstance(self.config, AzureMLConfig)
        return self.config

    @cached_property
    def d(self) -> Desired:
        return Desired(self.manifest, self.cfg)

    @cached_property
    def ml(self) -> Any:
        return ml_client(self.session, self.cfg.subscription, self.cfg.resource_group, self.cfg.workspace)

    @cached_property
    def reader(self) -> WorkspaceReader:
        """Reads as plain ARM JSON: plan, status and a no-op apply never import azure-ai-ml."""
        from targets.azureml.arm_read import WorkspaceReader

        return WorkspaceReader(self.session, self.cfg.subscription, self.cfg.resource_group, self.cfg.workspace)

    @cached_property
    def store(self) -> AssetStore:
        return AssetStore(self)

    @cached_property
    def model_source(self) -> ModelSource:
        return ModelSource(self)

    def tags(self, spec: Mapping[str, Any], tags: Mapping[str, str]) -> dict[str, str]:
        return self.azure_tags(tags, spec_tags(spec))

    @cached_property
    def location(self) -> str:
        """The workspace's region; also the first read of every plan, so a wrong name or a
        denied subscription is reported plainly before anything else."""
        return str(self.workspace.location)

    @cached_property
    def workspace(self) -> Any:
        c = self.cfg
        try:
            return self.op("get workspace", lambda: self.reader.workspace())
        except AzureNotFound as e:
            raise self.fail(f"workspace {c.workspace!r} not found in resource group {c.resource_group!r} of "
                            f"subscription {c.subscription}", hint="check subscription, resource_group and "
                            "workspace in the manifest") from e
        except AzureForbidden as e:
            raise self.fail(f"no access to workspace {c.workspace!r} in subscription {c.subscription} "
                            f"({describe(e)})", hint="grant this identity a role on the workspace (e.g. "
                            "AzureML Data Scientist), or log in with another account") from e

    # -- deployctl's image as the environment (environment_image: deployctl) ---------------------------
    def image_registry(self) -> tuple[str, str, str]:
        """(name, subscription, resource group) of the registry deployctl's image goes to:
        ``image_registry``, or the workspace's own (which Azure ML already pulls from)."""
        c = self.cfg
        if c.image_registry:
            return c.image_registry.lower(), c.subscription, c.resource_group
        arm_id = str(getattr(self.workspace, "container_registry", None) or "")
        parts = arm_id.strip("/").split("/")
        if len(parts) < 8 or parts[-2].lower() != "registries":
            raise self.fail(f"workspace {c.workspace!r} has no container registry yet, so environment_image: deployctl "
                            "has nowhere to push", hint="set image_registry to an Azure Container Registry the "
                            "workspace's identity can pull from (AcrPull)")
        return parts[-1].lower(), parts[1], parts[3]

    def environment_image(self) -> str:
        """Build deployctl's image (the shared path of every container target) into the registry;
        the image by digest."""
        from orchestrator.images.choose import image_for

        name, sub, rg = self.image_registry()
        built = self.op("build and push the image", lambda: image_for(
            self.d.image_inputs, self.session, registry=name, subscription=sub, resource_group=rg,
            repository=f"deployctl/{self.manifest.name}", progress=self.ctx.progress))
        return str(built.image)

    # -- assets (the store's) ----------------------------------------------------------------------
    def read_assets(self, desired: list[Resource]) -> list[Observed]:
        return self.store.read(desired)

    def create_asset(self, r: Resource, tags: Mapping[str, str]) -> None:
        self.store.create(r, tags)

    def delete_asset(self, o: Observed) -> None:
        self.store.delete(o)

    def ensure_code(self) -> str:
        return self.store.ensure_code()

    # -- sizing ----------------------------------------------------------------------------------
    @cached_property
    def requirement(self) -> sizing.Requirement:
        r = self.manifest.resources
        workers = self.manifest.scoring.batch.max_concurrency if self.compute_kind == "amlcompute" else 1
        return sizing.requirement(model_bytes=self.d.model_bytes, cpu=r.cpu, memory_gib=r.memory_gb, gpu=r.gpu,
                                  requirement_lines=self.d.requirement_lines, workers=workers)

    @cached_property
    def sizing_choice(self) -> tuple[catalog.AzureMLSku, str, list[str]]:
        """(sku, why, warnings) — the named instance type checked, or the cheapest fitting one."""
        cat = catalog.load_catalog()
        try:
            if self.cfg.instance_type:
                sku, warnings = catalog.check_named(self.cfg.instance_type, self.requirement, cat, self.compute_kind)
                why = (f"{sku.name} named in the manifest ({sku.vcpus} vCPU, {sku.memory_gib:g} GiB, {sku.gpus} GPU) "
                       f"for a requirement of {self.requirement.describe()}")
                return sku, why, warnings
            mins = (cat.min_vcpus, cat.min_memory_gib) if self.compute_kind == "managed-online" else (0, 0.0)
            choice = sizing.choose(self.requirement, cat.candidates(self.compute_kind),
                                   min_vcpus=mins[0], min_memory_gib=mins[1])
            chosen = cat.get(choice.sku.name)
            assert chosen is not None
            return chosen, choice.why, []
        except sizing.SizingError as e:
            raise self.fail(str(e), hint="set resources (memory_gb, cpu, gpu) or instance_type in the manifest") from e

    def sizing_findings(self) -> list[Finding]:
        sku, why, warnings = self.sizing_choice
        out = [Finding(severity=Severity.info, message=f"instance type {why}; "
                       + "; ".join(self.requirement.reasons))]
        out += [Finding(severity=Severity.warning, message=w) for w in warnings]
        return out

    # -- quota -----------------------------------------------------------------------------------
    def usage(self, family: str) -> quota.Usage | None:
        """The workspace region's quota row for ``family`` (Azure ML usages API, through ARM)."""
        sub = self.cfg.subscription
        rows = self.op("list quota usage", lambda: provider_usages(
            self.session, self.session.get_credential(sub), sub, "Microsoft.MachineLearningServices", self.location,
            USAGES_API_VERSION))
        return quota.usage_of(rows, family)

    def quota_findings(self, count: int, sku: sizing.Sku, already: int = 0) -> list[Finding]:
        """Cores this apply needs vs the quota left in the workspace's region (usages API)."""
        required = quota.cores_required(count, sku.vcpus, reserve_fraction=self.reserve_fraction)
        if self.ctx.options.skip_quota_check:
            return [Finding(severity=Severity.warning, message=f"quota check skipped ({required} {sku.family} cores needed)")]
        row = self.usage(sku.family)
        if row is None:
            return [Finding(severity=Severity.warning, message=f"no quota row for {sku.family} in {self.location}")]
        short = quota.quota_shortfall(required, row, already_held=already)
        if short:
            reserve = " (managed online reserves 20%: ceil(1.2 x instance_count) x vCPUs)" if self.reserve_fraction else ""
            return [Finding(severity=Severity.error,
                            message=f"quota: {sku.name} x {count} {short}{reserve}",
                            hint="request more quota for this VM family, pick a smaller instance_type or count, "
                                 "or pass --skip-quota-check")]
        demand = quota.QuotaDemand(self.cfg.subscription, self.location, sku.family, required, already,
                                   row.current, row.limit)
        return [Finding(severity=Severity.info, message=f"quota: {required} {sku.family} cores needed, "
                                                         f"{row.free} free of {row.limit}", data=demand.as_data())]

    # -- shared check ----------------------------------------------------------------------------
    def check(self, changes: list[Change]) -> list[Finding]:
        writes = any(c.action is not Action.noop for c in changes)
        notes = [Finding(severity=Severity.info, message=budgets.notes())] if writes else []
        return self.sizing_findings() + notes + self.environment_findings(changes)

    def environment_findings(self, changes: list[Change]) -> list[Finding]:
        """Which path makes the environment (Azure ML's build or deployctl's image), when the plan writes."""
        if not any(c.action is not Action.noop for c in changes):
            return []
        out = [Finding(severity=Severity.info, message=self.d.environment_path)]
        if self.manifest.environment.dockerfile is not None and not self.d.builds_image:
            out.append(Finding(severity=Severity.warning, message="environment.dockerfile is not used by this target: "
                               "Azure ML builds its environment from the conda file",
                               hint="set environment_image: deployctl on the target to deploy the image built from "
                                    "your Dockerfile"))
        return out
