"""Capacity of the AKS cluster behind a Kubernetes compute, and what a rollout asks of it.  Pure.

Kubernetes online deployments have no regional core quota: their pods must fit the attached
cluster.  :func:`node_pools` reads the cluster's ARM resource (``Microsoft.ContainerService/
managedClusters``: ``agentPoolProfiles[]`` with ``vmSize``, ``count``, ``enableAutoScaling`` /
``maxCount``, ``maxPods``, ``osType``) and sizes each node from the committed VM-size tables
(``targets/azureml/data/vm_sizes.json``, then the Azure ML SKU catalog); :func:`allocatable` takes
off what AKS reserves on every node (learn.microsoft.com/azure/aks/node-resource-reservations):

- CPU (kube-reserved): 60m on 1 core, 100m on 2, 140m on 4, 180m on 8, 260m on 16, 420m on 32,
  740m on 64 cores;
- memory, Kubernetes 1.29 and later: ``min(20 MiB x maxPods + 50 MiB, 25% of the node)`` plus the
  100 MiB eviction threshold; before 1.29: 25% of the first 4 GiB, 20% of the next 4, 10% of the
  next 8, 6% of the next 112, 2% above 128 GiB, plus 750 MiB eviction threshold.

:func:`assess` compares the rollout's pod requests (CPU and memory) with the node pools the
instance type may run on (its ``nodeSelector`` naming ``agentpool`` picks one pool; otherwise
every Linux pool), autoscaling pools at ``maxCount``: first the totals, then whether the pods
really pack onto the nodes (a pod runs on one node: three 2.5-CPU pods do not fit two 3.9-CPU
nodes, though 7.5 < 7.8).  The packing is exact (:func:`max_placed`), not a heuristic.  System
pods, daemonsets and the Azure ML extension are not counted: a shortfall is certain (the rollout
cannot be scheduled), a fit is necessary but not sufficient.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

CPU_RESERVED_M = ((1, 60), (2, 100), (4, 140), (8, 180), (16, 260), (32, 420), (64, 740))
POOL_LABELS = ("agentpool", "kubernetes.azure.com/agentpool")
DEFAULT_MAX_PODS = 30  # Azure CNI's default when a profile does not say


@dataclass(frozen=True)
class Pods:
    """``count`` pods of one deployment, each requesting ``cpu`` cores and ``memory_gib``."""

    label: str
    count: int
    cpu: float
    memory_gib: float

    @property
    def total_cpu(self) -> float:
        return self.count * self.cpu

    @property
    def total_memory_gib(self) -> float:
        return self.count * self.memory_gib

    def describe(self) -> str:
        return f"{self.label}: {self.count} x ({self.cpu:g} CPU, {self.memory_gib:.1f} GiB)"


@dataclass(frozen=True)
class NodePool:
    name: str
    vm_size: str
    nodes: int
    autoscale: bool
    cpu: float  # allocatable per node
    memory_gib: float

    def describe(self) -> str:
        up_to = "up to " if self.autoscale else ""
        return (f"{self.name}: {up_to}{self.nodes} x {self.vm_size} ({self.cpu:.2f} CPU, {self.memory_gib:.1f} GiB "
                f"allocatable each)")


@dataclass(frozen=True)
class Assessment:
    need_cpu: float
    need_memory_gib: float
    have_cpu: float
    have_memory_gib: float
    pools: tuple[NodePool, ...]
    pods: tuple[Pods, ...]
    too_big: str | None = None  # one pod fits no node of the eligible pools
    placed: int | None = None  # pods the nodes can hold, when that is fewer than asked (None: all, or not known)

    @property
    def short_cpu(self) -> float:
        return max(0.0, self.need_cpu - self.have_cpu)

    @property
    def short_memory_gib(self) -> float:
        return max(0.0, self.need_memory_gib - self.have_memory_gib)

    @property
    def fits(self) -> bool:
        return (self.too_big is None and self.placed is None and self.short_cpu <= 1e-9
                and self.short_memory_gib <= 1e-9)

    @property
    def shortfall(self) -> str:
        """Why it does not fit, in words ("" when it fits)."""
        if self.too_big:
            return self.too_big
        parts = ([f"{self.short_cpu:.2f} CPU"] if self.short_cpu > 1e-9 else []) + \
            ([f"{self.short_memory_gib:.1f} GiB"] if self.short_memory_gib > 1e-9 else [])
        if parts:
            return f"short by {' and '.join(parts)}"
        if self.placed is not None:
            asked = sum(p.count for p in self.pods)
            return (f"enough in total, but a pod runs on one node and the nodes can hold only {self.placed} of the "
                    f"{asked} pods")
        return ""


@lru_cache(maxsize=1)
def vm_sizes() -> dict[str, tuple[float, float]]:
    """VM size (lower-case) -> (vCPUs, memory GiB): the AKS table, then the Azure ML catalog."""
    from targets.azureml.catalog import DATA_DIR, load_catalog

    out = {s.name.lower(): (float(s.vcpus), float(s.memory_gib)) for s in load_catalog().skus}
    for row in json.loads((DATA_DIR / "vm_sizes.json").read_text(encoding="utf-8"))["sizes"]:
        out[row["name"].lower()] = (float(row["vcpus"]), float(row["memory_gib"]))
    return out


def _version(v: Any) -> tuple[int, int]:
    try:
        major, minor = str(v or "").split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return (0, 0)


def allocatable(vcpus: float, memory_gib: float, *, kubernetes_version: str | None, max_pods: int | None) -> tuple[float, float]:
    """(CPU, GiB) a node of this size offers to pods after AKS's reservations."""
    cores = max(1, int(vcpus))
    reserved_m = next((m for c, m in CPU_RESERVED_M if cores <= c), CPU_RESERVED_M[-1][1])
    cpu = max(0.0, vcpus - reserved_m / 1000)
    if _version(kubernetes_version) >= (1, 29):
        pods = max_pods or DEFAULT_MAX_PODS
        reserved = min((20 * pods + 50) / 1024, 0.25 * memory_gib) + 100 / 1024
    else:
        reserved, left = 0.0, memory_gib
        for size, share in ((4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06), (math.inf, 0.02)):
            part = min(left, size)
            reserved += part * share
            left -= part
            if left <= 0:
                break
        reserved += 750 / 1024
    return cpu, max(0.0, memory_gib - reserved)


