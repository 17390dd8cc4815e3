"""The pipeline templates in examples/azure-pipelines/: the YAML parses, the stages run in the
promised order, and every deployctl invocation (script lines and Deployctl@1 task inputs alike)
is accepted by the real CLI (its click group, strict parsing: unknown options fail)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from orchestrator.cli import app

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "examples" / "azure-pipelines"
PIPELINES = sorted(FOLDER.glob("azure-pipelines*.yml"))
OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "&"}
CLI = app  # the click group the console script runs


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def steps(doc: dict[str, Any]):
    for stage in doc["stages"]:
        for job in stage["jobs"]:
            if "steps" in job:
                yield from job["steps"]
            else:
                for hook in job["strategy"]["runOnce"].values():
                    yield from hook["steps"]


def expand(text: str, variables: dict[str, str]) -> str:
    """Macro syntax $(name) for the pipeline's own variables; runtime ones stay as they are."""
    return re.sub(r"\$\(([A-Za-z_][\w.]*)\)", lambda m: variables.get(m.group(1), m.group(0)), text)


def shell_invocations(script: str) -> list[list[str]]:
    """Every `deployctl ...` simple command in a bash script (continuations joined, stopped at
    the first operator or redirection)."""
    return [args for args, _ in shell_commands(script)]


def shell_commands(script: str) -> list[tuple[list[str], str | None]]:
    """Like :func:`shell_invocations`, with the file stdout is redirected to (``> file``), if any."""
    out: list[tuple[list[str], str | None]] = []
    for line in script.replace("\\\n", " ").splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars="|&;<>")  # not (): keeps $(macro) whole
        lex.whitespace_split = True
        lex.commenters = "#"
        tokens = list(lex)
        for i, tok in enumerate(tokens):
            if tok == "deployctl" and (i == 0 or tokens[i - 1] in OPERATORS):
                rest = tokens[i + 1:]
                j = next((k for k, t in enumerate(rest) if t in OPERATORS or re.fullmatch(r"\d?[<>]&?\d*", t)),
                         len(rest))
                args = rest[:j]
                redirect = rest[j + 1] if j + 1 < len(rest) and rest[j] == ">" else None
                out.append((args, redirect))
    return out


def task_invocation(inputs: dict[str, Any]) -> list[str]:
    """The command line Deployctl@1 builds from its inputs (azure-devops/DeployctlV1/index.js)."""
    command = inputs["command"]
    args = [command]
    if command == "apply" and inputs.get("planFile"):
        args.append(inputs["planFile"])
    else:
        args.append(inputs.get("manifest", "deployctl.yaml"))
        for t in re.split(r"[\r\n,]+", inputs.get("targets", "")):
            if t.strip():
                args += ["--target", t.strip()]
        if command == "plan" and inputs.get("planFile"):
            args += ["--out", inputs["planFile"]]
        if command == "plan":
            args.append("--detailed-exitcode")
    for v in str(inputs.get("variables", "")).splitlines():
        if v.strip():
            args += ["--var", v.strip()]
    if command in ("apply", "destroy"):
        args.append("--yes")
    if command == "invoke":
        if inputs.get("data"):
            args += ["--data", inputs["data"]]
        if inputs.get("dataFile"):
            args += ["--file", inputs["dataFile"]]
    args += str(inputs.get("arguments", "")).split()
    return args + ["--ci", "azure-devops"]


def invocations(path: Path) -> list[list[str]]:
    doc = load(path)
    variables = {k: str(v) for k, v in doc.get("variables", {}).items()}
    found = []
    for step in steps(doc):
        if step.get("task") == "Deployctl@1":
            inputs = {k: expand(str(v), variables) for k, v in step["inputs"].items()}
            found.append(task_invocation(inputs))
        for script in (step.get("script"), step.get("bash"), (step.get("inputs") or {}).get("inlineScript")):
            if script:
                found += shell_invocations(expand(script, variables))
    return found


def check(args: list[str]) -> Any:
    """Parse like the real CLI would; raises click.UsageError (unknown option, missing argument...)."""
    name, rest = args[0], args[1:]
    cmd = CLI.commands.get(name)
    if cmd is None:
        raise click.UsageError(f"no such command {name!r}")
    return cmd.make_context(name, list(rest), resilient_parsing=False)


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_pipeline_parses_and_stages_are_in_order(path):
    doc = load(path)
    names = [s["stage"] for s in doc["stages"]]
    assert names == ["validate", "plan", "dev", "smoke", "prod"]
    deps = {s["stage"]: s.get("dependsOn") for s in doc["stages"]}
    assert deps["plan"] == "validate" and deps["dev"] == "plan" and deps["smoke"] == "dev"
    assert "smoke" in deps["prod"]
    envs = [j["environment"] for s in doc["stages"] for j in s["jobs"] if "deployment" in j]
    assert envs == ["deployctl-dev", "deployctl-prod"]  # approvals are checks on these
    publishes = [s for s in steps(doc) if "publish" in s]
    assert publishes and publishes[0]["artifact"] == "plans"


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_every_deployctl_invocation_is_valid_for_the_cli(path):
    found = invocations(path)
    assert {a[0] for a in found} >= {"validate", "plan", "apply", "invoke"}
    for args in found:
        try:
            ctx = check(args)
        except click.ClickException as e:
            pytest.fail(f"{path.name}: deployctl {' '.join(args)}: {e.format_message()}")
        manifest = ctx.params.get("manifest")
        if manifest is not None and "$(" not in str(manifest):
            assert (REPO / manifest).exists(), f"{path.name}: {manifest} does not exist"
        if args[0] == "apply":  # a reviewed plan, never the manifest straight from the checkout
            assert str(manifest).endswith(".json"), args


def test_the_checker_rejects_what_the_cli_rejects():
    with pytest.raises(click.NoSuchOption):
        check(["plan", "m.yaml", "--bogus"])
    with pytest.raises(click.BadParameter):
        check(["plan", "m.yaml", "-o", "yaml"])
    with pytest.raises(click.MissingParameter):
        check(["apply"])
    with pytest.raises(click.UsageError):
        check(["deploy", "m.yaml"])
    assert shell_invocations('rc=0; deployctl plan "a b.yaml" -o json > x.json || rc=$?  # deployctl nope') == [
        ["plan", "a b.yaml", "-o", "json"]]
    assert shell_invocations("deployctl invoke m.yaml \\\n  --target dev") == [["invoke", "m.yaml", "--target", "dev"]]
    assert shell_invocations('pip install "deployctl[azure]"; echo deployctl') == []


def test_the_example_manifest_is_valid():
    from orchestrator.manifest import load_manifest

    loaded = load_manifest(FOLDER / "deployctl.yaml", variables={})
    assert [t.name for t in loaded.manifest.targets] == ["dev", "prod"]
