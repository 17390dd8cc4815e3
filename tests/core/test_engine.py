"""The engine against the test-only memory target: concurrency, locking, failures, retries,
no-op applies and interruption."""

from __future__ import annotations

import threading

import pytest

from orchestrator.engine import Engine
from orchestrator.errors import ConcurrentApplyError, TargetError, TransientError
from orchestrator.events import RecordingReporter
from orchestrator.manifest import load_manifest
from orchestrator.plan import Action
from orchestrator.retry import RetrySettings
from orchestrator.state import exclusive, target_state_dir

FAST = RetrySettings(attempts=4, initial_wait=0.0, max_wait=0.0, jitter=0.0)


class HttpError(Exception):
    """Shaped like azure-core's HttpResponseError: status_code and response headers."""

    def __init__(self, status: int, message: str = "boom", headers: dict | None = None) -> None:
        super().__init__(message)
        self.status_code = status

        class R:
            pass

        self.response = R()
        self.response.headers = headers or {}
        self.response.status_code = status


def engine(project, targets=None, **kw):
    path = project(targets=targets) if targets else project()
    sleeps: list[float] = []
    kw.setdefault("retry", FAST)
    e = Engine(load_manifest(path, use_environ=False), state_dir=project.dir / ".state",
               reporter=RecordingReporter(), sleep=sleeps.append, **kw)
    e.sleeps = sleeps  # type: ignore[attr-defined]
    return e


def overlaps(timeline, a, b):
    """Did any operation of target a run at the same time as one of target b?"""
    spans = {}
    for ev, tgt, addr, t in timeline:
        spans.setdefault((tgt, addr), [None, None])[0 if ev == "start" else 1] = t
    sa = [v for (tgt, _), v in spans.items() if tgt == a]
    sb = [v for (tgt, _), v in spans.items() if tgt == b]
    return any(x0 < y1 and y0 < x1 for x0, x1 in sa for y0, y1 in sb)


def test_apply_then_noop_with_zero_writes(project, memory_clouds):
    e = engine(project)
    result = e.apply(e.plan(), check_fresh=False)
    assert result.ok and result.exit_code == 0
    cloud = memory_clouds.cloud("default")
    assert len(cloud.writes) == 4
    assert result.targets[0].outputs["url"] == "memory://default/dev"

    e2 = engine(project)
    plan = e2.plan()
    assert not plan.has_changes
    assert {c.action for t in plan.targets for c in t.changes} == {Action.noop}
    result = e2.apply(plan, check_fresh=False)
    assert result.ok and len(cloud.writes) == 4  # zero writes
    assert all(t.writes == 0 for t in result.targets)


def test_targets_run_concurrently(project, memory_clouds):
    cloud = memory_clouds.cloud("default")
    cloud.delay = 0.05
    e = engine(project)
    assert e.apply(e.plan(), parallel=2, check_fresh=False).ok
    assert overlaps(cloud.timeline, "dev", "prod")


def test_one_resource_is_never_touched_twice_at_once(project, memory_clouds):
    cloud = memory_clouds.cloud("default")
    cloud.delay = 0.05
    shared = """\
  - name: dev
    kind: memory
    shared_key: same-endpoint
  - name: prod
    kind: memory
    shared_key: same-endpoint
"""
    e = engine(project, targets=shared)
    assert e.apply(e.plan(), parallel=2, check_fresh=False).ok
    # Each target has two resources with the same keys as the other target's: never overlapping.
    spans = {}
    for ev, tgt, addr, t in cloud.timeline:
        spans.setdefault((tgt, addr), [None, None])[0 if ev == "start" else 1] = t
    by_thing = {}
    for (_tgt, addr), span in spans.items():
        by_thing.setdefault(addr.rsplit("-", 1)[-1], []).append(span)
    for thing, (x, y) in by_thing.items():
        assert not (x[0] < y[1] and y[0] < x[1]), f"{thing} was changed concurrently"


def test_partial_failure_other_targets_continue(project, memory_clouds):
    cloud = memory_clouds.cloud("default")
    cloud.faults["create:memory.thing/credit-risk-dev-endpoint"] = [HttpError(400, "BadArgument: instance type nope")]
    e = engine(project)
    result = e.apply(e.plan(), check_fresh=False)
    assert not result.ok and result.exit_code == 1
    dev, prod = result.targets
    assert not dev.ok and "BadArgument" in dev.error
    assert [c.status for c in dev.changes] == ["failed", "not-started"]
    assert prod.ok and [c.status for c in prod.changes] == ["done", "done"]


def test_fail_fast_stops_other_targets(project, memory_clouds):
    cloud = memory_clouds.cloud("default")
    cloud.faults["create:memory.thing/credit-risk-dev-endpoint"] = [HttpError(403, "AuthorizationFailed")]
    e = engine(project)
    result = e.apply(e.plan(), parallel=1, fail_fast=True, check_fresh=False)
    dev, prod = result.targets
    assert not dev.ok and not prod.ok
    assert all(c.status == "not-started" for c in prod.changes)


