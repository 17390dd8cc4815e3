"""``build_image``: a scoring image assembled from a base image and four layers, no daemon.

Layers, in the order that keeps a code change one small layer: the environment (installed by uv
for the image's platform from the lock the ``local`` target uses), deployctl's scoring runtime,
the model, the code.  Each is a reproducible tar cached by content, so an unchanged input is
neither rebuilt nor (the registry already has it) pushed.  The manifest is pushed last, tagged
with its own digest: if a step fails, nothing new is tagged (blobs without a manifest are the
registry's garbage), and an unchanged image is a HEAD request away from done.

The image serves the Azure ML scoring contract through :mod:`deployctl_runtime.container`, the
``local`` target's server: key from ``DEPLOYCTL_SCORING_KEY``, ``GET /`` health, ``POST /score``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import TargetError, UserError
from orchestrator.images import oci
from orchestrator.images.layers import Layer, blob_path, cached_layer
from orchestrator.images.registry import Reference, RegistryAuth, RegistryClient
from orchestrator.packaging import tree_digest

DEFAULT_PLATFORM = "x86_64-manylinux_2_28"
PORT = 5001
APP = "opt/deployctl"
RUNTIME_SRC = Path(__file__).resolve().parents[2] / "targets" / "local" / "runtime" / "deployctl_runtime"
_PYTHON_BINARY = re.compile(r"^\.?/?usr/(?:local/)?bin/python(3\.\d+)$")


@dataclass(frozen=True)
class ImageInputs:
    """What goes into a scoring image (all local paths; ``requirements`` as pip lines)."""

    name: str
    python: str
    requirements: tuple[str, ...]
    code: Path
    entry: str
    model: Path | None = None
    base_image: str | None = None  # None: python:<python>-slim
    variables: Mapping[str, str] = field(default_factory=dict)
    platform: str = DEFAULT_PLATFORM
    dockerfile: Path | None = None  # the base is built from it by ACR Tasks (see orchestrator.images.choose)
    base_from: Path | None = None  # the Dockerfile the base was built from (named in errors about the base)

    @classmethod
    def from_manifest(cls, manifest: Any, *, platform: str = DEFAULT_PLATFORM) -> ImageInputs:
        from orchestrator.requirements import parse_requirements

        env = manifest.environment
        reqs, pinned = parse_requirements(env.requirements, env.conda_file)
        return cls(name=manifest.name, python=pinned or env.python, requirements=tuple(reqs),
                   code=Path(manifest.code.path), entry=manifest.code.entry,
                   model=Path(manifest.model.path) if manifest.model.path else None,
                   base_image=env.base_image, variables=dict(env.variables), platform=platform,
                   dockerfile=Path(env.dockerfile) if env.dockerfile else None)

    @property
    def base(self) -> str:
        return self.base_image or f"python:{self.python}-slim"

    def content(self) -> dict[str, Any]:
        """What the image is made of, by content (an unchanged digest of this is an unchanged image);
        the Dockerfile by its context's content, so a change there is a new image too."""
        out = {"python": self.python, "requirements": list(self.requirements), "entry": self.entry, "base": self.base,
               "variables": dict(self.variables), "platform": self.platform, "code": tree_digest(self.code),
               "model": tree_digest(self.model) if self.model else None, "runtime": tree_digest(RUNTIME_SRC)}
        if self.dockerfile is not None:  # only then: the digests of existing images stay what they were
            out["dockerfile"] = self.dockerfile_content
        return out

    @property
    def dockerfile_content(self) -> str | None:
        """The Dockerfile's context by content: the tag its image gets (None without a Dockerfile)."""
        if self.dockerfile is None:
            return None
        from orchestrator.images.acrtasks import context_tag

        return context_tag(self.dockerfile.parent, self.dockerfile.name)


@dataclass(frozen=True)
class LayerReport:
    name: str
    digest: str
    size: int
    pushed: bool


@dataclass(frozen=True)
class BuiltImage:
    """``image`` is ``host/repo@sha256:...`` (deploy by digest); ``tag`` names the same manifest."""

    image: str
    digest: str
    tag: str
    layers: list[LayerReport]
    base: str  # the base, by digest
    built: list[str]  # layers built on this run (the rest came from the cache)
    metadata_pushed: int = 0  # bytes of config and manifest pushed on this run

    @property
    def pushed_bytes(self) -> int:
        return sum(layer.size for layer in self.layers if layer.pushed) + self.metadata_pushed

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "digest": self.digest, "tag": self.tag, "base": self.base,
                "layers": [{"name": x.name, "digest": x.digest, "size": x.size, "pushed": x.pushed} for x in self.layers]}


