"""The target plugin contract: one class per target kind.

A target turns the manifest into *resources* and keeps them in line with it.  The engine does the
rest — diffing, ordering, retries, locking, concurrency, reporting — so a new target is one class
with five small methods:

====================  =====================================================================
``desired()``         Pure: the resources this target wants, as plain JSON-able specs.
``read()``            Read-only: the resources that exist now (owned by deployctl, or standing
                      where a desired one would go).  Never writes.
``create(r, tags)``   Make ``r`` exist with the ownership ``tags``.  Must be safe to call again
                      after a failure (the retry layer may): use create-or-update semantics, and
                      leave nothing half-made behind when it raises.
``update(r, o, ...)`` Bring an existing resource ``o`` to spec ``r``.  Defaults to ``create``.
``delete(o)``         Remove ``o``.  If it raises, assume the resource still exists.
====================  =====================================================================

and, for using what was deployed: ``invoke()`` (score a request), ``outputs()`` (scoring URI,
versions...), ``secrets()`` (keys, only shown on request) and ``logs()``.  ``check()`` may add
findings to a plan (quota shortfalls, sizing decisions) before anything is written.

Targets are registered through the ``deployctl.targets`` entry-point group, the built-in ones
exactly like a third party's (see :mod:`orchestrator.registry`).  Import heavy SDKs inside the
methods that need them, never at module import, so ``validate`` and ``--help`` stay instant.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.errors import TargetError
from orchestrator.manifest.model import Manifest, ScoringType, TargetConfig

if TYPE_CHECKING:
    from orchestrator.events import Reporter
    from orchestrator.plan import Change, TargetPlan

# Ownership tags on every resource deployctl creates.  Azure tag names allow '-' but not '/'.
TAG_MANIFEST = "deployctl-manifest"
TAG_TARGET = "deployctl-target"
TAG_SPEC = "deployctl-spec"


class Addressed:
    """``type/name`` addressing shared by resources, observations and plan changes."""

    type: str
    name: str
    key: str

    @property
    def address(self) -> str:
        return f"{self.type}/{self.name}"

    @property
    def lock_key(self) -> str:
        """What the engine locks on: the global key when there is one, else the address."""
        return self.key or self.address


@dataclass(frozen=True)
class Resource(Addressed):
    """A resource a target wants to exist.

    ``spec`` holds only the fields deployctl manages; they are what ``plan`` diffs against what
    ``read()`` reports.  Never put a secret in a spec: plans are printed and saved as artifacts.  ``key`` identifies the resource globally (an ARM id, a port, a path):
    the engine never runs two operations at once on one key, across targets.  A change to any
    field in ``replace_on`` replaces the resource instead of updating it in place.  Fields in
    ``exact`` compare as whole values: a key the service has and the spec does not (say, a
    deployment's share of traffic) is a change, not a server-side default.
    """

    type: str
    name: str
    spec: Mapping[str, Any]
    key: str = ""
    depends_on: tuple[str, ...] = ()
    replace_on: tuple[str, ...] = ()
    exact: tuple[str, ...] = ()


@dataclass(frozen=True)
class Observed(Addressed):
    """A resource as it exists now: its managed fields, its tags and an opaque version (ETag).
    ``on_delete`` says what ``delete`` really does when that is not a deletion (an asset version
    archived, a shared environment forgotten but kept): plans show it, so none says "delete" of
    something that will still exist."""

    type: str
    name: str
    spec: Mapping[str, Any]
    tags: Mapping[str, str] = field(default_factory=dict)
    key: str = ""
    version: str | None = None
    on_delete: str | None = None


class Severity(str, Enum):
    info = "info"
    warning = "warning"
    error = "error"


class Finding(BaseModel):
    """Something ``check()`` found while planning. An ``error`` finding blocks apply."""

    model_config = ConfigDict(frozen=True)

    severity: Severity
    message: str
    hint: str | None = None
    # plain data for checks across targets (e.g. a quota demand: orchestrator.azure.quota)
    data: dict[str, Any] | None = None


class InvokeRequest(BaseModel):
    """What ``deployctl invoke`` asks a target to do."""

    body: Any = None
    deployment: str | None = Field(None, description="Address one deployment directly (blue/green).")
    run_async: bool = Field(False, description="Near-real-time: queue the request, return its id.")
    request_id: str | None = Field(None, description="Fetch the result of an earlier async request.")
    idempotency_key: str | None = None
    inputs: list[Path] = Field(default_factory=list, description="Batch: input files or folders.")
    output: Path | None = Field(None, description="Batch: where predictions go.")
    timeout_s: float = 60.0


class InvokeResult(BaseModel):
    ok: bool
    status_code: int | None = None
    body: Any = None
    request_id: str | None = None
    state: str | None = None
    output: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class SmokeTest(BaseModel):
    """The smoke test an apply ran on what it deployed (``scoring.sample_request``), as the
    target reports it through :meth:`TargetContext.smoke_tested`; the apply report shows it."""

    passed: bool
    status: int | str | None = None  # the HTTP status, or the request's / job's final state
    latency_ms: float | None = None
    detail: str = ""


@dataclass
class RunOptions:
    """Switches that change how targets talk to the world (never whether they write)."""

    skip_quota_check: bool = False
    # Provider-owned settings, each under its provider's key, so the contract names no cloud:
    # "azure" holds the run's orchestrator.azure.AzureSession (credential, transport, simulator).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TargetContext:
    """Everything a target instance may use. Targets write files only under ``state_dir``."""

    manifest: Manifest
    config: TargetConfig
    manifest_path: Path
    state_dir: Path
    options: RunOptions = field(default_factory=RunOptions)
    reporter: Reporter | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    smoke_test: SmokeTest | None = None  # the last one this apply ran (the engine resets it)

    @property
    def base_dir(self) -> Path:
        return self.manifest_path.parent

    def progress(self, message: str) -> None:
        if self.reporter:
            self.reporter.progress(self.config.name, message)

    def warn(self, message: str) -> None:
        if self.reporter:
            self.reporter.warning(self.config.name, message)

    def advance(self, what: str, done: int, total: int) -> None:
        """Countable progress: ``done`` of ``total`` (a bar on a terminal, a percentage in CI)."""
        if self.reporter:
            self.reporter.advance(self.config.name, what, done, total)

    def smoke_tested(self, passed: bool, *, status: int | str | None = None, latency_ms: float | None = None,
                     detail: str = "") -> None:
        """Record the smoke test of what was just deployed: the apply report shows it for every
        target the same way (passed or failed, status, latency)."""
        self.smoke_test = SmokeTest(passed=passed, status=status, detail=detail,
                                    latency_ms=None if latency_ms is None else round(latency_ms, 1))

    def secret(self, value: str) -> None:
        """Declare ``value`` secret before it can reach any output: it is masked everywhere."""
        from orchestrator.secrets import register_secret

        register_secret(value)
        if self.reporter:
            self.reporter.secret(value)


class Target(ABC):
    """Base class of every target plugin. See the module docstring for the contract."""

    kind: ClassVar[str]
    scoring_types: ClassVar[frozenset[ScoringType]]
    config_model: ClassVar[type[TargetConfig]]
    description: ClassVar[str] = ""
    # True when the target builds its Python environment on this machine: `deployctl validate`
    # then checks the interpreter the manifest asks for is installed where uv finds it.
    local_python: ClassVar[bool] = False
    # How many targets of this kind the engine works on at once when ``--parallel`` is not
    # given: what the kind's bottleneck sustains (this machine's cores for targets that build
    # here; the cloud's request limits for cloud targets).  None: no limit of its own.
    max_parallel: ClassVar[int | None] = None

    def __init__(self, ctx: TargetContext) -> None:
        self.ctx = ctx
        self.manifest = ctx.manifest
        self.config = ctx.config

    # -- planning -------------------------------------------------------------------------
    @abstractmethod
    def desired(self) -> list[Resource]:
        """The resources this target should have, in dependency order. Pure: no I/O but
        reading the manifest's local files (content hashes)."""

    @abstractmethod
    def read(self) -> list[Observed]:
        """The resources that exist now: those tagged as this manifest's and target's, and any
        standing at a desired resource's address.  Read-only."""

    def check(self, changes: list[Change]) -> list[Finding]:
        """Preflight before any write (quota, sizing, permissions). Read-only."""
        return []

    @staticmethod
    def fleet_check(plans: Sequence[TargetPlan]) -> Mapping[str, list[Finding]]:
        """A check across the targets of a plan (a quota several targets draw from): pure, over
        every target's plan, called once per distinct function after each target's ``check()``;
        the findings to add, by target name.  It reads what ``check()`` put in ``Finding.data``."""
        return {}

    # -- writing --------------------------------------------------------------------------
    @abstractmethod
    def create(self, resource: Resource, tags: Mapping[str, str]) -> None:
        """Create ``resource`` with ``tags``.  Transactional and safe to retry: when it raises,
        nothing half-made is left behind, and calling it again after a transient error is
        harmless (create-or-update)."""

    def update(self, resource: Resource, observed: Observed, tags: Mapping[str, str]) -> None:
        """Bring ``observed`` to ``resource``'s spec. Safe to retry. Defaults to ``create``."""
        self.create(resource, tags)

    @abstractmethod
    def delete(self, observed: Observed) -> None:
        """Delete ``observed``.  Idempotent (already gone is success).  If it raises, the
        resource must be assumed to still exist."""

    # -- using ----------------------------------------------------------------------------
    def outputs(self, observed: list[Observed]) -> dict[str, Any]:
        """Non-secret facts about what is deployed: scoring URI, versions, traffic, health."""
        return {}

    def secrets(self, observed: list[Observed]) -> dict[str, str]:
        """Keys and tokens; shown only when asked (``status --show-keys``)."""
        return {}

    def invoke(self, request: InvokeRequest) -> InvokeResult:
        raise TargetError(f"target kind {self.kind!r} does not support invoke", target=self.config.name)

    def logs(self, tail: int = 100, deployment: str | None = None) -> str:
        raise TargetError(f"target kind {self.kind!r} does not provide logs", target=self.config.name)

    # -- helpers for subclasses -----------------------------------------------------------
    def fail(self, message: str, **kw: Any) -> TargetError:
        return TargetError(message, target=self.config.name, **kw)
