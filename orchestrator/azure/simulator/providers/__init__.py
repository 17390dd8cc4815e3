"""Simulated services, one module per resource provider or data plane.

Each provider has ``owns(req)``, ``operation(req)`` (a name for logs and faults: the REST spec's
operationId where there is one) and ``handle(req) -> Response | None`` (None: not simulated,
which the simulator turns into a loud failure).
"""

from orchestrator.azure.simulator.providers.aci import ContainerEndpoints
from orchestrator.azure.simulator.providers.acr import AcrDataPlane
from orchestrator.azure.simulator.providers.dockerhub import DockerHub
from orchestrator.azure.simulator.providers.mfe import AzureMLRegional
from orchestrator.azure.simulator.providers.resources import ResourceManager
from orchestrator.azure.simulator.providers.scoring import Scoring
from orchestrator.azure.simulator.providers.storage import BlobService, QueueService
from orchestrator.azure.simulator.providers.web import FunctionSites, Kudu

PROVIDERS = (ResourceManager, AzureMLRegional, BlobService, QueueService, Scoring, Kudu, FunctionSites, AcrDataPlane,
             ContainerEndpoints, DockerHub)

__all__ = ["PROVIDERS"]