def content_tag(manifest_digest: str) -> str:
    """The tag an image is pushed under: its manifest's digest (tags cannot hold ':')."""
    return manifest_digest.replace(":", "-")


def build_image(inputs: ImageInputs, repository: str, *, auth: RegistryAuth | None = None,
                base_auth: RegistryAuth | None = None, transport: Any = None, cache: Path | None = None,
                progress: Callable[[str], None] | None = None) -> BuiltImage:
    """Build the scoring image for ``inputs`` and push it to ``repository`` (``host[:port]/repo``).

    ``auth`` for the target registry (also used for the base when it lives there), ``base_auth`` for
    a base in another registry (None: anonymous), ``transport`` an azure-core transport (the
    simulator's, in tests).  Returns the image by digest and what each layer cost."""
    from targets.local.envs import cache_root

    say = progress or (lambda _m: None)
    if inputs.dockerfile is not None:
        raise UserError(f"environment.dockerfile ({inputs.dockerfile.name}) is built by ACR Tasks in an Azure Container "
                        "Registry: deploy to a container target (aci, app-service with run: image), which builds it "
                        "and layers deployctl's runtime, the model and the code on its image")
    root = cache_root(cache)
    target = Reference.parse(repository)
    if target.tag or target.digest:
        raise UserError(f"--registry {repository!r}: give HOST[:PORT]/REPO only; the tag is the image's digest")
    client = RegistryClient(target, auth=auth, transport=transport)
    base_ref = Reference.parse(inputs.base)
    base_client = client if base_ref.host == target.host else RegistryClient(base_ref, auth=base_auth, transport=transport)

    say(f"reading base image {base_ref}")
    base_manifest, base_digest = base_client.platform_manifest(base_ref.repository, base_ref.digest or base_ref.tag or "latest")
    config_digest = str(base_manifest["config"]["digest"])
    base_config = _json_blob(base_client, base_ref.repository, config_digest, root)
    _check_python(inputs.python, base_ref, base_digest, base_config, base_manifest, base_client, root, inputs.base_from)

    built: list[str] = []
    maybe = [*_environment_layers(inputs, root, say, built), _runtime_layer(root, built),
             _tree_layer("model", inputs.model, f"{APP}/model", root, built),
             _tree_layer("code", inputs.code, f"{APP}/code", root, built)]
    layers = [x for x in maybe if x is not None]
    config = oci.canonical(oci.image_config(
        base_config, [x.diff_id for x in layers], [x.name for x in layers],
        env={**inputs.variables, "PYTHONPATH": f"/{APP}/runtime:/{APP}/site-packages", "PYTHONUNBUFFERED": "1",
             "AZUREML_MODEL_DIR": f"/{APP}/model", "DEPLOYCTL_CODE_DIR": f"/{APP}/code",
             "DEPLOYCTL_ENTRY": inputs.entry, "PORT": str(PORT)},
        cmd=["python3", "-m", "deployctl_runtime.container"], workdir=f"/{APP}/code", port=PORT,
        labels={"io.deployctl.name": inputs.name, "io.deployctl.python": inputs.python, "org.opencontainers.image.base.digest": base_digest}))
    manifest = oci.canonical(oci.image_manifest(config, base_manifest.get("layers", []), [x.descriptor() for x in layers],
                                                annotations={"org.opencontainers.image.base.name": str(base_ref)}))
    digest = oci.digest_of(manifest)
    tag = content_tag(digest)
    repo = target.repository
    reports: list[LayerReport] = []
    metadata_pushed = 0
    if client.manifest_exists(repo, tag) == digest:
        say(f"{target.host}/{repo}:{tag} is already there: nothing to push")
        reports = [LayerReport(_base_name(i), d["digest"], int(d["size"]), False) for i, d in enumerate(base_manifest.get("layers", []))]
        reports += [LayerReport(x.name, x.digest, x.size, False) for x in layers]
    else:
        for i, desc in enumerate(base_manifest.get("layers", [])):
            pushed = _ensure_blob(client, repo, str(desc["digest"]), root,
                                  source=(base_client, base_ref.repository) if base_client is not client or base_ref.repository != repo else None)
            reports.append(LayerReport(_base_name(i), str(desc["digest"]), int(desc["size"]), pushed))
        for layer in layers:
            pushed = _ensure_blob(client, repo, layer.digest, root)
            if pushed:
                say(f"pushed layer {layer.name} ({layer.size / 1e6:.1f} MB)")
            reports.append(LayerReport(layer.name, layer.digest, layer.size, pushed))
        if not client.blob_exists(repo, oci.digest_of(config)):
            client.upload_blob(repo, oci.digest_of(config), config)
            metadata_pushed += len(config)
        client.put_manifest(repo, tag, manifest, oci.OCI_MANIFEST)  # last: nothing is tagged half-pushed
        metadata_pushed += len(manifest)
    return BuiltImage(target.with_digest(digest), digest, tag, reports, base_ref.with_digest(base_digest), built,
                      metadata_pushed)


