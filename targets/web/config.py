"""Manifest settings of the ``functions`` target, and its hosting choice (pure: no Azure imports).

Only ``subscription``, ``resource_group`` and ``region`` are required; names, hosting and sizes
have defaults derived from the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from orchestrator.manifest.model import TargetConfig

_GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
LINUX_CONSUMPTION_RETIRED = (
    "Linux Consumption (Y1) is retiring on 2028-09-30 and takes no new apps here: use hosting: flex "
    "(Flex Consumption, the default) or hosting: premium")
FLEX_MEMORY_MB = (512, 2048, 4096)  # Flex Consumption instance sizes
PREMIUM_GIB = {"EP1": 3.5, "EP2": 7.0, "EP3": 14.0}  # Elastic Premium plans, memory per instance


class FunctionsConfig(TargetConfig):
    """``functions``: an Azure Functions app (Python v2 model) around the unmodified score.py."""

    kind: Literal["functions"] = "functions"
    subscription: str = Field(description="Azure subscription id.", pattern=_GUID)
    resource_group: str = Field(description="Resource group (created when missing).", min_length=1, max_length=90)
    region: str = Field(description="Azure region, e.g. eastus.", pattern=r"^[a-z0-9]+$")
    app_name: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9-]{0,58}[a-z0-9]$",
                                 description="Function app name (globally unique); default: <manifest>-<target>.")
    storage_account: str | None = Field(None, pattern=r"^[a-z0-9]{3,24}$",
                                        description="Storage account (host, queues, packages); default: derived.")
    hosting: Literal["auto", "flex", "premium", "consumption"] = Field(
        "auto", description="auto: Flex Consumption unless the model needs more memory than Flex offers (then "
        "Premium); flex; premium (Elastic Premium EP1-EP3, slots); consumption is refused (retiring 2028).")
    premium_sku: Literal["EP1", "EP2", "EP3"] | None = Field(None, description="Premium plan size; default: sized "
                                                                               "from the model.")
    instance_memory_mb: Literal[512, 2048, 4096] | None = Field(None, description="Flex instance memory; default: "
                                                                                 "sized from the model.")
    always_ready: int = Field(1, ge=0, le=100, description="Instances kept warm (Flex always-ready for HTTP, "
                                                          "Premium minimum elastic instances); 0 allows cold starts.")
    maximum_instance_count: int = Field(40, ge=1, le=1000, description="Scale-out limit.")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags on every resource.")

    @field_validator("hosting")
    @classmethod
    def _not_linux_consumption(cls, v: str) -> str:
        if v == "consumption":
            raise ValueError(LINUX_CONSUMPTION_RETIRED)
        return v


@dataclass(frozen=True)
class Hosting:
    plan: Literal["flex", "premium"]
    sku: str  # FC1 | EP1..EP3
    instance_memory_mb: int | None  # Flex only
    why: str


def choose_hosting(cfg: FunctionsConfig, need_gib: float, *, reasons: str = "") -> Hosting:
    """Flex with the smallest instance that holds ``need_gib`` (or the one named), else Premium;
    ValueError naming the need when nothing asked for (or nothing at all) fits."""
    need_mb = need_gib * 1024
    basis = f"the model needs {need_gib:.2f} GiB" + (f" ({reasons})" if reasons else "")
    if cfg.hosting in ("auto", "flex") and cfg.premium_sku is None:
        if cfg.instance_memory_mb is not None:
            if cfg.instance_memory_mb < need_mb:
                raise ValueError(f"{basis}, over the {cfg.instance_memory_mb} MB Flex instance named by "
                                 "instance_memory_mb")
            return Hosting("flex", "FC1", cfg.instance_memory_mb, f"Flex Consumption, {cfg.instance_memory_mb} MB "
                           f"instances named in the manifest; {basis}")
        fit = next((m for m in FLEX_MEMORY_MB if m >= need_mb), None)
        if fit is not None:
            return Hosting("flex", "FC1", fit, f"Flex Consumption, {fit} MB instances: the smallest that fits; {basis}")
        if cfg.hosting == "flex":
            raise ValueError(f"{basis}, over the largest Flex Consumption instance ({FLEX_MEMORY_MB[-1]} MB); "
                             "use hosting: premium")
    if cfg.premium_sku is not None:
        if PREMIUM_GIB[cfg.premium_sku] < need_gib:
            raise ValueError(f"{basis}, over the {PREMIUM_GIB[cfg.premium_sku]:g} GiB of {cfg.premium_sku}")
        return Hosting("premium", cfg.premium_sku, None, f"Elastic Premium {cfg.premium_sku} named in the manifest; "
                       f"{basis}")
    sku = next((s for s, gib in PREMIUM_GIB.items() if gib >= need_gib), None)
    if sku is None:
        raise ValueError(f"{basis}, over the largest Functions plan (EP3, 14 GiB): use an Azure ML target")
    why = "more than Flex offers" if cfg.hosting == "auto" else "premium asked for"
    return Hosting("premium", sku, None, f"Elastic Premium {sku}, the smallest that fits ({why}); {basis}")
