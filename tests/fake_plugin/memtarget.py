"""A test-only target that keeps resources in an in-memory "cloud" (or a JSON file).

It is installed the way a third-party plugin is: through a ``deployctl.targets`` entry point in
a dist-info folder on sys.path (see tests/conftest.py).  Tests script its faults and delays and
read its write log, so the engine is exercised without mocking the engine's own functions.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from orchestrator.manifest.model import ScoringType, TargetConfig
from orchestrator.target import Finding, InvokeRequest, InvokeResult, Observed, Resource, Severity, Target


@dataclass
class Cloud:
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: list[tuple[str, str]] = field(default_factory=list)  # (operation, address)
    reads: int = 0
    timeline: list[tuple[str, str, str, float]] = field(default_factory=list)  # (event, target, address, t)
    faults: dict[str, list[BaseException]] = field(default_factory=dict)  # "create:<address>" -> errors
    delay: float = 0.0
    hook: Any = None  # called as hook(operation, address) inside each write
    lock: threading.Lock = field(default_factory=threading.Lock)


CLOUDS: dict[str, Cloud] = {}


def cloud(name: str) -> Cloud:
    # MEMTARGET_DELAY slows every write (for tests that interrupt a real CLI process).
    return CLOUDS.setdefault(name, Cloud(delay=float(os.environ.get("MEMTARGET_DELAY", "0"))))


class MemoryConfig(TargetConfig):
    kind: Literal["memory"] = "memory"
    cloud: str = Field("default", description="Which in-memory cloud.")
    things: list[str] = Field(default_factory=lambda: ["endpoint", "deployment"], description="Resources to create.")
    size: int = Field(1, ge=1, description="A managed field.")
    shared_key: str | None = Field(None, description="Lock key shared with other targets (same resource).")
    file: str | None = Field(None, description="Persist the cloud in this JSON file (for CLI tests).")
    quota: int | None = Field(None, description="Fail check() when size exceeds it.")
    sdk: str | None = Field(None, description="A module read() imports lazily, as an SDK-backed target does.")


class MemoryTarget(Target):
    kind = "memory"
    scoring_types = frozenset({ScoringType.real_time, ScoringType.batch})
    config_model = MemoryConfig
    description = "test-only in-memory target"

    @property
    def cfg(self) -> MemoryConfig:
        assert isinstance(self.config, MemoryConfig)
        return self.config

    def _cloud(self) -> Cloud:
        c = cloud(self.cfg.cloud)
        with c.lock:
            self._load(c)
        return c

    def _load(self, c: Cloud) -> None:
        if self.cfg.file and os.path.exists(self.cfg.file):
            c.resources = json.loads(Path(self.cfg.file).read_text())

    def _save(self, c: Cloud) -> None:
        if self.cfg.file:
            Path(self.cfg.file).write_text(json.dumps(c.resources))

    def desired(self) -> list[Resource]:
        out = []
        for thing in self.cfg.things:
            key = f"{self.cfg.shared_key}/{thing}" if self.cfg.shared_key else ""
            out.append(Resource(type="memory.thing", name=f"{self.manifest.name}-{self.config.name}-{thing}",
                                spec={"size": self.cfg.size, "scoring": self.manifest.scoring.type.value},
                                key=key, replace_on=("region",)))
        return out

    def read(self) -> list[Observed]:
        if self.cfg.sdk:
            import importlib

            importlib.import_module(self.cfg.sdk)
        c = self._cloud()
        c.reads += 1
        wanted = {r.address for r in self.desired()}
        out = []
        for addr, r in sorted(c.resources.items()):
            tags = r["tags"]
            if addr in wanted or (tags.get("deployctl-manifest") == self.manifest.name
                                  and tags.get("deployctl-target") == self.config.name):
                typ, name = addr.split("/", 1)
                out.append(Observed(type=typ, name=name, spec=r["spec"], tags=tags, version=str(r["version"])))
        return out

    def check(self, changes: list[Any]) -> list[Finding]:
        if self.cfg.quota is not None and self.cfg.size > self.cfg.quota:
            return [Finding(severity=Severity.error, message=f"size {self.cfg.size} exceeds quota {self.cfg.quota}")]
        return [Finding(severity=Severity.info, message=f"size {self.cfg.size} fits")]

    def _write(self, op: str, address: str, fn: Any) -> None:
        c = self._cloud()
        c.timeline.append(("start", self.config.name, address, time.monotonic()))
        try:
            with c.lock:
                c.writes.append((op, address))
                queue = c.faults.get(f"{op}:{address}")
                if queue:
                    raise queue.pop(0)
            if c.hook:
                c.hook(op, address)
            if c.delay:
                time.sleep(c.delay)
            with c.lock:  # read-modify-write of the file-backed cloud, atomically
                self._load(c)
                fn(c)
                self._save(c)
        finally:
            c.timeline.append(("end", self.config.name, address, time.monotonic()))

    def create(self, resource: Resource, tags: Mapping[str, str]) -> None:
        def do(c: Cloud) -> None:
            old = c.resources.get(resource.address, {"version": 0})
            c.resources[resource.address] = {"spec": dict(resource.spec), "tags": dict(tags), "version": old["version"] + 1}

        self._write("create", resource.address, do)
        if resource.name.endswith("-deployment") and self.manifest.scoring.sample_request:
            started = time.monotonic()  # what a serving target does: score the sample on what it deployed
            answer = self.invoke(InvokeRequest(body=self.manifest.scoring.sample_request.read_text()))
            self.ctx.smoke_tested(answer.ok, status=answer.status_code, latency_ms=1000 * (time.monotonic() - started))

    def update(self, resource: Resource, observed: Observed, tags: Mapping[str, str]) -> None:
        def do(c: Cloud) -> None:
            c.resources[resource.address] = {"spec": dict(resource.spec), "tags": dict(tags),
                                             "version": c.resources[resource.address]["version"] + 1}

        self._write("update", resource.address, do)

    def delete(self, observed: Observed) -> None:
        self._write("delete", observed.address, lambda c: c.resources.pop(observed.address, None))

    def outputs(self, observed: list[Observed]) -> dict[str, Any]:
        return {"things": len(observed), "url": f"memory://{self.cfg.cloud}/{self.config.name}"}

    def secrets(self, observed: list[Observed]) -> dict[str, str]:
        return {"key": f"sekret-{self.config.name}-0123456789"}

    def invoke(self, request: InvokeRequest) -> InvokeResult:
        if request.run_async:  # queued, as a near-real-time target answers
            return InvokeResult(ok=True, status_code=202, request_id="req-0001", state="queued")
        return InvokeResult(ok=True, status_code=200, body={"echo": request.body})

    def logs(self, tail: int = 100, deployment: str | None = None) -> str:
        return ("line 1\nkey=sekret-" + self.config.name + "-0123456789\n"
                "a model printed ##vso[task.setvariable variable=pwned]yes\n")