def _base_name(i: int) -> str:
    return f"base[{i}]"


def _json_blob(client: RegistryClient, repository: str, digest: str, root: Path) -> dict[str, Any]:
    path = blob_path(root, digest)
    if not path.exists():
        from orchestrator.state import write_atomic

        write_atomic(path, client.get_small_blob(repository, digest))  # cached by digest: checked on download
    return dict(json.loads(path.read_bytes()))


def _ensure_blob(client: RegistryClient, repository: str, digest: str, root: Path,
                 source: tuple[RegistryClient, str] | None = None) -> bool:
    """Make ``digest`` exist in ``repository``; True when its bytes were uploaded."""
    if client.blob_exists(repository, digest):
        return False
    path = blob_path(root, digest)
    if source is not None and source[0] is client:
        if client.mount_blob(repository, digest, source[1]):
            return False
    if not path.exists():
        if source is None:
            raise TargetError(f"blob {digest} is neither in the registry nor in the local cache")
        source[0].get_blob(source[1], digest, path)
    client.upload_blob(repository, digest, path)
    return True


def _check_python(python: str, ref: Reference, digest: str, config: Mapping[str, Any], manifest: Mapping[str, Any],
                  client: RegistryClient, root: Path, built_from: Path | None = None) -> None:
    """Refuse a base image whose Python is not ``python`` (or that has none): the environment's
    compiled wheels would not load.  Official images say it in ``PYTHON_VERSION``; otherwise the
    base's layers are listed (downloaded once, cached by digest)."""
    versions = _base_pythons(config, manifest, ref, client, root, digest)
    if python not in versions:
        found = f"has Python {', '.join(sorted(versions))}" if versions else "has no Python (no usr/bin/python3.X)"
        if built_from is not None:
            raise UserError(f"the image built from {built_from} ({ref}) {found}, but environment.python is {python}",
                            hint=f"build it FROM an image with Python {python} (e.g. python:{python}-slim), or change "
                                 "environment.python")
        raise UserError(f"base image {ref} {found}, but environment.python is {python}",
                        hint=f"use a base image with Python {python} (environment.base_image), or change environment.python")


def _base_pythons(config: Mapping[str, Any], manifest: Mapping[str, Any], ref: Reference, client: RegistryClient,
                  root: Path, digest: str) -> set[str]:
    for item in (config.get("config") or {}).get("Env") or []:
        k, _, v = str(item).partition("=")
        if k == "PYTHON_VERSION" and re.match(r"^3\.\d+", v):
            return {".".join(v.split(".")[:2])}
    record = root / "image-bases" / f"{digest.replace(':', '-')}.json"
    if record.exists():
        return set(json.loads(record.read_text()))
    found: set[str] = set()
    for desc in manifest.get("layers", []):
        path = blob_path(root, str(desc["digest"]))
        if not path.exists():
            client.get_blob(ref.repository, str(desc["digest"]), path)
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                m = _PYTHON_BINARY.match(member.name)
                if m and (member.isfile() or member.issym()):
                    found.add(m.group(1))
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(sorted(found)))
    return found


def _runtime_layer(root: Path, built: list[str]) -> Layer:
    layer, new = cached_layer("runtime", tree_digest(RUNTIME_SRC), lambda: [(f"{APP}/runtime/deployctl_runtime", RUNTIME_SRC)], root)
    if new:
        built.append("runtime")
    return layer


def _tree_layer(name: str, src: Path | None, prefix: str, root: Path, built: list[str]) -> Layer | None:
    if src is None:
        return None
    # a folder keeps its name below the prefix, as the local target lays the model out
    where = f"{prefix}/{src.name}" if src.is_dir() and name == "model" else prefix
    layer, new = cached_layer(name, f"{where}|{tree_digest(src)}", lambda: [(where, src)], root)
    if new:
        built.append(name)
    return layer


