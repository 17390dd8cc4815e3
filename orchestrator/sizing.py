"""Sizing: what a deployment needs, and the cheapest instance type that has it.  Pure.

Plain data in, plain data out, in the spirit of SkyPilot's optimizer: a :class:`Requirement`
(vCPU, memory, GPU, each with the reason it has that value) is matched against candidate
:class:`Sku` rows, and the cheapest one that fits wins (ties: fewer vCPUs, then name, so the
choice is deterministic).  Nothing here reads the network; the caller passes the model's size on
disk and the environment's requirement lines.

- :func:`requirement` — from the manifest's ``resources`` (numbers, or ``auto``) and the model
  size: memory = runtime overhead (more for deep-learning frameworks) + the model loaded in
  memory (``LOAD_FACTOR`` x its size on disk), per worker.
- :func:`choose` — cheapest fitting SKU among the candidates a target passes (its own catalog,
  e.g. ``targets/azureml/catalog.py``, says which SKUs a compute kind allows and its minimum).
- :func:`fits` — what a SKU lacks for a requirement.

Catalogs stay with the targets that own them; quota arithmetic is the provider's
(:mod:`orchestrator.azure.quota`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

GIB = 1024**3
# A pickled/ONNX model typically takes 2-3x its file size once deserialised (buffers, copies
# during load).  Sizing errs on the large side: "too little memory" is a top cause of failed
# deployments, a bigger VM only costs a little more.
LOAD_FACTOR = 2.5
BASE_OVERHEAD_GIB = 1.0  # python + inference server + the usual scientific stack
# Frameworks whose import alone takes hundreds of MB to GBs of resident memory.
HEAVY_FRAMEWORKS = {"torch": 1.5, "tensorflow": 1.5, "tensorflow-cpu": 1.5, "jax": 1.0, "transformers": 0.5,
                    "onnxruntime-gpu": 0.5, "xgboost": 0.25, "lightgbm": 0.25}
DEFAULT_CPU = 1.0


@dataclass(frozen=True)
class Sku:
    name: str
    vcpus: int
    memory_gib: float
    gpus: int = 0
    relative_cost: float = 0.0
    family: str = ""  # the quota family it counts against (provider-specific name)
    gpu_model: str | None = None


@dataclass(frozen=True)
class Requirement:
    cpu: float
    memory_gib: float
    gpu: int = 0
    reasons: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.cpu:g} vCPU, {self.memory_gib:.1f} GiB, {self.gpu} GPU"


@dataclass(frozen=True)
class Choice:
    sku: Sku
    requirement: Requirement
    why: str
    rejected: tuple[str, ...] = field(default=())


class SizingError(ValueError):
    """No candidate fits, or a named instance type is unknown or too small."""


def package_names(requirement_lines: Iterable[str]) -> list[str]:
    """The distribution names in requirements/conda lines (normalised, in order, once each)."""
    out: list[str] = []
    for line in requirement_lines:
        name = line.strip().lstrip("- ").split("#")[0].strip()
        for sep in ("==", ">=", "<=", "~=", "!=", ">", "<", "[", ";", "=", " "):
            name = name.split(sep)[0]
        name = name.strip().lower().replace("_", "-")
        if name and name not in out:
            out.append(name)
    return out


def framework_overhead(requirement_lines: Iterable[str]) -> tuple[float, list[str]]:
    """Extra GiB for heavy frameworks named in requirements/conda lines, and which ones."""
    seen = [n for n in package_names(requirement_lines) if n in HEAVY_FRAMEWORKS]
    return sum(HEAVY_FRAMEWORKS[n] for n in seen), seen


def requirement(
    *,
    model_bytes: int,
    cpu: float | str = "auto",
    memory_gib: float | str = "auto",
    gpu: int = 0,
    requirement_lines: Sequence[str] = (),
    workers: int = 1,
) -> Requirement:
    """What one instance needs.  Explicit numbers win; ``auto`` derives them."""
    reasons: list[str] = []
    if memory_gib == "auto":
        extra, heavy = framework_overhead(requirement_lines)
        model_gib = model_bytes / GIB
        per_worker = model_gib * LOAD_FACTOR
        mem = BASE_OVERHEAD_GIB + extra + per_worker * max(1, workers)
        reasons.append(
            f"memory auto: {BASE_OVERHEAD_GIB:g} GiB runtime"
            + (f" + {extra:g} GiB for {', '.join(heavy)}" if heavy else "")
            + f" + model {model_gib:.2f} GiB on disk x {LOAD_FACTOR:g}"
            + (f" x {workers} workers" if workers > 1 else "")
            + f" = {mem:.2f} GiB"
        )
    else:
        mem = float(memory_gib)
        reasons.append(f"memory {mem:g} GiB from the manifest")
    if cpu == "auto":
        cpus = float(max(DEFAULT_CPU, workers))
        reasons.append(f"cpu auto: {cpus:g} vCPU ({max(1, workers)} worker{'s' if workers > 1 else ''})")
    else:
        cpus = float(cpu)
        reasons.append(f"cpu {cpus:g} from the manifest")
    if gpu:
        reasons.append(f"gpu {gpu} from the manifest")
    return Requirement(cpu=cpus, memory_gib=round(mem, 3), gpu=int(gpu), reasons=tuple(reasons))


def fits(sku: Sku, req: Requirement) -> str | None:
    """None when ``sku`` meets ``req``; otherwise what it lacks."""
    lacks = []
    if sku.vcpus < req.cpu:
        lacks.append(f"{sku.vcpus} vCPU < {req.cpu:g}")
    if sku.memory_gib < req.memory_gib:
        lacks.append(f"{sku.memory_gib:g} GiB < {req.memory_gib:.1f}")
    if sku.gpus < req.gpu:
        lacks.append(f"{sku.gpus} GPU < {req.gpu}")
    return "; ".join(lacks) or None


def choose(req: Requirement, candidates: Sequence[Sku], *, min_vcpus: int = 0, min_memory_gib: float = 0.0) -> Choice:
    """The cheapest candidate that fits ``req`` (and the floor).  GPU-less requirements never
    pick a GPU machine.  Raises :class:`SizingError` naming the biggest candidate when none fits."""
    floor = Requirement(cpu=max(req.cpu, float(min_vcpus)), memory_gib=max(req.memory_gib, min_memory_gib),
                        gpu=req.gpu, reasons=req.reasons)
    pool = [s for s in candidates if (s.gpus > 0) == (req.gpu > 0)]
    fitting = [s for s in pool if fits(s, floor) is None]
    if not fitting:
        biggest = max(pool or candidates, key=lambda s: (s.gpus, s.memory_gib, s.vcpus), default=None)
        detail = f"; the largest candidate, {biggest.name}, has {biggest.vcpus} vCPU, {biggest.memory_gib:g} GiB, " \
                 f"{biggest.gpus} GPU" if biggest else ""
        raise SizingError(f"no instance type fits {floor.describe()}{detail}")
    best = min(fitting, key=lambda s: (s.relative_cost, s.vcpus, s.name))
    why = (f"{best.name} ({best.vcpus} vCPU, {best.memory_gib:g} GiB, {best.gpus} GPU, relative cost "
           f"{best.relative_cost:g}) is the cheapest of {len(fitting)} fitting type(s) for {floor.describe()}")
    if floor != req and (floor.cpu, floor.memory_gib) != (req.cpu, req.memory_gib):
        why += f" (raised to the minimum of {min_vcpus} vCPU, {min_memory_gib:g} GiB)"
    rejected = tuple(f"{s.name}: {fits(s, floor)}" for s in pool if s not in fitting and s.relative_cost < best.relative_cost)
    return Choice(sku=best, requirement=floor, why=why, rejected=rejected)
