"""Issue 10 item 10: under ``--simulate-faults rate=0.3`` an apply converges in one run, creates
nothing twice, and a second apply is a no-op; the plan says what each retry budget is.

The simulated cloud injects 429/500/503 into 30% of requests (seeded).  The budgets of
:mod:`orchestrator.azure.budgets` run on the simulator's virtual clock, so minutes of simulated
waiting cost no real time.  Each seed takes ~7 s here, so the suite runs four seeds that all
failed before the budgets (2, 8, 11, 13: a read failing four times in a row, a smoke test
answered 503, a health check answered 500); ``DEPLOYCTL_FAULT_SEEDS=1-20`` runs the full loop
(all 20 converged when this was written, ~150 s).
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("azure.ai.ml", reason="the Azure ML SDK (extra 'azure') is not installed")

import orchestrator as deployctl  # noqa: E402
from orchestrator.azure.simulator import simulated_session  # noqa: E402
from orchestrator.plan import Action  # noqa: E402
from tests.conftest import REPO  # noqa: E402

MANIFEST = REPO / "examples" / "azureml-online" / "deployctl.yaml"


def _seeds() -> list[int]:
    spec = os.environ.get("DEPLOYCTL_FAULT_SEEDS", "2,8,11,13")
    if "-" in spec:
        lo, hi = spec.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in spec.split(",")]


def _ml_resources(sim, kind: str) -> list[str]:
    """Ids of the simulated cloud's ``kind`` (onlineendpoints, deployments, versions...)."""
    return [k for k, r in sim.state["resources"].items() if k.split("/")[-2] == kind and "/workspaces/" in k]


@pytest.mark.parametrize("seed", _seeds())
def test_apply_converges_under_faults_with_no_duplicates_and_a_noop_second_apply(seed, tmp_path):
    with simulated_session(tmp_path / "sim.json", faults=f"rate=0.3,seed={seed}") as session:
        d = deployctl.load(MANIFEST, azure=session, state_dir=tmp_path / "state")
        plan = d.plan()
        assert not plan.blocked, [(t.error, t.findings) for t in plan.targets]
        notes = [f.message for f in plan.targets[0].findings if f.message.startswith("retries:")]
        assert notes and "30 min" in notes[0] and "Updating" in notes[0], notes  # the budget, in the plan

        result = d.apply(plan)
        assert result.ok, [t.error for t in result.targets]
        sim = session.simulator
        injected = len(sim.faults.injected)
        assert injected >= 10  # faults really happened: ~30% of a run's ~100 requests

        # nothing created twice: one endpoint, one deployment, one version of each asset
        assert len(_ml_resources(sim, "onlineendpoints")) == 1
        assert len(_ml_resources(sim, "deployments")) == 1
        versions = _ml_resources(sim, "versions")
        for asset in ("environments", "models"):
            assert len([v for v in versions if f"/{asset}/" in v]) == 1, versions

        again = d.plan()
        assert not again.blocked and not again.has_changes, [
            (c.address, c.action) for t in again.targets for c in t.changes if c.action is not Action.noop]


def test_a_write_meeting_409_updating_for_minutes_waits_within_its_budget(tmp_path):
    """The endpoint's create is polled through four 503s (azure-core gives up), so the runner
    sends the PUT again while the endpoint is still 'Updating' for its simulated minute: 409s
    for longer than the old budget (6 attempts, ~30 s), then the create goes through."""
    with simulated_session(tmp_path / "sim.json", latency="endpoint=150") as session:
        sim = session.simulator
        sim.faults.on("OperationStatus_Get", "503", times=4)
        d = deployctl.load(MANIFEST, azure=session, state_dir=tmp_path / "state")
        result = d.apply(d.plan())
        assert result.ok, [t.error for t in result.targets]
        conflicts = [r for r in sim.requests if r.status == 409]
        # the retried PUT met the busy endpoint more often than the old budget's 6 attempts allowed
        assert len(conflicts) > 6, len(conflicts)
        assert len(_ml_resources(sim, "onlineendpoints")) == 1 and len(_ml_resources(sim, "deployments")) == 1
