"""Background processes that outlive the CLI: start, watch, stop.  Side effects only."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from targets.local.runtime.deployctl_runtime.lifecycle import start_time

RUNTIME = Path(__file__).parent / "runtime"
KILL_AT = "DEPLOYCTL_TEST_KILL_AT"


def kill_point(phase: str) -> None:
    """Test hook: with ``DEPLOYCTL_TEST_KILL_AT=<phase>`` set, this process SIGKILLs itself here,
    exactly as ``kill -9`` at that moment would (tests/local/test_kill_points.py loops over every
    phase of an apply).  Nothing else reads the variable."""
    if os.environ.get(KILL_AT) == phase:
        os.kill(os.getpid(), signal.SIGKILL)


def runtime_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a runtime process: the runtime on PYTHONPATH, bytecode allowed."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # user code should compile once, not on every start
    env["PYTHONPATH"] = str(RUNTIME)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def start_detached(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> int:
    """Start ``cmd`` in its own session (it survives the CLI and its Ctrl-C), logging to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, close_fds=True)
    return proc.pid


_exit_status: dict[int, int] = {}  # wait statuses of children reaped by alive()


_PF_KTHREAD = 0x00200000  # /proc/<pid>/stat flags: a kernel thread (never ours)
_EXEC_GRACE_S = 2.0  # how long a process may show no command line while it is exec()ing


def alive(pid: int | None, marker: str = "deployctl_runtime") -> bool:
    """Is ``pid`` running and still ours (not a recycled pid, not a zombie)?

    A process that was just started can show an empty command line for a moment: Popen returns
    once the child is in exec(), before the kernel has set up the new program's arguments.  Read
    again until they appear, or the start of every server would race with this check."""
    if not pid:
        return False
    deadline = time.monotonic() + _EXEC_GRACE_S
    try:
        while True:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                with contextlib.suppress(ChildProcessError):
                    reaped, status = os.waitpid(pid, os.WNOHANG)
                    if reaped:
                        _exit_status[pid] = status
                return False
            if int(fields[6]) & _PF_KTHREAD:
                return False
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if cmdline or time.monotonic() > deadline:
                return marker in cmdline.decode(errors="replace")
            time.sleep(0.001)
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return False


def same(record: Any, marker: str = "deployctl_runtime") -> bool:
    """Is the process ``record`` (``{"pid", "start"}``) names still running, and the very same one?
    A recorded start time that differs means the kernel gave the pid to another process."""
    if not isinstance(record, dict) or not alive(record.get("pid"), marker):
        return False
    recorded = record.get("start")
    return recorded is None or start_time(record["pid"]) == recorded


def find(marker: str) -> list[int]:
    """Every running runtime process (not this one) whose command line contains ``marker``: a
    deployment's zygote, servers and workers all name its state folder (workers and forked
    servers carry their parent's command line)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        pid = int(proc.name)
        if pid != os.getpid() and alive(pid, marker) and alive(pid):
            found.append(pid)
    return found


def how_it_ended(pid: int | None) -> str | None:
    """How a process this one started has ended ("exited with code 1", "killed by SIGKILL ..."),
    when that is known: what to say when it left nothing in its log."""
    if not pid:
        return None
    status = _exit_status.get(pid)
    deadline = time.monotonic() + 0.5  # a process seen dead may still be finishing its exit
    while status is None:
        try:
            reaped, code = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None  # not our child (a zygote's fork), or already reaped elsewhere
        if reaped:
            status = _exit_status[pid] = code
        elif time.monotonic() > deadline:
            return None  # still running
        else:
            time.sleep(0.01)
    return _ending(os.waitstatus_to_exitcode(status))


def _ending(exit_code: int, when: str = "") -> str:
    """An exit code as ``os.waitstatus_to_exitcode`` gives it (negative: the signal), in words."""
    if exit_code < 0:
        sig = -exit_code
        oom = " (the kernel's out-of-memory killer sends it: does the model fit in memory?)" if sig == signal.SIGKILL else ""
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by {name}{when}{oom}"
    return f"exited with code {exit_code}{when}"


def why_not_ready(pid: int | None, status: dict[str, Any], waited_s: float) -> str:
    """What to say when a server did not get ready and left nothing in its log: a worker's end as
    the server recorded it, else the server's own end, else that it is still not ready."""
    worker_code = status.get("exit_code")
    if isinstance(worker_code, int) and worker_code != 0:
        return f"a worker process {_ending(worker_code, ' while starting')}"
    ended = how_it_ended(pid)
    if ended:
        return f"the server process {ended}"
    if alive(pid):
        return f"the server is still not ready after {waited_s:.0f} s"
    return "the server process ended (how is unknown: it was reaped elsewhere)"


def read_status(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def wait_for(path: Path, pid: int, done: Callable[[dict[str, Any]], bool], timeout: float,
             poll: float = 0.02) -> dict[str, Any]:
    """Poll a status file until ``done(status)``; returns the last status (check ``done`` again:
    the process may have exited or the time run out)."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = read_status(path)
        if done(status) or status.get("state") in ("failed", "stopped"):
            return status
        if not alive(pid):
            time.sleep(poll)  # the status file may lag the exit by a moment
            return read_status(path)
        time.sleep(poll)
    return status


def stop(pid: int | None, timeout: float = 10.0) -> None:
    """SIGTERM (finish in-flight work), then SIGKILL after ``timeout``."""
    stop_all([pid] if pid else [], timeout)


def stop_all(pids: list[int], timeout: float = 10.0) -> None:
    """:func:`stop` several processes at once (they drain side by side, not in turn)."""
    running = [pid for pid in pids if alive(pid)]
    for pid in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running and time.monotonic() < deadline:
        running = [pid for pid in running if alive(pid)]
        time.sleep(0.02)
    for pid in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # a server leads its session: its workers go too
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # (a worker found on its own does not)
    deadline = time.monotonic() + 10  # (a thread stuck in the kernel, "D", delays even SIGKILL)
    while any(alive(pid) for pid in running) and time.monotonic() < deadline:
        time.sleep(0.02)


def describe(pids: list[int]) -> str:
    """``pid (state)`` for each: what to say about processes that would not stop."""
    def state(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return "gone"

    return ", ".join(f"{pid} (state {state(pid)})" for pid in pids)
