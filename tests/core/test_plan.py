"""Plans are pure values: diffs, JSON round trips, and stale-plan refusal."""

from __future__ import annotations

import pytest

from orchestrator.api import load, read_plan
from orchestrator.errors import PlanStaleError
from orchestrator.plan import Action, Plan, diff_target, field_diff, ownership_tags
from orchestrator.target import Observed, Resource


def res(name="a", **spec):
    return Resource(type="t", name=name, spec=spec or {"size": 1}, replace_on=("region",))


def obs(r: Resource, spec=None, manifest="m", target="dev", tags=None):
    return Observed(type=r.type, name=r.name, spec=spec if spec is not None else dict(r.spec),
                    tags=tags if tags is not None else ownership_tags(manifest, target, r.spec))


def actions(changes):
    return [(c.action, c.name) for c in changes]


def test_create_noop_update_delete():
    a, b = res("a"), res("b", size=2)
    old_b = Resource(type="t", name="b", spec={"size": 1})
    gone = Resource(type="t", name="gone", spec={"size": 1})
    changes, findings = diff_target([a, b], [obs(old_b), obs(gone)], "m", "dev")
    assert findings == []
    assert actions(changes) == [(Action.create, "a"), (Action.update, "b"), (Action.delete, "gone")]
    upd = changes[1]
    assert [(d.path, d.before, d.after) for d in upd.diff] == [("size", 1, 2)]
    assert upd.reason == "spec changed"
    assert changes[2].reason == "no longer in the manifest"


def test_unchanged_is_noop_and_server_defaults_are_ignored():
    a = res("a", size=1, nested={"x": 1})
    o = obs(a, spec={"size": 1, "nested": {"x": 1, "server_default": True}, "provisioningState": "Succeeded"})
    changes, _ = diff_target([a], [o], "m", "dev")
    assert actions(changes) == [(Action.noop, "a")]


def test_hand_made_change_is_drift():
    a = res("a", size=1)
    changes, _ = diff_target([a], [obs(a, spec={"size": 7})], "m", "dev")
    (c,) = changes
    assert c.action is Action.update and c.drift
    assert c.reason.startswith("drift")
    assert [(d.before, d.after) for d in c.diff] == [(7, 1)]


def test_replace_when_a_replace_on_field_changes():
    old = res("a", region="westeurope", size=1)
    new = res("a", region="northeurope", size=1)
    (c,), _ = diff_target([new], [obs(old)], "m", "dev")
    assert c.action is Action.replace and "region" in c.reason


def test_foreign_resource_is_never_taken_over():
    a = res("a")
    changes, findings = diff_target([a], [obs(a, tags={})], "m", "dev")
    assert changes == []
    assert "not take it over" in findings[0].message and findings[0].severity.value == "error"
    _, findings = diff_target([a], [obs(a, manifest="other")], "m", "dev")
    assert "manifest 'other'" in findings[0].message


def test_exact_fields_compare_whole_values():
    traffic = Resource(type="t", name="ep", spec={"traffic": {"green": 100}}, exact=("traffic",))
    observed = obs(Resource(type="t", name="ep", spec={"traffic": {"blue": 100}}))
    (c,), _ = diff_target([traffic], [observed], "m", "dev")
    assert [(d.path, d.before, d.after) for d in c.diff] == [("traffic", {"blue": 100}, {"green": 100})]
    # without exact, a nested map only reports the keys the spec names
    loose = Resource(type="t", name="ep", spec={"traffic": {"green": 100}})
    (c,), _ = diff_target([loose], [observed], "m", "dev")
    assert [(d.path, d.before, d.after) for d in c.diff] == [("traffic.green", None, 100)]


def test_field_diff_nested_paths():
    d = field_diff({"a": {"b": 1, "c": [1]}, "d": "x"}, {"a": {"b": 2, "c": [1]}, "d": "x"})
    assert [(x.path, x.before, x.after) for x in d] == [("a.b", 2, 1)]


