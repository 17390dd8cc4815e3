"""Function app packages: laid out, filled with packages built HERE, zipped, content-addressed.

- :func:`input_digest` — pure: a digest of everything a package is made of (code, model,
  requirements, the generated app, its settings).  Plans compare it; an unchanged one means no
  build and no upload.
- :func:`stage` — the package folder: ``function_app.py`` + ``host.json`` (the generated app,
  ``app/``), ``deployctl_function.json``, ``deployctl_runtime/`` (the scoring contract the
  local target runs too), ``code/`` (the user's folder, unmodified) and ``model/<name>`` (``AZUREML_MODEL_DIR`` is ``model/``).
- :func:`site_packages` — the requirements installed for the Functions platform by
  ``uv pip install --target`` with manylinux wheels for the app's Python (never a remote Oryx
  build: no timeouts on large wheels, no "succeeded" builds with modules missing), cached by
  the input's digest, so an unchanged requirements list is installed once per machine.
- :func:`zip_package` — a deterministic zip (sorted names, fixed timestamps): the same input
  gives the same bytes, so its sha256 names the uploaded blob and an unchanged package is never
  uploaded twice.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import TargetError
from orchestrator.packaging import iter_files, tree_digest

APP_DIR = Path(__file__).parent / "app"
RUNTIME_DIR = Path(__file__).resolve().parents[1] / "local" / "runtime" / "deployctl_runtime"
RUNTIME_FILES = ("__init__.py", "contract.py")  # only what the app imports: zip only what runs
SITE_PACKAGES = ".python_packages/lib/site-packages"
PLATFORM = "x86_64-manylinux_2_28"
HOST_REQUIREMENTS = ("azure-functions>=1.26",)  # what function_app.py imports itself
DURABLE_REQUIREMENTS = ("azure-functions-durable>=1.7",)  # ... in mode: durable
# Zip deploy and Flex packages are capped by the platform; larger packages fail late and
# obscurely, so they are refused before the upload (a conservative figure: models this large
# belong in a mounted share or a model registry, not in the code package).
MAX_PACKAGE_BYTES = 1 << 30
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class PackageInfo:
    path: Path
    sha256: str
    size: int
    files: int


def app_config(entry: str, max_attempts: int, variables: Mapping[str, str], mode: str = "queue") -> dict[str, Any]:
    """What ``deployctl_function.json`` holds (read by function_app.py at load)."""
    return {"entry": entry, "max_attempts": max_attempts, "mode": mode, "variables": dict(sorted(variables.items()))}


def host_requirements(mode: str) -> tuple[str, ...]:
    return HOST_REQUIREMENTS + (DURABLE_REQUIREMENTS if mode == "durable" else ())


def host_json(max_attempts: int) -> str:
    """host.json: the queue extension poisons after max_attempts + 1 deliveries, so the app's own
    last attempt (which records the error) always runs first."""
    doc = json.loads((APP_DIR / "host.json").read_text())
    doc["extensions"]["queues"]["maxDequeueCount"] = max_attempts + 1
    return json.dumps(doc, indent=2) + "\n"


def input_digest(*, code_dir: Path, model_path: Path | None, requirements: list[str], python: str,
                 config: Mapping[str, Any]) -> str:
    h = hashlib.sha256()
    for part in (tree_digest(APP_DIR), *(tree_digest(RUNTIME_DIR / f) for f in RUNTIME_FILES), tree_digest(code_dir),
                 tree_digest(model_path) if model_path else "-", site_packages_key(requirements, python),
                 json.dumps(config, sort_keys=True)):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def stage(dest: Path, *, code_dir: Path, model_path: Path | None, config: Mapping[str, Any],
          site_packages_dir: Path | None) -> Path:
    """Lay the package out in ``dest`` (which must not exist)."""
    lay_out(dest, code_dir=code_dir, model_path=model_path, site_packages_dir=site_packages_dir,
            runtime_files=RUNTIME_FILES)
    shutil.copy2(APP_DIR / "function_app.py", dest / "function_app.py")
    (dest / "host.json").write_text(host_json(int(config["max_attempts"])))
    (dest / "deployctl_function.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return dest


def lay_out(dest: Path, *, code_dir: Path, model_path: Path | None, site_packages_dir: Path | None,
            runtime_files: tuple[str, ...] | None) -> Path:
    """What every package holds (Functions and App Service): ``deployctl_runtime/`` (``runtime_files``,
    or all of it), ``code/``, ``model/<name>`` and the site-packages; ``dest`` must not exist."""
    dest.mkdir(parents=True)
    if runtime_files is None:
        shutil.copytree(RUNTIME_DIR, dest / "deployctl_runtime", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        (dest / "deployctl_runtime").mkdir()
        for f in runtime_files:
            shutil.copy2(RUNTIME_DIR / f, dest / "deployctl_runtime" / f)
    shutil.copytree(code_dir, dest / "code", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".git"))
    (dest / "model").mkdir()  # AZUREML_MODEL_DIR; the model under its own name, as Azure ML mounts it
    if model_path is not None:
        if model_path.is_dir():
            shutil.copytree(model_path, dest / "model" / model_path.name,
                            ignore=shutil.ignore_patterns("__pycache__", ".git"))
        else:
            shutil.copy2(model_path, dest / "model" / model_path.name)
    if site_packages_dir is not None:
        shutil.copytree(site_packages_dir, dest / SITE_PACKAGES, symlinks=True)
    return dest


def site_packages_key(requirements: list[str], python: str, installer: str = "uv") -> str:
    text = "\n".join([f"python=={python}", f"platform={PLATFORM}", f"installer={installer}",
                      *sorted(r.strip() for r in requirements if r.strip())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def install_command(target: Path, requirements_file: Path, python: str, installer: str = "uv") -> list[str]:
    """The install that builds site-packages for the Functions platform on this machine."""
    if installer == "uv":
        from targets.local.envs import uv_bin

        return [uv_bin(), "pip", "install", "--quiet", "--target", str(target), "--python-platform", PLATFORM,
                "--python-version", python, "--only-binary", ":all:", "-r", str(requirements_file)]
    import sys

    return [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(target),
            "--platform", "manylinux_2_28_x86_64", "--implementation", "cp", "--python-version", python,
            "--only-binary=:all:", "-r", str(requirements_file)]


def site_packages(requirements: list[str], python: str, cache: Path, *, installer: str = "uv",
                  progress: Callable[[str], None] = lambda _m: None) -> Path:
    """The installed requirements (the app's own, :func:`host_requirements`, included by the caller)
    for the Functions platform; built once per requirements list and Python version, then reused
    from ``cache``."""
    from targets.local.envs import _run

    key = site_packages_key(requirements, python, installer)
    done = cache / "functions-site-packages" / key
    if (done / ".deployctl-complete").exists():
        return done
    done.parent.mkdir(parents=True, exist_ok=True)
    progress(f"installing {len(requirements)} requirement(s) for {PLATFORM} / Python {python} with {installer} --target")
    with tempfile.TemporaryDirectory(dir=done.parent, prefix=f".{key}.") as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text("\n".join(requirements) + "\n")
        target = Path(tmp) / "site-packages"
        _run(install_command(target, req, python, installer), f"installing the function app's packages ({installer})")
        (target / ".deployctl-complete").write_text(key)
        shutil.rmtree(done, ignore_errors=True)
        target.rename(done)
    return done


def zip_package(src: Path, dest: Path, *, limit: int = MAX_PACKAGE_BYTES) -> PackageInfo:
    """A deterministic zip of ``src`` (no bytecode, no junk); refused over ``limit`` bytes."""
    n = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        for rel, path in iter_files(src):
            if rel.endswith("/.deployctl-complete"):
                continue
            info = zipfile.ZipInfo(rel, _FIXED_TIME)
            info.external_attr = (0o755 if path.stat().st_mode & 0o111 else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as f, z.open(info, "w") as out:
                shutil.copyfileobj(f, out, 1 << 20)
            n += 1
    size = dest.stat().st_size
    if size > limit:
        dest.unlink()
        raise TargetError(f"the function app package is {size / 2**20:.0f} MiB, over the {limit / 2**20:.0f} MiB limit",
                          hint="keep large models out of the code package, or trim requirements")
    h = hashlib.sha256()
    with open(dest, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return PackageInfo(dest, h.hexdigest(), size, n)
