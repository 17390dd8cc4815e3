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