def test_transient_errors_are_retried_then_permanent_fails_fast(project, memory_clouds):
    cloud = memory_clouds.cloud("default")
    addr = "memory.thing/credit-risk-dev-endpoint"
    cloud.faults[f"create:{addr}"] = [
        HttpError(429, "throttled", {"Retry-After": "7"}),
        ConnectionResetError("reset by peer"),
        HttpError(409, "Endpoint is in Updating state, another operation is in progress"),
        HttpError(400, "BadArgument"),  # permanent: must not be retried
        HttpError(503, "never reached"),
    ]
    e = engine(project)
    result = e.apply(e.plan(["dev"]), check_fresh=False)
    creates = [a for op, a in cloud.writes if op == "create" and a == addr]
    assert len(creates) == 4  # 3 transient retries, then the permanent error, and no more
    assert not result.ok and "BadArgument" in result.targets[0].error
    assert e.sleeps[0] >= 7  # Retry-After honoured
    retries = [ev for ev in e.reporter.events if ev[0] == "retrying"]
    assert [r[5].split(":")[0] for r in retries] == ["HTTP 429", "connection problem", "409 Conflict"]


def test_transient_error_recovers(project, memory_clouds):
    cloud = memory_clouds.cloud("default")
    cloud.faults["create:memory.thing/credit-risk-dev-endpoint"] = [TransientError("busy", retry_after=1)]
    e = engine(project)
    assert e.apply(e.plan(["dev"]), check_fresh=False).ok
    assert e.sleeps == [1.0]


def test_blocking_finding_stops_apply_before_any_write(project, memory_clouds):
    targets = "  - name: dev\n    kind: memory\n    size: 5\n    quota: 4\n"
    e = engine(project, targets=targets)
    plan = e.plan()
    assert plan.blocked
    result = e.apply(plan, check_fresh=False)
    assert not result.ok and "exceeds quota" in result.targets[0].error
    assert memory_clouds.cloud("default").writes == []


def test_interrupt_lets_running_operation_finish_and_starts_nothing_new(project, memory_clouds):
    cloud = memory_clouds.cloud("default")
    e = engine(project)

    def ctrl_c(op, address):
        if address.endswith("dev-endpoint"):
            e.cancel.set()  # what the CLI does on SIGINT

    cloud.hook = ctrl_c
    result = e.apply(e.plan(["dev"]), check_fresh=False)
    assert result.interrupted and result.exit_code == 130
    statuses = [(c.address.rsplit("-", 1)[-1], c.status) for c in result.targets[0].changes]
    assert statuses == [("endpoint", "interrupted"), ("deployment", "not-started")]
    assert "memory.thing/credit-risk-dev-endpoint" in cloud.resources  # it did finish


def test_second_concurrent_apply_is_refused(project, memory_clouds):
    e = engine(project)
    plan = e.plan(["dev"])
    lock = target_state_dir(e.state_dir, "credit-risk", "dev") / ".apply.lock"
    with exclusive(lock, "test"):
        done = {}
        t = threading.Thread(target=lambda: done.setdefault("r", e.apply(plan, check_fresh=False)))
        t.start()
        t.join()
    out = done["r"].targets[0]
    assert not out.ok and out.error_kind == "input" and "already changing" in out.error
    assert memory_clouds.cloud("default").writes == []
    with pytest.raises(ConcurrentApplyError):
        with exclusive(lock, "x"), exclusive(lock, "y"):
            pass


def test_destroy_removes_only_what_deployctl_owns(project, memory_clouds):
    cloud = memory_clouds.cloud("default")
    cloud.resources["memory.thing/someone-elses"] = {"spec": {}, "tags": {"deployctl-manifest": "other"}, "version": 1}
    e = engine(project)
    e.apply(e.plan(), check_fresh=False)
    e2 = engine(project)
    result = e2.apply(e2.plan(destroy=True), check_fresh=False)
    assert result.ok
    assert list(cloud.resources) == ["memory.thing/someone-elses"]


def test_status_shows_drift_and_outputs(project, memory_clouds):
    cloud = memory_clouds.cloud("default")
    e = engine(project)
    e.apply(e.plan(), check_fresh=False)
    cloud.resources["memory.thing/credit-risk-prod-endpoint"]["spec"]["size"] = 99  # changed by hand
    statuses = {s.target: s for s in engine(project).status()}
    assert not statuses["dev"].drifted and statuses["prod"].drifted
    row = [r for r in statuses["prod"].resources if r.state == "drifted"][0]
    assert row.detail == "size"
    assert statuses["prod"].outputs["url"] == "memory://default/prod"
    plan = engine(project).plan(["prod"])
    assert [c.drift for c in plan.targets[0].changes] == [True, False]


