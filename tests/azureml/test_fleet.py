"""Issue 15: several Azure ML targets of one manifest in one workspace (a fleet).

- The environment, model and code they share are the manifest's, not the last writer's: every
  target's next plan is clean, and destroying one target keeps what the others still use.
- Quota is summed across targets per (subscription, region, VM family) at their peak: targets
  that each fit alone but not together are stopped by the plan, before any write.
"""

from __future__ import annotations

import pytest

pytest.importorskip("azure.ai.ml", reason="the Azure ML SDK (extra 'azure') is not installed")

from orchestrator.plan import Action  # noqa: E402
from tests.azureml.conftest import SUB  # noqa: E402
from tests.azureml.test_simulated import apply, cloud, engine  # noqa: E402, F401 - fixture


def fleet(n: int, **extra: str) -> str:
    out = []
    for i in range(1, n + 1):
        lines = [f"  - name: t{i:02d}", "    kind: online-endpoint", f"    subscription: {SUB}",
                 "    resource_group: rg", "    workspace: ws", "    instance_count: 1", "    rollout: {steps: [100]}"]
        lines += [f"    {k}: {v}" for k, v in extra.items()]
        out += lines
    return "\n".join(out)


def _errors(plan) -> list[str]:
    return [f"{t.target}: {t.error or f.message}" for t in plan.targets
            for f in (t.findings or [None]) if t.error or (f is not None and f.severity.value == "error")]


def test_shared_assets_are_the_manifests_and_the_next_apply_is_clean(project, cloud):  # noqa: F811 - the fixture imported above
    _, session, rec = cloud
    path = project(fleet(3))
    plan, result = apply(path, session)
    assert not _errors(plan) and result.ok, result.model_dump_json(indent=2)

    again = engine(path, session).plan()
    assert not _errors(again), _errors(again)  # was: "already exists and is owned by ... target t03"
    assert not again.has_changes, [(t.target, c.address, c.action) for t in again.targets for c in t.pending]

    # destroying one target keeps the environment and model the other two still use
    writes = len(rec.calls)
    gone = engine(path, session).plan(["t01"], destroy=True)
    assets = [c for c in gone.targets[0].changes if c.type in ("azureml.environment", "azureml.model")]
    assert assets and all("kept" in c.reason and "t02" in c.reason for c in assets), [c.reason for c in assets]
    result = engine(path, session).apply(gone, check_fresh=False)
    assert result.ok, result.model_dump_json(indent=2)
    archives = [u for m, u in rec.calls[writes:] if m in ("PUT", "PATCH") and ("/environments/" in u or "/models/" in u)]
    assert not archives, archives
    left = engine(path, session).plan(["t02", "t03"])
    assert not _errors(left) and not left.has_changes


def test_quota_is_summed_across_targets_of_a_family(project, cloud):  # noqa: F811 - the fixture imported above
    sim, session, rec = cloud
    path = project(fleet(5, instance_type="Standard_DS3_v2"))  # 4 vCPU, ceil(1.2 x 1) = 2 instances: 8 cores
    family = "standardDSv2Family"
    sim.set_quota(SUB, "eastus", family, 36)  # each target's 8 fit alone; the five need 40
    plan, result = apply(path, session)
    errors = _errors(plan)
    assert len(errors) == 5 and all("need 40 cores together" in e and "36 are available" in e for e in errors), errors
    assert not result.ok and all("blocked before any write" in t.error for t in result.targets)
    assert not [c for c in rec.calls if c[0] in ("PUT", "DELETE")]

    # with 40, all five fit together: planned and applied
    sim.set_quota(SUB, "eastus", family, 40)
    plan, result = apply(path, session)
    assert not _errors(plan) and result.ok, _errors(plan) or result.model_dump_json(indent=2)
    assert {c.action for t in plan.targets for c in t.pending} == {Action.create}


def test_a_plan_whose_findings_are_errors_exits_non_zero(project, tmp_path):
    from orchestrator.azure.simulator import AzureSimulator
    from tests.azureml.test_examples_simulated import run

    state = tmp_path / "cloud.json"
    sim = AzureSimulator(strict=False)
    sim.set_quota(SUB, "eastus", "standardDSv2Family", 36)
    sim.save(state)
    sim.close()
    path = project(fleet(5, instance_type="Standard_DS3_v2").replace("workspace: ws", "workspace: deployctl-ws"))
    r = run("plan", str(path), "--simulate", "--simulate-state", str(state), "--state-dir", str(tmp_path / "s"))
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)  # was 0: the errors were only printed
    assert "need 40 cores together" in r.stdout + r.stderr
