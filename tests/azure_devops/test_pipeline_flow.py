"""The plain-script template, run: its deployctl commands in stage order, as an agent would run
them (TF_BUILD=True, the pipeline's variables in the environment), against the in-process Azure
simulator (``--simulate``, real Azure SDK clients). Checks the story end to end: a plan artifact that
is valid JSON, apply of exactly that plan, output variables for later stages, a smoke test, prod,
and a stale plan refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.ci.vso import parse_stream
from orchestrator.cli import app
from tests.azure_devops.test_pipelines import CLI, FOLDER, REPO, expand, load, shell_commands, steps

runner = CliRunner()


@pytest.mark.slow
def test_script_template_runs_against_the_simulator(tmp_path, monkeypatch):
    doc = load(FOLDER / "azure-pipelines-script.yml")
    variables = {k: str(v) for k, v in doc["variables"].items()}
    variables.update({"Build.ArtifactStagingDirectory": str(tmp_path), "Pipeline.Workspace": str(tmp_path)})
    monkeypatch.chdir(REPO)  # the checkout
    monkeypatch.setenv("TF_BUILD", "True")
    monkeypatch.setenv("AGENT_TEMPDIRECTORY", str(tmp_path))
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-0000000000aa")
    for k, v in doc["variables"].items():
        monkeypatch.setenv(k.upper(), str(v))  # pipeline variables reach scripts as environment variables
    (tmp_path / "plans").mkdir()
    sim = ["--simulate", "--state-dir", str(tmp_path / "state")]

    ran: list[tuple[list[str], int, list]] = []
    for step in steps(doc):
        script = (step.get("inputs") or {}).get("inlineScript") or step.get("script") or ""
        for args, redirect in shell_commands(expand(script, variables)):
            params = {o for p in CLI.commands[args[0]].params for o in p.opts}  # type: ignore[attr-defined]
            full = args + (sim if "--simulate" in params else [])
            r = runner.invoke(app, full, catch_exceptions=False)
            if redirect:
                Path(redirect).write_text(r.stdout)
            ran.append((args, r.exit_code, list(parse_stream(r.stderr.splitlines()))))
            assert r.exit_code in ((0, 3) if args[0] == "plan" else (0,)), (args, r.stderr[-2000:])

    assert [a[0] for a, _, _ in ran] == ["validate", "plan", "plan", "apply", "invoke", "status", "apply"]
    assert json.loads((tmp_path / "plans" / "dev.json").read_text())["targets"][0]["target"] == "dev"
    assert [code for a, code, _ in ran if a[0] == "plan"] == [3, 3]  # changes pending

    apply_dev = ran[3][2]
    outputs = {c.properties["variable"]: c.message for c in apply_dev if c.command == "task.setvariable"}
    assert outputs["dev_scoring_uri"].startswith("https://") and outputs["dev_deployment"]
    secrets = {c.message for _, _, cmds in ran for c in cmds if c.command == "task.setsecret"}
    for _, _, cmds in ran:
        for c in cmds:
            if c.command != "task.setsecret":
                assert not any(s in c.message or s in str(c.properties) for s in secrets)
    for _, _, cmds in ran:
        assert [c.properties["result"] for c in cmds if c.command == "task.complete"] == ["Succeeded"]

    # The dev plan was applied; applying it again is refused (the world changed since).
    r = runner.invoke(app, ["apply", str(tmp_path / "plans" / "dev.json"), *sim], catch_exceptions=False)
    assert r.exit_code == 2 and "stale" in r.stderr
    assert [c.properties["result"] for c in parse_stream(r.stderr.splitlines()) if c.command == "task.complete"] == ["Failed"]
