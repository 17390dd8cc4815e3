"""The Azure ML SKU catalog: which VM sizes each Azure ML compute kind offers.  Pure.

Committed as ``targets/azureml/data/azureml_skus.json`` (sources in its ``_about``); the generic
matching is :mod:`orchestrator.sizing`, the quota arithmetic :mod:`orchestrator.azure.quota`.
Compute kinds: ``managed-online`` (the managed online SKU list and its minimum), ``amlcompute``
(batch clusters), ``any``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from orchestrator.sizing import Requirement, SizingError, Sku, fits

DATA_DIR = Path(__file__).parent / "data"
CATALOG_PATH = DATA_DIR / "azureml_skus.json"
COMPUTE_KINDS = ("managed-online", "amlcompute", "any")


@dataclass(frozen=True)
class AzureMLSku(Sku):
    managed_online: bool = False
    amlcompute: bool = False


@dataclass(frozen=True)
class Catalog:
    skus: tuple[AzureMLSku, ...]
    reserve_fraction: float
    min_vcpus: int
    min_memory_gib: float

    def get(self, name: str) -> AzureMLSku | None:
        low = name.lower()
        return next((s for s in self.skus if s.name.lower() == low), None)

    def candidates(self, compute_kind: str) -> list[Sku]:
        if compute_kind == "managed-online":
            return [s for s in self.skus if s.managed_online]
        if compute_kind == "amlcompute":
            return [s for s in self.skus if s.amlcompute]
        return list(self.skus)


def parse_catalog(data: Mapping[str, Any]) -> Catalog:
    mo = data.get("managed_online", {})
    fields = set(AzureMLSku.__dataclass_fields__)
    skus = tuple(AzureMLSku(**{k: v for k, v in row.items() if k in fields}) for row in data["skus"])
    return Catalog(skus=skus, reserve_fraction=float(mo.get("core_reserve_fraction", 0.2)),
                   min_vcpus=int(mo.get("minimum", {}).get("vcpus", 2)),
                   min_memory_gib=float(mo.get("minimum", {}).get("memory_gib", 4)))


@lru_cache(maxsize=1)
def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    return parse_catalog(json.loads(Path(path).read_text(encoding="utf-8")))


def check_named(name: str, req: Requirement, catalog: Catalog, compute_kind: str) -> tuple[AzureMLSku, list[str]]:
    """Validate an explicit instance type: known, allowed for the compute kind, big enough.
    Returns the SKU and warnings (below the managed online minimum, short of the requirement)."""
    sku = catalog.get(name)
    if sku is None:
        import difflib

        close = difflib.get_close_matches(name, [s.name for s in catalog.skus], n=1)
        raise SizingError(f"unknown instance type {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    if compute_kind == "managed-online" and not sku.managed_online:
        raise SizingError(f"{sku.name} is not offered for managed online endpoints")
    if compute_kind == "amlcompute" and not sku.amlcompute:
        raise SizingError(f"{sku.name} is not offered for AmlCompute clusters")
    warnings = []
    lack = fits(sku, req)
    if lack:
        warnings.append(f"{sku.name} may be too small for {req.describe()} ({lack})")
    if compute_kind == "managed-online" and (sku.vcpus < catalog.min_vcpus or sku.memory_gib < catalog.min_memory_gib):
        warnings.append(f"{sku.name} is below the managed online minimum ({catalog.min_vcpus} vCPU, "
                        f"{catalog.min_memory_gib:g} GiB): the inference server may not have room")
    return sku, warnings
