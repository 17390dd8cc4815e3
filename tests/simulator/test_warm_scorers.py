"""Simulated endpoints' scorers stay warm across CLI runs and are stopped with what they serve
(issue 10 item 13): the CLI, the real SDK clients, the simulator, real scoring processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.azure.simulator.scorers import ScorerRegistry, home_of, start_time
from tests.conftest import REPO, subprocess_env

pytestmark = pytest.mark.slow  # builds (or reuses) a uv environment and starts scoring servers

DEPLOYCTL = [sys.executable, "-m", "orchestrator.cli"]
SAMPLE = REPO / "examples" / "quickstart" / "sample-request.json"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEPLOYCTL, *args], capture_output=True, text=True, env=subprocess_env(), timeout=900,
                          cwd=REPO)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def records(state_file: Path) -> list[dict]:
    registry = ScorerRegistry(home_of(state_file))
    return [registry.read(d) for d in sorted(registry.digests())]


@pytest.fixture
def online(tmp_path: Path) -> Path:
    """The azureml-online example in a folder of its own (a test may edit its score.py)."""
    root = tmp_path / "examples"
    shutil.copytree(REPO / "examples" / "quickstart", root / "quickstart", ignore=shutil.ignore_patterns(".deployctl"))
    shutil.copytree(REPO / "examples" / "azureml-online", root / "azureml-online", ignore=shutil.ignore_patterns(".deployctl"))
    return root / "azureml-online" / "deployctl.yaml"


@pytest.fixture
def state(tmp_path: Path):
    """The state file of a simulated cloud; whatever scorer a failing test left is killed."""
    state = tmp_path / "state" / "simulated-azure.json"
    yield state
    for r in records(state):
        if r.get("pid") and pid_alive(r["pid"]):
            os.kill(r["pid"], 9)


def apply_online(online: Path, state: Path) -> dict:
    """``apply --simulate`` of the example; the record of the one warm scorer its smoke test started."""
    applied = run("apply", str(online), "--yes", "--simulate", "--state-dir", str(state.parent))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    [rec] = records(state)
    return rec


def test_scorer_outlives_the_run_is_reused_then_reaped(online, state):
    sim = ("--simulate", "--state-dir", str(state.parent))
    rec = apply_online(online, state)  # the smoke test started it; it survived the apply
    assert rec["state"] == "ready" and pid_alive(rec["pid"]) and start_time(rec["pid"]) == rec["start_time"]
    times = []
    for _ in range(2):
        t0 = time.monotonic()
        inv = run("invoke", str(online), "--file", str(SAMPLE), "-o", "json", *sim)
        times.append(time.monotonic() - t0)
        assert inv.returncode == 0, inv.stdout + inv.stderr
        assert json.loads(inv.stdout[inv.stdout.index("{"):])["body"] == [0, 2]
    assert records(state) == [rec]  # the same process served both invokes: nothing restarted
    print(f"warm invokes: {times[0]:.2f} s, {times[1]:.2f} s")

    # new code: the new deployment gets a scorer of its own, the old one is stopped with its deployment
    score = online.parent.parent / "quickstart" / "src" / "score.py"
    score.write_text(score.read_text() + "\n# a code change\n")
    new = apply_online(online, state)
    assert new["digest"] != rec["digest"] and pid_alive(new["pid"])
    assert not pid_alive(rec["pid"]) and not Path(rec["workdir"]).exists()

    destroyed = run("destroy", str(online), "--yes", *sim)
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert records(state) == [] and not pid_alive(new["pid"])  # no orphan after destroy


def test_reset_stops_the_clouds_scorers(online, state):
    rec = apply_online(online, state)
    reset = subprocess.run([sys.executable, "-m", "orchestrator.azure.simulator", "reset", str(state)],
                           capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=120)
    assert reset.returncode == 0 and "stopped 1 warm scorer" in reset.stdout, reset.stdout + reset.stderr
    assert not state.exists() and records(state) == [] and not pid_alive(rec["pid"])


def test_scorer_stops_by_itself_when_the_state_file_is_deleted(online, state):
    rec = apply_online(online, state)
    state.unlink()  # e.g. rm -rf .deployctl: nothing is left to reap it
    deadline = time.monotonic() + 30
    while pid_alive(rec["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(rec["pid"])
