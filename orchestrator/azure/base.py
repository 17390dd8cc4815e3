"""A small base class for Azure targets: the run's session, one operation runner, tags.

An Azure target subclasses :class:`AzureTarget` and gets ``self.session`` (the run's
:class:`~orchestrator.azure.session.AzureSession`: credential, transport, simulator),
``self.op(what, fn, budget=...)`` (:func:`~orchestrator.azure.ops.run_op` with the retry budget
for that kind of operation) and ``self.sleep`` (the virtual clock under ``--simulate``).  Everything else — which
clients, which resources — is the target's own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from orchestrator.azure import quota
from orchestrator.azure.budgets import READ, Budget
from orchestrator.azure.ops import run_op, sleeper
from orchestrator.azure.session import AzureSession, session_of
from orchestrator.azure.throttle import sustainable_parallelism
from orchestrator.lazy import cached_property
from orchestrator.target import Target

T = TypeVar("T")


class AzureTarget(Target):
    # quotas are per subscription, region and VM family, whichever target draws on them
    fleet_check = staticmethod(quota.fleet_findings)
    # targets waiting on long operations at once within ARM's read refill (every request is
    # also paced by the session's ArmThrottle, so a larger --parallel waits rather than fails)
    max_parallel = sustainable_parallelism()

    @cached_property
    def session(self) -> AzureSession:
        return session_of(self.ctx.options)

    @property
    def sleep(self) -> Callable[[float], None]:
        return sleeper(self.session)

    def op(self, what: str, fn: Callable[[], T], resource: str | None = None, *, budget: Budget = READ) -> T:
        """Run one Azure operation within ``budget`` (:mod:`orchestrator.azure.budgets`; reads
        and idempotent writes by default); failures come back typed (:mod:`.errors`)."""
        return run_op(self.ctx, what, fn, resource=resource, budget=budget)

    def azure_tags(self, tags: Mapping[str, str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The Azure tags of a resource: the target's own ``tags:`` setting (when its config has
        one), then deployctl's ownership ``tags``, then ``extra``."""
        own: Any = getattr(self.config, "tags", None) or {}
        return {**own, **tags, **(extra or {})}
