"""Test-wide setup: the test-only ``memory`` target is installed through a real entry point
(a dist-info folder on sys.path), exactly as a third-party plugin would be."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
REPO = TESTS.parent
SHARED = REPO.parent / "shared"
FAKE_PLUGIN = TESTS / "fake_plugin"

if str(FAKE_PLUGIN) not in sys.path:
    sys.path.insert(0, str(FAKE_PLUGIN))


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for running the deployctl CLI in a subprocess with the test plugin visible."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(FAKE_PLUGIN), env.get("PYTHONPATH", "")) if p)
    env.pop("TF_BUILD", None)
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def _fresh_registry():
    from orchestrator.registry import default_registry

    default_registry.cache_clear()
    yield
    default_registry.cache_clear()


@pytest.fixture
def memory_clouds():
    import memtarget

    memtarget.CLOUDS.clear()
    yield memtarget
    memtarget.CLOUDS.clear()


@pytest.fixture(scope="session", autouse=True)
def _no_process_outlives_the_suite(tmp_path_factory):
    """A test that deploys (a local server, a simulated cloud's warm scorer, a container) must
    clean up; whatever still runs from this session's temporary folders at the end is stopped
    here, and named, so a leak is seen rather than left running on the machine."""
    base = str(tmp_path_factory.getbasetemp())
    yield
    import signal
    import time

    def ours() -> list[tuple[int, str]]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if base in cmd and "deployctl_runtime" in cmd:
                    found.append((int(entry.name), cmd))
        return found

    leaked = ours()
    for pid, _ in leaked:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + 5
    while ours() and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid, _ in ours():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if leaked:
        names = sorted({cmd.split(base, 1)[1].split("/")[1] for _, cmd in leaked if base in cmd})
        sys.stderr.write(f"\nwarning: {len(leaked)} scoring process(es) outlived their tests and were stopped: "
                         f"{', '.join(names)}\n")
