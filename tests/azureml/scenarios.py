"""Azure ML scenarios shared by the simulated tests (test_scenarios_simulated.py) and the opt-in
live tests (test_live.py): the same steps and the same assertions, against a :class:`World` that
is either the in-process simulator or real Azure.

A world gives a session whose transport records every request (method, URL, JSON body), so a
scenario can assert what was sent (traffic steps, one job submission) the same way on both.
Each scenario works on a copy of the quickstart project under the world's temporary folder (its
score.py is rewritten to make new versions) and destroys what it created, whatever happened.
Nothing here talks to the simulator directly: what only a simulator can do (seed a source model,
a registry, a cluster) is done by the simulated test module before calling a scenario.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.core.pipeline.transport import HttpTransport

from orchestrator.azure.session import OPTIONS_KEY, AzureSession
from orchestrator.engine import Engine
from orchestrator.manifest import load_manifest
from orchestrator.plan import Action
from orchestrator.retry import RetrySettings
from orchestrator.target import InvokeRequest, RunOptions

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart"
BATCH = REPO / "examples" / "batch"
SAMPLE = [0, 2]  # the quickstart model on its sample request (two iris rows)


class RecordingTransport(HttpTransport):
    """Delegates to ``inner``; remembers (method, url, json body) of every request.  Shared by every
    client of a run, so closing one client must not close it: :meth:`shutdown` does, at the end."""

    def __init__(self, inner: HttpTransport) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str, Any]] = []

    def __enter__(self) -> RecordingTransport:
        self.inner.open()
        return self

    def __exit__(self, *a: Any) -> None:
        pass

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        pass

    def shutdown(self) -> None:
        self.inner.close()

    def send(self, request: Any, **kw: Any) -> Any:
        data = getattr(request, "content", None) if hasattr(request, "content") else getattr(request, "data", None)
        body: Any = None
        if isinstance(data, (bytes, str)) and data[:1] in (b"{", "{"):
            try:
                body = json.loads(data)
            except ValueError:
                body = None
        elif isinstance(data, dict):
            body = data
        self.calls.append((request.method, request.url, body))
        return self.inner.send(request, **kw)

    def sleep(self, duration: float) -> None:
        self.inner.sleep(duration)

    def bodies(self, method: str, path_end: str) -> list[Any]:
        return [b for m, u, b in self.calls if m == method and u.split("?")[0].rstrip("/").endswith(path_end)]


@dataclass
class World:
    """Where scenarios run: a subscription / resource group / workspace, a session, a folder."""

    subscription: str
    resource_group: str
    workspace: str
    session: AzureSession
    tmp: Path
    sleep: Callable[[float], None] | None = None  # the simulator's virtual clock
    prefix: str = "dctl"
    names: list[str] = field(default_factory=list)

    @property
    def recorder(self) -> RecordingTransport:
        assert isinstance(self.session.transport, RecordingTransport)
        return self.session.transport

    def project(self, scoring: str = "real-time") -> Path:
        """A copy of the quickstart (or batch) project, whose code scenarios may rewrite."""
        root = self.tmp / f"project-{len(self.names)}"
        shutil.copytree(QUICKSTART / "model", root / "model")
        src = BATCH / "src" if scoring == "batch" else QUICKSTART / "src"
        shutil.copytree(src, root / "src")
        shutil.copy(BATCH / "requirements.txt" if scoring == "batch" else QUICKSTART / "requirements.txt",
                    root / "requirements.txt")
        shutil.copy(BATCH / "data" / "part-000.csv" if scoring == "batch" else QUICKSTART / "sample-request.json",
                    root / ("sample.csv" if scoring == "batch" else "sample.json"))
        return root

    def manifest(self, root: Path, kind: str, extra: str = "", *, scoring: str = "real-time",
                 model: str | None = None) -> Path:
        name = f"{self.prefix}-{uuid.uuid4().hex[:6]}"
        self.names.append(name)
        entry = "batch_driver.py" if scoring == "batch" else "score.py"
        batch = ("  batch: {mini_batch_size: 2, max_concurrency: 1, error_threshold: 0, max_retries: 1, "
                 "timeout_s: 60, output_file: predictions.csv}\n") if scoring == "batch" else ""
        text = f"""\
apiVersion: deployctl/v1
name: {name}
model:
  {f'uri: {model}' if model else 'path: ./model'}
environment:
  python: "3.11"
  requirements: ./requirements.txt
