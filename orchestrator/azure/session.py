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

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.target import RunOptions

# Where the run's session lives in the generic RunOptions (``options.extra[OPTIONS_KEY]``).
OPTIONS_KEY = "azure"


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
    throttle: Any = None  # the run's ArmThrottle, made on first use (one for every client)

    def get_credential(self, subscription: str | None = None) -> Any:
        if subscription and subscription in self.credentials_by_subscription:
            return self.credentials_by_subscription[subscription]
        if self.credential is None:
            from azure.identity import DefaultAzureCredential

            self.credential = DefaultAzureCredential()
        return self.credential

    def credential_for(self, subscription: str | None, source: Any = None) -> Any:
        """The credential for ``subscription``: one the session was given for it, else the one a
        manifest's ``model_source.credential`` names (``type``: azure-cli, managed-identity,
        environment), else the session's own.  The simulator takes only the session's."""
        if subscription and subscription in self.credentials_by_subscription:
            return self.credentials_by_subscription[subscription]
        if source is not None and source.type != "default" and self.simulator is None:
            from azure import identity

            if source.type == "azure-cli":
                return identity.AzureCliCredential(tenant_id=source.tenant_id)
            if source.type == "managed-identity":
                return identity.ManagedIdentityCredential(client_id=source.client_id)
            return identity.EnvironmentCredential()
        return self.get_credential(subscription)

    def storage_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for azure-storage clients.  They keep their own retry policy (it knows
        ranged downloads and secondary endpoints; an azure-core RetryPolicy in its place breaks
        ``download_blob``), bounded by the same ``retry_total``."""
        kw: dict[str, Any] = {"retry_total": self.retry_total}
        if self.transport is not None:
            kw["transport"] = self.transport
        return kw

    def arm_throttle_policy(self) -> Any:
        """The policy that keeps every client of the run under ARM's request limits together
        (:mod:`orchestrator.azure.throttle`); simulated runs wait on the simulator's clock."""
        from orchestrator.azure.policies import ArmThrottlePolicy
        from orchestrator.azure.throttle import ArmThrottle

        with _session_lock:
            if self.throttle is None:
                if self.simulator is not None:  # the simulated ARM's limits, on its clock
                    self.throttle = ArmThrottle(clock=self.simulator.clock.now,
                                                limits=self.simulator.arm_limits or {})
                else:
                    self.throttle = ArmThrottle()
        return ArmThrottlePolicy(self.throttle)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for every azure SDK management client constructor (ARM, Azure ML);
        storage clients take :meth:`storage_kwargs`."""
        from orchestrator.azure.policies import LoggedRetryPolicy

        kw: dict[str, Any] = {"retry_policy": LoggedRetryPolicy(retry_total=self.retry_total),
                              "per_retry_policies": [self.arm_throttle_policy()]}
        if self.transport is not None:
            kw["transport"] = self.transport
        if self.polling_interval is not None:
            kw["polling_interval"] = self.polling_interval
        return kw


_session_lock = threading.Lock()


def session_of(options: RunOptions) -> AzureSession:
    """The run's Azure session (``options.extra["azure"]``), made on first use and shared by every
    target of the run (one credential, one token cache); a run with only local targets never
    imports the Azure SDK."""
    with _session_lock:
        session = options.extra.get(OPTIONS_KEY)
        if session is None:
            session = options.extra[OPTIONS_KEY] = AzureSession()
        assert isinstance(session, AzureSession)
        return session
