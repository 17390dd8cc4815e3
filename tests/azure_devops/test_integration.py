"""deployctl under Azure Pipelines: the real CLI (click group) with ``--ci azure-devops`` / TF_BUILD,
its stderr parsed back with orchestrator.ci.vso, the memory target standing in for a cloud."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.ci import CIIntegration, detect
from orchestrator.ci.azure_devops import AzureDevOpsIntegration, variable_name
from orchestrator.ci.vso import parse_stream
from orchestrator.cli import app

runner = CliRunner()


def targets(tmp: Path, extra: str = "") -> str:
    return (f"  - name: dev\n    kind: memory\n    file: {tmp / 'cloud.json'}\n"
            f"  - name: prod-eu\n    kind: memory\n    size: 2\n    file: {tmp / 'cloud.json'}\n{extra}")


@pytest.fixture
def agent(tmp_path, monkeypatch):
    """The environment an Azure Pipelines agent gives a step."""
    temp = tmp_path / "agent-temp"
    temp.mkdir()
    monkeypatch.setenv("TF_BUILD", "True")
    monkeypatch.setenv("AGENT_TEMPDIRECTORY", str(temp))
    return temp


def run(*args: str):
    r = runner.invoke(app, list(args), catch_exceptions=False)
    cmds = list(parse_stream(r.stderr.splitlines()))
    return r, cmds


def named(cmds, name):
    return [c for c in cmds if c.command == name]


def test_detect():
    assert isinstance(detect(environ={"TF_BUILD": "True"}), AzureDevOpsIntegration)
    assert type(detect(environ={})) is CIIntegration
    assert type(detect("none", environ={"TF_BUILD": "True"})) is CIIntegration
    assert isinstance(detect("azure-devops", environ={}), AzureDevOpsIntegration)
    with pytest.raises(ValueError, match="unknown CI"):
        detect("jenkins", environ={})


def test_manifest_errors_annotate_the_file(project, agent):
    m = project(targets="  - name: dev\n    kind: memory\n    sise: 2\n")
    r, cmds = run("validate", str(m))
    assert r.exit_code == 2
    issue = named(cmds, "task.logissue")[0]
    assert issue.properties == {"type": "error", "sourcepath": str(m), "linenumber": "14", "columnnumber": "5"}
    assert issue.message.startswith("targets[0].sise: unknown field")
    assert named(cmds, "task.complete")[-1].properties["result"] == "Failed"
    assert "##vso" not in r.stdout


def test_plan_json_stays_clean_and_uploads_a_summary(project, agent, memory_clouds):
    m = project(targets=targets(project.dir))
    r, cmds = run("plan", str(m), "-o", "json", "--detailed-exitcode")
    assert r.exit_code == 3
    assert json.loads(r.stdout)["format"] == "deployctl.plan/v1"  # `> plan.json` gives a valid plan
    summary = Path(named(cmds, "task.uploadsummary")[0].message)
    assert summary.parent == agent
    text = summary.read_text()
    assert "## deployctl plan: credit-risk" in text and "| dev | ➕ create |" in text
    done = named(cmds, "task.complete")
    assert [c.properties["result"] for c in done] == ["Succeeded"]  # changes pending is not a failure


def test_apply_sets_output_variables_and_masks_secrets_first(project, agent, memory_clouds):
    m = project(targets=targets(project.dir))
    r, cmds = run("apply", str(m), "--yes", "--ci", "azure-devops")
    assert r.exit_code == 0, r.stderr
    variables = {c.properties["variable"]: c for c in named(cmds, "task.setvariable")}
    assert variables["dev_url"].message == "memory://default/dev"
    assert variables["prod_eu_things"].message == "2"
    assert all(c.properties["isoutput"] == "true" for c in variables.values())
    secrets = [c.message for c in named(cmds, "task.setsecret")]
    assert "sekret-dev-0123456789" in secrets and "sekret-prod-eu-0123456789" in secrets
    # never a secret in a variable, and nothing but setsecret ever carries one
    for c in cmds:
        if c.command != "task.setsecret":
            assert "sekret" not in str(c.properties) + c.message
    assert "sekret" not in r.stdout
    assert [c.properties["result"] for c in named(cmds, "task.complete")] == ["Succeeded"]
    summary = Path(named(cmds, "task.uploadsummary")[-1].message).read_text()
    assert "✅ applied" in summary and "| dev | url | memory://default/dev |" in summary


def test_failed_target_never_reports_success(project, agent, memory_clouds):
    m = project(targets=targets(project.dir, "  - name: big\n    kind: memory\n    size: 5\n    quota: 4\n"))
    r, cmds = run("apply", str(m), "--yes")
    assert r.exit_code == 1
    results = [c.properties["result"] for c in named(cmds, "task.complete")]
    assert results == ["Failed"]
    errors = [c.message for c in named(cmds, "task.logissue") if c.properties["type"] == "error"]
    assert any("exceeds quota" in e for e in errors)
    names = {c.properties["variable"] for c in named(cmds, "task.setvariable")}
    assert not any(n.startswith("big_") for n in names)  # a failed target publishes no outputs
    assert "dev_url" in names


def test_stale_saved_plan_fails_the_step(project, agent, memory_clouds):
    m = project(targets=targets(project.dir))
    r, _ = run("plan", str(m), "-o", "json")
    plan = project.dir / "plan.json"
    plan.write_text(r.stdout)
    r, cmds = run("apply", str(plan))
    assert r.exit_code == 0
    r, cmds = run("apply", str(plan))  # the world changed since the plan
    assert r.exit_code == 2
    assert [c.properties["result"] for c in named(cmds, "task.complete")] == ["Failed"]
    assert any("stale" in c.message for c in named(cmds, "task.logissue"))


def test_no_commands_without_ci(project, memory_clouds, monkeypatch):
    monkeypatch.delenv("TF_BUILD", raising=False)
    m = project(targets=targets(project.dir))
    r, cmds = run("plan", str(m))
    assert r.exit_code == 0 and cmds == [] and "##vso" not in r.stdout + r.stderr


def test_integration_units(tmp_path):
    out = io.StringIO()
    ci = AzureDevOpsIntegration(environ={"AGENT_TEMPDIRECTORY": str(tmp_path)}, stream=out)
    rep = ci.reporter()
    rep.secret("line-one-secret\nline-two-secret")
    ci.set_output("dev", "token", "Bearer line-one-secret")  # holds a secret: refused
    ci.set_output("dev", "traffic", {"blue": 90, "green": 10})
    ci.set_output("dev", "nothing", None)
    rep.retrying("dev", "create x", 0, 1.5, "429 throttled")
    ci.complete(0)
    cmds = list(parse_stream(out.getvalue().splitlines()))
    assert [c.message for c in cmds[:3]] == ["line-one-secret\nline-two-secret", "line-one-secret", "line-two-secret"]
    sets = named(cmds, "task.setvariable")
    assert [(c.properties["variable"], c.message) for c in sets] == [("dev_traffic", '{"blue":90,"green":10}')]
    warns = [c.message for c in named(cmds, "task.logissue")]
    assert "token" in warns[0] and "not set" in warns[0] and "line-one" not in warns[0]
    assert "retrying create x in 1.5s" in warns[1]
    assert named(cmds, "task.complete")[0].properties["result"] == "SucceededWithIssues"  # a warning was logged
    assert variable_name("dev-online.eu", "scoring_uri") == "dev_online_eu_scoring_uri"


def test_countable_progress_sets_the_task_percentage(tmp_path):
    out = io.StringIO()
    rep = AzureDevOpsIntegration(environ={"AGENT_TEMPDIRECTORY": str(tmp_path)}, stream=out).reporter()
    for done in (0, 1, 1, 2, 3):
        rep.advance("batch", "mini-batches", done, 3)
    cmds = named(list(parse_stream(out.getvalue().splitlines())), "task.setprogress")
    assert [c.properties["value"] for c in cmds] == ["0", "33", "66", "100"]  # no repeats
    assert cmds[-1].message == "[batch] mini-batches"
