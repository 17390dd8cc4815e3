"""Quota preflight arithmetic for Azure, per provider and summed across targets.  Pure.

Azure quotas are per subscription, region and VM family (the usages APIs of Compute, Azure ML,
Container Instances... all answer ``currentValue`` of ``limit`` per family:
:func:`orchestrator.azure.arm.provider_usages` reads them for any provider, :func:`parse_usages`
is the pure part).  A target's ``check()`` reads its provider's usage row and returns a :class:`Finding` for its own need, with
a :class:`QuotaDemand` attached as plain data (``Finding.data["quota_demand"]``).  Several
targets of one manifest can each fit while together they do not (20 targets each needing 6 of
100 free cores); :func:`fleet_findings` — the engine's cross-target check for Azure targets —
sums the demands per (subscription, region, family) at their peak and adds an error finding to
every target of a family that does not fit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.plan import TargetPlan
    from orchestrator.target import Finding

DEMAND_KEY = "quota_demand"


def cores_required(instance_count: int, vcpus: int, *, reserve_fraction: float = 0.0) -> int:
    """Cores a deployment takes from quota.  Managed online reserves ``reserve_fraction`` (20%)
    extra instances for upgrades: ``ceil((1 + reserve) x count) x vcpus``."""
    # round() first so 1.2 * 5 == 6.000000000000001 does not become 7
    return math.ceil(round((1 + reserve_fraction) * instance_count, 9)) * vcpus


@dataclass(frozen=True)
class Usage:
    """One quota row from a usages API: ``current`` of ``limit`` in use."""

    family: str
    current: int
    limit: int

    @property
    def free(self) -> int:
        return max(0, self.limit - self.current)


def quota_shortfall(required: int, usage: Usage | None, *, already_held: int = 0) -> str | None:
    """None when ``required`` cores fit into what is free (plus what this deployment already
    holds and will give back); otherwise the message with the numbers."""
    if usage is None:
        return None
    available = usage.free + already_held
    if required <= available:
        return None
    return (f"needs {required} {usage.family} cores but only {available} are available "
            f"(quota {usage.limit}, in use {usage.current}"
            + (f", {already_held} held by the current deployment" if already_held else "") + ")")


def parse_usages(body: Mapping[str, Any] | None) -> list[Usage]:
    """The rows of a provider's ``.../locations/{region}/usages`` answer (Compute, Azure ML,
    Container Instances... share the shape: ``value[].name.value``, ``currentValue``, ``limit``)."""
    out = []
    for row in (body or {}).get("value") or []:
        name = row.get("name")
        family = name.get("value") if isinstance(name, Mapping) else name
        if isinstance(family, str):
            out.append(Usage(family, int(row.get("currentValue") or 0), int(row.get("limit") or 0)))
    return out


def usage_of(rows: Iterable[Usage], family: str) -> Usage | None:
    """The row of ``family`` (case-insensitive, as the usages APIs name them inconsistently)."""
    return next((u for u in rows if u.family.lower() == family.lower()), None)


@dataclass(frozen=True)
class QuotaDemand:
    """What one target needs from one quota at its peak, and what it gives back (``held``: the
    cores its current deployment holds and releases).  ``current`` and ``limit`` are the usage
    row the target read (every target of a family reads the same row)."""

    subscription: str
    region: str
    family: str
    required: int
    held: int
    current: int
    limit: int
    target: str = ""

    @property
    def pool(self) -> tuple[str, str, str]:
        return (self.subscription.lower(), self.region.lower().replace(" ", ""), self.family.lower())

    def as_data(self) -> dict[str, Any]:
        return {DEMAND_KEY: asdict(self)}

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None, target: str) -> QuotaDemand | None:
        row = (data or {}).get(DEMAND_KEY)
        return cls(**{**row, "target": target}) if isinstance(row, Mapping) else None


@dataclass(frozen=True)
class PoolShortfall:
    """A (subscription, region, family) whose demands do not fit together."""

    subscription: str
    region: str
    family: str
    demands: tuple[QuotaDemand, ...]

    @property
    def required(self) -> int:
        return sum(d.required for d in self.demands)

    @property
    def available(self) -> int:
        # every demand read the same row; the most recent read (highest usage) is the cautious one
        row = max(self.demands, key=lambda d: d.current)
        return max(0, row.limit - row.current) + sum(d.held for d in self.demands)

    def message(self) -> str:
        each = ", ".join(f"{d.target} {d.required}" for d in self.demands)
        return (f"quota: the {len(self.demands)} targets using {self.family} in {self.region} (subscription "
                f"{self.subscription}) need {self.required} cores together ({each}) but only {self.available} "
                f"are available; each fits alone, not all at once")


def shortfalls(demands: Iterable[QuotaDemand]) -> list[PoolShortfall]:
    """The pools where the summed demands exceed what is free (plus what they give back)."""
    pools: dict[tuple[str, str, str], list[QuotaDemand]] = {}
    for d in demands:
        pools.setdefault(d.pool, []).append(d)
    out = []
    for group in pools.values():
        if len(group) < 2:
            continue  # one target alone: its own check already said whether it fits
        s = PoolShortfall(group[0].subscription, group[0].region, group[0].family, tuple(group))
        if s.required > s.available:
            out.append(s)
    return out


def fleet_findings(plans: Sequence[TargetPlan]) -> dict[str, list[Finding]]:
    """The engine's cross-target quota check: an error finding for each target of a pool that
    does not fit as a whole.  Reads only the plans' findings (the demands their checks attached)."""
    from orchestrator.target import Finding, Severity

    demands = [d for tp in plans for f in tp.findings
               if (d := QuotaDemand.from_data(f.data, tp.target)) is not None]
    out: dict[str, list[Finding]] = {}
    for s in shortfalls(demands):
        for d in s.demands:
            out.setdefault(d.target, []).append(Finding(
                severity=Severity.error, message=s.message(),
                hint="request more quota for this VM family, lower instance counts or sizes, apply the targets "
                     "in separate runs (--target), or pass --skip-quota-check"))
    return out