def node_pools(cluster: Mapping[str, Any], pool: str | None = None) -> tuple[list[NodePool], list[str]]:
    """The Linux node pools of a managedClusters resource (only ``pool`` when the instance type
    pins one), sized; and a note per pool that cannot be sized."""
    props = cluster.get("properties") or {}
    version = props.get("currentKubernetesVersion") or props.get("kubernetesVersion")
    sizes = vm_sizes()
    out: list[NodePool] = []
    notes: list[str] = []
    for p in props.get("agentPoolProfiles") or []:
        name = str(p.get("name", "?"))
        if pool is not None and name != pool:
            continue
        if str(p.get("osType", "Linux")).lower() != "linux":
            continue
        vm = str(p.get("vmSize", ""))
        size = sizes.get(vm.lower())
        if size is None:
            notes.append(f"node pool {name}: VM size {vm or '?'} is not in deployctl's VM-size table, not counted")
            continue
        autoscale = bool(p.get("enableAutoScaling"))
        nodes = int((p.get("maxCount") if autoscale else p.get("count")) or 0)
        cpu, mem = allocatable(*size, kubernetes_version=version, max_pods=p.get("maxPods"))
        out.append(NodePool(name, vm, nodes, autoscale, cpu, mem))
    return out, notes


def pinned_pool(node_selector: Mapping[str, Any] | None) -> str | None:
    for label in POOL_LABELS:
        value = (node_selector or {}).get(label)
        if value:
            return str(value)
    return None