code:
  path: ./src
  entry: {entry}
scoring:
  type: {scoring}
  sample_request: ./sample.{'csv' if scoring == 'batch' else 'json'}
{batch}resources:
  memory_gb: 2
  cpu: 1
targets:
  - name: t
    kind: {kind}
    subscription: {self.subscription}
    resource_group: {self.resource_group}
    workspace: {self.workspace}
{extra}"""
        path = root / f"{name}.yaml"
        path.write_text(text)
        return path

    def engine(self, path: Path, **opts: Any) -> Engine:
        kw: dict[str, Any] = {}
        if self.sleep is not None:
            kw = {"retry": RetrySettings(initial_wait=0.01, max_wait=0.05), "sleep": self.sleep}
        return Engine(load_manifest(path), state_dir=path.parent / ".state",
                      options=RunOptions(extra={OPTIONS_KEY: self.session}, **opts), **kw)

    def apply(self, path: Path, *, destroy: bool = False, **opts: Any) -> tuple[Any, Any]:
        e = self.engine(path, **opts)
        plan = e.plan(destroy=destroy)
        return plan, e.apply(plan, check_fresh=False)

    @contextmanager
    def deployed(self, path: Path) -> Iterator[Path]:
        """Destroys what the manifest owns afterwards, whatever happened."""
        try:
            yield path
        finally:
            plan, result = self.apply(path, destroy=True)
            assert result.ok, result.model_dump_json(indent=2)


def _ok(result: Any) -> Any:
    assert result.ok, result.model_dump_json(indent=2)
    return result.targets[0].outputs


def _new_version(root: Path, run_body: str) -> None:
    """Rewrite score.py's run() (init() still loads the model, as a real update would)."""
    score = root / "src" / "score.py"
    text = score.read_text()
    score.write_text(text[: text.index("def run(")] + f"def run(raw_data):\n    {run_body}\n")


# ---- scenarios ------------------------------------------------------------------------------------
def blue_green_update(w: World) -> None:
    """Create, no-op, then a code change: a new deployment beside the live one, smoke-tested at 0%,
    traffic in steps (50 -> 100), the old one deleted; the endpoint keeps scoring."""
    root = w.project()
    path = w.manifest(root, "online-endpoint", "    rollout: {steps: [50, 100], health_checks: 2}\n")
    with w.deployed(path):
        plan, result = w.apply(path)
        assert not plan.blocked, plan.to_json()
        first = _ok(result)
        assert first["traffic"] == {first["deployment"]: 100} and first["scoring_uri"].startswith("https://")
        again, _ = w.apply(path)
        assert not again.has_changes, again.to_json()

        _new_version(root, 'data = json.loads(raw_data)["data"]\n    return [int(x) for x in model.predict(data)]')
        plan, result = w.apply(path)
        second = _ok(result)
        smoke = result.targets[0].smoke_test  # the new deployment, scored directly at 0%
        assert smoke is not None and smoke.passed and smoke.status == 200 and smoke.latency_ms is not None, smoke
        actions = {(c.action, c.type) for c in plan.targets[0].pending}
        assert (Action.create, "azureml.deployment") in actions and (Action.delete, "azureml.deployment") in actions
        assert second["deployment"] != first["deployment"] and second["traffic"] == {second["deployment"]: 100}
        splits = [(b or {}).get("properties", {}).get("traffic") or {}
                  for b in w.recorder.bodies("PUT", f"/onlineEndpoints/{first['endpoint']}")]
        assert {first["deployment"]: 50, second["deployment"]: 50} in splits, splits
        scored = w.engine(path).invoke("t", InvokeRequest(body=json.loads((root / "sample.json").read_text())))
        assert scored.ok and scored.body == SAMPLE, scored


def failed_smoke_test_rolls_back(w: World) -> None:
    """A new version whose run() fails its smoke test never takes traffic: apply fails, the
    previous deployment still serves all of it."""
    root = w.project()
    path = w.manifest(root, "online-endpoint", "    rollout: {steps: [100]}\n")
    with w.deployed(path):
        live = _ok(w.apply(path)[1])["deployment"]
        _new_version(root, "raise RuntimeError('broken release')")
        _, result = w.apply(path)
        assert not result.ok and "rollout" in (result.targets[0].error or ""), result.model_dump_json(indent=2)
        smoke = result.targets[0].smoke_test
        assert smoke is not None and not smoke.passed and smoke.status != 200, smoke
        out = w.engine(path).status()[0].outputs
        assert out["traffic"] == {live: 100}, out
        scored = w.engine(path).invoke("t", InvokeRequest(body=json.loads((root / "sample.json").read_text())))
        assert scored.ok and scored.body == SAMPLE, scored


