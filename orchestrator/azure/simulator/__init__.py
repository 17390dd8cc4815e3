"""An in-process Azure for the real Azure SDK clients (what moto is for AWS).

    sim = AzureSimulator(seed=1)
    sim.add_workspace(SUB, "rg", "ws")
    ml = MLClient(sim.credential, SUB, "rg", "ws", transport=sim.transport, show_progress=False)
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="ep1")).result()

Plugged in through azure-core's ``transport=`` (:attr:`AzureSimulator.transport`): no sockets and
no patched SDK internals.  The transport's ``sleep()`` advances :attr:`AzureSimulator.clock`, so
azure-core's retries and LRO polling cost no real time.

What it simulates: resource groups; Azure ML workspaces, datastores (+ listSecrets), code /
environment / model versions, online endpoints and deployments (managed and Kubernetes; keys,
token, logs, traffic, real scoring of the uploaded score.py and model), batch endpoints,
deployments and jobs, computes, registries (+ importing workspace models), usages and vCPU
quotas; blob and queue data planes; Container Instances, App Service (sites, plans, app settings,
Kudu zip deploy), Storage accounts, Container Registry (builds, listCredentials, importImage, and each registry's OCI distribution endpoints with token exchange: :mod:`.providers.acr`), AKS managed clusters (read only:
their node pools, for the aks capacity check).  Every other operation of the carried REST specs
gets spec-driven CRUD; anything else fails loudly (:class:`UnsupportedRequest` in strict mode, HTTP 501 otherwise).

``strict=True`` (tests): only what was seeded exists; unknown operations and requests that do not
conform to the REST specs raise.  ``strict=False`` (``--simulate``): resource groups and
workspaces are created on first reference with default quotas (100 cores per VM family and
region), so any manifest works out of the box.

Faults (``sim.faults``; spec strings for ``--simulate`` / ``DEPLOYCTL_SIMULATE_FAULTS``), e.g.
``"rate=0.1,seed=3"`` (10% of requests get 429/500/503), ``"kinds=429|503|reset,rate=0.2"``,
``"429:2,503:1"`` (the next requests, in order), ``"lro-failed@OnlineDeployments_CreateOrUpdate:1"``
(by operationId), ``retry_after=2``, ``slow=5``.  See :mod:`.faults`.

Latency (``sim.latency``; ``DEPLOYCTL_SIMULATE_LATENCY``): ``"call=0.1-0.3,lro=2,deployment=300,
scale=0.1,realtime=1"`` — simulated seconds per request (a value or a range) and per long-running
operation kind; ``realtime=1`` makes the clock a wall clock that really waits.  See :mod:`.latency`.

A persisted cloud (``deployctl apply --simulate`` keeps it as ``<state-dir>/simulated-azure.json``)
can be inspected and seeded — e.g. the source model of a cross-subscription copy — with
``python -m orchestrator.azure.simulator show|add-model|quota|deny|reset STATE ...`` (see :mod:`.__main__`).
Every mutation is written to that file as it happens, under a cross-process lock (:mod:`.persist`);
simulated endpoints' scorers stay warm across runs (:mod:`.scorers`).
Registries: discovery and the registry data plane on the regional host (``<region>.api.azureml.ms``),
registry asset versions, and the import that shares a workspace model into a registry
(:mod:`.providers.ml_registry`).  azure-ai-ml's ``models.share()`` itself builds its registry
client without the transport (it would reach the network): send the same import through an
``MLClient(registry_name=..., transport=...)`` (``create_or_update(WorkspaceAssetReference(...))``),
as deployctl's Azure ML targets do.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.azure.simulator.clock import VirtualClock
from orchestrator.azure.simulator.faults import FaultInjector
from orchestrator.azure.simulator.latency import LatencyModel
from orchestrator.azure.simulator.messages import UnsupportedRequest
from orchestrator.azure.simulator.simulator import AzureSimulator

__all__ = ["AzureSimulator", "FaultInjector", "LatencyModel", "UnsupportedRequest", "VirtualClock",
           "simulated_session"]


@contextlib.contextmanager
def simulated_session(state_path: Path, *, faults: str | None = None, latency: str | None = None,
                      read_only: bool = False) -> Iterator[Any]:
    """An AzureSession on the simulated cloud persisted at ``state_path`` (created when absent,
    pre-seeded: non-strict).  Every mutation is written to the file as it happens, under a
    cross-process lock (see :mod:`.persist`); ``read_only`` (plan, status, logs) never writes."""
    from orchestrator.azure.simulator.persist import Store

    state_path = Path(state_path)
    faults = faults if faults is not None else os.environ.get("DEPLOYCTL_SIMULATE_FAULTS")
    latency = latency if latency is not None else os.environ.get("DEPLOYCTL_SIMULATE_LATENCY")
    from orchestrator.errors import UserError

    try:
        lat = LatencyModel.parse(latency)
    except ValueError as e:
        raise UserError(f"--simulate-latency: {e}") from None
    sim = AzureSimulator(strict=False, clock=VirtualClock(realtime=lat.realtime))
    try:
        sim.faults = FaultInjector.parse(faults, default_seed=sim.seed)
    except ValueError as e:
        raise UserError(f"--simulate-faults: {e}") from None
    sim.store = Store(state_path, read_only=read_only)
    try:
        sim.refresh()
    except ValueError as e:
        raise UserError(str(e), hint="delete the file to start a new simulated cloud") from None
    sim.latency = lat
    sim.scale_arm_limits(lat.arm)
    try:
        yield sim.session()
    finally:
        try:
            if not read_only:  # what reads changed (finished operations, the clock), unless others wrote
                with sim.store.locked(), sim._lock:
                    sim.refresh()
                    sim.persist()
        finally:
            sim.close()
