"""deployctl: one declarative manifest, every Azure ML deployment target.

The import package is ``orchestrator``; see :mod:`orchestrator.api` for the Python API.
"""

from orchestrator.api import Deployment, StatusReport, load, load_for_plan, read_plan
from orchestrator.errors import DeployctlError, ManifestError, TargetError, UserError
from orchestrator.plan import Plan

__version__ = "0.1.0"

__all__ = [
    "DeployctlError", "Deployment", "ManifestError", "Plan", "StatusReport", "TargetError", "UserError",
    "__version__", "load", "load_for_plan", "read_plan",
]
