"""Manifest settings of the ``app-service`` target and its plan choice (pure: no Azure imports).

Only ``subscription``, ``resource_group`` and ``region`` are required.  ``run: image`` (the
default) pushes to ``registry`` and pulls with ``identity`` when they are named; otherwise
deployctl makes (and owns) a registry, a user-assigned identity and its AcrPull role assignment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from orchestrator.manifest.model import TargetConfig
from targets.aci.config import RegistryRef

_GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
DEFAULT_START_LIMIT_S, MAX_START_LIMIT_S = 230, 1800  # App Service's default and ceiling


@dataclass(frozen=True)
class PlanSku:
    name: str
    tier: str
    vcpus: int
    memory_gib: float
    usd_month: float  # Linux list price, for ordering only
    slots: int  # deployment slots the tier allows besides production


# App Service Linux plans deployctl chooses from (Microsoft's published sizes, 2026-12).
SKUS = (
    PlanSku("B1", "Basic", 1, 1.75, 13.14, 0), PlanSku("B2", "Basic", 2, 3.5, 25.55, 0),
    PlanSku("B3", "Basic", 4, 7.0, 51.10, 0),
    PlanSku("S1", "Standard", 1, 1.75, 69.35, 5), PlanSku("S2", "Standard", 2, 3.5, 138.70, 5),
    PlanSku("S3", "Standard", 4, 7.0, 277.40, 5),
    PlanSku("P0v3", "PremiumV3", 1, 4.0, 62.05, 20), PlanSku("P1v3", "PremiumV3", 2, 8.0, 124.10, 20),
    PlanSku("P2v3", "PremiumV3", 4, 16.0, 248.20, 20), PlanSku("P3v3", "PremiumV3", 8, 32.0, 496.40, 20),
)
BY_NAME = {s.name: s for s in SKUS}
SkuName = Literal["B1", "B2", "B3", "S1", "S2", "S3", "P0v3", "P1v3", "P2v3", "P3v3"]


class AppServiceConfig(TargetConfig):
    """``app-service``: an App Service Linux web app serving the model through deployctl's runtime."""

    kind: Literal["app-service"] = "app-service"
    subscription: str = Field(description="Azure subscription id.", pattern=_GUID)
    resource_group: str = Field(description="Resource group (must exist).", min_length=1, max_length=90)
    region: str = Field(description="Azure region, e.g. westeurope.", pattern=r"^[a-z0-9]+$")
    app_name: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9-]{0,57}[a-z0-9]$",
                                 description="Web app name (globally unique); default: <manifest>-<target>.")
    run: Literal["image", "package"] = Field(
        "image", description="image: deployctl's image by digest (linuxFxVersion DOCKER|...), pulled with a managed "
        "identity; package: code and packages built here by uv for the platform, run from a zip package with the "
        "runtime as startup command (no remote Oryx build).")
    registry: str | RegistryRef | None = Field(
        None, description="run: image — the Azure Container Registry the image is pushed to and pulled from; "
        "default: one deployctl makes and owns for this target (Basic).")
    identity: str | None = Field(
        None, pattern=r"^/subscriptions/.+/providers/Microsoft\.ManagedIdentity/userAssignedIdentities/[^/]+$",
        description="run: image — user-assigned managed identity (ARM id) the app pulls with "
        "(acrUseManagedIdentityCreds); with a named `registry` it must already hold AcrPull there. Default: one "
        "deployctl makes and owns (<app>-pull), with an AcrPull role assignment on the registry. Admin credentials "
        "are never used.")
    sku: SkuName | None = Field(None, description="Plan size; default: the cheapest that fits the model (with "
                                                  "slots unless staging_slot: false).")
    staging_slot: bool | None = Field(
        None, description="Blue/green through a staging slot (Standard and Premium tiers); default: when the tier "
        "allows it. false: replace in place, with the previous version restored on failure.")
    port: int = Field(8000, ge=1, le=65535, description="Port the app listens on (PORT) and App Service pings "
                                                        "(WEBSITES_PORT).")
    startup_command: str | None = Field(
        None, description="run: package — the startup command; default: python -m deployctl_runtime.container "
        "(deployctl's runtime on $PORT).")
    health_check_path: str = Field("/", pattern=r"^/", description="Health check path (unhealthy instances leave "
                                                                   "the rotation).")
    always_on: bool = Field(True, description="Keep the app loaded (no cold start after idling).")
    start_time_limit_s: int | None = Field(
        None, ge=60, le=MAX_START_LIMIT_S, description="WEBSITES_CONTAINER_START_TIME_LIMIT; default: from the "
        "model's measured init() time (or its size before the first measurement), at least 230 s.")
    workers: int = Field(1, ge=1, le=32, description="Scoring worker processes per instance (WORKER_COUNT).")
    app_settings: dict[str, str] = Field(default_factory=dict, description="Extra app settings.")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags on every resource.")