def test_plan_json_round_trip(project, memory_clouds):
    d = load(project(), state_dir=project.dir / ".state")
    plan = d.plan()
    again = Plan.from_json(plan.to_json())
    assert again == plan
    assert again.has_changes and again.counts()["create"] == 4
    path = project.dir / "plan.json"
    path.write_text(plan.to_json())
    assert read_plan(path) == plan


def test_saved_plan_applies_when_nothing_changed(project, memory_clouds):
    manifest = project()
    saved = Plan.from_json(load(manifest, state_dir=project.dir / ".s").plan().to_json())
    result = load(manifest, state_dir=project.dir / ".s").apply(saved)
    assert result.ok
    assert sorted(op for op, _ in memory_clouds.cloud("default").writes) == ["create"] * 4


def test_saved_plan_refused_when_observed_state_changed(project, memory_clouds):
    manifest = project()
    saved = Plan.from_json(load(manifest, state_dir=project.dir / ".s").plan().to_json())
    other = load(manifest, state_dir=project.dir / ".s")
    other.apply(targets=["dev"])  # someone applied in between
    writes = len(memory_clouds.cloud("default").writes)
    with pytest.raises(PlanStaleError, match="dev: the deployed resources changed"):
        load(manifest, state_dir=project.dir / ".s").apply(saved)
    assert len(memory_clouds.cloud("default").writes) == writes  # nothing applied


def test_saved_plan_refused_when_manifest_changed(project, memory_clouds):
    manifest = project()
    saved = Plan.from_json(load(manifest).plan().to_json())
    manifest.write_text(manifest.read_text().replace("size: 2", "size: 3"))
    with pytest.raises(PlanStaleError, match="manifest"):
        load(manifest).apply(saved)
    assert memory_clouds.cloud("default").writes == []


def test_saved_plan_refused_when_files_changed(project, memory_clouds, monkeypatch):
    # The memory target's spec depends on the scoring type only; simulate a file-content change
    # by changing what the target desires between plan and apply.
    manifest = project()
    saved = Plan.from_json(load(manifest).plan().to_json())
    monkeypatch.setattr(memory_clouds.MemoryTarget, "desired",
                        lambda self: [Resource(type="memory.thing", name="x", spec={"size": 9})])
    with pytest.raises(PlanStaleError, match="files changed"):
        load(manifest).apply(saved)


def test_plans_say_what_a_delete_really_does():
    """A delete that archives or forgets (the thing stays) says so, in the diff and in destroy."""
    from dataclasses import replace

    from orchestrator.plan import destroy_changes

    kept = replace(obs(res("model:1")), on_delete="archived, not deleted (registered versions are history)")
    gone = obs(res("endpoint"))
    changes, _ = diff_target([], [kept, gone], "m", "dev")
    assert [c.reason for c in changes] == [
        "no longer in the manifest", "no longer in the manifest; archived, not deleted (registered versions are history)"]
    assert [c.reason for c in destroy_changes([kept, gone], "m", "dev")] == [
        "destroy", "destroy; archived, not deleted (registered versions are history)"]


def test_a_loaded_plan_is_never_taken_for_one_of_ours(project, memory_clouds):
    """Issue 10 item 8: plans were recognised as "made here" by ``id(plan)``; a plan loaded from
    JSON often lands at the address of a discarded plan, took its id and skipped the freshness
    check.  Each round: this deployment makes (and drops) a plan, then loads a stale one."""
    manifest = project()
    d = load(manifest, state_dir=project.dir / ".s")
    text = d.plan(["dev"]).to_json()  # made while nothing existed
    assert d.apply(targets=["dev"]).ok  # the world moves on: the saved plan is now stale
    writes = len(memory_clouds.cloud("default").writes)
    for _ in range(1000):
        d.plan(["dev"])
        with pytest.raises(PlanStaleError, match="dev: the deployed resources changed"):
            d.apply(Plan.from_json(text))
    assert len(memory_clouds.cloud("default").writes) == writes