def assess(pods: Iterable[Pods], pools: Iterable[NodePool]) -> Assessment:
    pods, pools = tuple(p for p in pods if p.count > 0), tuple(pools)
    have_cpu = sum(p.nodes * p.cpu for p in pools)
    have_mem = sum(p.nodes * p.memory_gib for p in pools)
    too_big = None
    for p in pods:
        if not any(n.nodes and n.cpu >= p.cpu and n.memory_gib >= p.memory_gib for n in pools):
            too_big = (f"one pod of {p.label} ({p.cpu:g} CPU, {p.memory_gib:.1f} GiB) fits on no node "
                       f"of the eligible pools")
            break
    a = Assessment(sum(p.total_cpu for p in pods), sum(p.total_memory_gib for p in pods), have_cpu, have_mem,
                   pools, pods, too_big)
    if a.too_big or a.short_cpu > 1e-9 or a.short_memory_gib > 1e-9:
        return a  # the totals already say no
    placed = max_placed(pods, pools)
    asked = sum(p.count for p in pods)
    return replace(a, placed=placed) if placed is not None and placed < asked else a


_EPS = 1e-9
MAX_STATES = 5_000  # beyond this the packing is not decided (taken as fitting: the totals did)


def max_placed(pods: Iterable[Pods], pools: Iterable[NodePool]) -> int | None:
    """The most of ``pods`` the nodes of ``pools`` can hold, each pod whole on one node; None when
    the search would be too large to decide (many distinct pod shapes on many nodes).

    Pods of the same shape are interchangeable, so the state after filling some nodes is how many
    of each shape are placed; only states not dominated by another are kept (placing more of every
    shape is never worse).  Node by node, each keeps the best ways to fill one node.  Exact."""
    shapes: dict[tuple[float, float], int] = {}
    for p in pods:
        shapes[(p.cpu, p.memory_gib)] = shapes.get((p.cpu, p.memory_gib), 0) + p.count
    pools = tuple(pools)
    if _first_fit(shapes, pools):
        return sum(shapes.values())  # the quick way placed them all: nothing to search
    sizes, need = list(shapes), tuple(shapes.values())
    states: set[tuple[int, ...]] = {tuple(0 for _ in need)}
    for pool in pools:
        fills = _node_fills(sizes, need, pool.cpu, pool.memory_gib)
        if fills is None:
            return None
        for _ in range(pool.nodes):
            if need in states:
                return sum(need)
            states = _frontier({tuple(min(s + f, n) for s, f, n in zip(state, fill, need, strict=True))
                                for state in states for fill in fills})
            if len(states) > MAX_STATES:
                return None
    return max(sum(s) for s in states)


def _first_fit(shapes: Mapping[tuple[float, float], int], pools: tuple[NodePool, ...]) -> bool:
    """First fit, biggest pods first: True when it places every pod (then they surely fit; when it
    does not, they still may: the exact search decides)."""
    free = [[pool.cpu, pool.memory_gib] for pool in pools for _ in range(pool.nodes)]
    for (cpu, mem), count in sorted(shapes.items(), reverse=True):
        node = 0
        for _ in range(count):
            while node < len(free) and (free[node][0] + _EPS < cpu or free[node][1] + _EPS < mem):
                node += 1
            if node == len(free):
                return False
            free[node][0] -= cpu
            free[node][1] -= mem
    return True


class _TooLarge(Exception):
    pass


def _node_fills(sizes: list[tuple[float, float]], need: tuple[int, ...], cpu: float,
                memory_gib: float) -> list[tuple[int, ...]] | None:
    """The ways to fill one node (how many pods of each shape), none dominated by another; None
    when there are too many to list."""
    out: list[tuple[int, ...]] = []

    def fill(i: int, counts: tuple[int, ...], cpu_left: float, mem_left: float) -> None:
        if i == len(sizes):
            out.append(counts)
            if len(out) > MAX_STATES:
                raise _TooLarge
            return
        c, m = sizes[i]
        k = 0
        while k <= need[i] and k * c <= cpu_left + _EPS and k * m <= mem_left + _EPS:
            fill(i + 1, (*counts, k), cpu_left - k * c, mem_left - k * m)
            k += 1

    try:
        fill(0, (), cpu, memory_gib)
    except _TooLarge:
        return None
    return sorted(_frontier(set(out)))


def _frontier(states: set[tuple[int, ...]]) -> set[tuple[int, ...]]:
    """The states no other state dominates (>= in every shape)."""
    ordered = sorted(states, key=sum, reverse=True)
    kept: list[tuple[int, ...]] = []
    for s in ordered:
        if not any(all(k >= x for k, x in zip(other, s, strict=True)) for other in kept):
            kept.append(s)
    return set(kept)
