"""The Functions examples (real-time, queue, Durable) with the real CLI and `--simulate`: apply, a
clean replan, invoke (real-time: the answer; near-real-time: sync, then --async and --request-id in
separate runs), status without and with --show-keys, logs, destroy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, subprocess_env

DEPLOYCTL = [str(Path(sys.executable).parent / "deployctl")]
SAMPLE = str(REPO / "examples" / "functions-real-time" / "sample-request.json")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEPLOYCTL, *args], capture_output=True, text=True, env=subprocess_env(), timeout=600,
                          cwd=REPO)


def body_of(out: str) -> dict:
    return json.loads(out[out.index("{"):])


@pytest.mark.slow
@pytest.mark.parametrize("example", ["functions-real-time", "functions-near-real-time", "functions-durable"])
def test_example_runs_with_simulate(example, tmp_path):
    manifest = str(REPO / "examples" / example / "deployctl.yaml")
    sim = ["--simulate", "--state-dir", str(tmp_path / "state")]
    applied = run("apply", manifest, *sim, "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    plan = run("plan", manifest, *sim)
    assert plan.returncode == 0 and "0 to create, 0 to update, 0 to replace, 0 to delete" in plan.stdout, plan.stdout
    inv = run("invoke", manifest, *sim, "--file", SAMPLE, "-o", "json")
    assert inv.returncode == 0, inv.stdout + inv.stderr
    assert body_of(inv.stdout)["body"] == ["setosa", "virginica"]
    if example != "functions-real-time":  # a queue, or Durable Functions' async HTTP pattern
        queued = body_of(run("invoke", manifest, *sim, "--file", SAMPLE, "--async", "-o", "json").stdout)
        assert queued["state"] == "queued" and queued["request_id"]
        alone = run("invoke", manifest, *sim, "--file", SAMPLE, "--async")
        assert alone.returncode == 0 and alone.stdout.strip().count("\n") == 0  # the id alone on stdout
        fetched = run("invoke", manifest, *sim, "--request-id", queued["request_id"], "-o", "json")
        assert body_of(fetched.stdout)["state"] == "done" and body_of(fetched.stdout)["body"] == ["setosa", "virginica"]
        fetched = run("invoke", manifest, *sim, "--request-id", alone.stdout.strip(), "-o", "json")
        assert body_of(fetched.stdout)["state"] == "done", fetched.stdout
    else:
        status = run("status", manifest, *sim)
        assert status.returncode == 0 and "first_answer_ms" in status.stdout and "function_key" not in status.stdout
        shown = run("status", manifest, *sim, "--show-keys")
        assert "function_key" in shown.stdout, shown.stdout
        logs = run("logs", manifest, *sim, "--tail", "400")  # what the app's host wrote, in earlier runs
        assert logs.returncode == 0, logs.stdout + logs.stderr
        assert "model loaded: 3 classes" in logs.stdout  # score.py's print in init()
        assert "score.py: init() done in" in logs.stdout
        assert "Executing 'Functions.score_http'" in logs.stdout
        assert "Executed 'Functions.score_http' (Succeeded" in logs.stdout
    destroyed = run("destroy", manifest, *sim, "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
