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
    always_ready: int | None = Field(None, ge=0, le=100, description="Instances kept warm (Flex always-ready for "
                                     "HTTP, Premium minimum elastic instances); 0 allows cold starts. Default: sized "
                                     "from the model (1 for a real-time app whose estimated init is over "
                                     "5 s, else 0; Premium keeps at least 1).")
    maximum_instance_count: int = Field(40, ge=1, le=1000, description="Scale-out limit.")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags on every resource.")

    @field_validator("hosting")
    @classmethod
    def _not_linux_consumption(cls, v: str) -> str:
        if v == "consumption":
            raise ValueError(LINUX_CONSUMPTION_RETIRED)
        return v


# Cold starts: what a new instance spends before its first answer, estimated from what the app
# loads (field figures: 20-30 s cold starts come from heavy imports and model loads).  The worker
# and the generated app take about a second; each heavy framework's import adds its own; the
# model is read from the package and deserialised at about 8 s per GiB.
WORKER_START_S = 1.0
IMPORT_SECONDS = {"torch": 6.0, "tensorflow": 8.0, "tensorflow-cpu": 8.0, "jax": 4.0, "transformers": 3.0,
                  "onnxruntime": 1.0, "onnxruntime-gpu": 1.5, "xgboost": 1.0, "lightgbm": 1.0, "scikit-learn": 1.0,
                  "pandas": 0.8, "scipy": 0.8}
LOAD_S_PER_GIB = 8.0
# Over this, a real-time caller would notice the cold start (a typical client timeout is a few
# seconds to tens of seconds): keep one instance warm.  Under it, scale to zero and pay nothing idle.
COLD_START_BUDGET_S = 5.0


@dataclass(frozen=True)
class Hosting:
    plan: Literal["flex", "premium"]
    sku: str  # FC1 | EP1..EP3
    instance_memory_mb: int | None  # Flex only
    why: str
    always_ready: int = 0  # Flex: always-ready instances of the http group; Premium: minimum elastic instances
    ready_why: str = ""


def estimate_init_seconds(model_bytes: int, requirement_lines: list[str]) -> tuple[float, str]:
    """A new instance's seconds to its first answer, and how that figure was made."""
    from orchestrator.sizing import GIB, package_names

    parts, total = [f"{WORKER_START_S:g} s worker"], WORKER_START_S
    for name in package_names(requirement_lines):
        if name in IMPORT_SECONDS:
            total += IMPORT_SECONDS[name]
            parts.append(f"{IMPORT_SECONDS[name]:g} s importing {name}")
    gib = model_bytes / GIB
    total += gib * LOAD_S_PER_GIB
    parts.append(f"model {gib:.2f} GiB x {LOAD_S_PER_GIB:g} s/GiB")
    return round(total, 1), " + ".join(parts)


def choose_always_ready(cfg: FunctionsConfig, plan: str, *, realtime: bool, init_s: float,
                        init_why: str) -> tuple[int, str]:
    """Instances kept warm, and why: the manifest's number wins; else a real-time app whose
    estimated init is over the cold start budget gets 1, other apps 0 (near-real-time requests
    wait in their queue: a cold start delays them, it fails none); Premium keeps at least 1."""
    if cfg.always_ready is not None:
        return cfg.always_ready, f"{cfg.always_ready} always-ready from the manifest"
    estimate = f"estimated init {init_s:g} s ({init_why})"
    if realtime and init_s > COLD_START_BUDGET_S:
        n, why = 1, f"{estimate} is over the {COLD_START_BUDGET_S:g} s cold start budget of a real-time app"
    elif realtime:
        n, why = 0, f"{estimate} is within the {COLD_START_BUDGET_S:g} s cold start budget: scale to zero"
    else:
        n, why = 0, f"near-real-time: requests wait in the queue through a cold start ({estimate})"
    if plan == "premium" and n < 1:
        return 1, f"1 always-ready: Elastic Premium keeps at least one instance warm; {why}"
    return n, f"{n} always-ready: {why}"


def choose_hosting(cfg: FunctionsConfig, need_gib: float, *, reasons: str = "", realtime: bool = True,
                   init_s: float = WORKER_START_S, init_why: str = "") -> Hosting:
    """Flex with the smallest instance that holds ``need_gib`` (or the one named), else Premium,
    with its always-ready count (:func:`choose_always_ready`); ValueError naming the need when
    nothing asked for (or nothing at all) fits."""
    from dataclasses import replace

    h = _choose_plan(cfg, need_gib, reasons)
    n, why = choose_always_ready(cfg, h.plan, realtime=realtime, init_s=init_s, init_why=init_why)
    return replace(h, always_ready=n, ready_why=why)


def _choose_plan(cfg: FunctionsConfig, need_gib: float, reasons: str) -> Hosting:
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
