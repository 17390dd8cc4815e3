"""kill -9 at every point of a local apply, and of a server's supervisor: nothing runs unrecorded,
status says what runs, the next apply converges and destroy leaves nothing.

Each apply to be killed runs `deployctl apply` in a child process with DEPLOYCTL_TEST_KILL_AT set
to a phase: the child SIGKILLs itself at that point (targets.local.processes.kill_point), exactly as
`kill -9` there would.  What runs is read from /proc, independently of deployctl's own records.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.plan import Action
from targets.local import processes
from tests.local.conftest import REPO, SCORE
from tests.local.test_local_target import post

pytestmark = pytest.mark.slow

# every kill point of a local apply, in the order an apply passes them
PHASES = ("zygote", "intent", "starting", "smoked", "public", "recorded", "stopped")
SAMPLE = {"data": [[5.1, 3.5, 1.4, 0.2]]}


def cli_apply(p, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CI="1")
    if kill_at:
        env[processes.KILL_AT] = kill_at
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", "apply", str(p.manifest), "--yes"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def target_of(p):
    e = p.engine()
    return e.target(e.manifest.targets[0])


def tree(state: Path) -> dict[str, set[int]]:
    """What of this target runs, from /proc: zygotes, server supervisors (a zygote's children, or
    started cold) and workers (a supervisor's children)."""
    found = set(processes.find(str(state) + os.sep))
    parent = {pid: _ppid(pid) for pid in found}
    zygotes = {pid for pid in found if parent[pid] not in found and b"deployctl_runtime.zygote" in _cmdline(pid)}
    supervisors = {pid for pid in found - zygotes if parent[pid] not in found - zygotes}
    workers = {pid for pid in found if parent[pid] in supervisors}
    assert found == zygotes | supervisors | workers, found
    return {"zygotes": zygotes, "supervisors": supervisors, "workers": workers}


def assert_truthful(p) -> None:
    """After a kill: every process that runs is either the recorded deployment (and its zygote)
    or reported as a stray, and status and plan say so."""
    time.sleep(0.5)  # a server forked just before the kill has written its own record by now
    t = target_of(p)
    observed = t.read()
    running = tree(t.ctx.state_dir)
    strays = {o.spec["pid"] for o in observed if o.type == "local.process"}
    server = [o for o in observed if o.type == "local.server"]
    rec = json.loads((t.ctx.state_dir / "deployment.json").read_text()) if server else {}
    zygote = t.ctx.state_dir / "zygote.json"  # the recorded zygote, kept warm for the next apply
    zygotes = {json.loads(zygote.read_text())["pid"]} if zygote.exists() else set()
    accounted = strays | ({rec["pid"]} if server else set()) | {z for z in zygotes if processes.alive(z)}
    assert running["zygotes"] | running["supervisors"] == accounted, (running, observed)
    status = p.engine().status()[0]
    states = {r.address.split("/")[0]: r.state for r in status.resources}
    assert ("orphaned" in states.values()) == bool(strays), status.resources
    if not server:
        assert states["local.server"] == "missing"
    plan = p.engine().plan()
    assert plan.has_changes == (bool(strays) or states.get("local.server") != "in-sync")
    deletes = {c.name for c in plan.targets[0].changes if c.action is Action.delete}
    assert len(deletes) == len(strays)


def burst(port: int, key: str, n: int = 50) -> Counter:
    """``n`` requests, each on a new connection (whichever process accepts it answers)."""
    return Counter(post(port, SAMPLE, key)[1].get("version") for _ in range(n))


def assert_converged(p, version: int) -> dict:
    """Apply once more: exactly one version serves, the current one, and status says so."""
    _, result = p.apply()
    assert result.ok, result.targets[0].error
    status = p.engine().status()[0]
    assert [r.state for r in status.resources] == ["in-sync", "in-sync"], status.resources
    assert status.outputs["health"] == "healthy" and "stray_pids" not in status.outputs
    state = target_of(p).ctx.state_dir
    rec = json.loads((state / "deployment.json").read_text())
    zygote = json.loads((state / "zygote.json").read_text())["pid"]
    # a stopped version may still be finishing its exit (a loaded machine takes seconds to tear down
    # a process whose threads are still ending): converged means it is gone soon, not this instant
    deadline = time.monotonic() + 20
    while (running := tree(state))["supervisors"] != {rec["pid"]} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running["supervisors"] == {rec["pid"]} and running["zygotes"] == {zygote}, running
    assert running["workers"] == set(json.loads(Path(rec["status_file"]).read_text())["workers"]) and \
        len(running["workers"]) == 1
    assert [v["pid"] for v in target_of(p)._versions()] == [rec["pid"]]  # the records agree
    assert burst(rec["public_port"], (state / "key").read_text().strip()) == {version: 50}
    return rec


def assert_destroyed(p, port: int) -> None:
    e = p.engine()
    result = e.apply(e.plan(destroy=True), check_fresh=False)
    assert result.ok, result.targets[0].error
    assert processes.find(str(target_of(p).ctx.state_dir) + os.sep) == []
    assert_port_closed(port)


def assert_port_closed(port: int) -> None:
    """Refused within 5 s: a process seen dead (its main thread is) may hold its sockets until its
    other threads have exited too."""
    deadline = time.monotonic() + 5
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except ConnectionRefusedError:
            return
        assert time.monotonic() < deadline, f"port {port} still accepts connections"
        time.sleep(0.05)


def kill_at(p, phase: str, expect_kill: bool = True) -> None:
    r = cli_apply(p, kill_at=phase)
    if expect_kill:
        assert r.returncode == -signal.SIGKILL, f"not killed at {phase!r} ({r.returncode}):\n{r.stdout}{r.stderr}"
    else:
        assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("phase", PHASES)
def test_apply_killed_at_each_phase_converges(project_factory, phase):
    p = project_factory()
    # a first deploy (create) killed at `phase`
    kill_at(p, phase)
    assert_truthful(p)
    assert_converged(p, version=1)
    # a code-only update killed at `phase` (a running zygote is reused: "zygote" is not passed)
    p.write_score(SCORE.replace("VERSION = 1", "VERSION = 2"))
    kill_at(p, phase, expect_kill=phase != "zygote")
    assert_truthful(p)
    rec = assert_converged(p, version=2)
    # killed once more, then destroyed straight away: nothing of it may keep running
    p.write_score(SCORE.replace("VERSION = 1", "VERSION = 3"))
    kill_at(p, phase, expect_kill=phase != "zygote")
    assert_truthful(p)
    assert_destroyed(p, rec["public_port"])


def test_three_applies_killed_after_going_public_then_one_apply(project_factory):
    """The reported case: each killed apply left a public, unrecorded version, and the next apply
    said in-sync while they kept answering.  Now one apply leaves only the current version, and no
    request fails meanwhile (strays drain before they exit)."""
    p = project_factory()
    assert p.apply()[1].ok
    for v in (2, 3, 4):
        p.write_score(SCORE.replace("VERSION = 1", f"VERSION = {v}"))
        kill_at(p, "public")
    assert_truthful(p)
    state = target_of(p).ctx.state_dir
    port, key = json.loads((state / "deployment.json").read_text())["public_port"], (state / "key").read_text().strip()
    failures: list[object] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                status, body = post(port, SAMPLE, key)
                if status != 200:
                    failures.append(body)
            except OSError as exc:
                failures.append(exc)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        rec = assert_converged(p, version=4)
    finally:
        stop.set()
        t.join()
    assert failures == []
    assert_destroyed(p, rec["public_port"])


def test_apply_killed_at_arbitrary_moments_converges(project_factory):
    """kill -9 as a user does it: at whatever moment, without the hook.  Code-only updates, each
    killed after a different delay (wherever it lands: imports, start, smoke test, handoff...),
    each followed by one apply that must converge."""
    p = project_factory()
    assert p.apply()[1].ok
    env = dict(os.environ, CI="1")
    for version, delay in enumerate((0.5, 0.7, 0.9, 1.1, 1.3, 1.6), start=2):
        p.write_score(SCORE.replace("VERSION = 1", f"VERSION = {version}"))
        child = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "apply", str(p.manifest), "--yes"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
        time.sleep(delay)
        child.kill()
        child.wait()
        assert_truthful(p)
        rec = assert_converged(p, version=version)
    assert_destroyed(p, rec["public_port"])


def test_a_killed_supervisor_takes_its_workers_and_the_next_apply_starts_cleanly(project_factory):
    p = project_factory(target_extra="workers: 2\n")
    assert p.apply()[1].ok
    state = target_of(p).ctx.state_dir
    rec = json.loads((state / "deployment.json").read_text())
    workers = json.loads(Path(rec["status_file"]).read_text())["workers"]
    assert len(workers) == 2
    os.kill(rec["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 3
    while any(processes.alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(processes.alive(w) for w in workers), "the workers outlived their supervisor"
    assert_port_closed(rec["public_port"])  # nothing serves the port unsupervised
    status = p.engine().status()[0]
    assert status.outputs["health"] == "down"
    assert [r.state for r in status.resources] == ["in-sync", "missing"]
    _, result = p.apply()
    assert result.ok, result.targets[0].error  # not "address already in use"
    new = json.loads((state / "deployment.json").read_text())
    assert new["public_port"] == rec["public_port"]
    assert burst(new["public_port"], (state / "key").read_text().strip()) == {1: 50}
    assert len(tree(state)["workers"]) == 2
    assert_destroyed(p, new["public_port"])


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
