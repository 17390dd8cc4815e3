"""The Functions target's sizing, pure: the hosting plan by memory and the always-ready count by
the estimated cold start (the manifest's number wins), and both shown in a plan."""

from __future__ import annotations

import json

import pytest

import orchestrator as deployctl
from orchestrator.sizing import GIB
from targets.web.config import (
    COLD_START_BUDGET_S,
    FunctionsConfig,
    choose_always_ready,
    choose_hosting,
    estimate_init_seconds,
)
from tests.functions.test_target_simulated import RG, SUB, manifest

BASE = {"name": "prod", "kind": "functions", "subscription": SUB, "resource_group": RG, "region": "eastus"}


def cfg(**kw: object) -> FunctionsConfig:
    return FunctionsConfig.model_validate({**BASE, **kw})


def test_init_estimate_counts_the_worker_heavy_imports_and_the_model_load():
    light, why = estimate_init_seconds(10_000, [])
    assert light == 1.0 and "1 s worker" in why
    heavy, why = estimate_init_seconds(GIB // 2, ["torch==2.3.0", "numpy", "scikit-learn>=1.4"])
    assert heavy == 1.0 + 6.0 + 1.0 + 4.0  # worker + torch + scikit-learn + half a GiB at 8 s/GiB
    assert "6 s importing torch" in why and "1 s importing scikit-learn" in why and "model 0.50 GiB" in why


def test_always_ready_only_where_a_real_time_cold_start_is_over_the_budget():
    assert choose_always_ready(cfg(), "flex", realtime=True, init_s=1.0, init_why="w")[0] == 0
    n, why = choose_always_ready(cfg(), "flex", realtime=True, init_s=COLD_START_BUDGET_S + 0.1, init_why="torch")
    assert n == 1 and "over the 5 s cold start budget" in why and "torch" in why
    n, why = choose_always_ready(cfg(), "flex", realtime=False, init_s=30.0, init_why="torch")
    assert n == 0 and "near-real-time" in why
    # Premium keeps one warm whatever the estimate; the manifest's number wins everywhere
    assert choose_always_ready(cfg(), "premium", realtime=False, init_s=1.0, init_why="w")[0] == 1
    assert choose_always_ready(cfg(always_ready=0), "flex", realtime=True, init_s=60.0, init_why="w") == (
        0, "0 always-ready from the manifest")
    assert choose_always_ready(cfg(always_ready=3), "flex", realtime=False, init_s=1.0, init_why="w")[0] == 3


def test_choose_hosting_carries_the_always_ready_decision():
    h = choose_hosting(cfg(), 1.2, realtime=True, init_s=12.0, init_why="torch")
    assert (h.plan, h.instance_memory_mb, h.always_ready) == ("flex", 2048, 1)
    h = choose_hosting(cfg(), 6.0, realtime=True, init_s=1.0, init_why="w")
    assert (h.plan, h.sku, h.always_ready) == ("premium", "EP2", 1)


@pytest.fixture
def sim(azure_simulator):
    azure_simulator.add_resource_group(SUB, RG)
    return azure_simulator


def app_change(plan) -> dict:
    return next(c.spec for t in plan.targets for c in t.changes if c.type == "function-app")


def test_the_plan_shows_the_always_ready_count_and_why(project, sim, tmp_path):
    d = deployctl.load(manifest(project), base_dir=project, state_dir=tmp_path / "s1", azure=sim.session())
    plan = d.plan()
    assert app_change(plan)["always_ready"] == 0  # the example: a tiny model, no heavy imports
    assert "cold starts: 0 always-ready: estimated init 1 s" in json.dumps(plan.to_json())
    (project / "requirements.txt").write_text("torch==2.3.0\n")
    doc = {**manifest(project), "environment": {"requirements": "./requirements.txt"}}
    d = deployctl.load(doc, base_dir=project, state_dir=tmp_path / "s2", azure=sim.session())
    plan = d.plan()
    assert app_change(plan)["always_ready"] == 1
    text = json.dumps(plan.to_json())
    assert "cold starts: 1 always-ready: estimated init 7 s" in text and "6 s importing torch" in text
    doc["targets"][0]["always_ready"] = 0  # the manifest's choice wins
    d = deployctl.load(doc, base_dir=project, state_dir=tmp_path / "s3", azure=sim.session())
    assert app_change(d.plan())["always_ready"] == 0


def test_the_plan_says_a_durable_app_on_premium_deploys_in_place(project, sim, tmp_path):
    doc = manifest(project, hosting="premium")
    doc["scoring"] = {"type": "near-real-time", "sample_request": "./sample-request.json", "queue": {"mode": "durable"}}
    d = deployctl.load(doc, base_dir=project, state_dir=tmp_path / "s", azure=sim.session())
    plan = d.plan()
    text = json.dumps(plan.to_json())
    assert "Durable app on Premium: new packages are published in place" in text
    assert app_change(plan)["always_ready"] == 1  # Premium keeps one instance warm


def test_a_measured_first_answer_over_the_budget_is_a_plan_warning(project, sim, tmp_path):
    """The estimate said scale to zero; the deploy's measured first answer says otherwise: the next
    plan says so (the manifest decides: desired() stays pure)."""
    (project / "src" / "score.py").write_text("import time\n\ndef init():\n    time.sleep(5.5)\n\n"
                                              "def run(raw):\n    return [1]\n")
    d = deployctl.load(manifest(project), base_dir=project, state_dir=tmp_path / "s", azure=sim.session())
    plan = d.plan()
    assert app_change(plan)["always_ready"] == 0
    assert d.apply(plan).ok
    text = json.dumps(deployctl.load(manifest(project), base_dir=project, state_dir=tmp_path / "s",
                                     azure=sim.session()).plan().to_json())
    assert "cold starts: the deployed package's first answer took" in text and "always_ready: 1" in text
