"""The process helpers every local server start relies on."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from targets.local import processes


def test_a_process_just_started_is_alive(tmp_path):
    """Popen returns while the child is still in exec(), when /proc/<pid>/cmdline can be empty
    for a moment: alive() must not take that for a dead or foreign process (it did, about one
    start in twenty here, and a healthy server's start was reported as a failure)."""
    pids = []
    try:
        for _ in range(100):
            pid = processes.start_detached([sys.executable, "-c", "import time; time.sleep(30)", "marker-x"],
                                           dict(os.environ), tmp_path / "log", cwd=tmp_path)
            pids.append(pid)
            assert processes.alive(pid, marker="marker-x")
            assert not processes.alive(pid, marker="someone-else")  # still checks whose it is
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert not processes.alive(pids[0], marker="marker-x")  # gone (and reaped) is not alive
    kthreads = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _is_kernel_thread(p)]
    for pid in kthreads[:1]:  # (none visible inside some containers)
        assert not processes.alive(pid, marker="")  # an empty command line, yet never ours


def _is_kernel_thread(proc: Path) -> bool:
    try:
        return bool(int((proc / "stat").read_text().rsplit(")", 1)[1].split()[6]) & 0x00200000)
    except (OSError, IndexError, ValueError):
        return False
