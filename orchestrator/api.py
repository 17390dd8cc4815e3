"""The Python API: what notebooks and pipelines call, and what the CLI itself calls.

    import orchestrator as deployctl

    d = deployctl.load("examples/quickstart/deployctl.yaml")
    plan = d.plan()            # a Plan value: print it, save plan.to_json(), review it
    result = d.apply(plan)     # an ApplyResult: result.ok, result.targets[0].outputs
    d.invoke(body={"data": [[0.1, 0.2, 0.3, 0.4]]})
    d.destroy()

Results are values (pydantic models) with an HTML view in Jupyter; nothing is printed.  Any
azure-core ``TokenCredential`` may be passed as ``credential=``.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.engine import ApplyResult, Engine, TargetStatus
from orchestrator.errors import PlanStaleError, UserError
from orchestrator.events import Reporter
from orchestrator.manifest.validate import LoadedManifest, load_manifest
from orchestrator.plan import Plan
from orchestrator.registry import TargetRegistry
from orchestrator.target import InvokeRequest, InvokeResult, RunOptions

if TYPE_CHECKING:
    from orchestrator.azure.session import AzureSession


class StatusReport(list[TargetStatus]):
    """The status of each target; a list with an HTML view."""

    def _repr_html_(self) -> str:
        from orchestrator.render import status_html

        return status_html(list(self))


class Deployment:
    """A loaded manifest and the engine that acts on it."""

    def __init__(
        self,
        loaded: LoadedManifest,
        *,
        state_dir: Path | None = None,
        credential: Any = None,
        azure: AzureSession | None = None,
        reporter: Reporter | None = None,
        skip_quota_check: bool = False,
        registry: TargetRegistry | None = None,
    ) -> None:
        # One session for every Azure target of the run; its clients are built on first use.
        # Without a credential or a session to pass, the first Azure target makes it
        # (orchestrator.azure.session.session_of): a local-only run never imports the Azure layer.
        extra: dict[str, Any] = {}
        if azure is not None or credential is not None:
            from orchestrator.azure.session import OPTIONS_KEY, AzureSession  # no Azure SDK import

            extra[OPTIONS_KEY] = azure if azure is not None else AzureSession(credential=credential)
        options = RunOptions(skip_quota_check=skip_quota_check, extra=extra)
        self.loaded = loaded
        self.engine = Engine(loaded, registry=registry, state_dir=state_dir, options=options, reporter=reporter)
        # The plans this object made, by identity of live objects (weak: a notebook's discarded
        # plans are freed).  Never by id(): a plan loaded from JSON can be allocated where a
        # discarded plan was, take its id, and skip the freshness check.
        self._own_plans: list[weakref.ref[Plan]] = []

    @property
    def manifest(self):  # noqa: ANN201 - the Manifest model
        return self.loaded.manifest

    def plan(self, targets: Sequence[str] | None = None, *, parallel: int | None = None) -> Plan:
        return self._remember(self.engine.plan(targets, parallel=parallel))

    def plan_destroy(self, targets: Sequence[str] | None = None, *, parallel: int | None = None) -> Plan:
        return self._remember(self.engine.plan(targets, parallel=parallel, destroy=True))

    def _remember(self, plan: Plan) -> Plan:
        self._own_plans = [r for r in self._own_plans if r() is not None] + [weakref.ref(plan)]
        return plan

    def _made_here(self, plan: Plan) -> bool:
        return any(r() is plan for r in self._own_plans)

    def apply(
        self,
        plan: Plan | None = None,
        *,
        targets: Sequence[str] | None = None,
        parallel: int | None = None,
        fail_fast: bool = False,
    ) -> ApplyResult:
        """Apply ``plan`` (a fresh one when None).  A plan not made by this object — loaded from
        JSON — is applied only if nothing it observed or desired has changed since."""
        if plan is None:
            plan = self.plan(targets, parallel=parallel)
        fresh = not self._made_here(plan)
        return self.engine.apply(plan, parallel=parallel, fail_fast=fail_fast, check_fresh=fresh)

    def destroy(self, targets: Sequence[str] | None = None, *, parallel: int | None = None, fail_fast: bool = False) -> ApplyResult:
        return self.apply(self.plan_destroy(targets, parallel=parallel), parallel=parallel, fail_fast=fail_fast)

    def status(self, targets: Sequence[str] | None = None) -> StatusReport:
        return StatusReport(self.engine.status(targets))

    def _one_target(self, target: str | None) -> str:
        if target:
            return target
        names = [t.name for t in self.manifest.targets]
        if len(names) == 1:
            return names[0]
        raise UserError(f"the manifest has several targets ({', '.join(names)}); say which one with --target")

    def invoke(self, target: str | None = None, body: Any = None, **kw: Any) -> InvokeResult:
        return self.engine.invoke(self._one_target(target), InvokeRequest(body=body, **kw))

    def logs(self, target: str | None = None, *, tail: int = 100, deployment: str | None = None) -> str:
        return self.engine.logs(self._one_target(target), tail=tail, deployment=deployment)


def load(
    source: str | Path | Mapping[str, Any],
    *,
    vars: Mapping[str, str] | None = None,  # noqa: A002 - reads best in notebooks
    base_dir: Path | None = None,
    **kw: Any,
) -> Deployment:
    """Load a manifest from a path, a YAML string or a dict, and return a :class:`Deployment`."""
    return Deployment(load_manifest(source, variables=vars, base_dir=base_dir), **kw)


def read_plan(path: str | Path) -> Plan:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise UserError(f"cannot read plan {path}: {e.strerror or e}") from None
    try:
        plan = Plan.from_json(text)
    except ValueError as e:
        raise UserError(f"{path} is not a deployctl plan: {str(e).splitlines()[0]}") from None
    return plan


def load_for_plan(plan: Plan, *, vars: Mapping[str, str] | None = None, **kw: Any) -> Deployment:  # noqa: A002
    """The deployment a saved plan was made for (its manifest, as it is now).

    The manifest is looked up where the plan was made, then at the same path relative to the
    working directory: a pipeline's apply job may run in another checkout folder than its plan
    job.  The manifest's digest check still guarantees it is the same manifest."""
    path = Path(plan.manifest)
    if not path.exists() and plan.manifest_relative and (Path.cwd() / plan.manifest_relative).exists():
        path = Path.cwd() / plan.manifest_relative
    if not path.exists():
        raise PlanStaleError(f"the plan's manifest {plan.manifest} no longer exists"
                             + (f" (nor {plan.manifest_relative} here)" if plan.manifest_relative else ""))
    return Deployment(load_manifest(path, variables=vars), **kw)
