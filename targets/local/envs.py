"""Isolated scoring environments, built with uv and shared by content.

An environment is resolved and installed once (``uv pip install``), what was installed is kept
as its lock (``uv pip freeze``), and the environment is keyed by the lock's hash: identical
environments are shared across deployments, and a code-only redeploy reuses one instantly.
Builds go through uv's shared cache.

Bytecode (without it every start compiles imports from source: 3-4x slower here) comes from a
content-addressed store shared by all environments (``targets/local/bytecode.py``): a new
environment gets the pyc of every file an earlier one compiled before its first start, and what
is left is compiled in the background, which fills the store.

Layout under the cache root (``$DEPLOYCTL_CACHE_DIR`` or ``~/.cache/deployctl``)::

    locks/<input hash>.txt     the lock for a requirements input (skips re-resolving)
    envs/<lock hash>/          a finished environment (marker file .deployctl-complete; its
                               background compile's summary in .deployctl-bytecode when over)
    bytecode/<cache tag>/<sha256 of a source>.pyc
                               the store: a CHECKED_HASH pyc of that source + a CRC-32 trailer
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import TargetError
from orchestrator.requirements import conda_to_requirements
from orchestrator.state import write_atomic

COMPLETE = ".deployctl-complete"

def cache_root(override: Path | None = None) -> Path:
    if override:
        return Path(override)
    env = os.environ.get("DEPLOYCTL_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "deployctl"


def uv_bin() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


@dataclass(frozen=True)
class Environment:
    python: Path  # the environment's interpreter
    root: Path
    lock_hash: str
    lock: Path
    reused: bool


def input_digest(requirements: list[str], python: str) -> str:
    text = f"python=={python}\n" + "\n".join(sorted(r.strip() for r in requirements if r.strip()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run(args: list[str], what: str) -> str:
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise TargetError(f"{what} failed:\n{tail}")
    return proc.stdout


def find_python(version: str, source: str = "environment.python") -> Path:
    """The interpreter for ``version`` (``source``: where the manifest asked for it)."""
    from orchestrator.pythons import PythonChoice
    from orchestrator.pythons import find_python as find

    return find(PythonChoice(version, source))


def ensure_environment(requirements: list[str], python: str, *, cache: Path | None = None,
                       progress: object = None, python_source: str = "environment.python") -> Environment:
    """The environment for ``requirements`` on Python ``python``: reused when its lock exists,
    else resolved, locked and installed (under a lock, so concurrent deploys build it once).

    A new input is resolved and installed by one ``uv pip install`` (resolving separately first
    would ask the index twice: 0.4 s of a 0.6 s build here), and what it installed is recorded
    as the lock (``uv pip freeze``, plus the input's index options), which names the environment.
    A known input syncs its lock into a fresh environment only when that one was deleted."""
    root = cache_root(cache)
    key = input_digest(requirements, python)
    lock = root / "locks" / f"{key}.txt"
    say = progress if callable(progress) else (lambda _msg: None)
    (root / "envs").mkdir(parents=True, exist_ok=True)
    (root / "locks").mkdir(parents=True, exist_ok=True)
    if lock.exists():
        lock_hash = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
        with _flock(root / "envs" / f".{lock_hash}.lock"):
            env_dir = root / "envs" / lock_hash
            if not (env_dir / COMPLETE).exists():
                say("creating the environment from its lock with uv (shared cache)")
                tmp = _new_venv(root, lock_hash, find_python(python, python_source))
                _run([uv_bin(), "pip", "sync", "--quiet", "--python", str(tmp / "bin" / "python"), str(lock)],
                     "installing the environment (uv pip sync)")
                _finish(tmp, env_dir, lock_hash, root)
                return Environment(env_dir / "bin" / "python", env_dir, lock_hash, lock, reused=False)
        return Environment(env_dir / "bin" / "python", env_dir, lock_hash, lock, reused=True)

    with _flock(root / "locks" / f".{key}.lock"):  # one build per input, however many deploys ask
        if lock.exists():
            return ensure_environment(requirements, python, cache=cache, progress=progress, python_source=python_source)
        say(f"resolving and installing {len(requirements)} requirement(s) with uv (shared cache)")
        req_file = root / "locks" / f"{key}.in"
        write_atomic(req_file, "\n".join(requirements) + "\n")
        tmp = _new_venv(root, key, find_python(python, python_source))
        try:
            tmp_python = str(tmp / "bin" / "python")
            _run([uv_bin(), "pip", "install", "--quiet", "--python", tmp_python, "-r", str(req_file)],
                 "installing the environment (uv pip install)")
            frozen = _run([uv_bin(), "pip", "freeze", "--python", tmp_python], "recording the lock (uv pip freeze)")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        text = f"# python {python}\n" + "".join(o + "\n" for o in index_options(requirements)) + frozen
        lock_hash = hashlib.sha256(text.encode()).hexdigest()[:16]
        env_dir = root / "envs" / lock_hash
        with _flock(root / "envs" / f".{lock_hash}.lock"):
            reused = (env_dir / COMPLETE).exists()  # another input resolved to the same packages
            if reused:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                _finish(tmp, env_dir, lock_hash, root)
            write_atomic(lock, text)  # last: a lock names a finished environment
        return Environment(env_dir / "bin" / "python", env_dir, lock_hash, lock, reused=reused)


def resolve_lock(requirements: list[str], python: str, *, cache: Path | None = None, progress: object = None,
                 python_source: str = "environment.python") -> Path:
    """The lock for ``requirements`` on Python ``python``, without building an environment:
    the one the local target recorded, else resolved now (``uv pip compile`` for this machine's
    interpreter, as the local target's install would resolve it) and kept where
    :func:`ensure_environment` finds it, so a later local deploy installs exactly these pins.
    For builders that need only the pins (a container image installs them for its own platform)."""
    root = cache_root(cache)
    key = input_digest(requirements, python)
    lock = root / "locks" / f"{key}.txt"
    if lock.exists():
        return lock
    say = progress if callable(progress) else (lambda _msg: None)
    (root / "locks").mkdir(parents=True, exist_ok=True)
    with _flock(root / "locks" / f".{key}.lock"):
        if lock.exists():
            return lock
        say(f"resolving {len(requirements)} requirement(s) with uv (no environment built)")
        req_file = root / "locks" / f"{key}.in"
        write_atomic(req_file, "\n".join(requirements) + "\n")
        pins = _run([uv_bin(), "pip", "compile", "--quiet", "--no-header", "--no-annotate", "--python",
                     str(find_python(python, python_source)), str(req_file)], "resolving the requirements (uv pip compile)")
        pins = "".join(x.strip() + "\n" for x in pins.splitlines()
                       if x.strip() and not x.strip().startswith("#") and not _INDEX_OPTION.match(x.strip()))
        write_atomic(lock, f"# python {python}\n" + "".join(o + "\n" for o in index_options(requirements)) + pins)
    return lock


_INDEX_OPTION = re.compile(r"^(-i|--index-url|--extra-index-url|-f|--find-links|--no-index)\b")


def index_options(requirements: list[str]) -> list[str]:
    """The requirements' index options (``--extra-index-url ...``): a lock re-synced later must
    reach the same indexes.  Pure."""
    return [r.strip() for r in requirements if _INDEX_OPTION.match(r.strip())]


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _new_venv(root: Path, name: str, interpreter: Path) -> Path:
    tmp = root / "envs" / f".{name}.building"
    shutil.rmtree(tmp, ignore_errors=True)
    _run([uv_bin(), "venv", "--quiet", "--python", str(interpreter), str(tmp)], "creating the virtual environment")
    return tmp


def _finish(tmp: Path, env_dir: Path, lock_hash: str, root: Path) -> None:
    """Move a built venv to its final name (venvs record absolute paths: fix them), give it the
    bytecode the store already has, mark it complete, and start compiling the rest (and filling
    the store) in the background."""
    from targets.local.bytecode import compile_in_background, link_bytecode  # imported only when one is built

    shutil.rmtree(env_dir, ignore_errors=True)
    os.replace(tmp, env_dir)
    _fix_venv_paths(tmp, env_dir)
    link_bytecode(env_dir, root)
    (env_dir / COMPLETE).write_text(lock_hash)
    compile_in_background(env_dir, root)


def _fix_venv_paths(old: Path, new: Path) -> None:
    """Point a moved venv's activation scripts and pyvenv.cfg at its new place.  The interpreter
    itself resolves its prefix from its own location, so only text files mention the old path."""
    for f in [new / "pyvenv.cfg", *(new / "bin").iterdir()]:
        if f.is_file() and not f.is_symlink() and f.stat().st_size < 1 << 20:
            try:
                text = f.read_text()
            except UnicodeDecodeError:
                continue
            if str(old) in text:
                f.write_text(text.replace(str(old), str(new)))


def build_environment(*, requirements: str | None = None, conda: str | None = None, python: str = "3.11",
                      cache_root: Path | None = None) -> Path:
    """Build (or reuse) an environment from requirements text or conda.yaml text; returns its
    interpreter.  Used by the Azure simulator to really score uploaded models."""
    if conda is not None:
        reqs, pinned = conda_to_requirements(conda)
        python = pinned or python
    else:
        reqs = [r.strip() for r in (requirements or "").splitlines() if r.strip() and not r.strip().startswith("#")]
    return ensure_environment(reqs, python, cache=cache_root).python
