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

RUNTIME = Path(__file__).parent / "runtime"


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


def alive(pid: int | None, marker: str = "deployctl_runtime") -> bool:
    """Is ``pid`` running and still ours (not a recycled pid, not a zombie)?"""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                reaped, status = os.waitpid(pid, os.WNOHANG)
                if reaped:
                    _exit_status[pid] = status
            return False
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return False


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
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        oom = " (the kernel's out-of-memory killer sends it: does the model fit in memory?)" if sig == signal.SIGKILL else ""
        return f"killed by {signal.Signals(sig).name}{oom}"
    return f"exited with code {os.WEXITSTATUS(status)}"


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
    if not alive(pid):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