def _lock_packages(lock_text: str) -> tuple[list[str], list[str]]:
    """(package lines, index option lines) of a lock (``uv pip freeze`` output).  Pure."""
    from targets.local.envs import index_options

    lines = [x.strip() for x in lock_text.splitlines() if x.strip() and not x.strip().startswith("#")]
    options = index_options(lines)
    return [x for x in lines if x not in options], options


def _dist_name(line: str) -> str:
    """The normalised distribution name of a lock line (``Scikit_Learn==1.0`` -> ``scikit-learn``).  Pure."""
    return re.sub(r"[-_.]+", "-", re.split(r"[=<>!~ @;\[]", line, maxsplit=1)[0]).lower()


def _split_by_distribution(site: Path, dest: Path) -> dict[str, Path]:
    """Move each distribution's files (its RECORD) from ``site`` into ``dest/<name>/``, keeping
    their relative paths; returns name -> folder.  Files no RECORD names stay in ``site``."""
    import csv

    out: dict[str, Path] = {}
    for info in sorted(site.glob("*.dist-info")):
        meta = (info / "METADATA").read_text(errors="replace")
        m = re.search(r"^Name:\s*(\S+)", meta, re.MULTILINE)
        name = _dist_name(m.group(1) if m else info.name.split("-")[0])
        folder = dest / name
        with open(info / "RECORD", newline="") as f:
            paths = [row[0] for row in csv.reader(f) if row]
        for rel in paths:
            src = (site / rel)
            if src.is_file() or src.is_symlink():
                target = folder / os.path.normpath(rel)
                if not str(target).startswith(str(folder) + os.sep):
                    continue  # ../../bin scripts of a prefix install: not part of --target's tree
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, target)
        out[name] = folder
    return out


def _environment_layers(inputs: ImageInputs, root: Path, say: Callable[[str], None], built: list[str]) -> list[Layer]:
    """One layer per installed distribution, from the lock the local target uses, each cached by
    (requirement line, platform, Python): a dependency change builds and pushes only the
    distributions that changed.  Missing ones are installed by one uv call for the image's
    platform (wheels only), split by their RECORD files, and compressed in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    from orchestrator.images.layers import lookup_layer
    from targets.local.envs import resolve_lock, uv_bin

    # the pins only: the local target's lock when it has one, else resolved without installing
    # anything on this machine (the image's platform gets its own wheels below)
    lock = resolve_lock(list(inputs.requirements), inputs.python, cache=root, progress=say)
    packages, options = _lock_packages(lock.read_text())
    keys = {line: f"{line}|{' '.join(options)}|{inputs.platform}|{inputs.python}" for line in packages}
    layers: dict[str, Layer] = {}
    missing = []
    for line in packages:
        found = lookup_layer(f"environment:{line}", keys[line], root)
        if found is None:
            missing.append(line)
        else:
            layers[line] = found
    if missing:
        work = root / "image-envs" / f".build-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        try:
            say(f"installing {len(missing)} package(s) for {inputs.platform} with uv")
            req = work / "requirements.txt"
            work.mkdir(parents=True)
            req.write_text("".join(x + "\n" for x in [*options, *missing]))
            cmd = [uv_bin(), "pip", "install", "--quiet", "--target", str(work / "site"), "--python-platform",
                   inputs.platform, "--python-version", inputs.python, "--only-binary", ":all:", "--no-deps", "-r", str(req)]
            # never bytecode: a layer holds sources only (pycs depend on the interpreter and, checked by
            # timestamp, on when the files were written: not reproducible); tar_chunks skips any anyway
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env=dict(os.environ, UV_NO_PROGRESS="1", UV_COMPILE_BYTECODE="0"))
            if proc.returncode != 0:
                tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
                raise UserError(f"the environment cannot be installed for {inputs.platform} (Python {inputs.python}):\n{tail}",
                                hint="pin a version of that package that publishes a wheel for this platform")
            folders = _split_by_distribution(work / "site", work / "dists")

            def build(line: str) -> tuple[str, Layer]:
                name = f"environment:{line}"
                folder = folders.get(_dist_name(line))
                if folder is None:
                    raise TargetError(f"uv installed no distribution for {line!r} (lock {lock})")
                return line, cached_layer(name, keys[line], lambda: [(f"{APP}/site-packages", folder)], root)[0]

            with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # zlib and sha256 release the GIL
                for line, layer in pool.map(build, missing):
                    layers[line] = layer
                    built.append(layer.name)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return [layers[line] for line in packages]
