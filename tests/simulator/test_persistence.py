"""The simulated cloud on disk: every mutation written when it happens, under a cross-process
lock, re-read when another run changed it; read-only runs never write (issue 10 item 3)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestrator.azure.simulator import LatencyModel, VirtualClock, simulated_session
from orchestrator.errors import UserError
from tests.conftest import REPO, subprocess_env
from tests.simulator.conftest import mlclient

ONLINE = REPO / "examples" / "azureml-online" / "deployctl.yaml"
DEPLOYCTL = [sys.executable, "-m", "orchestrator.cli"]


def endpoint_names(state_file: Path) -> set[str]:
    state = json.loads(state_file.read_text())
    return {r["name"] for r in state["resources"].values()
            if r["type"].lower() == "microsoft.machinelearningservices/workspaces/onlineendpoints"}


def create_endpoint(session, name: str) -> None:
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    ml = mlclient(session.simulator, rg="rg", ws="ws", credential=session.credential)
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name=name)).result()


def test_a_mutation_is_on_disk_before_the_run_ends(tmp_path):
    state = tmp_path / "sim.json"
    with simulated_session(state, latency="endpoint=10") as session:
        create_endpoint(session, "first")
        assert "first" in endpoint_names(state)  # not only at exit: a kill now loses nothing


def test_a_read_only_run_never_overwrites_what_a_concurrent_run_wrote(tmp_path):
    state = tmp_path / "sim.json"
    with simulated_session(state) as session:
        create_endpoint(session, "before")
    with simulated_session(state, read_only=True) as plan:  # starts before the apply below ends
        plan_ml = mlclient(plan.simulator, rg="rg", ws="ws", credential=plan.credential)
        assert plan_ml.online_endpoints.get("before").name == "before"
        with simulated_session(state) as apply:
            create_endpoint(apply, "during")
        written = state.read_bytes()
        # the plan sees what the apply wrote (it re-reads a changed file), and writes nothing
        assert plan_ml.online_endpoints.get("during").name == "during"
        plan_ml.online_endpoints.get_keys("during")  # a POST, still a read
    assert state.read_bytes() == written
    assert endpoint_names(state) == {"before", "during"}


def test_two_writing_runs_keep_both_runs_resources(tmp_path):
    state = tmp_path / "sim.json"
    with simulated_session(state) as one, simulated_session(state) as two:
        create_endpoint(one, "from-one")
        create_endpoint(two, "from-two")  # two re-reads the file one changed before writing
        create_endpoint(one, "again-one")
    assert endpoint_names(state) == {"from-one", "from-two", "again-one"}


def test_finished_operations_are_forgotten_once_polled(tmp_path):
    state = tmp_path / "sim.json"
    with simulated_session(state) as session:
        for i in range(5):
            create_endpoint(session, f"ep{i}")
        sim = session.simulator
        mlclient(sim, rg="rg", ws="ws").online_endpoints.get("ep0")  # any request prunes
        assert sim.state["operations"] == {}
    assert json.loads(state.read_text())["operations"] == {}


def test_latency_spec_errors_are_clear_and_lro_sets_every_kind(tmp_path):
    m = LatencyModel.parse("call=0.05,lro=2")  # the CLI help's example
    assert m.call == 0.05 and set(m.lro.values()) == {2.0}
    lo_hi = LatencyModel.parse("call=0.1-0.3")
    assert all(0.1 <= lo_hi.call_seconds() <= 0.3 for _ in range(20))
    for bad, said in [("call=fast", "'fast' is not a number"), ("lro", "expected key=value"),
                      ("latency=3", "unknown key 'latency'"), ("call=0.3-0.1", "goes backwards")]:
        with pytest.raises(UserError, match="--simulate-latency") as e:
            with simulated_session(tmp_path / "sim.json", latency=bad):
                pass
        assert said in str(e.value)
    assert not (tmp_path / "sim.json").exists()


def test_cli_bad_latency_spec_exits_2_without_traceback(tmp_path):
    out = subprocess.run([*DEPLOYCTL, "plan", str(ONLINE), "--simulate", "--state-dir", str(tmp_path),
                          "--simulate-latency", "call=0.05,lro=x"], capture_output=True, text=True,
                         env=subprocess_env(), cwd=REPO, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "--simulate-latency" in out.stderr and "'x'" in out.stderr


def test_wall_clock_sleeps_of_concurrent_threads_do_not_add_up():
    clock = VirtualClock(realtime=True)
    t0 = clock.now()
    threads = [threading.Thread(target=clock.sleep, args=(0.3,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 0.29 <= clock.now() - t0 < 0.9  # four 0.3 s waits side by side: 0.3 s, not 1.2 s


def test_cli_apply_killed_mid_run_keeps_what_it_created_and_plan_does_not_write(tmp_path):
    """kill -9 an ``apply --simulate`` while its deployment is creating: the creates made so far
    (workspace assets, endpoint, deployment) are in the file; a later ``plan`` leaves it as is."""
    state_dir = tmp_path / "state"
    state = state_dir / "simulated-azure.json"
    env = subprocess_env(DEPLOYCTL_SIMULATE_LATENCY="realtime=1,call=0,endpoint=0.2,deployment=600")
    proc = subprocess.Popen([*DEPLOYCTL, "apply", str(ONLINE), "--simulate", "--yes", "--state-dir", str(state_dir)],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        seen: set[str] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                resources = json.loads(state.read_text())["resources"].values()
            except (FileNotFoundError, ValueError):
                resources = []
            seen = {r["type"].rsplit("/", 1)[-1].lower() for r in resources}
            if "deployments" in seen:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert "deployments" in seen, f"no deployment was created within 240 s (saw {sorted(seen)})"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    kinds = [r["type"].lower() for r in json.loads(state.read_text())["resources"].values()]
    for kind in ("codes/versions", "environments/versions", "models/versions", "workspaces/onlineendpoints",
                 "onlineendpoints/deployments"):
        assert any(k.endswith(kind) for k in kinds), (kind, kinds)
    before = state.read_bytes(), state.stat().st_mtime_ns
    plan = subprocess.run([*DEPLOYCTL, "plan", str(ONLINE), "--simulate", "--state-dir", str(state_dir)],
                          capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=300)
    assert plan.returncode in (0, 1), plan.stdout + plan.stderr
    assert (state.read_bytes(), state.stat().st_mtime_ns) == before


def test_spec_index_is_cached_by_the_spec_files(tmp_path, monkeypatch):
    from orchestrator.azure.simulator.conformance import Checker

    monkeypatch.setenv("DEPLOYCTL_CACHE_DIR", str(tmp_path))
    first = Checker.load(None)
    if not first.enabled:
        pytest.skip("the REST specs (../shared/azure-rest-api-specs) are not here")
    built = first._files()
    [cached] = (tmp_path / "simulator").glob("spec-index-*.json")
    assert Checker.load(None)._files() == built and built  # read back from the cache, same index
    cached.write_text('{"files": [], "ops": {}}')  # the cache is what the second run uses, not a second parse
    assert Checker.load(None)._files() == {}
    cached.write_text("[]")  # a cache of another shape is rebuilt, not trusted
    assert Checker.load(None)._files() == built


def test_concurrent_mutations_share_writes_and_all_reach_the_file(tmp_path):
    """Group commit: writers that arrive while the file is being written share the next write."""
    from concurrent.futures import ThreadPoolExecutor

    from orchestrator.azure.simulator.providers import storage

    state = tmp_path / "sim.json"
    with simulated_session(state) as session:
        sim = session.simulator
        ml = mlclient(sim, rg="rg", ws="ws", credential=session.credential)
        ds = ml.datastores.get("workspaceblobstore", include_secrets=True)
        with sim._lock:  # a large cloud: every write of the file takes a while
            storage.put_blob(sim, ds.account_name, ds.container_name, "ballast", os.urandom(3_000_000))
        from azure.storage.blob import ContainerClient

        cc = ContainerClient(f"https://{ds.account_name}.blob.core.windows.net", ds.container_name,
                             credential=ds.credentials.account_key, transport=sim.transport)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: cc.upload_blob(f"b{i}", b"x", overwrite=True), range(48)))
        assert 0 < sim.flushes < 48
        on_disk = json.loads(state.read_text())["blobs"][ds.account_name][ds.container_name]
        assert {f"b{i}" for i in range(48)} <= set(on_disk)
