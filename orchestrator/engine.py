"""The engine: plan and apply several targets concurrently, safely.

- Targets run concurrently: ``parallel`` at once, or by default each kind up to its
  ``Target.max_parallel`` (what its bottleneck sustains: cores for ``local``, ARM's request
  limits for Azure kinds), at most :data:`MAX_WORKERS` in all; two operations never run at once on one resource
  (a lock per resource key, shared across targets) nor two applies on one deployment (a lock file
  per target in the state folder, shared across processes).
- Each target reports its own outcome.  One failing target does not stop the others unless
  ``fail_fast``; the result is then failed as a whole.
- Every write goes through :func:`orchestrator.retry.call_with_retries`; reads too.
- Setting ``cancel`` (the CLI does on Ctrl-C) lets running operations finish and starts no new
  one; a wait between retries ends at once.  The result says which change is in which state.
- A saved plan is applied only if what it observed and what it desired are unchanged.
- A module a target needs and does not find is that target's input error (exit 2): one line
  naming the package and its install command (:meth:`TargetRegistry.missing_module`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from orchestrator import state
from orchestrator.errors import (
    DeployctlError,
    Interrupted,
    PlanStaleError,
    TargetError,
    UserError,
)
from orchestrator.events import Reporter
from orchestrator.manifest.model import TargetConfig
from orchestrator.manifest.validate import LoadedManifest
from orchestrator.plan import (
    Action,
    Change,
    Plan,
    TargetPlan,
    desired_digest,
    destroy_changes,
    diff_target,
    observed_digest,
    ownership_tags,
)
from orchestrator.registry import TargetRegistry, default_registry
from orchestrator.retry import RetrySettings, call_with_retries
from orchestrator.secrets import redact
from orchestrator.target import (
    Finding,
    InvokeRequest,
    InvokeResult,
    Observed,
    Resource,
    RunOptions,
    Severity,
    SmokeTest,
    Target,
    TargetContext,
)

R = TypeVar("R")
MAX_WORKERS = 128  # threads of one run (each waits on I/O; ARM's refill sustains 125 waiting targets)


def _relative(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else ""."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return ""


class ChangeOutcome(BaseModel):
    address: str
    action: Action
    status: str  # done | failed | interrupted | not-started
    error: str | None = None
    seconds: float = 0.0


class TargetOutcome(BaseModel):
    target: str
    kind: str
    ok: bool
    changes: list[ChangeOutcome] = Field(default_factory=list)
    error: str | None = None
    error_kind: str | None = None  # "input" (exit 2) or "target" (exit 1)
    outputs: dict[str, Any] = Field(default_factory=dict)
    smoke_test: SmokeTest | None = None  # what the target's smoke test said, when this apply ran one

    @property
    def writes(self) -> int:
        return sum(1 for c in self.changes if c.status in ("done", "failed", "interrupted"))


class ApplyResult(BaseModel):
    manifest: str
    targets: list[TargetOutcome]
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(t.ok for t in self.targets)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return Interrupted.exit_code
        if self.ok:
            return 0
        failed = [t for t in self.targets if not t.ok]
        return 2 if failed and all(t.error_kind == "input" for t in failed) else 1

    def _repr_html_(self) -> str:
        from orchestrator.render import apply_html

        return apply_html(self)


class ResourceStatus(BaseModel):
    address: str
    state: str  # in-sync | drifted | missing | changed | orphaned | foreign
    detail: str = ""


class TargetStatus(BaseModel):
    target: str
    kind: str
    resources: list[ResourceStatus] = Field(default_factory=list)
    outputs: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict, exclude=True)
    error: str | None = None

    @property
    def drifted(self) -> bool:
        return any(r.state == "drifted" for r in self.resources)

    def _repr_html_(self) -> str:
        from orchestrator.render import status_html

        return status_html([self])


@dataclass
class _Snapshot:
    desired: list[Resource]
    observed: list[Observed]


@dataclass
class _Locks:
    """One lock per resource key, shared by all targets of this engine."""

    _guard: threading.Lock = field(default_factory=threading.Lock)
    _locks: dict[str, threading.Lock] = field(default_factory=dict)

    def __call__(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


class Engine:
    def __init__(
        self,
        loaded: LoadedManifest,
        *,
        registry: TargetRegistry | None = None,
        state_dir: Path | None = None,
        options: RunOptions | None = None,
        reporter: Reporter | None = None,
        retry: RetrySettings = RetrySettings(),
        sleep: Callable[[float], None] | None = None,  # None: real time, cut short by ``cancel``
    ) -> None:
        self.loaded = loaded
        self.manifest = loaded.manifest
        self.registry = registry or default_registry()
        self.state_dir = (state_dir or state.default_state_dir(loaded.path)).absolute()
        self.options = options or RunOptions()
        self.reporter = reporter or Reporter()
        self.retry = retry
        self.sleep = sleep
        self.cancel = threading.Event()
        self._instances: dict[str, Target] = {}
        self._snapshots: dict[str, _Snapshot] = {}
        self._locks = _Locks()
        self._guard = threading.Lock()

    # -- targets ----------------------------------------------------------------------------
    def select(self, names: Sequence[str] | None = None) -> list[TargetConfig]:
        if not names:
            return list(self.manifest.targets)
        known = {t.name: t for t in self.manifest.targets}
        unknown = [n for n in names if n not in known]
        if unknown:
            import difflib

            hints = [f"{n!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(n, known, 1)) else "")
                     for n in unknown]
            raise UserError(f"no target named {', '.join(hints)} in {self.loaded.path.name}; "
                            f"targets: {', '.join(known)}")
        return [known[n] for n in names]

    def target(self, cfg: TargetConfig) -> Target:
        with self._guard:
            if cfg.name not in self._instances:
                cls = self.registry.get(cfg.kind)
                ctx = TargetContext(
                    manifest=self.manifest, config=cfg, manifest_path=self.loaded.path,
                    state_dir=state.target_state_dir(self.state_dir, self.manifest.name, cfg.name),
                    options=self.options, reporter=self.reporter, cancel=self.cancel,
                )
                self._instances[cfg.name] = cls(ctx)
            return self._instances[cfg.name]

    def _retry(self, cfg: TargetConfig, what: str, fn: Callable[[], Any]) -> Any:
        return call_with_retries(
            fn, what=what, settings=self.retry, sleep=self.sleep, cancel=self.cancel,
            on_retry=lambda n, wait, reason: self.reporter.retrying(cfg.name, what, n, wait, reason),
        )

    def _snapshot(self, cfg: TargetConfig) -> _Snapshot:
        t = self.target(cfg)
        desired = t.desired()
        observed = self._retry(cfg, "read", t.read)
        snap = _Snapshot(desired, observed)
        with self._guard:
            self._snapshots[cfg.name] = snap
        return snap

    def _map(self, fn: Callable[[Any], R], items: Sequence[Any], kinds: Sequence[str], parallel: int | None,
             name: str) -> list[R]:
        """``fn`` over ``items`` (``kinds[i]`` is item i's target kind) on a thread pool, in order.
        ``parallel``: that many at once.  None: each kind up to its own ``max_parallel``."""
        if not items:
            return []
        if parallel is not None:
            workers, gates = max(1, parallel), {}
        else:
            limits = {k: self._max_parallel(k) for k in set(kinds)}
            workers = min(MAX_WORKERS, sum(min(limits[k] or len(items), kinds.count(k)) for k in limits))
            gates = {k: threading.BoundedSemaphore(n) for k, n in limits.items() if n and n < kinds.count(k)}

        def one(i: int) -> R:
            gate = gates.get(kinds[i])
            if gate is None:
                return fn(items[i])
            with gate:
                return fn(items[i])

        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=name) as pool:
            return list(pool.map(one, range(len(items))))

    def _max_parallel(self, kind: str) -> int | None:
        try:
            return self.registry.get(kind).max_parallel
        except DeployctlError:  # an unknown or broken kind: its plan says so; it runs at once
            return None

    # -- plan -------------------------------------------------------------------------------
    def plan(self, names: Sequence[str] | None = None, *, parallel: int | None = None, destroy: bool = False) -> Plan:
        cfgs = self.select(names)
        plans = self._map(lambda c: self._plan_one(c, destroy), cfgs, [c.kind for c in cfgs], parallel, "plan")
        if not destroy:
            plans = self._fleet_checks(cfgs, plans)
        return Plan(manifest=str(self.loaded.path), manifest_relative=_relative(self.loaded.path),
                    manifest_name=self.manifest.name,
                    manifest_digest=self.loaded.digest, destroy=destroy, targets=plans)

    def _fleet_checks(self, cfgs: list[TargetConfig], plans: list[TargetPlan]) -> list[TargetPlan]:
        """Each distinct ``Target.fleet_check`` of the planned kinds, once, over every plan."""
        hooks: list[Any] = []
        for cfg in cfgs:
            try:
                hook = self.registry.get(cfg.kind).fleet_check
            except DeployctlError:  # an unknown or broken kind: its own plan already says so
                continue
            if hook not in hooks:
                hooks.append(hook)
        extra: dict[str, list[Finding]] = {}
        for hook in hooks:
            for name, found in hook(plans).items():
                extra.setdefault(name, []).extend(found)
        return [tp.model_copy(update={"findings": [*tp.findings, *extra[tp.target]]}) if tp.target in extra else tp
                for tp in plans]

    def _plan_one(self, cfg: TargetConfig, destroy: bool) -> TargetPlan:
        try:
            snap = self._snapshot(cfg)
            if destroy:
                changes = destroy_changes(snap.observed, self.manifest.name, cfg.name)
                findings: list[Finding] = []
            else:
                changes, findings = diff_target(snap.desired, snap.observed, self.manifest.name, cfg.name)
                findings += self.target(cfg).check(changes)
            return TargetPlan(target=cfg.name, kind=cfg.kind, changes=changes, findings=findings,
                              observed_digest=observed_digest(snap.observed),
                              desired_digest=desired_digest([] if destroy else snap.desired))
        except ModuleNotFoundError as e:
            return TargetPlan(target=cfg.name, kind=cfg.kind, error=str(self.registry.missing_module(cfg.kind, e)),
                              error_kind="input")
        except DeployctlError as e:
            return TargetPlan(target=cfg.name, kind=cfg.kind, error=redact(str(e)),
                              error_kind="input" if isinstance(e, UserError) else "target")
        except Exception as e:  # an SDK error we did not anticipate: still per target
            return TargetPlan(target=cfg.name, kind=cfg.kind, error=redact(f"{type(e).__name__}: {e}"),
                              error_kind="target")

    # -- apply ------------------------------------------------------------------------------
    def apply(
        self,
        plan: Plan,
        *,
        parallel: int | None = None,
        fail_fast: bool = False,
        check_fresh: bool = True,
    ) -> ApplyResult:
        """Carry out ``plan``.  With ``check_fresh`` (a saved plan), first re-read every target
        and refuse, writing nothing, if what the plan observed or desired has changed."""
        if plan.manifest_name != self.manifest.name:
            raise PlanStaleError(f"this plan is for manifest {plan.manifest_name!r}, not {self.manifest.name!r}")
        if check_fresh:
            self._check_fresh(plan, parallel)
        stop = threading.Event()
        runnable = [tp for tp in plan.targets]

        def run(tp: TargetPlan) -> TargetOutcome:
            out = self._apply_one(tp, stop)
            if not out.ok and fail_fast:
                stop.set()
            return out

        outcomes = self._map(run, runnable, [tp.kind for tp in runnable], parallel, "apply")
        return ApplyResult(manifest=str(self.loaded.path), targets=outcomes, interrupted=self.cancel.is_set())

    def _check_fresh(self, plan: Plan, parallel: int | None) -> None:
        if plan.manifest_digest != self.loaded.digest:
            raise PlanStaleError(
                "the manifest (or a variable it uses) changed since this plan was made",
                hint="run deployctl plan again and review the new plan",
            )
        cfgs = self.select([tp.target for tp in plan.targets])
        snaps = self._map(self._snapshot, cfgs, [c.kind for c in cfgs], parallel, "refresh")
        stale = []
        for tp, snap in zip(plan.targets, snaps, strict=True):
            if tp.error:
                continue
            if observed_digest(snap.observed) != tp.observed_digest:
                stale.append(f"{tp.target}: the deployed resources changed")
            elif not plan.destroy and desired_digest(snap.desired) != tp.desired_digest:
                stale.append(f"{tp.target}: the model, code or environment files changed")
        if stale:
            raise PlanStaleError("the plan is stale; nothing was applied:\n  " + "\n  ".join(stale),
                                 hint="run deployctl plan again and review the new plan")

    def _apply_one(self, tp: TargetPlan, stop: threading.Event) -> TargetOutcome:
        cfg = self.select([tp.target])[0]
        base: dict[str, Any] = dict(target=tp.target, kind=tp.kind)
        if tp.error:
            return TargetOutcome(ok=False, error=tp.error, error_kind=tp.error_kind, **base)
        blocking = [f for f in tp.findings if f.severity is Severity.error]
        if blocking:
            msg = "; ".join(f.message + (f" (to fix: {f.hint})" if f.hint else "") for f in blocking)
            self.reporter.target_finished(tp.target, False)
            return TargetOutcome(ok=False, error=f"blocked before any write: {msg}", error_kind="target", **base)
        try:
            t = self.target(cfg)
        except ModuleNotFoundError as e:
            return TargetOutcome(ok=False, error=str(self.registry.missing_module(cfg.kind, e)), error_kind="input", **base)
        lock = state.target_state_dir(self.state_dir, self.manifest.name, tp.target) / ".apply.lock"
        try:
            with state.exclusive(lock, f"target {tp.target!r} of {self.manifest.name!r}"):
                return self._run_changes(t, cfg, tp, stop)
        except UserError as e:
            return TargetOutcome(ok=False, error=str(e), error_kind="input", **base)

    def _run_changes(self, t: Target, cfg: TargetConfig, tp: TargetPlan, stop: threading.Event) -> TargetOutcome:
        snap = self._snapshots.get(cfg.name) or self._snapshot(cfg)
        desired = {r.address: r for r in snap.desired}
        observed = {o.address: o for o in snap.observed}
        results: list[ChangeOutcome] = []
        failed: str | None = None
        error_kind: str | None = None
        pending = tp.pending
        t.ctx.smoke_test = None  # this apply's, not a previous one's
        for i, change in enumerate(pending):
            if self.cancel.is_set() or stop.is_set() or failed:
                results += [ChangeOutcome(address=c.address, action=c.action, status="not-started") for c in pending[i:]]
                break
            started = time.monotonic()
            self.reporter.change_started(cfg.name, change.action.value, change.address)
            try:
                with self._locks(change.lock_key):
                    self._execute(t, cfg, change, desired.get(change.address), observed.get(change.address))
                status, err = ("interrupted" if self.cancel.is_set() else "done"), None
            except Interrupted as e:
                status, err = "interrupted", str(e)
            except ModuleNotFoundError as e:
                status, err, error_kind = "failed", str(self.registry.missing_module(cfg.kind, e)), "input"
            except DeployctlError as e:
                status, err = "failed", redact(str(e))
                error_kind = "input" if isinstance(e, UserError) else "target"
            except Exception as e:
                status, err = "failed", redact(f"{type(e).__name__}: {e}")
                error_kind = "target"
            results.append(ChangeOutcome(address=change.address, action=change.action, status=status,
                                         error=err, seconds=round(time.monotonic() - started, 3)))
            self.reporter.change_finished(cfg.name, change.action.value, change.address, status != "failed", err)
            if status == "failed":
                failed = f"{change.action.value} {change.address} failed: {err}"
        ok = failed is None and all(r.status == "done" for r in results)
        outputs: dict[str, Any] = {}
        if ok:
            try:
                after = snap.observed if not pending else self._retry(cfg, "read", t.read)
                outputs = t.outputs(after)
                for v in t.secrets(after).values():
                    t.ctx.secret(v)
            except Exception as e:  # outputs are a courtesy; the apply itself succeeded
                self.reporter.warning(cfg.name, f"could not read outputs: {redact(str(e))}")
        self.reporter.target_finished(cfg.name, ok, outputs)
        error = failed or (None if ok else "interrupted before all changes ran")
        return TargetOutcome(target=cfg.name, kind=cfg.kind, ok=ok, changes=results, error=error,
                             error_kind=error_kind if failed else None, outputs=outputs,
                             smoke_test=t.ctx.smoke_test)

    def _execute(self, t: Target, cfg: TargetConfig, change: Change, resource: Resource | None,
                 observed: Observed | None) -> None:
        what = f"{change.action.value} {change.address}"
        if change.action is Action.delete:
            if observed is None:
                raise TargetError("the resource to delete was not observed", target=cfg.name, resource=change.address)
            self._retry(cfg, what, lambda: t.delete(observed))
            return
        if resource is None:
            raise PlanStaleError(f"{change.address} is in the plan but no longer desired by the manifest")
        tags = ownership_tags(self.manifest.name, cfg.name, resource.spec)
        if change.action is Action.create:
            self._retry(cfg, what, lambda: t.create(resource, tags))
        elif change.action is Action.update:
            assert observed is not None
            self._retry(cfg, what, lambda: t.update(resource, observed, tags))
        elif change.action is Action.replace:
            assert observed is not None
            self._retry(cfg, f"delete {change.address}", lambda: t.delete(observed))
            self._retry(cfg, f"create {change.address}", lambda: t.create(resource, tags))

    # -- status, invoke, logs ---------------------------------------------------------------
    def status(self, names: Sequence[str] | None = None, *, parallel: int | None = None) -> list[TargetStatus]:
        cfgs = self.select(names)
        return self._map(self._status_one, cfgs, [c.kind for c in cfgs], parallel, "status")

    def _status_one(self, cfg: TargetConfig) -> TargetStatus:
        base: dict[str, Any] = dict(target=cfg.name, kind=cfg.kind)
        try:
            t = self.target(cfg)
            snap = self._snapshot(cfg)
            changes, findings = diff_target(snap.desired, snap.observed, self.manifest.name, cfg.name)
        except ModuleNotFoundError as e:
            return TargetStatus(error=str(self.registry.missing_module(cfg.kind, e)), **base)
        except Exception as e:
            return TargetStatus(error=redact(str(e)), **base)
        states = {Action.noop: "in-sync", Action.create: "missing", Action.delete: "orphaned"}
        rows = []
        for c in changes:
            st = "drifted" if c.drift else states.get(c.action, "changed")
            detail = ", ".join(d.path for d in c.diff) if c.diff else c.reason
            rows.append(ResourceStatus(address=c.address, state=st, detail=detail))
        rows += [ResourceStatus(address="-", state="foreign", detail=f.message) for f in findings]
        try:
            outputs = t.outputs(snap.observed)
            secrets = t.secrets(snap.observed)
            for v in secrets.values():
                t.ctx.secret(v)
        except Exception as e:
            return TargetStatus(resources=rows, error=redact(str(e)), **base)
        return TargetStatus(resources=rows, outputs=outputs, secrets=secrets, **base)

    def invoke(self, name: str, request: InvokeRequest) -> InvokeResult:
        cfg = self.select([name])[0]
        try:
            return self.target(cfg).invoke(request)
        except ModuleNotFoundError as e:
            raise self.registry.missing_module(cfg.kind, e) from None

    def logs(self, name: str, *, tail: int = 100, deployment: str | None = None) -> str:
        cfg = self.select([name])[0]
        try:
            return redact(self.target(cfg).logs(tail=tail, deployment=deployment))
        except ModuleNotFoundError as e:
            raise self.registry.missing_module(cfg.kind, e) from None