@dataclass(frozen=True)
class PlanChoice:
    sku: PlanSku
    slot: bool
    why: str


def choose_plan(cfg: AppServiceConfig, need_gib: float, need_cpu: float, *, reasons: str = "") -> PlanChoice:
    """The plan: the one named, or the cheapest that holds ``need_gib`` and ``need_cpu`` (with slots
    unless ``staging_slot: false``); ValueError naming the conflict otherwise."""
    basis = f"the model needs {need_gib:.2f} GiB and {need_cpu:g} vCPU" + (f" ({reasons})" if reasons else "")
    if cfg.sku is not None:
        sku = BY_NAME[cfg.sku]
        if cfg.staging_slot and not sku.slots:
            raise ValueError(f"staging_slot: true, but the {sku.tier} tier ({sku.name}) has no deployment slots: "
                             "use a Standard or Premium plan (S1..S3, P0v3..P3v3), or staging_slot: false")
        if sku.memory_gib < need_gib or sku.vcpus < need_cpu:
            raise ValueError(f"{basis}, over the {sku.memory_gib:g} GiB / {sku.vcpus} vCPU of {sku.name}")
        slot = bool(sku.slots) if cfg.staging_slot is None else cfg.staging_slot
        return PlanChoice(sku, slot, f"{sku.name} named in the manifest; {basis}")
    want_slots = cfg.staging_slot is not False
    fits = sorted((s for s in SKUS if s.memory_gib >= need_gib and s.vcpus >= math.ceil(need_cpu - 1e-9)
                   and (s.slots or not want_slots)), key=lambda s: s.usd_month)
    if not fits:
        raise ValueError(f"{basis}, over the largest App Service plan (P3v3, 32 GiB, 8 vCPU): use an Azure ML target")
    sku = fits[0]
    return PlanChoice(sku, want_slots, f"{sku.name} ({sku.memory_gib:g} GiB, {sku.vcpus} vCPU), the cheapest that "
                      f"fits{' with deployment slots' if want_slots else ''}; {basis}")


def start_time_limit(cfg: AppServiceConfig, measured_init_s: float | None, model_bytes: int) -> tuple[int, str]:
    """WEBSITES_CONTAINER_START_TIME_LIMIT and why: the setting, else 3x the longest init() the
    runtime measured (plus a minute for the pull and the imports), else an estimate of one minute
    per GiB of model; whole minutes within 230..1800 s."""
    if cfg.start_time_limit_s is not None:
        return cfg.start_time_limit_s, "named in the manifest"
    if measured_init_s is not None:
        raw, why = 60 + 3 * measured_init_s, f"3 x the measured init() of {measured_init_s:.1f} s + 60 s"
    else:
        gib = model_bytes / 2**30
        raw, why = 120 + 60 * gib, f"estimated from the model's {gib:.2f} GiB (no start measured yet)"
    # whole minutes: small differences between measurements do not change the app's settings
    return max(DEFAULT_START_LIMIT_S, min(MAX_START_LIMIT_S, 60 * math.ceil(raw / 60))), why
