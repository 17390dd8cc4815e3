"""The extension's static contract: task.json against Microsoft's schema, the shim reads only
inputs task.json declares, the commands it offers exist in the CLI, and the extension ships the task."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from orchestrator.cli import app

REPO = Path(__file__).resolve().parents[2]
EXT = REPO / "azure-devops"
TASK = EXT / "DeployctlV1"
SCHEMA = REPO.parent / "shared" / "azure-devops" / "task-lib" / "tasks.schema.json"


def task_json() -> dict:
    return json.loads((TASK / "task.json").read_text())


def test_task_json_validates_against_the_official_schema():
    if not SCHEMA.exists():
        pytest.skip(f"{SCHEMA} is absent (../shared is reference material beside the repo)")
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(task_json()), key=str)
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_handler_and_connection():
    t = task_json()
    assert list(t["execution"]) == ["Node20_1"]  # the schema has no Python handler and no "Node20"
    assert (TASK / t["execution"]["Node20_1"]["target"]).exists()
    inputs = {i["name"]: i for i in t["inputs"]}
    assert inputs["azureSubscription"]["type"] == "connectedService:AzureRM"
    assert list(inputs["command"]["options"]) == ["validate", "plan", "apply", "destroy", "invoke"]


def test_shim_reads_only_declared_inputs():
    declared = {i["name"] for i in task_json()["inputs"]}
    js = (TASK / "index.js").read_text()
    used = set(re.findall(r"(?:getInput|getPathInput)\('([A-Za-z]+)'", js)) | set(re.findall(r"lines\('([A-Za-z]+)'", js))
    assert used and used <= declared, used - declared
    outputs = {o["name"] for o in task_json()["outputVariables"]}
    assert set(re.findall(r"setVariable\('([A-Za-z]+)'", js)) <= outputs


def test_task_commands_exist_in_the_cli():
    for command in task_json()["inputs"][0]["options"]:
        params = {o for p in app.commands[command].params for o in p.opts}
        assert "--ci" in params, command
    assert {"--out", "--detailed-exitcode", "--target", "--var"} <= {o for p in app.commands["plan"].params for o in p.opts}
    assert {"--yes"} <= {o for p in app.commands["apply"].params for o in p.opts}


def test_extension_manifest_ships_the_task():
    ext = json.loads((EXT / "vss-extension.json").read_text())
    assert {"path": "DeployctlV1"} in ext["files"]
    task = ext["contributions"][0]
    assert task["type"] == "ms.vss-distributed-task.task" and task["properties"]["name"] == "DeployctlV1"
    lock = json.loads((TASK / "package-lock.json").read_text())
    assert lock["packages"][""]["dependencies"] == json.loads((TASK / "package.json").read_text())["dependencies"]
