"""Requirement lines from a manifest's environment: ``requirements.txt`` as pip reads it, or an
Azure ML ``conda.yaml`` turned into its pip equivalent.  Shared by the targets that build or
register environments; reads the files named and nothing else.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from orchestrator.errors import UserError

# Conda packages that are not Python packages (or have no PyPI equivalent worth installing).
CONDA_ONLY = frozenset({
    "cudatoolkit", "cudnn", "cuda", "cuda-toolkit", "mkl", "mkl-service", "intel-openmp", "libgcc", "libgcc-ng",
    "libstdcxx-ng", "openssl", "ca-certificates", "_libgcc_mutex", "_openmp_mutex", "blas", "libblas",
    "liblapack", "openblas", "nccl", "ld_impl_linux-64", "ncurses", "readline", "sqlite", "tk", "xz", "zlib",
    "libffi", "bzip2", "libuuid", "tzdata", "r-base", "gcc", "gxx", "make", "cmake", "nodejs",
})
# Conda names whose PyPI distribution is named differently.
CONDA_TO_PIP = {"pytorch": "torch", "py-xgboost": "xgboost", "pytorch-cpu": "torch", "tensorflow-cpu": "tensorflow",
                "matplotlib-base": "matplotlib", "pyyaml": "pyyaml", "lightgbm": "lightgbm"}
IGNORED_CONDA = frozenset({"python", "pip", "setuptools", "wheel"})


def conda_to_requirements(text: str, source: str = "conda.yaml") -> tuple[list[str], str | None]:
    """Requirements lines from an Azure ML conda file, and the Python version it pins (if any).

    Pure.  A conda-only package (no PyPI equivalent) is a UserError naming it."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{source}: invalid YAML: {e}") from None
    deps = doc.get("dependencies") if isinstance(doc, dict) else None
    if not isinstance(deps, list):
        raise UserError(f"{source}: no 'dependencies' list")
    reqs: list[str] = []
    python = None
    conda_only: list[str] = []
    for dep in deps:
        if isinstance(dep, dict):
            pip = dep.get("pip") or []
            reqs.extend(str(p) for p in pip)
            continue
        spec = str(dep).split("::")[-1].strip()  # drop a channel prefix: conda-forge::numpy
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", spec)
        if not m:
            continue
        name, constraint = m.group(1).lower(), m.group(2).strip()
        if name == "python":
            v = re.match(r"^=*\s*(\d+\.\d+)", constraint)
            python = v.group(1) if v else None
            continue
        if name in IGNORED_CONDA:
            continue
        if name in CONDA_ONLY:
            conda_only.append(name)
            continue
        pip_name = CONDA_TO_PIP.get(name, name)
        reqs.append(pip_name + _conda_constraint(constraint))
    if conda_only:
        raise UserError(
            f"{source}: conda-only package(s) with no PyPI equivalent: {', '.join(conda_only)}",
            hint="remove them, or use a container target whose image provides them",
        )
    return reqs, python


def _conda_constraint(c: str) -> str:
    """conda's 'pkg=1.2' means 1.2.*; 'pkg==1.2.3' is exact; ranges pass through."""
    c = c.replace(" ", "")
    if not c:
        return ""
    if c.startswith("==") or c[0] in "<>!~":
        return c
    if c.startswith("="):
        c = c[1:]
    c = c.split("=")[0]  # drop a build string: 1.26.4=py311h...
    return f"=={c}" if c.count(".") >= 2 or "*" in c else f"=={c}.*"


def parse_requirements(path: Path | None, conda: Path | None) -> tuple[list[str], str | None]:
    """Requirement lines from requirements.txt (or a conda file) and the Python it pins.

    ``-r other.txt`` is inlined and ``-c constraints.txt`` and local paths (``./wheels/x.whl``,
    ``-e ./pkg``) are made absolute, relative to the file that names them, as pip reads them:
    the environment is built from a copy of the lines elsewhere, and an included file's content
    is part of what the environment is keyed by."""
    if conda is not None:
        return conda_to_requirements(conda.read_text(), str(conda))
    if path is None:
        return [], None
    return _read_requirements(Path(path), frozenset()), None


_INCLUDE = re.compile(r"^(-r|--requirement|-c|--constraint)(?:\s+|=)(\S.*)$")
_LOCAL_PATH = re.compile(r"^((?:-e|--editable)\s+)?(\.{1,2}/\S*)$")


def _read_requirements(path: Path, seen: frozenset[Path]) -> list[str]:
    path = path.resolve()
    if path in seen:
        raise UserError(f"{path}: includes itself (through -r)")
    lines: list[str] = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        include = _INCLUDE.match(line)
        if include:
            flag, ref = include.groups()
            target = (path.parent / ref.strip()).resolve()
            if not target.is_file():
                raise UserError(f"{path}:{number}: {flag} {ref.strip()}: no such file",
                                hint="paths in a requirements file are relative to that file")
            if flag in ("-r", "--requirement"):
                lines.extend(_read_requirements(target, seen | {path}))
            else:
                lines.append(f"-c {target}")
            continue
        local = _LOCAL_PATH.match(line)
        if local:
            editable, rel = local.groups()
            lines.append(f"{editable or ''}{(path.parent / rel).resolve()}")
            continue
        lines.append(line)
    return lines