def batch_invoke_is_deterministic(w: World, compute: str = "dctl-cpu") -> None:
    """A batch endpoint on an AmlCompute cluster; invoking twice over the same input follows one
    job (one submission), and its outputs download."""
    root = w.project("batch")
    path = w.manifest(root, "batch-endpoint", f"    compute: {{name: {compute}, max_nodes: 1}}\n", scoring="batch")
    with w.deployed(path):
        _ok(w.apply(path)[1])
        data = w.tmp / "batch-in"
        data.mkdir(exist_ok=True)
        shutil.copy(BATCH / "data" / "part-000.csv", data / "part-000.csv")
        e = w.engine(path)
        first = e.invoke("t", InvokeRequest(inputs=[data], output=w.tmp / "out1"))
        second = e.invoke("t", InvokeRequest(inputs=[data], output=w.tmp / "out2"))
        assert first.request_id and first.request_id == second.request_id, (first, second)
        submits = [u for m, u, _ in w.recorder.calls if m == "POST" and u.split("?")[0].endswith("/jobs")]
        assert len(submits) == 1, submits
        assert first.ok, first
        assert (w.tmp / "out1" / "predictions.csv").read_text().strip(), "no predictions downloaded"


def cross_workspace_copy(w: World, source_uri: str, *, extra: str = "") -> None:
    """A model in another workspace (maybe another subscription) is copied here under its name and
    version, tagged with its source; the next apply reuses the copy."""
    root = w.project()
    path = w.manifest(root, "online-endpoint", "    rollout: {steps: [100]}\n" + extra, model=source_uri)
    with w.deployed(path):
        plan, result = w.apply(path)
        assert [c.spec.get("copy") for c in plan.targets[0].pending if c.type == "azureml.model"] in (["copy"], []), \
            plan.to_json()  # [] when an earlier run's copy is already there (reused)
        out = _ok(result)
        name, version = source_uri.split("/models/")[1].split("/versions/")
        assert out["model"] == f"azureml:{name}:{version}", out
        again, _ = w.apply(path)
        assert not again.has_changes, again.to_json()


def registry_share(w: World, source_uri: str, registry: str, *, extra: str = "") -> None:
    """A model in another workspace is shared through a registry: the deployment names the registry
    version; the next apply is a no-op (registry versions are never deleted by destroy)."""
    root = w.project()
    path = w.manifest(root, "online-endpoint", f"    registry: {registry}\n    rollout: {{steps: [100]}}\n" + extra,
                      model=source_uri)
    with w.deployed(path):
        plan, result = w.apply(path)
        assert [c.spec.get("copy") for c in plan.targets[0].pending if c.type == "azureml.model"] in (["share"], []), \
            plan.to_json()  # [] when the registry already has the version (shared before)
        out = _ok(result)
        name, version = source_uri.split("/models/")[1].split("/versions/")
        assert out["model"] == f"azureml://registries/{registry}/models/{name}/versions/{version}", out
        again, _ = w.apply(path)
        assert not again.has_changes, again.to_json()


def aks_rollout(w: World, compute: str, *, instance_type: str | None = None) -> None:
    """A Kubernetes online endpoint on an attached Kubernetes compute: the plan states the cluster
    capacity (or why it could not), apply deploys and scores, the next apply is a no-op."""
    root = w.project()
    extra = f"    compute: {compute}\n    rollout: {{steps: [100]}}\n"
    if instance_type:
        extra += f"    instance_type: {instance_type}\n"
    path = w.manifest(root, "aks", extra)
    with w.deployed(path):
        plan, result = w.apply(path)
        capacity = [f for f in plan.targets[0].findings if "cluster capacity" in f.message
                    or "cannot read AKS cluster" in f.message]
        assert capacity and capacity[0].severity.value in ("info", "warning"), plan.to_json()
        out = _ok(result)
        assert out["traffic"] == {out["deployment"]: 100}
        scored = w.engine(path).invoke("t", InvokeRequest(body=json.loads((root / "sample.json").read_text())))
        assert scored.ok and scored.body == SAMPLE, scored
        again, _ = w.apply(path)
        assert not again.has_changes, again.to_json()
