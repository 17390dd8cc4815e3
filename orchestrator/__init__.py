"""deployctl: one declarative manifest, every Azure ML deployment target.

The import package is ``orchestrator``; see :mod:`orchestrator.api` for the Python API.  The
names below are imported on first use (PEP 562), so ``import orchestrator.errors`` or the CLI's
start-up does not pay for the engine, pydantic and the manifest models before it needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Deployment": "orchestrator.api", "StatusReport": "orchestrator.api", "load": "orchestrator.api",
    "load_for_plan": "orchestrator.api", "read_plan": "orchestrator.api",
    "DeployctlError": "orchestrator.errors", "ManifestError": "orchestrator.errors",
    "TargetError": "orchestrator.errors", "UserError": "orchestrator.errors",
    "Plan": "orchestrator.plan",
}

__all__ = [
    "DeployctlError", "Deployment", "ManifestError", "Plan", "StatusReport", "TargetError", "UserError",
    "__version__", "load", "load_for_plan", "read_plan",
]

if TYPE_CHECKING:
    from orchestrator.api import Deployment, StatusReport, load, load_for_plan, read_plan
    from orchestrator.errors import DeployctlError, ManifestError, TargetError, UserError
    from orchestrator.plan import Plan


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
