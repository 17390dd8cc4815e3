"""How Azure targets reach Azure: one :class:`AzureSession` per run.

Targets build every SDK client through :meth:`AzureSession.client_kwargs`, so one switch points
them all at the real cloud or at the in-process simulator (``--simulate``): the simulator is an
azure-core ``HttpTransport``, handed to each client as ``transport=``.  No SDK internals are
patched.

HTTP-level retries stay with azure-core's ``RetryPolicy`` (configured here, logged through the
``deployctl`` logger); whole-operation retries belong to :mod:`orchestrator.retry`, called with
``http_retried=True`` so nothing is retried twice over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class AzureSession:
    """Credential and transport for every Azure client of a run.

    ``credential``: any azure-core ``TokenCredential``; None means ``DefaultAzureCredential``
    (built lazily, only when a target first needs it).
    ``transport``: an azure-core ``HttpTransport``; None means the real network.
    ``simulator``: the simulator object behind ``transport`` when simulating (targets may ask it
    for its virtual clock, never for shortcuts around the REST API).
    ``credentials_by_subscription``: other credentials for other subscriptions (cross-subscription
    model copies).
    """

    credential: Any = None
    transport: Any = None
    simulator: Any = None
    polling_interval: float | None = None  # seconds between LRO polls; None: the service's advice
    credentials_by_subscription: dict[str, Any] = field(default_factory=dict)
    retry_total: int = 3

    def get_credential(self, subscription: str | None = None) -> Any:
        if subscription and subscription in self.credentials_by_subscription:
            return self.credentials_by_subscription[subscription]
        if self.credential is None:
            from azure.identity import DefaultAzureCredential

            self.credential = DefaultAzureCredential()
        return self.credential

    def storage_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for azure-storage clients.  They keep their own retry policy (it knows
        ranged downloads and secondary endpoints; an azure-core RetryPolicy in its place breaks
        ``download_blob``), bounded by the same ``retry_total``."""
        kw: dict[str, Any] = {"retry_total": self.retry_total}
        if self.transport is not None:
            kw["transport"] = self.transport
        return kw

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for every azure SDK management client constructor (ARM, Azure ML);
        storage clients take :meth:`storage_kwargs`."""
        from orchestrator.azure.policies import LoggedRetryPolicy

        kw: dict[str, Any] = {"retry_policy": LoggedRetryPolicy(retry_total=self.retry_total)}
        if self.transport is not None:
            kw["transport"] = self.transport
        if self.polling_interval is not None:
            kw["polling_interval"] = self.polling_interval
        return kw
