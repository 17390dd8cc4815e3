"""CI integrations: how deployctl speaks to the CI system running it.

The CLI calls :func:`detect` once per command and then the hooks of the returned
:class:`CIIntegration`.  The base class does nothing extra (a terminal, or a CI we do not know);
:class:`~orchestrator.ci.azure_devops.AzureDevOpsIntegration` speaks Azure Pipelines' logging
commands.  :mod:`orchestrator.ci.vso` formats and parses those commands (usable on its own).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.engine import ApplyResult
    from orchestrator.errors import ManifestError
    from orchestrator.events import Reporter
    from orchestrator.plan import Plan

CI_CHOICES = ("azure-devops", "none")


class CIIntegration:
    """No CI: every hook is a no-op and the CLI's own reporter is enough."""

    name = "none"

    def reporter(self) -> Reporter | None:
        return None

    def manifest_error(self, err: ManifestError) -> None:
        """One annotation per issue of an invalid manifest."""

    def error(self, message: str) -> None:
        """A command failed with this (already redacted) message."""

    def plan(self, plan: Plan) -> None:
        """A plan was made (plan command)."""

    def applied(self, result: ApplyResult) -> None:
        """apply or destroy finished (successfully or not)."""

    def complete(self, exit_code: int, message: str = "") -> None:
        """The command is about to exit with ``exit_code``."""


def detect(ci: str | None = None, environ: Mapping[str, str] | None = None) -> CIIntegration:
    """``ci`` names the integration (``--ci``); None detects it (``TF_BUILD=True`` is Azure Pipelines)."""
    env = os.environ if environ is None else environ
    if ci is None:
        ci = "azure-devops" if env.get("TF_BUILD", "").lower() == "true" else "none"
    if ci == "azure-devops":
        from orchestrator.ci.azure_devops import AzureDevOpsIntegration

        return AzureDevOpsIntegration(environ=env)
    if ci == "none":
        return CIIntegration()
    raise ValueError(f"unknown CI integration {ci!r}; choose one of {', '.join(CI_CHOICES)}")
