"""The README's main flow, through the real `deployctl` CLI in subprocesses (the server outlives them)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.local.conftest import QUICKSTART, REPO

pytestmark = pytest.mark.slow


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


@pytest.fixture
def quickstart(tmp_path, env_cache):
    proj = tmp_path / "quickstart"
    shutil.copytree(QUICKSTART, proj, ignore=shutil.ignore_patterns(".deployctl"))
    env = dict(os.environ, DEPLOYCTL_CACHE_DIR=str(env_cache), CI="1")
    manifest = str(proj / "deployctl.yaml")
    yield proj, manifest, env
    cli("destroy", manifest, "--yes", env=env)  # stops the server whatever the test did


def test_quickstart_apply_invoke_status_logs_noop_destroy(quickstart):
    proj, manifest, env = quickstart
    applied = cli("apply", manifest, "--yes", env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr

    invoked = cli("invoke", manifest, "--file", str(proj / "sample-request.json"), env=env)
    assert invoked.returncode == 0, invoked.stderr
    assert json.loads(invoked.stdout) == [0, 2]  # setosa, virginica: the sample's two flowers

    status = cli("status", manifest, "--output", "json", env=env)
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)[0]
    assert doc["outputs"]["health"] == "healthy" and doc["outputs"]["scoring_uri"].startswith("http://127.0.0.1:")
    assert "secrets" not in doc
    key_file = proj / ".deployctl" / "iris-quickstart" / "dev" / "key"
    key = key_file.read_text().strip()
    assert key not in status.stdout + status.stderr + applied.stdout + applied.stderr  # masked everywhere
    shown = cli("status", manifest, "--output", "json", "--show-keys", env=env)
    assert json.loads(shown.stdout)[0]["secrets"] == {"key": key}

    assert cli("logs", manifest, env=env).returncode == 0

    # unchanged manifest: a no-op, and the server state on disk is not touched
    record = proj / ".deployctl" / "iris-quickstart" / "dev" / "deployment.json"
    before = record.stat().st_mtime_ns
    again = cli("apply", manifest, "--yes", "--output", "json", env=env)
    assert again.returncode == 0, again.stderr
    changes = json.loads(again.stdout)["targets"][0]["changes"]
    assert all(c["status"] != "done" for c in changes)
    assert record.stat().st_mtime_ns == before

    pid = json.loads(record.read_text())["pid"]
    destroyed = cli("destroy", manifest, "--yes", env=env)
    assert destroyed.returncode == 0, destroyed.stderr
    assert not Path(f"/proc/{pid}").exists() or b"deployctl_runtime" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert not record.exists()


def test_invoke_before_apply_and_bad_input_are_clear_errors(quickstart):
    proj, manifest, env = quickstart
    r = cli("invoke", manifest, "--file", str(proj / "sample-request.json"), env=env)
    assert r.returncode != 0 and "run deployctl apply first" in r.stderr and "Traceback" not in r.stderr
    (proj / "deployctl.yaml").write_text((proj / "deployctl.yaml").read_text().replace('python: "3.11"', 'python: "3.99"'))
    r = cli("apply", manifest, "--yes", env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Python 3.99 is not installed" in r.stdout + r.stderr and "Traceback" not in r.stderr
