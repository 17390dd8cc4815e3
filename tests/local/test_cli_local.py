"""The README's main flow, through the real `deployctl` CLI in subprocesses (the server outlives them)."""

from __future__ import annotations

import json
import os
import re
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
    assert re.search(r"^  smoke test: passed \(HTTP 200, \d+ ms\)$", applied.stdout, re.M), applied.stdout

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

    logs = cli("logs", manifest, env=env)
    assert logs.returncode == 0
    version = doc["outputs"]["version"]
    assert f"version {version} pid " in logs.stdout and "worker ready (score.py loaded and init() done in" in logs.stdout
    assert f"serving on 127.0.0.1:{doc['outputs']['scoring_uri'].split(':')[2].split('/')[0]}" in logs.stdout

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
    out = r.stdout + r.stderr
    assert "Python 3.99, asked for by environment.python" in out and "is not installed" in out and "Traceback" not in r.stderr


@pytest.fixture
def examples(tmp_path, env_cache):
    """The near-real-time and batch examples (they share the quickstart's model), copied."""
    root = tmp_path / "ex"
    for name in ("quickstart", "near-real-time", "batch"):
        shutil.copytree(REPO / "examples" / name, root / name, ignore=shutil.ignore_patterns(".deployctl"))
    env = dict(os.environ, DEPLOYCTL_CACHE_DIR=str(env_cache), CI="1")
    yield root, env
    for name in ("near-real-time", "batch"):
        cli("destroy", str(root / name / "deployctl.yaml"), "--yes", env=env)


def test_near_real_time_example_async_then_fetch(examples):
    root, env = examples
    manifest = str(root / "near-real-time" / "deployctl.yaml")
    applied = cli("apply", manifest, "--yes", env=env)
    assert applied.returncode == 0 and re.search(r"smoke test: passed \(done, \d+ ms\)", applied.stdout), applied.stdout
    sample = str(root / "near-real-time" / "sample-request.json")
    queued = cli("invoke", manifest, "--file", sample, "--async", "--idempotency-key", "order-1", "--output", "json", env=env)
    assert queued.returncode == 0, queued.stderr
    rid = json.loads(queued.stdout)["request_id"]
    again = cli("invoke", manifest, "--file", sample, "--async", "--idempotency-key", "order-1", "--output", "json", env=env)
    assert json.loads(again.stdout)["request_id"] == rid  # one key, one run
    plain = cli("invoke", manifest, "--file", sample, "--async", "--idempotency-key", "order-1", env=env)
    assert plain.stdout == f"{rid}\n"  # the id alone: ID=$(deployctl invoke ... --async)
    fetched = cli("invoke", manifest, "--request-id", rid, "--output", "json", env=env)
    doc = json.loads(fetched.stdout)
    for _ in range(100):  # bounded: the queue workers are already warm
        if doc["state"] in ("done", "dead"):
            break
        doc = json.loads(cli("invoke", manifest, "--request-id", rid, "--output", "json", env=env).stdout)
    assert doc["state"] == "done" and doc["ok"] and isinstance(doc["body"], list)
    # without --async, invoke waits for the result
    waited = cli("invoke", manifest, "--file", sample, env=env)
    assert waited.returncode == 0 and isinstance(json.loads(waited.stdout), list)


def test_batch_example_writes_predictions_and_resumes(examples, tmp_path):
    root, env = examples
    manifest = str(root / "batch" / "deployctl.yaml")
    applied = cli("apply", manifest, "--yes", env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert re.search(r"smoke test: passed \(done, \d+ ms\)", applied.stdout), applied.stdout  # the sample file, batched
    out = tmp_path / "predictions.csv"
    scored = cli("invoke", manifest, "--input", str(root / "batch" / "data"), "--output-path", str(out), env=env)
    assert scored.returncode == 0, scored.stderr
    rows = out.read_text().splitlines()
    inputs = sorted((root / "batch" / "data").glob("*.csv"))
    assert len(rows) == sum(len(f.read_text().splitlines()) - 1 for f in inputs)  # one per data row
    assert rows[0].startswith("part-000.csv,0,")
    total = (len(inputs) + 1) // 2  # mini_batch_size: 2
    progress = [line for line in scored.stderr.splitlines() if "mini-batches:" in line]
    assert progress[0] == f"[dev] mini-batches: 0/{total} (0%)" and progress[-1] == f"[dev] mini-batches: {total}/{total} (100%)"
    again = cli("invoke", manifest, "--input", str(root / "batch" / "data"), "--output-path", str(out), env=env)
    assert again.returncode == 0 and out.read_text().splitlines() == rows
    # the rerun found every mini-batch done: it says so, and its progress starts complete
    assert f"resuming: {total} of {total} mini-batches were done by an earlier run" in again.stderr
    progress = [line for line in again.stderr.splitlines() if "mini-batches:" in line]
    assert progress == [f"[dev] mini-batches: {total}/{total} (100%)"]
