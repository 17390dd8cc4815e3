"""The Python API notebooks use: values in, values out, HTML views."""

from __future__ import annotations

import yaml

import orchestrator as deployctl
from orchestrator.events import RecordingReporter


def test_load_dict_plan_apply_invoke_status_destroy(project, memory_clouds):
    doc = yaml.safe_load(project().read_text())
    credential = object()
    rec = RecordingReporter()
    d = deployctl.load(doc, base_dir=project.dir, credential=credential, reporter=rec, state_dir=project.dir / ".s")
    # one Azure session for the run, kept in the options under the Azure layer's key (the generic
    # contract names no cloud); every Azure client of the run gets the credential through it, and
    # making it imports no Azure SDK (a local-only run never does)
    from orchestrator.azure.session import session_of

    session = session_of(d.engine.options)
    assert session.credential is credential and session_of(d.engine.options) is session

    plan = d.plan()
    assert plan.has_changes and "<table>" in plan._repr_html_() and "create" in plan._repr_html_()
    result = d.apply(plan)
    assert result.ok and "<table>" in result._repr_html_()
    assert ("started", "dev", "create", "memory.thing/credit-risk-dev-endpoint") in rec.events

    assert d.invoke("dev", {"data": [[1]]}).body == {"echo": {"data": [[1]]}}
    status = d.status()
    assert [s.target for s in status] == ["dev", "prod"]
    assert "in-sync" in status._repr_html_()
    assert "sekret" not in status[0].model_dump_json()  # keys are excluded from serialisation
    assert "key=***\n" in d.logs("dev") and "sekret" not in d.logs("dev")

    gone = d.destroy()
    assert gone.ok and memory_clouds.cloud("default").resources == {}


def test_apply_without_plan_plans_first(project, memory_clouds):
    d = deployctl.load(project(), state_dir=project.dir / ".s")
    assert d.apply(targets=["dev"]).ok
    assert [t.target for t in d.status(["dev"])] == ["dev"]


def test_a_loaded_plan_is_checked_for_staleness(project, memory_clouds):
    m = project()
    saved = deployctl.Plan.from_json(deployctl.load(m).plan().to_json())
    d = deployctl.load_for_plan(saved)
    assert d.apply(saved).ok
