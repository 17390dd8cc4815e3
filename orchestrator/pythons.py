"""Which Python a manifest's environment asks for, where that came from, and whether uv can
find it on this machine (never downloading one).

``environment.python`` (default 3.11) is the version, unless the conda file pins one: then the
conda file's line is the source, and a different explicit ``environment.python`` is a
contradiction reported at the manifest's line.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import UserError, display_path
from orchestrator.manifest.model import EnvironmentSpec
from orchestrator.requirements import conda_to_requirements

_CONDA_PYTHON = re.compile(r"^\s*-\s*(?:[\w-]+::)?python\s*[=<>!~\s]")


@dataclass(frozen=True)
class PythonChoice:
    version: str  # "3.11"
    source: str  # where it came from, for messages: "environment.python (deployctl.yaml:9)", "conda.yaml:5"
    conda_line: int = 0  # the conda file's line pinning it; 0: not from a conda file


def conda_python(conda_file: Path) -> tuple[str, int] | None:
    """The Python version a conda file pins and its 1-based line, or None."""
    text = conda_file.read_text(encoding="utf-8", errors="replace")
    try:
        _, version = conda_to_requirements(text, str(conda_file))
    except UserError:  # not this module's concern: planning reports it with the requirements
        return None
    if version is None:
        return None
    line = next((n for n, raw in enumerate(text.splitlines(), 1) if _CONDA_PYTHON.match(raw)), 0)
    return version, line


def choose_python(env: EnvironmentSpec, manifest_where: str = "environment.python") -> PythonChoice:
    """The version the environment runs and where it came from.  Raises UserError when the conda
    file pins one version and ``environment.python`` explicitly asks for another."""
    conda = env.conda_file
    pinned = conda_python(conda) if conda is not None else None
    if conda is None or pinned is None:
        default = "" if "python" in env.model_fields_set else " (the default)"
        return PythonChoice(env.python, f"{manifest_where}{default}")
    version, line = pinned
    where = f"{display_path(conda)}:{line}" if line else display_path(conda)
    if "python" in env.model_fields_set and env.python != version:
        raise UserError(f"{manifest_where} asks for Python {env.python} but {where} pins python {version}",
                        hint="remove one of them, or make them agree")
    return PythonChoice(version, where, line)


def _uv(*args: str) -> subprocess.CompletedProcess[str]:
    from uv import find_uv_bin

    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")
    env.pop("VIRTUAL_ENV", None)  # the interpreters of this machine, not of deployctl's own venv
    return subprocess.run([find_uv_bin(), "python", *args], capture_output=True, text=True, env=env, timeout=60)


def installed_pythons() -> list[str]:
    """The major.minor versions uv finds installed here, sorted (``uv python list --only-installed``)."""
    found = set(re.findall(r"^\w+-(\d+\.\d+)\.", _uv("list", "--only-installed").stdout, re.MULTILINE))
    return sorted(found, key=lambda v: tuple(int(p) for p in v.split(".")))


def find_python(choice: PythonChoice) -> Path:
    """The interpreter uv uses for ``choice`` (``uv python find --system``, no download).
    Raises UserError naming where the version came from and how to install it."""
    proc = _uv("find", "--system", choice.version)
    if proc.returncode == 0 and proc.stdout.strip():
        return Path(proc.stdout.strip())
    have = installed_pythons()
    raise UserError(
        f"Python {choice.version}, asked for by {choice.source}, is not installed where uv can find it",
        hint=f"install it with `uv python install {choice.version}`"
             + (f", or ask for an installed one ({', '.join(have)})" if have else ""),
    )
