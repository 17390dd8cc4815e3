"""Fixtures of the Functions target's tests: packages staged from a score.py text, loaded by the
host stand-in (the venv's azure-functions; the process environment and sys.path restored)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from targets.web import package

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "functions-real-time"


def stage(tmp: Path, score: str | None = None, *, max_attempts: int = 3, name: str = "pkg",
          mode: str = "queue") -> Path:
    code = EXAMPLE / "src"
    if score is not None:
        code = tmp / f"{name}-src"
        code.mkdir()
        (code / "score.py").write_text(score)
    cfg = package.app_config("score.py", max_attempts, {}, mode)
    return package.stage(tmp / name, code_dir=code, model_path=EXAMPLE / "model", config=cfg, site_packages_dir=None)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the real-time example's code, model and sample request, to change in a test."""
    shutil.copytree(EXAMPLE / "src", tmp_path / "src")
    shutil.copytree(EXAMPLE / "model", tmp_path / "model")
    shutil.copy(EXAMPLE / "sample-request.json", tmp_path / "sample-request.json")
    return tmp_path


@pytest.fixture
def isolated_process():
    """The host writes app settings to os.environ and puts the package on sys.path, as the worker
    does; tests put both back."""
    env, path = dict(os.environ), list(sys.path)
    mods = set(sys.modules)
    yield
    os.environ.clear()
    os.environ.update(env)
    sys.path[:] = path
    for m in set(sys.modules) - mods:
        if m in ("function_app", "entry_module") or m.startswith("deployctl_runtime"):
            sys.modules.pop(m, None)
