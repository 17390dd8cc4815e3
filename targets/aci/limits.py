"""ACI sizing and limits, pure: a requirement in, a (cpu, memory) request or an error out.

Azure Container Instances run Linux container groups of at most 4 vCPU and 16 GB in most regions
(the documented default; some regions offer less).  Requests are in steps of 0.1 GB and whole or
fractional cores; deployctl asks for whole cores and memory rounded up to 0.1 GB so a group never
gets less than the model needs.  New GPU container groups are not offered: a GPU requirement is
sent to the targets that have GPUs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orchestrator.sizing import Requirement

MAX_CPU = 4
MAX_MEMORY_GB = 16.0
ALTERNATIVES = "aks (a Kubernetes online endpoint) or online-endpoint (an Azure ML managed online endpoint)"
CAPACITY_CODES = frozenset({"insufficientcapacity", "serviceunavailable", "containergroupquotareached",
                            "skunotavailable", "locationnotavailableforresourcetype"})


class AciLimitError(ValueError):
    """The requirement does not fit any ACI container group."""


@dataclass(frozen=True)
class GroupSize:
    cpu: int
    memory_gb: float
    why: str


def size_group(req: Requirement) -> GroupSize:
    """The smallest request that meets ``req`` within ACI's limits, or :class:`AciLimitError`."""
    if req.gpu:
        raise AciLimitError(
            f"{req.gpu} GPU requested: Azure Container Instances no longer offers GPU container groups for new "
            f"deployments; use {ALTERNATIVES}, which have GPU instance types")
    cpu = max(1, math.ceil(req.cpu - 1e-9))
    memory = max(0.5, math.ceil(req.memory_gib * 10 - 1e-9) / 10)
    over = []
    if cpu > MAX_CPU:
        over.append(f"{cpu} vCPU > {MAX_CPU}")
    if memory > MAX_MEMORY_GB:
        over.append(f"{memory:g} GB > {MAX_MEMORY_GB:g}")
    if over:
        raise AciLimitError(
            f"needs {req.describe()} ({'; '.join(over)}): beyond ACI's limit of {MAX_CPU} vCPU and "
            f"{MAX_MEMORY_GB:g} GB per Linux container group; use {ALTERNATIVES}")
    return GroupSize(cpu, memory, f"{cpu} vCPU, {memory:g} GB for a requirement of {req.describe()}")


def is_capacity_error(code: str | None, message: str = "") -> bool:
    """A region that cannot take the group now: worth the next fallback region, not a failure."""
    text = message.lower()
    return (code or "").lower() in CAPACITY_CODES or "not available in the location" in text \
        or "insufficient capacity" in text


def group_name(base: str, version: str) -> str:
    """Container group name of one version (ACI: 1-63 lowercase letters, digits, '-')."""
    return f"{base[: 63 - len(version) - 1]}-{version}"