def test_unexpected_exception_is_reported_per_target(project, memory_clouds):
    cloud = memory_clouds.cloud("default")
    cloud.faults["update:x"] = []
    cloud.faults["create:memory.thing/credit-risk-prod-endpoint"] = [KeyError("surprise")]
    e = engine(project)
    result = e.apply(e.plan(), check_fresh=False)
    prod = result.targets[1]
    assert not prod.ok and "KeyError" in prod.error
    assert result.targets[0].ok


def test_unknown_target_name_suggests(project, memory_clouds):
    e = engine(project)
    with pytest.raises(Exception, match="did you mean 'prod'"):
        e.plan(["prd"])


def test_retry_budget_stops_after_max_attempts(project, memory_clouds):
    cloud = memory_clouds.cloud("default")
    cloud.faults["create:memory.thing/credit-risk-dev-endpoint"] = [HttpError(503) for _ in range(10)]
    e = engine(project)
    result = e.apply(e.plan(["dev"]), check_fresh=False)
    assert not result.ok
    assert sum(1 for op, a in cloud.writes if a.endswith("dev-endpoint")) == FAST.attempts


def test_target_error_carries_where(project):
    err = TargetError("nope", target="prod", resource="endpoint/x", operation="create", hint="fix it")
    assert str(err) == "target 'prod' create endpoint/x: nope\nTo fix: fix it"


def test_interrupt_cuts_a_retry_backoff_short(project, memory_clouds):
    """Issue 10 item 9: Ctrl-C used to wait out the backoff.  A busy resource asks for 30 s;
    cancel is set while the engine waits; apply returns at once, the change interrupted."""
    import time

    cloud = memory_clouds.cloud("default")
    cloud.faults["create:memory.thing/credit-risk-dev-endpoint"] = [
        TransientError("busy", retry_after=30.0, reason="409 Conflict: resource busy")]
    e = Engine(load_manifest(project(), use_environ=False), state_dir=project.dir / ".state",
               reporter=RecordingReporter())  # real time: the default retry budget and sleep
    box = {}
    worker = threading.Thread(target=lambda: box.setdefault("r", e.apply(e.plan(["dev"]), check_fresh=False)))
    worker.start()
    deadline = time.monotonic() + 10
    while not any(ev[0] == "retrying" for ev in e.reporter.events) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(ev[0] == "retrying" and ev[4] >= 30 for ev in e.reporter.events)  # it is waiting 30 s
    cancelled = time.monotonic()
    e.cancel.set()
    worker.join(5)
    took = time.monotonic() - cancelled
    assert not worker.is_alive() and took < 0.5
    result = box["r"]
    assert result.interrupted and result.exit_code == 130
    statuses = [(c.address.rsplit("-", 1)[-1], c.status) for c in result.targets[0].changes]
    assert statuses == [("endpoint", "interrupted"), ("deployment", "not-started")]
    assert cloud.writes == [("create", "memory.thing/credit-risk-dev-endpoint")]  # no second attempt


def _peak_concurrent_targets(timeline) -> int:
    spans: dict[str, list[float]] = {}
    for _ev, tgt, _addr, t in timeline:
        s = spans.setdefault(tgt, [t, t])
        s[0], s[1] = min(s[0], t), max(s[1], t)
    points = sorted([(a, 1) for a, _ in spans.values()] + [(b, -1) for _, b in spans.values()],
                    key=lambda p: (p[0], p[1]))
    peak = now = 0
    for _, d in points:
        now += d
        peak = max(peak, now)
    return peak


SIX = "".join(f"  - name: t{i}\n    kind: memory\n" for i in range(6))


@pytest.mark.parametrize(("kind_limit", "parallel", "expected"), [
    (2, None, 2),     # by default each kind runs as many at once as it declares it sustains
    (None, None, 6),  # a kind with no limit of its own: every target at once
    (None, 3, 3),     # --parallel is the user's word, whatever the kinds say
    (2, 4, 4),
])
def test_default_parallelism_follows_each_kinds_limit(project, memory_clouds, monkeypatch, kind_limit, parallel,
                                                      expected):
    from orchestrator.registry import default_registry

    monkeypatch.setattr(default_registry().get("memory"), "max_parallel", kind_limit)
    cloud = memory_clouds.cloud("default")
    cloud.delay = 0.05
    e = engine(project, targets=SIX)
    result = e.apply(e.plan(), parallel=parallel, check_fresh=False)
    assert result.ok and len(result.targets) == 6
    assert _peak_concurrent_targets(cloud.timeline) == expected


def test_kinds_declare_what_they_sustain():
    from orchestrator.azure.throttle import sustainable_parallelism
    from orchestrator.registry import default_registry

    reg = default_registry()
    assert reg.get("local").max_parallel >= 1
    # Azure kinds: as many waiting targets as ARM's read refill sustains (25/s x 5 s polls)
    assert sustainable_parallelism() == 125
    assert {reg.get(k).max_parallel for k in ("online-endpoint", "aks", "batch-endpoint", "aci", "app-service",
                                              "functions")} == {125}
