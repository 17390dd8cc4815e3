"""Process identity and lifetimes, so that nothing deployctl starts can outlive its records.

- :func:`start_time`: a process's identity is its pid plus its start time (``/proc/<pid>/stat``
  field 22): a pid the kernel recycled for another program never matches a record.
- :func:`register`: a process writes its own record (pid and start time) as the first thing it
  does, before it binds or accepts anything: whoever started it may be killed at any moment after
  the fork, and the process must still be findable from disk.
- :func:`die_with_parent`: a server's workers end when their supervisor ends, even by SIGKILL
  (``PR_SET_PDEATHSIG`` on Linux; a parent-pid watchdog elsewhere and as a fallback), so an
  unsupervised worker never keeps serving a port the records say is free.
"""

from __future__ import annotations

import os
import signal
import threading
import time

_PR_SET_PDEATHSIG = 1


def start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot; None when it is gone (or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def register(path: str) -> None:
    """Record this process (pid and start time) at ``path``."""
    from .contract import write_json_atomic  # relative: deployctl's own side imports this module too

    write_json_atomic(path, {"pid": os.getpid(), "start": start_time(os.getpid())})


def die_with_parent(parent: int) -> None:
    """End this process (SIGKILL) as soon as ``parent`` is no longer its parent.  Call right after
    fork(), in the child."""
    try:
        import ctypes  # here: the deploying side imports this module for start_time() alone

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the watchdog below does it, within half a second
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
