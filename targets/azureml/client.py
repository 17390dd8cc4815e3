"""The Azure ML client: an ``MLClient`` built through the run's
:class:`~orchestrator.azure.session.AzureSession` (its credential, transport and retry policy),
without progress bars.  Constructing it sends nothing; azure-ai-ml is imported only here, inside
the function.  The operation runner, typed errors and ARM helpers every Azure target shares are
in :mod:`orchestrator.azure`.
"""

from __future__ import annotations

from typing import Any

from orchestrator.azure.session import AzureSession


def ml_client(session: AzureSession, subscription: str, resource_group: str | None = None,
              workspace: str | None = None, *, registry: str | None = None, credential: Any = None) -> Any:
    import logging

    from azure.ai.ml import MLClient

    # azure-ai-ml installs its own INFO handler on stderr ("Check: endpoint X exists"): keep the
    # CLI's output ours.  A user who wants the SDK's chatter lowers the level again after import.
    sdk_log = logging.getLogger("azure.ai.ml")
    if sdk_log.level == logging.INFO:
        sdk_log.setLevel(logging.WARNING)
    kw = session.client_kwargs()
    return MLClient(credential or session.get_credential(subscription), subscription, resource_group,
                    workspace, registry_name=registry, show_progress=False, **kw)
